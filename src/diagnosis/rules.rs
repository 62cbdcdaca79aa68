//! One rule per cause, in the order DESIGN.md's table evaluates them: the
//! first rule that applies decides the cause. Each rule may take for granted
//! that the rules before it did not apply.

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use crate::config::Expect;
use crate::probe::{Outcome, ProbeResult, Vantage};
use crate::sockets::Scope;

use super::facts::{Facts, Through, other_family_wildcard};
use super::firewall::blame;
use super::through;
use super::words::{
    describe, failed_verb, listening_on, ok_summary, owner_or_port, owner_or_process, owners,
    port_name, targets, vantage_names, when,
};
use super::{Cause, Input};

/// What a rule that applies says: the summary, the fix, and the probe that
/// showed the failure, if one did.
#[derive(Debug)]
pub(super) struct Verdict {
    pub summary: String,
    pub fix: String,
    pub failed: Option<(Vantage, SocketAddr)>,
}

/// A rule: its verdict when it applies to the port, else `None`.
type Rule = fn(&Input, &Facts) -> Option<Verdict>;

/// Every cause with its rule, in evaluation order. `ok` always applies, so
/// it comes last.
pub(super) const RULES: &[(Cause, Rule)] = &[
    (Cause::NotListening, not_listening),
    (Cause::Forwarded, forwarded),
    (Cause::UnexpectedListener, unexpected_listener),
    (Cause::AcceptQueueFull, accept_queue_full),
    (Cause::ConntrackFull, conntrack_full),
    (Cause::LoopbackOnly, loopback_only),
    (Cause::BoundElsewhere, bound_elsewhere),
    (Cause::AddressFamilyMismatch, address_family_mismatch),
    (Cause::Rejected, rejected),
    (Cause::Filtered, filtered),
    (Cause::Unreachable, unreachable),
    (Cause::Exposed, exposed),
    (Cause::Transient, transient),
    (Cause::Ok, ok),
];

/// The cause of the first rule that applies, and its verdict.
pub(super) fn first(input: &Input, facts: &Facts) -> (Cause, Verdict) {
    RULES
        .iter()
        .find_map(|&(cause, rule)| rule(input, facts).map(|v| (cause, v)))
        .unwrap_or_else(|| (Cause::Ok, settled(input)))
}

/// The vantage and target a probe showed a failure on.
fn shown(r: &ProbeResult) -> (Vantage, SocketAddr) {
    (r.target.vantage, r.target.addr)
}

/// The verdict of a rule whose cause is that of a broken forward's backend.
fn through_broken(input: &Input, facts: &Facts, cause: Cause) -> Option<Verdict> {
    if input.expect == Expect::Closed {
        return None;
    }
    let f = facts.through.broken_as(cause)?;
    let (summary, fix) = through::broken(input, f, cause);
    Some(Verdict {
        summary,
        fix,
        failed: facts
            .failures
            .first()
            .copied()
            .or_else(|| input.probes.iter().find(|r| r.outcome != Outcome::Success))
            .map(shown),
    })
}

/// Whether the port's own listeners are what decides: it is not
/// forwarded to a backend of this host.
fn direct(facts: &Facts) -> bool {
    matches!(facts.through, Through::Direct | Through::Away(_))
}

/// Nothing listens and nothing answers, where the policy wants something
/// to; or the port is forwarded to a backend where nothing listens.
fn not_listening(input: &Input, facts: &Facts) -> Option<Verdict> {
    if let Some(v) = through_broken(input, facts, Cause::NotListening) {
        return Some(v);
    }
    if let Some((id, None)) = input.netns
        && input.expect != Expect::Closed
    {
        return Some(Verdict {
            summary: format!(
                "port {} is configured in network namespace {:?}, which the last scan did not find",
                port_name(input),
                &*id.name()
            ),
            fix: "start the container or pod, or check the [[port]] netns name against portsight_netns_info".into(),
            failed: None,
        });
    }
    if !matches!(facts.through, Through::Direct)
        || facts.listening
        || !facts.successes.is_empty()
        || input.expect == Expect::Closed
    {
        return None;
    }
    let port = port_name(input);
    let failed: Vec<&ProbeResult> = input.probes.iter().collect();
    let summary = if failed.is_empty() {
        format!("nothing listens on port {port}")
    } else {
        format!(
            "nothing listens on port {port}; {} {}",
            targets(&failed),
            failed_verb(&failed)
        )
    };
    Some(Verdict {
        summary,
        fix: format!(
            "start the service, or check which port it is configured to listen on (expected {port})"
        ),
        failed: input.probes.first().map(shown),
    })
}

