//! Configuration: serde structs with their defaults, loading
//! (embedded default ← TOML file ← `PORTSIGHT__*` environment) and validation.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

mod allow;
pub use allow::AllowRule;

/// The embedded default configuration, printed by `portsight config default`.
pub const DEFAULT_TOML: &str = include_str!("default.toml");

/// The most connect attempts (or probe requests) in flight that a config may ask for.
pub const MAX_CONCURRENCY: usize = 65_536;
/// The longest interval, window or timeout a config may set.
pub const MAX_DURATION: Duration = Duration::from_secs(7 * 24 * 3600);

/// Prefix of environment overrides: `PORTSIGHT__PROBE__INTERVAL=5s`.
pub const ENV_PREFIX: &str = "PORTSIGHT";
const ENV_SEPARATOR: &str = "__";

#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub web: Web,
    pub scan: Scan,
    pub probe: Probe,
    pub vantage: Vantage,
    pub discover: Discover,
    pub diagnosis: DiagnosisConfig,
    #[serde(rename = "port")]
    pub ports: Vec<PortConfig>,
    /// `[[peer]]`: remote portsight instances asked for the outside view.
    #[serde(rename = "peer")]
    pub peer_list: Vec<PeerConfig>,
    /// `[peers]`: DNS discovery and how many peers are asked.
    pub peers: Peers,
    pub probe_server: ProbeServer,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Web {
    /// `IP:PORT`, `[IPv6]:PORT`, or `:PORT` (all addresses, both families).
    pub listen_address: String,
    /// Serve `POST /-/reload` (as Prometheus's `--web.enable-lifecycle`);
    /// off, anyone who reaches the port could make portsight reload.
    pub enable_lifecycle: bool,
    /// exporter-toolkit web-config.yml with TLS and basic auth; empty: plain
    /// HTTP, no auth. Read at start-up only.
    pub config_file: PathBuf,
}

