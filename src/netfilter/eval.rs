//! The matcher: a packet through the base chains of each hook on its path,
//! in priority order, following jumps, gotos and verdict maps, with three
//! answers per expression: it matches, it does not, or it may (a field not
//! known, such as a peer's source address, or an expression portsight does
//! not interpret). Pure and total: any ruleset, however odd, gives an answer.

use std::cmp::Ordering;
use std::net::IpAddr;

use ipnet::IpNet;

use super::packet::{Hook, Iface, Packet};
use super::ruleset::{Chain, Expr, Family, Rule, Ruleset, Stmt, Verdict};

/// Three-valued logic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tri {
    Yes,
    No,
    Maybe,
}

impl Tri {
    fn of(b: bool) -> Tri {
        if b { Tri::Yes } else { Tri::No }
    }

    fn not(self) -> Tri {
        match self {
            Tri::Yes => Tri::No,
            Tri::No => Tri::Yes,
            Tri::Maybe => Tri::Maybe,
        }
    }

    fn and(self, other: Tri) -> Tri {
        match (self, other) {
            (Tri::No, _) | (_, Tri::No) => Tri::No,
            (Tri::Yes, Tri::Yes) => Tri::Yes,
            _ => Tri::Maybe,
        }
    }

    fn any(items: impl IntoIterator<Item = Tri>) -> Tri {
        let mut out = Tri::No;
        for t in items {
            match t {
                Tri::Yes => return Tri::Yes,
                Tri::Maybe => out = Tri::Maybe,
                Tri::No => {}
            }
        }
        out
    }
}

/// A value of the packet.
#[derive(Debug, Clone, PartialEq)]
enum Datum {
    Addr(IpAddr),
    Num(u64),
    Str(String),
    /// A string known to differ from this one (an interface that is not `lo`).
    NotStr(String),
    /// Components of a concatenation; `None` where not known.
    Concat(Vec<Option<Datum>>),
}

/// What the packet has in a field a rule looks at.
#[derive(Debug, Clone, PartialEq)]
enum Field {
    Known(Datum),
    /// It has the field, but its value is not known here.
    Unknown,
    /// It does not have the field (an IPv6 header on an IPv4 packet, no
    /// input interface at `output`): the expression fails, whatever its op.
    Absent,
}

/// The packet at one hook.
struct At<'a> {
    packet: &'a Packet,
    hook: Hook,
}

impl At<'_> {
    fn field(&self, e: &Expr) -> Field {
        use Field::{Absent, Known, Unknown};
        let p = self.packet;
        match e {
            Expr::Payload { protocol, field } => self.payload(protocol, field),
            Expr::Meta(key) => match key.as_str() {
                "l4proto" => Known(Datum::Num(p.l4proto.into())),
                "nfproto" => Known(Datum::Str(if p.is_v4() { "ipv4" } else { "ipv6" }.into())),
                "protocol" => Known(Datum::Str(if p.is_v4() { "ip" } else { "ip6" }.into())),
                "iif" | "iifname" => iface(p.iif(self.hook)),
                "oif" | "oifname" => iface(p.oif(self.hook)),
                "pkttype" => Known(Datum::Str("host".into())),
                _ => Unknown,
            },
            Expr::Ct(key) => match key.as_str() {
                "state" => Known(Datum::Str("new".into())),
                "direction" => Known(Datum::Str("original".into())),
                _ => Unknown,
            },
            Expr::Fib { result, flags } if result == "type" && flags == &["daddr"] => {
                match p.daddr_local {
                    Some(true) => Known(Datum::Str("local".into())),
                    _ => Unknown,
                }
            }
            Expr::Concat(parts) => {
                let mut out = Vec::new();
                for part in parts {
                    match self.field(part) {
                        Known(d) => out.push(Some(d)),
                        Unknown => out.push(None),
                        Absent => return Absent,
                    }
                }
                Known(Datum::Concat(out))
            }
            _ => Unknown,
        }
    }

    fn payload(&self, protocol: &str, field: &str) -> Field {
        let p = self.packet;
        let addr = |a: Option<IpAddr>| a.map_or(Field::Unknown, |a| Field::Known(Datum::Addr(a)));
        match (protocol, field, p.is_v4()) {
            ("ip", "saddr", true) | ("ip6", "saddr", false) => addr(p.saddr),
            ("ip", "daddr", true) | ("ip6", "daddr", false) => {
                addr(p.daddr_local.is_some().then_some(p.daddr))
            }
            ("ip", "protocol", true) | ("ip6", "nexthdr", false) => {
                Field::Known(Datum::Num(p.l4proto.into()))
            }
            ("ip", _, false) | ("ip6", _, true) => Field::Absent,
            ("tcp" | "udp" | "th", "dport", _)
                if protocol == "th" || l4_number(protocol) == Some(p.l4proto.into()) =>
            {
                Field::Known(Datum::Num(p.dport.into()))
            }
            ("tcp" | "udp" | "th" | "sctp" | "dccp" | "udplite", _, _) => {
                let ours = protocol == "th" || l4_number(protocol) == Some(p.l4proto.into());
                if ours { Field::Unknown } else { Field::Absent }
            }
            _ => Field::Unknown,
        }
    }
}

