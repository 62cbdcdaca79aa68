//! portsight: is this port reachable, from where, and if not, why?
#![forbid(unsafe_code)]

pub mod config;