/// The port is forwarded to another host; or nothing listens on this
/// host, yet a probe connects.
fn forwarded(input: &Input, facts: &Facts) -> Option<Verdict> {
    if let Through::Away(f) = facts.through {
        return Some(Verdict {
            summary: format!(
                "port {} is {}: its listeners are not visible from here",
                port_name(input),
                through::where_to(f)
            ),
            fix: "informational: check the backend on that host (portsight there, or its own monitoring)".into(),
            failed: None,
        });
    }
    if !direct(facts) || facts.listening || facts.successes.is_empty() {
        return None;
    }
    Some(Verdict {
        summary: format!(
            "nothing listens on port {} on this host, yet {} answered: the port is forwarded",
            port_name(input),
            targets(&facts.successes)
        ),
        fix: "informational: a NAT/DNAT rule or a port-forwarding process answers for it (nft list ruleset; ss -tnp)".into(),
        failed: None,
    })
}

/// Something listens on a port whose policy is `closed`.
fn unexpected_listener(input: &Input, facts: &Facts) -> Option<Verdict> {
    if input.expect != Expect::Closed || !facts.listening {
        return None;
    }
    Some(Verdict {
        summary: format!(
            "{} on a port whose policy is closed",
            listening_on(input.listeners)
        ),
        fix: format!(
            "stop {}, or change the port's expect",
            owners(input.listeners)
        ),
        failed: None,
    })
}

/// A listener's accept queue is at or past its limit, or overflowed
/// between scans within the hold window (the kernel's counters grew while
/// this port's queue was full or nearly so).
fn accept_queue_full(input: &Input, facts: &Facts) -> Option<Verdict> {
    let held = input.queue_drops.filter(|q| q.ports.contains(&input.port));
    let (l, summary) = match (facts.full_queue, held) {
        (Some(l), _) => (
            l,
            format!(
                "the accept queue of {} holds {} connections, limit {}: new connections are dropped",
                describe(l),
                l.accept_queue_length,
                l.accept_queue_limit.unwrap_or(0)
            ),
        ),
        (None, Some(q)) => {
            let l = input
                .listeners
                .iter()
                .max_by_key(|l| l.accept_queue_length)?;
            (
                l,
                format!(
                    "the accept queue of {} overflowed: the kernel dropped {} connections to full accept queues {}; it holds {} of {} now",
                    describe(l),
                    q.dropped,
                    when(q, input.now),
                    l.accept_queue_length,
                    l.accept_queue_limit.unwrap_or(0)
                ),
            )
        }
        (None, None) => return None,
    };
    Some(Verdict {
        summary,
        fix: format!(
            "{} is not accepting connections fast enough: overloaded or hung; look at it (CPU, threads, strace), or raise its listen backlog",
            owner_or_process(l)
        ),
        failed: input
            .probes
            .iter()
            .find(|r| r.outcome != Outcome::Success)
            .map(shown),
    })
}

/// Probes time out and the connection-tracking table is full, or dropped
/// new connections between scans.
fn conntrack_full(input: &Input, facts: &Facts) -> Option<Verdict> {
    let ct = input.conntrack?;
    let timeouts: Vec<&ProbeResult> = facts
        .failures
        .iter()
        .filter(|r| r.outcome == Outcome::Timeout)
        .copied()
        .collect();
    let first = timeouts.first()?;
    let t = &ct.table;
    let mut summary = format!("{} timed out", targets(&timeouts));
    if t.full() {
        let _ = write!(
            summary,
            " and the connection-tracking table is full ({} of {} entries)",
            t.count, t.max
        );
    } else {
        let _ = write!(
            summary,
            " while the connection-tracking table dropped new connections ({} of {} entries now)",
            t.count, t.max
        );
    }
    match ct.grew {
        Some((n, at)) => {
            let q = super::QueueDrops {
                dropped: n,
                at,
                ports: Vec::new(),
            };
            let _ = write!(
                summary,
                ": the kernel dropped {n} new connections {} (nf_conntrack drop, early_drop, insert_failed)",
                when(&q, input.now)
            );
        }
        None if !t.full() => return None,
        None => summary.push_str(": new connections are dropped"),
    }
    Some(Verdict {
        summary,
        fix: format!(
            "raise net.netfilter.nf_conntrack_max (now {}), shorten the conntrack timeouts (net.netfilter.nf_conntrack_tcp_timeout_*), or find the flood filling it (conntrack -S; conntrack -L)",
            t.max
        ),
        failed: Some(shown(first)),
    })
}