/// `ip saddr`, `meta mark`, `ct mark`: what a rule looks at, for words.
pub(super) fn field_name(e: &Expr) -> String {
    match e {
        Expr::Payload { protocol, field } => format!("{protocol} {field}"),
        Expr::Meta(key) => format!("meta {key}"),
        Expr::Ct(key) => format!("ct {key}"),
        Expr::Numgen(mode) => format!("numgen {mode}"),
        Expr::Fib { result, flags } => format!("fib {} {result}", flags.join(" . ")),
        Expr::Concat(parts) => parts.iter().map(field_name).collect::<Vec<_>>().join(" . "),
        _ => "an expression portsight does not interpret".into(),
    }
}

fn iface(i: Iface) -> Field {
    match i {
        Iface::Named(n) => Field::Known(Datum::Str(n)),
        Iface::NotLoopback => Field::Known(Datum::NotStr("lo".into())),
        Iface::Absent => Field::Absent,
    }
}

fn l4_number(name: &str) -> Option<u64> {
    Some(match name {
        "icmp" => 1,
        "tcp" => 6,
        "udp" => 17,
        "gre" => 47,
        "esp" => 50,
        "ah" => 51,
        "ipv6-icmp" | "icmpv6" => 58,
        "sctp" => 132,
        "dccp" => 33,
        "udplite" => 136,
        _ => return None,
    })
}

/// The rule set a rule is in, for its named sets.
struct Scope<'a> {
    rs: &'a Ruleset,
    family: Family,
    table: &'a str,
}

impl Scope<'_> {
    /// Whether `d` is in `pattern`: equal to a literal, in a range, prefix,
    /// set or named set.
    fn member(&self, d: &Datum, pattern: &Expr, depth: u8) -> Tri {
        if depth > 8 {
            return Tri::Maybe;
        }
        match pattern {
            Expr::Set(items) | Expr::List(items) => {
                Tri::any(items.iter().map(|i| self.member(d, i, depth + 1)))
            }
            Expr::SetRef(name) => match self.rs.set(self.family, self.table, name) {
                Some(items) => Tri::any(items.iter().map(|i| self.member(d, i, depth + 1))),
                None => Tri::Maybe,
            },
            Expr::Mapping(key, _) => self.member(d, key, depth + 1),
            Expr::Range(lo, hi) => match (compare(d, lo), compare(d, hi)) {
                (Some(a), Some(b)) => Tri::of(a != Ordering::Less && b != Ordering::Greater),
                _ => Tri::Maybe,
            },
            Expr::Prefix(net, len) => match (d, IpNet::new(*net, *len)) {
                (Datum::Addr(a), Ok(n)) => Tri::of(n.contains(a)),
                _ => Tri::Maybe,
            },
            Expr::Concat(parts) => match d {
                Datum::Concat(have) if have.len() == parts.len() => {
                    have.iter().zip(parts).fold(Tri::Yes, |acc, (h, p)| {
                        acc.and(
                            h.as_ref()
                                .map_or(Tri::Maybe, |h| self.member(h, p, depth + 1)),
                        )
                    })
                }
                _ => Tri::Maybe,
            },
            literal => equal(d, literal),
        }
    }

    fn matches(&self, at: &At, op: &str, left: &Expr, right: &Expr) -> Tri {
        let d = match at.field(left) {
            Field::Known(d) => d,
            Field::Unknown => return Tri::Maybe,
            Field::Absent => return Tri::No,
        };
        match op {
            "==" | "in" => self.member(&d, right, 0),
            "!=" => self.member(&d, right, 0).not(),
            "<" | ">" | "<=" | ">=" => match compare(&d, right) {
                Some(o) => Tri::of(match op {
                    "<" => o == Ordering::Less,
                    ">" => o == Ordering::Greater,
                    "<=" => o != Ordering::Greater,
                    _ => o != Ordering::Less,
                }),
                None => Tri::Maybe,
            },
            _ => Tri::Maybe,
        }
    }
}

