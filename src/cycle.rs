//! The engine: socket scans every `scan.interval`, probe rounds every
//! `probe.interval` (with jitter), an immediate re-probe of a port whose
//! listeners changed, and a new [`Snapshot`] after each.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{BuildHasher, RandomState};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::{mpsc, watch};

use std::path::PathBuf;

use crate::config::{self, Config};
use crate::diagnosis::{self, Failure, Input, Vantages};
use crate::metrics::{Metrics, Stage};
use crate::peer::{self, Peer, PeerSet, client::PeerClient, wire};
use crate::probe::scheduler::Prober;
use crate::probe::{ProbeResult, Target, Vantage};
use crate::snapshot::{PortStatus, Snapshot};
use crate::sockets::{self, Listener, Source, interfaces, process::Owners};
use crate::watch::{self as watchlist, WatchList};

/// Scans, probes, and publishes snapshots. Shared by the loops of `serve`
/// and used once by `check`.
pub struct Engine {
    config: RwLock<Arc<Config>>,
    /// The file the config came from, read again on reload.
    config_file: Option<PathBuf>,
    /// Token files' contents, read with the config.
    secrets: RwLock<Arc<Secrets>>,
    prober: RwLock<Prober>,
    /// Probes served to others (`/probe`), with their own concurrency limit.
    server_prober: RwLock<Prober>,
    peer_client: PeerClient,
    /// The peers `peers.dns` last resolved to.
    dns_peers: Mutex<Vec<Peer>>,
    state: Mutex<State>,
    metrics: Arc<Metrics>,
    snapshot: watch::Sender<Arc<Snapshot>>,
}

#[derive(Default)]
struct State {
    watch: WatchList,
    listeners: Vec<Listener>,
    source: Option<Source>,
    /// Owner cache, with the proc root it reads.
    owners: Option<(std::path::PathBuf, Owners)>,
    /// The latest result per target, per port.
    probes: BTreeMap<u16, HashMap<Target, ProbeResult>>,
    scanned_at: Option<SystemTime>,
    probed_at: Option<SystemTime>,
    /// When each port's set of listeners last changed: older probe results
    /// describe sockets that are gone, and are not shown.
    changed_at: HashMap<u16, Instant>,
    /// Each port's last reachability failure, for `transient`.
    failures: HashMap<u16, Failure>,
    /// This host's interface addresses, as of the last probe round.
    own_addresses: Vec<IpAddr>,
    /// The generation of the last snapshot published.
    generation: u64,
}

/// What the config's token files hold.
#[derive(Debug, Default)]
pub struct Secrets {
    pub peers: PeerSet,
    /// The bearer token `/probe` clients must send, when the probe server is on.
    pub server_token: Option<String>,
}

impl Secrets {
    /// Reads every token file `config` names; errors name the key.
    pub fn load(config: &Config) -> Result<Secrets, config::Error> {
        let server_token = if config.probe_server.enabled {
            Some(config::read_secret(
                &config.probe_server.token_file,
                "probe_server.token_file",
            )?)
        } else {
            None
        };
        Ok(Secrets {
            peers: PeerSet::load(config)?,
            server_token,
        })
    }
}

impl Engine {
    /// An engine for `config`; fails when a token file it names cannot be read.
    pub fn new(
        config: Config,
        config_file: Option<PathBuf>,
        metrics: Arc<Metrics>,
    ) -> Result<Arc<Engine>, config::Error> {
        let secrets = Secrets::load(&config)?;
        let (snapshot, _) = watch::channel(Arc::new(Snapshot::default()));
        metrics.set_reload(true, SystemTime::now());
        Ok(Arc::new(Engine {
            prober: RwLock::new(Prober::new(config.probe.concurrency)),
            server_prober: RwLock::new(Prober::new(config.probe_server.concurrency)),
            config: RwLock::new(Arc::new(config)),
            config_file,
            secrets: RwLock::new(Arc::new(secrets)),
            peer_client: PeerClient::default(),
            dns_peers: Mutex::new(Vec::new()),
            state: Mutex::new(State::default()),
            metrics,
            snapshot,
        }))
    }

