//! The per-listener families: bind address, scope and owner of each
//! listening (TCP) or bound (UDP) socket of a watched port, and the accept
//! queue of each TCP one.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use super::labels::{Labels, ListenerLabels, PortLabels};
use super::text::Family;
use crate::config::Protocol;
use crate::snapshot::PortStatus;

const INFO: Family = Family {
    name: "portsight_listener_info",
    help: "One per listening socket of a watched port: bind address, its scope and owning process.",
    kind: "gauge",
};
const QUEUE_LENGTH: Family = Family {
    name: "portsight_listener_accept_queue_length",
    help: "Connections waiting in the listener's accept queue.",
    kind: "gauge",
};
const QUEUE_LIMIT: Family = Family {
    name: "portsight_listener_accept_queue_limit",
    help: "The listener's accept queue limit (listen backlog).",
    kind: "gauge",
};

/// The listening sockets of one address of a port, as one series: sockets
/// sharing an address (SO_REUSEPORT) would otherwise repeat a label set.
struct Series<'a> {
    port: PortLabels<'a>,
    address: String,
    scope: &'static str,
    /// The owning processes' names (empty where not visible), each once.
    processes: BTreeSet<&'a str>,
    /// The fullest socket's accept queue and its limit; `None` for UDP,
    /// which has no accept queue.
    length: Option<u32>,
    limit: Option<u32>,
}

impl Series<'_> {
    fn labels(&self) -> ListenerLabels<'_> {
        ListenerLabels {
            address: &self.address,
            netns: self.port.netns,
            port: self.port.port,
            protocol: self.port.protocol,
        }
    }
}

/// The series of one port's listeners, by address.
fn series<'a>(p: &'a PortStatus, port: PortLabels<'a>) -> impl Iterator<Item = Series<'a>> {
    let mut by_address: BTreeMap<IpAddr, Series<'a>> = BTreeMap::new();
    for l in &p.listeners {
        let series = by_address.entry(l.address).or_insert_with(|| Series {
            port,
            address: l.address.to_string(),
            scope: l.scope().as_str(),
            processes: BTreeSet::new(),
            length: (l.protocol == Protocol::Tcp).then_some(l.accept_queue_length),
            limit: l.accept_queue_limit,
        });
        series
            .processes
            .insert(l.owner.as_ref().map_or("", |o| o.name.as_str()));
        if series.length.is_some_and(|n| l.accept_queue_length > n) {
            series.length = Some(l.accept_queue_length);
            series.limit = l.accept_queue_limit;
        }
    }
    by_address.into_values()
}

/// `portsight_listener_info` and the accept queue of every listener; nothing
/// when no port has one.
pub(super) fn write(out: &mut String, ports: &[(&PortStatus, PortLabels<'_>)]) {
    let listeners: Vec<Series> = ports.iter().flat_map(|(p, l)| series(p, *l)).collect();
    if listeners.is_empty() {
        return;
    }
    INFO.header(out);
    for l in &listeners {
        for process in &l.processes {
            let labels = l.labels().with("process", process).with("scope", l.scope);
            INFO.sample(out, &labels, 1.0);
        }
    }
    // The accept queue families are TCP-only.
    if listeners.iter().all(|l| l.length.is_none()) {
        return;
    }
    QUEUE_LENGTH.header(out);
    for l in &listeners {
        if let Some(length) = l.length {
            QUEUE_LENGTH.sample(out, &l.labels(), f64::from(length));
        }
    }
    if listeners.iter().all(|l| l.limit.is_none()) {
        return;
    }
    QUEUE_LIMIT.header(out);
    for l in &listeners {
        if let Some(limit) = l.limit {
            QUEUE_LIMIT.sample(out, &l.labels(), f64::from(limit));
        }
    }
}
