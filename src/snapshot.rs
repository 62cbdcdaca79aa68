//! The state of every watched port at one moment, produced by the scan and
//! probe cycles and swapped in whole; readers only ever see a complete one.

use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

use serde::Serialize;

use crate::config::{Expect, Protocol};
pub use crate::diagnosis::ForwardStatus;
use crate::diagnosis::{Diagnosis, Vantages};
use crate::netns::{Namespace, NsId};
use crate::probe::{Attempt, Discarded, OutcomeCounts, ProbeResult, Target, Vantage};
use crate::sockets::{Listener, Scope, Source};

/// What names a watched port: its protocol and number. Every map of
/// per-port state is keyed by it, so TCP and UDP state of one number never
/// mix. Ordered by protocol, then number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PortKey {
    /// The network namespace the port is in; [`NsId::OWN`] for the host's.
    pub netns: NsId,
    pub protocol: Protocol,
    pub port: u16,
}

impl PortKey {
    pub fn tcp(port: u16) -> PortKey {
        PortKey {
            netns: NsId::OWN,
            protocol: Protocol::Tcp,
            port,
        }
    }

    pub fn udp(port: u16) -> PortKey {
        PortKey {
            netns: NsId::OWN,
            protocol: Protocol::Udp,
            port,
        }
    }

    /// The key of a listener's port.
    pub fn of(l: &Listener) -> PortKey {
        PortKey {
            netns: l.netns,
            protocol: l.protocol,
            port: l.port,
        }
    }
}

/// `8080`, `8080/tcp` or `53/udp`, as `portsight check` takes it.
impl std::str::FromStr for PortKey {
    type Err = String;

    fn from_str(s: &str) -> Result<PortKey, String> {
        let (number, protocol) = match s.split_once('/') {
            Some((n, p)) => {
                let protocol = p.parse::<Protocol>().map_err(|_| {
                    format!("{s:?}: unknown protocol {p:?}, want PORT, PORT/tcp or PORT/udp")
                })?;
                (n, protocol)
            }
            None => (s, Protocol::Tcp),
        };
        match number.parse::<u16>() {
            Ok(port) if port > 0 => Ok(PortKey {
                netns: NsId::OWN,
                protocol,
                port,
            }),
            _ => Err(format!("{s:?}: port must be 1 to 65535")),
        }
    }
}

/// `53/udp`, `80/tcp`, and `80/tcp in web-1` for a port of another namespace.
impl fmt::Display for PortKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.port, self.protocol)?;
        if !self.netns.is_own() {
            write!(f, " in {}", self.netns.name())?;
        }
        Ok(())
    }
}

/// Where a watched port comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    Config,
    Discovered,
}

impl Origin {
    /// Whether probes are sent to a port of `protocol` from here: every TCP
    /// port, and configured UDP ports. A discovered UDP port is diagnosed
    /// from the socket table only: an unsolicited datagram can have effects.
    pub fn probes(self, protocol: Protocol) -> bool {
        protocol == Protocol::Tcp || self == Origin::Config
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Config => "config",
            Origin::Discovered => "discovered",
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Every watched port, ordered by protocol (TCP first), then port number;
    /// shared by a snapshot that only moves `scanned_at` on
    /// ([`Snapshot::rescanned`]).
    pub ports: Arc<Vec<PortStatus>>,
    /// Where the last socket table came from.
    pub source: Option<Source>,
    /// When the last scan and the last full probe round completed.
    pub scanned_at: Option<SystemTime>,
    pub probed_at: Option<SystemTime>,
    /// Bumped for every new snapshot whose ports may say something new
    /// (not for [`Snapshot::rescanned`]), so that renderings can be cached.
    pub generation: u64,
    /// Which sources of evidence worked at their last use.
    pub sources: Sources,
    /// Probe attempts discarded because this host lacked a resource.
    pub probes_discarded: Discarded,
    /// Listening ports discovery leaves out (`discover.max_ports`).
    pub discovery_left_out: usize,
    /// The other network namespaces scanned, by name.
    pub namespaces: Vec<Namespace>,
}

/// Whether each source of evidence worked at its last use (`None`: not
/// used). A source that failed is said so (`portsight_source_up 0`), so that
/// missing evidence is never mistaken for a healthy port.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Sources {
    /// The netlink `sock_diag` socket table.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub netlink: Option<bool>,
    /// The `/proc/net/tcp` fallback, used only when netlink fails.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub procfs: Option<bool>,
    /// Owners of sockets (`/proc/<pid>/fd`): false when permissions hid an
    /// owner that was looked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owners: Option<bool>,
    /// The nftables ruleset: the forwards, and the rules named when a
    /// port fails from a local vantage.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub netfilter: Option<bool>,
    /// The other network namespaces' socket tables (`setns`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespaces: Option<bool>,
}

