//! Scenario tests: each builds a small world in network namespaces, starts a
//! real server, and asserts the cause both from `portsight check --json` and
//! from /metrics of a running `portsight serve`. Needs root (and nftables for
//! the firewall scenarios); skips without them, fails in CI.

mod support;

use std::net::TcpStream;
use std::time::Duration;

use serde_json::Value;
use support::netns::{self, Host, Served};
use support::{listen, metric, needs, wait_for};

const PORT: u16 = 8080;
const WEB: &str = "127.0.0.1:10917";

/// Scans every 200 ms, probes every 2 s with a 500 ms timeout, watches 8080 only.
fn config(host: &Host, expect: &str, extra: &str) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(format!("{}.toml", host.name));
    std::fs::write(
        &path,
        format!(
            "[scan]\ninterval = \"200ms\"\n[probe]\ninterval = \"2s\"\ntimeout = \"500ms\"\n\
             [discover]\nenabled = false\n[diagnosis]\ntransient_window = \"3s\"\n{extra}\n\
             [[port]]\nport = {PORT}\nname = \"web\"\nexpect = \"{expect}\"\n"
        ),
    )
    .unwrap();
    let path = path.to_string_lossy().into_owned();
    (dir, path)
}

/// `portsight check --json 8080` in the host: exit code and the port's entry.
fn check(host: &Host, cfg: &str) -> (i32, Value) {
    let (code, json) = host.check(&["--config", cfg, &PORT.to_string()]);
    (code, json["ports"][0].clone())
}

fn serve(host: &Host, cfg: &str) -> Served {
    host.serve(&["--config", cfg, "--web.listen-address", WEB])
}

/// The cause /metrics reports for the port now.
fn served_cause(served: &Served) -> Option<String> {
    let m = served.scrape();
    let total = metric(&m, "portsight_port_diagnosis")
        .label("port", PORT)
        .all()
        .len();
    assert!(
        total == 0 || total == 14,
        "every cause has a series: {total}"
    );
    metric(&m, "portsight_port_diagnosis")
        .label("port", PORT)
        .state("cause")
}

/// Polls /metrics until the port's cause is `cause`.
fn wait_served(served: &Served, cause: &str) {
    wait_for(
        Duration::from_secs(15),
        &format!("/metrics to say {cause}"),
        || {
            let now = served_cause(served);
            if now.as_deref() == Some(cause) {
                Ok(())
            } else {
                Err(format!(
                    "{now:?}; status: {}",
                    served.get("/api/v1/status").body
                ))
            }
        },
    );
}

/// Asserts `cause` from `check --json` (exit 0 for ok, 1 otherwise) and from
/// a running `serve`; returns check's diagnosis.
fn assert_cause(host: &Host, cfg: &str, cause: &str) -> Value {
    let (code, port) = check(host, cfg);
    assert_eq!(port["diagnosis"]["cause"], cause, "check --json: {port:#}");
    assert_eq!(code, if cause == "ok" { 0 } else { 1 }, "check's exit code");
    let served = serve(host, cfg);
    wait_served(&served, cause);
    port["diagnosis"].clone()
}

fn text(v: &Value) -> String {
    v.as_str().unwrap_or_default().to_string()
}

#[test]
fn nothing_listening() {
    needs!(netns::unavailable());
    let host = Host::with_interfaces("nl");
    let (_d, cfg) = config(&host, "public", "");
    let d = assert_cause(&host, &cfg, "not_listening");
    assert!(
        text(&d["summary"]).starts_with("nothing listens on port 8080; 127.0.0.1:8080"),
        "{d}"
    );
    assert!(text(&d["fix"]).starts_with("start the service"), "{d}");
}

