//! The per-port families held by a golden file, their escaping checked by
//! promtool, and the rendering cache.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use super::{Metrics, write_snapshot};
use crate::config::{Expect, Protocol};
use crate::diagnosis::{Cause, Diagnosis};
use crate::probe::{Discarded, Outcome, OutcomeCounts, ProbeResult, Shortage, Target, Vantage};
use crate::snapshot::Origin;
use crate::snapshot::{PortStatus, Snapshot, Sources};
use crate::sockets::{Listener, Owner};

fn port(port: u16, name: &str, expect: Expect, origin: Origin, cause: Cause) -> PortStatus {
    PortStatus {
        port,
        protocol: Protocol::Tcp,
        name: name.to_string(),
        expect,
        origin,
        listeners: Vec::new(),
        probes: Vec::new(),
        diagnosis: Diagnosis {
            cause,
            summary: String::new(),
            fix: String::new(),
            evidence: Vec::new(),
            firewall: Vec::new(),
            failed: None,
        },
        since: std::time::SystemTime::UNIX_EPOCH,
        vantages: Default::default(),
        probe_counts: Vec::new(),
        netns: None,
        forward: None,
    }
}

/// A socket on `address:port`; `queue` is its accept queue length and limit.
fn listener(
    address: &str,
    port: u16,
    process: Option<&str>,
    queue: (u32, Option<u32>),
) -> Listener {
    let address: std::net::IpAddr = address.parse().unwrap();
    Listener {
        v6only: address.is_ipv6().then_some(true),
        accept_queue_length: queue.0,
        accept_queue_limit: queue.1,
        inode: 1000 + u64::from(port),
        owner: process.map(|name| Owner {
            pid: 4242,
            name: name.to_string(),
        }),
        ..Listener::on(address, port)
    }
}

/// Records a probe of `(vantage, source, IP:PORT)` on `p`: its latest
/// result (outcome, duration in µs) and its `attempts` per outcome.
fn probed(
    p: &mut PortStatus,
    (vantage, source, addr): (Vantage, &str, &str),
    last: (Outcome, u64),
    attempts: &[(Outcome, u64)],
) {
    let target = Target {
        vantage,
        source: source.to_string(),
        protocol: Protocol::Tcp,
        addr: addr.parse::<SocketAddr>().unwrap(),
        netns: crate::netns::NsId::OWN,
    };
    let mut counts = OutcomeCounts::default();
    for (o, n) in attempts {
        (0..*n).for_each(|_| counts.add(*o));
    }
    p.probes.push(ProbeResult {
        target: target.clone(),
        outcome: last.0,
        duration: Duration::from_micros(last.1),
        errno: None,
        error: None,
        at: SystemTime::UNIX_EPOCH,
        started: Instant::now(),
    });
    p.probe_counts.push((target, counts));
}

/// Ok, on both wildcards, seen from loopback, an interface and a peer.
fn web() -> PortStatus {
    let mut web = port(80, "web", Expect::Public, Origin::Config, Cause::Ok);
    web.listeners = vec![
        listener("0.0.0.0", 80, Some("nginx"), (0, Some(511))),
        listener("::", 80, Some("nginx"), (2, Some(511))),
    ];
    let v4 = (Vantage::Loopback, "local", "127.0.0.1:80");
    let v6 = (Vantage::Loopback, "local", "[::1]:80");
    let interface = (Vantage::Interface, "local", "10.0.0.5:80");
    let outside = (Vantage::External, "outside-1", "203.0.113.7:80");
    use Outcome::*;
    probed(&mut web, v4, (Success, 180), &[(Success, 12)]);
    probed(&mut web, v6, (Success, 210), &[(Success, 12)]);
    probed(
        &mut web,
        interface,
        (Success, 350),
        &[(Success, 11), (Timeout, 1)],
    );
    let attempts = [(Success, 3), (Timeout, 2), (Error, 1)];
    probed(&mut web, outside, (Success, 25_000), &attempts);
    web
}

/// Not listening.
fn api() -> PortStatus {
    let cause = Cause::NotListening;
    let mut api = port(443, "api", Expect::Internal, Origin::Config, cause);
    let v4 = (Vantage::Loopback, "local", "127.0.0.1:443");
    let interface = (Vantage::Interface, "local", "10.0.0.5:443");
    use Outcome::*;
    probed(&mut api, v4, (Refused, 90), &[(Refused, 7)]);
    probed(
        &mut api,
        interface,
        (Refused, 120),
        &[(Success, 2), (Refused, 5)],
    );
    api
}

/// On loopback only, owner hidden, no accept queue limit known.
fn db() -> PortStatus {
    let cause = Cause::LoopbackOnly;
    let mut db = port(5432, "postgres", Expect::Public, Origin::Config, cause);
    db.listeners = vec![listener("127.0.0.1", 5432, None, (0, None))];
    let interface = (Vantage::Interface, "local", "10.0.0.5:5432");
    use Outcome::*;
    probed(
        &mut db,
        interface,
        (Unreachable, 0),
        &[(Refused, 1), (Unreachable, 1)],
    );
    db
}

