//! The firewall families: the rules the diagnoses name, and whether the
//! ruleset could be read.

use super::labels::{Labels, PortLabels, RuleLabels};
use super::text::{Family, bool_value};
use crate::snapshot::{PortStatus, Sources};

const RULE_INFO: Family = Family {
    name: "portsight_port_firewall_rule_info",
    help: "A firewall rule (or chain policy, with an empty handle) that the port's diagnosis names as dropping or rejecting its probes.",
    kind: "gauge",
};
const SOURCE_UP: Family = Family {
    name: "portsight_source_up",
    help: "1 if the source of evidence worked at its last use.",
    kind: "gauge",
};

/// `portsight_port_firewall_rule_info`, one series per rule named.
pub(super) fn write_rules(out: &mut String, ports: &[(&PortStatus, PortLabels<'_>)]) {
    RULE_INFO.header(out);
    for (p, port) in ports {
        for r in &p.diagnosis.firewall {
            let handle = r.handle.map(|h| h.to_string()).unwrap_or_default();
            let labels = RuleLabels {
                port: *port,
                chain: &r.chain,
                family: r.family.as_str(),
                handle: &handle,
                table: &r.table,
                verdict: r.verdict.as_str(),
            };
            RULE_INFO.sample(out, &labels, 1.0);
        }
    }
}

/// `portsight_source_up` for the sources that have been used.
pub(super) fn write_sources(out: &mut String, sources: &Sources) {
    let Some(up) = sources.netfilter else {
        return;
    };
    SOURCE_UP.header(out);
    SOURCE_UP.sample(out, &Source("netfilter"), bool_value(up));
}

struct Source(&'static str);

impl Labels for Source {
    fn each(&self, f: &mut impl FnMut(&'static str, &str)) {
        f("source", self.0);
    }
}