#[test]
fn loopback_only_for_public_ok_for_local() {
    needs!(netns::unavailable());
    let host = Host::with_interfaces("lo");
    let _l = listen("127.0.0.1:8080").bind_in(&host);
    let (_d, cfg) = config(&host, "public", "");
    let d = assert_cause(&host, &cfg, "loopback_only");
    assert!(
        text(&d["summary"]).starts_with("listening on 127.0.0.1:8080 (scenarios-"),
        "names the address and the process: {d}"
    );
    assert!(
        text(&d["summary"]).contains("10.77.0.1:8080"),
        "names a refused address: {d}"
    );
    assert_eq!(
        text(&d["fix"]),
        "bind to 0.0.0.0 or :: instead of 127.0.0.1, so that other hosts can connect"
    );

    let (_d2, local) = config(&host, "local", "");
    let (code, port) = check(&host, &local);
    assert_eq!(
        (code, port["diagnosis"]["cause"].as_str()),
        (0, Some("ok")),
        "{port:#}"
    );
}

#[test]
fn local_policy_is_ok_on_loopback() {
    needs!(netns::unavailable());
    let host = Host::with_interfaces("lok");
    let _l = listen("127.0.0.1:8080").bind_in(&host);
    let (_d, cfg) = config(&host, "local", "");
    assert_cause(&host, &cfg, "ok");
}

#[test]
fn bound_to_one_interface_probed_on_another() {
    needs!(netns::unavailable());
    let host = Host::with_interfaces("be");
    let _l = listen("10.77.0.1:8080").bind_in(&host);
    let (_d, cfg) = config(&host, "public", "");
    let d = assert_cause(&host, &cfg, "bound_elsewhere");
    let summary = text(&d["summary"]);
    assert!(
        summary.starts_with("listening on 10.77.0.1:8080"),
        "{summary}"
    );
    assert!(
        summary.contains("10.77.0.2:8080"),
        "names the refused address: {summary}"
    );
    assert!(
        text(&d["fix"]).starts_with("bind to 0.0.0.0 / :: (all addresses)"),
        "{d}"
    );
}

#[test]
fn ipv4_wildcard_probed_on_ipv6_loopback() {
    needs!(netns::unavailable());
    let host = Host::with_interfaces("afm");
    let _l = listen("0.0.0.0:8080").bind_in(&host);
    let (_d, cfg) = config(&host, "public", "");
    let d = assert_cause(&host, &cfg, "address_family_mismatch");
    assert!(
        text(&d["summary"]).contains("(IPv4 only); [::1]:8080"),
        "{d}"
    );
    assert!(text(&d["fix"]).contains("IPV6_V6ONLY=0"), "{d}");
}

#[test]
fn nftables_reject_is_rejected() {
    needs!(netns::nft_unavailable());
    let host = Host::ipv4_only("rej");
    let _l = listen("0.0.0.0:8080").bind_in(&host);
    host.nft(
        "table inet portsight_test {\n chain input {\n  type filter hook input priority 0;\n  \
         ip daddr 10.77.0.0/24 tcp dport 8080 reject\n }\n}\n",
    );
    let (_d, cfg) = config(&host, "public", "");
    let d = assert_cause(&host, &cfg, "rejected");
    assert!(text(&d["summary"]).contains("covers 10.77.0.1:8080 and 10.77.0.2:8080, yet it was rejected by rule (inet portsight_test input, handle 2: ip daddr 10.77.0.0/24 tcp dport 8080 reject with icmp port-unreachable) from the interface vantage"), "{d}");
    assert!(
        text(&d["fix"]).contains("nft delete rule inet portsight_test input handle 2"),
        "{d}"
    );
}

