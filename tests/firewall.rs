//! Naming the rule: real nftables rulesets (and rules written with
//! iptables-nft) inside test namespaces; `portsight check` and a running
//! `portsight serve` name the rule that rejects or drops the probes.
//! Needs root and nftables (iptables for its cases); fails in CI without.

mod support;

use std::process::Command;

use serde_json::{Value, json};
use support::netns::{self, Host};
use support::{listen, metric, needs};

const PORT: u16 = 8080;
const WEB: &str = "127.0.0.1:10917";

fn config(host: &Host) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(format!("{}.toml", host.name));
    std::fs::write(
        &path,
        format!(
            "[scan]\ninterval = \"200ms\"\n[probe]\ninterval = \"1s\"\ntimeout = \"300ms\"\n\
             [discover]\nenabled = false\n\
             [[port]]\nport = {PORT}\nname = \"web\"\nexpect = \"public\"\n"
        ),
    )
    .unwrap();
    let path = path.to_string_lossy().into_owned();
    (dir, path)
}

/// `portsight check --json 8080`: the port's diagnosis.
fn diagnosis(host: &Host, cfg: &str) -> Value {
    let (_, json) = host.check(&["--config", cfg, &PORT.to_string()]);
    json["ports"][0]["diagnosis"].clone()
}

/// `portsight check 8080` as a person reads it.
fn table(host: &Host, cfg: &str) -> String {
    let out = Command::new("ip")
        .args(["netns", "exec", &host.name, env!("CARGO_BIN_EXE_portsight")])
        .args(["check", "--config", cfg, &PORT.to_string()])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn handles(d: &Value) -> Vec<(String, Value)> {
    d["firewall"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let at = format!(
                "{} {} {}",
                r["family"].as_str().unwrap(),
                r["table"].as_str().unwrap(),
                r["chain"].as_str().unwrap()
            );
            (at, r["handle"].clone())
        })
        .collect()
}

