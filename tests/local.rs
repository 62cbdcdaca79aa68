//! The sidecar in this process, on real sockets on loopback: only ports the
//! test opened are watched (discovery off, interface vantage off; the
//! interface vantage is tested in a namespace of its own in `netns.rs`).

mod support;

use std::net::TcpListener;
use std::path::PathBuf;
use std::time::Duration;

use portsight::config::{Config, Expect};
use support::sidecar::{self, start};
use support::{Sample, closed_port, get, http, listen, metric, parse_metrics, skip};

/// Watches `ports`, named `p<port>`, expected public.
fn config(ports: &[u16]) -> Config {
    let names: Vec<String> = ports.iter().map(|p| format!("p{p}")).collect();
    let spec: Vec<(u16, &str, Expect)> = ports
        .iter()
        .zip(&names)
        .map(|(p, n)| (*p, n.as_str(), Expect::Public))
        .collect();
    sidecar::config(&spec)
}

fn ipv6_up() -> bool {
    TcpListener::bind("[::1]:0").is_ok()
}

fn outcome(m: &[Sample], port: u16, target: &str) -> Option<String> {
    metric(m, "portsight_probe_outcome")
        .label("port", port)
        .label("target", target)
        .state("outcome")
}

#[test]
fn loopback_listener_is_listening_and_answers_on_loopback_only() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let s = start(config(&[port]), None, true);
    s.wait_ready();
    let m = s.scrape();
    let name = format!("p{port}");
    assert_eq!(
        metric(&m, "portsight_port_listening")
            .label("port", port)
            .label("name", &name)
            .value(),
        Some(1.0)
    );
    assert_eq!(
        metric(&m, "portsight_port_info")
            .label("port", port)
            .label("expect", "public")
            .label("origin", "config")
            .value(),
        Some(1.0)
    );
    let me = std::fs::read_to_string("/proc/self/comm").unwrap();
    assert_eq!(
        metric(&m, "portsight_listener_info")
            .label("port", port)
            .label("address", "127.0.0.1")
            .label("scope", "loopback")
            .label("process", me.trim())
            .value(),
        Some(1.0),
        "listener_info names the bind address, its scope and this test process"
    );
    assert_eq!(
        metric(&m, "portsight_listener_accept_queue_limit")
            .label("port", port)
            .value(),
        Some(128.0),
        "std's listen backlog"
    );
    assert_eq!(
        metric(&m, "portsight_listener_accept_queue_length")
            .label("port", port)
            .value(),
        Some(0.0)
    );
    let v4 = format!("127.0.0.1:{port}");
    assert_eq!(
        metric(&m, "portsight_probe_success")
            .label("port", port)
            .label("vantage", "loopback")
            .label("source", "local")
            .label("target", &v4)
            .value(),
        Some(1.0)
    );
    assert_eq!(outcome(&m, port, &v4).as_deref(), Some("success"));
    assert!(
        metric(&m, "portsight_probe_duration_seconds")
            .label("target", &v4)
            .value()
            .unwrap()
            > 0.0
    );
    if ipv6_up() {
        assert_eq!(
            outcome(&m, port, &format!("[::1]:{port}")).as_deref(),
            Some("refused")
        );
    }
    drop(listener);
}

