//! Hostile clients and local users (issue 14), against `portsight serve` in
//! network namespaces of its own: a client holding connections, a low
//! descriptor limit, a user binding ports in a loop. Needs root; skips
//! without it (fails in CI).

mod support;

use std::net::{SocketAddr, TcpStream};

use socket2::{Domain, Socket, Type};
use support::netns::{self, Host};
use support::{Sample, listen, metric, needs};

const WEB: &str = "127.0.0.1:10917";

fn config_file(dir: &tempfile::TempDir, text: &str) -> String {
    let path = dir.path().join("portsight.toml");
    std::fs::write(&path, text).unwrap();
    path.to_string_lossy().into_owned()
}

fn probe_rounds(m: &[Sample]) -> u64 {
    metric(m, "portsight_cycle_duration_seconds_count")
        .label("stage", "probe")
        .value()
        .unwrap_or(0.0) as u64
}

/// `n` idle connections to `to`, from the source address `from`.
fn hold_connections(from: &str, to: SocketAddr, n: usize) -> Vec<TcpStream> {
    let from: SocketAddr = format!("{from}:0").parse().unwrap();
    (0..n)
        .map(|_| {
            let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
            s.bind(&from.into()).unwrap();
            s.connect(&to.into()).unwrap();
            s.into()
        })
        .collect()
}

/// With the descriptor limit at 512 (as a systemd unit may set it), one
/// client opens 1,000 idle connections. Without connection limits
/// portsight took them until it ran out of descriptors: scrapes waited
/// behind them, and probes failed with EMFILE, turning a healthy port into
/// a false diagnosis.
#[test]
fn one_client_holding_connections_delays_no_scrape_and_fails_no_probe() {
    needs!(netns::unavailable());
    let host = Host::new("hog");
    let _web = listen("[::]:8080").v6only(false).bind_in(&host);
    let dir = tempfile::tempdir().unwrap();
    let cfg = config_file(
        &dir,
        "[scan]\ninterval = \"200ms\"\n[probe]\ninterval = \"1s\"\n\
         [discover]\nenabled = false\n[[port]]\nport = 8080\nname = \"web\"\nexpect = \"local\"\n",
    );
    let mut p = host.serve_with(
        &["prlimit", "--nofile=512:512"],
        &[],
        &["--config", &cfg, "--web.listen-address", WEB],
    );
    p.wait_ready();
    let addr = p.addr;
    let held = p.run(|| hold_connections("127.0.0.2", addr, 1000));
    let rounds = probe_rounds(&p.scrape());
    // Two full probe rounds while the connections are held; every scrape
    // (from 127.0.0.1, another client) is answered.
    let m = p.within_scans(50, "two probe rounds with 1,000 connections held", |m| {
        let now = probe_rounds(m);
        if now >= rounds + 2 {
            Ok(m.to_vec())
        } else {
            Err(format!("{rounds} -> {now} rounds"))
        }
    });
    for target in ["127.0.0.1:8080", "[::1]:8080"] {
        assert_eq!(
            metric(&m, "portsight_probe_outcome")
                .label("target", target)
                .state("outcome")
                .as_deref(),
            Some("success"),
            "{target}"
        );
    }
    assert_eq!(
        metric(&m, "portsight_port_diagnosis")
            .label("port", 8080)
            .state("cause")
            .as_deref(),
        Some("ok")
    );
    let errors = metric(&m, "portsight_probes_total")
        .label("outcome", "error")
        .all();
    assert!(errors.iter().all(|s| s.value == 0.0), "{errors:?}");
    let open = std::fs::read_dir(format!("/proc/{}/fd", p.process.child.id()))
        .unwrap()
        .count();
    assert!(
        open < 200,
        "{open} descriptors open: the connections are capped"
    );
    drop(held);
}

#[test]
fn the_soft_descriptor_limit_is_raised_to_the_hard_limit() {
    needs!(netns::unavailable());
    let host = Host::new("nofile");
    let mut p = host.serve_with(
        &["prlimit", "--nofile=256:4096"],
        &[],
        &["--web.listen-address", WEB],
    );
    p.wait_ready();
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", p.process.child.id())).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let numbers: Vec<&str> = line.split_whitespace().skip(3).take(2).collect();
    assert_eq!(numbers, ["4096", "4096"], "{line}");
}

fn discovered(m: &[Sample]) -> Vec<u16> {
    metric(m, "portsight_port_info")
        .label("origin", "discovered")
        .all()
        .iter()
        .filter_map(|s| s.labels.iter().find(|(k, _)| k == "port"))
        .map(|(_, v)| v.parse().unwrap())
        .collect()
}

/// A local user binds 30 ports for a moment, then 10 for good: the first
/// never become watched (so never `not_listening`), and of the others no
/// more than `max_ports` are, the rest counted and logged once.
#[test]
fn discovery_watches_only_ports_that_lived_for_min_age_and_at_most_max_ports() {
    needs!(netns::unavailable());
    let host = Host::new("flood");
    let dir = tempfile::tempdir().unwrap();
    let cfg = config_file(
        &dir,
        "[scan]\ninterval = \"100ms\"\n[probe]\ninterval = \"1s\"\n\
         [discover]\nmin_age = \"3s\"\nmax_ports = 5\n",
    );
    let mut p = host.serve(&["--config", &cfg, "--web.listen-address", WEB]);
    p.wait_ready();
    let scrape = || p.scrape();

    let brief: Vec<_> = (20000..20030)
        .map(|port| listen(&format!("127.0.0.1:{port}")).bind_in(&host))
        .collect();
    support::wait_scans(scrape, 2);
    drop(brief);
    // 40 scans are at least 4 s (one per 100 ms at most): past min_age.
    let first = support::scans(&p.scrape());
    p.within_scans(400, "40 scans after the brief listeners went", |m| {
        let seen = discovered(m);
        assert!(
            seen.iter().all(|port| !(20000..20030).contains(port)),
            "a port that lived for a moment is watched: {seen:?}"
        );
        if support::scans(m) >= first + 40 {
            Ok(())
        } else {
            Err(format!("{} scans", support::scans(m) - first))
        }
    });

    let _lasting: Vec<_> = (21000..21010)
        .map(|port| listen(&format!("127.0.0.1:{port}")).bind_in(&host))
        .collect();
    // Its own port (10917) and 10 more listen: 5 are watched, 6 left out.
    p.within_scans(200, "the cap to fill", |m| {
        let seen = discovered(m);
        let left = metric(m, "portsight_discovery_ports_left_out").value();
        if seen.len() == 5 && left == Some(6.0) {
            Ok(())
        } else {
            Err(format!("discovered {seen:?}, left out {left:?}"))
        }
    });
    support::wait_scans(|| p.scrape(), 10);
    let logged = p.log_text().matches("discovery cap reached").count();
    assert_eq!(logged, 1, "{}", p.log_text());
}
