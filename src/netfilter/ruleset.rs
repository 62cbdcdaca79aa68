//! The ruleset as `nft -j list ruleset` prints it, parsed into typed values.
//! Tolerant by design: an object portsight does not know (a flowtable, a
//! newer schema's shape) is skipped and counted, and an expression or
//! statement it does not know becomes `Unknown`, which the matcher treats as
//! "may match". Nothing here fails on odd input but the outer document.

use std::collections::HashMap;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::Error;

/// An nftables table family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    Ip,
    Ip6,
    Inet,
    Arp,
    Bridge,
    Netdev,
}

impl Family {
    pub fn as_str(self) -> &'static str {
        match self {
            Family::Ip => "ip",
            Family::Ip6 => "ip6",
            Family::Inet => "inet",
            Family::Arp => "arp",
            Family::Bridge => "bridge",
            Family::Netdev => "netdev",
        }
    }

    pub fn parse(s: &str) -> Option<Family> {
        serde_json::from_value(Value::String(s.to_string())).ok()
    }
}

/// A chain's identity: family, table, name.
pub type ChainKey = (Family, String, String);

/// What makes a chain a base chain.
#[derive(Debug, Clone, PartialEq)]
pub struct Base {
    /// `filter`, `nat`, `route`.
    pub kind: String,
    pub hook: String,
    pub priority: i64,
    /// `true` for `policy drop`.
    pub policy_drop: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Chain {
    pub family: Family,
    pub table: String,
    pub name: String,
    pub base: Option<Base>,
    pub rules: Vec<Rule>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    pub handle: u64,
    pub comment: Option<String>,
    pub stmts: Vec<Stmt>,
}

/// A verdict, as a statement or as the data of a verdict map.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Accept,
    Drop,
    Reject,
    Continue,
    Return,
    Jump(String),
    Goto(String),
    /// `queue`: decided by a userspace program.
    Queue,
}

/// A statement of a rule.
#[derive(Debug, Clone, PartialEq)]
pub enum Stmt {
    Match {
        op: String,
        left: Expr,
        right: Expr,
    },
    Verdict(Verdict),
    /// `KEY vmap { … }` or `KEY vmap @map`.
    Vmap {
        key: Expr,
        data: Expr,
    },
    /// An iptables extension through iptables-nft: `match` or `target`, and its name.
    Xt {
        kind: String,
        name: String,
    },
    /// `dnat to …`, `redirect to :…`: ends the rule's walk in a nat chain.
    Nat(Nat),
    /// A statement that neither filters nor decides (counter, log, …).
    Neutral,
    /// A statement portsight does not interpret, by its name: it may stop the rule.
    Unknown(String),
}

/// Which nat statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NatKind {
    Dnat,
    Redirect,
}

/// A destination nat statement: `dnat ip to 10.77.50.2:80`, `dnat to
/// tcp dport map { 8100 : 10.77.50.7 . 80 }`, `redirect to :22`.
#[derive(Debug, Clone, PartialEq)]
pub struct Nat {
    pub kind: NatKind,
    /// `dnat ip to` / `dnat ip6 to` (an `inet` table's).
    pub family: Option<Family>,
    /// The new address: a literal, or a map from a packet field; `None`
    /// for a redirect.
    pub addr: Option<Expr>,
    /// The new port (a number or a range); `None`: the packet's own.
    pub port: Option<Expr>,
}

/// An expression: the left side of a match (what to look at in the packet)
/// or the right side (what to compare it with).
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    Num(u64),
    Str(String),
    /// A named set or map: `@name`.
    SetRef(String),
    /// A JSON array: a list of flags (`ct state established,related`).
    List(Vec<Expr>),
    /// An anonymous set or map.
    Set(Vec<Expr>),
    Range(Box<Expr>, Box<Expr>),
    Prefix(IpAddr, u8),
    Concat(Vec<Expr>),
    /// A map element: key and verdict.
    Mapping(Box<Expr>, Verdict),
    /// `KEY map { … }` or `KEY map @name`: the value of the key's element.
    Map {
        key: Box<Expr>,
        data: Box<Expr>,
    },
    Payload {
        protocol: String,
        field: String,
    },
    Meta(String),
    Ct(String),
    /// `numgen random mod 2`: a number the kernel draws, by its mode.
    Numgen(String),
    Fib {
        result: String,
        flags: Vec<String>,
    },
    Unknown,
}