/// "Within two scan intervals" counted in the engine's own scans, not in
/// wall-clock time: the scan running when the listener closes may have read
/// the sockets before, the next one sees it gone and re-probes at once; by
/// the third scan counted after the close, both show.
#[test]
fn a_closed_listener_flips_to_not_listening_within_two_scan_intervals() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    // Probes every 600 s: only the re-probe that a scan triggers can see
    // the change within a few scans. The default scan interval (1 s) leaves
    // the re-probe a whole interval to finish on a loaded machine.
    let mut cfg = config(&[port]);
    cfg.scan.interval = Duration::from_secs(1);
    let s = start(cfg, None, true);
    s.wait_ready();
    let target = format!("127.0.0.1:{port}");
    assert_eq!(
        outcome(&s.scrape(), port, &target).as_deref(),
        Some("success")
    );
    drop(listener);
    s.within_scans(3, "not listening and refused", |m| {
        let listening = metric(m, "portsight_port_listening")
            .label("port", port)
            .value();
        let o = outcome(m, port, &target);
        if listening == Some(0.0) && o.as_deref() == Some("refused") {
            Ok(())
        } else {
            Err(format!("listening={listening:?} outcome={o:?}"))
        }
    });
    let m = s.scrape();
    assert_eq!(
        metric(&m, "portsight_listener_info")
            .label("port", port)
            .all()
            .len(),
        0,
        "the listener's series are gone"
    );
    let refused = metric(&m, "portsight_probes_total")
        .label("target", &target)
        .label("outcome", "refused")
        .value();
    assert!(refused >= Some(1.0), "the refusal is counted: {refused:?}");

    // The service comes back on the same port: the count of its refusals stays.
    let _back = TcpListener::bind(format!("127.0.0.1:{port}")).unwrap();
    s.within_scans(3, "success again", |m| {
        let o = outcome(m, port, &target);
        if o.as_deref() == Some("success") {
            Ok(())
        } else {
            Err(format!("{o:?}"))
        }
    });
    let m = s.scrape();
    let after = metric(&m, "portsight_probes_total")
        .label("target", &target)
        .label("outcome", "refused")
        .value();
    assert_eq!(
        after, refused,
        "a restart does not reset portsight_probes_total"
    );
}

