//! Cost of `netfilter::forwards::forwards` on a kube-proxy (iptables mode,
//! through iptables-nft) ruleset of 1,000 NodePort services with two
//! endpoints each, made in memory in the shapes nft 1.0.6 prints
//! (src/netfilter/testdata/kube.json): `KUBE-SERVICES` → `KUBE-SVC-…` for
//! the cluster IP and → `KUBE-NODEPORTS` → `KUBE-EXT-…` → `KUBE-SVC-…` →
//! `KUBE-SEP-…` (statistic) for the node port, at `prerouting` and `output`.
//!
//! `cargo bench --bench forwards`; `PSB_SERVICES` (default 1000) and
//! `PSB_RUNS` (default 200). Prints the median and quartiles of one call,
//! and the forwards it finds (4 per service: 2 endpoints × cluster IP and
//! node port, each reached at both hooks, merged into one).

mod support;

use support::env;

use portsight::netfilter::forwards::forwards;
use portsight::netfilter::{read, ruleset};
use serde_json::{Value, json};

/// The JSON and text of one service's chains and rules; `handle` counts on.
struct World {
    objs: Vec<Value>,
    text: String,
    handle: u64,
}

impl World {
    fn chain(&mut self, name: &str, base: Option<(&str, i64)>) {
        let mut c = json!({"family": "ip", "table": "nat", "name": name});
        if let Some((hook, prio)) = base {
            c["type"] = json!("nat");
            c["hook"] = json!(hook);
            c["prio"] = json!(prio);
            c["policy"] = json!("accept");
        }
        self.objs.push(json!({ "chain": c }));
    }

    fn rule(&mut self, chain: &str, expr: Vec<Value>, text: &str) {
        self.handle += 1;
        let h = self.handle;
        self.objs.push(
            json!({"rule": {"family": "ip", "table": "nat", "chain": chain,
            "handle": h, "expr": expr}}),
        );
        self.text.push_str(&format!(
            "\tchain {chain} {{\n\t\t{text} # handle {h}\n\t}}\n"
        ));
    }
}

fn jump(t: &str) -> Value {
    json!({"jump": {"target": t}})
}

fn m(left: Value, right: Value) -> Value {
    json!({"match": {"op": "==", "left": left, "right": right}})
}

fn tcp_dport(p: u64) -> Value {
    m(
        json!({"payload": {"protocol": "tcp", "field": "dport"}}),
        json!(p),
    )
}

fn l4_tcp() -> Value {
    m(json!({"meta": {"key": "l4proto"}}), json!("tcp"))
}

fn xt(kind: &str, name: &str) -> Value {
    json!({"xt": {"type": kind, "name": name}})
}

fn service(w: &mut World, i: usize) {
    let (svc, ext) = (format!("KUBE-SVC-{i:016}"), format!("KUBE-EXT-{i:016}"));
    let cluster = format!("10.77.{}.{}", 96 + i / 250, i % 250 + 1);
    w.chain(&svc, None);
    w.chain(&ext, None);
    let daddr = m(
        json!({"payload": {"protocol": "ip", "field": "daddr"}}),
        json!(cluster),
    );
    w.rule(
        "KUBE-SERVICES",
        vec![
            l4_tcp(),
            daddr,
            xt("match", "comment"),
            tcp_dport(80),
            jump(&svc),
        ],
        &format!("meta l4proto tcp ip daddr {cluster} tcp dport 80 counter jump {svc}"),
    );
    let node = 30000 + i as u64;
    w.rule(
        "KUBE-NODEPORTS",
        vec![
            l4_tcp(),
            xt("match", "comment"),
            tcp_dport(node),
            jump(&ext),
        ],
        &format!("meta l4proto tcp tcp dport {node} counter jump {ext}"),
    );
    w.rule(
        &ext,
        vec![jump("KUBE-MARK-MASQ")],
        "counter jump KUBE-MARK-MASQ",
    );
    w.rule(&ext, vec![jump(&svc)], &format!("counter jump {svc}"));
    for e in 0..2 {
        let sep = format!("KUBE-SEP-{i:014}{e:02}");
        let backend = format!("10.77.{}.{}", 200 + i / 250, (i % 250) + 1);
        w.chain(&sep, None);
        let mut pick = vec![xt("match", "comment")];
        if e == 0 {
            pick.push(xt("match", "statistic"));
        }
        pick.push(jump(&sep));
        w.rule(&svc, pick, &format!("counter jump {sep}"));
        w.rule(
            &sep,
            vec![
                l4_tcp(),
                xt("match", "comment"),
                xt("match", "tcp"),
                xt("target", "DNAT"),
            ],
            &format!("meta l4proto tcp counter dnat to {backend}:{}", 8080 + e),
        );
    }
}

fn main() {
    if !support::bench_mode("forwards") {
        return;
    }
    let (services, runs) = (env("PSB_SERVICES", 1000), env("PSB_RUNS", 200));
    let mut w = World {
        objs: Vec::new(),
        text: String::from("table ip nat {\n"),
        handle: 0,
    };
    for (name, base) in [
        ("PREROUTING", Some(("prerouting", -100))),
        ("OUTPUT", Some(("output", -100))),
        ("KUBE-SERVICES", None),
        ("KUBE-NODEPORTS", None),
        ("KUBE-MARK-MASQ", None),
    ] {
        w.chain(name, base);
    }
    w.rule(
        "PREROUTING",
        vec![xt("match", "comment"), jump("KUBE-SERVICES")],
        "counter jump KUBE-SERVICES",
    );
    w.rule(
        "OUTPUT",
        vec![xt("match", "comment"), jump("KUBE-SERVICES")],
        "counter jump KUBE-SERVICES",
    );
    w.rule(
        "KUBE-MARK-MASQ",
        vec![xt("target", "MARK")],
        "counter meta mark set mark or 0x4000",
    );
    for i in 0..services {
        service(&mut w, i);
    }
    let local = m(
        json!({"fib": {"result": "type", "flags": ["daddr"]}}),
        json!("local"),
    );
    w.rule(
        "KUBE-SERVICES",
        vec![xt("match", "comment"), local, jump("KUBE-NODEPORTS")],
        "fib daddr type local counter jump KUBE-NODEPORTS",
    );
    w.text.push_str("}\n");
    let doc = serde_json::to_vec(&json!({ "nftables": w.objs })).unwrap();
    let rs = read::with_text(ruleset::parse(&doc).unwrap(), &w.text);
    let found = forwards(&rs).len();
    assert_eq!(found, services * 4, "forwards of the generated ruleset");
    let times = support::time_each(runs, || {
        std::hint::black_box(forwards(&rs));
    });
    let mut sorted = times.clone();
    sorted.sort_by(f64::total_cmp);
    let q = |p: f64| support::fmt_secs(sorted[((sorted.len() - 1) as f64 * p) as usize]);
    support::table(
        "forwards(rs) on a kube-proxy ruleset",
        &["services", "rules", "forwards", "median", "p25", "p75"],
        &[vec![
            services.to_string(),
            w.handle.to_string(),
            found.to_string(),
            support::fmt_secs(support::median(&times)),
            q(0.25),
            q(0.75),
        ]],
    );
}