impl Sources {
    /// Each source used, by its `source` label, in label order.
    pub fn each(&self) -> impl Iterator<Item = (&'static str, bool)> {
        [
            ("namespaces", self.namespaces),
            ("netfilter", self.netfilter),
            ("netlink", self.netlink),
            ("owners", self.owners),
            ("procfs", self.procfs),
        ]
        .into_iter()
        .filter_map(|(name, up)| Some((name, up?)))
    }
}

impl Snapshot {
    /// Ready once one scan and one full probe round have completed.
    pub fn ready(&self) -> bool {
        self.scanned_at.is_some() && self.probed_at.is_some()
    }

    /// This snapshot, confirmed by a scan at `at` that found nothing new:
    /// the same ports (shared, not copied) and generation.
    pub fn rescanned(&self, at: SystemTime) -> Snapshot {
        Snapshot {
            scanned_at: Some(at),
            ..self.clone()
        }
    }
}

#[derive(Debug, Clone)]
pub struct PortStatus {
    pub port: u16,
    /// The `protocol` of the JSON and of every metric's labels.
    pub protocol: Protocol,
    pub name: String,
    pub expect: Expect,
    pub origin: Origin,
    /// The LISTEN sockets (TCP) or bound sockets (UDP) on this port.
    pub listeners: Vec<Listener>,
    /// The latest result for each target of this port, ordered by vantage and
    /// target; results from before the listeners last changed are left out.
    pub probes: Vec<ProbeResult>,
    pub diagnosis: Diagnosis,
    /// Since when the diagnosis has had its cause: the first snapshot that
    /// showed it (for a port's first cause, when portsight first diagnosed it).
    pub since: SystemTime,
    /// The vantages it was diagnosed with, and whether each is configured.
    pub vantages: Vantages,
    /// Every attempt on each target of this port since it has been watched
    /// under this name, ordered by target (`portsight_probes_total`).
    pub probe_counts: Vec<(Target, OutcomeCounts)>,
    /// The namespace the port is in; `None` for portsight's own.
    pub netns: Option<Namespace>,
    /// Where the port is forwarded to (DNAT, redirect, a userland proxy),
    /// when it is.
    pub forward: Option<ForwardStatus>,
}

impl PortStatus {
    pub fn listening(&self) -> bool {
        !self.listeners.is_empty()
    }

    /// Whether probes are sent to it ([`Origin::probes`]).
    pub fn probed(&self) -> bool {
        self.origin.probes(self.protocol)
    }

    pub fn key(&self) -> PortKey {
        PortKey {
            netns: self.netns.as_ref().map_or(NsId::OWN, |n| n.id),
            protocol: self.protocol,
            port: self.port,
        }
    }
}

/// The snapshot as JSON (`/api/v1/status`, `portsight check --json`).
#[derive(Debug, Serialize)]
pub struct Status<'a> {
    pub ready: bool,
    /// `netlink` or `procfs`.
    pub socket_source: Option<Source>,
    pub scanned_at: Option<String>,
    pub probed_at: Option<String>,
    pub ports: Vec<PortJson<'a>>,
    pub sources: Sources,
}