#[test]
fn wildcard_listener_answers_on_loopback() {
    let listener = TcpListener::bind("0.0.0.0:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let s = start(config(&[port]), None, true);
    s.wait_ready();
    let m = s.scrape();
    assert_eq!(
        metric(&m, "portsight_listener_info")
            .label("port", port)
            .label("address", "0.0.0.0")
            .label("scope", "any")
            .value(),
        Some(1.0)
    );
    assert_eq!(
        outcome(&m, port, &format!("127.0.0.1:{port}")).as_deref(),
        Some("success")
    );
}

#[test]
fn ipv6_listener_answers_on_ipv6_loopback_only() {
    if !ipv6_up() {
        skip("IPv6 is not up on lo");
        return;
    }
    let listener = TcpListener::bind("[::1]:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let s = start(config(&[port]), None, true);
    s.wait_ready();
    let m = s.scrape();
    assert_eq!(
        metric(&m, "portsight_listener_info")
            .label("port", port)
            .label("address", "::1")
            .label("scope", "loopback")
            .value(),
        Some(1.0)
    );
    assert_eq!(
        outcome(&m, port, &format!("[::1]:{port}")).as_deref(),
        Some("success")
    );
    assert_eq!(
        outcome(&m, port, &format!("127.0.0.1:{port}")).as_deref(),
        Some("refused")
    );
}

#[test]
fn a_port_without_listener_is_refused() {
    let closed = closed_port();
    let port = closed.port;
    let s = start(config(&[port]), None, true);
    s.wait_ready();
    let m = s.scrape();
    assert_eq!(
        metric(&m, "portsight_port_listening")
            .label("port", port)
            .value(),
        Some(0.0)
    );
    assert_eq!(
        outcome(&m, port, &format!("127.0.0.1:{port}")).as_deref(),
        Some("refused")
    );
    assert_eq!(
        metric(&m, "portsight_probe_success")
            .label("target", format!("127.0.0.1:{port}"))
            .value(),
        Some(0.0)
    );
}

#[test]
fn ready_only_after_the_first_cycle() {
    let closed = closed_port();
    let s = start(config(&[closed.port]), None, false);
    let r = get(s.addr, "/-/ready");
    assert_eq!(r.status, 503);
    assert!(r.body.contains("Not ready"), "{}", r.body);
    assert_eq!(
        get(s.addr, "/-/healthy").status,
        200,
        "healthy while not ready"
    );
}

#[test]
fn http_endpoints() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let s = start(config(&[port]), None, true);
    s.wait_ready();

    let r = get(s.addr, "/");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("text/html; charset=utf-8"));
    let csp = r.header("content-security-policy").unwrap_or_default();
    assert!(
        csp.starts_with("default-src 'none'; style-src 'sha256-"),
        "the page may run no script: {csp:?}"
    );
    assert!(
        r.body.contains("href=\"metrics\""),
        "the landing page links /metrics"
    );
    assert!(
        r.body.contains(&format!("<td>{port}</td>")),
        "one row per port"
    );

    let r = get(s.addr, "/metrics");
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let m = parse_metrics(&r.body);
    for name in [
        "portsight_build_info",
        "portsight_config_last_reload_successful",
        "portsight_config_last_reload_success_timestamp_seconds",
        "portsight_cycle_duration_seconds_count",
        "portsight_last_cycle_timestamp_seconds",
        "process_resident_memory_bytes",
    ] {
        assert!(!metric(&m, name).all().is_empty(), "{name} missing");
    }
    // The test runs as root: netlink works, the /proc fallback is unused.
    // Owners are reported either way; whether all of them are found
    // depends on the machine: this one's PID 1 hides its descriptors' links
    // even from root, and its listener is in this (the root) namespace.
    // tests/package.rs asserts owners 1 and 0 in a namespace of its own.
    let source = |name| {
        metric(&m, "portsight_source_up")
            .label("source", name)
            .value()
    };
    assert_eq!((source("netlink"), source("procfs")), (Some(1.0), None));
    assert!(
        source("owners").is_some(),
        "portsight_source_up{{source=\"owners\"}} missing"
    );
    for stage in ["scan", "probe"] {
        assert!(
            metric(&m, "portsight_last_cycle_timestamp_seconds")
                .label("stage", stage)
                .value()
                > Some(1.7e9),
            "{stage} timestamp"
        );
    }

    assert_eq!(get(s.addr, "/-/healthy").status, 200);
    assert_eq!(get(s.addr, "/-/ready").status, 200);
    assert_eq!(http("HEAD", s.addr, "/-/healthy").status, 200);

    let r = http("POST", s.addr, "/metrics");
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("GET, HEAD"));
    let r = http("GET", s.addr, "/-/reload");
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("POST, PUT"));
    let r = http("POST", s.addr, "/-/reload");
    assert_eq!(r.status, 403, "reload is off unless web.enable_lifecycle");
    assert!(
        r.body.starts_with("Lifecycle API is not enabled"),
        "{}",
        r.body
    );
    let r = get(s.addr, "/nothing-here");
    assert_eq!(r.status, 404);
    assert!(r.body.contains("Not found"));
}

#[test]
fn reload_applies_a_good_config_and_keeps_the_running_one_on_a_bad_one() {
    let (a, b) = (closed_port(), closed_port());
    let (a, b) = (a.port, b.port);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("portsight.toml");
    let write = |ports: &[u16], extra: &str| {
        let mut text = String::from(
            "[web]\nenable_lifecycle = true\n[discover]\nenabled = false\n[vantage]\ninterfaces = false\n",
        );
        for p in ports {
            text.push_str(&format!("[[port]]\nport = {p}\n"));
        }
        text.push_str(extra);
        std::fs::write(&file, text).unwrap();
    };
    write(&[a], "");
    let s = start(sidecar::load(&file), Some(file.clone()), true);
    s.wait_ready();
    let watched = |m: &[Sample], p: u16| metric(m, "portsight_port_info").label("port", p).value();
    assert_eq!(watched(&s.scrape(), a), Some(1.0));

    write(&[a, b], "");
    let r = http("POST", s.addr, "/-/reload");
    assert_eq!(r.status, 200, "{}", r.body);
    s.within_scans(3, "the new port to be watched", |m| {
        watched(m, b).ok_or_else(|| "not yet".to_string())
    });

    write(&[b], "[probe]\ntimeout = \"bogus\"\n");
    let r = http("POST", s.addr, "/-/reload");
    assert_eq!(r.status, 500);
    assert!(
        r.body.contains("the running configuration is kept")
            && r.body
                .contains("probe.timeout: invalid value: string \"bogus\", expected a duration"),
        "{}",
        r.body
    );
    let m = s.scrape();
    assert_eq!(
        metric(&m, "portsight_config_last_reload_successful").value(),
        Some(0.0)
    );
    // Scans go on under the running config: by the third scan counted
    // after the failed reload, one has started and published after it.
    s.wait_scans(3);
    let m = s.scrape();
    assert_eq!(
        watched(&m, a),
        Some(1.0),
        "the running config still watches {a}"
    );
    assert_eq!(watched(&m, b), Some(1.0));
}

