//! The per-probe families: the last attempt on each target of a port, and
//! every attempt counted by outcome.

use std::fmt::Write as _;
use std::net::SocketAddr;

use super::labels::{One, PortLabels, ProbeLabels, Written};
use super::text::{Family, bool_value};
use crate::probe::{Discarded, Outcome, ProbeResult, Target};
use crate::snapshot::PortStatus;

const SUCCESS: Family = Family {
    name: "portsight_probe_success",
    help: "1 if the last connect attempt to the target succeeded.",
    kind: "gauge",
};
const OUTCOME: Family = Family {
    name: "portsight_probe_outcome",
    help: "Outcome of the last connect attempt, as a state set: 1 on the current outcome.",
    kind: "gauge",
};
const DURATION: Family = Family {
    name: "portsight_probe_duration_seconds",
    help: "Duration of the last connect attempt.",
    kind: "gauge",
};
const TOTAL: Family = Family {
    name: "portsight_probes_total",
    help: "Connect attempts, by outcome.",
    kind: "counter",
};

const DISCARDED: Family = Family {
    name: "portsight_probes_discarded_total",
    help: "Connect attempts discarded, not diagnosed, because this host lacked a resource (reason: the errno).",
    kind: "counter",
};

/// `portsight_probes_discarded_total`, a series for every reason.
pub(super) fn write_discarded(out: &mut String, discarded: &Discarded) {
    DISCARDED.header(out);
    for (s, n) in discarded.iter() {
        let labels = One {
            name: "reason",
            value: s.as_str(),
        };
        DISCARDED.sample(out, &labels, n as f64);
    }
}

/// The labels of `target` on `port`; `buffer` holds the target's text.
fn labels<'a>(port: PortLabels<'a>, target: &'a Target, buffer: &'a str) -> ProbeLabels<'a> {
    ProbeLabels {
        port,
        source: &target.source,
        target: buffer,
        vantage: target.vantage.as_str(),
    }
}

fn format_into(buffer: &mut String, addr: SocketAddr) {
    buffer.clear();
    let _ = write!(buffer, "{addr}");
}

/// Each latest result of every port, with its labels written.
fn each_result<'a>(ports: &'a [(&PortStatus, PortLabels<'_>)]) -> Vec<(Written, &'a ProbeResult)> {
    let mut target = String::new();
    ports
        .iter()
        .flat_map(|(p, port)| p.probes.iter().map(move |r| (port, r)))
        .map(|(port, r)| {
            format_into(&mut target, r.target.addr);
            (Written::of(&labels(*port, &r.target, &target)), r)
        })
        .collect()
}

/// `portsight_probe_success`, the `portsight_probe_outcome` state set and
/// `portsight_probe_duration_seconds` of every port's latest results;
/// nothing when no port has one.
pub(super) fn write_latest(out: &mut String, ports: &[(&PortStatus, PortLabels<'_>)]) {
    if ports.iter().all(|(p, _)| p.probes.is_empty()) {
        return;
    }
    let results = each_result(ports);
    SUCCESS.header(out);
    for (labels, r) in &results {
        let value = bool_value(r.outcome == Outcome::Success);
        SUCCESS.sample_written(out, labels, None, value);
    }
    OUTCOME.header(out);
    for (labels, r) in &results {
        for o in Outcome::ALL {
            let value = bool_value(o == r.outcome);
            OUTCOME.sample_written(out, labels, Some(("outcome", o.as_str())), value);
        }
    }
    DURATION.header(out);
    for (labels, r) in &results {
        DURATION.sample_written(out, labels, None, r.duration.as_secs_f64());
    }
}

/// `portsight_probes_total`: every outcome of every target counted so far,
/// by port and target; nothing when no port has a count.
pub(super) fn write_totals(out: &mut String, ports: &[(&PortStatus, PortLabels<'_>)]) {
    if ports.iter().all(|(p, _)| p.probe_counts.is_empty()) {
        return;
    }
    TOTAL.header(out);
    let (mut buffer, mut written) = (String::new(), Written::default());
    for (p, port) in ports {
        for (target, counts) in &p.probe_counts {
            format_into(&mut buffer, target.addr);
            let labels = written.set(&labels(*port, target, &buffer));
            for (o, n) in counts.iter() {
                TOTAL.sample_written(out, labels, Some(("outcome", o.as_str())), n as f64);
            }
        }
    }
}
