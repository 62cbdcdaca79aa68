//! The config file's shape: serde structs, their defaults, and what a port
//! is expected to be.

use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::address::peer_url;
use super::{AllowRule, ListenAddress};

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
    /// `IP:PORT`, `[IPv6]:PORT`, or `:PORT` (all addresses, both families),
    /// parsed when the config is read.
    pub listen_address: ListenAddress,
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
            listen_address: ListenAddress::default(),
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
    /// Also scan every other network namespace of the host (containers,
    /// pods), where portsight is in the network namespace of PID 1.
    pub namespaces: bool,
    /// The kubelet's pod log directories (`<namespace>_<pod>_<uid>`),
    /// which name pods' namespaces.
    pub pods_root: PathBuf,
    /// Where `ip netns` keeps its names.
    pub netns_dir: PathBuf,
}

impl Default for Scan {
    fn default() -> Self {
        Scan {
            interval: Duration::from_secs(1),
            proc_root: PathBuf::from("/proc"),
            namespaces: true,
            pods_root: PathBuf::from("/var/log/pods"),
            netns_dir: PathBuf::from("/run/netns"),
        }
    }
}

/// `[probe]`. An unset `timeout` fits the interval (as Prometheus's unset
/// `scrape_timeout` does): [`Probe::default_timeout`].
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(from = "ProbeFile")]
pub struct Probe {
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// As set, or [`Probe::default_timeout`] of the interval when not.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    pub concurrency: usize,
}

impl Probe {
    /// The timeout when none is set: 2s, or half the interval when that is shorter.
    pub fn default_timeout(interval: Duration) -> Duration {
        Duration::from_secs(2).min(interval / 2)
    }
}

impl Default for Probe {
    fn default() -> Self {
        Probe::from(ProbeFile::default())
    }
}

/// `[probe]` as written: whether `timeout` was set (by a file or the
/// environment) is known only here.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct ProbeFile {
    #[serde(with = "humantime_serde")]
    interval: Duration,
    #[serde(with = "humantime_serde::option")]
    timeout: Option<Duration>,
    concurrency: usize,
}

impl Default for ProbeFile {
    fn default() -> Self {
        ProbeFile {
            interval: Duration::from_secs(15),
            timeout: None,
            concurrency: 256,
        }
    }
}

impl From<ProbeFile> for Probe {
    fn from(p: ProbeFile) -> Probe {
        Probe {
            interval: p.interval,
            timeout: p
                .timeout
                .unwrap_or_else(|| Probe::default_timeout(p.interval)),
            concurrency: p.concurrency,
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
    /// How long a port must have listened (as portsight saw it, scan after
    /// scan) before discovery watches it: short-lived listeners never alarm.
    #[serde(with = "humantime_serde")]
    pub min_age: Duration,
    /// The most discovered ports watched at once; more are left out,
    /// counted and logged.
    pub max_ports: usize,
}

impl Default for Discover {
    fn default() -> Self {
        Discover {
            enabled: true,
            forget_after: Duration::from_secs(3600),
            min_age: Duration::from_secs(60),
            max_ports: 1000,
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
    /// `http://HOST:PORT` or `https://HOST:PORT` of its portsight, checked
    /// by [`parse_peer_url`](super::parse_peer_url) when the config is read.
    #[serde(with = "peer_url")]
    pub url: hyper::Uri,
    /// Bearer token for its probe server; empty: `peers.token_file`.
    #[serde(default)]
    pub token_file: PathBuf,
    /// `https` only: the CA certificates (PEM) its certificate must chain
    /// to; empty: the system's CA bundle.
    #[serde(default)]
    pub ca_file: PathBuf,
    /// `https` only: the name its certificate must carry; empty: the URL's host.
    #[serde(default)]
    pub server_name: String,
}

/// How peers are spoken to (`[peers] scheme`, as Prometheus's `scheme`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(try_from = "String", into = "&'static str")]
pub enum Scheme {
    #[default]
    Http,
    Https,
}

impl TryFrom<String> for Scheme {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        match s.as_str() {
            "http" => Ok(Scheme::Http),
            "https" => Ok(Scheme::Https),
            _ => Err(format!("unknown value {s:?}, expected one of http, https")),
        }
    }
}

impl From<Scheme> for &'static str {
    fn from(s: Scheme) -> &'static str {
        match s {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
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
    /// `http` or `https` for peers found through DNS.
    pub scheme: Scheme,
    /// `https` DNS peers: the CA certificates (PEM) their certificates must
    /// chain to; empty: the system's CA bundle.
    pub ca_file: PathBuf,
    /// `https` DNS peers: the name their certificates must carry; empty: `dns`.
    pub server_name: String,
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
            scheme: Scheme::Http,
            ca_file: PathBuf::new(),
            server_name: String::new(),
        }
    }
}

/// `[probe_server]`: serving `/probe` and `/api/v1/probe` to others.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProbeServer {
    pub enabled: bool,
    /// Targets that may be probed: `CIDR` or `CIDR:PORT` or `CIDR:LOW-HIGH`,
    /// parsed when the config is read.
    pub allow: Vec<AllowRule>,
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
    pub protocol: Protocol,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub expect: Expect,
    /// What a UDP probe sends (empty: an empty datagram).
    #[serde(default)]
    pub payload: Payload,
    /// The network namespace the port is in, by its name (empty: the host's).
    #[serde(default)]
    pub netns: String,
}

