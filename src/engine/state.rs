//! The engine's state: the watch list, the latest socket table and probe
//! results, the probe counters and the failure history. Plain methods, no
//! I/O and no clock of its own: the loops pass in what they read and when,
//! and tests call it without threads.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::time::{Instant, SystemTime};

use crate::config::{Config, Protocol};
use crate::diagnosis::{self, Cause, Failure, Firewall, Input, Vantages};
use crate::diagnosis::{ConntrackView, QueueDrops};
use crate::kernel::{Conntrack, TcpExt};
use crate::netns::{Namespace, NsId};
use crate::probe::{Discarded, Outcome, OutcomeCounts, ProbeResult, Target, Vantage};
use crate::snapshot::{ForwardStatus, PortStatus, Snapshot, Sources};
use crate::sockets::{Listener, Source};

use super::watch::{PortKey, WatchList, WatchedPort};

/// Each watched port's last reachability failure, for `transient`.
pub type Failures = HashMap<PortKey, Failure>;

/// Each watched port's cause, and since when it has held.
pub type Causes = HashMap<PortKey, (Cause, SystemTime)>;

/// What one snapshot leads to: the history the next one starts from.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct History {
    pub failures: Failures,
    pub causes: Causes,
}

/// One socket scan, as read.
#[derive(Debug, Clone)]
pub struct Scan {
    pub listeners: Vec<Listener>,
    pub source: Source,
    /// Which sources worked in reading it.
    pub sources: Sources,
    /// The kernel's ephemeral port range: ports there are not discovered.
    pub ephemeral: RangeInclusive<u16>,
    /// The kernel's TcpExt counters, when they could be read.
    pub tcpext: Option<TcpExt>,
    /// The connection-tracking table, when there is one.
    pub conntrack: Option<Conntrack>,
    /// The host's other network namespaces, as read.
    pub namespaces: Vec<NsScan>,
    /// The forwards of this host's ports; `None` when they were not read
    /// (the last ones read stand).
    pub forwards: Option<Vec<Forward>>,
}

/// What one other network namespace holds, as one scan read it.
#[derive(Debug, Clone)]
pub struct NsScan {
    pub ns: Namespace,
    /// Its listening and bound sockets, each with `netns` set.
    pub listeners: Vec<Listener>,
    /// Its probe-worthy interface addresses.
    pub addresses: Vec<IpAddr>,
    pub ipv6_loopback: bool,
    pub ephemeral: RangeInclusive<u16>,
}

/// A port of the host's namespace forwarded to a backend: a DNAT or
/// redirect rule, or a userland proxy.
#[derive(Debug, Clone, PartialEq)]
pub struct Forward {
    pub key: PortKey,
    /// `dnat`, `redirect` or `proxy`.
    pub via: &'static str,
    pub backend: SocketAddr,
    /// Where it is written: the rule, or the proxy process.
    pub rule: Option<String>,
}

/// What the state keeps of another namespace between scans.
#[derive(Debug, Clone, PartialEq)]
struct NsView {
    ns: Namespace,
    addresses: Vec<IpAddr>,
    ipv6_loopback: bool,
}

#[derive(Debug, Default)]
pub struct State {
    watch: WatchList,
    listeners: Vec<Listener>,
    source: Option<Source>,
    sources: Sources,
    /// The latest result per target, per port, in the order of the
    /// targets (a port has a few: a sorted list costs less than a map).
    probes: BTreeMap<PortKey, Vec<ProbeResult>>,
    /// Attempts per target, per port, in the order of the targets, with the
    /// name the port had when they were counted: a renamed port starts new
    /// series.
    counts: BTreeMap<PortKey, (String, Vec<(Target, OutcomeCounts)>)>,
    scanned_at: Option<SystemTime>,
    probed_at: Option<SystemTime>,
    /// When each port's set of listeners last changed: older probe results
    /// describe sockets that are gone, and are not shown.
    changed_at: HashMap<PortKey, Instant>,
    failures: Failures,
    causes: Causes,
    /// Attempts that failed for want of a local resource: not evidence.
    discarded: Discarded,
    /// This host's interface addresses, as of the last probe round.
    own_addresses: Vec<IpAddr>,
    /// What the host firewall says about the failed probes, as of the
    /// last time it was asked; `None` when nothing failed.
    firewall: Option<Firewall>,
    /// The TcpExt counters of the last scan, and the last growth of the
    /// accept-queue drops with the ports it is attributed to.
    tcpext: Option<TcpExt>,
    queue_drops: Option<QueueDrops>,
    conntrack: Option<ConntrackView>,
    generation: u64,
    /// The other namespaces of the last scan.
    namespaces: BTreeMap<NsId, NsView>,
    forwards: Vec<Forward>,
    /// Something a snapshot shows has changed since the last one.
    stale: bool,
    /// The last snapshot holds no cause or text that the passing of time
    /// alone can change (see [`State::snapshot`]).
    timeless: bool,
}

