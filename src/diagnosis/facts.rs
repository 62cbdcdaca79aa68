//! What is true of one port, worked out once before any rule looks at it:
//! what the policy wants of each vantage, which listeners take which
//! targets, and the failed probes the policy cares about, sorted by what
//! explains them.

use std::net::IpAddr;

use crate::config::{Expect, Protocol};
use crate::probe::{Outcome, ProbeResult, Vantage};
use crate::sockets::{Family, Listener, Scope};

use super::{Cause, ForwardStatus, Input};

/// The facts of one port that the rules decide on.
#[derive(Debug)]
pub(super) struct Facts<'a> {
    /// Something listens on the port.
    pub listening: bool,
    /// The probes that connected, in probe order.
    pub successes: Vec<&'a ProbeResult>,
    /// The failed probes of targets the policy wants reachable (see
    /// [`wanted_failures`]). A UDP probe that timed out on an address a
    /// socket is bound to is not one: silence is what many UDP services
    /// answer to a datagram they do not understand.
    pub failures: Vec<&'a ProbeResult>,
    /// The first listener whose accept queue is full.
    pub full_queue: Option<&'a Listener>,
    /// `failures`, split by what explains each.
    pub split: Split<'a>,
    /// Successes from a vantage the policy wants closed.
    pub exposed: Vec<&'a ProbeResult>,
    /// What the port's forward says, if it is forwarded.
    pub through: Through<'a>,
}

/// The wanted failures, by what explains them, each in probe order. Every
/// failure is in exactly one: unreachable (or an error) whoever listens; else
/// elsewhere or mismatched when no listener takes its target; else rejected
/// or filtered, as it was refused or timed out.
#[derive(Debug, Default)]
pub(super) struct Split<'a> {
    /// No listener takes the target, though one of its family listens elsewhere.
    pub elsewhere: Vec<&'a ProbeResult>,
    /// No listener takes the target's family; a one-family wildcard takes the other.
    pub mismatched: Vec<&'a ProbeResult>,
    /// A listener takes the target, yet it was refused.
    pub rejected: Vec<&'a ProbeResult>,
    /// A listener takes the target, yet it timed out.
    pub filtered: Vec<&'a ProbeResult>,
    /// Host or network unreachable, or another error, whoever listens.
    pub unreachable: Vec<&'a ProbeResult>,
}

impl<'a> Facts<'a> {
    pub fn of(input: &Input<'a>) -> Facts<'a> {
        let probes = input.probes;
        let failures: Vec<&ProbeResult> = wanted_failures(input.expect, probes)
            .into_iter()
            .filter(|r| !silent_udp(input, r))
            .collect();
        let through = Through::of(input);
        Facts {
            listening: !input.listeners.is_empty() || matches!(through, Through::Served),
            through,
            successes: probes
                .iter()
                .filter(|r| r.outcome == Outcome::Success)
                .collect(),
            full_queue: input.listeners.iter().find(|l| queue_full(l)),
            split: Split::of(input, &failures),
            exposed: probes
                .iter()
                .filter(|r| r.outcome == Outcome::Success)
                .filter(|r| want(input.expect, r.target.vantage) == Want::None)
                .collect(),
            failures,
        }
    }
}

impl<'a> Split<'a> {
    fn of(input: &Input<'a>, failures: &[&'a ProbeResult]) -> Split<'a> {
        let mut split = Split::default();
        for &r in failures {
            let ip = r.target.addr.ip();
            let into = if matches!(r.outcome, Outcome::Unreachable | Outcome::Error) {
                &mut split.unreachable
            } else if !reached(input, r) {
                if family_missing(input.listeners, ip) {
                    &mut split.mismatched
                } else {
                    &mut split.elsewhere
                }
            } else if r.outcome == Outcome::Refused {
                &mut split.rejected
            } else if r.outcome == Outcome::Timeout {
                &mut split.filtered
            } else {
                continue; // a success: never a failure
            };
            into.push(r);
        }
        split
    }
}

/// A UDP probe that got no answer from an address a socket is bound to.
pub(super) fn silent_udp(input: &Input, r: &ProbeResult) -> bool {
    input.protocol == Protocol::Udp && r.outcome == Outcome::Timeout && reached(input, r)
}

/// What a policy asks of a vantage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Want {
    /// Every target must answer.
    All,
    /// At least one target must answer (`local` on loopback: 127.0.0.1 or ::1).
    Any,
    /// No target may answer.
    None,
}

pub fn want(expect: Expect, vantage: Vantage) -> Want {
    use Vantage::*;
    match (expect, vantage) {
        (Expect::Public | Expect::Auto, _) => Want::All,
        (Expect::Internal, Loopback | Interface | Host) => Want::All,
        (Expect::Internal, External) => Want::None,
        (Expect::Local, Loopback) => Want::Any,
        (Expect::Local, _) => Want::None,
        (Expect::Closed, _) => Want::None,
    }
}

