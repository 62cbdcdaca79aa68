//! The firewall family: the rules the diagnoses name.

use super::labels::{PortLabels, RuleLabels};
use super::text::Family;
use crate::snapshot::PortStatus;

const RULE_INFO: Family = Family {
    name: "portsight_port_firewall_rule_info",
    help: "A firewall rule (or chain policy, with an empty handle) that the port's diagnosis names as dropping or rejecting its probes.",
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