/// Discovered, two SO_REUSEPORT sockets on one address.
fn app() -> PortStatus {
    let origin = Origin::Discovered;
    let mut app = port(8080, "gunicorn", Expect::Auto, origin, Cause::Ok);
    app.listeners = vec![
        listener("0.0.0.0", 8080, Some("gunicorn"), (3, Some(128))),
        listener("0.0.0.0", 8080, Some("gunicorn"), (7, Some(64))),
    ];
    let v4 = (Vantage::Loopback, "local", "127.0.0.1:8080");
    probed(
        &mut app,
        v4,
        (Outcome::Success, 1500),
        &[(Outcome::Success, 4)],
    );
    app
}

/// Rejected by a rule of an inet table, and dropped by a chain's policy.
fn admin() -> PortStatus {
    use crate::netfilter::{Family as Nf, NamedRule, RuleVerdict};
    let mut admin = port(
        9090,
        "admin",
        Expect::Public,
        Origin::Config,
        Cause::Rejected,
    );
    admin.listeners = vec![listener("0.0.0.0", 9090, Some("admin"), (0, Some(128)))];
    let rule = |family, table: &str, chain: &str, handle, verdict, rule: &str| NamedRule {
        family,
        table: table.into(),
        chain: chain.into(),
        handle,
        verdict,
        comment: None,
        rule: rule.into(),
        may_match: None,
        iptables: false,
    };
    admin.diagnosis.firewall = vec![
        rule(
            Nf::Inet,
            "fw",
            "input",
            Some(7),
            RuleVerdict::Reject,
            "tcp dport 9090 reject",
        ),
        rule(
            Nf::Ip,
            "filter",
            "INPUT",
            None,
            RuleVerdict::Drop,
            "policy drop",
        ),
    ];
    admin
}

/// UDP, on loopback only (a stub resolver): no accept queue series.
fn dns() -> PortStatus {
    let cause = Cause::LoopbackOnly;
    let mut dns = port(53, "dns", Expect::Public, Origin::Config, cause);
    dns.protocol = Protocol::Udp;
    dns.listeners = vec![Listener {
        protocol: Protocol::Udp,
        ..listener("127.0.0.53", 53, Some("systemd-resolve"), (0, None))
    }];
    let v4 = (Vantage::Loopback, "local", "127.0.0.1:53");
    probed(
        &mut dns,
        v4,
        (Outcome::Refused, 60),
        &[(Outcome::Refused, 3)],
    );
    for r in &mut dns.probes {
        r.target.protocol = Protocol::Udp;
    }
    for (t, _) in &mut dns.probe_counts {
        t.protocol = Protocol::Udp;
    }
    dns
}

/// The container `web-1` (Docker), whose app listens on its loopback.
fn web1() -> crate::netns::Namespace {
    crate::netns::Namespace {
        name: "web-1".into(),
        container: Some("3f2a9c1b7d4e".into()),
        pod: None,
        inode: 4026532512,
        id: crate::netns::NsId::named("web-1"),
    }
}

/// Host port 8080 published (DNAT) to web-1's port 80.
fn published() -> PortStatus {
    let mut p = port(
        8080,
        "docker-proxy",
        Expect::Public,
        Origin::Discovered,
        Cause::LoopbackOnly,
    );
    p.listeners = vec![listener(
        "0.0.0.0",
        8080,
        Some("docker-proxy"),
        (0, Some(4096)),
    )];
    let backend = Listener {
        netns: crate::netns::NsId::named("web-1"),
        ..listener("127.0.0.1", 80, Some("python3"), (0, Some(128)))
    };
    p.forward = Some(crate::snapshot::ForwardStatus {
        via: "dnat",
        backend: "10.77.50.2:80".parse().unwrap(),
        netns: Some(web1()),
        on_this_host: true,
        backend_listeners: vec![backend],
        rule: None,
    });
    p
}

/// web-1's port 80, on its loopback: `local`, fine.
fn inside() -> PortStatus {
    let mut p = port(80, "python3", Expect::Local, Origin::Discovered, Cause::Ok);
    p.listeners = vec![Listener {
        netns: crate::netns::NsId::named("web-1"),
        ..listener("127.0.0.1", 80, Some("python3"), (0, Some(128)))
    }];
    p.netns = Some(web1());
    p
}

/// The ports above, TCP then UDP, in port order, as the engine orders them.
fn golden_snapshot() -> Snapshot {
    Snapshot {
        ports: std::sync::Arc::new(vec![
            web(),
            api(),
            db(),
            app(),
            admin(),
            published(),
            inside(),
            dns(),
        ]),
        namespaces: vec![web1()],
        generation: 1,
        sources: Sources {
            netlink: Some(true),
            procfs: None,
            owners: Some(false),
            netfilter: Some(true),
            namespaces: Some(true),
        },
        probes_discarded: {
            let mut d = Discarded::default();
            d.add(Shortage::ProcessDescriptors);
            d.add(Shortage::ProcessDescriptors);
            d.add(Shortage::Buffers);
            d
        },
        discovery_left_out: 3,
        ..Snapshot::default()
    }
}