/// Whether `l` accepts connections to `target`.
pub fn covers(l: &Listener, target: IpAddr) -> bool {
    match (l.address, target) {
        (a, t) if a == t => true,
        (IpAddr::V4(a), IpAddr::V4(_)) => a.is_unspecified(),
        (IpAddr::V6(a), IpAddr::V6(_)) => a.is_unspecified(),
        // `::` takes IPv4 too unless IPV6_V6ONLY is set (unknown: Linux's default, off).
        (IpAddr::V6(a), IpAddr::V4(t)) => {
            (a.is_unspecified() && l.v6only != Some(true)) || a.to_ipv4_mapped() == Some(t)
        }
        (IpAddr::V4(_), IpAddr::V6(_)) => false,
    }
}

fn family(a: IpAddr) -> Family {
    Family::of(a)
}

/// Whether a listener takes connections to `r`'s target. An external target
/// that is not an address of this host (NAT) reaches every non-loopback listener.
fn reached(input: &Input, r: &ProbeResult) -> bool {
    let ip = r.target.addr.ip();
    let nat = r.target.vantage == Vantage::External && !input.own_addresses.contains(&ip);
    matches!(Through::of(input), Through::Served)
        || input
            .listeners
            .iter()
            .any(|l| covers(l, ip) || (nat && l.scope() != Scope::Loopback))
}

/// True when no listener takes `target`'s family at all while a wildcard
/// takes the other one: an address family mismatch, not a bind address
/// elsewhere.
fn family_missing(listeners: &[Listener], target: IpAddr) -> bool {
    let takes_family = listeners.iter().any(|l| {
        family(l.address) == family(target)
            || (target.is_ipv4() && l.scope() == Scope::Any && l.v6only != Some(true))
    });
    !takes_family && other_family_wildcard(listeners, target).is_some()
}

/// A wildcard listener that covers one family only (`0.0.0.0`, or `::` with
/// IPV6_V6ONLY), of the family other than `target`'s.
pub(super) fn other_family_wildcard(listeners: &[Listener], target: IpAddr) -> Option<&Listener> {
    listeners.iter().find(|l| {
        l.scope() == Scope::Any
            && family(l.address) != family(target)
            && (l.address.is_ipv4() || l.v6only == Some(true))
    })
}

/// The failed probes of targets the policy wants reachable: every target of
/// an `All` vantage, and those of an `Any` vantage where none answered.
fn wanted_failures(expect: Expect, probes: &[ProbeResult]) -> Vec<&ProbeResult> {
    let any_ok = |v: Vantage| {
        probes
            .iter()
            .any(|r| r.target.vantage == v && r.outcome == Outcome::Success)
    };
    probes
        .iter()
        .filter(|r| r.outcome != Outcome::Success)
        .filter(|r| match want(expect, r.target.vantage) {
            Want::All => true,
            Want::Any => !any_ok(r.target.vantage),
            Want::None => false,
        })
        .collect()
}

/// A full accept queue: at or past its limit (the kernel drops new
/// connections once the length exceeds the limit).
fn queue_full(l: &Listener) -> bool {
    l.accept_queue_limit
        .is_some_and(|limit| l.accept_queue_length > 0 && l.accept_queue_length >= limit)
}

/// What the forward of a port says, worked out once.
#[derive(Debug, Clone, Copy)]
pub(super) enum Through<'a> {
    /// Not forwarded.
    Direct,
    /// Forwarded to another host: portsight cannot see its listeners.
    Away(&'a ForwardStatus),
    /// Forwarded to a backend of this host, whose listeners take the
    /// backend address: the forward answers for the port.
    Served,
    /// Forwarded to a backend of this host that nothing takes: the cause is
    /// the backend's.
    Broken(&'a ForwardStatus, Cause),
}

impl<'a> Through<'a> {
    pub fn of(input: &Input<'a>) -> Through<'a> {
        let Some(f) = input.forward else {
            return Through::Direct;
        };
        if !f.on_this_host {
            return Through::Away(f);
        }
        let ip = f.backend.ip();
        let ls = &f.backend_listeners;
        if ls.iter().any(|l| covers(l, ip)) {
            Through::Served
        } else if ls.is_empty() {
            Through::Broken(f, Cause::NotListening)
        } else if ls.iter().all(|l| l.scope() == Scope::Loopback) {
            Through::Broken(f, Cause::LoopbackOnly)
        } else if other_family_wildcard(ls, ip).is_some()
            && !ls
                .iter()
                .any(|l| l.family == crate::sockets::Family::of(ip))
        {
            Through::Broken(f, Cause::AddressFamilyMismatch)
        } else {
            Through::Broken(f, Cause::BoundElsewhere)
        }
    }

    /// The broken forward's cause is `cause`.
    pub fn broken_as(self, cause: Cause) -> Option<&'a ForwardStatus> {
        match self {
            Through::Broken(f, c) if c == cause => Some(f),
            _ => None,
        }
    }
}
