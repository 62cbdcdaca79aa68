//! The namespace families: `portsight_netns_info` (one per other network
//! namespace scanned) and `portsight_port_forward_info` (the forward a
//! watched port is diagnosed through).

use super::labels::{Labels, PortLabels};
use super::text::Family;
use crate::netns::Namespace;
use crate::snapshot::PortStatus;

const NETNS_INFO: Family = Family {
    name: "portsight_netns_info",
    help: "One per network namespace scanned besides portsight's own: its name, container and pod.",
    kind: "gauge",
};
const FORWARD_INFO: Family = Family {
    name: "portsight_port_forward_info",
    help: "The forward (DNAT, redirect or proxy) of a watched port: its backend and the backend's namespace.",
    kind: "gauge",
};

/// Namespace labels: `container`, `netns`, `pod` (empty where unknown).
struct NetnsLabels<'a>(&'a Namespace);

impl Labels for NetnsLabels<'_> {
    fn each(&self, f: &mut impl FnMut(&'static str, &str)) {
        f("container", self.0.container.as_deref().unwrap_or(""));
        f("netns", &self.0.name);
        f("pod", self.0.pod.as_deref().unwrap_or(""));
    }
}

/// `portsight_netns_info`; nothing when no other namespace was scanned.
pub(super) fn write_info(out: &mut String, namespaces: &[Namespace]) {
    if namespaces.is_empty() {
        return;
    }
    NETNS_INFO.header(out);
    for ns in namespaces {
        NETNS_INFO.sample(out, &NetnsLabels(ns), 1.0);
    }
}

/// `portsight_port_forward_info`; nothing when no watched port is forwarded.
pub(super) fn write_forwards(out: &mut String, ports: &[(&PortStatus, PortLabels<'_>)]) {
    let forwarded: Vec<_> = ports
        .iter()
        .filter_map(|(p, l)| Some((p.forward.as_ref()?, l)))
        .collect();
    if forwarded.is_empty() {
        return;
    }
    FORWARD_INFO.header(out);
    for (f, labels) in forwarded {
        let backend = f.backend.to_string();
        let netns = f.netns.as_ref().map_or("", |n| n.name.as_str());
        let labels = labels
            .with("backend", &backend)
            .with("backend_netns", netns)
            .with("via", f.via);
        FORWARD_INFO.sample(out, &labels, 1.0);
    }
}
