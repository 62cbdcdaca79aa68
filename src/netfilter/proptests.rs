//! Property: the parser, the text reader, the `xt` interpreter and the
//! matcher never panic (nor run away) on any ruleset shape — odd rules
//! (random expressions, nesting, sets, maps, jumps to missing chains, loops
//! of jumps), truncated documents and JSON of unknown shapes.

use std::net::IpAddr;

use proptest::prelude::*;
use serde_json::{Value, json};

use super::read::with_text;
use super::*;

/// Words nft's JSON uses, and some it does not.
const KEYS: &[&str] = &[
    "match", "payload", "meta", "ct", "fib", "set", "range", "prefix", "concat", "elem", "map",
    "vmap", "jump", "goto", "accept", "drop", "reject", "return", "continue", "queue", "xt",
    "counter", "log", "key", "data", "left", "right", "op", "protocol", "field", "result", "flags",
    "addr", "len", "val", "target", "type", "name", "dir", "weird",
];

const CHAINS: &[&str] = &[
    "input",
    "output",
    "prerouting",
    "forward",
    "a",
    "b",
    "missing",
];

fn word() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(KEYS).prop_map(str::to_string),
        prop::sample::select(CHAINS).prop_map(str::to_string),
        prop::sample::select(
            &[
                "tcp",
                "udp",
                "th",
                "ip",
                "ip6",
                "dport",
                "saddr",
                "daddr",
                "l4proto",
                "iifname",
                "state",
                "new",
                "established",
                "local",
                "==",
                "!=",
                "in",
                "<=",
                "@s",
                "@m",
                "@missing",
                "10.77.0.0",
                "fd77::1",
                "lo",
                "eth*",
                "REJECT",
                "multiport",
                "conntrack"
            ][..]
        )
        .prop_map(str::to_string),
        ".{0,6}",
    ]
}

/// Any JSON, biased towards nft's shapes.
fn value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        (0u64..70000).prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| json!(f)),
        word().prop_map(Value::from),
    ];
    leaf.prop_recursive(6, 64, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            (word(), inner.clone()).prop_map(|(k, v)| json!({ k: v })),
            prop::collection::vec((word(), inner), 0..4)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

fn family() -> impl Strategy<Value = &'static str> {
    prop::sample::select(&["ip", "ip6", "inet", "arp", "bridge", "netdev", "x"][..])
}

fn object() -> impl Strategy<Value = Value> {
    let chain = (
        family(),
        prop::sample::select(CHAINS),
        prop::option::of(prop::sample::select(CHAINS)),
        any::<i16>(),
        prop::sample::select(&["accept", "drop", "odd"][..]),
    )
        .prop_map(|(f, name, hook, prio, policy)| match hook {
            Some(h) => json!({"chain": {"family": f, "table": "t", "name": name,
                "type": "filter", "hook": h, "prio": prio, "policy": policy}}),
            None => json!({"chain": {"family": f, "table": "t", "name": name}}),
        });
    let verdict = prop_oneof![
        prop::sample::select(CHAINS).prop_map(|c| json!({"jump": {"target": c}})),
        prop::sample::select(CHAINS).prop_map(|c| json!({"goto": {"target": c}})),
        prop::sample::select(&["accept", "drop", "reject", "return", "continue", "queue"][..])
            .prop_map(|v| json!({ v: null })),
        prop::sample::select(&["REJECT", "DROP", "TARPIT", "LOG", "multiport", "conntrack"][..])
            .prop_map(|n| json!({"xt": {"type": "target", "name": n}})),
    ];
    let stmt = prop_oneof![
        (word(), value(), value()).prop_map(|(op, l, r)| json!({"match":
            {"op": op, "left": l, "right": r}})),
        (value(), value()).prop_map(|(k, d)| json!({"vmap": {"key": k, "data": d}})),
        prop::sample::select(
            &[
                "multiport",
                "conntrack",
                "state",
                "addrtype",
                "comment",
                "u32"
            ][..]
        )
        .prop_map(|n| json!({"xt": {"type": "match", "name": n}})),
        verdict,
        value(),
    ];
    let rule = (
        family(),
        prop::sample::select(CHAINS),
        0u64..12,
        prop::collection::vec(stmt, 0..6),
    )
        .prop_map(|(f, c, h, expr)| {
            json!({"rule": {"family": f, "table": "t",
            "chain": c, "handle": h, "expr": expr}})
        });
    let set = (
        family(),
        prop::sample::select(&["s", "m"][..]),
        prop::collection::vec(value(), 0..5),
    )
        .prop_map(|(f, n, elem)| {
            json!({"set": {"family": f, "table": "t", "name": n,
            "elem": elem}})
        });
    prop_oneof![chain, rule, set, value()]
}

