//! The engine's state: the watch list, the latest socket table and probe
//! results, the probe counters and the failure history. Plain methods, no
//! I/O and no clock of its own: the loops pass in what they read and when,
//! and tests call it without threads.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;
use std::ops::RangeInclusive;
use std::time::{Instant, SystemTime};

use crate::config::Config;
use crate::diagnosis::{self, Failure, Input, Vantages};
use crate::probe::{Discarded, OutcomeCounts, ProbeResult, Target};
use crate::snapshot::{PortStatus, Snapshot};
use crate::sockets::{Listener, Source};

use super::watch::{WatchList, WatchedPort};

/// Each watched port's last reachability failure, for `transient`.
pub type Failures = HashMap<u16, Failure>;

/// One socket scan, as read.
#[derive(Debug, Clone)]
pub struct Scan {
    pub listeners: Vec<Listener>,
    pub source: Source,
    /// The kernel's ephemeral port range: ports there are not discovered.
    pub ephemeral: RangeInclusive<u16>,
}

#[derive(Debug, Default)]
pub struct State {
    watch: WatchList,
    listeners: Vec<Listener>,
    source: Option<Source>,
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
    /// Attempts that failed for want of a local resource: not evidence.
    discarded: Discarded,
    /// This host's interface addresses, as of the last probe round.
    own_addresses: Vec<IpAddr>,
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
        self.listeners = scan.listeners;
        self.source = Some(scan.source);
        self.scanned_at = Some(wall);
        changed
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
    /// every attempt; of `ports`' other results and counts, keeps those
    /// `keep` says (targets no longer probed lose their series). An attempt
    /// that failed for want of a local resource ([`ProbeResult::shortage`])
    /// is no evidence: it is counted as discarded, and the target's previous
    /// result stands.
    pub fn record(
        &mut self,
        ports: &[u16],
        results: Vec<ProbeResult>,
        keep: impl Fn(&Target) -> bool,
    ) {
        for r in results {
            if let Some(shortage) = r.shortage() {
                self.discarded.add(shortage);
                tracing::debug!(target = %r.target.addr, reason = shortage.as_str(),
                    "probe discarded: this host lacked a resource, not evidence about the port");
                continue;
            }
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
            if let Some((_, counts)) = self.counts.get_mut(port) {
                counts.retain(|t, _| keep(t));
            }
        }
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
            probes_discarded: self.discarded,
            discovery_left_out: self.watch.left_out(),
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
    use crate::probe::{Outcome, Shortage, Vantage};

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
            ephemeral: 32768..=60999,
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

    #[test]
    fn an_attempt_that_lacked_a_local_resource_is_not_evidence() {
        let config = config();
        let t0 = Instant::now();
        let mut st = State::default();
        st.apply_scan(&config, scan(&[1]), t0, SystemTime::now());
        st.record(&[PORT], vec![result(Outcome::Success, t0)], |_| true);
        for (errno, reason) in [
            (libc::EMFILE, Shortage::ProcessDescriptors),
            (libc::ENFILE, Shortage::SystemDescriptors),
            (libc::ENOBUFS, Shortage::Buffers),
            (libc::ENOMEM, Shortage::Memory),
        ] {
            let mut failed = result(Outcome::Error, t0 + Duration::from_secs(1));
            failed.errno = Some(errno);
            st.record(&[PORT], vec![failed], |_| true);
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
        st.record(&[PORT], vec![real], |_| true);
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
        st.record(&[PORT], targets.iter().map(|ip| on(ip)).collect(), |_| true);
        let (s, _) = st.snapshot(&config, SystemTime::now());
        assert_eq!(s.ports[0].probe_counts.len(), 3);
        // The interface addresses went away: the next round probes loopback only.
        let kept = on("127.0.0.1").target;
        st.record(&[PORT], vec![on("127.0.0.1")], |t| *t == kept);
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