impl State {
    /// Applies one scan: updates the watch list and the listeners, forgets
    /// what belonged to ports no longer watched, and returns the watched
    /// ports whose set of listeners changed.
    pub fn apply_scan(
        &mut self,
        config: &Config,
        scan: Scan,
        now: Instant,
        wall: SystemTime,
    ) -> Vec<PortKey> {
        let shown_before = self.watch.shown();
        let mut listeners = scan.listeners;
        let mut ephemeral = BTreeMap::new();
        let mut namespaces = BTreeMap::new();
        for n in scan.namespaces {
            ephemeral.insert(n.ns.id, n.ephemeral);
            listeners.extend(n.listeners);
            let view = NsView {
                ns: n.ns,
                addresses: n.addresses,
                ipv6_loopback: n.ipv6_loopback,
            };
            namespaces.insert(view.ns.id, view);
        }
        self.stale |= namespaces != self.namespaces;
        self.namespaces = namespaces;
        if let Some(forwards) = scan.forwards {
            self.stale |= forwards != self.forwards;
            self.forwards = forwards;
        }
        self.watch.set_namespaces(ephemeral);
        self.watch
            .set_forwarded(self.forwards.iter().map(|f| f.key).collect());
        self.watch.update(
            config,
            &listeners,
            &scan.ephemeral,
            config.has_external_vantage(),
            now,
        );
        let same = listeners == self.listeners;
        let changed: Vec<PortKey> = if same {
            Vec::new()
        } else {
            let (before, after) = (listener_sets(&self.listeners), listener_sets(&listeners));
            self.watched(None)
                .into_iter()
                .filter(|p| before.get(p) != after.get(p))
                .collect()
        };
        for port in &changed {
            self.changed_at.insert(*port, now);
        }
        let watched: HashSet<PortKey> = self.watch.ports().map(|w| w.key).collect();
        self.probes.retain(|p, _| watched.contains(p));
        self.counts.retain(|p, _| watched.contains(p));
        self.changed_at.retain(|p, _| watched.contains(p));
        self.failures.retain(|p, _| watched.contains(p));
        // The kernel's counters are the host namespace's.
        self.note_queue_drops(scan.tcpext, &listeners, wall);
        self.note_conntrack(scan.conntrack, wall);
        self.stale |=
            !same || self.watch.shown() != shown_before || self.source != Some(scan.source);
        self.listeners = listeners;
        self.source = Some(scan.source);
        // A scan that did not read the ruleset keeps what it said last.
        self.set_sources(Sources {
            netfilter: scan.sources.netfilter.or(self.sources.netfilter),
            ..scan.sources
        });
        self.scanned_at = Some(wall);
        changed
    }

    /// Records a scan that read nothing: every source it tried failed.
    pub fn scan_failed(&mut self, sources: Sources) {
        self.set_sources(Sources {
            netfilter: self.sources.netfilter,
            ..sources
        });
    }

    fn set_sources(&mut self, sources: Sources) {
        self.stale |= sources != self.sources;
        self.sources = sources;
    }

    /// Whether a snapshot made now would say what the last one said:
    /// nothing it shows has changed since, and nothing in it depends on
    /// the clock. Then a scan needs no new one ([`Snapshot::rescanned`]).
    pub fn unchanged(&self) -> bool {
        !self.stale && self.timeless
    }

    /// When the last scan completed.
    pub fn scanned_at(&self) -> Option<SystemTime> {
        self.scanned_at
    }

    /// Notes a growth of the kernel's accept-queue drops since the last
    /// scan, attributed to the ports whose listeners were full or nearly
    /// so (half their limit) in this scan or the last: where the evidence
    /// allows, and else to none (host evidence).
    fn note_queue_drops(
        &mut self,
        tcpext: Option<TcpExt>,
        listeners: &[Listener],
        wall: SystemTime,
    ) {
        let grew = match (&tcpext, &self.tcpext) {
            (Some(now), Some(then)) => now.dropped_since(then),
            _ => 0,
        };
        self.tcpext = tcpext;
        if grew == 0 {
            return;
        }
        self.stale = true;
        let near = |l: &&Listener| {
            l.accept_queue_limit.is_some_and(|limit| {
                l.accept_queue_length > 0 && l.accept_queue_length * 2 >= limit
            })
        };
        let mut ports: Vec<u16> = listeners
            .iter()
            .chain(&self.listeners)
            .filter(|l| l.netns.is_own())
            .filter(near)
            .map(|l| l.port)
            .collect();
        ports.sort_unstable();
        ports.dedup();
        self.queue_drops = Some(QueueDrops {
            dropped: grew,
            at: wall,
            ports,
        });
    }

    /// Keeps the conntrack table, and notes a growth of its drop counters.
    /// Its count alone marks nothing: it shows only in `conntrack_full`,
    /// beside a timeout, and a snapshot with one is not timeless; a table
    /// that comes or goes, or drops, does.
    fn note_conntrack(&mut self, table: Option<Conntrack>, wall: SystemTime) {
        let Some(table) = table else {
            self.stale |= self.conntrack.take().is_some();
            return;
        };
        let before = self.conntrack.take();
        let grown = before
            .as_ref()
            .map_or(0, |b| table.dropped.saturating_sub(b.table.dropped));
        self.stale |= before.is_none() || grown > 0;
        let grew = if grown > 0 {
            Some((grown, wall))
        } else {
            before.and_then(|b| b.grew)
        };
        self.conntrack = Some(ConntrackView { table, grew });
    }

    /// The watched ports, or those of `only` that are watched.
    pub fn watched(&self, only: Option<&[PortKey]>) -> Vec<PortKey> {
        let only = only.map(|o| o.iter().collect::<HashSet<_>>());
        self.watch
            .ports()
            .map(|w| w.key)
            .filter(|p| only.as_ref().is_none_or(|o| o.contains(p)))
            .collect()
    }

    /// The watched ports that are probed (see [`WatchedPort::probed`]), of
    /// `only` when given, each with the payload a UDP probe sends.
    pub fn probed(&self, only: Option<&[PortKey]>) -> Vec<(PortKey, std::sync::Arc<[u8]>)> {
        let only = only.map(|o| o.iter().collect::<HashSet<_>>());
        self.watch
            .ports()
            .filter(|w| w.probed() && only.as_ref().is_none_or(|o| o.contains(&w.key)))
            .map(|w| (w.key, std::sync::Arc::clone(&w.payload)))
            .collect()
    }

