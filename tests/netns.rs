//! `portsight serve` as users run it, on hosts built in network namespaces of
//! their own (10.77.0.0/16, fd77::/16): the interface vantage and discovery,
//! where the only listeners are the test's. Needs root; skips without it
//! (fails in CI).

mod support;

use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

use support::netns::{self, Host};
use support::{Sample, get, metric, parse_metrics, skip, wait_for};

const WEB: &str = "127.0.0.1:10917";

fn web() -> SocketAddr {
    WEB.parse().unwrap()
}

fn scrape(host: &Host) -> Vec<Sample> {
    host.run(|| parse_metrics(&get(web(), "/metrics").body))
}

fn wait_ready(host: &Host, p: &mut support::Portsight) {
    p.address();
    wait_for(Duration::from_secs(15), "/-/ready", || {
        host.run(|| {
            let r = get(web(), "/-/ready");
            if r.status == 200 { Ok(()) } else { Err(r.body) }
        })
    });
}

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
    if let Some(reason) = netns::unavailable() {
        skip(&reason);
        return;
    }
    let host = Host::with_interfaces("ifref");
    let _listener = host.run(|| TcpListener::bind("127.0.0.1:8080").unwrap());
    let dir = tempfile::tempdir().unwrap();
    let cfg = config_file(
        &dir,
        "[discover]\nenabled = false\n[[port]]\nport = 8080\nname = \"web\"\n",
    );
    let mut p = host.spawn_portsight(&["serve", "--config", &cfg, "--web.listen-address", WEB]);
    wait_ready(&host, &mut p);
    let m = scrape(&host);
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
    if let Some(reason) = netns::unavailable() {
        skip(&reason);
        return;
    }
    let host = Host::with_interfaces("ifany");
    let _listener = host.run(|| TcpListener::bind("0.0.0.0:8080").unwrap());
    let dir = tempfile::tempdir().unwrap();
    let cfg = config_file(&dir, "[discover]\nenabled = false\n[[port]]\nport = 8080\n");
    let mut p = host.spawn_portsight(&["serve", "--config", &cfg, "--web.listen-address", WEB]);
    wait_ready(&host, &mut p);
    let m = scrape(&host);
    for target in ["127.0.0.1:8080", "10.77.0.1:8080", "10.77.0.2:8080"] {
        assert_eq!(outcome(&m, target).as_deref(), Some("success"), "{target}");
    }
    // An IPv4 wildcard does not cover IPv6.
    assert_eq!(outcome(&m, "[fd77::1]:8080").as_deref(), Some("refused"));
}

#[test]
fn default_config_discovers_listeners_and_keeps_a_vanished_one() {
    if let Some(reason) = netns::unavailable() {
        skip(&reason);
        return;
    }
    let host = Host::with_interfaces("disc");
    let (listener, ephemeral) = host.run(|| {
        (
            TcpListener::bind("0.0.0.0:8080").unwrap(),
            TcpListener::bind("0.0.0.0:0").unwrap(),
        )
    });
    let ephemeral_port = ephemeral.local_addr().unwrap().port();
    // The embedded default, as the README's first command runs it.
    let mut p = host.spawn_portsight(&["serve"]);
    let addr = p.address();
    assert_eq!(
        addr,
        "[::]:10917".parse().unwrap(),
        "the default listen address: every address of both families"
    );
    wait_ready(&host, &mut p);
    let me = std::fs::read_to_string("/proc/self/comm").unwrap();
    let m = scrape(&host);
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
    wait_for(
        Duration::from_secs(3),
        "8080 to be reported not listening",
        || {
            let m = scrape(&host);
            match metric(&m, "portsight_port_listening")
                .label("port", 8080)
                .value()
            {
                Some(0.0) => Ok(()),
                other => Err(format!("listening = {other:?}")),
            }
        },
    );
    let m = scrape(&host);
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
    if let Some(reason) = netns::unavailable() {
        skip(&reason);
        return;
    }
    let host = Host::new("term");
    let mut p = host.spawn_portsight(&["serve", "--web.listen-address", WEB]);
    wait_ready(&host, &mut p);
    // `ip netns exec` execs portsight, so the child's pid is portsight's.
    let pid = nix::unistd::Pid::from_raw(p.child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let status = wait_for(Duration::from_secs(15), "portsight to exit", || {
        p.child
            .try_wait()
            .unwrap()
            .ok_or_else(|| "running".to_string())
    });
    assert!(status.success(), "{status}: {}", p.log_text());
    assert!(
        p.log_text().contains("SIGTERM: shutting down"),
        "{}",
        p.log_text()
    );
}