/// Every listener is on a loopback address, and the policy wants more.
fn loopback_only(input: &Input, facts: &Facts) -> Option<Verdict> {
    if let Some(v) = through_broken(input, facts, Cause::LoopbackOnly) {
        return Some(v);
    }
    let listeners = input.listeners;
    if !direct(facts)
        || !listeners.iter().all(|l| l.scope() == Scope::Loopback)
        || !matches!(
            input.expect,
            Expect::Public | Expect::Internal | Expect::Auto
        )
    {
        return None;
    }
    let mut summary = format!("{} only", listening_on(listeners));
    if !facts.failures.is_empty() {
        let _ = write!(summary, "; {} refused", targets(&facts.failures));
    }
    let loopbacks = listeners
        .iter()
        .map(|l| l.address.to_string())
        .collect::<Vec<_>>()
        .join(", ");
    Some(Verdict {
        summary,
        fix: format!(
            "bind to 0.0.0.0 or :: instead of {loopbacks}, so that other hosts can connect"
        ),
        failed: facts
            .failures
            .first()
            .copied()
            .or_else(|| input.probes.first())
            .map(shown),
    })
}

/// A wanted target that no listener takes, though one of its family listens.
fn bound_elsewhere(input: &Input, facts: &Facts) -> Option<Verdict> {
    if let Some(v) = through_broken(input, facts, Cause::BoundElsewhere) {
        return Some(v);
    }
    if !direct(facts) {
        return None;
    }
    let elsewhere = &facts.split.elsewhere;
    let first = elsewhere.first()?;
    Some(Verdict {
        summary: format!(
            "{} only; {} {}",
            listening_on(input.listeners),
            targets(elsewhere),
            failed_verb(elsewhere)
        ),
        fix: format!(
            "bind to 0.0.0.0 / :: (all addresses), or also to {}",
            first.target.addr.ip()
        ),
        failed: Some(shown(first)),
    })
}

/// A wanted target of a family that only the other family's wildcard misses.
fn address_family_mismatch(input: &Input, facts: &Facts) -> Option<Verdict> {
    if let Some(v) = through_broken(input, facts, Cause::AddressFamilyMismatch) {
        return Some(v);
    }
    if !direct(facts) {
        return None;
    }
    let mismatched = &facts.split.mismatched;
    let first = mismatched.first()?;
    let wildcard = other_family_wildcard(input.listeners, first.target.addr.ip());
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
    Some(Verdict {
        summary: format!(
            "{} ({covers_what}); {} {}",
            listening_on(input.listeners),
            targets(mismatched),
            failed_verb(mismatched)
        ),
        fix: fix.into(),
        failed: Some(shown(first)),
    })
}

/// A listener takes a wanted target, yet it was refused.
fn rejected(input: &Input, facts: &Facts) -> Option<Verdict> {
    let rejected = &facts.split.rejected;
    let first = rejected.first()?;
    let vantages = vantage_names(rejected);
    let covers = match input.forward {
        Some(f) if input.listeners.is_empty() => {
            format!(
                "port {} is {}, which listens",
                port_name(input),
                through::where_to(f)
            )
        }
        _ => format!(
            "{} covers {}",
            listening_on(input.listeners),
            targets(rejected)
        ),
    };
    let (summary, fix) = match blame(input, rejected, "rejected") {
        Some(b) => (
            format!(
                "{covers}, yet it was {} from the {vantages} vantage",
                b.phrase
            ),
            b.fix,
        ),
        None => (
            format!(
                "{covers}, yet it was refused from the {vantages} vantage: a firewall rejects it"
            ),
            format!(
                "look for REJECT rules for port {} on the path from the {vantages} vantage (nft list ruleset; iptables -S)",
                port_name(input)
            ),
        ),
    };
    Some(Verdict {
        summary,
        fix,
        failed: Some(shown(first)),
    })
}

