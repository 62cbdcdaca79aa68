//! The words of a diagnosis: how listeners, targets and vantages are named in
//! summaries and fixes, the `ok` summary, and the evidence lines.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::Duration;

use crate::probe::{Outcome, ProbeResult, Vantage};
use crate::sockets::{Listener, Scope};

use super::facts::{Want, silent_udp, want};
use super::{Input, QueueDrops};
use crate::config::Protocol;

/// How a summary names the port: `8080` for TCP (as it always has), `53/udp`
/// for UDP.
pub(super) fn port_name(input: &Input) -> String {
    match input.protocol {
        Protocol::Tcp => input.port.to_string(),
        Protocol::Udp => format!("{}/udp", input.port),
    }
}

/// `127.0.0.1:8080 (python3, pid 4242)`.
pub fn describe(l: &Listener) -> String {
    let addr = SocketAddr::new(l.address, l.port);
    match &l.owner {
        Some(o) => format!("{addr} ({}, pid {})", o.name, o.pid),
        None => addr.to_string(),
    }
}

/// `listening on 127.0.0.1:8080 (python3, pid 4242) and [::1]:8080`.
pub(super) fn listening_on(listeners: &[Listener]) -> String {
    format!(
        "listening on {}",
        listeners
            .iter()
            .map(describe)
            .collect::<Vec<_>>()
            .join(" and ")
    )
}

/// `python3 (pid 4242) and nginx (pid 7)`.
pub(super) fn owners(listeners: &[Listener]) -> String {
    let mut names: Vec<String> = listeners.iter().map(owner_or_process).collect();
    names.dedup();
    names.join(" and ")
}

pub(super) fn owner_or_process(l: &Listener) -> String {
    match &l.owner {
        Some(o) => format!("{} (pid {})", o.name, o.pid),
        None => "the process".to_string(),
    }
}

pub(super) fn owner_or_port(listeners: &[Listener], port: &str) -> String {
    match listeners.iter().find_map(|l| l.owner.as_ref()) {
        Some(o) => format!("{} (pid {})", o.name, o.pid),
        None => format!("the service on port {port}"),
    }
}

/// `10.77.0.2:8080 and [::1]:8080`.
pub(super) fn targets(results: &[&ProbeResult]) -> String {
    let mut t: Vec<String> = results.iter().map(|r| r.target.addr.to_string()).collect();
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

/// `refused`, `timed out`, or `failed` when the outcomes differ.
pub(super) fn failed_verb(results: &[&ProbeResult]) -> &'static str {
    if results.iter().all(|r| r.outcome == Outcome::Refused) {
        "refused"
    } else if results.iter().all(|r| r.outcome == Outcome::Timeout) {
        "timed out"
    } else {
        "failed"
    }
}

/// `interface and loopback`: the vantages of `results`, sorted by name.
pub(super) fn vantage_names(results: &[&ProbeResult]) -> String {
    let mut v: Vec<&str> = results.iter().map(|r| r.target.vantage.as_str()).collect();
    v.sort_unstable();
    v.dedup();
    v.join(" and ")
}

/// `reachable as expected (public): loopback 2/2 answered, …`, naming the
/// vantages not measured as such.
pub(super) fn ok_summary(input: &Input) -> String {
    let mut parts = Vec::new();
    for (v, configured) in input.vantages.each() {
        let of: Vec<&ProbeResult> = input
            .probes
            .iter()
            .filter(|r| r.target.vantage == v)
            .collect();
        let ok = of.iter().filter(|r| r.outcome == Outcome::Success).count();
        let silent = of.iter().filter(|r| silent_udp(input, r)).count();
        let part = if of.is_empty() {
            if !input.probed {
                format!("{} not probed", v.as_str())
            } else if configured {
                format!("{} not measured yet", v.as_str())
            } else {
                format!("{} not measured", v.as_str())
            }
        } else if want(input.expect, v) == Want::None {
            format!("{} closed as expected", v.as_str())
        } else if silent > 0 {
            format!("{} {ok}/{} answered, {silent} silent", v.as_str(), of.len())
        } else {
            format!("{} {ok}/{} answered", v.as_str(), of.len())
        };
        parts.push(part);
    }
    if !input.probed {
        return format!(
            "{} as expected ({}), from the socket table alone: a discovered UDP port is not probed",
            listening_on(input.listeners),
            input.expect
        );
    }
    format!(
        "reachable as expected ({}): {}",
        input.expect,
        parts.join(", ")
    )
}

