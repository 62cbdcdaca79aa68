//! portsight: is this port reachable, from where, and if not, why?
#![forbid(unsafe_code)]

pub mod config;
pub mod cycle;
pub mod metrics;
pub mod probe;
pub mod snapshot;
pub mod sockets;
pub mod watch;
pub mod web;
