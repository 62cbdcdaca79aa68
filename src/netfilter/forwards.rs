//! The forwards of the nat table: every path through the nat base chains
//! at `prerouting` and `output` (in priority order, following jumps, gotos
//! and verdict maps, as Docker's `DOCKER` chain, kube-proxy's
//! `KUBE-SERVICES` → `KUBE-NODEPORTS` → `KUBE-EXT-…` → `KUBE-SVC-…` →
//! `KUBE-SEP-…`, its nftables mode's `services` maps and CNI portmap's
//! `CNI-HOSTPORT-DNAT` → `CNI-DN-…` make them) to a `dnat` or `redirect`,
//! with what a connection must be to take it: its protocol and port, its
//! destination address, and the other conditions in words.
//!
//! Pure and three-valued like the matcher: a condition portsight does not
//! interpret does not hide the forward — it is reported with the
//! condition named, and a port it cannot read is `HostPort::Unknown`,
//! never a guess. Load balancing (iptables' `statistic`, nft's `numgen`)
//! gives one forward per backend, each with its condition.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

use super::eval::field_name;
use super::packet::Hook;
use super::ruleset::{Chain, Expr, Family, Nat, NatKind, Rule, Ruleset, Stmt, Verdict};
use crate::config::Protocol;
use crate::forward::{Daddr, Forward, HostPort, Via};

/// A range of at most this many ports is listed port by port; a wider one
/// is one `HostPort::Range`.
const EXPAND: u32 = 64;

/// At most this many forwards in all (kube-proxy's 10,000 services with two
/// endpoints each, cluster IP and node port, make 40,000).
pub const MAX_FORWARDS: usize = 65_536;

/// As deep as the kernel lets jumps go.
const MAX_DEPTH: usize = 16;

/// At most this many chains walked in all (10,000 kube-proxy services take
/// about 200,000): a ruleset whose chains jump to each other many times
/// over stays cheap.
const MAX_STEPS: u32 = 1_000_000;

/// Ports as sorted, disjoint, inclusive ranges; `None`: not known.
type Ports = Option<Vec<(u16, u16)>>;

const EVERY_PORT: (u16, u16) = (0, u16::MAX);

/// What a connection must be to reach a rule.
#[derive(Debug, Clone)]
struct Path<'a> {
    tcp: bool,
    udp: bool,
    v4: bool,
    v6: bool,
    ports: Ports,
    daddr: Vec<Daddr>,
    conditions: Vec<String>,
    /// Borrowed from the ruleset: a path is cloned for every rule it meets.
    chains: Vec<&'a str>,
    comment: Option<String>,
}