/// A listener takes a wanted target, yet it timed out.
fn filtered(input: &Input, facts: &Facts) -> Option<Verdict> {
    let port = port_name(input);
    let filtered = &facts.split.filtered;
    let first = filtered.first()?;
    let nearer: Vec<&ProbeResult> = facts
        .successes
        .iter()
        .filter(|r| r.target.vantage < first.target.vantage)
        .copied()
        .collect();
    let nearer = if nearer.is_empty() {
        String::new()
    } else {
        format!(" while {} answered", targets(&nearer))
    };
    let timed_out = format!(
        "{} timed out from the {} vantage{nearer}",
        targets(filtered),
        vantage_names(filtered)
    );
    let (summary, fix) = match blame(input, filtered, "dropped") {
        Some(b) => (format!("{timed_out}: it was {}", b.phrase), b.fix),
        None => (
            format!("{timed_out}: packets to port {port} are dropped"),
            format!(
                "a firewall drops port {port} on the way: the host firewall (nft list ruleset), a security group or a network ACL"
            ),
        ),
    };
    Some(Verdict {
        summary,
        fix,
        failed: Some(shown(first)),
    })
}

/// A wanted target is host or network unreachable, or another error.
fn unreachable(input: &Input, facts: &Facts) -> Option<Verdict> {
    let unreachable = &facts.split.unreachable;
    let first = unreachable.first()?;
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
    let cannot = format!(
        "cannot reach port {} from the {} vantage ({errors})",
        port_name(input),
        vantage_names(unreachable)
    );
    let (summary, fix) = match blame(input, unreachable, "stopped") {
        Some(b) => (format!("{cannot}: it was {}", b.phrase), b.fix),
        None => (
            cannot,
            "check routing to the address, and firewall rules that answer with ICMP admin-prohibited".into(),
        ),
    };
    Some(Verdict {
        summary,
        fix,
        failed: Some(shown(first)),
    })
}

/// A vantage the policy wants closed connects.
fn exposed(input: &Input, facts: &Facts) -> Option<Verdict> {
    let (port, expect) = (port_name(input), input.expect);
    let exposed = &facts.exposed;
    if exposed.is_empty() {
        return None;
    }
    Some(Verdict {
        summary: format!(
            "the {expect} port {port} answers from the {} vantage at {}",
            vantage_names(exposed),
            targets(exposed)
        ),
        fix: format!(
            "a security finding: bind {} to {} only, or firewall port {port}",
            owner_or_port(input.listeners, &port),
            if expect == Expect::Local {
                "127.0.0.1 / ::1"
            } else {
                "a private address"
            }
        ),
        failed: None,
    })
}

/// All is well now, but the port failed within the transient window. A
/// `closed` port that nothing listens on is closed as expected, whatever it
/// was before.
fn transient(input: &Input, _: &Facts) -> Option<Verdict> {
    let f = input.last_failure?;
    let ago = input.now.duration_since(f.at).ok()?;
    if ago > input.transient_window || input.expect == Expect::Closed {
        return None;
    }
    let seen = match (f.vantage, f.target) {
        (Some(v), Some(t)) => format!(" ({t} from the {} vantage)", v.as_str()),
        _ => String::new(),
    };
    let at = humantime::format_rfc3339_seconds(f.at);
    Some(Verdict {
        summary: format!(
            "reachable now, but it was {} at {at}{seen}, {} ago",
            f.cause.as_str(),
            humantime::format_duration(Duration::from_secs(ago.as_secs()))
        ),
        fix: format!(
            "look at what happened to the service around {at} (restart, deploy, overload)"
        ),
        failed: None,
    })
}

/// Everything the policy asks for holds. Always applies.
fn ok(input: &Input, _: &Facts) -> Option<Verdict> {
    Some(settled(input))
}

/// The verdict of `ok`: a `closed` port that nothing listens on (the rules
/// before leave no other) is closed as expected; any other port is reachable
/// as expected, vantage by vantage.
fn settled(input: &Input) -> Verdict {
    let summary = if input.expect == Expect::Closed {
        format!(
            "closed as expected: nothing listens on port {} and nothing answers",
            port_name(input)
        )
    } else {
        ok_summary(input)
    };
    Verdict {
        summary,
        fix: String::new(),
        failed: None,
    }
}
