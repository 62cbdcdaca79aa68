//! The engine: a socket scan, a probe round, and a new [`Snapshot`] after
//! each. [`run`] schedules them; [`state::State`] keeps what they found;
//! [`live::Live`] is the configuration they run under.

pub mod forwards;
pub mod live;
pub mod namespaces;
pub mod run;
pub mod state;
pub mod watch;

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::watch as channel;

use crate::config::{Config, Protocol};
use crate::diagnosis::Firewall;
use crate::netfilter::{self, Packet};
use crate::netns::NsId;
use crate::peer::{Answers, OutsideView};
use crate::probe::scheduler::Job;
use crate::probe::{Target, Vantage};
use crate::snapshot::{Snapshot, Sources};
use crate::sockets::{self, Source, interfaces, process::Owners};

use forwards::Forwards;
pub use live::{Flags, Live, Loaded};
use namespaces::Namespaces;
use state::{Scan, State};
pub use watch::PortKey;

/// Scans, probes and publishes snapshots; shared by the loops of `serve`,
/// and used once by `check`.
pub struct Engine {
    live: Arc<Live>,
    state: Mutex<State>,
    /// The owner cache, with the proc root it reads.
    owners: Mutex<Option<(PathBuf, Owners)>>,
    /// The host's sock_diag socket, kept between scans.
    dumper: Mutex<Option<sockets::netlink::Dumper>>,
    outside: OutsideView,
    /// The ruleset, cached by its generation.
    netfilter: Mutex<Option<netfilter::Reader>>,
    /// The scan of other network namespaces, and its thread.
    namespaces: Arc<Mutex<Namespaces>>,
    /// The forwards of the host's ports, with their own ruleset reader.
    forwards: Arc<Mutex<Forwards>>,
    snapshot: channel::Sender<Arc<Snapshot>>,
    /// What the latest full snapshot was diagnosed under: a reload needs
    /// a new one even when no scan changed anything.
    published_with: Mutex<Option<Arc<Loaded>>>,
}

/// What one scan did.
#[derive(Debug, Default)]
pub struct ScanReport {
    /// Watched ports whose set of listeners changed.
    pub changed: Vec<PortKey>,
    pub took: Duration,
    /// The scan failed; nothing changed.
    pub failed: bool,
}

/// What one round of local probes did; [`Engine::ask_peers`] follows it.
#[derive(Debug, Default)]
pub struct ProbeReport {
    /// How long the local probes took.
    pub took: Duration,
    /// Whether an external vantage (peers) is configured.
    pub external: bool,
    /// The ports probed.
    ports: Vec<PortKey>,
    /// This host's interface addresses, as the round saw them.
    own: Vec<IpAddr>,
}

impl Engine {
    pub fn new(live: Arc<Live>) -> Engine {
        let (snapshot, _) = channel::channel(Arc::new(Snapshot::default()));
        Engine {
            live,
            state: Mutex::new(State::default()),
            owners: Mutex::new(None),
            dumper: Mutex::new(None),
            outside: OutsideView::default(),
            netfilter: Mutex::new(Some(netfilter::Reader::default())),
            namespaces: Arc::default(),
            forwards: Arc::default(),
            snapshot,
            published_with: Mutex::new(None),
        }
    }

    pub fn live(&self) -> &Arc<Live> {
        &self.live
    }

