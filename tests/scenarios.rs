//! Scenario tests: each builds a small world in network namespaces, starts a
//! real server, and asserts the cause both from `portsight check --json` and
//! from /metrics of a running `portsight serve`. Needs root (and nftables for
//! the firewall scenarios); skips without them, fails in CI.

mod support;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use socket2::{Domain, Socket, Type};
use support::netns::{self, Host};
use support::{Portsight, get, metric, parse_metrics, skip, wait_for};

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
    let out = Command::new("ip")
        .args(["netns", "exec", &host.name, env!("CARGO_BIN_EXE_portsight")])
        .args(["check", "--json", "--config", cfg, &PORT.to_string()])
        .output()
        .unwrap();
    let json: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap_or(-1), json["ports"][0].clone())
}

fn serve(host: &Host, cfg: &str) -> Portsight {
    let mut p = host.spawn_portsight(&["serve", "--config", cfg, "--web.listen-address", WEB]);
    p.address();
    p
}

fn web() -> SocketAddr {
    WEB.parse().unwrap()
}

/// The cause /metrics reports for the port now.
fn served_cause(host: &Host) -> Option<String> {
    let m = host.run(|| parse_metrics(&get(web(), "/metrics").body));
    let total = metric(&m, "portsight_port_diagnosis")
        .label("port", PORT)
        .all()
        .len();
    assert!(
        total == 0 || total == 13,
        "every cause has a series: {total}"
    );
    metric(&m, "portsight_port_diagnosis")
        .label("port", PORT)
        .state("cause")
}

/// Polls /metrics until the port's cause is `cause`.
fn wait_served(host: &Host, cause: &str) {
    wait_for(
        Duration::from_secs(15),
        &format!("/metrics to say {cause}"),
        || {
            let now = served_cause(host);
            if now.as_deref() == Some(cause) {
                Ok(())
            } else {
                let status = host.run(|| get(web(), "/api/v1/status").body);
                Err(format!("{now:?}; status: {status}"))
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
    let _serve = serve(host, cfg);
    wait_served(host, cause);
    port["diagnosis"].clone()
}

fn text(v: &Value) -> String {
    v.as_str().unwrap_or_default().to_string()
}

fn bind(host: &Host, addr: &str) -> TcpListener {
    let addr: SocketAddr = addr.parse().unwrap();
    host.run(|| TcpListener::bind(addr).unwrap())
}

/// A listener with `backlog` and IPV6_V6ONLY set as given (IPv6 only).
fn bind_with(host: &Host, addr: &str, backlog: i32, v6only: Option<bool>) -> TcpListener {
    let addr: SocketAddr = addr.parse().unwrap();
    host.run(|| {
        let s = Socket::new(Domain::for_address(addr), Type::STREAM, None).unwrap();
        if let Some(only) = v6only {
            s.set_only_v6(only).unwrap();
        }
        s.set_reuse_address(true).unwrap();
        s.bind(&addr.into()).unwrap();
        s.listen(backlog).unwrap();
        s.into()
    })
}

macro_rules! needs {
    ($check:expr) => {
        if let Some(reason) = $check {
            skip(&reason);
            return;
        }
    };
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
    let _l = bind(&host, "127.0.0.1:8080");
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
    let _l = bind(&host, "127.0.0.1:8080");
    let (_d, cfg) = config(&host, "local", "");
    assert_cause(&host, &cfg, "ok");
}

#[test]
fn bound_to_one_interface_probed_on_another() {
    needs!(netns::unavailable());
    let host = Host::with_interfaces("be");
    let _l = bind(&host, "10.77.0.1:8080");
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
    let _l = bind(&host, "0.0.0.0:8080");
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
    let _l = bind(&host, "0.0.0.0:8080");
    host.nft(
        "table inet portsight_test {\n chain input {\n  type filter hook input priority 0;\n  \
         ip daddr 10.77.0.0/24 tcp dport 8080 reject\n }\n}\n",
    );
    let (_d, cfg) = config(&host, "public", "");
    let d = assert_cause(&host, &cfg, "rejected");
    assert!(text(&d["summary"]).contains("covers 10.77.0.1:8080 and 10.77.0.2:8080, yet it was refused from the interface vantage"), "{d}");
    assert!(
        text(&d["fix"]).contains("REJECT rules for port 8080"),
        "{d}"
    );
}

#[test]
fn nftables_drop_is_filtered_while_loopback_answers() {
    needs!(netns::nft_unavailable());
    let host = Host::ipv4_only("drop");
    let _l = bind(&host, "0.0.0.0:8080");
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
        "10.77.0.1:8080 timed out from the interface vantage while 127.0.0.1:8080 answered: packets to port 8080 are dropped"
    );
}

#[test]
fn full_accept_queue() {
    needs!(netns::unavailable());
    let host = Host::ipv4_only("aq");
    // Backlog 1, never accepting: the kernel queues two, then drops.
    let _l = bind_with(&host, "0.0.0.0:8080", 1, None);
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
}

#[test]
fn closed_policy_with_a_listener() {
    needs!(netns::unavailable());
    let host = Host::with_interfaces("cl");
    let _l = bind(&host, "0.0.0.0:8080");
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
    let listener = bind(&host, "0.0.0.0:8080");
    let (_d, cfg) = config(&host, "public", "");
    let _serve = serve(&host, &cfg);
    wait_served(&host, "ok");
    drop(listener);
    wait_served(&host, "not_listening");
    // The scan sees the loss first; wait for the re-probe that measures it,
    // so the failure history names a target and a vantage.
    wait_for(
        Duration::from_secs(15),
        "the re-probe of the lost port",
        || {
            let status = host.run(|| get(web(), "/api/v1/status").body);
            let status: Value = serde_json::from_str(&status).map_err(|e| e.to_string())?;
            let summary = text(&status["ports"][0]["diagnosis"]["summary"]);
            if summary.contains("refused") {
                Ok(())
            } else {
                Err(summary)
            }
        },
    );
    let _back = bind(&host, "0.0.0.0:8080");
    wait_served(&host, "transient");
    let status: Value =
        serde_json::from_str(&host.run(|| get(web(), "/api/v1/status").body)).unwrap();
    let summary = text(&status["ports"][0]["diagnosis"]["summary"]);
    assert!(
        summary.starts_with("reachable now, but it was not_listening at ")
            && summary.contains("8080 from the"),
        "names the time and vantage of the failure: {summary}"
    );
    // transient_window is 3s.
    wait_served(&host, "ok");
    // A one-shot check has no history: it says ok at once.
    let (code, port) = check(&host, &cfg);
    assert_eq!((code, port["diagnosis"]["cause"].as_str()), (0, Some("ok")));
}

#[test]
fn healthy_dual_stack_server_is_ok() {
    needs!(netns::unavailable());
    let host = Host::with_interfaces("ok");
    let _v4 = bind(&host, "0.0.0.0:8080");
    let _v6 = bind_with(&host, "[::]:8080", 128, Some(true));
    let (_d, cfg) = config(&host, "public", "");
    let d = assert_cause(&host, &cfg, "ok");
    assert_eq!(
        text(&d["summary"]),
        "reachable as expected (public): loopback 2/2 answered, interface 4/4 answered, external not measured"
    );
}
