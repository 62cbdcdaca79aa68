//! The diagnosis: a pure function from a port's policy, its listeners and its
//! probe results to exactly one [`Cause`], with a one-line summary and a fix
//! hint in plain words that name the evidence. No I/O here.

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::config::Expect;
use crate::probe::{Outcome, ProbeResult, Vantage};
use crate::sockets::{Family, Listener, Scope};

/// Why a port is (not) reachable. A closed set, evaluated in this order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Cause {
    NotListening,
    Forwarded,
    UnexpectedListener,
    AcceptQueueFull,
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

impl Cause {
    pub const ALL: [Cause; 13] = [
        Cause::NotListening,
        Cause::Forwarded,
        Cause::UnexpectedListener,
        Cause::AcceptQueueFull,
        Cause::LoopbackOnly,
        Cause::BoundElsewhere,
        Cause::AddressFamilyMismatch,
        Cause::Rejected,
        Cause::Filtered,
        Cause::Unreachable,
        Cause::Exposed,
        Cause::Transient,
        Cause::Ok,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Cause::NotListening => "not_listening",
            Cause::Forwarded => "forwarded",
            Cause::UnexpectedListener => "unexpected_listener",
            Cause::AcceptQueueFull => "accept_queue_full",
            Cause::LoopbackOnly => "loopback_only",
            Cause::BoundElsewhere => "bound_elsewhere",
            Cause::AddressFamilyMismatch => "address_family_mismatch",
            Cause::Rejected => "rejected",
            Cause::Filtered => "filtered",
            Cause::Unreachable => "unreachable",
            Cause::Exposed => "exposed",
            Cause::Transient => "transient",
            Cause::Ok => "ok",
        }
    }

    /// Causes where the port failed to be reachable as wanted; a port that
    /// recovers from one of these is `transient` for a while.
    pub fn is_reachability_failure(self) -> bool {
        matches!(
            self,
            Cause::NotListening
                | Cause::AcceptQueueFull
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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Vantages {
    pub loopback: bool,
    pub interface: bool,
    pub external: bool,
}

impl Vantages {
    /// Each vantage, nearest first, and whether it is configured.
    pub fn each(self) -> [(Vantage, bool); 3] {
        [
            (Vantage::Loopback, self.loopback),
            (Vantage::Interface, self.interface),
            (Vantage::External, self.external),
        ]
    }
}

/// What the diagnosis of one port looks at.
#[derive(Debug, Clone)]
pub struct Input<'a> {
    pub port: u16,
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
    /// The vantage and target that showed a failure, for the failure history.
    #[serde(skip)]
    pub failed: Option<(Vantage, SocketAddr)>,
}

/// What a policy asks of a vantage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Want {
    /// Every target must answer.
    All,
    /// At least one target must answer (`local` on loopback: 127.0.0.1 or ::1).
    Any,
    /// No target may answer.
    None,
}

