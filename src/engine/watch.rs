//! The watch list: ports from the config, plus ports found listening
//! (discovery), each with its name, policy and origin, keyed by
//! [`PortKey`] (protocol and port number).

use std::collections::{BTreeMap, HashSet};
use std::ops::RangeInclusive;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use crate::config::{Config, Expect, PortConfig};
use crate::netns::NsId;
use crate::sockets::{Listener, Scope};

use crate::snapshot::Origin;
pub use crate::snapshot::PortKey;

#[derive(Debug, Clone, PartialEq)]
pub struct WatchedPort {
    pub key: PortKey,
    /// The configured name, else the owning process's name when known.
    pub name: String,
    /// The policy; `auto` is resolved on the first sight of a listener.
    pub expect: Expect,
    /// The policy as configured (`auto` for discovered ports), so that a
    /// reload that changes it is applied.
    pub policy: Expect,
    pub origin: Origin,
    /// When a listener was last seen on the port.
    pub last_seen: Option<Instant>,
    /// What a UDP probe sends (empty for TCP and for discovered ports).
    pub payload: Arc<[u8]>,
}

impl WatchedPort {
    /// Whether probes are sent to it ([`Origin::probes`]).
    pub fn probed(&self) -> bool {
        self.origin.probes(self.key.protocol)
    }
}

/// The set of watched ports, updated after every socket scan.
#[derive(Debug, Default, Clone)]
pub struct WatchList {
    ports: BTreeMap<PortKey, WatchedPort>,
    /// Ports listening, not watched yet: when each was first seen, for
    /// `discover.min_age`.
    candidates: BTreeMap<PortKey, Instant>,
    /// Ports old enough to be discovered, left out by `discover.max_ports`.
    left_out: usize,
    /// The cap has been logged since it last left nothing out.
    cap_logged: bool,
    /// The other network namespaces of the last scan, with their
    /// ephemeral ranges: a discovered port of a namespace that is gone
    /// goes with it (its container went, not its service).
    others: BTreeMap<NsId, RangeInclusive<u16>>,
    /// The host's ports that a forward (DNAT, redirect, proxy) takes: a
    /// published port is discovered even where nothing listens on it.
    forwarded: Vec<PortKey>,
}

impl WatchList {
    pub fn ports(&self) -> impl Iterator<Item = &WatchedPort> {
        self.ports.values()
    }

    /// How many listening ports discovery leaves out (`discover.max_ports`).
    pub fn left_out(&self) -> usize {
        self.left_out
    }

    pub fn get(&self, key: PortKey) -> Option<&WatchedPort> {
        self.ports.get(&key)
    }

    /// What a snapshot shows of the list: each port's key, name, policy and
    /// origin, and how many ports discovery leaves out.
    pub fn shown(&self) -> (Vec<(PortKey, String, Expect, Origin)>, usize) {
        let ports = self
            .ports
            .values()
            .map(|w| (w.key, w.name.clone(), w.expect, w.origin))
            .collect();
        (ports, self.left_out)
    }

    /// The other namespaces the next [`WatchList::update`] sees, each with
    /// its ephemeral range.
    pub fn set_namespaces(&mut self, others: BTreeMap<NsId, RangeInclusive<u16>>) {
        self.others = others;
    }

    /// The forwarded ports the next [`WatchList::update`] sees.
    pub fn set_forwarded(&mut self, forwarded: Vec<PortKey>) {
        self.forwarded = forwarded;
    }