    /// Stores `results` (a result never overwrites a newer one) and counts
    /// every attempt; of `ports`' other results and counts, keeps those
    /// `keep` says (targets no longer probed lose their series). An attempt
    /// that failed for want of a local resource ([`ProbeResult::shortage`])
    /// is no evidence: it is counted as discarded, and the target's previous
    /// result stands.
    pub fn record(
        &mut self,
        ports: &[PortKey],
        results: Vec<ProbeResult>,
        keep: impl Fn(&Target) -> bool,
    ) {
        self.stale = true;
        for r in results {
            if let Some(shortage) = r.shortage() {
                self.discarded.add(shortage);
                tracing::debug!(target = %r.target.addr, reason = shortage.as_str(),
                    "probe discarded: this host lacked a resource, not evidence about the port");
                continue;
            }
            let port = PortKey {
                netns: r.target.netns,
                protocol: r.target.protocol,
                port: r.target.addr.port(),
            };
            let Some(w) = self.watch.get(port) else {
                continue;
            };
            tracing::debug!(target = %r.target.addr, protocol = r.target.protocol.as_str(), vantage = r.target.vantage.as_str(),
                source = %r.target.source, outcome = r.outcome.as_str(), duration = ?r.duration, "probe");
            let (name, counts) = self.counts.entry(port).or_default();
            if *name != w.name {
                name.clone_from(&w.name);
                counts.clear();
            }
            match counts.binary_search_by(|(t, _)| t.cmp(&r.target)) {
                Ok(i) => counts[i].1.add(r.outcome),
                Err(i) => {
                    let mut n = OutcomeCounts::default();
                    n.add(r.outcome);
                    counts.insert(i, (r.target.clone(), n));
                }
            }
            let slot = self.probes.entry(port).or_default();
            match slot.binary_search_by(|old| old.target.cmp(&r.target)) {
                Ok(i) if slot[i].started <= r.started => slot[i] = r,
                Ok(_) => {}
                Err(i) => slot.insert(i, r),
            }
        }
        for port in ports {
            if let Some(slot) = self.probes.get_mut(port) {
                slot.retain(|r| keep(&r.target));
            }
            if let Some((_, counts)) = self.counts.get_mut(port) {
                counts.retain(|(t, _)| keep(t));
            }
        }
    }

    /// The targets whose latest result is a failure, each once: what the
    /// firewall is asked about.
    pub fn failed_targets(&self) -> Vec<(Vantage, Protocol, SocketAddr)> {
        let mut out: Vec<(Vantage, Protocol, SocketAddr)> = self
            .probes
            .values()
            .flatten()
            .filter(|r| r.outcome != Outcome::Success)
            // The host's ruleset is on the path of the host's probes only.
            .filter(|r| r.target.netns.is_own())
            .map(|r| (r.target.vantage, r.target.protocol, r.target.addr))
            .collect();
        out.sort_unstable();
        out.dedup();
        out
    }

    /// What the firewall says about the failed targets (`None`: nothing
    /// failed), and whether the ruleset could be read (`None`: not tried).
    pub fn set_firewall(&mut self, firewall: Option<Firewall>, up: Option<bool>) {
        self.stale |= firewall != self.firewall;
        self.firewall = firewall;
        self.set_sources(Sources {
            netfilter: up,
            ..self.sources
        });
    }

    /// Records this host's interface addresses, as the probe round saw them.
    pub fn set_own_addresses(&mut self, own: &[IpAddr]) {
        self.stale |= own != self.own_addresses;
        self.own_addresses = own.to_vec();
    }

    /// Marks a full probe round as completed.
    pub fn round_completed(&mut self, at: SystemTime) {
        self.stale = true;
        self.probed_at = Some(at);
    }

    /// The history (failures, causes) the next diagnosis starts from.
    pub fn set_history(&mut self, history: History) {
        self.failures = history.failures;
        self.causes = history.causes;
    }

    /// Diagnoses every watched port as of `now` and returns the snapshot
    /// with the history it leads to (the input of the next one): the last
    /// failures, and each port's cause with since when it has held (ports
    /// no longer watched are left out).
    ///
    /// It also notes whether the snapshot is timeless: no port is
    /// `transient` (its window runs out), no accept-queue or conntrack
    /// drop is still held (their hold runs out, and their text says how
    /// long ago), no shown probe timed out beside a conntrack table
    /// (`conntrack_full` then quotes the table's count, which moves with
    /// every connection), and no failure is later than `now` (the wall
    /// clock stepped back: it becomes `transient` when the clock catches up).
    pub fn snapshot(&mut self, config: &Config, now: SystemTime) -> (Snapshot, History) {
        self.generation += 1;
        let vantages = Vantages {
            loopback: config.vantage.loopback,
            interface: config.vantage.interfaces,
            external: config.has_external_vantage(),
            host: false,
        };
        let mut failures = self.failures.clone();
        // Each port's listeners and forwards, found once: not every
        // listener and forward per port.
        let index = Index::new(self);
        let ports: Vec<PortStatus> = self
            .watch
            .ports()
            .map(|w| self.port_status(w, &index, config, vantages, now))
            .collect();
        let causes = ports
            .iter()
            .map(|p| (p.key(), (p.diagnosis.cause, p.since)))
            .collect();
        for p in &ports {
            let d = &p.diagnosis;
            if d.cause.is_reachability_failure() {
                failures.insert(
                    p.key(),
                    Failure {
                        at: now,
                        cause: d.cause,
                        vantage: d.failed.map(|(v, _)| v),
                        target: d.failed.map(|(_, t)| t),
                    },
                );
            }
        }
        let hold = queue_hold(config);
        let held = |at: SystemTime| now.duration_since(at).unwrap_or_default() <= hold;
        let counted = self.conntrack.is_some();
        self.timeless = !ports.iter().any(|p| {
            p.diagnosis.cause == Cause::Transient
                || (counted && p.probes.iter().any(|r| r.outcome == Outcome::Timeout))
        }) && !failures.values().any(|f| f.at > now)
            && !self.queue_drops.as_ref().is_some_and(|q| held(q.at))
            && !self
                .conntrack
                .as_ref()
                .and_then(|c| c.grew)
                .is_some_and(|(_, at)| held(at));
        self.stale = false;
        let snapshot = Snapshot {
            ports: std::sync::Arc::new(ports),
            source: self.source,
            scanned_at: self.scanned_at,
            probed_at: self.probed_at,
            generation: self.generation,
            sources: self.sources,
            probes_discarded: self.discarded,
            discovery_left_out: self.watch.left_out(),
            namespaces: self.namespaces().cloned().collect(),
        };
        (snapshot, History { failures, causes })
    }