fn want(expect: Expect, vantage: Vantage) -> Want {
    use Vantage::*;
    match (expect, vantage) {
        (Expect::Public | Expect::Auto, _) => Want::All,
        (Expect::Internal, Loopback | Interface) => Want::All,
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
    if a.is_ipv4() {
        Family::Ipv4
    } else {
        Family::Ipv6
    }
}

/// Whether a listener takes connections to `r`'s target. An external target
/// that is not an address of this host (NAT) reaches every non-loopback listener.
fn reached(input: &Input, r: &ProbeResult) -> bool {
    let ip = r.target.addr.ip();
    let nat = r.target.vantage == Vantage::External && !input.own_addresses.contains(&ip);
    input
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
fn other_family_wildcard(listeners: &[Listener], target: IpAddr) -> Option<&Listener> {
    listeners.iter().find(|l| {
        l.scope() == Scope::Any
            && family(l.address) != family(target)
            && (l.address.is_ipv4() || l.v6only == Some(true))
    })
}

/// Diagnoses one port.
pub fn diagnose(input: &Input) -> Diagnosis {
    let evidence = evidence(input);
    let (cause, summary, fix, failed) = decide(input);
    Diagnosis {
        cause,
        summary,
        fix,
        evidence,
        failed,
    }
}

type Decision = (Cause, String, String, Option<(Vantage, SocketAddr)>);

fn decide(input: &Input) -> Decision {
    let Input {
        port,
        expect,
        listeners,
        probes,
        ..
    } = *input;
    let listening = !listeners.is_empty();
    let successes: Vec<&ProbeResult> = probes
        .iter()
        .filter(|r| r.outcome == Outcome::Success)
        .collect();

    if !listening && successes.is_empty() && expect != Expect::Closed {
        let failed: Vec<&ProbeResult> = probes.iter().collect();
        let summary = if failed.is_empty() {
            format!("nothing listens on port {port}")
        } else {
            format!(
                "nothing listens on port {port}; {} {}",
                targets(failed.iter().copied()),
                failed_verb(&failed)
            )
        };
        let failed = probes.first().map(|r| (r.target.vantage, r.target.addr));
        return (
            Cause::NotListening,
            summary,
            format!(
                "start the service, or check which port it is configured to listen on (expected {port})"
            ),
            failed,
        );
    }
    if !listening && !successes.is_empty() {
        return (
            Cause::Forwarded,
            format!(
                "nothing listens on port {port} on this host, yet {} answered: the port is forwarded",
                targets(successes.iter().copied())
            ),
            "informational: a NAT/DNAT rule or a port-forwarding process answers for it (nft list ruleset; ss -tnp)".into(),
            None,
        );
    }
    if expect == Expect::Closed {
        if listening {
            return (
                Cause::UnexpectedListener,
                format!(
                    "{} on a port whose policy is closed",
                    listening_on(listeners)
                ),
                format!("stop {}, or change the port's expect", owners(listeners)),
                None,
            );
        }
        return (
            Cause::Ok,
            format!("closed as expected: nothing listens on port {port} and nothing answers"),
            String::new(),
            None,
        );
    }
    if let Some(l) = listeners.iter().find(|l| queue_full(l)) {
        let failed = probes
            .iter()
            .find(|r| r.outcome != Outcome::Success)
            .map(|r| (r.target.vantage, r.target.addr));
        return (
            Cause::AcceptQueueFull,
            format!(
                "the accept queue of {} holds {} connections, limit {}: new connections are dropped",
                describe(l),
                l.accept_queue_length,
                l.accept_queue_limit.unwrap_or(0)
            ),
            format!(
                "{} is not accepting connections fast enough: overloaded or hung; look at it (CPU, threads, strace), or raise its listen backlog",
                owner_or_process(l)
            ),
            failed,
        );
    }

    let failures = wanted_failures(expect, probes);
    let first_failure = failures.first().map(|r| (r.target.vantage, r.target.addr));
    if listeners.iter().all(|l| l.scope() == Scope::Loopback)
        && matches!(expect, Expect::Public | Expect::Internal | Expect::Auto)
    {
        let mut summary = format!("{} only", listening_on(listeners));
        if !failures.is_empty() {
            let _ = write!(summary, "; {} refused", targets(failures.iter().copied()));
        }
        let loopbacks = listeners
            .iter()
            .map(|l| l.address.to_string())
            .collect::<Vec<_>>()
            .join(", ");
        return (
            Cause::LoopbackOnly,
            summary,
            format!(
                "bind to 0.0.0.0 or :: instead of {loopbacks}, so that other hosts can connect"
            ),
            first_failure.or_else(|| probes.first().map(|r| (r.target.vantage, r.target.addr))),
        );
    }

    // Each failure of a target the policy wants reachable, by what explains it.
    let covered = |r: &&&ProbeResult| reached(input, r);
    let unreachable =
        |r: &&&ProbeResult| matches!(r.outcome, Outcome::Unreachable | Outcome::Error);
    let (mismatched, elsewhere): (Vec<&ProbeResult>, Vec<&ProbeResult>) = failures
        .iter()
        .filter(|r| !covered(r) && !unreachable(r))
        .copied()
        .partition(|r| family_missing(listeners, r.target.addr.ip()));
    if let Some(first) = elsewhere.first() {
        let wanted = first.target.addr.ip();
        return (
            Cause::BoundElsewhere,
            format!(
                "{} only; {} {}",
                listening_on(listeners),
                targets(elsewhere.iter().copied()),
                failed_verb(&elsewhere)
            ),
            format!("bind to 0.0.0.0 / :: (all addresses), or also to {wanted}"),
            Some((first.target.vantage, first.target.addr)),
        );
    }
    if let Some(first) = mismatched.first() {
        let wildcard = other_family_wildcard(listeners, first.target.addr.ip());
        let (covers_what, fix) = match wildcard.map(|l| l.address) {
            Some(IpAddr::V4(_)) => (
                "IPv4 only",
                "listen on IPv6 too: bind :: with IPV6_V6ONLY=0 (covers both), or add a socket on ::",
            ),
            _ => (
                "IPv6 only (IPV6_V6ONLY)",
                "listen on IPv4 too: set IPV6_V6ONLY=0 on the :: socket, or add a socket on 0.0.0.0",
            ),
        };
        return (
            Cause::AddressFamilyMismatch,
            format!(
                "{} ({covers_what}); {} {}",
                listening_on(listeners),
                targets(mismatched.iter().copied()),
                failed_verb(&mismatched)
            ),
            fix.into(),
            Some((first.target.vantage, first.target.addr)),
        );
    }
    let rejected: Vec<&ProbeResult> = failures
        .iter()
        .filter(covered)
        .filter(|r| r.outcome == Outcome::Refused)
        .copied()
        .collect();
    if let Some(first) = rejected.first() {
        let vantages = vantage_names(&rejected);
        return (
            Cause::Rejected,
            format!(
                "{} covers {}, yet it was refused from the {vantages} vantage: a firewall rejects it",
                listening_on(listeners),
                targets(rejected.iter().copied())
            ),
            format!(
                "look for REJECT rules for port {port} on the path from the {vantages} vantage (nft list ruleset; iptables -S)"
            ),
            Some((first.target.vantage, first.target.addr)),
        );
    }
    let filtered: Vec<&ProbeResult> = failures
        .iter()
        .filter(covered)
        .filter(|r| r.outcome == Outcome::Timeout)
        .copied()
        .collect();
    if let Some(first) = filtered.first() {
        let nearer: Vec<&ProbeResult> = successes
            .iter()
            .filter(|r| r.target.vantage < first.target.vantage)
            .copied()
            .collect();
        let nearer = if nearer.is_empty() {
            String::new()
        } else {
            format!(" while {} answered", targets(nearer.iter().copied()))
        };
        return (
            Cause::Filtered,
            format!(
                "{} timed out from the {} vantage{nearer}: packets to port {port} are dropped",
                targets(filtered.iter().copied()),
                vantage_names(&filtered)
            ),
            format!(
                "a firewall drops port {port} on the way: the host firewall (nft list ruleset), a security group or a network ACL"
            ),
            Some((first.target.vantage, first.target.addr)),
        );
    }
    let unreachable: Vec<&ProbeResult> = failures.iter().filter(unreachable).copied().collect();
    if let Some(first) = unreachable.first() {
        let errors = unreachable
            .iter()
            .map(|r| {
                format!(
                    "{}: {}",
                    r.target.addr,
                    r.error.as_deref().unwrap_or(r.outcome.as_str())
                )
            })
            .collect::<Vec<_>>()
            .join("; ");
        return (
            Cause::Unreachable,
            format!("cannot reach port {port} from the {} vantage ({errors})", vantage_names(&unreachable)),
            "check routing to the address, and firewall rules that answer with ICMP admin-prohibited".into(),
            Some((first.target.vantage, first.target.addr)),
        );
    }

    let exposed: Vec<&ProbeResult> = successes
        .iter()
        .filter(|r| want(expect, r.target.vantage) == Want::None)
        .copied()
        .collect();
    if !exposed.is_empty() {
        return (
            Cause::Exposed,
            format!(
                "the {expect} port {port} answers from the {} vantage at {}",
                vantage_names(&exposed),
                targets(exposed.iter().copied())
            ),
            format!(
                "a security finding: bind {} to {} only, or firewall port {port}",
                owner_or_port(listeners, port),
                if expect == Expect::Local {
                    "127.0.0.1 / ::1"
                } else {
                    "a private address"
                }
            ),
            None,
        );
    }

    if let Some(f) = input.last_failure
        && input
            .now
            .duration_since(f.at)
            .is_ok_and(|ago| ago <= input.transient_window)
    {
        let ago = input.now.duration_since(f.at).unwrap_or_default();
        let seen = match (f.vantage, f.target) {
            (Some(v), Some(t)) => format!(" ({t} from the {} vantage)", v.as_str()),
            _ => String::new(),
        };
        return (
            Cause::Transient,
            format!(
                "reachable now, but it was {} at {}{seen}, {} ago",
                f.cause.as_str(),
                humantime::format_rfc3339_seconds(f.at),
                humantime::format_duration(Duration::from_secs(ago.as_secs()))
            ),
            format!(
                "look at what happened to the service around {} (restart, deploy, overload)",
                humantime::format_rfc3339_seconds(f.at)
            ),
            None,
        );
    }
    (Cause::Ok, ok_summary(input), String::new(), None)
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

fn ok_summary(input: &Input) -> String {
    let mut parts = Vec::new();
    for (v, configured) in input.vantages.each() {
        let of: Vec<&ProbeResult> = input
            .probes
            .iter()
            .filter(|r| r.target.vantage == v)
            .collect();
        let ok = of.iter().filter(|r| r.outcome == Outcome::Success).count();
        let part = if of.is_empty() {
            if configured {
                format!("{} not measured yet", v.as_str())
            } else {
                format!("{} not measured", v.as_str())
            }
        } else if want(input.expect, v) == Want::None {
            format!("{} closed as expected", v.as_str())
        } else {
            format!("{} {ok}/{} answered", v.as_str(), of.len())
        };
        parts.push(part);
    }
    format!(
        "reachable as expected ({}): {}",
        input.expect,
        parts.join(", ")
    )
}

fn evidence(input: &Input) -> Vec<String> {
    let mut lines = Vec::new();
    if input.listeners.is_empty() {
        lines.push(format!("no listener on port {}", input.port));
    }
    for l in input.listeners {
        let mut line = format!("listening on {}", describe(l));
        if let Some(limit) = l.accept_queue_limit {
            let _ = write!(line, ", accept queue {}/{limit}", l.accept_queue_length);
        }
        if l.v6only == Some(true) && l.scope() == Scope::Any {
            line.push_str(", IPv6 only");
        }
        lines.push(line);
    }
    for r in input.probes {
        let mut line = format!(
            "{} {}: {} in {}",
            r.target.vantage.as_str(),
            r.target.addr,
            r.outcome.as_str(),
            fmt_seconds(r.duration)
        );
        if r.target.source != crate::probe::LOCAL {
            let _ = write!(line, " (probed by {})", r.target.source);
        }
        if let Some(e) = &r.error
            && r.outcome != Outcome::Timeout
        {
            let _ = write!(line, " ({e})");
        }
        lines.push(line);
    }
    for (v, configured) in input.vantages.each() {
        if !input.probes.iter().any(|r| r.target.vantage == v) {
            lines.push(if configured {
                format!("{}: not measured yet", v.as_str())
            } else if v == Vantage::External {
                "external: not measured (no peers configured)".to_string()
            } else {
                format!("{}: not measured (turned off in the config)", v.as_str())
            });
        }
    }
    lines
}

fn fmt_seconds(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1000.0;
    if ms < 10.0 {
        format!("{ms:.2} ms")
    } else {
        format!("{ms:.0} ms")
    }
}

/// `127.0.0.1:8080 (python3, pid 4242)`.
fn describe(l: &Listener) -> String {
    let addr = SocketAddr::new(l.address, l.port);
    match &l.owner {
        Some(o) => format!("{addr} ({}, pid {})", o.name, o.pid),
        None => addr.to_string(),
    }
}

/// `listening on 127.0.0.1:8080 (python3, pid 4242) and [::1]:8080`.
fn listening_on(listeners: &[Listener]) -> String {
    format!(
        "listening on {}",
        listeners
            .iter()
            .map(describe)
            .collect::<Vec<_>>()
            .join(" and ")
    )
}

fn owners(listeners: &[Listener]) -> String {
    let mut names: Vec<String> = listeners.iter().map(owner_or_process).collect();
    names.dedup();
    names.join(" and ")
}

fn owner_or_process(l: &Listener) -> String {
    match &l.owner {
        Some(o) => format!("{} (pid {})", o.name, o.pid),
        None => "the process".to_string(),
    }
}

fn owner_or_port(listeners: &[Listener], port: u16) -> String {
    match listeners.iter().find_map(|l| l.owner.as_ref()) {
        Some(o) => format!("{} (pid {})", o.name, o.pid),
        None => format!("the service on port {port}"),
    }
}

/// `10.77.0.2:8080 and [::1]:8080`.
fn targets<'a>(results: impl Iterator<Item = &'a ProbeResult>) -> String {
    let mut t: Vec<String> = results.map(|r| r.target.addr.to_string()).collect();
    t.dedup();
    match t.len() {
        0 => String::new(),
        1 => t.remove(0),
        _ => {
            let last = t.pop().unwrap_or_default();
            format!("{} and {last}", t.join(", "))
        }
    }
}

fn failed_verb(results: &[&ProbeResult]) -> &'static str {
    if results.iter().all(|r| r.outcome == Outcome::Refused) {
        "refused"
    } else if results.iter().all(|r| r.outcome == Outcome::Timeout) {
        "timed out"
    } else {
        "failed"
    }
}

fn vantage_names(results: &[&ProbeResult]) -> String {
    let mut v: Vec<&str> = results.iter().map(|r| r.target.vantage.as_str()).collect();
    v.sort_unstable();
    v.dedup();
    v.join(" and ")
}

#[cfg(test)]
mod tests;
