//! Configuration: serde structs with their defaults ([`schema`]), loading
//! (embedded default ← TOML file ← `PORTSIGHT__*` environment, [`load`]) and
//! validation ([`validate`]); the addresses, allow rules and URLs a config
//! names are parsed into typed values.

use std::time::Duration;

mod address;
mod allow;
mod load;
mod schema;
mod secrets;
mod validate;

pub use address::{ListenAddress, parse_listen_address, parse_peer_url, parse_server_name};
pub use allow::{AllowRule, is_unicast};
pub use schema::{
    Config, DiagnosisConfig, Discover, Expect, HEX_PREFIX, Payload, PeerConfig, Peers, PortConfig,
    Probe, ProbeServer, Protocol, Scan, Scheme, Vantage, Web,
};
pub use secrets::read_secret;

/// The embedded default configuration, printed by `portsight config default`.
pub const DEFAULT_TOML: &str = include_str!("default.toml");

/// The most connect attempts (or probe requests) in flight that a config may ask for.
pub const MAX_CONCURRENCY: usize = 65_536;
/// The longest interval, window or timeout a config may set.
pub const MAX_DURATION: Duration = Duration::from_secs(7 * 24 * 3600);

/// Prefix of environment overrides: `PORTSIGHT__PROBE__INTERVAL=5s`.
pub const ENV_PREFIX: &str = "PORTSIGHT";
pub(crate) const ENV_SEPARATOR: &str = "__";

/// A configuration error: where it comes from, which key, and what is wrong.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    #[error("{origin}: {reason}")]
    Syntax { origin: String, reason: String },
    #[error("{origin}: {key}: {reason}")]
    Invalid {
        origin: String,
        key: String,
        reason: String,
    },
}

pub(crate) fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

pub fn fmt_duration(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}