    fn port_status(
        &self,
        w: &WatchedPort,
        index: &Index,
        config: &Config,
        vantages: Vantages,
        now: SystemTime,
    ) -> PortStatus {
        let mut listeners = index.listeners(w.key);
        listeners.sort_by_key(|l| (l.address, l.inode));
        let since = self.changed_at.get(&w.key).copied();
        // In the order of the targets, as kept.
        let probes: Vec<ProbeResult> = self
            .probes
            .get(&w.key)
            .map(|m| {
                m.iter()
                    .filter(|r| since.is_none_or(|t| r.started >= t))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        let hold = queue_hold(config);
        let conntrack = self.conntrack.clone().map(|mut c| {
            c.grew = c
                .grew
                .filter(|(_, at)| now.duration_since(*at).unwrap_or_default() <= hold);
            c
        });
        let own = w.key.netns.is_own();
        let view = self.namespaces.get(&w.key.netns);
        let forward = self.forward_status(w.key, index);
        let vantages = Vantages {
            host: !own,
            ..vantages
        };
        let diagnosis = diagnosis::diagnose(&Input {
            port: w.key.port,
            protocol: w.key.protocol,
            probed: w.probed(),
            expect: w.expect,
            listeners: &listeners,
            probes: &probes,
            vantages,
            last_failure: self.failures.get(&w.key),
            own_addresses: view.map_or(&self.own_addresses, |v| &v.addresses),
            transient_window: config.diagnosis.transient_window,
            now,
            firewall: self.firewall.as_ref().filter(|_| own),
            queue_drops: self
                .queue_drops
                .as_ref()
                .filter(|_| own)
                .filter(|q| now.duration_since(q.at).unwrap_or_default() <= queue_hold(config)),
            conntrack: conntrack.as_ref(),
            forward: forward.as_ref(),
            netns: (!own).then(|| (w.key.netns, view.map(|v| &v.ns))),
        });
        let since = match self.causes.get(&w.key) {
            Some(&(cause, at)) if cause == diagnosis.cause => at,
            _ => now,
        };
        let probe_counts = self
            .counts
            .get(&w.key)
            .filter(|(name, _)| *name == w.name)
            .map(|(_, c)| c.clone())
            .unwrap_or_default();
        PortStatus {
            port: w.key.port,
            protocol: w.key.protocol,
            name: w.name.clone(),
            expect: w.expect,
            origin: w.origin,
            listeners,
            probes,
            diagnosis,
            since,
            vantages,
            probe_counts,
            netns: view.map(|v| v.ns.clone()),
            forward,
        }
    }

    /// The forward a port of the host's namespace is diagnosed through,
    /// with its backend's listeners: of the forwards of the port, the first
    /// whose backend listens nowhere that takes the backend address, else
    /// the first.
    fn forward_status(&self, key: PortKey, index: &Index) -> Option<ForwardStatus> {
        let all: Vec<ForwardStatus> = index
            .forwards
            .get(&key)
            .into_iter()
            .flatten()
            .map(|f| self.through(f, index))
            .collect();
        let broken = all.iter().position(|f| {
            f.on_this_host
                && !f
                    .backend_listeners
                    .iter()
                    .any(|l| diagnosis::covers(l, f.backend.ip()))
        });
        all.into_iter().nth(broken.unwrap_or(0))
    }

    /// Where `f`'s backend is: a namespace of this host whose addresses
    /// hold it, this host's own namespace (its loopback or addresses),
    /// or another host.
    fn through(&self, f: &Forward, index: &Index) -> ForwardStatus {
        let ip = f.backend.ip();
        let netns = index.namespaces.get(&ip).copied();
        let own = netns.is_none() && (ip.is_loopback() || self.own_addresses.contains(&ip));
        let in_ns = netns.map_or(NsId::OWN, |n| n.id);
        let backend_listeners = if netns.is_some() || own {
            index.listeners(PortKey {
                netns: in_ns,
                protocol: f.key.protocol,
                port: f.backend.port(),
            })
        } else {
            Vec::new()
        };
        ForwardStatus {
            via: f.via,
            backend: f.backend,
            netns: netns.cloned(),
            on_this_host: netns.is_some() || own,
            backend_listeners,
            rule: f.rule.clone(),
        }
    }

    /// What the probes of a port in namespace `netns` go to: its
    /// interface addresses and whether its `[::1]` is up; `None` for a
    /// namespace the last scan did not see.
    pub fn namespace_addresses(&self, netns: NsId) -> Option<(&[IpAddr], bool)> {
        self.namespaces
            .get(&netns)
            .map(|v| (v.addresses.as_slice(), v.ipv6_loopback))
    }

    /// The other namespaces of the last scan.
    pub fn namespaces(&self) -> impl Iterator<Item = &Namespace> {
        self.namespaces.values().map(|v| &v.ns)
    }
}

/// The last scan's listeners and forwards by port, and its namespaces by
/// address, made once per snapshot.
struct Index<'a> {
    listeners: HashMap<PortKey, Vec<&'a Listener>>,
    forwards: HashMap<PortKey, Vec<&'a Forward>>,
    /// The first namespace (in `NsId` order) holding each address.
    namespaces: HashMap<IpAddr, &'a Namespace>,
}

impl<'a> Index<'a> {
    fn new(state: &'a State) -> Index<'a> {
        let mut index = Index {
            listeners: HashMap::new(),
            forwards: HashMap::new(),
            namespaces: HashMap::new(),
        };
        for l in &state.listeners {
            index.listeners.entry(PortKey::of(l)).or_default().push(l);
        }
        for f in &state.forwards {
            index.forwards.entry(f.key).or_default().push(f);
        }
        for v in state.namespaces.values() {
            for ip in &v.addresses {
                index.namespaces.entry(*ip).or_insert(&v.ns);
            }
        }
        index
    }

    /// The listeners on `key`, in the order of the scan.
    fn listeners(&self, key: PortKey) -> Vec<Listener> {
        self.listeners
            .get(&key)
            .map_or_else(Vec::new, |ls| ls.iter().map(|&l| l.clone()).collect())
    }
}

/// How long a growth of the accept-queue drops keeps a port
/// `accept_queue_full` after its queue emptied: two probe intervals, so
/// that at least one probe round is diagnosed with it.
fn queue_hold(config: &Config) -> std::time::Duration {
    config.probe.interval * 2
}

/// The listener set of each port, to tell which ports changed between scans.
fn listener_sets(listeners: &[Listener]) -> HashMap<PortKey, Vec<(IpAddr, u64)>> {
    let mut sets: HashMap<PortKey, Vec<(IpAddr, u64)>> = HashMap::new();
    for l in listeners {
        sets.entry(PortKey::of(l))
            .or_default()
            .push((l.address, l.inode));
    }
    for s in sets.values_mut() {
        s.sort_unstable();
    }
    sets
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::time::Duration;

    use super::*;
    use crate::config::{Expect, PortConfig};
    use crate::probe::{Outcome, Shortage, Vantage};

    const PORT: u16 = 8080;
    const KEY: PortKey = PortKey {
        netns: crate::netns::NsId::OWN,
        protocol: crate::config::Protocol::Tcp,
        port: PORT,
    };

    fn config() -> Config {
        let mut c = Config::default();
        c.discover.enabled = false;
        c.vantage.interfaces = false;
        c.ports.push(PortConfig {
            name: "web".into(),
            ..PortConfig::tcp(PORT, Expect::Public)
        });
        c
    }

    fn scan(inodes: &[u64]) -> Scan {
        Scan {
            listeners: inodes
                .iter()
                .map(|&inode| Listener {
                    inode,
                    ..Listener::on("0.0.0.0".parse().unwrap(), PORT)
                })
                .collect(),
            source: Source::Netlink,
            sources: Sources::default(),
            ephemeral: 32768..=60999,
            namespaces: Vec::new(),
            forwards: None,
            tcpext: None,
            conntrack: None,
        }
    }

    fn result(outcome: Outcome, started: Instant) -> ProbeResult {
        ProbeResult {
            target: Target::local(
                Vantage::Loopback,
                SocketAddr::new("127.0.0.1".parse().unwrap(), PORT),
            ),
            outcome,
            duration: Duration::from_millis(1),
            errno: None,
            error: None,
            at: SystemTime::UNIX_EPOCH,
            started,
        }
    }

    fn cause(st: &mut State, config: &Config, at: SystemTime) -> Cause {
        let (snapshot, history) = st.snapshot(config, at);
        st.set_history(history);
        snapshot.ports[0].diagnosis.cause
    }

    #[test]
    fn a_scan_reports_the_ports_whose_listeners_changed() {
        let (config, t0) = (config(), Instant::now());
        let mut st = State::default();
        assert_eq!(
            st.apply_scan(&config, scan(&[1]), t0, SystemTime::now()),
            [KEY]
        );
        assert!(
            st.apply_scan(&config, scan(&[1]), t0, SystemTime::now())
                .is_empty()
        );
        assert_eq!(
            st.apply_scan(&config, scan(&[2]), t0, SystemTime::now()),
            [KEY],
            "restarted"
        );
        assert_eq!(
            st.apply_scan(&config, scan(&[]), t0, SystemTime::now()),
            [KEY],
            "gone"
        );
    }

    #[test]
    fn results_from_before_a_change_are_not_shown_but_still_counted() {
        let config = config();
        let t0 = Instant::now();
        let mut st = State::default();
        st.apply_scan(&config, scan(&[1]), t0, SystemTime::now());
        st.record(&[KEY], vec![result(Outcome::Success, t0)], |_| true);
        let (s, _) = st.snapshot(&config, SystemTime::now());
        assert_eq!(s.ports[0].probes.len(), 1);
        st.apply_scan(
            &config,
            scan(&[]),
            t0 + Duration::from_secs(1),
            SystemTime::now(),
        );
        let (s, _) = st.snapshot(&config, SystemTime::now());
        assert!(
            s.ports[0].probes.is_empty(),
            "the result describes a socket that is gone"
        );
        let counts = &s.ports[0].probe_counts;
        assert_eq!(counts.len(), 1);
        assert_eq!(counts[0].1.get(Outcome::Success), 1);
    }

    #[test]
    fn an_older_result_never_replaces_a_newer_one() {
        let config = config();
        let t0 = Instant::now();
        let mut st = State::default();
        st.apply_scan(&config, scan(&[1]), t0, SystemTime::now());
        let newer = result(Outcome::Refused, t0 + Duration::from_secs(2));
        let older = result(Outcome::Success, t0 + Duration::from_secs(1));
        st.record(&[KEY], vec![newer], |_| true);
        st.record(&[KEY], vec![older], |_| true);
        let (s, _) = st.snapshot(&config, SystemTime::now());
        assert_eq!(s.ports[0].probes[0].outcome, Outcome::Refused);
        assert_eq!(
            s.ports[0].probe_counts[0].1.get(Outcome::Success),
            1,
            "both counted"
        );
    }

    #[test]
    fn the_failure_history_is_returned_and_makes_a_recovery_transient() {
        let config = config();
        let (t0, wall) = (Instant::now(), SystemTime::now());
        let mut st = State::default();
        st.apply_scan(&config, scan(&[]), t0, wall);
        st.record(&[KEY], vec![result(Outcome::Refused, t0)], |_| true);
        let (_, history) = st.snapshot(&config, wall);
        assert_eq!(history.failures[&KEY].cause, Cause::NotListening);
        assert!(
            st.failures.is_empty() && st.causes.is_empty(),
            "snapshot changes no history on the side"
        );
        st.set_history(history);
        let t1 = t0 + Duration::from_secs(1);
        st.apply_scan(&config, scan(&[1]), t1, wall);
        st.record(&[KEY], vec![result(Outcome::Success, t1)], |_| true);
        assert_eq!(
            cause(&mut st, &config, wall + Duration::from_secs(1)),
            Cause::Transient
        );
        let later = wall + config.diagnosis.transient_window + Duration::from_secs(2);
        assert_eq!(cause(&mut st, &config, later), Cause::Ok);
    }

    /// A scan that finds what the last one found needs no new snapshot; one
    /// that moves anything shown (here an accept queue's length), a probe
    /// result, and a cause that time alone ends (`transient`) each do.
    #[test]
    fn only_a_change_or_a_clock_bound_cause_needs_a_new_snapshot() {
        let config = config();
        let (t0, wall) = (Instant::now(), SystemTime::now());
        let mut st = State::default();
        assert!(!st.unchanged(), "no snapshot yet");
        st.apply_scan(&config, scan(&[1]), t0, wall);
        st.record(&[KEY], vec![result(Outcome::Success, t0)], |_| true);
        assert_eq!(cause(&mut st, &config, wall), Cause::Ok);
        assert!(st.unchanged());
        st.apply_scan(&config, scan(&[1]), t0, wall + Duration::from_secs(1));
        assert!(st.unchanged(), "the same listeners again");
        assert_eq!(st.scanned_at(), Some(wall + Duration::from_secs(1)));

        let mut queued = scan(&[1]);
        queued.listeners[0].accept_queue_length = 3;
        st.apply_scan(&config, queued, t0, wall);
        assert!(
            !st.unchanged(),
            "portsight_listener_accept_queue_length moved"
        );
        cause(&mut st, &config, wall);
        assert!(st.unchanged());
        st.record(&[KEY], vec![result(Outcome::Success, t0)], |_| true);
        assert!(!st.unchanged(), "a probe result");

        // Refused, then answering again: transient until the window ends.
        st.record(&[KEY], vec![result(Outcome::Refused, t0)], |_| true);
        assert_eq!(cause(&mut st, &config, wall), Cause::Rejected);
        let t1 = t0 + Duration::from_secs(1);
        st.record(&[KEY], vec![result(Outcome::Success, t1)], |_| true);
        assert_eq!(cause(&mut st, &config, wall), Cause::Transient);
        st.apply_scan(&config, scan(&[1]), t1, wall);
        assert!(!st.unchanged(), "transient ends with the clock");
        let later = wall + config.diagnosis.transient_window + Duration::from_secs(1);
        assert_eq!(cause(&mut st, &config, later), Cause::Ok);
        st.apply_scan(&config, scan(&[1]), t1, later);
        assert!(st.unchanged());
    }

    /// A timed-out probe with a conntrack table makes every snapshot new:
    /// `conntrack_full` would quote the table's count, which moves.
    #[test]
    fn a_timeout_beside_a_conntrack_table_is_never_timeless() {
        let config = config();
        let (t0, wall) = (Instant::now(), SystemTime::now());
        let mut st = State::default();
        let mut counted = scan(&[1]);
        counted.conntrack = Some(Conntrack {
            count: 10,
            max: 100,
            dropped: 0,
        });
        st.apply_scan(&config, counted.clone(), t0, wall);
        st.record(&[KEY], vec![result(Outcome::Success, t0)], |_| true);
        cause(&mut st, &config, wall);
        st.apply_scan(&config, counted.clone(), t0, wall);
        assert!(
            st.unchanged(),
            "the count shows nowhere while probes answer"
        );
        st.apply_scan(&config, scan(&[1]), t0, wall);
        assert!(!st.unchanged(), "a table that goes is shown");
        st.record(&[KEY], vec![result(Outcome::Timeout, t0)], |_| true);
        cause(&mut st, &config, wall);
        st.apply_scan(&config, scan(&[1]), t0, wall);
        assert!(st.unchanged(), "no table: a timeout quotes no count");
        st.apply_scan(&config, counted.clone(), t0, wall);
        assert!(!st.unchanged(), "a table that comes is shown");
        cause(&mut st, &config, wall);
        st.apply_scan(&config, counted, t0, wall);
        assert!(!st.unchanged(), "its count moves");
    }

    /// `since` is the first snapshot that showed the current cause: it holds
    /// while the cause does, moves when the cause changes, and a port no
    /// longer watched leaves no history.
    #[test]
    fn since_is_when_the_cause_last_changed() {
        let mut config = config();
        let (t0, wall) = (
            Instant::now(),
            SystemTime::UNIX_EPOCH + Duration::from_secs(1000),
        );
        let at = |s: u64| wall + Duration::from_secs(s);
        let since = |st: &mut State, config: &Config, t: SystemTime| {
            let (snapshot, history) = st.snapshot(config, t);
            st.set_history(history);
            let p = &snapshot.ports[0];
            (p.diagnosis.cause, p.since)
        };
        let mut st = State::default();
        st.apply_scan(&config, scan(&[]), t0, wall);
        st.record(&[KEY], vec![result(Outcome::Refused, t0)], |_| true);
        assert_eq!(since(&mut st, &config, at(0)), (Cause::NotListening, at(0)));
        assert_eq!(
            since(&mut st, &config, at(5)),
            (Cause::NotListening, at(0)),
            "held"
        );
        let t1 = t0 + Duration::from_secs(6);
        st.apply_scan(&config, scan(&[1]), t1, at(6));
        st.record(&[KEY], vec![result(Outcome::Success, t1)], |_| true);
        assert_eq!(since(&mut st, &config, at(7)), (Cause::Transient, at(7)));
        assert_eq!(since(&mut st, &config, at(8)), (Cause::Transient, at(7)));
        let (snapshot, history) = st.snapshot(&config, at(9));
        assert_eq!(history.causes[&KEY], (Cause::Transient, at(7)));
        let json = serde_json::to_value(snapshot.status(None)).unwrap();
        let d = &json["ports"][0]["diagnosis"];
        assert_eq!(
            (d["cause"].as_str(), d["since"].as_str()),
            (Some("transient"), Some("1970-01-01T00:16:47.000Z")),
            "{json}"
        );
        config.ports.clear();
        st.apply_scan(&config, scan(&[1]), t1, at(10));
        let (snapshot, history) = st.snapshot(&config, at(10));
        assert!(snapshot.ports.is_empty() && history.causes.is_empty());
    }

    #[test]
    fn a_renamed_port_starts_new_counts_and_every_snapshot_is_new() {
        let mut config = config();
        let t0 = Instant::now();
        let mut st = State::default();
        st.apply_scan(&config, scan(&[1]), t0, SystemTime::now());
        st.record(&[KEY], vec![result(Outcome::Success, t0)], |_| true);
        let (a, _) = st.snapshot(&config, SystemTime::now());
        config.ports[0].name = "api".into();
        st.apply_scan(&config, scan(&[1]), t0, SystemTime::now());
        let (b, _) = st.snapshot(&config, SystemTime::now());
        assert!(b.generation > a.generation);
        assert_eq!(b.ports[0].name, "api");
        assert!(
            b.ports[0].probe_counts.is_empty(),
            "counts belong to the old name"
        );
    }

    /// TCP and UDP of one port number are two watched ports: their
    /// listeners, results and causes never mix, and a discovered UDP port
    /// is not probed.
    #[test]
    fn tcp_and_udp_of_one_number_never_mix() {
        let mut config = config();
        config.discover.enabled = true;
        config.discover.min_age = Duration::ZERO;
        config.ports.push(PortConfig {
            protocol: crate::config::Protocol::Udp,
            ..PortConfig::tcp(PORT, Expect::Public)
        });
        let udp = PortKey {
            netns: crate::netns::NsId::OWN,
            protocol: crate::config::Protocol::Udp,
            port: PORT,
        };
        let discovered = PortKey {
            netns: crate::netns::NsId::OWN,
            protocol: crate::config::Protocol::Udp,
            port: 5353,
        };
        let t0 = Instant::now();
        let mut st = State::default();
        let mut read = scan(&[1]);
        read.listeners
            .push(Listener::udp("0.0.0.0".parse().unwrap(), 5353));
        st.apply_scan(&config, read, t0, SystemTime::now());
        assert_eq!(st.watched(None), [KEY, discovered, udp]);
        let probed: Vec<PortKey> = st.probed(None).into_iter().map(|(k, _)| k).collect();
        assert_eq!(probed, [KEY, udp], "the discovered UDP port is not probed");
        let mut refused = result(Outcome::Refused, t0);
        refused.target.protocol = crate::config::Protocol::Udp;
        st.record(
            &[KEY, udp],
            vec![result(Outcome::Success, t0), refused],
            |_| true,
        );
        let (s, _) = st.snapshot(&config, SystemTime::now());
        let by = |k: PortKey| s.ports.iter().find(|p| p.key() == k).unwrap();
        assert_eq!(by(KEY).listeners.len(), 1);
        assert_eq!(by(KEY).probes[0].outcome, Outcome::Success);
        assert!(by(udp).listeners.is_empty());
        assert_eq!(by(udp).probes[0].outcome, Outcome::Refused);
        assert_eq!(by(udp).diagnosis.cause, Cause::NotListening);
        assert_eq!(
            by(discovered).listeners[0].protocol,
            crate::config::Protocol::Udp
        );
        assert!(by(discovered).probes.is_empty());
    }

    #[test]
    fn an_attempt_that_lacked_a_local_resource_is_not_evidence() {
        let config = config();
        let t0 = Instant::now();
        let mut st = State::default();
        st.apply_scan(&config, scan(&[1]), t0, SystemTime::now());
        st.record(&[KEY], vec![result(Outcome::Success, t0)], |_| true);
        for (errno, reason) in [
            (libc::EMFILE, Shortage::ProcessDescriptors),
            (libc::ENFILE, Shortage::SystemDescriptors),
            (libc::ENOBUFS, Shortage::Buffers),
            (libc::ENOMEM, Shortage::Memory),
        ] {
            let mut failed = result(Outcome::Error, t0 + Duration::from_secs(1));
            failed.errno = Some(errno);
            st.record(&[KEY], vec![failed], |_| true);
            let (s, _) = st.snapshot(&config, SystemTime::now());
            assert_eq!(s.probes_discarded.get(reason), 1, "{reason:?}");
        }
        let (s, _) = st.snapshot(&config, SystemTime::now());
        let p = &s.ports[0];
        assert_eq!(
            p.probes[0].outcome,
            Outcome::Success,
            "the last evidence stands"
        );
        assert_eq!(p.diagnosis.cause, Cause::Ok);
        let counts = p.probe_counts[0].1;
        assert_eq!(
            (counts.get(Outcome::Success), counts.get(Outcome::Error)),
            (1, 0)
        );
        // A real error (not a shortage) is evidence.
        let mut real = result(Outcome::Error, t0 + Duration::from_secs(2));
        real.errno = Some(libc::EACCES);
        st.record(&[KEY], vec![real], |_| true);
        let (s, _) = st.snapshot(&config, SystemTime::now());
        assert_eq!(s.ports[0].probes[0].outcome, Outcome::Error);
    }

    #[test]
    fn counts_go_with_the_targets_no_longer_probed() {
        let config = config();
        let t0 = Instant::now();
        let mut st = State::default();
        st.apply_scan(&config, scan(&[1]), t0, SystemTime::now());
        let on = |ip: &str| {
            let mut r = result(Outcome::Success, t0);
            r.target.addr = SocketAddr::new(ip.parse().unwrap(), PORT);
            r
        };
        let targets = ["127.0.0.1", "10.77.0.1", "10.77.0.2"];
        st.record(&[KEY], targets.iter().map(|ip| on(ip)).collect(), |_| true);
        let (s, _) = st.snapshot(&config, SystemTime::now());
        assert_eq!(s.ports[0].probe_counts.len(), 3);
        // The interface addresses went away: the next round probes loopback only.
        let kept = on("127.0.0.1").target;
        st.record(&[KEY], vec![on("127.0.0.1")], |t| *t == kept);
        let (s, _) = st.snapshot(&config, SystemTime::now());
        let counted: Vec<String> = s.ports[0]
            .probe_counts
            .iter()
            .map(|(t, _)| t.addr.ip().to_string())
            .collect();
        assert_eq!(counted, ["127.0.0.1"]);
        assert_eq!(s.ports[0].probe_counts[0].1.get(Outcome::Success), 2);
    }
}

#[cfg(test)]
mod namespace_tests {
    use std::time::{Duration, Instant, SystemTime};