/// A text form: rules by handle (some with translations the `xt`
/// interpreter reads), warnings, stray braces.
fn text() -> impl Strategy<Value = String> {
    let line = prop_oneof![
        Just("table ip t {".to_string()),
        Just("table inet t {".to_string()),
        prop::sample::select(CHAINS).prop_map(|c| format!("chain {c} {{")),
        Just("}".to_string()),
        Just("# Warning: table ip t is managed by iptables-nft, do not touch!".to_string()),
        (prop::collection::vec(word(), 0..8), 0u64..12)
            .prop_map(|(w, h)| format!("{} # handle {h}", w.join(" "))),
        (
            prop::sample::select(
                &[
                    "tcp dport {",
                    "ct state !",
                    "fib daddr type",
                    "tcp dport",
                    "ct state",
                    "{ 1-",
                    "} ."
                ][..]
            ),
            ".{0,12}",
            0u64..12
        )
            .prop_map(|(a, b, h)| format!("{a} {b} # handle {h}")),
        ".{0,30}",
    ];
    prop::collection::vec(line, 0..20).prop_map(|l| l.join("\n"))
}

fn packets() -> Vec<Packet> {
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    let mut udp = Packet::local(ip("::1"), 53);
    udp.l4proto = UDP;
    vec![
        Packet::local(ip("127.0.0.1"), 8080),
        Packet::local(ip("10.77.0.1"), 9000),
        udp,
        Packet::from_outside(ip("fd77::1"), 8080, None),
        Packet::from_outside(ip("10.77.0.2"), 0, Some(false)),
    ]
}

fn run(json: &[u8], txt: &str) {
    if let Ok(rs) = ruleset::parse(json) {
        let rs = with_text(rs, txt);
        for p in packets() {
            for r in name(&rs, &p) {
                let _ = r.to_string();
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn odd_rulesets_never_panic(objects in prop::collection::vec(object(), 0..24), txt in text()) {
        let doc = json!({"nftables": objects});
        run(&serde_json::to_vec(&doc).unwrap(), &txt);
    }

    #[test]
    fn truncated_documents_never_panic(objects in prop::collection::vec(object(), 0..12),
                                       cut in any::<prop::sample::Index>()) {
        let bytes = serde_json::to_vec(&json!({"nftables": objects})).unwrap();
        let at = cut.index(bytes.len() + 1);
        run(&bytes[..at], "");
    }

    #[test]
    fn unknown_json_and_bytes_never_panic(v in value(), bytes in prop::collection::vec(any::<u8>(), 0..64)) {
        run(&serde_json::to_vec(&v).unwrap(), "");
        run(&serde_json::to_vec(&json!({"nftables": v})).unwrap(), "");
        run(&bytes, &String::from_utf8_lossy(&bytes));
    }
}

/// Loops of jumps that only may happen (each rule looks at a field not
/// known here) branch at every rule: the walk stays bounded.
#[test]
fn loops_of_maybe_jumps_end() {
    let maybe_jump = |target: &str| {
        json!({"rule": {"family": "inet", "table": "t",
        "chain": target, "handle": 1, "expr": [
            {"match": {"op": "==", "left": {"meta": {"key": "mark"}}, "right": 1}},
            {"jump": {"target": target}}]}})
    };
    let mut objects = vec![
        json!({"chain": {"family": "inet", "table": "t", "name": "input", "type": "filter",
            "hook": "input", "prio": 0, "policy": "accept"}}),
        json!({"chain": {"family": "inet", "table": "t", "name": "a"}}),
    ];
    for _ in 0..8 {
        objects.push(
            json!({"rule": {"family": "inet", "table": "t", "chain": "input",
            "handle": 1, "expr": [
                {"match": {"op": "==", "left": {"meta": {"key": "mark"}}, "right": 1}},
                {"jump": {"target": "a"}}]}}),
        );
        objects.push(maybe_jump("a"));
    }
    objects.push(
        json!({"rule": {"family": "inet", "table": "t", "chain": "a", "handle": 2,
        "expr": [{"drop": null}]}}),
    );
    let rs = ruleset::parse(&serde_json::to_vec(&json!({"nftables": objects})).unwrap()).unwrap();
    let named = name(&rs, &Packet::local("127.0.0.1".parse().unwrap(), 8080));
    assert!(
        !named.is_empty(),
        "the drop in the loop is named as may match"
    );
    assert!(named.iter().all(|r| r.may_match.is_some()));
}