impl Path<'_> {
    fn possible(&self) -> bool {
        (self.tcp || self.udp)
            && (self.v4 || self.v6)
            && self.ports.as_ref().is_none_or(|p| !p.is_empty())
    }

    fn protocols(&mut self, op: &str, right: &Expr) {
        let (tcp, udp) = (has_protocol(right, 6), has_protocol(right, 17));
        let (tcp, udp) = match (tcp, udp) {
            (Some(t), Some(u)) => (t, u),
            _ => {
                self.condition(&Expr::Meta("l4proto".into()), op, right);
                return;
            }
        };
        let negate = op == "!=";
        self.tcp &= tcp != negate;
        self.udp &= udp != negate;
    }

    fn dport(&mut self, rs: &Ruleset, scope: (Family, &str), op: &str, right: &Expr) {
        let Some(mut want) = port_values(rs, scope, right, 0) else {
            self.ports = None;
            self.conditions
                .push(format!("dport {op} {} (not interpreted)", words(right)));
            return;
        };
        if op == "!=" {
            want = complement(&want);
        } else if op != "==" {
            self.ports = None;
            return;
        }
        if let Some(have) = &self.ports {
            self.ports = Some(intersect(have, &want));
        }
    }

    fn address(&mut self, v4: bool, op: &str, right: &Expr) {
        if v4 {
            self.v6 = false;
        } else {
            self.v4 = false;
        }
        match (net_values(right), op) {
            (Some(nets), "==") => self.daddr.push(Daddr::In(nets)),
            (Some(nets), "!=") => self.daddr.push(Daddr::NotIn(nets)),
            _ => {
                let field = if v4 { "ip" } else { "ip6" };
                self.conditions
                    .push(format!("{field} daddr {op} {}", words(right)));
            }
        }
    }

    fn condition(&mut self, left: &Expr, op: &str, right: &Expr) {
        self.conditions
            .push(format!("{} {op} {}", field_name(left), words(right)));
    }

    /// Narrows the path by `left op right`.
    fn narrow(&mut self, rs: &Ruleset, scope: (Family, &str), op: &str, left: &Expr, right: &Expr) {
        match left {
            Expr::Payload { protocol, field } => match (protocol.as_str(), field.as_str()) {
                ("tcp" | "udp" | "th", "dport") => {
                    match protocol.as_str() {
                        "tcp" => self.udp = false,
                        "udp" => self.tcp = false,
                        _ => {}
                    }
                    self.dport(rs, scope, op, right);
                }
                ("sctp" | "dccp" | "udplite", _) => (self.tcp, self.udp) = (false, false),
                ("ip", "protocol") | ("ip6", "nexthdr") => self.protocols(op, right),
                ("ip", "daddr") => self.address(true, op, right),
                ("ip6", "daddr") => self.address(false, op, right),
                (header, _) => {
                    // Another field of a header: the header's protocol or
                    // family is the packet's, the field a condition.
                    match header {
                        "tcp" => self.udp = false,
                        "udp" => self.tcp = false,
                        "ip" => self.v6 = false,
                        "ip6" => self.v4 = false,
                        _ => {}
                    }
                    self.condition(left, op, right);
                }
            },
            Expr::Meta(key) if key == "l4proto" => self.protocols(op, right),
            Expr::Meta(key) if key == "nfproto" && matches!(right, Expr::Str(_)) => {
                let v4 = *right == Expr::Str("ipv4".into());
                if (op == "==") == v4 {
                    self.v6 = false;
                } else {
                    self.v4 = false;
                }
            }
            Expr::Fib { result, flags }
                if result == "type" && flags == &["daddr"] && op == "==" && only_local(right) =>
            {
                self.daddr.push(Daddr::Local);
            }
            _ => self.condition(left, op, right),
        }
    }
}

/// Whether `e` (a protocol name or number, or a set of them) names
/// protocol `n`; `None` when it cannot be told.
fn has_protocol(e: &Expr, n: u64) -> Option<bool> {
    match e {
        Expr::Num(x) => Some(*x == n),
        Expr::Str(s) => match s.as_str() {
            "tcp" => Some(n == 6),
            "udp" => Some(n == 17),
            _ => Some(false),
        },
        Expr::Set(items) | Expr::List(items) => {
            let mut any = false;
            for i in items {
                any |= has_protocol(i, n)?;
            }
            Some(any)
        }
        _ => None,
    }
}

fn only_local(e: &Expr) -> bool {
    match e {
        Expr::Str(s) => s == "local",
        Expr::Set(items) | Expr::List(items) => items.len() == 1 && only_local(&items[0]),
        _ => false,
    }
}

/// The ports `e` names: a number, a range, a set of both, a named set.
fn port_values(
    rs: &Ruleset,
    scope: (Family, &str),
    e: &Expr,
    depth: u8,
) -> Option<Vec<(u16, u16)>> {
    let port = |e: &Expr| match e {
        Expr::Num(n) => u16::try_from(*n).ok(),
        _ => None,
    };
    let out = match e {
        Expr::Num(_) => vec![(port(e)?, port(e)?)],
        Expr::Range(lo, hi) => vec![(port(lo)?, port(hi)?)],
        Expr::Set(items) | Expr::List(items) if depth < 2 => {
            let mut all = Vec::new();
            for i in items {
                all.extend(port_values(rs, scope, i, depth + 1)?);
            }
            all
        }
        Expr::SetRef(name) if depth == 0 => {
            let items = rs.set(scope.0, scope.1, name)?;
            return port_values(rs, scope, &Expr::Set(items.to_vec()), depth + 1);
        }
        _ => return None,
    };
    Some(normalize(out))
}