/// The ruleset of one network namespace.
#[derive(Debug, Clone, Default)]
pub struct Ruleset {
    pub chains: Vec<Chain>,
    index: HashMap<ChainKey, usize>,
    /// Named sets' and maps' elements.
    sets: HashMap<ChainKey, Vec<Expr>>,
    /// Each rule's text as `nft -a list ruleset` prints it, by chain and handle.
    pub text: HashMap<(ChainKey, u64), String>,
    /// Tables written by iptables-nft.
    pub iptables: Vec<(Family, String)>,
    /// Objects of the JSON that portsight did not understand.
    pub skipped: usize,
}

impl Ruleset {
    pub fn chain(&self, family: Family, table: &str, name: &str) -> Option<&Chain> {
        let key = (family, table.to_string(), name.to_string());
        self.index.get(&key).map(|&i| &self.chains[i])
    }

    pub fn set(&self, family: Family, table: &str, name: &str) -> Option<&[Expr]> {
        let key = (family, table.to_string(), name.to_string());
        self.sets.get(&key).map(Vec::as_slice)
    }

    pub fn rule_text(&self, chain: &Chain, handle: u64) -> Option<&str> {
        let key = (chain.family, chain.table.clone(), chain.name.clone());
        self.text.get(&(key, handle)).map(String::as_str)
    }

    pub fn managed_by_iptables(&self, family: Family, table: &str) -> bool {
        self.iptables
            .iter()
            .any(|(f, t)| *f == family && t == table)
    }
}

#[derive(Deserialize)]
struct Document {
    nftables: Vec<Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "lowercase")]
enum Object {
    Chain(ChainJson),
    Rule(RuleJson),
    Set(SetJson),
    Map(SetJson),
    Table(serde::de::IgnoredAny),
    Metainfo(serde::de::IgnoredAny),
}

#[derive(Deserialize)]
struct ChainJson {
    family: Family,
    table: String,
    name: String,
    #[serde(rename = "type")]
    kind: Option<String>,
    hook: Option<String>,
    prio: Option<Value>,
    policy: Option<String>,
}

#[derive(Deserialize)]
struct RuleJson {
    family: Family,
    table: String,
    chain: String,
    handle: u64,
    comment: Option<String>,
    #[serde(default)]
    expr: Vec<Value>,
}

#[derive(Deserialize)]
struct SetJson {
    family: Family,
    table: String,
    name: String,
    #[serde(default)]
    elem: Vec<Value>,
}

/// Parses the output of `nft -j list ruleset`. Fails only when it is not
/// that document at all; everything inside it that is not understood is
/// skipped (objects) or kept as `Unknown` (expressions, statements).
pub fn parse(json: &[u8]) -> Result<Ruleset, Error> {
    let doc: Document = serde_json::from_slice(json).map_err(|e| Error::Json(e.to_string()))?;
    let mut rs = Ruleset::default();
    let mut rules = Vec::new();
    for v in doc.nftables {
        match serde_json::from_value::<Object>(v) {
            Ok(Object::Chain(c)) => add_chain(&mut rs, c),
            Ok(Object::Rule(r)) => rules.push(r),
            Ok(Object::Set(s) | Object::Map(s)) => {
                let elems = s.elem.iter().map(expr).collect();
                rs.sets.insert((s.family, s.table, s.name), elems);
            }
            Ok(Object::Table(_) | Object::Metainfo(_)) => {}
            Err(_) => rs.skipped += 1,
        }
    }
    for r in rules {
        let key = (r.family, r.table, r.chain);
        let Some(&i) = rs.index.get(&key) else {
            rs.skipped += 1;
            continue;
        };
        rs.chains[i].rules.push(Rule {
            handle: r.handle,
            comment: r.comment,
            stmts: r.expr.iter().map(stmt).collect(),
        });
    }
    Ok(rs)
}

