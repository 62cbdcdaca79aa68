//! The state of every watched port at one moment, produced by the scan and
//! probe cycles and swapped in whole; readers only ever see a complete one.

use std::time::SystemTime;

use serde::Serialize;

use crate::config::Expect;
use crate::diagnosis::Diagnosis;
use crate::engine::watch::Origin;
use crate::probe::{Attempt, Discarded, OutcomeCounts, ProbeResult, Target, Vantage};
use crate::sockets::{Listener, Scope, Source};

/// The only protocol so far.
pub const PROTOCOL: &str = "tcp";

#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Every watched port, ordered by port number.
    pub ports: Vec<PortStatus>,
    /// Where the last socket table came from.
    pub source: Option<Source>,
    /// When the last scan and the last full probe round completed.
    pub scanned_at: Option<SystemTime>,
    pub probed_at: Option<SystemTime>,
    /// Bumped for every new snapshot, so that renderings can be cached.
    pub generation: u64,
    /// Probe attempts discarded because this host lacked a resource.
    pub probes_discarded: Discarded,
    /// Listening ports discovery leaves out (`discover.max_ports`).
    pub discovery_left_out: usize,
}

impl Snapshot {
    /// Ready once one scan and one full probe round have completed.
    pub fn ready(&self) -> bool {
        self.scanned_at.is_some() && self.probed_at.is_some()
    }
}

#[derive(Debug, Clone)]
pub struct PortStatus {
    pub port: u16,
    pub name: String,
    pub expect: Expect,
    pub origin: Origin,
    /// The LISTEN sockets on this port.
    pub listeners: Vec<Listener>,
    /// The latest result for each target of this port, ordered by vantage and
    /// target; results from before the listeners last changed are left out.
    pub probes: Vec<ProbeResult>,
    pub diagnosis: Diagnosis,
    /// Every attempt on each target of this port since it has been watched
    /// under this name, ordered by target (`portsight_probes_total`).
    pub probe_counts: Vec<(Target, OutcomeCounts)>,
}

impl PortStatus {
    pub fn listening(&self) -> bool {
        !self.listeners.is_empty()
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
}

#[derive(Debug, Serialize)]
pub struct PortJson<'a> {
    pub port: u16,
    pub protocol: &'static str,
    pub name: &'a str,
    pub expect: Expect,
    pub origin: Origin,
    pub listening: bool,
    pub listeners: Vec<ListenerJson>,
    pub probes: Vec<ProbeJson<'a>>,
    pub diagnosis: &'a Diagnosis,
}

#[derive(Debug, Serialize)]
pub struct ListenerJson {
    pub address: String,
    pub scope: Scope,
    pub process: Option<String>,
    pub pid: Option<u32>,
    pub accept_queue_length: u32,
    /// `null` where the socket source cannot tell it (/proc/net/tcp).
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
    pub fn status(&self, only: Option<&[u16]>) -> Status<'_> {
        Status {
            ready: self.ready(),
            socket_source: self.source,
            scanned_at: self.scanned_at.map(rfc3339),
            probed_at: self.probed_at.map(rfc3339),
            ports: self
                .ports
                .iter()
                .filter(|p| only.is_none_or(|o| o.contains(&p.port)))
                .map(PortStatus::json)
                .collect(),
        }
    }
}

impl PortStatus {
    fn json(&self) -> PortJson<'_> {
        PortJson {
            port: self.port,
            protocol: PROTOCOL,
            name: &self.name,
            expect: self.expect,
            origin: self.origin,
            listening: self.listening(),
            listeners: self
                .listeners
                .iter()
                .map(|l| ListenerJson {
                    address: l.address.to_string(),
                    scope: l.scope(),
                    process: l.owner.as_ref().map(|o| o.name.clone()),
                    pid: l.owner.as_ref().map(|o| o.pid),
                    accept_queue_length: l.accept_queue_length,
                    accept_queue_limit: l.accept_queue_limit,
                    v6only: l.v6only,
                })
                .collect(),
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
            diagnosis: &self.diagnosis,
        }
    }
}