#[test]
fn nftables_drop_is_filtered_while_loopback_answers() {
    needs!(netns::nft_unavailable());
    let host = Host::ipv4_only("drop");
    let _l = listen("0.0.0.0:8080").bind_in(&host);
    host.nft(
        "table inet portsight_test {\n chain input {\n  type filter hook input priority 0;\n  \
         ip daddr 10.77.0.1 tcp dport 8080 drop\n }\n}\n",
    );
    let (_d, cfg) = config(&host, "public", "");
    let (_, port) = check(&host, &cfg);
    let loopback = port["probes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["target"] == "127.0.0.1:8080")
        .cloned();
    assert_eq!(
        loopback.map(|p| p["outcome"].clone()),
        Some(Value::from("success")),
        "{port:#}"
    );
    let d = assert_cause(&host, &cfg, "filtered");
    assert_eq!(
        text(&d["summary"]),
        "10.77.0.1:8080 timed out from the interface vantage while 127.0.0.1:8080 answered: it was dropped by rule (inet portsight_test input, handle 2: ip daddr 10.77.0.1 tcp dport 8080 drop)"
    );
}

#[test]
fn full_accept_queue() {
    needs!(netns::unavailable());
    let host = Host::ipv4_only("aq");
    // Backlog 1, never accepting: the kernel queues two, then drops.
    let _l = listen("0.0.0.0:8080").backlog(1).bind_in(&host);
    let _clients: Vec<TcpStream> = host.run(|| {
        (0..4)
            .filter_map(|_| {
                TcpStream::connect_timeout(
                    &"127.0.0.1:8080".parse().unwrap(),
                    Duration::from_millis(300),
                )
                .ok()
            })
            .collect()
    });
    let (_d, cfg) = config(&host, "public", "");
    let (_, port) = check(&host, &cfg);
    let listener = &port["listeners"][0];
    assert_eq!(listener["accept_queue_limit"], 1, "{port:#}");
    assert_eq!(listener["accept_queue_length"], 2, "{port:#}");
    let d = assert_cause(&host, &cfg, "accept_queue_full");
    assert!(
        text(&d["summary"]).contains("holds 2 connections, limit 1: new connections are dropped"),
        "{d}"
    );
    // Each probe's SYN to the full queue is dropped: the kernel's
    // ListenOverflows grows between two scans, and the evidence says so.
    let served = serve(&host, &cfg);
    served.within_scans(100, "the kernel's drops in the evidence", |_| {
        let status = served.status();
        let evidence = status["ports"][0]["diagnosis"]["evidence"].to_string();
        if evidence.contains("connections to full accept queues") {
            Ok(())
        } else {
            Err(evidence)
        }
    });
}

#[test]
fn closed_policy_with_a_listener() {
    needs!(netns::unavailable());
    let host = Host::with_interfaces("cl");
    let _l = listen("0.0.0.0:8080").bind_in(&host);
    let (_d, cfg) = config(&host, "closed", "");
    let d = assert_cause(&host, &cfg, "unexpected_listener");
    assert!(
        text(&d["summary"]).ends_with("on a port whose policy is closed"),
        "{d}"
    );
}

#[test]
fn a_listener_that_goes_away_and_comes_back_is_transient_then_ok() {
    needs!(netns::unavailable());
    let host = Host::ipv4_only("tr");
    let listener = listen("0.0.0.0:8080").bind_in(&host);
    let (_d, cfg) = config(&host, "public", "");
    let served = serve(&host, &cfg);
    wait_served(&served, "ok");
    drop(listener);
    wait_served(&served, "not_listening");
    // The scan sees the loss first; wait for the re-probe that measures it,
    // so the failure history names a target and a vantage.
    wait_for(
        Duration::from_secs(15),
        "the re-probe of the lost port",
        || {
            let summary = text(&served.status()["ports"][0]["diagnosis"]["summary"]);
            if summary.contains("refused") {
                Ok(())
            } else {
                Err(summary)
            }
        },
    );
    let _back = listen("0.0.0.0:8080").bind_in(&host);
    wait_served(&served, "transient");
    let status = served.status();
    let summary = text(&status["ports"][0]["diagnosis"]["summary"]);
    assert!(
        summary.starts_with("reachable now, but it was not_listening at ")
            && summary.contains("8080 from the"),
        "names the time and vantage of the failure: {summary}"
    );
    // transient_window is 3s.
    wait_served(&served, "ok");
    // A one-shot check has no history: it says ok at once.
    let (code, port) = check(&host, &cfg);
    assert_eq!((code, port["diagnosis"]["cause"].as_str()), (0, Some("ok")));
}

#[test]
fn healthy_dual_stack_server_is_ok() {
    needs!(netns::unavailable());
    let host = Host::with_interfaces("ok");
    let _v4 = listen("0.0.0.0:8080").bind_in(&host);
    let _v6 = listen("[::]:8080").v6only(true).bind_in(&host);
    let (_d, cfg) = config(&host, "public", "");
    let d = assert_cause(&host, &cfg, "ok");
    assert_eq!(
        text(&d["summary"]),
        "reachable as expected (public): loopback 2/2 answered, interface 4/4 answered, external not measured"
    );
}
