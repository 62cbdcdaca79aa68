//! The state of every watched port at one moment, produced by the scan and
//! probe cycles and swapped in whole; readers only ever see a complete one.

use std::time::SystemTime;

use crate::config::Expect;
use crate::probe::ProbeResult;
use crate::sockets::{Listener, Source};
use crate::watch::Origin;

#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Every watched port, ordered by port number.
    pub ports: Vec<PortStatus>,
    /// Where the last socket table came from.
    pub source: Option<Source>,
    /// When the last scan and the last full probe round completed.
    pub scanned_at: Option<SystemTime>,
    pub probed_at: Option<SystemTime>,
}

impl Snapshot {
    /// Ready once one scan and one full probe round have completed.
    pub fn ready(&self) -> bool {
        self.scanned_at.is_some() && self.probed_at.is_some()
    }

    pub fn port(&self, port: u16) -> Option<&PortStatus> {
        self.ports.iter().find(|p| p.port == port)
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
    /// The latest result for each target of this port, ordered by vantage and target.
    pub probes: Vec<ProbeResult>,
}

impl PortStatus {
    pub fn listening(&self) -> bool {
        !self.listeners.is_empty()
    }
}