fn add_chain(rs: &mut Ruleset, c: ChainJson) {
    let base = match (c.kind, c.hook) {
        (Some(kind), Some(hook)) => Some(Base {
            kind,
            hook,
            priority: c.prio.as_ref().and_then(Value::as_i64).unwrap_or(0),
            policy_drop: c.policy.as_deref() == Some("drop"),
        }),
        _ => None,
    };
    let key = (c.family, c.table.clone(), c.name.clone());
    rs.index.insert(key, rs.chains.len());
    rs.chains.push(Chain {
        family: c.family,
        table: c.table,
        name: c.name,
        base,
        rules: Vec::new(),
    });
}

/// The one key and its value of a JSON object such as `{"match": {…}}`.
fn single(v: &Value) -> Option<(&str, &Value)> {
    let o = v.as_object()?;
    if o.len() != 1 {
        return None;
    }
    o.iter().next().map(|(k, v)| (k.as_str(), v))
}

fn stmt(v: &Value) -> Stmt {
    let Some((name, body)) = single(v) else {
        return Stmt::Unknown("?".into());
    };
    if let Some(verdict) = verdict(v) {
        return Stmt::Verdict(verdict);
    }
    match name {
        "match" => Stmt::Match {
            op: body["op"].as_str().unwrap_or("==").to_string(),
            left: expr(&body["left"]),
            right: expr(&body["right"]),
        },
        "vmap" => Stmt::Vmap {
            key: expr(&body["key"]),
            data: expr(&body["data"]),
        },
        "xt" => Stmt::Xt {
            kind: body["type"].as_str().unwrap_or("?").to_string(),
            name: body["name"].as_str().unwrap_or("?").to_string(),
        },
        "dnat" | "redirect" => Stmt::Nat(nat(name, body)),
        "counter" | "log" | "mangle" | "notrack" | "set" | "flow" | "ct helper" => Stmt::Neutral,
        other => Stmt::Unknown(other.to_string()),
    }
}

/// `{"dnat": {"family": "ip", "addr": "10.77.50.2", "port": 80}}`,
/// `{"redirect": {"port": 22}}`, `{"redirect": null}`.
fn nat(name: &str, body: &Value) -> Nat {
    let field = |k: &str| body.get(k).map(expr);
    Nat {
        kind: if name == "dnat" {
            NatKind::Dnat
        } else {
            NatKind::Redirect
        },
        family: body["family"].as_str().and_then(Family::parse),
        addr: field("addr"),
        port: field("port"),
    }
}

/// `{"accept": null}`, `{"jump": {"target": "x"}}`, `{"reject": {…}}`, …
fn verdict(v: &Value) -> Option<Verdict> {
    let (name, body) = single(v)?;
    let target = || body["target"].as_str().map(str::to_string);
    Some(match name {
        "accept" => Verdict::Accept,
        "drop" => Verdict::Drop,
        "reject" => Verdict::Reject,
        "continue" => Verdict::Continue,
        "return" => Verdict::Return,
        "queue" => Verdict::Queue,
        "jump" => Verdict::Jump(target()?),
        "goto" => Verdict::Goto(target()?),
        _ => return None,
    })
}

fn expr(v: &Value) -> Expr {
    match v {
        Value::Number(n) => n.as_u64().map_or(Expr::Unknown, Expr::Num),
        Value::String(s) => match s.strip_prefix('@') {
            Some(name) => Expr::SetRef(name.to_string()),
            None => Expr::Str(s.clone()),
        },
        Value::Array(items) => match items.as_slice() {
            [key, data] if verdict(data).is_some() => Expr::Mapping(
                Box::new(expr(key)),
                verdict(data).unwrap_or(Verdict::Continue),
            ),
            _ => Expr::List(items.iter().map(expr).collect()),
        },
        Value::Object(_) => object_expr(v),
        _ => Expr::Unknown,
    }
}

