//! portsight: is this port reachable, from where, and if not, why?
#![forbid(unsafe_code)]

pub mod check;
pub mod config;
pub mod descriptors;
pub mod diagnosis;
pub mod engine;
pub mod escape;
pub mod forward;
pub mod kernel;
pub mod metrics;
pub mod netfilter;
pub mod netns;
pub mod peer;
pub mod privileges;
pub mod probe;
pub mod snapshot;
pub mod sockets;
pub mod status_page;
pub mod web;