impl Default for Web {
    fn default() -> Self {
        Web {
            listen_address: ":10917".to_string(),
            enable_lifecycle: false,
            config_file: PathBuf::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Scan {
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    pub proc_root: PathBuf,
}

impl Default for Scan {
    fn default() -> Self {
        Scan {
            interval: Duration::from_secs(1),
            proc_root: PathBuf::from("/proc"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Probe {
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    pub concurrency: usize,
}

impl Default for Probe {
    fn default() -> Self {
        Probe {
            interval: Duration::from_secs(15),
            timeout: Duration::from_secs(2),
            concurrency: 256,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Vantage {
    pub loopback: bool,
    pub interfaces: bool,
    /// Non-empty: the interface vantage probes only these local addresses.
    pub addresses: Vec<IpAddr>,
    /// What outsiders connect to (e.g. the public IP), probed by peers;
    /// empty: the interface addresses.
    pub external_addresses: Vec<IpAddr>,
}

impl Default for Vantage {
    fn default() -> Self {
        Vantage {
            loopback: true,
            interfaces: true,
            addresses: Vec::new(),
            external_addresses: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Discover {
    pub enabled: bool,
    #[serde(with = "humantime_serde")]
    pub forget_after: Duration,
}

impl Default for Discover {
    fn default() -> Self {
        Discover {
            enabled: true,
            forget_after: Duration::from_secs(3600),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DiagnosisConfig {
    /// A port that recovered less than this long ago is `transient`, not `ok`.
    #[serde(with = "humantime_serde")]
    pub transient_window: Duration,
}

impl Default for DiagnosisConfig {
    fn default() -> Self {
        DiagnosisConfig {
            transient_window: Duration::from_secs(300),
        }
    }
}

/// One `[[peer]]`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PeerConfig {
    /// The `source` label of the probes it makes.
    pub name: String,
    /// `http://HOST:PORT` of its portsight.
    pub url: String,
    /// Bearer token for its probe server; empty: `peers.token_file`.
    #[serde(default)]
    pub token_file: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Peers {
    /// A name whose A/AAAA records are peers (e.g. a headless service).
    pub dns: String,
    pub dns_port: u16,
    /// How many peers are asked each probe round.
    pub fanout: usize,
    /// Token for peers found through DNS, and for `[[peer]]`s without one.
    pub token_file: PathBuf,
    /// How long a peer may take to answer a batch.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// This host's identity for choosing peers (rendezvous hashing); empty: the hostname.
    pub identity: String,
}

impl Default for Peers {
    fn default() -> Self {
        Peers {
            dns: String::new(),
            dns_port: 10917,
            fanout: 3,
            token_file: PathBuf::new(),
            timeout: Duration::from_secs(10),
            identity: String::new(),
        }
    }
}

/// `[probe_server]`: serving `/probe` and `/api/v1/probe` to others.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProbeServer {
    pub enabled: bool,
    /// Targets that may be probed: `CIDR` or `CIDR:PORT` or `CIDR:LOW-HIGH`.
    pub allow: Vec<String>,
    /// The bearer token clients must send.
    pub token_file: PathBuf,
    /// Probe requests served at once; more are refused with 429.
    pub concurrency: usize,
    /// Requests per second per client address, and the burst above it.
    pub rate_limit: f64,
    pub burst: u32,
}

impl Default for ProbeServer {
    fn default() -> Self {
        ProbeServer {
            enabled: false,
            allow: Vec::new(),
            token_file: PathBuf::new(),
            concurrency: 64,
            rate_limit: 10.0,
            burst: 20,
        }
    }
}

impl ProbeServer {
    /// The parsed allow-list (validated at load, so entries parse).
    pub fn allow_rules(&self) -> Vec<AllowRule> {
        self.allow.iter().filter_map(|s| s.parse().ok()).collect()
    }
}

/// What a port's reachability should be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase", try_from = "String")]
pub enum Expect {
    /// Reachable from every vantage.
    #[default]
    Public,
    /// Reachable from loopback and interfaces, not from outside.
    Internal,
    /// Reachable on loopback only.
    Local,
    /// Nothing may listen, nothing may answer.
    Closed,
    /// `local` when first seen bound to loopback only, else `public`.
    Auto,
}

impl Expect {
    pub fn as_str(self) -> &'static str {
        match self {
            Expect::Public => "public",
            Expect::Internal => "internal",
            Expect::Local => "local",
            Expect::Closed => "closed",
            Expect::Auto => "auto",
        }
    }
}

impl TryFrom<String> for Expect {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        Ok(match s.as_str() {
            "public" => Expect::Public,
            "internal" => Expect::Internal,
            "local" => Expect::Local,
            "closed" => Expect::Closed,
            "auto" => Expect::Auto,
            _ => {
                return Err(format!(
                    "unknown value {s:?}, expected one of public, internal, local, closed, auto"
                ));
            }
        })
    }
}

impl fmt::Display for Expect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One `[[port]]` table. A port listed without `expect` is expected `public`:
/// listing a port says you want to reach it.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PortConfig {
    #[serde(deserialize_with = "port_number")]
    pub port: u16,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub expect: Expect,
}

fn port_number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u16, D::Error> {
    let n = i64::deserialize(d)?;
    match u16::try_from(n) {
        Ok(p) if p > 0 => Ok(p),
        _ => Err(serde::de::Error::custom(format!(
            "must be 1 to 65535, got {n}"
        ))),
    }
}

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

impl Config {
    /// Loads the embedded default, then `file` if given, then the process
    /// environment's `PORTSIGHT__*` variables, and validates the result.
    pub fn load(file: Option<&Path>) -> Result<Config, Error> {
        Config::load_with_env(file, std::env::vars().collect())
    }

    /// As [`Config::load`], with the environment given (for tests).
    pub fn load_with_env(
        file: Option<&Path>,
        env: HashMap<String, String>,
    ) -> Result<Config, Error> {
        let origin = match file {
            Some(path) => path.display().to_string(),
            None => "embedded default".to_string(),
        };
        let env: HashMap<String, String> = env
            .into_iter()
            .filter(|(k, _)| k.starts_with(&format!("{ENV_PREFIX}{ENV_SEPARATOR}")))
            .collect();
        let mut builder = config::Config::builder().add_source(config::File::from_str(
            DEFAULT_TOML,
            config::FileFormat::Toml,
        ));
        if let Some(path) = file {
            let text = std::fs::read_to_string(path).map_err(|e| Error::Syntax {
                origin: origin.clone(),
                reason: format!("cannot read: {e}"),
            })?;
            // Parse the file on its own first, so syntax errors name it with line and column.
            toml::from_str::<toml::Table>(&text).map_err(|e| Error::Syntax {
                origin: origin.clone(),
                reason: toml_error(&text, &e),
            })?;
            builder = builder.add_source(config::File::from_str(&text, config::FileFormat::Toml));
        }
        let env_keys: Vec<(String, String)> = env
            .keys()
            .map(|k| (env_key_to_path(k), k.clone()))
            .collect();
        builder = builder.add_source(
            config::Environment::with_prefix(ENV_PREFIX)
                .prefix_separator(ENV_SEPARATOR)
                .separator(ENV_SEPARATOR)
                .try_parsing(true)
                .source(Some(env.into_iter().collect())),
        );
        let raw = builder.build().map_err(|e| Error::Syntax {
            origin: origin.clone(),
            reason: one_line(&e.to_string()),
        })?;
        let config: Config = serde_path_to_error::deserialize(raw).map_err(|e| {
            let (key, reason) = key_and_reason(e.path().to_string(), &e.inner().to_string());
            // A key set from the environment is reported as that variable.
            let origin = env_keys
                .iter()
                .find(|(path, _)| *path == key)
                .map(|(_, var)| format!("environment {var}"))
                .unwrap_or_else(|| origin.clone());
            Error::Invalid {
                origin,
                key,
                reason,
            }
        })?;
        config.validate().map_err(|(key, reason)| Error::Invalid {
            origin,
            key,
            reason,
        })?;
        Ok(config)
    }

    /// Cross-field checks; returns the offending key and the reason.
    fn validate(&self) -> Result<(), (String, String)> {
        let err = |key: &str, reason: String| Err((key.to_string(), reason));
        if let Err(reason) = parse_listen_address(&self.web.listen_address) {
            return err("web.listen_address", reason);
        }
        if self.scan.interval < Duration::from_millis(100) {
            return err(
                "scan.interval",
                format!(
                    "must be at least 100ms, got {}",
                    fmt_duration(self.scan.interval)
                ),
            );
        }
        if self.probe.timeout.is_zero() {
            return err("probe.timeout", "must be greater than zero".to_string());
        }
        if self.probe.timeout >= self.probe.interval {
            return err(
                "probe.timeout",
                format!(
                    "must be shorter than probe.interval ({} >= {})",
                    fmt_duration(self.probe.timeout),
                    fmt_duration(self.probe.interval)
                ),
            );
        }
        if !(1..=MAX_CONCURRENCY).contains(&self.probe.concurrency) {
            return err(
                "probe.concurrency",
                format!("must be 1 to {MAX_CONCURRENCY}"),
            );
        }
        for (key, value) in [
            ("scan.interval", self.scan.interval),
            ("probe.interval", self.probe.interval),
            ("discover.forget_after", self.discover.forget_after),
            (
                "diagnosis.transient_window",
                self.diagnosis.transient_window,
            ),
            ("peers.timeout", self.peers.timeout),
        ] {
            if value > MAX_DURATION {
                return err(
                    key,
                    format!("must be at most {}", fmt_duration(MAX_DURATION)),
                );
            }
        }
        for (key, list) in [
            ("vantage.addresses", &self.vantage.addresses),
            (
                "vantage.external_addresses",
                &self.vantage.external_addresses,
            ),
        ] {
            if let Some(addr) = list.iter().find(|a| a.is_unspecified() || a.is_multicast()) {
                return err(key, format!("{addr} is not a unicast address"));
            }
        }
        self.validate_peers()?;
        self.validate_probe_server()?;
        let mut seen = HashMap::new();
        for (i, p) in self.ports.iter().enumerate() {
            if p.port == 0 {
                return err(&format!("port[{i}].port"), "must be 1 to 65535".to_string());
            }
            if let Some(first) = seen.insert(p.port, i) {
                return err(
                    &format!("port[{i}].port"),
                    format!("port {} is already listed in port[{first}]", p.port),
                );
            }
        }
        Ok(())
    }

    fn validate_peers(&self) -> Result<(), (String, String)> {
        let mut names = HashMap::new();
        for (i, p) in self.peer_list.iter().enumerate() {
            let key = |k: &str| format!("peer[{i}].{k}");
            if p.name.trim().is_empty() {
                return Err((key("name"), "must not be empty".into()));
            }
            if let Some(first) = names.insert(p.name.as_str(), i) {
                return Err((
                    key("name"),
                    format!("{:?} is already the name of peer[{first}]", p.name),
                ));
            }
            if let Err(reason) = parse_peer_url(&p.url) {
                return Err((key("url"), reason));
            }
            if p.token_file.as_os_str().is_empty() && self.peers.token_file.as_os_str().is_empty() {
                return Err((
                    key("token_file"),
                    "required (or set peers.token_file)".into(),
                ));
            }
        }
        if !self.peers.dns.is_empty() && self.peers.token_file.as_os_str().is_empty() {
            return Err((
                "peers.token_file".into(),
                "required when peers.dns is set".into(),
            ));
        }
        if self.peers.fanout == 0 {
            return Err(("peers.fanout".into(), "must be at least 1".into()));
        }
        if self.has_external_vantage() && self.peers.timeout <= self.probe.timeout {
            return Err((
                "peers.timeout".into(),
                format!(
                    "must be longer than probe.timeout ({} <= {}): a peer probes for that long",
                    fmt_duration(self.peers.timeout),
                    fmt_duration(self.probe.timeout)
                ),
            ));
        }
        Ok(())
    }

    fn validate_probe_server(&self) -> Result<(), (String, String)> {
        let s = &self.probe_server;
        for (i, a) in s.allow.iter().enumerate() {
            if let Err(reason) = a.parse::<AllowRule>() {
                return Err((format!("probe_server.allow[{i}]"), reason));
            }
        }
        if !s.enabled {
            return Ok(());
        }
        if s.token_file.as_os_str().is_empty() {
            return Err((
                "probe_server.token_file".into(),
                "required when probe_server.enabled: /probe is never served without a token".into(),
            ));
        }
        if s.allow.is_empty() {
            return Err((
                "probe_server.allow".into(),
                "empty: nothing could be probed; list the CIDRs (and ports) peers may probe".into(),
            ));
        }
        if !(1..=MAX_CONCURRENCY).contains(&s.concurrency) {
            return Err((
                "probe_server.concurrency".into(),
                format!("must be 1 to {MAX_CONCURRENCY}"),
            ));
        }
        if !(s.rate_limit > 0.0 && s.rate_limit.is_finite()) {
            return Err((
                "probe_server.rate_limit".into(),
                "must be a positive number of requests per second".into(),
            ));
        }
        if s.burst == 0 {
            return Err(("probe_server.burst".into(), "must be at least 1".into()));
        }
        Ok(())
    }

    /// True when an outside view is configured (peers listed or discovered).
    pub fn has_external_vantage(&self) -> bool {
        !self.peer_list.is_empty() || !self.peers.dns.is_empty()
    }

    /// The configured entry for `port`, if any.
    pub fn port(&self, port: u16) -> Option<&PortConfig> {
        self.ports.iter().find(|p| p.port == port)
    }
}

/// Where the HTTP server listens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenAddress {
    /// `:PORT`: every address of both families (`::` with IPV6_V6ONLY off,
    /// or `0.0.0.0` where IPv6 is not available), as Prometheus exporters do.
    All(u16),
    /// `IP:PORT` or `[IPv6]:PORT`: that address only.
    Socket(SocketAddr),
}

/// Parses `IP:PORT`, `[IPv6]:PORT`, or `:PORT` (all addresses, both families).
pub fn parse_listen_address(s: &str) -> Result<ListenAddress, String> {
    let bad = || format!("invalid address {s:?}: want IP:PORT, [IPv6]:PORT or :PORT");
    match s.strip_prefix(':') {
        Some(port) => port.parse().map(ListenAddress::All).map_err(|_| bad()),
        None => s.parse().map(ListenAddress::Socket).map_err(|_| bad()),
    }
}

/// Checks a peer URL: `http://HOST:PORT` with nothing after the port.
pub fn parse_peer_url(url: &str) -> Result<hyper::Uri, String> {
    let uri: hyper::Uri = url
        .parse()
        .map_err(|_| format!("invalid URL {url:?}: want http://HOST:PORT"))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => return Err(format!("{url:?}: https is not supported yet; use http")),
        _ => return Err(format!("invalid URL {url:?}: want http://HOST:PORT")),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(format!("invalid URL {url:?}: no host"));
    }
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        return Err(format!(
            "invalid URL {url:?}: give the server only, without a path"
        ));
    }
    Ok(uri)
}

/// Reads a secret (a token) from `path`, trimmed; `key` names the config key in errors.
pub fn read_secret(path: &Path, key: &str) -> Result<String, Error> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::Invalid {
        origin: path.display().to_string(),
        key: key.to_string(),
        reason: format!("cannot read the token: {e}"),
    })?;
    let token = text.trim().to_string();
    if token.is_empty() {
        return Err(Error::Invalid {
            origin: path.display().to_string(),
            key: key.to_string(),
            reason: "the token file is empty".into(),
        });
    }
    Ok(token)
}

/// `PORTSIGHT__PROBE__INTERVAL` → `probe.interval`.
fn env_key_to_path(var: &str) -> String {
    var.trim_start_matches(ENV_PREFIX)
        .trim_start_matches(ENV_SEPARATOR)
        .split(ENV_SEPARATOR)
        .map(str::to_lowercase)
        .collect::<Vec<_>>()
        .join(".")
}

/// The config crate words some errors with the key inside the message
/// (" for key `x`", `missing configuration field "port[0]port"`); the key is
/// reported on its own, so take it out of the reason.
fn key_and_reason(key: String, message: &str) -> (String, String) {
    let message = one_line(message);
    if let Some(rest) = message.strip_prefix("missing configuration field ") {
        let field = rest.trim_matches('"');
        let field = field.rsplit([']', '.']).next().unwrap_or(field);
        let key = if key == "." || key.is_empty() {
            field.to_string()
        } else {
            format!("{key}.{field}")
        };
        return (key, "missing, and it has no default".to_string());
    }
    match message.find(" for key `") {
        Some(i) => (key, message[..i].to_string()),
        None => (key, message),
    }
}

/// `line L, column C: message` from a TOML syntax error.
fn toml_error(text: &str, e: &toml::de::Error) -> String {
    match e.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
            format!("line {line}, column {column}: {}", one_line(e.message()))
        }
        None => one_line(e.message()),
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

pub fn fmt_duration(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_default_is_the_default() {
        let parsed: Config = toml::from_str(DEFAULT_TOML).unwrap();
        assert_eq!(parsed, Config::default());
        assert_eq!(
            Config::load_with_env(None, HashMap::new()).unwrap(),
            Config::default()
        );
    }

    #[test]
    fn environment_overrides() {
        let env = HashMap::from([
            ("PORTSIGHT__PROBE__INTERVAL".to_string(), "5s".to_string()),
            (
                "PORTSIGHT__DISCOVER__ENABLED".to_string(),
                "false".to_string(),
            ),
            ("PORTSIGHT__PROBE__CONCURRENCY".to_string(), "8".to_string()),
            ("OTHER".to_string(), "x".to_string()),
        ]);
        let c = Config::load_with_env(None, env).unwrap();
        assert_eq!(c.probe.interval, Duration::from_secs(5));
        assert_eq!(c.probe.concurrency, 8);
        assert!(!c.discover.enabled);
    }

    #[test]
    fn env_key_paths() {
        assert_eq!(
            env_key_to_path("PORTSIGHT__PROBE__INTERVAL"),
            "probe.interval"
        );
    }

    #[test]
    fn listen_addresses() {
        assert_eq!(
            parse_listen_address(":10917").unwrap(),
            ListenAddress::All(10917)
        );
        assert_eq!(
            parse_listen_address("[::1]:80").unwrap(),
            ListenAddress::Socket("[::1]:80".parse().unwrap())
        );
        assert!(parse_listen_address(":http").is_err());
        assert!(parse_listen_address("localhost:80").is_err());
    }
}
