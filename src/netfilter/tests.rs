//! The matcher on rulesets that nft printed (testdata/, made with nftables
//! 1.0.6 in a test namespace), packet by packet.

use std::net::IpAddr;

use super::read::with_text;
use super::*;

fn fixture(json: &[u8], txt: &str) -> Ruleset {
    with_text(ruleset::parse(json).unwrap(), txt)
}

fn fw() -> Ruleset {
    fixture(
        include_bytes!("testdata/ruleset.json"),
        include_str!("testdata/ruleset.txt"),
    )
}

fn policy() -> Ruleset {
    fixture(
        include_bytes!("testdata/policy.json"),
        include_str!("testdata/policy.txt"),
    )
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// `(chain, handle, verdict, certain)` of each rule named for a local probe.
fn local(rs: &Ruleset, daddr: &str, port: u16) -> Vec<(String, Option<u64>, RuleVerdict, bool)> {
    brief(name(rs, &Packet::local(ip(daddr), port)))
}

fn brief(rules: Vec<NamedRule>) -> Vec<(String, Option<u64>, RuleVerdict, bool)> {
    rules
        .into_iter()
        .map(|r| (r.chain, r.handle, r.verdict, r.may_match.is_none()))
        .collect()
}

fn one(
    chain: &str,
    handle: u64,
    verdict: RuleVerdict,
) -> Vec<(String, Option<u64>, RuleVerdict, bool)> {
    vec![(chain.to_string(), Some(handle), verdict, true)]
}

use RuleVerdict::{Drop, Reject};

#[test]
fn a_named_set_of_ports_and_a_range_with_fib_local() {
    let rs = fw();
    let rules = name(&rs, &Packet::local(ip("10.77.0.1"), 8080));
    assert_eq!(rules.len(), 1);
    let r = &rules[0];
    assert_eq!(
        r.to_string(),
        "rule 'block-web' (inet fw input, handle 10: fib daddr type local tcp dport @web reject with tcp reset)"
    );
    assert_eq!(
        (r.family, r.verdict, r.may_match.as_deref()),
        (Family::Inet, Reject, None)
    );
    assert_eq!(local(&rs, "10.77.0.1", 9050), one("input", 10, Reject));
    assert_eq!(local(&rs, "127.0.0.1", 9100), one("input", 10, Reject));
    assert_eq!(local(&rs, "10.77.0.1", 9101), vec![]);
}

#[test]
fn interval_sets_of_addresses_and_anonymous_sets() {
    let rs = fw();
    assert_eq!(local(&rs, "10.77.0.9", 8083), one("input", 12, Drop));
    assert_eq!(local(&rs, "10.78.1.5", 8084), one("input", 12, Drop));
    assert_eq!(local(&rs, "10.78.1.10", 8084), vec![], "outside the range");
    assert_eq!(local(&rs, "10.79.0.1", 8083), vec![]);
}

#[test]
fn verdict_maps_jumps_returns_and_gotos() {
    let rs = fw();
    assert_eq!(
        local(&rs, "10.77.0.1", 8082),
        one("input", 13, Drop),
        "map: drop"
    );
    assert_eq!(
        local(&rs, "10.77.0.1", 8081),
        vec![],
        "map: jump, then return"
    );
    assert_eq!(
        local(&rs, "10.77.0.1", 8085),
        one("web_in", 6, Drop),
        "jump"
    );
    assert_eq!(local(&rs, "10.77.0.1", 8092), vec![], "goto, nothing there");
}

#[test]
fn concatenations_protocol_sets_ct_state_and_interfaces() {
    let rs = fw();
    assert_eq!(local(&rs, "10.77.0.1", 8086), one("input", 16, Drop));
    assert_eq!(local(&rs, "10.77.0.2", 8086), vec![], "another source");
    assert_eq!(local(&rs, "10.77.0.1", 8087), one("input", 18, Reject));
    assert_eq!(local(&rs, "fd77::1", 8088), one("input", 19, Reject));
    assert_eq!(
        local(&rs, "10.77.0.1", 8088),
        vec![],
        "an ip6 match on IPv4"
    );
    assert_eq!(local(&rs, "::1", 8089), one("input", 20, Drop));
}

#[test]
fn an_unknown_source_only_may_match() {
    let rs = fw();
    let from_peer = Packet::from_outside(ip("10.77.0.1"), 8086, Some(true));
    let rules = name(&rs, &from_peer);
    assert_eq!(
        brief(rules.clone()),
        vec![("input".to_string(), Some(16), Drop, false)]
    );
    assert!(rules[0].may_match.is_some());
    let known = Packet::from_outside(ip("10.77.0.1"), 8080, Some(true));
    assert_eq!(brief(name(&rs, &known)), one("input", 10, Reject));
    let nat = Packet::from_outside(ip("203.0.113.7"), 8080, None);
    assert!(
        name(&rs, &nat)[0].may_match.is_some(),
        "fib daddr type: not known"
    );
}

#[test]
fn a_policy_drop_in_priority_order_and_an_earlier_accept() {
    let rs = policy();
    let rules = name(&rs, &Packet::local(ip("10.77.0.1"), 8080));
    assert_eq!(
        brief(rules.clone()),
        vec![("c".to_string(), None, Drop, true)]
    );
    assert_eq!(rules[0].rule, "policy drop");
    assert_eq!(
        rules[0].to_string(),
        "the policy of chain ip t4 c (policy drop)"
    );
    assert_eq!(
        local(&rs, "10.77.0.1", 22),
        vec![],
        "accepted before the policy"
    );
    assert_eq!(
        local(&rs, "::1", 8080),
        one("c", 2, Drop),
        "ip6 table, not the ip one"
    );
    assert_eq!(local(&rs, "fd77::1", 8080), vec![]);
}

#[test]
fn the_output_and_prerouting_hooks_are_on_the_path() {
    let rs = policy();
    let out = name(&rs, &Packet::local(ip("10.77.0.1"), 7000));
    assert_eq!(
        brief(out.clone()),
        one("out", 3, Drop),
        "output before input"
    );
    assert_eq!(out[0].comment.as_deref(), Some("no-local-7000"));
    assert_eq!(
        local(&rs, "10.77.0.1", 7001),
        vec![("c".to_string(), None, Drop, true)],
        "a local probe comes in on lo"
    );
    let outside = Packet::from_outside(ip("10.77.0.1"), 7001, Some(true));
    assert_eq!(brief(name(&rs, &outside)), one("pre", 4, Drop));
}
