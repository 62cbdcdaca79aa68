//! The diagnosis: a pure function from a port's policy, its listeners and its
//! probe results to exactly one [`Cause`], with a one-line summary and a fix
//! hint in plain words that name the evidence. No I/O here.
//!
//! What is true of a port is worked out once ([`facts`]); an ordered list of
//! small rules, one per cause ([`rules`]), then picks the first cause that
//! applies; the phrasing lives apart ([`words`]).

mod facts;
mod firewall;
mod rules;
mod through;
mod words;

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, SystemTime};

use serde::Serialize;
use strum::VariantArray;

use crate::config::{Expect, Protocol};
use crate::netfilter::NamedRule;
use crate::netns::Namespace;
use crate::probe::{ProbeResult, Vantage};
use crate::sockets::Listener;

pub use facts::{Want, covers, want};
pub use firewall::Firewall;
pub use words::{describe, not_measured};

/// Why a port is (not) reachable. A closed set, in the order the rules
/// evaluate it (DESIGN.md, "Diagnosis causes").
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    strum::VariantArray,
    strum::IntoStaticStr,
)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum Cause {
    NotListening,
    Forwarded,
    UnexpectedListener,
    AcceptQueueFull,
    ConntrackFull,
    LoopbackOnly,
    BoundElsewhere,
    AddressFamilyMismatch,
    Rejected,
    Filtered,
    Unreachable,
    Exposed,
    Transient,
    Ok,
}

/// How bad a cause is, for whatever paints it (the status page, `check`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Severity {
    Ok,
    /// Works, but worth a look: a recent failure, or a forward portsight cannot see through.
    Warning,
    Critical,
}

impl Cause {
    /// Every cause, in declaration (and evaluation) order.
    pub const ALL: &'static [Cause] = <Cause as VariantArray>::VARIANTS;

    pub fn as_str(self) -> &'static str {
        self.into()
    }

    pub fn severity(self) -> Severity {
        match self {
            Cause::Ok => Severity::Ok,
            Cause::Transient | Cause::Forwarded => Severity::Warning,
            _ => Severity::Critical,
        }
    }

    /// Causes where the port failed to be reachable as wanted; a port that
    /// recovers from one of these is `transient` for a while.
    pub fn is_reachability_failure(self) -> bool {
        matches!(
            self,
            Cause::NotListening
                | Cause::AcceptQueueFull
                | Cause::ConntrackFull
                | Cause::LoopbackOnly
                | Cause::BoundElsewhere
                | Cause::AddressFamilyMismatch
                | Cause::Rejected
                | Cause::Filtered
                | Cause::Unreachable
        )
    }
}

/// The last time a port failed, kept for `transient`.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    pub at: SystemTime,
    pub cause: Cause,
    /// The vantage and target that showed it, when a probe did.
    pub vantage: Option<Vantage>,
    pub target: Option<SocketAddr>,
}

/// Which vantages are configured, so that those not measured are named as such.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Vantages {
    pub loopback: bool,
    pub interface: bool,
    pub external: bool,
    /// The port is in another network namespace: the `host` vantage
    /// probes it, and peers do not.
    pub host: bool,
}

impl Vantages {
    /// Each vantage that applies to the port, nearest first, and whether
    /// it is configured: `external` for a port of the host's namespace,
    /// `host` for one of another namespace.
    pub fn each(self) -> [(Vantage, bool); 3] {
        let far = if self.host {
            (Vantage::Host, true)
        } else {
            (Vantage::External, self.external)
        };
        [
            (Vantage::Loopback, self.loopback),
            (Vantage::Interface, self.interface),
            far,
        ]
    }
}

