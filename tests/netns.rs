//! `portsight serve` as users run it, on hosts built in network namespaces of
//! their own (10.77.0.0/16, fd77::/16): the interface vantage and discovery,
//! where the only listeners are the test's. Needs root; skips without it
//! (fails in CI).

mod support;

use std::time::Duration;

use nix::sys::signal::Signal;
use support::netns::{self, Host};
use support::{Sample, listen, metric, needs};

const WEB: &str = "127.0.0.1:10917";

fn outcome(m: &[Sample], target: &str) -> Option<String> {
    metric(m, "portsight_probe_outcome")
        .label("target", target)
        .state("outcome")
}

fn config_file(dir: &tempfile::TempDir, text: &str) -> String {
    let path = dir.path().join("portsight.toml");
    std::fs::write(&path, text).unwrap();
    path.to_string_lossy().into_owned()
}

#[test]
fn loopback_bound_listener_is_refused_on_the_interfaces() {
    needs!(netns::unavailable());
    let host = Host::with_interfaces("ifref");
    let _listener = listen("127.0.0.1:8080").bind_in(&host);
    let dir = tempfile::tempdir().unwrap();
    let cfg = config_file(
        &dir,
        "[discover]\nenabled = false\n[[port]]\nport = 8080\nname = \"web\"\n",
    );
    let mut p = host.serve(&["--config", &cfg, "--web.listen-address", WEB]);
    p.wait_ready();
    let m = p.scrape();
    assert_eq!(outcome(&m, "127.0.0.1:8080").as_deref(), Some("success"));
    assert_eq!(outcome(&m, "[::1]:8080").as_deref(), Some("refused"));
    for target in [
        "10.77.0.1:8080",
        "10.77.0.2:8080",
        "[fd77::1]:8080",
        "[fd77::2]:8080",
    ] {
        assert_eq!(outcome(&m, target).as_deref(), Some("refused"), "{target}");
        assert_eq!(
            metric(&m, "portsight_probe_success")
                .label("vantage", "interface")
                .label("source", "local")
                .label("target", target)
                .label("name", "web")
                .value(),
            Some(0.0)
        );
    }
    assert_eq!(
        metric(&m, "portsight_probe_outcome")
            .label("vantage", "interface")
            .all()
            .len(),
        4 * 5,
        "exactly the four interface addresses, five outcomes each: {:?}",
        metric(&m, "portsight_probe_outcome")
            .label("vantage", "interface")
            .all()
    );
}

#[test]
fn wildcard_listener_answers_on_every_ipv4_address() {
    needs!(netns::unavailable());
    let host = Host::with_interfaces("ifany");
    let _listener = listen("0.0.0.0:8080").bind_in(&host);
    let dir = tempfile::tempdir().unwrap();
    let cfg = config_file(&dir, "[discover]\nenabled = false\n[[port]]\nport = 8080\n");
    let mut p = host.serve(&["--config", &cfg, "--web.listen-address", WEB]);
    p.wait_ready();
    let m = p.scrape();
    for target in ["127.0.0.1:8080", "10.77.0.1:8080", "10.77.0.2:8080"] {
        assert_eq!(outcome(&m, target).as_deref(), Some("success"), "{target}");
    }
    // An IPv4 wildcard does not cover IPv6.
    assert_eq!(outcome(&m, "[fd77::1]:8080").as_deref(), Some("refused"));
}

#[test]
fn default_config_discovers_listeners_and_keeps_a_vanished_one() {
    needs!(netns::unavailable());
    let host = Host::with_interfaces("disc");
    let (listener, ephemeral) = (
        listen("0.0.0.0:8080").bind_in(&host),
        listen("0.0.0.0:0").bind_in(&host),
    );
    let ephemeral_port = ephemeral.local_addr().unwrap().port();
    // The embedded default, as the README's first command runs it, but
    // discovering at once (discover.min_age is 1m).
    let mut p = host.serve_with(&[], &[("PORTSIGHT__DISCOVER__MIN_AGE", "0s")], &[]);
    assert_eq!(
        p.listen,
        "[::]:10917".parse().unwrap(),
        "the default listen address: every address of both families"
    );
    p.wait_ready();
    let me = std::fs::read_to_string("/proc/self/comm").unwrap();
    let m = p.scrape();
    assert_eq!(
        metric(&m, "portsight_port_info")
            .label("port", 8080)
            .label("name", me.trim())
            .label("origin", "discovered")
            .label("expect", "internal")
            .value(),
        Some(1.0),
        "{:?}",
        metric(&m, "portsight_port_info").all()
    );
    assert_eq!(
        metric(&m, "portsight_port_info")
            .label("port", 10917)
            .label("origin", "discovered")
            .value(),
        Some(1.0),
        "its own port is a listener like any other"
    );
    assert_eq!(
        metric(&m, "portsight_port_info")
            .label("port", ephemeral_port)
            .value(),
        None,
        "ports in the ephemeral range are not discovered"
    );
    assert_eq!(outcome(&m, "10.77.0.1:8080").as_deref(), Some("success"));
    assert_eq!(
        metric(&m, "portsight_port_diagnosis")
            .label("port", 10917)
            .state("cause")
            .as_deref(),
        Some("ok"),
        "its own port answers on both families"
    );

    drop(listener);
    // A vanished listener shows within about one scan (1 s by default): the
    // scan that sees it gone re-probes at once.
    // (The scan publishes "not listening" before its re-probe answers, so
    // both are waited for.)
    p.within_scans(3, "8080 to be reported not listening and refused", |m| {
        let listening = metric(m, "portsight_port_listening")
            .label("port", 8080)
            .value();
        let o = outcome(m, "10.77.0.1:8080");
        if listening == Some(0.0) && o.as_deref() == Some("refused") {
            Ok(())
        } else {
            Err(format!("listening = {listening:?}, outcome = {o:?}"))
        }
    });
    let m = p.scrape();
    assert_eq!(
        metric(&m, "portsight_port_info")
            .label("port", 8080)
            .label("origin", "discovered")
            .value(),
        Some(1.0),
        "a vanished discovered port stays watched"
    );
    assert_eq!(outcome(&m, "10.77.0.1:8080").as_deref(), Some("refused"));
}

#[test]
fn sigterm_stops_serve_cleanly() {
    needs!(netns::unavailable());
    let host = Host::new("term");
    let mut p = host.serve(&["--web.listen-address", WEB]);
    p.wait_ready();
    // `ip netns exec` execs portsight, so the child's pid is portsight's.
    p.signal(Signal::SIGTERM);
    let status = p.process.wait_exit(Duration::from_secs(15));
    assert!(status.success(), "{status}: {}", p.log_text());
    assert!(
        p.log_text().contains("SIGTERM: shutting down"),
        "{}",
        p.log_text()
    );
}