fn text_of(snapshot: &Snapshot) -> String {
    let mut out = String::new();
    write_snapshot(&mut out, snapshot);
    out
}

/// The per-port families of [`golden_snapshot`], byte for byte as in
/// `testdata/golden.prom`; `UPDATE_GOLDEN=1` rewrites the file.
#[test]
fn golden() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/metrics/testdata/golden.prom");
    let text = text_of(&golden_snapshot());
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &text).unwrap();
    }
    let golden = std::fs::read_to_string(&path).unwrap();
    assert!(
        text == golden,
        "render differs from {}; rerun with UPDATE_GOLDEN=1 and review the diff\n{text}",
        path.display()
    );
}

/// Runs `promtool check metrics` on `text`; `None` when promtool is not
/// installed (an error under `CI=true`).
fn promtool_check(text: &[u8]) -> Option<std::process::Output> {
    let child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("promtool is needed under CI=true: {e}")
        }
        Err(e) => {
            eprintln!(
                "skipping promtool check: cannot run promtool ({e}); apt-get install prometheus"
            );
            return None;
        }
    };
    use std::io::Write as _;
    child.stdin.take().unwrap().write_all(text).unwrap();
    Some(child.wait_with_output().unwrap())
}

#[test]
fn names_with_quotes_backslashes_and_newlines_are_escaped() {
    let mut snapshot = golden_snapshot();
    let weird = "we\"ird\\na\nme";
    let first = &mut std::sync::Arc::make_mut(&mut snapshot.ports)[0];
    first.name = weird.to_string();
    first.listeners[0].owner.as_mut().unwrap().name = weird.to_string();
    first.probe_counts[3].0.source = weird.to_string();
    first.probes[3].target.source = weird.to_string();
    let out = Metrics::new().unwrap().render(&snapshot).unwrap();
    let text = String::from_utf8(out.clone()).unwrap();

    let escaped = r#"we\"ird\\na\nme"#;
    let name = format!(r#"name="{escaped}""#);
    assert!(text.contains(&format!(
        r#"portsight_port_listening{{{name},port="80",protocol="tcp"}} 1"#
    )));
    assert!(text.contains(&format!(
        r#"portsight_listener_info{{address="0.0.0.0",port="80",process="{escaped}",protocol="tcp",scope="any"}} 1"#
    )));
    assert!(text.contains(&format!(
        r#"portsight_probes_total{{{name},outcome="timeout",port="80",protocol="tcp",source="{escaped}",target="203.0.113.7:80",vantage="external"}} 2"#
    )));
    assert!(!text.contains(weird), "a raw value leaked into the output");

    if let Some(check) = promtool_check(&out) {
        assert!(
            check.status.success() && check.stdout.is_empty() && check.stderr.is_empty(),
            "promtool check metrics: {}\n{}{}",
            check.status,
            String::from_utf8_lossy(&check.stdout),
            String::from_utf8_lossy(&check.stderr)
        );
    }
}

/// The part of a rendering written from the snapshot.
fn snapshot_part(out: &[u8]) -> String {
    let text = String::from_utf8(out.to_vec()).unwrap();
    let end = text.find("# HELP portsight_build_info").unwrap();
    text[..end].to_string()
}

#[test]
fn render_is_cached_by_generation() {
    let metrics = Metrics::new().unwrap();
    let first = golden_snapshot();
    let mut changed = first.clone();
    std::sync::Arc::make_mut(&mut changed.ports)[1]
        .diagnosis
        .cause = Cause::Rejected;
    let first_text = snapshot_part(&metrics.render(&first).unwrap());
    assert_eq!(first_text, text_of(&first));

    // Another snapshot of the same generation is not rendered again.
    assert_eq!(
        snapshot_part(&metrics.render(&changed).unwrap()),
        first_text
    );

    changed.generation = 2;
    let changed_text = snapshot_part(&metrics.render(&changed).unwrap());
    assert_ne!(changed_text, first_text);
    assert_eq!(changed_text, text_of(&changed));
    assert!(changed_text.contains(
        r#"portsight_port_diagnosis{cause="rejected",name="api",port="443",protocol="tcp"} 1"#
    ));
}

#[test]
fn an_empty_snapshot_has_the_registry_families_and_the_discard_and_cap_counts() {
    let out = Metrics::new()
        .unwrap()
        .render(&Snapshot::default())
        .unwrap();
    let part = snapshot_part(&out);
    let samples: Vec<&str> = part.lines().filter(|l| !l.starts_with('#')).collect();
    assert_eq!(
        samples,
        [
            r#"portsight_probes_discarded_total{reason="emfile"} 0"#,
            r#"portsight_probes_discarded_total{reason="enfile"} 0"#,
            r#"portsight_probes_discarded_total{reason="enobufs"} 0"#,
            r#"portsight_probes_discarded_total{reason="enomem"} 0"#,
            "portsight_discovery_ports_left_out 0",
        ]
    );
}