    /// The latest snapshot.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.borrow().clone()
    }

    /// A receiver of every new snapshot, for readers that must not hold the engine.
    pub fn subscribe(&self) -> channel::Receiver<Arc<Snapshot>> {
        self.snapshot.subscribe()
    }

    /// Reads the socket table, applies it and publishes.
    pub async fn scan(&self) -> ScanReport {
        let started = Instant::now();
        let loaded = self.live.current();
        let config = &loaded.config;
        let read = match self.read_sockets(Arc::clone(&loaded)).await {
            Ok(read) => read,
            Err(e) => {
                tracing::warn!(error = %e, "socket scan failed");
                self.lock().scan_failed(Sources {
                    netlink: Some(false),
                    procfs: Some(false),
                    ..Sources::default()
                });
                self.publish(&loaded);
                return ScanReport {
                    failed: true,
                    ..ScanReport::default()
                };
            }
        };
        let changed = {
            let mut st = self.lock();
            st.apply_scan(config, read, Instant::now(), SystemTime::now())
        };
        self.publish(&loaded);
        ScanReport {
            changed,
            took: started.elapsed(),
            failed: false,
        }
    }

    /// The socket table with owners, and the ephemeral range, read on a
    /// blocking thread.
    async fn read_sockets(&self, loaded: Arc<Loaded>) -> Result<Scan, String> {
        let proc_root = loaded.config.scan.proc_root.clone();
        let namespaces = Arc::clone(&self.namespaces);
        let forwards = Arc::clone(&self.forwards);
        let mut owners = self
            .owners
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
            .filter(|(root, _)| *root == proc_root)
            .map_or_else(|| Owners::new(proc_root.clone()), |(_, o)| o);
        let mut dumper = lock(&self.dumper).take();
        let read = tokio::task::spawn_blocking(move || {
            let result =
                sockets::scan_listeners(&proc_root, &mut dumper).map(|(mut listeners, source)| {
                    let others = lock(&namespaces).scan(&loaded.config);
                    let mut in_others = others.namespaces;
                    owners.fill(
                        listeners
                            .iter_mut()
                            .chain(in_others.iter_mut().flat_map(|n| n.listeners.iter_mut())),
                    );
                    let (forwarded, netfilter_up) =
                        lock(&forwards).read(&proc_root, &listeners, owners.complete());
                    let netlink = source == Source::Netlink;
                    Scan {
                        listeners,
                        source,
                        sources: Sources {
                            netlink: Some(netlink),
                            procfs: (!netlink).then_some(true),
                            owners: Some(owners.complete()),
                            netfilter: Some(netfilter_up),
                            namespaces: others.up,
                        },
                        ephemeral: watch::ephemeral_range(&proc_root),
                        tcpext: crate::kernel::read_tcpext(&proc_root)
                            .inspect_err(|e| tracing::debug!(error = %e, "no kernel counters"))
                            .ok(),
                        conntrack: crate::kernel::read_conntrack(&proc_root),
                        namespaces: in_others,
                        forwards: Some(forwarded),
                    }
                });
            (result, (proc_root, owners), dumper)
        })
        .await
        .map_err(|e| format!("socket scan task failed: {e}"))?;
        let (result, owners, dumper) = read;
        *self.owners.lock().unwrap_or_else(|e| e.into_inner()) = Some(owners);
        *lock(&self.dumper) = dumper;
        let scan = result.map_err(|e| e.to_string())?;
        self.note_sources(scan.source, &scan.sources);
        Ok(scan)
    }

    /// Logs where the socket table comes from, and each source that stops
    /// or starts working, once per change.
    fn note_sources(&self, source: Source, now: &Sources) {
        let before = self.snapshot.borrow();
        if before.source != Some(source) {
            tracing::info!(source = ?source, "reading listening sockets");
        }
        for (name, up) in now.each() {
            let was = before
                .sources
                .each()
                .find(|(n, _)| *n == name)
                .map(|(_, u)| u);
            match (was, up) {
                (Some(true) | None, false) => {
                    tracing::warn!(
                        source = name,
                        "source of evidence unavailable (portsight_source_up 0); see the README's privileges"
                    )
                }
                (Some(false), true) => {
                    tracing::info!(source = name, "source of evidence available again")
                }
                _ => {}
            }
        }
    }

    /// Probes `ports` (every watched port when `None`) from the local
    /// vantages and publishes the results. Discovered UDP ports are not
    /// probed ([`watch::WatchedPort::probed`]).
    pub async fn probe(&self, ports: Option<&[PortKey]>) -> ProbeReport {
        let loaded = self.live.current();
        let config = &loaded.config;
        let started = Instant::now();
        let (probed, others) = {
            let st = self.lock();
            let others: HashMap<NsId, Vec<(Vantage, IpAddr)>> = st
                .namespaces()
                .filter_map(|ns| {
                    let (addresses, ipv6_up) = st.namespace_addresses(ns.id)?;
                    Some((ns.id, namespace_vantages(config, addresses, ipv6_up)))
                })
                .collect();
            (st.probed(ports), others)
        };
        let watched: Vec<PortKey> = probed.iter().map(|(key, _)| *key).collect();
        let (own, ipv6_up) = host_addresses().await;
        let addrs = local_vantages(&config.vantage, &own, ipv6_up);
        let requests: Vec<(Target, Arc<[u8]>)> = probed
            .iter()
            .flat_map(|(key, payload)| {
                let addrs = if key.netns.is_own() {
                    addrs.as_slice()
                } else {
                    others.get(&key.netns).map_or(&[][..], Vec::as_slice)
                };
                addrs.iter().map(move |(v, ip)| {
                    let addr = SocketAddr::new(*ip, key.port);
                    let target = Target::new(*v, key.protocol, addr).in_netns(key.netns);
                    (target, Arc::clone(payload))
                })
            })
            .collect();
        let targets: Vec<Target> = requests.iter().map(|(t, _)| t.clone()).collect();
        let jobs = self.jobs(requests).await;
        let results: Vec<_> = loaded
            .prober
            .run_jobs(jobs, config.probe.timeout, None)
            .await
            .into_iter()
            .flatten()
            .collect();
        // Targets no longer probed (an address went away) drop out, and the
        // external view goes with the last peer.
        let local: HashSet<Target> = targets.into_iter().collect();
        let external_on = config.has_external_vantage();
        {
            let mut st = self.lock();
            st.set_own_addresses(&own);
            st.record(&watched, results, |t| {
                (t.vantage == Vantage::External && external_on) || local.contains(t)
            });
            if ports.is_none() {
                st.round_completed(SystemTime::now());
            }
        }
        self.ask_firewall(&own).await;
        let took = started.elapsed();
        self.publish(&loaded);
        ProbeReport {
            took,
            external: external_on,
            ports: watched,
            own,
        }
    }

    /// The probes to run: each target with its payload, and a socket made
    /// inside the namespace it is sent from where that is not portsight's
    /// own. A target whose socket could not be made is not probed (no
    /// evidence either way).
    async fn jobs(&self, requests: Vec<(Target, Arc<[u8]>)>) -> Vec<Job> {
        let mut sockets: Vec<Option<std::os::fd::OwnedFd>> = Vec::new();
        if requests.iter().any(|(t, _)| !t.sent_from().is_own()) {
            let targets: Vec<Target> = requests.iter().map(|(t, _)| t.clone()).collect();
            let namespaces = Arc::clone(&self.namespaces);
            sockets = tokio::task::spawn_blocking(move || lock(&namespaces).sockets(&targets))
                .await
                .unwrap_or_default();
        }
        let mut sockets = sockets.into_iter();
        requests
            .into_iter()
            .filter_map(|(target, payload)| {
                let socket = sockets.next().flatten();
                (target.sent_from().is_own() || socket.is_some()).then_some(Job {
                    target,
                    payload,
                    socket,
                })
            })
            .collect()
    }

    /// Asks peers for the external view of the ports `round` probed, and
    /// publishes it; `None` without peers or ports. Evidence only from
    /// peers that answered: a peer that did not answer gives none, and its
    /// old results go, as do those of peers that no longer exist. Peers not
    /// asked this time keep theirs.
    pub async fn ask_peers(&self, round: &ProbeReport) -> Option<Answers> {
        let loaded = self.live.current();
        let config = &loaded.config;
        let own = &round.own;
        // Peers probe TCP only (the batch format names no protocol).
        let keys: Vec<PortKey> = round
            .ports
            .iter()
            .filter(|k| k.protocol == Protocol::Tcp)
            .copied()
            .collect();
        let ports: Vec<u16> = keys.iter().map(|k| k.port).collect();
        if !round.external || !config.has_external_vantage() || ports.is_empty() {
            return None;
        }
        let external = if config.vantage.external_addresses.is_empty() {
            own
        } else {
            &config.vantage.external_addresses
        };
        let mut answers = self
            .outside
            .ask(config, &loaded.peers, &ports, external, own)
            .await;
        let results = std::mem::take(&mut answers.results);
        let answered: HashSet<Target> = results.iter().map(|r| r.target.clone()).collect();
        self.lock().record(&keys, results, |t| {
            t.vantage != Vantage::External || answered.contains(t) || answers.keeps(&t.source)
        });
        self.ask_firewall(own).await;
        self.publish(&loaded);
        Some(answers)
    }

    /// Names the firewall rules on the path of every failed probe: the
    /// ruleset is read (or taken from the cache, while its generation
    /// holds) only when something failed; else only whether it could be
    /// read is checked, cheaply.
    async fn ask_firewall(&self, own: &[IpAddr]) {
        let failed = self.lock().failed_targets();
        let Some(mut reader) = self
            .netfilter
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        else {
            return; // another round is reading it
        };
        let own = own.to_vec();
        let read = tokio::task::spawn_blocking(move || {
            let found = if failed.is_empty() {
                (None, netfilter::Reader::available().is_ok())
            } else {
                let (fw, up) = firewall_of(&mut reader, &failed, &own);
                (Some(fw), up)
            };
            (found, reader)
        })
        .await;
        let Ok(((firewall, up), reader)) = read else {
            *self.netfilter.lock().unwrap_or_else(|e| e.into_inner()) =
                Some(netfilter::Reader::default());
            return;
        };
        *self.netfilter.lock().unwrap_or_else(|e| e.into_inner()) = Some(reader);
        self.lock().set_firewall(firewall, Some(up));
    }

    /// Diagnoses the current state and swaps the snapshot in, under the
    /// state's lock: two publishes never leave the older snapshot in place.
    /// When nothing changed since the last one, under the same config, and
    /// nothing in it depends on the clock ([`State::unchanged`]), the last
    /// one stands, with the new scan's time.
    fn publish(&self, loaded: &Arc<Loaded>) {
        let mut st = self.lock();
        let mut with = lock(&self.published_with);
        if st.unchanged() && with.as_ref().is_some_and(|w| Arc::ptr_eq(w, loaded)) {
            let last = self.snapshot.borrow().clone();
            if let Some(at) = st.scanned_at().filter(|at| last.scanned_at != Some(*at)) {
                self.snapshot.send_replace(Arc::new(last.rescanned(at)));
            }
            return;
        }
        let (snapshot, history) = st.snapshot(&loaded.config, SystemTime::now());
        st.set_history(history);
        *with = Some(Arc::clone(loaded));
        self.snapshot.send_replace(Arc::new(snapshot));
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A mutex's guard, whether or not a holder panicked.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The rules named for each failed target, and whether the ruleset
/// could be read.
fn firewall_of(
    reader: &mut netfilter::Reader,
    failed: &[(Vantage, Protocol, SocketAddr)],
    own: &[IpAddr],
) -> (Firewall, bool) {
    let rs = match reader.current() {
        Ok(rs) => rs,
        Err(e) => {
            tracing::debug!(error = %e, "cannot read the nftables ruleset");
            let fw = Firewall {
                rules: Vec::new(),
                error: Some(e.to_string()),
            };
            return (fw, false);
        }
    };
    let rules = failed
        .iter()
        .map(|&(vantage, protocol, addr)| {
            let mut packet = match vantage {
                Vantage::External => {
                    let local = own.contains(&addr.ip()).then_some(true);
                    Packet::from_outside(addr.ip(), addr.port(), local)
                }
                _ => Packet::local(addr.ip(), addr.port()),
            };
            packet.l4proto = match protocol {
                Protocol::Tcp => netfilter::TCP,
                Protocol::Udp => netfilter::UDP,
            };
            ((vantage, protocol, addr), netfilter::name(&rs, &packet))
        })
        .collect();
    (Firewall { rules, error: None }, true)
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

/// The vantages of a port in another namespace and their addresses:
/// loopback and interface from inside it, host from portsight's own to
/// its addresses (the configured `vantage.addresses` are the host's).
fn namespace_vantages(
    config: &Config,
    addresses: &[IpAddr],
    ipv6_up: bool,
) -> Vec<(Vantage, IpAddr)> {
    let inside = crate::config::Vantage {
        addresses: Vec::new(),
        ..config.vantage.clone()
    };
    let mut out = local_vantages(&inside, addresses, ipv6_up);
    out.extend(addresses.iter().map(|a| (Vantage::Host, *a)));
    out
}

/// The local vantages and their addresses: loopback (127.0.0.1, and ::1 when
/// IPv6 is up) and the interface addresses (or the configured list).
fn local_vantages(
    v: &crate::config::Vantage,
    own: &[IpAddr],
    ipv6_up: bool,
) -> Vec<(Vantage, IpAddr)> {
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
