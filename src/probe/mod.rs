//! Probes: one TCP connect attempt ([`tcp`]) or one UDP datagram and its
//! answer ([`udp`]) → [`ProbeResult`], and the scheduler that runs many of
//! both under one concurrency limit. A failed probe is a result, not an error.

pub mod scheduler;
pub mod tcp;
pub mod udp;

pub use crate::config::Protocol;
use crate::netns::NsId;

use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};

/// What one attempt ended in (for UDP: a reply is `Success`, ICMP
/// port-unreachable `Refused`, silence `Timeout`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// The handshake completed.
    Success,
    /// `ECONNREFUSED`: a RST, or ICMP port-unreachable (host firewall REJECT).
    Refused,
    /// No answer before the deadline: a silent drop.
    Timeout,
    /// `EHOSTUNREACH` / `ENETUNREACH`: no route, or ICMP admin-prohibited.
    Unreachable,
    /// Anything else; the errno is kept.
    Error,
}

impl Outcome {
    pub const ALL: [Outcome; 5] = [
        Outcome::Success,
        Outcome::Refused,
        Outcome::Timeout,
        Outcome::Unreachable,
        Outcome::Error,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Refused => "refused",
            Outcome::Timeout => "timeout",
            Outcome::Unreachable => "unreachable",
            Outcome::Error => "error",
        }
    }
}

/// How many attempts ended in each [`Outcome`]: the counts behind
/// `portsight_probes_total`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutcomeCounts([u64; Outcome::ALL.len()]);

impl OutcomeCounts {
    pub fn add(&mut self, outcome: Outcome) {
        self.0[outcome as usize] += 1;
    }

    pub fn get(&self, outcome: Outcome) -> u64 {
        self.0[outcome as usize]
    }

    /// Every outcome with its count, in the order of [`Outcome::ALL`].
    pub fn iter(&self) -> impl Iterator<Item = (Outcome, u64)> + '_ {
        Outcome::ALL.iter().map(|o| (*o, self.get(*o)))
    }
}

/// A local resource this host ran out of during an attempt (`EMFILE`,
/// `ENFILE`, `ENOBUFS`, `ENOMEM`): such an attempt says nothing about the
/// target, so it is discarded and counted, never diagnosed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shortage {
    /// `EMFILE`: this process's descriptor limit.
    ProcessDescriptors,
    /// `ENFILE`: the system's descriptor limit.
    SystemDescriptors,
    /// `ENOBUFS`: kernel buffer space.
    Buffers,
    /// `ENOMEM`: kernel memory.
    Memory,
}

impl Shortage {
    pub const ALL: [Shortage; 4] = [
        Shortage::ProcessDescriptors,
        Shortage::SystemDescriptors,
        Shortage::Buffers,
        Shortage::Memory,
    ];

    /// The errno's name, in lower case: the `reason` label.
    pub fn as_str(self) -> &'static str {
        match self {
            Shortage::ProcessDescriptors => "emfile",
            Shortage::SystemDescriptors => "enfile",
            Shortage::Buffers => "enobufs",
            Shortage::Memory => "enomem",
        }
    }

    /// The shortage an OS error number stands for, if it stands for one.
    pub fn from_errno(errno: i32) -> Option<Shortage> {
        match errno {
            libc::EMFILE => Some(Shortage::ProcessDescriptors),
            libc::ENFILE => Some(Shortage::SystemDescriptors),
            libc::ENOBUFS => Some(Shortage::Buffers),
            libc::ENOMEM => Some(Shortage::Memory),
            _ => None,
        }
    }
}

/// Attempts discarded for a [`Shortage`], by shortage: the counts behind
/// `portsight_probes_discarded_total`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Discarded([u64; Shortage::ALL.len()]);

impl Discarded {
    pub fn add(&mut self, s: Shortage) {
        self.0[s as usize] += 1;
    }

    pub fn get(&self, s: Shortage) -> u64 {
        self.0[s as usize]
    }

    /// Every shortage with its count, in the order of [`Shortage::ALL`].
    pub fn iter(&self) -> impl Iterator<Item = (Shortage, u64)> + '_ {
        Shortage::ALL.iter().map(|s| (*s, self.get(*s)))
    }
}