fn equal(d: &Datum, literal: &Expr) -> Tri {
    match (d, literal) {
        (Datum::Str(s), Expr::Str(l)) => match l.strip_suffix('*') {
            Some(prefix) => Tri::of(s.starts_with(prefix)),
            None => Tri::of(s == l),
        },
        (Datum::NotStr(s), Expr::Str(l)) if s == l => Tri::No,
        (Datum::NotStr(_), _) => Tri::Maybe,
        (Datum::Num(n), Expr::Str(l)) => l4_number(l).map_or(Tri::Maybe, |x| Tri::of(*n == x)),
        _ => compare(d, literal).map_or(Tri::Maybe, |o| Tri::of(o == Ordering::Equal)),
    }
}

fn compare(d: &Datum, literal: &Expr) -> Option<Ordering> {
    match (d, literal) {
        (Datum::Num(n), Expr::Num(l)) => Some(n.cmp(l)),
        (Datum::Addr(a), Expr::Str(l)) => {
            let l: IpAddr = l.parse().ok()?;
            (a.is_ipv4() == l.is_ipv4()).then(|| a.cmp(&l))
        }
        _ => None,
    }
}

/// The rule that decided, or might have.
#[derive(Debug, Clone, PartialEq)]
pub struct Hit<'a> {
    pub chain: &'a Chain,
    /// `None`: the chain's policy.
    pub rule: Option<&'a Rule>,
    /// `Drop` or `Reject` (or `Accept`, for what only may have let it through).
    pub verdict: Verdict,
    /// Why it only may have matched; `None` when it did.
    pub maybe: Option<String>,
}

/// How a chain ended for the packet.
enum Flow<'a> {
    /// Fell off the end, or `return`.
    Next,
    Decided(Hit<'a>),
}

/// The packet's path through `rs`: the rule or policy that drops or rejects
/// it, if one surely does, after every rule that may have first.
pub fn evaluate<'a>(rs: &'a Ruleset, packet: &Packet) -> Vec<Hit<'a>> {
    let mut found = Vec::new();
    for &hook in packet.path() {
        let at = At { packet, hook };
        let mut chains: Vec<&Chain> = rs
            .chains
            .iter()
            .filter(|c| applies(c, packet, hook))
            .collect();
        chains.sort_by_key(|c| c.base.as_ref().map_or(0, |b| b.priority));
        for chain in chains {
            let mut walk = Walk {
                rs,
                at: &at,
                maybe: Vec::new(),
                steps: 0,
            };
            let flow = walk.chain(chain, 0, None);
            found.append(&mut walk.maybe);
            let policy_drop = chain.base.as_ref().is_some_and(|b| b.policy_drop);
            match flow {
                Flow::Decided(hit) if hit.verdict == Verdict::Accept => {}
                Flow::Decided(hit) => {
                    found.push(hit);
                    return found;
                }
                Flow::Next if policy_drop => {
                    found.push(Hit {
                        chain,
                        rule: None,
                        verdict: Verdict::Drop,
                        maybe: None,
                    });
                    return found;
                }
                Flow::Next => {}
            }
        }
    }
    found
}

/// Whether `c` is a filtering base chain at `hook` for the packet's family.
fn applies(c: &Chain, packet: &Packet, hook: Hook) -> bool {
    let family = match c.family {
        Family::Inet => true,
        Family::Ip => packet.is_v4(),
        Family::Ip6 => !packet.is_v4(),
        _ => false,
    };
    family
        && c.base
            .as_ref()
            .is_some_and(|b| b.hook == hook.as_str() && b.kind != "nat")
}

/// One walk through a chain and the chains it jumps to, collecting the
/// rules that may have dropped the packet.
struct Walk<'a, 'p> {
    rs: &'a Ruleset,
    at: &'p At<'p>,
    maybe: Vec<Hit<'a>>,
    /// Chains walked so far: walks that only may happen branch, and a
    /// ruleset of loops could make them many.
    steps: u32,
}

/// As deep as the kernel lets jumps go.
const MAX_DEPTH: u8 = 16;

/// At most this many chains walked per base chain.
const MAX_STEPS: u32 = 4096;

