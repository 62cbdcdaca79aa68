//! Forwards of rulesets that nft printed (testdata/, written in a scratch
//! namespace as Docker, kube-proxy and CNI portmap write them, with
//! nftables 1.0.6 and iptables-nft 1.8.9).

use super::*;
use crate::netfilter::read::with_text;
use crate::netfilter::ruleset;

fn fixture(name: &str) -> Ruleset {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/src/netfilter/testdata/");
    let json = std::fs::read(format!("{dir}{name}.json")).unwrap();
    let txt = std::fs::read_to_string(format!("{dir}{name}.txt")).unwrap();
    with_text(ruleset::parse(&json).unwrap(), &txt)
}

/// `8080/tcp → 10.77.50.2:80 (dnat) output,prerouting`, one per forward.
fn brief(fs: &[Forward]) -> Vec<String> {
    fs.iter()
        .map(|f| {
            let hooks: Vec<&str> = f.hooks.iter().map(|h| h.as_str()).collect();
            format!("{f} {}", hooks.join(","))
        })
        .collect()
}

fn one<'a>(fs: &'a [Forward], port: u16, backend: &str) -> Vec<&'a Forward> {
    fs.iter()
        .filter(|f| f.port == HostPort::One(port) && f.backend() == backend.parse().ok())
        .collect()
}

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

#[test]
fn docker_as_iptables_nft_writes_it() {
    let fs = forwards(&fixture("docker"));
    assert_eq!(
        brief(&fs),
        [
            "8080/tcp → 10.77.50.2:80 (dnat) output",
            "5353/udp → 10.77.50.3:53 (dnat) output",
            "8443/tcp → 10.77.50.3:8443 (dnat) output",
            "8080/tcp → ? (dnat) output",
            "8080/tcp → 10.77.50.2:80 (dnat) prerouting",
            "5353/udp → 10.77.50.3:53 (dnat) prerouting",
            "8443/tcp → 10.77.50.3:8443 (dnat) prerouting",
            "8080/tcp → ? (dnat) prerouting",
        ]
    );
    let web = one(&fs, 8080, "10.77.50.2:80");
    let (out, pre) = (web[0], web[1]);
    // OUTPUT: `! -d 127.0.0.0/8 -m addrtype --dst-type LOCAL`: not loopback.
    assert_eq!(
        out.daddr,
        [Daddr::NotIn(vec![net("127.0.0.0/8")]), Daddr::Local]
    );
    assert!(!out.applies_to("127.0.0.1".parse().unwrap(), true));
    assert!(out.applies_to("10.77.0.1".parse().unwrap(), true));
    assert_eq!(pre.daddr, [Daddr::Local]);
    assert_eq!(pre.conditions, ["meta iifname != \"docker0\""]);
    assert_eq!(pre.chains, ["DOCKER"]);
    assert_eq!(
        pre.rule.as_deref(),
        Some(
            "ip nat DOCKER, handle 10: iifname != \"docker0\" tcp dport 8080 counter dnat to 10.77.50.2:80"
        )
    );
    assert_eq!(
        (pre.via, pre.family, pre.protocol),
        (Via::Dnat, Family::Ip, Protocol::Tcp)
    );
}

#[test]
fn an_ip6tables_dnat_nft_cannot_print_is_reported_without_a_backend() {
    let fs = forwards(&fixture("docker"));
    let v6: Vec<&Forward> = fs.iter().filter(|f| f.family == Family::Ip6).collect();
    assert_eq!(v6.len(), 2);
    for f in v6 {
        assert_eq!(
            (f.port, f.backend_addr, f.backend_port),
            (HostPort::One(8080), None, None)
        );
        assert!(
            f.conditions
                .iter()
                .any(|c| c == "the target is not interpreted"),
            "{f:?}"
        );
    }
}

#[test]
fn kube_proxy_iptables_mode_one_forward_per_endpoint() {
    let fs = forwards(&fixture("kube"));
    assert_eq!(
        brief(&fs),
        [
            "80/tcp → 10.77.60.2:8080 (dnat) output,prerouting",
            "80/tcp → 10.77.60.3:8080 (dnat) output,prerouting",
            "53/udp → 10.77.60.9:53 (dnat) output,prerouting",
            "30080/tcp → 10.77.60.2:8080 (dnat) output,prerouting",
            "30080/tcp → 10.77.60.3:8080 (dnat) output,prerouting",
        ]
    );
    let node = one(&fs, 30080, "10.77.60.2:8080")[0];
    assert_eq!(node.daddr, [Daddr::Local]);
    assert_eq!(
        node.conditions,
        ["chosen at random (iptables' statistic match)"]
    );
    assert_eq!(
        node.chains,
        [
            "KUBE-SERVICES",
            "KUBE-NODEPORTS",
            "KUBE-EXT-ERIFXISQEP7F7OF4",
            "KUBE-SVC-ERIFXISQEP7F7OF4",
            "KUBE-SEP-IT2ZTR26TO4XFPTO"
        ]
    );
    assert_eq!(
        node.rule.as_deref(),
        Some(
            "ip nat KUBE-SEP-IT2ZTR26TO4XFPTO, handle 32: meta l4proto tcp counter dnat to 10.77.60.2:8080"
        )
    );
    let last = one(&fs, 30080, "10.77.60.3:8080")[0];
    assert!(
        last.conditions.is_empty(),
        "the last endpoint takes the rest"
    );
    let cluster = one(&fs, 80, "10.77.60.3:8080")[0];
    assert_eq!(cluster.daddr, [Daddr::In(vec![net("10.77.96.10/32")])]);
    assert!(!cluster.applies_to("10.77.0.1".parse().unwrap(), true));
}