    /// Applies the config and the listeners of one scan: configured ports are
    /// always watched; with discovery on, every listening port outside
    /// `ephemeral` is too once it has listened for `discover.min_age` (up to
    /// `discover.max_ports` of them), and stays watched for `discover.forget_after`
    /// after its last listener is gone. `external_vantage` tells `auto` whether
    /// a non-loopback port resolves to `public` or to `internal`.
    pub fn update(
        &mut self,
        config: &Config,
        listeners: &[Listener],
        ephemeral: &RangeInclusive<u16>,
        external_vantage: bool,
        now: Instant,
    ) {
        let mut by_port: BTreeMap<PortKey, Vec<&Listener>> = BTreeMap::new();
        for l in listeners {
            by_port.entry(PortKey::of(l)).or_default().push(l);
        }
        for key in &self.forwarded {
            by_port.entry(*key).or_default();
        }
        // Ports dropped from the config (on reload) go unless discovery keeps
        // them (a set: a search of the config per port was 10,000² a scan).
        let configured: HashSet<PortKey> = config.ports.iter().map(configured_key).collect();
        self.ports
            .retain(|key, w| w.origin == Origin::Discovered || configured.contains(key));
        // Discovered ports of a namespace that is gone go at once.
        let others = std::mem::take(&mut self.others);
        self.ports.retain(|key, w| {
            w.origin == Origin::Config || key.netns.is_own() || others.contains_key(&key.netns)
        });
        self.candidates
            .retain(|key, _| key.netns.is_own() || others.contains_key(&key.netns));
        for p in &config.ports {
            let key = configured_key(p);
            let entry = self.ports.entry(key).or_insert_with(|| WatchedPort {
                key,
                name: p.name.clone(),
                expect: p.expect,
                policy: p.expect,
                origin: Origin::Config,
                last_seen: None,
                payload: Arc::clone(p.payload.bytes()),
            });
            entry.origin = Origin::Config;
            entry.payload = Arc::clone(p.payload.bytes());
            if !p.name.is_empty() {
                entry.name = p.name.clone();
            }
            if entry.policy != p.expect {
                entry.policy = p.expect;
                entry.expect = p.expect;
            }
        }
        self.discover(
            config,
            &by_port,
            &|ns: NsId| {
                if ns.is_own() {
                    Some(ephemeral.clone())
                } else {
                    others.get(&ns).cloned()
                }
            },
            now,
        );
        self.others = others;
        for w in self.ports.values_mut() {
            if let Some(ls) = by_port.get(&w.key) {
                w.last_seen = Some(now);
                if w.name.is_empty()
                    && let Some(owner) = ls.iter().find_map(|l| l.owner.as_ref())
                {
                    w.name = owner.name.clone();
                }
                if w.expect == Expect::Auto {
                    // Peers probe only the host's addresses.
                    w.expect = resolve_auto(ls, external_vantage && w.key.netns.is_own());
                }
            }
        }
        let forget_after = config.discover.forget_after;
        self.ports.retain(|_, w| {
            w.origin == Origin::Config
                || (config.discover.enabled
                    && w.last_seen
                        .is_some_and(|seen| now.duration_since(seen) <= forget_after))
        });
    }
}

/// The key of a configured port.
fn configured_key(p: &PortConfig) -> PortKey {
    PortKey {
        netns: NsId::named(&p.netns),
        protocol: p.protocol,
        port: p.port,
    }
}

impl WatchList {
    /// Discovery: a listening port outside `ephemeral` that has listened
    /// for `discover.min_age` (since portsight first saw it, through every
    /// scan) is watched, while fewer than `discover.max_ports` discovered
    /// ports are; the rest are counted in [`WatchList::left_out`] and the
    /// cap is logged once. Configured ports are already in the list, so
    /// neither rule touches them.
    fn discover(
        &mut self,
        config: &Config,
        by_port: &BTreeMap<PortKey, Vec<&Listener>>,
        ephemeral: &dyn Fn(NsId) -> Option<RangeInclusive<u16>>,
        now: Instant,
    ) {
        let d = &config.discover;
        // A port that stopped listening before it was old enough starts over.
        self.candidates.retain(|p, _| by_port.contains_key(p));
        if !d.enabled {
            self.candidates.clear();
            self.left_out = 0;
            return;
        }
        let mut discovered = self
            .ports
            .values()
            .filter(|w| w.origin == Origin::Discovered)
            .count();
        let mut left_out = 0;
        for &key in by_port.keys() {
            let outside = ephemeral(key.netns).is_some_and(|r| !r.contains(&key.port));
            if !outside || self.ports.contains_key(&key) {
                self.candidates.remove(&key);
                continue;
            }
            let first = *self.candidates.entry(key).or_insert(now);
            if now.duration_since(first) < d.min_age {
                continue;
            }
            if discovered >= d.max_ports {
                left_out += 1;
                continue;
            }
            self.candidates.remove(&key);
            self.ports.insert(key, WatchedPort::discovered(key));
            discovered += 1;
        }
        self.left_out = left_out;
        if left_out == 0 {
            self.cap_logged = false;
        } else if !self.cap_logged {
            self.cap_logged = true;
            tracing::warn!(
                max_ports = d.max_ports,
                left_out,
                "discovery cap reached: listening ports beyond discover.max_ports are not watched \
                 (portsight_discovery_ports_left_out counts them; list the ones you need as [[port]])"
            );
        }
    }
}

impl WatchedPort {
    /// A port first seen listening: policy `auto`, named after its owner later.
    fn discovered(key: PortKey) -> WatchedPort {
        WatchedPort {
            key,
            name: String::new(),
            expect: Expect::Auto,
            policy: Expect::Auto,
            origin: Origin::Discovered,
            last_seen: None,
            payload: Arc::from(Vec::new()),
        }
    }
}

