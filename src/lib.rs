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

/// For unit tests that need root: true when running as root; else false
/// with the reason printed, or a failure when `CI=true` (as
/// `tests/support`'s `skip()`: in CI a test may not skip).
#[cfg(test)]
pub(crate) fn test_is_root(reason: &str) -> bool {
    if nix::unistd::Uid::effective().is_root() {
        return true;
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("CI=true, so this test may not skip: {reason}");
    }
    eprintln!("SKIPPED: {reason}");
    false
}