#[test]
fn kube_proxy_nftables_mode_maps_and_numgen() {
    let fs = forwards(&fixture("kube-nft"));
    assert_eq!(
        brief(&fs),
        [
            "80/tcp → 10.77.60.2:8080 (dnat) output,prerouting",
            "80/tcp → 10.77.60.3:8080 (dnat) output,prerouting",
            "30080/tcp → 10.77.60.2:8080 (dnat) output,prerouting",
            "30080/tcp → 10.77.60.3:8080 (dnat) output,prerouting",
        ]
    );
    let node = one(&fs, 30080, "10.77.60.3:8080")[0];
    assert_eq!(
        node.daddr,
        [Daddr::Local, Daddr::NotIn(vec![net("127.0.0.0/8")])]
    );
    assert_eq!(node.conditions, ["numgen random == 1"]);
    assert_eq!(
        node.chains[..2],
        ["services", "external-ULMVA6XW-default/api/tcp/http"]
    );
}

#[test]
fn cni_portmap_multiport_then_one_chain_per_container() {
    let fs = forwards(&fixture("cni"));
    assert_eq!(
        brief(&fs),
        [
            "8081/tcp → 10.77.70.2:80 (dnat) output,prerouting",
            "8082/tcp → 10.77.70.2:443 (dnat) output,prerouting",
        ]
    );
    assert_eq!(
        fs[0].chains,
        ["CNI-HOSTPORT-DNAT", "CNI-DN-1c2c1b0a5e2e0a6d8d2f8"]
    );
    assert!(fs[0].conditions.is_empty(), "{:?}", fs[0].conditions);
}

#[test]
fn hand_written_dnat_and_redirect() {
    let fs = forwards(&fixture("nat"));
    assert_eq!(
        brief(&fs),
        [
            "8080/tcp → 10.77.50.2:80 (dnat) output",
            "8090/tcp → 10.77.50.2:8090 (dnat) prerouting",
            "8080/tcp → 10.77.50.2:80 (dnat) prerouting",
            "9000/tcp → 10.77.50.4:9000 (dnat) prerouting",
            "9001/tcp → 10.77.50.4:9001 (dnat) prerouting",
            "7000/tcp → 10.77.50.5:7000 (dnat) prerouting",
            "7001/tcp → 10.77.50.5:7001 (dnat) prerouting",
            "7002/tcp → 10.77.50.5:7002 (dnat) prerouting",
            "2222/tcp → 127.0.0.1:22 (redirect) prerouting",
            "2222/tcp → [::1]:22 (redirect) prerouting",
            "5300/udp → 127.0.0.1:53 (redirect) prerouting",
            "5300/udp → [::1]:53 (redirect) prerouting",
            "3128/tcp → 127.0.0.1:3128 (redirect) prerouting",
            "3128/tcp → [::1]:3128 (redirect) prerouting",
            "8080/tcp → [fd77:50::2]:80 (dnat) prerouting",
            "8300/tcp → 10.77.50.6:8300 (dnat) prerouting",
            "8301/tcp → 10.77.50.6:8301 (dnat) prerouting",
            "8100/tcp → 10.77.50.7:80 (dnat) prerouting",
            "8101/tcp → 10.77.50.8:81 (dnat) prerouting",
            "8400/tcp → 10.77.50.10:80 (dnat) prerouting",
            "8200/tcp → 10.77.50.9:8080 (dnat) prerouting",
            // Wide: one range, the backend port the connection's own.
            "1-60000/tcp → 10.77.50.11:? (dnat) prerouting",
            // Rules 21 (8500) and 22 (8080) come after the range takes
            // every port they name: never reached, not reported.
        ]
    );
    let web = one(&fs, 8080, "10.77.50.2:80");
    assert_eq!(web[0].conditions, ["meta oifname == \"lo\""]);
    assert_eq!(web[1].comment.as_deref(), Some("web"));
    assert_eq!(web[1].daddr, [Daddr::Local]);
    let v6 = one(&fs, 8080, "[fd77:50::2]:80")[0];
    assert_eq!(v6.family, Family::Ip6);
    assert!(v6.applies_to("fd77::1".parse().unwrap(), true));
    assert!(!v6.applies_to("10.77.0.1".parse().unwrap(), true));
}