/// Networks: an address, a prefix, a range of addresses as the networks
/// that cover it, or a set of them.
fn net_values(e: &Expr) -> Option<Vec<IpNet>> {
    match e {
        Expr::Str(s) => Some(vec![IpNet::from(s.parse::<IpAddr>().ok()?)]),
        Expr::Prefix(a, len) => Some(vec![IpNet::new(*a, *len).ok()?.trunc()]),
        Expr::Range(lo, hi) => match (lo.as_ref(), hi.as_ref()) {
            (Expr::Str(a), Expr::Str(b)) => match (a.parse().ok()?, b.parse().ok()?) {
                (IpAddr::V4(a), IpAddr::V4(b)) => {
                    Some(ipnet::Ipv4Subnets::new(a, b, 0).map(IpNet::V4).collect())
                }
                (IpAddr::V6(a), IpAddr::V6(b)) => {
                    Some(ipnet::Ipv6Subnets::new(a, b, 0).map(IpNet::V6).collect())
                }
                _ => None,
            },
            _ => None,
        },
        Expr::Set(items) | Expr::List(items) => {
            let mut all = Vec::new();
            for i in items {
                all.extend(net_values(i)?);
            }
            Some(all)
        }
        _ => None,
    }
}

/// A value as a person reads it in a condition.
fn words(e: &Expr) -> String {
    match e {
        Expr::Num(n) => n.to_string(),
        Expr::Str(s) => format!("\"{s}\""),
        Expr::SetRef(name) => format!("@{name}"),
        Expr::Prefix(a, l) => format!("{a}/{l}"),
        Expr::Range(a, b) => format!("{}-{}", words(a), words(b)),
        Expr::Set(items) | Expr::List(items) => {
            let all: Vec<String> = items.iter().map(words).collect();
            format!("{{ {} }}", all.join(", "))
        }
        Expr::Concat(parts) => parts.iter().map(words).collect::<Vec<_>>().join(" . "),
        _ => "…".into(),
    }
}

fn normalize(mut v: Vec<(u16, u16)>) -> Vec<(u16, u16)> {
    v.retain(|(lo, hi)| lo <= hi);
    v.sort_unstable();
    let mut out: Vec<(u16, u16)> = Vec::with_capacity(v.len());
    for (lo, hi) in v {
        match out.last_mut() {
            Some(last) if u32::from(lo) <= u32::from(last.1) + 1 => last.1 = last.1.max(hi),
            _ => out.push((lo, hi)),
        }
    }
    out
}

fn intersect(a: &[(u16, u16)], b: &[(u16, u16)]) -> Vec<(u16, u16)> {
    let mut out = Vec::new();
    for &(alo, ahi) in a {
        for &(blo, bhi) in b {
            let (lo, hi) = (alo.max(blo), ahi.min(bhi));
            if lo <= hi {
                out.push((lo, hi));
            }
        }
    }
    normalize(out)
}

fn complement(v: &[(u16, u16)]) -> Vec<(u16, u16)> {
    let mut out = Vec::new();
    let mut next = 0u32;
    for &(lo, hi) in v {
        if u32::from(lo) > next {
            out.push((next as u16, lo - 1));
        }
        next = u32::from(hi) + 1;
    }
    if next <= u32::from(u16::MAX) {
        out.push((next as u16, u16::MAX));
    }
    out
}

/// Where a nat statement sends the connection.
#[derive(Debug, Clone, Copy)]
struct Target {
    via: Via,
    /// `dnat ip to` / `dnat ip6 to`.
    family: Option<Family>,
    /// `None`: a redirect, or a dnat whose address is not known.
    addr: Option<IpAddr>,
    port: TargetPort,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum TargetPort {
    /// The connection's own port.
    Same,
    Port(u16),
    Unknown,
}

/// How a chain ended on a path.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Flow {
    Next,
    /// `return`, or a `goto`'s chain ended: back to the chain that jumped.
    Return,
    /// Accepted, dropped or translated: no further nat rule sees it.
    Final,
}