/// Where a probe is made from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Vantage {
    /// `127.0.0.1:P` and `[::1]:P`.
    Loopback,
    /// This host's own interface addresses.
    Interface,
    /// This host's external addresses, probed by peers.
    External,
    /// For a port in another network namespace: that namespace's
    /// addresses, probed from portsight's own (the path published ports,
    /// Services and other containers take).
    Host,
}

impl Vantage {
    pub fn as_str(self) -> &'static str {
        match self {
            Vantage::Loopback => "loopback",
            Vantage::Interface => "interface",
            Vantage::External => "external",
            Vantage::Host => "host",
        }
    }
}

/// The `source` of a probe made by this host.
pub const LOCAL: &str = "local";

/// One thing to probe. The protocol is part of it: a TCP and a UDP result
/// of the same `IP:PORT` are two targets.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Target {
    pub vantage: Vantage,
    /// `local`, or the name of the peer that probed.
    pub source: String,
    pub protocol: Protocol,
    pub addr: SocketAddr,
    /// The network namespace of the port probed. `loopback` and
    /// `interface` probes of a port in another namespace are sent from
    /// inside it; `host` probes from portsight's own.
    pub netns: NsId,
}

impl Target {
    /// A TCP target probed by this host.
    pub fn local(vantage: Vantage, addr: SocketAddr) -> Target {
        Target::new(vantage, Protocol::Tcp, addr)
    }

    /// A target of `protocol` probed by this host.
    pub fn new(vantage: Vantage, protocol: Protocol, addr: SocketAddr) -> Target {
        Target {
            vantage,
            source: LOCAL.to_string(),
            protocol,
            addr,
            netns: NsId::OWN,
        }
    }

    /// The same target, of a port in namespace `netns`.
    pub fn in_netns(self, netns: NsId) -> Target {
        Target { netns, ..self }
    }

    /// The namespace the probe is sent from.
    pub fn sent_from(&self) -> NsId {
        match self.vantage {
            Vantage::Loopback | Vantage::Interface => self.netns,
            Vantage::External | Vantage::Host => NsId::OWN,
        }
    }
}

/// The result of one attempt.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeResult {
    pub target: Target,
    pub outcome: Outcome,
    pub duration: Duration,
    /// The OS error number, where the attempt ended in one.
    pub errno: Option<i32>,
    /// What went wrong, in words; `None` on success.
    pub error: Option<String>,
    /// When the attempt started, for display.
    pub at: SystemTime,
    /// When the attempt started, for ordering: unlike `at`, it never steps.
    pub started: Instant,
}

impl ProbeResult {
    /// The local resource the attempt lacked, when it failed for want of
    /// one: then it is no evidence about the target.
    pub fn shortage(&self) -> Option<Shortage> {
        self.errno.and_then(Shortage::from_errno)
    }
}

/// One attempt as JSON, the fields `/api/v1/status`, `/probe?format=json`
/// and the peers' batch answers share.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attempt {
    /// `IP:PORT`.
    pub target: String,
    pub outcome: Outcome,
    pub duration_seconds: f64,
    pub error: Option<String>,
}

impl From<&ProbeResult> for Attempt {
    fn from(r: &ProbeResult) -> Self {
        Attempt {
            target: r.target.addr.to_string(),
            outcome: r.outcome,
            duration_seconds: r.duration.as_secs_f64(),
            error: r.error.clone(),
        }
    }
}

/// Runs one `attempt` at `target` for at most `timeout` and makes its
/// result: success, the outcome its error stands for, or a timeout, said
/// as "no {answer} within {timeout}{note}".
pub(crate) async fn timed(
    target: Target,
    timeout: Duration,
    (answer, note): (&str, &str),
    attempt: impl std::future::Future<Output = std::io::Result<()>>,
) -> ProbeResult {
    let at = SystemTime::now();
    let start = Instant::now();
    let attempt = tokio::time::timeout(timeout, attempt).await;
    let duration = start.elapsed();
    let (outcome, errno, error) = match attempt {
        Ok(Ok(())) => (Outcome::Success, None, None),
        Ok(Err(e)) => (tcp::classify(&e), e.raw_os_error(), Some(e.to_string())),
        Err(_) => (
            Outcome::Timeout,
            None,
            Some(format!(
                "no {answer} within {}{note}",
                humantime::format_duration(timeout)
            )),
        ),
    };
    ProbeResult {
        target,
        outcome,
        duration,
        errno,
        error,
        at,
        started: start,
    }
}