/// A ruleset written in memory: `nft -j` JSON of one nat chain at
/// prerouting with these rules' expressions.
fn chain_of(rules: &[&str]) -> Ruleset {
    let mut objs = vec![
        r#"{"chain": {"family": "ip", "table": "t", "name": "pre", "type": "nat", "hook": "prerouting", "prio": -100, "policy": "accept"}}"#.to_string(),
        r#"{"chain": {"family": "ip", "table": "t", "name": "sub"}}"#.to_string(),
    ];
    for (i, r) in rules.iter().enumerate() {
        let (chain, expr) = r.split_once('|').unwrap_or(("pre", r));
        objs.push(format!(
            r#"{{"rule": {{"family": "ip", "table": "t", "chain": "{chain}", "handle": {}, "expr": [{expr}]}}}}"#,
            i + 1
        ));
    }
    ruleset::parse(format!(r#"{{"nftables": [{}]}}"#, objs.join(",")).as_bytes()).unwrap()
}

const DPORT_8080: &str = r#"{"match": {"op": "==", "left": {"payload": {"protocol": "tcp", "field": "dport"}}, "right": 8080}}"#;

#[test]
fn an_uninterpreted_port_condition_reports_the_forward_without_a_port() {
    let rs = chain_of(&[
        r#"{"match": {"op": "==", "left": {"payload": {"protocol": "tcp", "field": "dport"}}, "right": "@missing"}}, {"dnat": {"addr": "10.77.50.2"}}"#,
    ]);
    let fs = forwards(&rs);
    assert_eq!(brief(&fs), ["?/tcp → 10.77.50.2:? (dnat) prerouting"]);
    assert_eq!(fs[0].conditions, ["dport == @missing (not interpreted)"]);
}

#[test]
fn a_return_before_the_dnat_ends_the_chain_only_when_unconditional() {
    let dnat = format!(r#"sub|{DPORT_8080}, {{"dnat": {{"addr": "10.77.50.2", "port": 80}}}}"#);
    let jump = r#"{"jump": {"target": "sub"}}"#;
    let conditional = r#"sub|{"match": {"op": "==", "left": {"meta": {"key": "iifname"}}, "right": "docker0"}}, {"return": null}"#;
    let fs = forwards(&chain_of(&[jump, conditional, &dnat]));
    assert_eq!(brief(&fs), ["8080/tcp → 10.77.50.2:80 (dnat) prerouting"]);
    assert_eq!(fs[0].chains, ["sub"]);
    let fs = forwards(&chain_of(&[jump, r#"sub|{"return": null}"#, &dnat]));
    assert!(fs.is_empty(), "{fs:?}");
    let fs = forwards(&chain_of(&[
        r#"{"accept": null}"#,
        &format!("{DPORT_8080}, {{\"redirect\": null}}"),
    ]));
    assert!(fs.is_empty(), "after an accept of everything: {fs:?}");
}

#[test]
fn port_sets_intersect_along_the_path_and_negations_complement() {
    let outer = r#"{"match": {"op": "==", "left": {"payload": {"protocol": "tcp", "field": "dport"}}, "right": {"set": [8080, {"range": [9000, 9005]}]}}}, {"jump": {"target": "sub"}}"#;
    let inner = r#"sub|{"match": {"op": "!=", "left": {"payload": {"protocol": "th", "field": "dport"}}, "right": {"range": [8000, 9003]}}}, {"dnat": {"addr": "10.77.50.2"}}"#;
    let fs = forwards(&chain_of(&[outer, inner]));
    assert_eq!(
        brief(&fs),
        [
            "9004/tcp → 10.77.50.2:9004 (dnat) prerouting",
            "9005/tcp → 10.77.50.2:9005 (dnat) prerouting",
        ]
    );
    assert_eq!(complement(&[(0, 10), (65535, 65535)]), [(11, 65534)]);
    assert_eq!(
        normalize(vec![(5, 9), (1, 4), (20, 30), (25, 26)]),
        [(1, 9), (20, 30)]
    );
}

#[test]
fn a_dnat_without_any_condition_takes_every_port_of_both_protocols() {
    let fs = forwards(&chain_of(&[r#"{"dnat": {"addr": "10.77.50.2"}}"#]));
    assert_eq!(
        brief(&fs),
        [
            "0-65535/tcp → 10.77.50.2:? (dnat) prerouting",
            "0-65535/udp → 10.77.50.2:? (dnat) prerouting",
        ]
    );
    assert_eq!(fs[0].port.covers(8080), Some(true));
}

#[test]
fn jumps_that_loop_end() {
    let rs = chain_of(&[
        r#"{"jump": {"target": "sub"}}"#,
        r#"sub|{"jump": {"target": "sub"}}"#,
    ]);
    assert!(forwards(&rs).is_empty());
}