fn object_expr(v: &Value) -> Expr {
    let Some((name, body)) = single(v) else {
        return Expr::Unknown;
    };
    let text = |k: &str| body[k].as_str().unwrap_or("").to_string();
    let list = |b: &Value| b.as_array().map(|a| a.iter().map(expr).collect());
    match name {
        "set" => list(body).map_or_else(|| Expr::Set(vec![expr(body)]), Expr::Set),
        "concat" => list(body).map_or(Expr::Unknown, Expr::Concat),
        "range" => match body.as_array().map(Vec::as_slice) {
            Some([a, b]) => Expr::Range(Box::new(expr(a)), Box::new(expr(b))),
            _ => Expr::Unknown,
        },
        "prefix" => {
            let addr = body["addr"].as_str().and_then(|a| a.parse().ok());
            let len = body["len"].as_u64().and_then(|l| u8::try_from(l).ok());
            match (addr, len) {
                (Some(a), Some(l)) => Expr::Prefix(a, l),
                _ => Expr::Unknown,
            }
        }
        // A set element with a timeout or comment: its value.
        "elem" => expr(&body["val"]),
        "payload" if body.get("protocol").is_some() => Expr::Payload {
            protocol: text("protocol"),
            field: text("field"),
        },
        "map" => Expr::Map {
            key: Box::new(expr(&body["key"])),
            data: Box::new(expr(&body["data"])),
        },
        "meta" => Expr::Meta(text("key")),
        "numgen" => Expr::Numgen(text("mode")),
        "ct" if body.get("dir").is_none() => Expr::Ct(text("key")),
        "fib" => Expr::Fib {
            result: text("result"),
            flags: body["flags"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|f| f.as_str().map(str::to_string))
                        .collect()
                })
                .or_else(|| body["flags"].as_str().map(|f| vec![f.to_string()]))
                .unwrap_or_default(),
        },
        _ => Expr::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIXTURE: &[u8] = include_bytes!("testdata/ruleset.json");

    #[test]
    fn the_fixture_parses_into_chains_rules_and_sets() {
        let rs = parse(FIXTURE).unwrap();
        assert_eq!(rs.skipped, 0);
        let input = rs.chain(Family::Inet, "fw", "input").unwrap();
        let base = input.base.as_ref().unwrap();
        assert_eq!(
            (base.hook.as_str(), base.priority, base.policy_drop),
            ("input", 0, false)
        );
        let policy = parse(include_bytes!("testdata/policy.json")).unwrap();
        let c = policy.chain(Family::Ip, "t4", "c").unwrap();
        assert_eq!(
            c.base.as_ref().map(|b| (b.priority, b.policy_drop)),
            Some((-10, true))
        );
        let block = input.rules.iter().find(|r| r.handle == 10).unwrap();
        assert_eq!(block.comment.as_deref(), Some("block-web"));
        assert_eq!(block.stmts.last(), Some(&Stmt::Verdict(Verdict::Reject)));
        assert_eq!(
            rs.set(Family::Inet, "fw", "web").unwrap(),
            &[
                Expr::Num(8080),
                Expr::Range(Box::new(Expr::Num(9000)), Box::new(Expr::Num(9100)))
            ]
        );
        let ports = rs.set(Family::Inet, "fw", "ports").unwrap();
        assert_eq!(
            ports[0],
            Expr::Mapping(Box::new(Expr::Num(8081)), Verdict::Jump("web_in".into()))
        );
    }

    #[test]
    fn unknown_objects_are_skipped_and_unknown_statements_kept() {
        let json = br#"{"nftables": [{"flowtable": {"name": "f"}},
            {"chain": {"family": "inet", "table": "t", "name": "c", "handle": 1}},
            {"rule": {"family": "inet", "table": "t", "chain": "c", "handle": 2,
              "expr": [{"limit": {"rate": 1}}, {"match": {"op": "==", "left": {"osf": {}}, "right": 1}}, {"drop": null}]}},
            {"rule": {"family": "inet", "table": "t", "chain": "nope", "handle": 3, "expr": []}}]}"#;
        let rs = parse(json).unwrap();
        assert_eq!(rs.skipped, 2);
        let c = rs.chain(Family::Inet, "t", "c").unwrap();
        assert_eq!(c.rules[0].stmts[0], Stmt::Unknown("limit".into()));
        assert!(matches!(
            &c.rules[0].stmts[1],
            Stmt::Match {
                left: Expr::Unknown,
                ..
            }
        ));
    }

    #[test]
    fn not_a_ruleset_is_an_error() {
        assert!(parse(b"{\"nftables\": 3}").is_err());
        assert!(parse(b"").is_err());
    }
}