    use super::*;
    use crate::config::{Expect, PortConfig};
    use crate::diagnosis::Cause;

    fn web1() -> Namespace {
        Namespace {
            name: "web-1".into(),
            container: Some("3f2a9c1b7d4e".into()),
            pod: None,
            inode: 4026532512,
            id: NsId::named("web-1"),
        }
    }

    /// The container web-1 at 10.77.50.2 with `inside` listening on port 80.
    fn container(inside: &str) -> NsScan {
        NsScan {
            ns: web1(),
            listeners: vec![Listener {
                netns: NsId::named("web-1"),
                inode: 77,
                ..Listener::on(inside.parse().unwrap(), 80)
            }],
            addresses: vec!["10.77.50.2".parse().unwrap()],
            ipv6_loopback: false,
            ephemeral: 32768..=60999,
        }
    }

    fn scan(namespaces: Vec<NsScan>, forwards: Option<Vec<Forward>>) -> Scan {
        Scan {
            listeners: Vec::new(),
            source: Source::Netlink,
            sources: Sources::default(),
            ephemeral: 32768..=60999,
            tcpext: None,
            conntrack: None,
            namespaces,
            forwards,
        }
    }

    fn published() -> Forward {
        Forward {
            key: PortKey::tcp(8080),
            via: "dnat",
            backend: "10.77.50.2:80".parse().unwrap(),
            rule: None,
        }
    }