/// `auto`: `local` when every listener is on loopback, else (also for a
/// forwarded port nothing listens on) `public`, or
/// `internal` where no external vantage is configured.
fn resolve_auto(listeners: &[&Listener], external_vantage: bool) -> Expect {
    // No listener at all: a forwarded port, published to be reached.
    if !listeners.is_empty() && listeners.iter().all(|l| l.scope() == Scope::Loopback) {
        Expect::Local
    } else if external_vantage {
        Expect::Public
    } else {
        Expect::Internal
    }
}

/// Parses `/proc/sys/net/ipv4/ip_local_port_range` ("32768\t60999").
pub fn parse_port_range(text: &str) -> Option<RangeInclusive<u16>> {
    let mut it = text.split_whitespace().map(|s| s.parse::<u16>());
    match (it.next(), it.next(), it.next()) {
        (Some(Ok(lo)), Some(Ok(hi)), None) if lo <= hi => Some(lo..=hi),
        _ => None,
    }
}

/// The kernel's ephemeral port range under `proc_root`, or Linux's default
/// (32768–60999) where it cannot be read.
pub fn ephemeral_range(proc_root: &Path) -> RangeInclusive<u16> {
    std::fs::read_to_string(proc_root.join("sys/net/ipv4/ip_local_port_range"))
        .ok()
        .and_then(|t| parse_port_range(&t))
        .unwrap_or(DEFAULT_EPHEMERAL)
}

/// As [`ephemeral_range`], from `ip_local_port_range` kept open (read
/// again from its start: a `/proc/sys/net` file shows the namespace it was
/// opened in); `None`: it could not be opened.
pub fn ephemeral_range_in(file: Option<&std::fs::File>) -> RangeInclusive<u16> {
    use std::os::unix::fs::FileExt;
    let mut buf = [0u8; 64];
    file.and_then(|f| f.read_at(&mut buf, 0).ok())
        .and_then(|n| std::str::from_utf8(&buf[..n]).ok())
        .and_then(parse_port_range)
        .unwrap_or(DEFAULT_EPHEMERAL)
}

