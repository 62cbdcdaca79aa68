//! The engine's state: the watch list, the latest socket table and probe
//! results, the probe counters and the failure history. Plain methods, no
//! I/O and no clock of its own: the loops pass in what they read and when,
//! and tests call it without threads.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::time::{Instant, SystemTime};

use crate::config::Config;
use crate::diagnosis::{self, Failure, Firewall, Input, Vantages};
use crate::diagnosis::{ConntrackView, QueueDrops};
use crate::kernel::{Conntrack, TcpExt};
use crate::probe::{Outcome, OutcomeCounts, ProbeResult, Target, Vantage};
use crate::snapshot::{PortStatus, Snapshot, Sources};
use crate::sockets::{Listener, Source};

use super::watch::{WatchList, WatchedPort};

/// Each watched port's last reachability failure, for `transient`.
pub type Failures = HashMap<u16, Failure>;

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
}

#[derive(Debug, Default)]
pub struct State {
    watch: WatchList,
    listeners: Vec<Listener>,
    source: Option<Source>,
    sources: Sources,
    /// The latest result per target, per port.
    probes: BTreeMap<u16, HashMap<Target, ProbeResult>>,
    /// Attempts per target, per port, with the name the port had when they
    /// were counted: a renamed port starts new series.
    counts: BTreeMap<u16, (String, BTreeMap<Target, OutcomeCounts>)>,
    scanned_at: Option<SystemTime>,
    probed_at: Option<SystemTime>,
    /// When each port's set of listeners last changed: older probe results
    /// describe sockets that are gone, and are not shown.
    changed_at: HashMap<u16, Instant>,
    failures: Failures,
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
    ) -> Vec<u16> {
        let before = listener_sets(&self.listeners);
        self.watch.update(
            config,
            &scan.listeners,
            &scan.ephemeral,
            config.has_external_vantage(),
            now,
        );
        let after = listener_sets(&scan.listeners);
        let changed: Vec<u16> = self
            .watched(None)
            .into_iter()
            .filter(|p| before.get(p) != after.get(p))
            .collect();
        for port in &changed {
            self.changed_at.insert(*port, now);
        }
        let watched: HashSet<u16> = self.watch.ports().map(|w| w.port).collect();
        self.probes.retain(|p, _| watched.contains(p));
        self.counts.retain(|p, _| watched.contains(p));
        self.changed_at.retain(|p, _| watched.contains(p));
        self.failures.retain(|p, _| watched.contains(p));
        self.note_queue_drops(scan.tcpext, &scan.listeners, wall);
        self.note_conntrack(scan.conntrack, wall);
        self.listeners = scan.listeners;
        self.source = Some(scan.source);
        // The ruleset is read apart from the scan: keep what it said.
        self.sources = Sources {
            netfilter: self.sources.netfilter,
            ..scan.sources
        };
        self.scanned_at = Some(wall);
        changed
    }

    /// Records a scan that read nothing: every source it tried failed.
    pub fn scan_failed(&mut self, sources: Sources) {
        self.sources = Sources {
            netfilter: self.sources.netfilter,
            ..sources
        };
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
        let near = |l: &&Listener| {
            l.accept_queue_limit.is_some_and(|limit| {
                l.accept_queue_length > 0 && l.accept_queue_length * 2 >= limit
            })
        };
        let mut ports: Vec<u16> = listeners
            .iter()
            .chain(&self.listeners)
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
    fn note_conntrack(&mut self, table: Option<Conntrack>, wall: SystemTime) {
        let Some(table) = table else {
            self.conntrack = None;
            return;
        };
        let before = self.conntrack.take();
        let grown = before
            .as_ref()
            .map_or(0, |b| table.dropped.saturating_sub(b.table.dropped));
        let grew = if grown > 0 {
            Some((grown, wall))
        } else {
            before.and_then(|b| b.grew)
        };
        self.conntrack = Some(ConntrackView { table, grew });
    }

    /// The watched ports, or those of `only` that are watched.
    pub fn watched(&self, only: Option<&[u16]>) -> Vec<u16> {
        self.watch
            .ports()
            .map(|w| w.port)
            .filter(|p| only.is_none_or(|o| o.contains(p)))
            .collect()
    }

    /// Stores `results` (a result never overwrites a newer one) and counts
    /// every attempt; of `ports`' other results, keeps those `keep` says.
    pub fn record(
        &mut self,
        ports: &[u16],
        results: Vec<ProbeResult>,
        keep: impl Fn(&Target) -> bool,
    ) {
        for r in results {
            let port = r.target.addr.port();
            let Some(w) = self.watch.get(port) else {
                continue;
            };
            tracing::debug!(target = %r.target.addr, vantage = r.target.vantage.as_str(),
                source = %r.target.source, outcome = r.outcome.as_str(), duration = ?r.duration, "probe");
            let (name, counts) = self.counts.entry(port).or_default();
            if *name != w.name {
                name.clone_from(&w.name);
                counts.clear();
            }
            counts.entry(r.target.clone()).or_default().add(r.outcome);
            let slot = self.probes.entry(port).or_default();
            if slot
                .get(&r.target)
                .is_none_or(|old| old.started <= r.started)
            {
                slot.insert(r.target.clone(), r);
            }
        }
        for port in ports {
            if let Some(slot) = self.probes.get_mut(port) {
                slot.retain(|t, _| keep(t));
            }
        }
    }

    /// The targets whose latest result is a failure, each once: what the
    /// firewall is asked about.
    pub fn failed_targets(&self) -> Vec<(Vantage, SocketAddr)> {
        let mut out: Vec<(Vantage, SocketAddr)> = self
            .probes
            .values()
            .flat_map(|m| m.values())
            .filter(|r| r.outcome != Outcome::Success)
            .map(|r| (r.target.vantage, r.target.addr))
            .collect();
        out.sort_unstable();
        out.dedup();
        out
    }

    /// What the firewall says about the failed targets (`None`: nothing
    /// failed), and whether the ruleset could be read (`None`: not tried).
    pub fn set_firewall(&mut self, firewall: Option<Firewall>, up: Option<bool>) {
        self.firewall = firewall;
        self.sources.netfilter = up;
    }

    /// Records this host's interface addresses, as the probe round saw them.
    pub fn set_own_addresses(&mut self, own: &[IpAddr]) {
        self.own_addresses = own.to_vec();
    }

    /// Marks a full probe round as completed.
    pub fn round_completed(&mut self, at: SystemTime) {
        self.probed_at = Some(at);
    }

    /// The failure history the next diagnosis starts from.
    pub fn set_failures(&mut self, failures: Failures) {
        self.failures = failures;
    }

    /// Diagnoses every watched port as of `now` and returns the snapshot
    /// with the failure history it leads to (the input of the next one).
    pub fn snapshot(&mut self, config: &Config, now: SystemTime) -> (Snapshot, Failures) {
        self.generation += 1;
        let vantages = Vantages {
            loopback: config.vantage.loopback,
            interface: config.vantage.interfaces,
            external: config.has_external_vantage(),
        };
        let mut failures = self.failures.clone();
        let ports: Vec<PortStatus> = self
            .watch
            .ports()
            .map(|w| self.port_status(w, config, vantages, now))
            .collect();
        for p in &ports {
            let d = &p.diagnosis;
            if d.cause.is_reachability_failure() {
                failures.insert(
                    p.port,
                    Failure {
                        at: now,
                        cause: d.cause,
                        vantage: d.failed.map(|(v, _)| v),
                        target: d.failed.map(|(_, t)| t),
                    },
                );
            }
        }
        let snapshot = Snapshot {
            ports,
            source: self.source,
            scanned_at: self.scanned_at,
            probed_at: self.probed_at,
            generation: self.generation,
            sources: self.sources,
        };
        (snapshot, failures)
    }

    fn port_status(
        &self,
        w: &WatchedPort,
        config: &Config,
        vantages: Vantages,
        now: SystemTime,
    ) -> PortStatus {
        let mut listeners: Vec<Listener> = self
            .listeners
            .iter()
            .filter(|l| l.port == w.port)
            .cloned()
            .collect();
        listeners.sort_by_key(|l| (l.address, l.inode));
        let since = self.changed_at.get(&w.port).copied();
        let mut probes: Vec<ProbeResult> = self
            .probes
            .get(&w.port)
            .map(|m| {
                m.values()
                    .filter(|r| since.is_none_or(|t| r.started >= t))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        probes.sort_by(|a, b| a.target.cmp(&b.target));
        let hold = queue_hold(config);
        let conntrack = self.conntrack.clone().map(|mut c| {
            c.grew = c
                .grew
                .filter(|(_, at)| now.duration_since(*at).unwrap_or_default() <= hold);
            c
        });
        let diagnosis = diagnosis::diagnose(&Input {
            port: w.port,
            expect: w.expect,
            listeners: &listeners,
            probes: &probes,
            vantages,
            last_failure: self.failures.get(&w.port),
            own_addresses: &self.own_addresses,
            transient_window: config.diagnosis.transient_window,
            now,
            firewall: self.firewall.as_ref(),
            queue_drops: self
                .queue_drops
                .as_ref()
                .filter(|q| now.duration_since(q.at).unwrap_or_default() <= queue_hold(config)),
            conntrack: conntrack.as_ref(),
        });
        let probe_counts = self
            .counts
            .get(&w.port)
            .filter(|(name, _)| *name == w.name)
            .map(|(_, c)| c.iter().map(|(t, n)| (t.clone(), *n)).collect())
            .unwrap_or_default();
        PortStatus {
            port: w.port,
            name: w.name.clone(),
            expect: w.expect,
            origin: w.origin,
            listeners,
            probes,
            diagnosis,
            probe_counts,
        }
    }
}

/// How long a growth of the accept-queue drops keeps a port
/// `accept_queue_full` after its queue emptied: two probe intervals, so
/// that at least one probe round is diagnosed with it.
fn queue_hold(config: &Config) -> std::time::Duration {
    config.probe.interval * 2
}

/// The listener set of each port, to tell which ports changed between scans.
fn listener_sets(listeners: &[Listener]) -> HashMap<u16, Vec<(IpAddr, u64)>> {
    let mut sets: HashMap<u16, Vec<(IpAddr, u64)>> = HashMap::new();
    for l in listeners {
        sets.entry(l.port).or_default().push((l.address, l.inode));
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
    use crate::diagnosis::Cause;
    use crate::probe::{Outcome, Vantage};

    const PORT: u16 = 8080;

    fn config() -> Config {
        let mut c = Config::default();
        c.discover.enabled = false;
        c.vantage.interfaces = false;
        c.ports.push(PortConfig {
            port: PORT,
            name: "web".into(),
            expect: Expect::Public,
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
        let (snapshot, failures) = st.snapshot(config, at);
        st.set_failures(failures);
        snapshot.ports[0].diagnosis.cause
    }

    #[test]
    fn a_scan_reports_the_ports_whose_listeners_changed() {
        let (config, t0) = (config(), Instant::now());
        let mut st = State::default();
        assert_eq!(
            st.apply_scan(&config, scan(&[1]), t0, SystemTime::now()),
            [PORT]
        );
        assert!(
            st.apply_scan(&config, scan(&[1]), t0, SystemTime::now())
                .is_empty()
        );
        assert_eq!(
            st.apply_scan(&config, scan(&[2]), t0, SystemTime::now()),
            [PORT],
            "restarted"
        );
        assert_eq!(
            st.apply_scan(&config, scan(&[]), t0, SystemTime::now()),
            [PORT],
            "gone"
        );
    }

    #[test]
    fn results_from_before_a_change_are_not_shown_but_still_counted() {
        let config = config();
        let t0 = Instant::now();
        let mut st = State::default();
        st.apply_scan(&config, scan(&[1]), t0, SystemTime::now());
        st.record(&[PORT], vec![result(Outcome::Success, t0)], |_| true);
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
        st.record(&[PORT], vec![newer], |_| true);
        st.record(&[PORT], vec![older], |_| true);
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
        st.record(&[PORT], vec![result(Outcome::Refused, t0)], |_| true);
        let (_, failures) = st.snapshot(&config, wall);
        assert_eq!(failures[&PORT].cause, Cause::NotListening);
        assert!(
            st.failures.is_empty(),
            "snapshot changes no history on the side"
        );
        st.set_failures(failures);
        let t1 = t0 + Duration::from_secs(1);
        st.apply_scan(&config, scan(&[1]), t1, wall);
        st.record(&[PORT], vec![result(Outcome::Success, t1)], |_| true);
        assert_eq!(
            cause(&mut st, &config, wall + Duration::from_secs(1)),
            Cause::Transient
        );
        let later = wall + config.diagnosis.transient_window + Duration::from_secs(2);
        assert_eq!(cause(&mut st, &config, later), Cause::Ok);
    }

    #[test]
    fn a_renamed_port_starts_new_counts_and_every_snapshot_is_new() {
        let mut config = config();
        let t0 = Instant::now();
        let mut st = State::default();
        st.apply_scan(&config, scan(&[1]), t0, SystemTime::now());
        st.record(&[PORT], vec![result(Outcome::Success, t0)], |_| true);
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
}