    fn config() -> Config {
        let mut c = Config::default();
        c.discover.min_age = Duration::ZERO;
        c
    }

    fn port(s: &Snapshot, key: PortKey) -> &PortStatus {
        s.ports.iter().find(|p| p.key() == key).expect("watched")
    }

    #[test]
    fn a_dnat_only_published_port_is_discovered_and_diagnosed_through_the_container() {
        let config = config();
        let mut st = State::default();
        let now = Instant::now();
        st.apply_scan(
            &config,
            scan(vec![container("127.0.0.1")], Some(vec![published()])),
            now,
            SystemTime::now(),
        );
        let (s, _) = st.snapshot(&config, SystemTime::now());
        let host = port(&s, PortKey::tcp(8080));
        let f = host.forward.as_ref().expect("forwarded");
        assert_eq!(f.netns.as_ref().map(|n| n.name.as_str()), Some("web-1"));
        assert_eq!(f.backend_listeners.len(), 1);
        assert_eq!(
            host.diagnosis.cause,
            Cause::LoopbackOnly,
            "{:?}",
            host.diagnosis
        );
        assert!(
            host.diagnosis.summary.contains("container web-1"),
            "{}",
            host.diagnosis.summary
        );
        // The container's own port is watched too, with its namespace, and
        // its loopback-only app is `local`: nothing alarms.
        let inside = port(
            &s,
            PortKey {
                netns: NsId::named("web-1"),
                ..PortKey::tcp(80)
            },
        );
        assert_eq!(
            inside.netns.as_ref().map(|n| n.name.as_str()),
            Some("web-1")
        );
        assert_eq!(inside.expect, Expect::Local);
        assert_eq!(s.namespaces.len(), 1);
    }