#[derive(Debug, Serialize)]
pub struct PortJson<'a> {
    pub port: u16,
    pub protocol: Protocol,
    pub name: &'a str,
    pub expect: Expect,
    pub origin: Origin,
    pub listening: bool,
    pub listeners: Vec<ListenerJson>,
    pub probes: Vec<ProbeJson<'a>>,
    pub diagnosis: DiagnosisJson<'a>,
    pub netns: Option<&'a Namespace>,
    pub forward: Option<ForwardJson<'a>>,
}

/// The diagnosis with `since`: when its cause began to hold (RFC 3339).
#[derive(Debug, Serialize)]
pub struct DiagnosisJson<'a> {
    #[serde(flatten)]
    pub diagnosis: &'a Diagnosis,
    pub since: String,
}

#[derive(Debug, Serialize)]
pub struct ForwardJson<'a> {
    pub via: &'static str,
    pub backend: String,
    pub netns: Option<&'a Namespace>,
    pub on_this_host: bool,
    pub backend_listeners: Vec<ListenerJson>,
    pub rule: Option<&'a str>,
}

#[derive(Debug, Serialize)]
pub struct ListenerJson {
    pub address: String,
    pub scope: Scope,
    pub process: Option<String>,
    pub pid: Option<u32>,
    /// `null` for UDP.
    pub accept_queue_length: Option<u32>,
    /// `null` where the socket source cannot tell it (/proc/net/tcp), and for UDP.
    pub accept_queue_limit: Option<u32>,
    pub v6only: Option<bool>,
}

#[derive(Debug, Serialize)]
pub struct ProbeJson<'a> {
    pub vantage: Vantage,
    pub source: &'a str,
    #[serde(flatten)]
    pub attempt: Attempt,
    pub at: String,
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

impl Snapshot {
    /// The JSON view of the ports `only` selects (all when `None`).
    pub fn status(&self, only: Option<&[PortKey]>) -> Status<'_> {
        Status {
            ready: self.ready(),
            socket_source: self.source,
            scanned_at: self.scanned_at.map(rfc3339),
            probed_at: self.probed_at.map(rfc3339),
            ports: self
                .ports
                .iter()
                .filter(|p| only.is_none_or(|o| o.contains(&p.key())))
                .map(PortStatus::json)
                .collect(),
            sources: self.sources,
        }
    }
}

impl PortStatus {
    fn json(&self) -> PortJson<'_> {
        PortJson {
            port: self.port,
            protocol: self.protocol,
            name: &self.name,
            expect: self.expect,
            origin: self.origin,
            listening: self.listening(),
            listeners: self.listeners.iter().map(ListenerJson::from).collect(),
            probes: self
                .probes
                .iter()
                .map(|r| ProbeJson {
                    vantage: r.target.vantage,
                    source: &r.target.source,
                    attempt: Attempt::from(r),
                    at: rfc3339(r.at),
                })
                .collect(),
            diagnosis: DiagnosisJson {
                diagnosis: &self.diagnosis,
                since: rfc3339(self.since),
            },
            netns: self.netns.as_ref(),
            forward: self.forward.as_ref().map(|f| ForwardJson {
                via: f.via,
                backend: f.backend.to_string(),
                netns: f.netns.as_ref(),
                on_this_host: f.on_this_host,
                backend_listeners: f.backend_listeners.iter().map(ListenerJson::from).collect(),
                rule: f.rule.as_deref(),
            }),
        }
    }
}

impl From<&Listener> for ListenerJson {
    fn from(l: &Listener) -> ListenerJson {
        ListenerJson {
            address: l.address.to_string(),
            scope: l.scope(),
            process: l.owner.as_ref().map(|o| o.name.clone()),
            pid: l.owner.as_ref().map(|o| o.pid),
            accept_queue_length: (l.protocol == Protocol::Tcp).then_some(l.accept_queue_length),
            accept_queue_limit: l.accept_queue_limit,
            v6only: l.v6only,
        }
    }
}