impl<'a> Walk<'a, '_> {
    /// Walks `chain`. With `maybe` set (the reason), the walk only may
    /// happen: what it finds is noted, never decided.
    fn chain(&mut self, chain: &'a Chain, depth: u8, maybe: Option<&str>) -> Flow<'a> {
        self.steps += 1;
        if depth > MAX_DEPTH || self.steps > MAX_STEPS {
            return Flow::Next;
        }
        for rule in &chain.rules {
            match self.rule(chain, rule, depth, maybe) {
                Some(Flow::Decided(hit)) => return Flow::Decided(hit),
                Some(Flow::Next) => return Flow::Next,
                None => {}
            }
        }
        Flow::Next
    }

    /// `None`: go on with the next rule.
    fn rule(
        &mut self,
        chain: &'a Chain,
        rule: &'a Rule,
        depth: u8,
        outer: Option<&str>,
    ) -> Option<Flow<'a>> {
        let scope = Scope {
            rs: self.rs,
            family: chain.family,
            table: &chain.table,
        };
        let mut why: Option<String> = outer.map(str::to_string);
        for stmt in &rule.stmts {
            let (t, reason) = match stmt {
                Stmt::Match { op, left, right } => (
                    scope.matches(self.at, op, left, right),
                    format!("{} of the packet is not known here", field_name(left)),
                ),
                // A nat statement is only in a nat chain, which this walk
                // of the filtering chains never enters.
                Stmt::Neutral | Stmt::Nat(_) => continue,
                Stmt::Unknown(name) => (
                    Tri::Maybe,
                    format!("the statement '{name}' is not interpreted"),
                ),
                Stmt::Xt { kind, name } if kind == "target" => {
                    let why = why.unwrap_or_else(|| {
                        format!("the iptables target '{name}' is not interpreted: it may drop the packet")
                    });
                    self.maybe.push(Hit {
                        chain,
                        rule: Some(rule),
                        verdict: Verdict::Drop,
                        maybe: Some(why),
                    });
                    return None;
                }
                Stmt::Xt { kind, name } => (
                    Tri::Maybe,
                    format!("the iptables {kind} '{name}' is not interpreted"),
                ),
                Stmt::Verdict(v) => {
                    return self.verdict(chain, rule, v.clone(), depth, why);
                }
                Stmt::Vmap { key, data } => {
                    return self.vmap(&scope, chain, rule, (key, data), depth, why);
                }
            };
            match t {
                Tri::No => return None,
                Tri::Maybe => {
                    why.get_or_insert(reason);
                }
                Tri::Yes => {}
            }
        }
        None
    }

    fn verdict(
        &mut self,
        chain: &'a Chain,
        rule: &'a Rule,
        v: Verdict,
        depth: u8,
        why: Option<String>,
    ) -> Option<Flow<'a>> {
        let hit = |verdict, maybe| Hit {
            chain,
            rule: Some(rule),
            verdict,
            maybe,
        };
        match v {
            Verdict::Accept | Verdict::Drop | Verdict::Reject => match why {
                None => Some(Flow::Decided(hit(v, None))),
                Some(why) => {
                    if v != Verdict::Accept {
                        self.maybe.push(hit(v, Some(why)));
                    }
                    None
                }
            },
            Verdict::Queue => {
                let why = why.unwrap_or_else(|| "a userspace program decides (queue)".into());
                self.maybe.push(hit(v, Some(why)));
                None
            }
            Verdict::Continue => None,
            Verdict::Return => why.is_none().then_some(Flow::Next),
            Verdict::Jump(target) | Verdict::Goto(target) if why.is_some() => {
                let next = self.rs.chain(chain.family, &chain.table, &target)?;
                self.chain(next, depth + 1, why.as_deref());
                None
            }
            Verdict::Jump(target) => {
                let next = self.rs.chain(chain.family, &chain.table, &target)?;
                match self.chain(next, depth + 1, None) {
                    Flow::Decided(hit) => Some(Flow::Decided(hit)),
                    Flow::Next => None,
                }
            }
            Verdict::Goto(target) => {
                let next = self.rs.chain(chain.family, &chain.table, &target)?;
                Some(self.chain(next, depth + 1, None))
            }
        }
    }

    /// `KEY vmap { … }`: the verdict of the element the key matches;
    /// elements it may match are walked as maybes.
    fn vmap(
        &mut self,
        scope: &Scope,
        chain: &'a Chain,
        rule: &'a Rule,
        (key, data): (&Expr, &'a Expr),
        depth: u8,
        why: Option<String>,
    ) -> Option<Flow<'a>> {
        let items: &'a [Expr] = match data {
            Expr::Set(items) => items,
            Expr::SetRef(name) => self.rs.set(chain.family, &chain.table, name)?,
            _ => return None,
        };
        let d = match self.at.field(key) {
            Field::Known(d) => Some(d),
            Field::Unknown => None,
            Field::Absent => return None,
        };
        for item in items {
            let Expr::Mapping(k, v) = item else { continue };
            let t = d.as_ref().map_or(Tri::Maybe, |d| scope.member(d, k, 0));
            let why = match t {
                Tri::No => continue,
                Tri::Yes => why.clone(),
                Tri::Maybe => why
                    .clone()
                    .or_else(|| Some("a field of the packet not known here".into())),
            };
            let certain = why.is_none();
            let flow = self.verdict(chain, rule, v.clone(), depth, why);
            if certain {
                return flow;
            }
        }
        None
    }
}