    #[test]
    fn a_namespace_that_goes_takes_its_discovered_ports_but_not_configured_ones() {
        let mut config = config();
        config.ports.push(PortConfig {
            netns: "web-1".into(),
            ..PortConfig::tcp(443, Expect::Internal)
        });
        let mut st = State::default();
        let now = Instant::now();
        st.apply_scan(
            &config,
            scan(vec![container("0.0.0.0")], None),
            now,
            SystemTime::now(),
        );
        assert_eq!(st.watched(None).len(), 2, "{:?}", st.watched(None));
        st.apply_scan(&config, scan(Vec::new(), None), now, SystemTime::now());
        let (s, _) = st.snapshot(&config, SystemTime::now());
        assert_eq!(s.ports.len(), 1, "only the configured port stays");
        let d = &s.ports[0].diagnosis;
        assert_eq!(d.cause, Cause::NotListening);
        assert!(
            d.summary
                .contains("\"web-1\", which the last scan did not find"),
            "{}",
            d.summary
        );
    }

    #[test]
    fn a_forward_whose_namespace_was_not_read_is_never_ok() {
        // Without the namespace scan the backend is unseen: `forwarded`,
        // not a healthy verdict.
        let config = config();
        let mut st = State::default();
        st.apply_scan(
            &config,
            scan(Vec::new(), Some(vec![published()])),
            Instant::now(),
            SystemTime::now(),
        );
        let (s, _) = st.snapshot(&config, SystemTime::now());
        assert_eq!(
            port(&s, PortKey::tcp(8080)).diagnosis.cause,
            Cause::Forwarded
        );
    }
}