/// The forwards of `rs`'s nat chains at `prerouting` and `output`.
pub fn forwards(rs: &Ruleset) -> Vec<Forward> {
    let mut bases: Vec<(Hook, &Chain)> = rs
        .chains
        .iter()
        .filter_map(|c| {
            let b = c.base.as_ref().filter(|b| b.kind == "nat")?;
            let hook = match b.hook.as_str() {
                "prerouting" => Hook::Prerouting,
                "output" => Hook::Output,
                _ => return None,
            };
            matches!(c.family, Family::Ip | Family::Ip6 | Family::Inet).then_some((hook, c))
        })
        .collect();
    bases.sort_by_key(|(hook, c)| (*hook, c.base.as_ref().map_or(0, |b| b.priority)));
    let mut walk = Walk {
        rs,
        hook: Hook::Prerouting,
        found: Vec::new(),
        taken: Taken::default(),
        steps: 0,
    };
    for (hook, chain) in bases {
        walk.hook = hook;
        let path = Path {
            tcp: true,
            udp: true,
            v4: chain.family != Family::Ip6,
            v6: chain.family != Family::Ip,
            ports: Some(vec![EVERY_PORT]),
            daddr: Vec::new(),
            conditions: Vec::new(),
            chains: Vec::new(),
            comment: None,
        };
        walk.chain(chain, &path, 0);
    }
    merge_hooks(walk.found)
}

/// One forward per backend and conditions, with every hook it is reached at.
fn merge_hooks(found: Vec<Forward>) -> Vec<Forward> {
    let mut out: Vec<Forward> = Vec::with_capacity(found.len());
    let mut hooks: Vec<Vec<Hook>> = Vec::with_capacity(found.len());
    // By hash, so that no forward is cloned to be a key; `out` holds them
    // without their hooks until the end, so that `==` compares the rest.
    let mut index: HashMap<u64, Vec<usize>> = HashMap::new();
    let state = std::hash::RandomState::new();
    for mut f in found {
        let h = std::mem::take(&mut f.hooks);
        let same = index.entry(state.hash_one(&f)).or_default();
        match same.iter().find(|&&i| out[i] == f) {
            Some(&i) => hooks[i].extend(h),
            None => {
                same.push(out.len());
                out.push(f);
                hooks.push(h);
            }
        }
    }
    for (f, mut h) in out.iter_mut().zip(hooks) {
        h.sort_unstable();
        h.dedup();
        f.hooks = h;
    }
    out
}

/// The forwards that surely take every connection of their kind (no
/// condition but the port and address): a later forward of the same kind
/// whose ports they cover, with at least their address conditions, is never
/// reached (the first nat rule that takes a connection decides).
#[derive(Default)]
struct Taken {
    /// By port and the first address condition (`None`: none): a later
    /// forward looks only at the entries under its own conditions, not at
    /// every earlier one of its port (kube-proxy has a cluster IP on port 80
    /// per service).
    ones: HashMap<(Kind, u16, Option<Daddr>), Vec<Vec<Daddr>>>,
    ranges: Vec<(Kind, (u16, u16), Vec<Daddr>)>,
}

type Kind = (Hook, Family, Protocol);

impl Taken {
    fn add(&mut self, kind: Kind, port: HostPort, daddr: &[Daddr]) {
        match port {
            HostPort::One(p) => {
                let key = (kind, p, daddr.first().cloned());
                self.ones.entry(key).or_default().push(daddr.to_vec());
            }
            HostPort::Range(lo, hi) => self.ranges.push((kind, (lo, hi), daddr.to_vec())),
            HostPort::Unknown => {}
        }
    }