/// One line per listener, per probe, and per vantage not measured.
pub(super) fn evidence(input: &Input) -> Vec<String> {
    let mut lines = Vec::new();
    if input.listeners.is_empty() {
        lines.push(format!("no listener on port {}", port_name(input)));
    }
    lines.extend(input.listeners.iter().map(listener_line));
    lines.extend(queue_line(input));
    lines.extend(input.probes.iter().map(probe_line));
    for (v, configured) in input.vantages.each() {
        if !input.probes.iter().any(|r| r.target.vantage == v) {
            let why = not_measured(v, configured, input.protocol, input.probed);
            lines.push(format!("{}: {why}", v.as_str()));
        }
    }
    lines
}

/// Why vantage `v` has no result for a port: `not measured yet`, `not
/// measured (no peers configured)`, … (`configured`: the vantage is on;
/// `probed`: the port is probed at all).
pub fn not_measured(
    v: Vantage,
    configured: bool,
    protocol: Protocol,
    probed: bool,
) -> &'static str {
    if !probed {
        "not probed (a discovered UDP port; list it with protocol = \"udp\" to probe it)"
    } else if configured && protocol == Protocol::Udp && v == Vantage::External {
        "not measured (peers probe TCP only)"
    } else if configured {
        "not measured yet"
    } else if v == Vantage::External {
        "not measured (no peers configured)"
    } else {
        "not measured (turned off in the config)"
    }
}

/// `since the last scan`, or `12s ago`.
pub(super) fn when(q: &QueueDrops, now: std::time::SystemTime) -> String {
    let ago = now.duration_since(q.at).unwrap_or_default();
    if ago < Duration::from_secs(1) {
        "since the last scan".into()
    } else {
        format!(
            "{} ago",
            humantime::format_duration(Duration::from_secs(ago.as_secs()))
        )
    }
}

/// The kernel's accept-queue drops: this port's, or the host's when they
/// cannot be told to be any port's.
fn queue_line(input: &Input) -> Option<String> {
    let q = input.queue_drops?;
    let what = format!(
        "the kernel dropped {} connections to full accept queues {}",
        q.dropped,
        when(q, input.now)
    );
    if q.ports.contains(&input.port) {
        Some(what)
    } else if q.ports.is_empty() && !input.listeners.is_empty() {
        Some(format!("host: {what}, not attributable to one listener"))
    } else {
        None
    }
}

/// `listening on 0.0.0.0:8080 (python3, pid 4242), accept queue 0/128`.
fn listener_line(l: &Listener) -> String {
    let mut line = format!("listening on {}", describe(l));
    if let Some(limit) = l.accept_queue_limit {
        let _ = write!(line, ", accept queue {}/{limit}", l.accept_queue_length);
    }
    if l.v6only == Some(true) && l.scope() == Scope::Any {
        line.push_str(", IPv6 only");
    }
    line
}

/// `external 203.0.113.7:8080: timeout in 1000 ms (probed by outside-1)`.
fn probe_line(r: &ProbeResult) -> String {
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
    if r.target.protocol == Protocol::Udp && r.outcome == Outcome::Timeout {
        line.push_str(" (no reply: normal for many UDP services)");
    }
    line
}

fn fmt_seconds(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1000.0;
    if ms < 10.0 {
        format!("{ms:.2} ms")
    } else {
        format!("{ms:.0} ms")
    }
}