/// What the diagnosis of one port looks at.
#[derive(Debug, Clone)]
pub struct Input<'a> {
    pub port: u16,
    pub protocol: Protocol,
    /// Whether the port is probed at all: a discovered UDP port is not, and
    /// is diagnosed from its sockets alone.
    pub probed: bool,
    pub expect: Expect,
    pub listeners: &'a [Listener],
    /// The current probe results (stale ones already left out).
    pub probes: &'a [ProbeResult],
    pub vantages: Vantages,
    /// The port's last failure, if any.
    pub last_failure: Option<&'a Failure>,
    /// This host's own addresses. An external target that is not one of
    /// them (a public IP NATed to the host) reaches whatever listens on a
    /// non-loopback address.
    pub own_addresses: &'a [IpAddr],
    pub transient_window: Duration,
    pub now: SystemTime,
    /// What the host firewall says about the failed probes; `None` when
    /// it was not asked.
    pub firewall: Option<&'a Firewall>,
    /// The last growth of the kernel's accept-queue drops, within the
    /// hold window.
    pub queue_drops: Option<&'a QueueDrops>,
    /// The connection-tracking table, when there is one.
    pub conntrack: Option<&'a ConntrackView>,
    /// The forward the port is diagnosed through, when it is forwarded.
    pub forward: Option<&'a ForwardStatus>,
    /// For a port of another namespace: that namespace, `Some(None)` when
    /// the last scan did not see it; `None` for the host's own.
    pub netns: Option<(crate::netns::NsId, Option<&'a Namespace>)>,
}

/// A watched port's forward and what its backend looks like.
#[derive(Debug, Clone, PartialEq)]
pub struct ForwardStatus {
    /// `dnat`, `redirect` or `proxy` (the `via` label).
    pub via: &'static str,
    pub backend: SocketAddr,
    /// The other namespace of this host that holds the backend address;
    /// `None` for the host's own namespace or another host.
    pub netns: Option<Namespace>,
    /// The backend is on this host (in its own or another namespace), so
    /// its listeners are known; else it is on another host (`forwarded`).
    pub on_this_host: bool,
    /// The backend port's listeners in that namespace.
    pub backend_listeners: Vec<Listener>,
    /// Where the forward is written: the rule, or the proxy process.
    pub rule: Option<String>,
}

/// The connection-tracking table as of the last scan, and the last growth
/// of its drop counters within the hold window.
#[derive(Debug, Clone, PartialEq)]
pub struct ConntrackView {
    pub table: crate::kernel::Conntrack,
    /// New connections dropped (drop, early_drop, insert_failed) between
    /// two scans, and when that was seen.
    pub grew: Option<(u64, SystemTime)>,
}

/// A growth of the kernel's accept-queue drops (TcpExt ListenOverflows)
/// between two scans.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueDrops {
    pub dropped: u64,
    /// The scan that saw it.
    pub at: SystemTime,
    /// The ports whose listeners were full or nearly so then; empty when
    /// it cannot be told whose queue it was.
    pub ports: Vec<u16>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Diagnosis {
    pub cause: Cause,
    /// One line: what is wrong (or right), naming the evidence.
    pub summary: String,
    /// What to do about it; empty when nothing is to be done.
    pub fix: String,
    /// One line per piece of evidence: listeners, each probe, vantages not measured.
    pub evidence: Vec<String>,
    /// The firewall rules on the path that drop or reject the failed
    /// probes (`rejected`, `filtered`, `unreachable`); empty otherwise.
    pub firewall: Vec<NamedRule>,
    /// The vantage and target that showed a failure, for the failure history.
    #[serde(skip)]
    pub failed: Option<(Vantage, SocketAddr)>,
}

/// Diagnoses one port.
pub fn diagnose(input: &Input) -> Diagnosis {
    let facts = facts::Facts::of(input);
    let (cause, verdict) = rules::first(input, &facts);
    let blamed = match cause {
        Cause::Rejected => facts.split.rejected.as_slice(),
        Cause::Filtered => facts.split.filtered.as_slice(),
        Cause::Unreachable => facts.split.unreachable.as_slice(),
        _ => &[],
    };
    let mut evidence = words::evidence(input);
    evidence.extend(input.forward.map(through::evidence));
    evidence.extend(firewall::evidence(input));
    Diagnosis {
        cause,
        summary: verdict.summary,
        fix: verdict.fix,
        evidence,
        firewall: firewall::named(input, blamed),
        failed: verdict.failed,
    }
}

#[cfg(test)]
mod tests;