    fn covers(&self, kind: Kind, port: HostPort, daddr: &[Daddr]) -> bool {
        let wider = |earlier: &[Daddr]| earlier.iter().all(|c| daddr.contains(c));
        let (lo, hi) = match port {
            HostPort::One(p) => {
                let firsts = std::iter::once(None).chain(daddr.iter().cloned().map(Some));
                for first in firsts {
                    let earlier = self.ones.get(&(kind, p, first));
                    if earlier.is_some_and(|e| e.iter().any(|d| wider(d))) {
                        return true;
                    }
                }
                (p, p)
            }
            HostPort::Range(lo, hi) => (lo, hi),
            HostPort::Unknown => return false,
        };
        self.ranges
            .iter()
            .any(|(k, (a, b), d)| *k == kind && *a <= lo && hi <= *b && wider(d))
    }
}

struct Walk<'a> {
    rs: &'a Ruleset,
    hook: Hook,
    found: Vec<Forward>,
    taken: Taken,
    steps: u32,
}

impl<'a> Walk<'a> {
    fn chain(&mut self, chain: &'a Chain, path: &Path<'a>, depth: usize) -> Flow {
        self.steps += 1;
        if depth > MAX_DEPTH || self.steps > MAX_STEPS {
            return Flow::Next;
        }
        for rule in &chain.rules {
            match self.rule(chain, rule, path, depth) {
                Flow::Next => {}
                Flow::Return => return Flow::Next,
                Flow::Final => return Flow::Final,
            }
        }
        Flow::Next
    }

    /// One rule on `path`: how the chain goes on for every connection of
    /// the path (`Next` unless the rule took them all).
    fn rule(&mut self, chain: &'a Chain, rule: &'a Rule, path: &Path<'a>, depth: usize) -> Flow {
        let scope = (chain.family, chain.table.as_str());
        let mut p = path.clone();
        if rule.comment.is_some() {
            p.comment.clone_from(&rule.comment);
        }
        let mut narrowed = false;
        for stmt in &rule.stmts {
            if !p.possible() {
                return Flow::Next;
            }
            match stmt {
                Stmt::Match { op, left, right } => {
                    p.narrow(self.rs, scope, op, left, right);
                    narrowed = true;
                }
                Stmt::Neutral => {}
                Stmt::Xt { kind, name } if kind == "match" => {
                    p.conditions.push(match name.as_str() {
                        "statistic" => "chosen at random (iptables' statistic match)".into(),
                        n => format!("the iptables match '{n}' (not interpreted)"),
                    });
                    narrowed = true;
                }
                Stmt::Xt { name, .. } if name == "DNAT" || name == "REDIRECT" => {
                    let via = if name == "DNAT" {
                        Via::Dnat
                    } else {
                        Via::Redirect
                    };
                    let target = Target {
                        via,
                        family: None,
                        addr: None,
                        port: TargetPort::Unknown,
                    };
                    self.emit(chain, rule, &p, target);
                    return end(narrowed, Flow::Final);
                }
                Stmt::Xt { .. } | Stmt::Unknown(_) => {}
                Stmt::Nat(nat) => {
                    self.nat(chain, rule, &p, nat);
                    // A map takes only the connections of its keys.
                    let mapped = matches!(nat.addr, Some(Expr::Map { .. }));
                    return end(narrowed || mapped, Flow::Final);
                }
                Stmt::Verdict(v) => return self.verdict(chain, v, &p, depth, narrowed),
                Stmt::Vmap { key, data } => {
                    self.vmap(chain, (key, data), &p, depth);
                    return Flow::Next;
                }
            }
        }
        Flow::Next
    }

    fn verdict(
        &mut self,
        chain: &'a Chain,
        v: &'a Verdict,
        p: &Path<'a>,
        depth: usize,
        narrowed: bool,
    ) -> Flow {
        match v {
            Verdict::Continue => Flow::Next,
            Verdict::Return => end(narrowed, Flow::Return),
            Verdict::Jump(t) | Verdict::Goto(t) => {
                let Some(next) = self.rs.chain(chain.family, &chain.table, t) else {
                    return Flow::Next;
                };
                let mut p = p.clone();
                p.chains.push(t.as_str());
                let flow = self.chain(next, &p, depth + 1);
                match (v, flow) {
                    (_, Flow::Final) => end(narrowed, Flow::Final),
                    (Verdict::Goto(_), _) => end(narrowed, Flow::Return),
                    _ => Flow::Next,
                }
            }
            _ => end(narrowed, Flow::Final),
        }
    }