/// A reload that changes only what the diagnosis says (no port, no probe)
/// shows at the next scan, although the scan itself found nothing new; and
/// the JSON's `scanned_at` moves with every scan meanwhile.
#[test]
fn a_reload_shows_at_the_next_scan_even_when_the_scan_finds_nothing_new() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("portsight.toml");
    let write = |interfaces: bool| {
        let text = format!(
            "[web]\nenable_lifecycle = true\n[discover]\nenabled = false\n[scan]\ninterval = \"300ms\"\n[probe]\ninterval = \"10m\"\n[vantage]\ninterfaces = {interfaces}\n[[port]]\nport = {port}\n"
        );
        std::fs::write(&file, text).unwrap();
    };
    write(false);
    let s = start(sidecar::load(&file), Some(file.clone()), true);
    s.wait_ready();
    let status = || {
        let r = get(s.addr, "/api/v1/status");
        assert_eq!(r.status, 200);
        serde_json::from_str::<serde_json::Value>(&r.body).unwrap()
    };
    let evidence = |json: &serde_json::Value| json["ports"][0]["diagnosis"]["evidence"].to_string();
    let first = status();
    assert!(
        evidence(&first).contains("interface: not measured (turned off in the config)"),
        "{first}"
    );
    s.wait_scans(2);
    let again = status();
    assert_ne!(again["scanned_at"], first["scanned_at"], "{again}");

    write(true);
    let r = http("POST", s.addr, "/-/reload");
    assert_eq!(r.status, 200, "{}", r.body);
    s.within_scans(3, "the reloaded vantages in the diagnosis", |_| {
        let json = status();
        if evidence(&json).contains("interface: not measured yet") {
            Ok(())
        } else {
            Err(json.to_string())
        }
    });
    drop(l);
}

#[test]
fn promtool_finds_nothing_in_real_output() {
    let Ok(promtool) = which("promtool") else {
        skip("promtool is not installed (apt-get install prometheus)");
        return;
    };
    let l4 = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l4.local_addr().unwrap().port();
    // Two SO_REUSEPORT sockets on one address, as pre-forked servers have:
    // one series, not a repeated label set.
    let shared = listen("127.0.0.1:0").backlog(16).reuse_port().bind();
    let shared_port = shared.local_addr().unwrap().port();
    let _twin = listen(&format!("127.0.0.1:{shared_port}"))
        .backlog(16)
        .reuse_port()
        .bind();
    let closed = closed_port();
    let s = start(config(&[port, shared_port, closed.port]), None, true);
    s.wait_ready();
    let body = get(s.addr, "/metrics").body;
    let m = parse_metrics(&body);
    assert_eq!(
        metric(&m, "portsight_listener_info")
            .label("port", shared_port)
            .all()
            .len(),
        1
    );
    assert_eq!(
        metric(&m, "portsight_listener_accept_queue_length")
            .label("port", shared_port)
            .all()
            .len(),
        1
    );
    let mut child = std::process::Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let findings = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && findings.trim().is_empty(),
        "promtool: {findings}"
    );
}

fn which(cmd: &str) -> Result<PathBuf, ()> {
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|p| p.join(cmd))
                .find(|p| p.is_file())
        })
        .ok_or(())
}