    pub fn config(&self) -> Arc<Config> {
        Arc::clone(&self.config.read().unwrap_or_else(|e| e.into_inner()))
    }

    pub fn secrets(&self) -> Arc<Secrets> {
        Arc::clone(&self.secrets.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Swaps in a new config; the next scan and probe round use it.
    fn set_config(&self, config: Config, secrets: Secrets) {
        let old = self.config();
        // New limits only when they change: rounds in flight keep the old ones.
        if old.probe.concurrency != config.probe.concurrency {
            *self.prober.write().unwrap_or_else(|e| e.into_inner()) =
                Prober::new(config.probe.concurrency);
        }
        if old.probe_server.concurrency != config.probe_server.concurrency {
            *self
                .server_prober
                .write()
                .unwrap_or_else(|e| e.into_inner()) = Prober::new(config.probe_server.concurrency);
        }
        *self.secrets.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(secrets);
        *self.config.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(config);
    }

    /// Loads the config file (and environment) again. A bad config is
    /// reported and the running one kept; `portsight_config_last_reload_successful`
    /// tells which happened. The listen address is not changed by a reload.
    pub fn reload(&self) -> Result<(), config::Error> {
        let loaded = Config::load(self.config_file.as_deref())
            .and_then(|c| Secrets::load(&c).map(|s| (c, s)));
        match loaded {
            Ok((c, s)) => {
                self.set_config(c, s);
                self.metrics.set_reload(true, SystemTime::now());
                tracing::info!(file = ?self.config_file, "configuration reloaded");
                Ok(())
            }
            Err(e) => {
                self.metrics.set_reload(false, SystemTime::now());
                tracing::error!(error = %e, "reload failed; keeping the running configuration");
                Err(e)
            }
        }
    }

    /// The latest snapshot.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.borrow().clone()
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Reads the socket table and updates the watch list. Returns the watched
    /// ports whose set of listeners changed since the previous scan.
    pub async fn scan(self: &Arc<Self>) -> Vec<u16> {
        let config = self.config();
        let started = Instant::now();
        let proc_root = config.scan.proc_root.clone();
        let mut owners = self
            .lock()
            .owners
            .take()
            .filter(|(root, _)| *root == proc_root)
            .map_or_else(|| Owners::new(proc_root.clone()), |(_, o)| o);
        let scanned = tokio::task::spawn_blocking(move || {
            let result = sockets::scan_listeners(&proc_root).map(|(mut listeners, source)| {
                owners.fill(&mut listeners);
                (listeners, source)
            });
            let ephemeral = watchlist::ephemeral_range(&proc_root);
            (result, (proc_root, owners), ephemeral)
        })
        .await;
        let (result, owners, ephemeral) = match scanned {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "socket scan task failed");
                return Vec::new();
            }
        };
        let changed = {
            let mut st = self.lock();
            st.owners = Some(owners);
            let (listeners, source) = match result {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(error = %e, "socket scan failed");
                    return Vec::new();
                }
            };
            if st.source != Some(source) {
                tracing::info!(source = ?source, "reading listening sockets");
            }
            let before = listener_sets(&st.listeners);
            st.watch.update(
                &config,
                &listeners,
                &ephemeral,
                config.has_external_vantage(),
                Instant::now(),
            );
            let after = listener_sets(&listeners);
            let changed: Vec<u16> = st
                .watch
                .ports()
                .map(|w| w.port)
                .filter(|p| before.get(p) != after.get(p))
                .collect();
            let now = Instant::now();
            for port in &changed {
                st.changed_at.insert(*port, now);
            }
            let watched: HashSet<u16> = st.watch.ports().map(|w| w.port).collect();
            st.probes.retain(|p, _| watched.contains(p));
            st.changed_at.retain(|p, _| watched.contains(p));
            st.failures.retain(|p, _| watched.contains(p));
            st.listeners = listeners;
            st.source = Some(source);
            st.scanned_at = Some(SystemTime::now());
            changed
        };
        self.metrics.observe_stage(
            Stage::Scan,
            started.elapsed().as_secs_f64(),
            SystemTime::now(),
        );
        self.publish();
        changed
    }

    /// Probes `ports` (every watched port when `None`) from the local
    /// vantages and publishes the results; then, with peers configured, asks
    /// them for the external view of the same ports and publishes that too.
    pub async fn probe(self: &Arc<Self>, ports: Option<&[u16]>) {
        let config = self.config();
        let started = Instant::now();
        let full = ports.is_none();
        let watched: Vec<u16> = {
            let st = self.lock();
            st.watch
                .ports()
                .map(|w| w.port)
                .filter(|p| ports.is_none_or(|only| only.contains(p)))
                .collect()
        };
        let (own, ipv6_up) = host_addresses().await;
        let addrs = local_vantages(&config, &own, ipv6_up);
        let targets: Vec<Target> = watched
            .iter()
            .flat_map(|&port| {
                addrs
                    .iter()
                    .map(move |(v, ip)| Target::local(*v, SocketAddr::new(*ip, port)))
            })
            .collect();
        let prober = self
            .prober
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let results = prober.run(targets.clone(), config.probe.timeout).await;
        self.lock().own_addresses.clone_from(&own);
        // Targets no longer probed (an address went away) drop out, and the
        // external view goes with the last peer.
        let local: HashSet<Target> = targets.into_iter().collect();
        let external_on = config.has_external_vantage();
        self.merge(&watched, results, |t| {
            (t.vantage == Vantage::External && external_on) || local.contains(t)
        });
        if full {
            self.lock().probed_at = Some(SystemTime::now());
            self.metrics.observe_stage(
                Stage::Probe,
                started.elapsed().as_secs_f64(),
                SystemTime::now(),
            );
        }
        self.publish();

        if !external_on {
            // No peers (any more): no peer_up series either.
            self.metrics.set_peers(&[], &[]);
        } else if !watched.is_empty() {
            let external = if config.vantage.external_addresses.is_empty() {
                own.clone()
            } else {
                config.vantage.external_addresses.clone()
            };
            let (results, asked, known) = self.ask_peers(&config, &watched, &external, &own).await;
            // Evidence only from peers that answered: a peer that did not
            // answer gives none, and its old results go, as do those of peers
            // that no longer exist. Peers not asked this time keep theirs.
            let answered: HashSet<Target> = results.iter().map(|r| r.target.clone()).collect();
            self.merge(&watched, results, |t| {
                t.vantage != Vantage::External
                    || answered.contains(t)
                    || (!asked.contains(&t.source) && known.contains(&t.source))
            });
            self.publish();
        }
    }

    /// Stores `results` (a result never overwrites a newer one), keeps of
    /// `ports`' other results those `keep` says.
    fn merge(&self, ports: &[u16], results: Vec<ProbeResult>, keep: impl Fn(&Target) -> bool) {
        {
            let mut st = self.lock();
            for r in results {
                let port = r.target.addr.port();
                if st.watch.get(port).is_none() {
                    continue;
                }
                tracing::debug!(target = %r.target.addr, vantage = r.target.vantage.as_str(),
                    source = %r.target.source, outcome = r.outcome.as_str(), duration = ?r.duration, "probe");
                let slot = st.probes.entry(port).or_default();
                if slot
                    .get(&r.target)
                    .is_none_or(|old| old.started <= r.started)
                {
                    slot.insert(r.target.clone(), r);
                }
            }
            for port in ports {
                if let Some(slot) = st.probes.get_mut(port) {
                    slot.retain(|t, _| keep(t));
                }
            }
        }
    }

    /// Asks `peers.fanout` peers at once to probe `ports` on the external
    /// addresses, in batches of at most [`wire::MAX_TARGETS`] targets. Sets
    /// `portsight_peer_up` for each peer asked; returns the results, the
    /// names of the peers asked, and the names of all peers.
    async fn ask_peers(
        &self,
        config: &Config,
        ports: &[u16],
        external: &[IpAddr],
        own: &[IpAddr],
    ) -> (Vec<ProbeResult>, HashSet<String>, HashSet<String>) {
        let started = Instant::now();
        let targets: Vec<SocketAddr> = ports
            .iter()
            .flat_map(|&p| external.iter().map(move |ip| SocketAddr::new(*ip, p)))
            .collect();
        let secrets = self.secrets();
        let mut all = secrets.peers.listed.clone();
        match secrets.peers.resolve_dns(config, own).await {
            Some(Ok(found)) => {
                all.extend(found.iter().cloned());
                *self.dns_peers.lock().unwrap_or_else(|e| e.into_inner()) = found;
            }
            Some(Err(e)) => {
                // Keep asking the peers the name had: a DNS outage must not
                // make dead peers vanish from portsight_peer_up.
                tracing::warn!(error = %e, "peer DNS lookup failed; using the last answer");
                all.extend(
                    self.dns_peers
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .iter()
                        .cloned(),
                );
            }
            None => {}
        }
        let chosen = peer::choose(&peer::identity(config), &all, config.peers.fanout);
        let asked: HashSet<String> = chosen.iter().map(|p| p.name.clone()).collect();
        let mut asks = tokio::task::JoinSet::new();
        for p in chosen.into_iter().filter(|_| !targets.is_empty()) {
            let (client, p, targets) = (self.peer_client.clone(), p.clone(), targets.clone());
            let (probe_timeout, timeout) = (config.probe.timeout, config.peers.timeout);
            asks.spawn(async move {
                let mut results = Vec::new();
                for batch in targets.chunks(wire::MAX_TARGETS) {
                    match client.probe(&p, batch, probe_timeout, timeout).await {
                        Ok(r) => results.extend(r),
                        Err(e) => return (p.name, Err(e)),
                    }
                }
                (p.name, Ok(results))
            });
        }
        let mut results = Vec::new();
        let mut up = Vec::new();
        while let Some(joined) = asks.join_next().await {
            let Ok((name, answer)) = joined else { continue };
            match answer {
                Ok(r) => {
                    results.extend(r);
                    up.push((name, true));
                }
                Err(e) => {
                    tracing::warn!(peer = %name, error = %e, "peer did not answer; no external evidence from it");
                    up.push((name, false));
                }
            }
        }
        let names: Vec<&str> = all.iter().map(|p| p.name.as_str()).collect();
        self.metrics.set_peers(&up, &names);
        self.metrics.observe_stage(
            Stage::Peer,
            started.elapsed().as_secs_f64(),
            SystemTime::now(),
        );
        let known = all.into_iter().map(|p| p.name).collect();
        (results, asked, known)
    }

    /// Probes targets for another client (`/probe`, `/api/v1/probe`) under the
    /// probe server's concurrency limit. Callers check the allow-list first.
    pub async fn probe_for_client(
        &self,
        targets: Vec<SocketAddr>,
        timeout: Duration,
    ) -> Vec<ProbeResult> {
        let prober = self
            .server_prober
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let targets = targets
            .into_iter()
            .map(|a| Target::local(Vantage::External, a))
            .collect();
        prober.run(targets, timeout).await
    }

    /// Builds a snapshot from the current state and swaps it in.
    fn publish(&self) -> Arc<Snapshot> {
        let config = self.config();
        let vantages = Vantages {
            loopback: config.vantage.loopback,
            interface: config.vantage.interfaces,
            external: config.has_external_vantage(),
        };
        let now = SystemTime::now();
        let snapshot = {
            let mut st = self.lock();
            let st = &mut *st;
            let ports: Vec<PortStatus> = st
                .watch
                .ports()
                .map(|w| {
                    let mut listeners: Vec<Listener> = st
                        .listeners
                        .iter()
                        .filter(|l| l.port == w.port)
                        .cloned()
                        .collect();
                    listeners.sort_by_key(|l| (l.address, l.inode));
                    let since = st.changed_at.get(&w.port).copied();
                    let mut probes: Vec<ProbeResult> = st
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
                        last_failure: st.failures.get(&w.port),
                        own_addresses: &st.own_addresses,
                        transient_window: config.diagnosis.transient_window,
                        now,
                    });
                    PortStatus {
                        port: w.port,
                        name: w.name.clone(),
                        expect: w.expect,
                        origin: w.origin,
                        listeners,
                        probes,
                        diagnosis,
                        probe_counts: Vec::new(),
                    }
                })
                .collect();
            for p in &ports {
                let d = &p.diagnosis;
                if d.cause.is_reachability_failure() {
                    st.failures.insert(
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
            st.generation += 1;
            Arc::new(Snapshot {
                ports,
                source: st.source,
                scanned_at: st.scanned_at,
                probed_at: st.probed_at,
                generation: st.generation,
            })
        };
        self.snapshot.send_replace(Arc::clone(&snapshot));
        snapshot
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs the scan loop, the probe loop and the re-probe loop until
    /// `shutdown` resolves.
    pub async fn run(self: Arc<Self>, shutdown: impl std::future::Future<Output = ()>) {
        let (changed_tx, mut changed_rx) = mpsc::unbounded_channel::<Vec<u16>>();
        // The first probe round needs the first watch list.
        let first_scan = Instant::now();
        self.scan().await;
        let scanner = {
            let engine = Arc::clone(&self);
            tokio::spawn(async move {
                let interval = engine.config().scan.interval;
                tokio::time::sleep(interval.saturating_sub(first_scan.elapsed())).await;
                loop {
                    let started = Instant::now();
                    let changed = engine.scan().await;
                    if !changed.is_empty() {
                        tracing::debug!(ports = ?changed, "listeners changed");
                        let _ = changed_tx.send(changed);
                    }
                    let interval = engine.config().scan.interval;
                    tokio::time::sleep(interval.saturating_sub(started.elapsed())).await;
                }
            })
        };
        let reprober = {
            let engine = Arc::clone(&self);
            tokio::spawn(async move {
                while let Some(mut ports) = changed_rx.recv().await {
                    while let Ok(more) = changed_rx.try_recv() {
                        ports.extend(more);
                    }
                    ports.sort_unstable();
                    ports.dedup();
                    engine.probe(Some(&ports)).await;
                }
            })
        };
        let prober = {
            let engine = Arc::clone(&self);
            tokio::spawn(async move {
                loop {
                    let started = Instant::now();
                    engine.probe(None).await;
                    let interval = jittered(engine.config().probe.interval);
                    tokio::time::sleep(interval.saturating_sub(started.elapsed())).await;
                }
            })
        };
        shutdown.await;
        scanner.abort();
        reprober.abort();
        prober.abort();
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

/// This host's interface addresses (not loopback, not link-local), and
/// whether IPv6 is up on loopback.
async fn host_addresses() -> (Vec<IpAddr>, bool) {
    tokio::task::spawn_blocking(|| {
        (
            interfaces::interface_addresses(),
            interfaces::ipv6_loopback_up(),
        )
    })
    .await
    .unwrap_or_default()
}

/// The local vantages and their addresses: loopback (127.0.0.1, and ::1 when
/// IPv6 is up) and the interface addresses (or the configured list).
fn local_vantages(config: &Config, own: &[IpAddr], ipv6_up: bool) -> Vec<(Vantage, IpAddr)> {
    let v = &config.vantage;
    let mut out = Vec::new();
    if v.loopback {
        out.push((Vantage::Loopback, IpAddr::V4(Ipv4Addr::LOCALHOST)));
        if ipv6_up {
            out.push((Vantage::Loopback, IpAddr::V6(Ipv6Addr::LOCALHOST)));
        }
    }
    if v.interfaces {
        let addrs = if v.addresses.is_empty() {
            own
        } else {
            &v.addresses
        };
        out.extend(addrs.iter().map(|a| (Vantage::Interface, *a)));
    }
    out
}

/// `interval` ± 10%, so a fleet started together does not probe in step.
fn jittered(interval: Duration) -> Duration {
    let r = RandomState::new().hash_one(Instant::now()) % 2001; // 0..=2000
    interval.mul_f64(0.9 + r as f64 / 10_000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_within_ten_percent() {
        for _ in 0..100 {
            let d = jittered(Duration::from_secs(10));
            assert!(
                d >= Duration::from_secs(9) && d <= Duration::from_secs(11),
                "{d:?}"
            );
        }
    }
}