    /// `KEY vmap { … }`: each element a path of its own.
    fn vmap(
        &mut self,
        chain: &'a Chain,
        (key, data): (&Expr, &'a Expr),
        p: &Path<'a>,
        depth: usize,
    ) {
        let Some(items) = self.elements(chain, data) else {
            return;
        };
        for item in items {
            let Expr::Mapping(k, v) = item else { continue };
            let mut q = p.clone();
            self.narrow_by_key(chain, &mut q, key, k);
            if q.possible() {
                self.verdict(chain, v, &q, depth, true);
            }
        }
    }

    fn elements(&self, chain: &Chain, data: &'a Expr) -> Option<&'a [Expr]> {
        match data {
            Expr::Set(items) => Some(items),
            Expr::SetRef(name) => self.rs.set(chain.family, &chain.table, name),
            _ => None,
        }
    }

    /// The path of a map's element: its key equals the element's.
    fn narrow_by_key(&self, chain: &Chain, q: &mut Path<'a>, key: &Expr, k: &Expr) {
        let scope = (chain.family, chain.table.as_str());
        match (key, k) {
            (Expr::Concat(parts), Expr::Concat(values)) if parts.len() == values.len() => {
                for (part, value) in parts.iter().zip(values) {
                    q.narrow(self.rs, scope, "==", part, value);
                }
            }
            _ => q.narrow(self.rs, scope, "==", key, k),
        }
    }

    /// A `dnat` or `redirect` statement: its target, or each of its map's.
    fn nat(&mut self, chain: &'a Chain, rule: &'a Rule, p: &Path<'a>, nat: &Nat) {
        let port = match &nat.port {
            None => TargetPort::Same,
            Some(Expr::Num(n)) => u16::try_from(*n).map_or(TargetPort::Unknown, TargetPort::Port),
            Some(Expr::Range(a, b)) if a == b => match a.as_ref() {
                Expr::Num(n) => u16::try_from(*n).map_or(TargetPort::Unknown, TargetPort::Port),
                _ => TargetPort::Unknown,
            },
            Some(_) => TargetPort::Unknown,
        };
        let via = match nat.kind {
            NatKind::Dnat => Via::Dnat,
            NatKind::Redirect => Via::Redirect,
        };
        let target = |addr, port| Target {
            via,
            family: nat.family,
            addr,
            port,
        };
        match &nat.addr {
            None if via == Via::Redirect => self.emit(chain, rule, p, target(None, port)),
            Some(Expr::Str(a)) => self.emit(chain, rule, p, target(a.parse().ok(), port)),
            Some(Expr::Map { key, data }) => match self.elements(chain, data) {
                Some(items) => {
                    for item in items {
                        let Expr::List(kv) = item else { continue };
                        let [k, v] = kv.as_slice() else { continue };
                        let mut q = p.clone();
                        self.narrow_by_key(chain, &mut q, key, k);
                        let (addr, port) = mapped(v, port);
                        if q.possible() {
                            self.emit(chain, rule, &q, target(addr, port));
                        }
                    }
                }
                None => self.emit(chain, rule, p, target(None, TargetPort::Unknown)),
            },
            _ => self.emit(chain, rule, p, target(None, TargetPort::Unknown)),
        }
    }

    /// The forwards of one path to one target.
    fn emit(&mut self, chain: &Chain, rule: &Rule, p: &Path<'_>, t: Target) {
        let families = families(chain.family, p, &t);
        let protocols = [(p.tcp, Protocol::Tcp), (p.udp, Protocol::Udp)];
        let text = self
            .rs
            .rule_text(chain, rule.handle)
            .unwrap_or(t.via.as_str());
        let text: Vec<&str> = text.split_whitespace().collect();
        let rule_text = format!(
            "{} {} {}, handle {}: {}",
            chain.family.as_str(),
            chain.table,
            chain.name,
            rule.handle,
            text.join(" ")
        );
        let mut conditions = p.conditions.clone();
        if t.addr.is_none() && t.via == Via::Dnat {
            conditions.push("the target is not interpreted".into());
        }
        for (family, backend_addr) in families {
            for &(on, protocol) in &protocols {
                if !on {
                    continue;
                }
                for port in host_ports(&p.ports) {
                    let backend_port = match (t.port, port) {
                        (TargetPort::Port(x), _) => Some(x),
                        (TargetPort::Same, HostPort::One(x)) => Some(x),
                        _ => None,
                    };
                    let kind = (self.hook, family, protocol);
                    if self.taken.covers(kind, port, &p.daddr) || self.found.len() >= MAX_FORWARDS {
                        continue;
                    }
                    if conditions.is_empty() {
                        self.taken.add(kind, port, &p.daddr);
                    }
                    self.found.push(Forward {
                        protocol,
                        port,
                        via: t.via,
                        family,
                        backend_addr,
                        backend_port,
                        daddr: p.daddr.clone(),
                        conditions: conditions.clone(),
                        hooks: vec![self.hook],
                        chains: p.chains.iter().map(|c| (*c).to_string()).collect(),
                        rule: Some(rule_text.clone()),
                        comment: p.comment.clone(),
                        pid: None,
                        process: None,
                    });
                }
            }
        }
    }
}

/// A rule that did not narrow the path ends it as its verdict says;
/// otherwise the chain goes on for the connections it did not take.
fn end(narrowed: bool, flow: Flow) -> Flow {
    if narrowed { Flow::Next } else { flow }
}

/// A map element's value: `10.77.50.7 . 80` or `10.77.50.7`.
fn mapped(v: &Expr, port: TargetPort) -> (Option<IpAddr>, TargetPort) {
    let addr = |e: &Expr| match e {
        Expr::Str(s) => s.parse().ok(),
        _ => None,
    };
    match v {
        Expr::Concat(parts) => match parts.as_slice() {
            [a, Expr::Num(n)] => (
                addr(a),
                u16::try_from(*n).map_or(TargetPort::Unknown, TargetPort::Port),
            ),
            _ => (None, TargetPort::Unknown),
        },
        e => (addr(e), port),
    }
}

/// The families of the connections a path's target takes, each with its
/// backend address (a redirect's: the family's loopback address).
fn families(table: Family, p: &Path<'_>, t: &Target) -> Vec<(Family, Option<IpAddr>)> {
    let by_addr = t.addr.map(|a| a.is_ipv4());
    let by_stmt = match t.family {
        Some(Family::Ip) => Some(true),
        Some(Family::Ip6) => Some(false),
        _ => None,
    };
    let mut out = Vec::new();
    for (v4, family, lo) in [
        (true, Family::Ip, IpAddr::V4(Ipv4Addr::LOCALHOST)),
        (false, Family::Ip6, IpAddr::V6(Ipv6Addr::LOCALHOST)),
    ] {
        let possible = if v4 { p.v4 } else { p.v6 }
            && by_addr.is_none_or(|a| a == v4)
            && by_stmt.is_none_or(|s| s == v4);
        if possible {
            let addr = if t.via == Via::Redirect {
                Some(lo)
            } else {
                t.addr
            };
            out.push((family, addr));
        }
    }
    // A dnat whose address is not known, in an `inet` table: one forward
    // for both families.
    if t.via == Via::Dnat && t.addr.is_none() && out.len() == 2 && table == Family::Inet {
        return vec![(Family::Inet, None)];
    }
    out
}

/// The host ports of a path: each port of a narrow range, a wide range
/// whole, or not known.
fn host_ports(ports: &Ports) -> Vec<HostPort> {
    let Some(ranges) = ports else {
        return vec![HostPort::Unknown];
    };
    let mut out = Vec::new();
    for &(lo, hi) in ranges {
        if u32::from(hi) - u32::from(lo) < EXPAND {
            out.extend((lo..=hi).map(HostPort::One));
        } else {
            out.push(HostPort::Range(lo, hi));
        }
    }
    out
}

#[cfg(test)]
mod tests;