impl PortConfig {
    /// A TCP port with no name, expected `expect`.
    pub fn tcp(port: u16, expect: Expect) -> PortConfig {
        PortConfig {
            port,
            protocol: Protocol::Tcp,
            name: String::new(),
            expect,
            payload: Payload::default(),
            netns: String::new(),
        }
    }
}

/// The transport protocol of a watched port.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Deserialize, Serialize,
)]
#[serde(rename_all = "lowercase", try_from = "String")]
pub enum Protocol {
    #[default]
    Tcp,
    Udp,
}

impl Protocol {
    pub const ALL: [Protocol; 2] = [Protocol::Tcp, Protocol::Udp];

    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

impl TryFrom<String> for Protocol {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl std::str::FromStr for Protocol {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "tcp" => Ok(Protocol::Tcp),
            "udp" => Ok(Protocol::Udp),
            _ => Err(format!("unknown value {s:?}, expected one of tcp, udp")),
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The datagram a UDP probe sends. Written as text (sent as its UTF-8
/// bytes), or as `hex:` followed by an even number of hex digits
/// (`hex:0001` sends two bytes; spaces between bytes are allowed).
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(try_from = "String", into = "String")]
pub struct Payload(Arc<[u8]>);

/// The prefix of a payload written in hex.
pub const HEX_PREFIX: &str = "hex:";

impl Payload {
    pub fn bytes(&self) -> &Arc<[u8]> {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl TryFrom<String> for Payload {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        let Some(hex) = s.strip_prefix(HEX_PREFIX) else {
            return Ok(Payload(Arc::from(s.into_bytes())));
        };
        let digits: Vec<u8> = hex.bytes().filter(|b| *b != b' ').collect();
        if !digits.len().is_multiple_of(2) {
            return Err(format!(
                "{s:?}: odd number of hex digits after {HEX_PREFIX:?}"
            ));
        }
        let mut bytes = Vec::with_capacity(digits.len() / 2);
        for pair in digits.chunks(2) {
            let byte = std::str::from_utf8(pair)
                .ok()
                .and_then(|p| u8::from_str_radix(p, 16).ok())
                .ok_or_else(|| {
                    format!(
                        "{s:?}: {:?} is not a hex byte",
                        String::from_utf8_lossy(pair)
                    )
                })?;
            bytes.push(byte);
        }
        Ok(Payload(Arc::from(bytes)))
    }
}

impl From<Payload> for String {
    fn from(p: Payload) -> String {
        match std::str::from_utf8(&p.0) {
            Ok(text) if !text.starts_with(HEX_PREFIX) => text.to_string(),
            _ => {
                let hex: String = p.0.iter().map(|b| format!("{b:02x}")).collect();
                format!("{HEX_PREFIX}{hex}")
            }
        }
    }
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

impl Config {
    /// True when an outside view is configured (peers listed or discovered).
    pub fn has_external_vantage(&self) -> bool {
        !self.peer_list.is_empty() || !self.peers.dns.is_empty()
    }

    /// The configured port `port`/`protocol` of the host's namespace.
    pub fn port(&self, port: u16, protocol: Protocol) -> Option<&PortConfig> {
        self.port_in("", port, protocol)
    }

    /// The configured port `port`/`protocol` in the namespace named `netns`.
    pub fn port_in(&self, netns: &str, port: u16, protocol: Protocol) -> Option<&PortConfig> {
        self.ports
            .iter()
            .find(|p| p.port == port && p.protocol == protocol && p.netns == netns)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(s: &str) -> Result<Vec<u8>, String> {
        Payload::try_from(s.to_string()).map(|p| p.bytes().to_vec())
    }

    #[test]
    fn payloads_as_text_or_hex() {
        assert_eq!(payload(""), Ok(vec![]));
        assert_eq!(payload("ping\n"), Ok(b"ping\n".to_vec()));
        assert_eq!(payload("hex:00ff1A"), Ok(vec![0, 0xff, 0x1a]));
        assert_eq!(payload("hex:de ad"), Ok(vec![0xde, 0xad]));
        assert_eq!(
            payload("hex:abc"),
            Err("\"hex:abc\": odd number of hex digits after \"hex:\"".into())
        );
        assert_eq!(
            payload("hex:zz"),
            Err("\"hex:zz\": \"zz\" is not a hex byte".into())
        );
        for s in ["", "ping", "hex:0001", "hex:686578"] {
            let p = Payload::try_from(s.to_string()).unwrap();
            assert_eq!(Payload::try_from(String::from(p.clone())), Ok(p), "{s}");
        }
    }

    #[test]
    fn protocols() {
        assert_eq!("udp".parse(), Ok(Protocol::Udp));
        assert_eq!(Protocol::default(), Protocol::Tcp);
        assert_eq!(
            "sctp".parse::<Protocol>(),
            Err("unknown value \"sctp\", expected one of tcp, udp".into())
        );
    }
}
