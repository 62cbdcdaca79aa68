//! The per-port families: the watch list, whether a port listens, and its
//! diagnosis.

use super::labels::{Labels, PortLabels, Written};
use super::text::{Family, bool_value};
use crate::diagnosis::Cause;
use crate::snapshot::PortStatus;

const INFO: Family = Family {
    name: "portsight_port_info",
    help: "A watched port: its policy and where it comes from.",
    kind: "gauge",
};
const LISTENING: Family = Family {
    name: "portsight_port_listening",
    help: "1 if a LISTEN socket exists on the port.",
    kind: "gauge",
};
const DIAGNOSIS: Family = Family {
    name: "portsight_port_diagnosis",
    help: "Why the port is (not) reachable, as a state set: 1 on the current cause.",
    kind: "gauge",
};

const LEFT_OUT: Family = Family {
    name: "portsight_discovery_ports_left_out",
    help: "Listening ports discovery does not watch because discover.max_ports are watched already.",
    kind: "gauge",
};

/// `portsight_discovery_ports_left_out`.
pub(super) fn write_left_out(out: &mut String, left_out: usize) {
    LEFT_OUT.header(out);
    out.push_str(LEFT_OUT.name);
    out.push(' ');
    out.push_str(&left_out.to_string());
    out.push('\n');
}

/// `portsight_port_info`, `portsight_port_listening` and the
/// `portsight_port_diagnosis` state set, for every port.
pub(super) fn write(out: &mut String, ports: &[(&PortStatus, PortLabels<'_>)]) {
    INFO.header(out);
    for (p, labels) in ports {
        let labels = labels
            .with("expect", p.expect.as_str())
            .with("origin", p.origin.as_str());
        INFO.sample(out, &labels, 1.0);
    }
    LISTENING.header(out);
    for (p, labels) in ports {
        LISTENING.sample(out, labels, bool_value(p.listening()));
    }
    DIAGNOSIS.header(out);
    let mut written = Written::default();
    for (p, labels) in ports {
        let labels = written.set(labels);
        for &cause in Cause::ALL {
            let value = bool_value(cause == p.diagnosis.cause);
            DIAGNOSIS.sample_written(out, labels, Some(("cause", cause.as_str())), value);
        }
    }
}