/// Linux's default `ip_local_port_range`.
const DEFAULT_EPHEMERAL: RangeInclusive<u16> = 32768..=60999;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::PortConfig;
    use crate::sockets::Owner;
    use std::time::Duration;

    fn listener(addr: &str, port: u16, owner: Option<&str>) -> Listener {
        Listener {
            owner: owner.map(|n| Owner {
                pid: 1,
                name: n.to_string(),
            }),
            ..Listener::on(addr.parse().unwrap(), port)
        }
    }

    const EPHEMERAL: RangeInclusive<u16> = 32768..=60999;

    /// The default config, discovering a port as soon as it is seen.
    fn at_once() -> Config {
        let mut c = Config::default();
        c.discover.min_age = Duration::ZERO;
        c
    }

    fn ports_of(w: &WatchList) -> Vec<u16> {
        w.ports().map(|p| p.key.port).collect()
    }

    #[test]
    fn a_port_is_discovered_only_once_it_has_listened_for_min_age() {
        let config = Config::default(); // min_age = 1m
        let mut w = WatchList::default();
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let flood: Vec<Listener> = (20000..20100)
            .map(|p| listener("127.0.0.1", p, None))
            .collect();
        for s in [0, 1, 2, 3] {
            w.update(&config, &flood, &EPHEMERAL, false, at(s));
        }
        assert!(
            ports_of(&w).is_empty(),
            "seconds-old listeners are not watched"
        );
        // Gone before a minute: never an alarm, and never watched later.
        w.update(&config, &[], &EPHEMERAL, false, at(4));
        w.update(&config, &flood[..1], &EPHEMERAL, false, at(61));
        assert!(
            ports_of(&w).is_empty(),
            "its age starts over when it comes back"
        );
        w.update(&config, &flood[..1], &EPHEMERAL, false, at(121));
        assert_eq!(
            ports_of(&w),
            [20000],
            "listened for a minute, scan after scan"
        );
    }

    #[test]
    fn discovery_stops_at_max_ports_and_counts_the_rest() {
        let mut config = at_once();
        config.discover.max_ports = 10;
        config.ports.push(PortConfig {
            name: "api".into(),
            ..PortConfig::tcp(20050, Expect::Public)
        });
        let ls: Vec<Listener> = (20000..20100)
            .map(|p| listener("127.0.0.1", p, None))
            .collect();
        let mut w = WatchList::default();
        w.update(&config, &ls, &EPHEMERAL, false, Instant::now());
        let discovered = w.ports().filter(|p| p.origin == Origin::Discovered).count();
        assert_eq!(discovered, 10);
        assert_eq!(
            w.left_out(),
            89,
            "100 listening, 1 configured, 10 discovered"
        );
        assert!(
            w.get(PortKey::tcp(20050)).is_some(),
            "configured ports are not capped"
        );
        let young = Config {
            ports: config.ports.clone(),
            ..Config::default()
        };
        let mut w = WatchList::default();
        w.update(&young, &ls[50..51], &EPHEMERAL, false, Instant::now());
        assert!(
            w.get(PortKey::tcp(20050)).is_some(),
            "configured ports need no age"
        );
    }

    #[test]
    fn discovers_ports_outside_the_ephemeral_range() {
        let config = at_once();
        let mut w = WatchList::default();
        let ls = [
            listener("0.0.0.0", 80, Some("nginx")),
            listener("127.0.0.1", 5432, Some("postgres")),
            listener("0.0.0.0", 40000, None),
        ];
        w.update(&config, &ls, &EPHEMERAL, false, Instant::now());
        let ports: Vec<_> = w
            .ports()
            .map(|p| (p.key.port, p.name.as_str(), p.expect))
            .collect();
        assert_eq!(
            ports,
            [
                (80, "nginx", Expect::Internal),
                (5432, "postgres", Expect::Local)
            ]
        );
        assert!(w.ports().all(|p| p.origin == Origin::Discovered));
    }

    #[test]
    fn auto_is_public_with_an_external_vantage() {
        let mut w = WatchList::default();
        w.update(
            &at_once(),
            &[listener("::", 443, None)],
            &EPHEMERAL,
            true,
            Instant::now(),
        );
        assert_eq!(w.get(PortKey::tcp(443)).unwrap().expect, Expect::Public);
    }

    #[test]
    fn a_vanished_discovered_port_is_kept_then_forgotten() {
        let config = at_once();
        let mut w = WatchList::default();
        let t0 = Instant::now();
        w.update(
            &config,
            &[listener("0.0.0.0", 8080, None)],
            &EPHEMERAL,
            false,
            t0,
        );
        w.update(
            &config,
            &[],
            &EPHEMERAL,
            false,
            t0 + Duration::from_secs(60),
        );
        assert!(
            w.get(PortKey::tcp(8080)).is_some(),
            "still watched after a minute"
        );
        w.update(
            &config,
            &[],
            &EPHEMERAL,
            false,
            t0 + Duration::from_secs(3601),
        );
        assert!(
            w.get(PortKey::tcp(8080)).is_none(),
            "forgotten after forget_after"
        );
    }

    #[test]
    fn configured_ports_stay_and_keep_their_name() {
        let mut config = Config::default();
        config.discover.enabled = false;
        config.ports.push(PortConfig {
            name: "api".into(),
            ..PortConfig::tcp(40001, Expect::Local)
        });
        let mut w = WatchList::default();
        let ls = [
            listener("127.0.0.1", 40001, Some("python3")),
            listener("0.0.0.0", 22, None),
        ];
        w.update(&config, &ls, &EPHEMERAL, false, Instant::now());
        let p = w.get(PortKey::tcp(40001)).unwrap();
        assert_eq!(
            (p.name.as_str(), p.expect, p.origin),
            ("api", Expect::Local, Origin::Config)
        );
        assert!(w.get(PortKey::tcp(22)).is_none(), "discovery off");
        w.update(
            &config,
            &[],
            &EPHEMERAL,
            false,
            Instant::now() + Duration::from_secs(7200),
        );
        assert!(
            w.get(PortKey::tcp(40001)).is_some(),
            "configured ports are never forgotten"
        );
    }

    #[test]
    fn a_reload_to_auto_resolves_again() {
        let mut config = Config::default();
        config.ports.push(PortConfig {
            name: String::new(),
            ..PortConfig::tcp(8080, Expect::Public)
        });
        let mut w = WatchList::default();
        let ls = [listener("127.0.0.1", 8080, None)];
        w.update(&config, &ls, &EPHEMERAL, false, Instant::now());
        assert_eq!(w.get(PortKey::tcp(8080)).unwrap().expect, Expect::Public);
        config.ports[0].expect = Expect::Auto;
        w.update(&config, &ls, &EPHEMERAL, false, Instant::now());
        assert_eq!(w.get(PortKey::tcp(8080)).unwrap().expect, Expect::Local);
    }

    #[test]
    fn port_range() {
        assert_eq!(parse_port_range("32768\t60999\n"), Some(32768..=60999));
        assert_eq!(parse_port_range("1024 65535"), Some(1024..=65535));
        assert_eq!(parse_port_range("x"), None);
        assert_eq!(parse_port_range("5 4"), None);
    }
}