/// Runs `nft -a list ruleset` in the host and returns the handle of the
/// rule whose text contains `needle`.
fn handle_of(host: &Host, needle: &str) -> u64 {
    let out = Command::new("ip")
        .args(["netns", "exec", &host.name, "nft", "-a", "list", "ruleset"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find(|l| l.contains(needle))
        .and_then(|l| l.rsplit_once("# handle "))
        .and_then(|(_, h)| h.trim().parse().ok())
        .unwrap_or_else(|| panic!("no rule with {needle:?} in {text}"))
}

#[test]
fn a_reject_in_a_user_chain_behind_a_verdict_map_with_sets_is_named() {
    needs!(netns::nft_unavailable());
    let host = Host::with_interfaces("fwset");
    let _l = listen("[::]:8080").v6only(false).bind_in(&host);
    host.nft(
        "table inet fw {\n\
         set ports { type inet_service; flags interval; elements = { 8080, 9000-9100 } }\n\
         set nets { type ipv4_addr; flags interval; elements = { 10.77.0.0/24, 10.78.0.1-10.78.0.9 } }\n\
         chain web {\n  ip daddr @nets tcp dport @ports reject with tcp reset comment \"block-web\"\n  \
           ip6 daddr fd77::/64 tcp dport @ports reject with tcp reset comment \"block-web6\"\n }\n\
         chain input {\n  type filter hook input priority 0; policy accept;\n  \
           ct state established,related accept\n  \
           ip daddr 127.0.0.1 accept\n  ip6 daddr ::1 accept\n  \
           tcp dport vmap { 8080 : jump web, 22 : accept }\n }\n}\n",
    );
    let (_d, cfg) = config(&host);
    let d = diagnosis(&host, &cfg);
    assert_eq!(d["cause"], "rejected", "{d:#}");
    let h = handle_of(&host, "block-web\"");
    let h6 = handle_of(&host, "block-web6");
    let rule = format!(
        "rule 'block-web' (inet fw web, handle {h}: ip daddr @nets tcp dport @ports reject with tcp reset)"
    );
    let summary = d["summary"].as_str().unwrap();
    assert!(
        summary.contains(&format!(
            "yet it was rejected by {rule} and rule 'block-web6'"
        )),
        "{summary}"
    );
    assert_eq!(
        d["firewall"][0],
        json!({"family": "inet", "table": "fw", "chain": "web", "handle": h, "verdict": "reject",
               "comment": "block-web", "rule": "ip daddr @nets tcp dport @ports reject with tcp reset",
               "may_match": null})
    );
    assert_eq!(d["firewall"][1]["handle"], h6);
    assert!(
        d["fix"]
            .as_str()
            .unwrap()
            .contains(&format!("nft delete rule inet fw web handle {h}")),
        "{d:#}"
    );
    assert!(
        table(&host, &cfg).contains(&format!("firewall: {rule}")),
        "the check table names it"
    );

    let served = host.serve(&["--config", &cfg, "--web.listen-address", WEB]);
    served.within_scans(50, "the rule in /metrics", |m| {
        let q = metric(m, "portsight_port_firewall_rule_info")
            .label("port", PORT)
            .label("family", "inet")
            .label("table", "fw")
            .label("chain", "web")
            .label("handle", h)
            .label("verdict", "reject");
        match (
            q.value(),
            metric(m, "portsight_source_up")
                .label("source", "netfilter")
                .value(),
        ) {
            (Some(1.0), Some(1.0)) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    });
    let page = served.get("/").body;
    assert!(
        page.contains("firewall: <code>rule &#39;block-web&#39; (inet fw web"),
        "{page}"
    );
}

#[test]
fn a_base_chain_whose_policy_drops_is_named() {
    needs!(netns::nft_unavailable());
    let host = Host::ipv4_only("fwpol");
    let _l = listen("0.0.0.0:8080").bind_in(&host);
    host.nft(
        "table ip t4 {\n chain c {\n  type filter hook input priority -10; policy drop;\n  \
         ct state established,related accept\n  ip daddr 127.0.0.1 accept\n  tcp dport 22 accept\n }\n}\n",
    );
    let (_d, cfg) = config(&host);
    let d = diagnosis(&host, &cfg);
    assert_eq!(d["cause"], "filtered", "{d:#}");
    assert!(
        d["summary"]
            .as_str()
            .unwrap()
            .ends_with("answered: it was dropped by the policy of chain ip t4 c (policy drop)"),
        "{d:#}"
    );
    assert_eq!(
        d["firewall"],
        json!([{"family": "ip", "table": "t4", "chain": "c", "handle": null, "verdict": "drop",
                "comment": null, "rule": "policy drop", "may_match": null}])
    );
    assert!(
        d["fix"]
            .as_str()
            .unwrap()
            .contains("nft add rule ip t4 c tcp dport 8080 accept"),
        "{d:#}"
    );
}

#[test]
fn a_port_accepted_by_an_earlier_rule_names_nothing_of_that_table() {
    needs!(netns::nft_unavailable());
    let host = Host::with_interfaces("fwacc");
    let _l = listen("[::]:8080").v6only(false).bind_in(&host);
    host.nft(
        "table inet fw {\n chain input {\n  type filter hook input priority 0;\n  \
         tcp dport 8080 accept\n  tcp dport 8080 reject comment \"never\"\n }\n}\n\
         table ip6 t6 {\n chain input {\n  type filter hook input priority 10;\n  \
         ip6 daddr fd77::1 tcp dport 8080 drop comment \"v6-block\"\n }\n}\n",
    );
    let (_d, cfg) = config(&host);
    let d = diagnosis(&host, &cfg);
    assert_eq!(d["cause"], "filtered", "{d:#}");
    let h = handle_of(&host, "v6-block");
    assert_eq!(
        handles(&d),
        [("ip6 t6 input".to_string(), json!(h))],
        "{d:#}"
    );
    assert!(!d.to_string().contains("never"), "{d:#}");
}

#[test]
fn nothing_is_named_for_a_healthy_port() {
    needs!(netns::nft_unavailable());
    let host = Host::ipv4_only("fwok");
    let _l = listen("0.0.0.0:8080").bind_in(&host);
    host.nft(
        "table ip t4 {\n chain c {\n  type filter hook input priority 0; policy drop;\n  \
         ct state established,related accept\n  tcp dport 8080 accept comment \"web\"\n }\n}\n",
    );
    let (_d, cfg) = config(&host);
    let d = diagnosis(&host, &cfg);
    assert_eq!(
        (d["cause"].clone(), d["firewall"].clone()),
        (json!("ok"), json!([])),
        "{d:#}"
    );
}

/// A full conntrack table cannot be built here (DESIGN, "Facts checked"):
/// the counters come from the fixture proc root, the timeouts are real.
#[test]
fn timeouts_with_a_full_conntrack_table_are_conntrack_full() {
    needs!(netns::nft_unavailable());
    let host = Host::ipv4_only("fwct");
    let _l = listen("0.0.0.0:8080").bind_in(&host);
    host.nft(
        "table ip t4 {\n chain c {\n  type filter hook input priority 0;\n  \
         ip daddr 10.77.0.1 tcp dport 8080 drop\n }\n}\n",
    );
    let (dir, cfg) = config(&host);
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/proc");
    let text = std::fs::read_to_string(&cfg).unwrap();
    let text = text.replace("[scan]\n", &format!("[scan]\nproc_root = \"{root}\"\n"));
    std::fs::write(&cfg, text).unwrap();
    let d = diagnosis(&host, &cfg);
    assert_eq!(d["cause"], "conntrack_full", "{d:#}");
    assert_eq!(
        d["summary"],
        "10.77.0.1:8080 timed out and the connection-tracking table is full (262144 of 262144 entries): new connections are dropped"
    );
    drop(dir);
}

/// Why iptables-nft scenarios cannot run here, if they cannot.
fn iptables_unavailable() -> Option<String> {
    netns::nft_unavailable().or_else(|| {
        Command::new("iptables")
            .arg("-V")
            .output()
            .is_err()
            .then(|| "`iptables` (the nft backend) is not installed".into())
    })
}

/// `iptables ARGS` inside the test host's namespace, never outside it.
fn iptables(host: &Host, args: &str) {
    let mut all = vec!["iptables"];
    all.extend(args.split_whitespace());
    host.exec(&all);
}

const IPTABLES_HINT: &str =
    "the table is written by iptables-nft: change it with the tool that wrote it";

#[test]
fn a_ufw_reject_in_ufw_user_input_is_named_with_the_iptables_hint() {
    needs!(iptables_unavailable());
    let host = Host::ipv4_only("fwufw");
    let _l = listen("0.0.0.0:8080").bind_in(&host);
    iptables(&host, "-N ufw-user-input");
    iptables(&host, "-A INPUT -j ufw-user-input");
    iptables(
        &host,
        "-A ufw-user-input -p tcp --dport 8080 -j REJECT --reject-with tcp-reset",
    );
    let (_d, cfg) = config(&host);
    let d = diagnosis(&host, &cfg);
    assert_eq!(d["cause"], "rejected", "{d:#}");
    let h = handle_of(&host, "reject with tcp reset");
    assert_eq!(
        d["firewall"],
        json!([{"family": "ip", "table": "filter", "chain": "ufw-user-input", "handle": h,
                "verdict": "reject", "comment": null,
                "rule": "tcp dport 8080 counter reject with tcp reset", "may_match": null}]),
        "{d:#}"
    );
    let summary = d["summary"].as_str().unwrap();
    assert!(
        summary.contains(&format!(
            "rejected by rule (ip filter ufw-user-input, handle {h}: tcp dport 8080 counter reject with tcp reset)"
        )),
        "{summary}"
    );
    let fix = d["fix"].as_str().unwrap();
    assert!(fix.contains(IPTABLES_HINT), "{fix}");
    assert!(
        table(&host, &cfg).contains(IPTABLES_HINT),
        "the check table says it"
    );
}

#[test]
fn a_multiport_drop_after_a_conntrack_accept_is_named_for_a_new_probe() {
    needs!(iptables_unavailable());
    let host = Host::ipv4_only("fwmport");
    let _l = listen("0.0.0.0:8080").bind_in(&host);
    iptables(
        &host,
        "-A INPUT -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT",
    );
    iptables(
        &host,
        "-A INPUT -p tcp -m multiport --dports 22,443 -j DROP",
    );
    iptables(
        &host,
        "-A INPUT -p tcp -m multiport --dports 8080,9090 -j DROP",
    );
    let (_d, cfg) = config(&host);
    let d = diagnosis(&host, &cfg);
    assert_eq!(d["cause"], "filtered", "{d:#}");
    let h = handle_of(&host, "dport { 8080, 9090 }");
    assert_eq!(
        d["firewall"],
        json!([{"family": "ip", "table": "filter", "chain": "INPUT", "handle": h,
                "verdict": "drop", "comment": null,
                "rule": "meta l4proto tcp tcp dport { 8080, 9090 } counter drop", "may_match": null}]),
        "the conntrack accept does not take the new probe, and 22,443 is not 8080: {d:#}"
    );
    assert!(
        d["summary"]
            .as_str()
            .unwrap()
            .contains(&format!("dropped by rule (ip filter INPUT, handle {h}: ")),
        "{d:#}"
    );
    assert!(d["fix"].as_str().unwrap().contains(IPTABLES_HINT), "{d:#}");
}

#[test]
fn an_iptables_match_portsight_does_not_interpret_only_may_match() {
    needs!(iptables_unavailable());
    let host = Host::ipv4_only("fwxtmay");
    let _l = listen("0.0.0.0:8080").bind_in(&host);
    // `-m u32` has no nft translation: the rule may or may not match.
    iptables(
        &host,
        "-A INPUT -p tcp --dport 8080 -m u32 --u32 0>>22&0x3C@0>>16=8080 -j DROP",
    );
    iptables(&host, "-A INPUT -p tcp --dport 8080 -j DROP");
    let (_d, cfg) = config(&host);
    let d = diagnosis(&host, &cfg);
    assert_eq!(d["cause"], "filtered", "{d:#}");
    let rules = d["firewall"].as_array().unwrap();
    assert_eq!(rules.len(), 2, "{d:#}");
    assert_eq!(
        rules[0]["may_match"], "the iptables match 'u32' is not interpreted",
        "{d:#}"
    );
    assert_eq!(rules[1]["may_match"], Value::Null, "{d:#}");
}
