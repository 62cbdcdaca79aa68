use super::*;
use crate::netns::Namespace;
use crate::probe::{Outcome, Target};
use crate::sockets::Owner;

const PORT: u16 = 8080;

fn l(addr: &str) -> Listener {
    let address: IpAddr = addr.parse().unwrap();
    Listener {
        v6only: address.is_ipv6().then_some(!address.is_unspecified()),
        accept_queue_limit: Some(128),
        inode: 1,
        owner: Some(Owner {
            pid: 4242,
            name: "python3".into(),
        }),
        ..Listener::on(address, PORT)
    }
}

fn v6only(mut l: Listener, on: bool) -> Listener {
    l.v6only = Some(on);
    l
}

fn p(vantage: Vantage, ip: &str, outcome: Outcome) -> ProbeResult {
    let ip: IpAddr = ip.parse().unwrap();
    ProbeResult {
        target: Target {
            vantage,
            source: if vantage == Vantage::External {
                "outside-1".into()
            } else {
                "local".into()
            },
            protocol: Protocol::Tcp,
            addr: SocketAddr::new(ip, PORT),
            netns: crate::netns::NsId::OWN,
        },
        outcome,
        duration: Duration::from_micros(100),
        errno: None,
        error: match outcome {
            Outcome::Refused => Some("Connection refused (os error 111)".into()),
            Outcome::Unreachable => Some("No route to host (os error 113)".into()),
            _ => None,
        },
        at: SystemTime::UNIX_EPOCH,
        started: std::time::Instant::now(),
    }
}

use Outcome::{Refused, Success, Timeout};
use Vantage::{External, Interface, Loopback};

/// This host's addresses in these tests; 203.0.113.7 is a public IP NATed to it.
const OWN: [IpAddr; 2] = [
    IpAddr::V4(std::net::Ipv4Addr::new(10, 77, 0, 1)),
    IpAddr::V6(std::net::Ipv6Addr::new(0xfd77, 0, 0, 0, 0, 0, 0, 1)),
];

const ALL_VANTAGES: Vantages = Vantages {
    loopback: true,
    interface: true,
    external: false,
    host: false,
};

fn run(expect: Expect, listeners: &[Listener], probes: &[ProbeResult]) -> Diagnosis {
    run_with(expect, listeners, probes, None)
}

fn run_with(
    expect: Expect,
    listeners: &[Listener],
    probes: &[ProbeResult],
    forward: Option<&ForwardStatus>,
) -> Diagnosis {
    diagnose(&Input {
        port: PORT,
        protocol: Protocol::Tcp,
        probed: true,
        expect,
        listeners,
        probes,
        vantages: ALL_VANTAGES,
        last_failure: None,
        own_addresses: &OWN,
        transient_window: Duration::from_secs(300),
        now: SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000),
        firewall: None,
        queue_drops: None,
        conntrack: None,
        forward,
        netns: None,
    })
}

/// Loopback v4 + v6, interfaces v4 + v6.
fn probes(lo4: Outcome, lo6: Outcome, if4: Outcome, if6: Outcome) -> Vec<ProbeResult> {
    vec![
        p(Loopback, "127.0.0.1", lo4),
        p(Loopback, "::1", lo6),
        p(Interface, "10.77.0.1", if4),
        p(Interface, "fd77::1", if6),
    ]
}

#[test]
fn nothing_listening() {
    let d = run(
        Expect::Public,
        &[],
        &probes(Refused, Refused, Refused, Refused),
    );
    assert_eq!(d.cause, Cause::NotListening);
    assert_eq!(
        d.summary,
        "nothing listens on port 8080; 127.0.0.1:8080, [::1]:8080, 10.77.0.1:8080 and [fd77::1]:8080 refused"
    );
    assert!(d.fix.starts_with("start the service"));
    assert_eq!(d.evidence[0], "no listener on port 8080");
}

#[test]
fn forwarded() {
    let d = run(
        Expect::Public,
        &[],
        &probes(Success, Refused, Refused, Refused),
    );
    assert_eq!(d.cause, Cause::Forwarded);
    assert!(
        d.summary.contains("yet 127.0.0.1:8080 answered"),
        "{}",
        d.summary
    );
}

#[test]
fn closed_policy() {
    let d = run(
        Expect::Closed,
        &[l("0.0.0.0")],
        &probes(Success, Refused, Success, Refused),
    );
    assert_eq!(d.cause, Cause::UnexpectedListener);
    assert_eq!(
        d.summary,
        "listening on 0.0.0.0:8080 (python3, pid 4242) on a port whose policy is closed"
    );
    assert_eq!(
        d.fix,
        "stop python3 (pid 4242), or change the port's expect"
    );
    let d = run(
        Expect::Closed,
        &[],
        &probes(Refused, Refused, Refused, Refused),
    );
    assert_eq!(d.cause, Cause::Ok);
}

#[test]
fn accept_queue_full() {
    let mut full = l("0.0.0.0");
    full.accept_queue_limit = Some(1);
    full.accept_queue_length = 2;
    let d = run(
        Expect::Public,
        &[full.clone()],
        &probes(Timeout, Refused, Timeout, Refused),
    );
    assert_eq!(d.cause, Cause::AcceptQueueFull);
    assert_eq!(
        d.summary,
        "the accept queue of 0.0.0.0:8080 (python3, pid 4242) holds 2 connections, limit 1: new connections are dropped"
    );
    full.accept_queue_length = 1;
    assert_eq!(
        run(Expect::Public, &[full.clone()], &[]).cause,
        Cause::AcceptQueueFull,
        "at the limit"
    );
    // listen(fd, 0) with an empty queue is not full.
    full.accept_queue_limit = Some(0);
    full.accept_queue_length = 0;
    assert_ne!(
        run(Expect::Public, &[full.clone()], &[]).cause,
        Cause::AcceptQueueFull
    );
    // An unknown limit (/proc fallback) is never full.
    full.accept_queue_limit = None;
    full.accept_queue_length = 5;
    assert_ne!(
        run(Expect::Public, &[full], &[]).cause,
        Cause::AcceptQueueFull
    );
}

fn with_drops(listeners: &[Listener], probes: &[ProbeResult], drops: &QueueDrops) -> Diagnosis {
    diagnose(&Input {
        port: PORT,
        protocol: Protocol::Tcp,
        probed: true,
        expect: Expect::Public,
        listeners,
        probes,
        vantages: ALL_VANTAGES,
        last_failure: None,
        own_addresses: &OWN,
        transient_window: Duration::from_secs(300),
        now: drops.at + Duration::from_secs(4),
        firewall: None,
        queue_drops: Some(drops),
        conntrack: None,
        forward: None,
        netns: None,
    })
}

#[test]
fn a_queue_that_overflowed_between_scans_is_full_for_a_while() {
    let mut ls = l("0.0.0.0");
    ls.accept_queue_length = 0;
    let drops = QueueDrops {
        dropped: 37,
        at: SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000),
        ports: vec![PORT],
    };
    let d = with_drops(
        &[ls.clone()],
        &probes(Success, Success, Timeout, Timeout),
        &drops,
    );
    assert_eq!(d.cause, Cause::AcceptQueueFull);
    assert_eq!(
        d.summary,
        "the accept queue of 0.0.0.0:8080 (python3, pid 4242) overflowed: the kernel dropped 37 connections to full accept queues 4s ago; it holds 0 of 128 now"
    );
    assert!(
        d.evidence.contains(
            &"the kernel dropped 37 connections to full accept queues 4s ago".to_string()
        ),
        "{:?}",
        d.evidence
    );
    // Another port's queue: host evidence at most, never this port's cause.
    let other = QueueDrops {
        ports: vec![9999],
        ..drops.clone()
    };
    let d = with_drops(
        &[ls.clone()],
        &probes(Success, Success, Success, Success),
        &other,
    );
    assert_eq!(d.cause, Cause::Ok);
    assert!(!d.evidence.iter().any(|e| e.contains("kernel dropped")));
    let nobody = QueueDrops {
        ports: vec![],
        ..drops
    };
    let d = with_drops(&[ls], &probes(Success, Success, Success, Success), &nobody);
    assert_eq!(d.cause, Cause::Ok);
    assert!(d.evidence.contains(&"host: the kernel dropped 37 connections to full accept queues 4s ago, not attributable to one listener".to_string()), "{:?}", d.evidence);
}

fn with_conntrack(ct: &ConntrackView, probes: &[ProbeResult]) -> Diagnosis {
    diagnose(&Input {
        port: PORT,
        protocol: Protocol::Tcp,
        probed: true,
        expect: Expect::Public,
        listeners: &[l("0.0.0.0"), l("::")],
        probes,
        vantages: ALL_VANTAGES,
        last_failure: None,
        own_addresses: &OWN,
        transient_window: Duration::from_secs(300),
        now: SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000),
        firewall: None,
        queue_drops: None,
        conntrack: Some(ct),
        forward: None,
        netns: None,
    })
}

#[test]
fn a_full_conntrack_table_with_timeouts_is_conntrack_full() {
    use crate::kernel::Conntrack;
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/proc");
    let table = crate::kernel::read_conntrack(&root).unwrap();
    let full = ConntrackView { table, grew: None };
    let timeouts = probes(Success, Success, Timeout, Timeout);
    let d = with_conntrack(&full, &timeouts);
    assert_eq!(d.cause, Cause::ConntrackFull);
    assert_eq!(
        d.summary,
        "10.77.0.1:8080 and [fd77::1]:8080 timed out and the connection-tracking table is full (262144 of 262144 entries): new connections are dropped"
    );
    assert!(
        d.fix
            .starts_with("raise net.netfilter.nf_conntrack_max (now 262144)"),
        "{}",
        d.fix
    );
    // Not full, but its drop counters grew between scans.
    let at = SystemTime::UNIX_EPOCH + Duration::from_secs(999_990);
    let grew = ConntrackView {
        table: Conntrack {
            count: 1000,
            max: 262144,
            dropped: 40,
        },
        grew: Some((12, at)),
    };
    let d = with_conntrack(&grew, &timeouts);
    assert_eq!(d.cause, Cause::ConntrackFull);
    assert!(d.summary.ends_with("the kernel dropped 12 new connections 10s ago (nf_conntrack drop, early_drop, insert_failed)"), "{}", d.summary);
    // Refusals, not timeouts: a full table does not explain them.
    assert_eq!(
        with_conntrack(&full, &probes(Success, Success, Refused, Refused)).cause,
        Cause::Rejected
    );
    // A table with room and no drops explains nothing.
    let roomy = ConntrackView {
        table: Conntrack {
            count: 10,
            max: 262144,
            dropped: 40,
        },
        grew: None,
    };
    assert_eq!(with_conntrack(&roomy, &timeouts).cause, Cause::Filtered);
}

#[test]
fn loopback_only_unless_local() {
    let ps = probes(Success, Refused, Refused, Refused);
    let d = run(Expect::Public, &[l("127.0.0.1")], &ps);
    assert_eq!(d.cause, Cause::LoopbackOnly);
    assert_eq!(
        d.summary,
        "listening on 127.0.0.1:8080 (python3, pid 4242) only; [::1]:8080, 10.77.0.1:8080 and [fd77::1]:8080 refused"
    );
    assert_eq!(
        d.fix,
        "bind to 0.0.0.0 or :: instead of 127.0.0.1, so that other hosts can connect"
    );
    assert_eq!(
        run(Expect::Internal, &[l("127.0.0.1")], &ps).cause,
        Cause::LoopbackOnly
    );
    assert_eq!(
        run(Expect::Auto, &[l("127.0.0.1")], &ps).cause,
        Cause::LoopbackOnly
    );
    let d = run(Expect::Local, &[l("127.0.0.1")], &ps);
    assert_eq!(d.cause, Cause::Ok, "{}", d.summary);
    assert_eq!(
        d.summary,
        "reachable as expected (local): loopback 1/2 answered, interface closed as expected, external not measured"
    );
}

#[test]
fn bound_elsewhere() {
    let ps = vec![
        p(Loopback, "127.0.0.1", Refused),
        p(Interface, "10.77.0.1", Success),
        p(Interface, "10.77.0.2", Refused),
    ];
    let d = run(Expect::Public, &[l("10.77.0.1")], &ps);
    assert_eq!(d.cause, Cause::BoundElsewhere);
    assert_eq!(
        d.summary,
        "listening on 10.77.0.1:8080 (python3, pid 4242) only; 127.0.0.1:8080 and 10.77.0.2:8080 refused"
    );
    assert_eq!(
        d.fix,
        "bind to 0.0.0.0 / :: (all addresses), or also to 127.0.0.1"
    );
    assert_eq!(
        d.failed,
        Some((Loopback, "127.0.0.1:8080".parse().unwrap()))
    );
}

#[test]
fn address_family_mismatch() {
    let ps = probes(Success, Refused, Success, Refused);
    let d = run(Expect::Public, &[l("0.0.0.0")], &ps);
    assert_eq!(d.cause, Cause::AddressFamilyMismatch);
    assert_eq!(
        d.summary,
        "listening on 0.0.0.0:8080 (python3, pid 4242) (IPv4 only); [::1]:8080 and [fd77::1]:8080 refused"
    );
    assert!(d.fix.starts_with("listen on IPv6 too"));
    let d = run(
        Expect::Public,
        &[v6only(l("::"), true)],
        &probes(Refused, Success, Refused, Success),
    );
    assert_eq!(d.cause, Cause::AddressFamilyMismatch);
    assert!(
        d.summary.contains("(IPv6 only (IPV6_V6ONLY))"),
        "{}",
        d.summary
    );
    assert!(d.fix.starts_with("listen on IPv4 too"));
}

#[test]
fn dual_stack_wildcard_is_ok() {
    let all = probes(Success, Success, Success, Success);
    let d = run(Expect::Public, &[v6only(l("::"), false)], &all);
    assert_eq!(d.cause, Cause::Ok);
    assert_eq!(
        d.summary,
        "reachable as expected (public): loopback 2/2 answered, interface 2/2 answered, external not measured"
    );
    assert!(
        d.evidence
            .contains(&"external: not measured (no peers configured)".to_string())
    );
    let d = run(Expect::Public, &[l("0.0.0.0"), v6only(l("::"), true)], &all);
    assert_eq!(d.cause, Cause::Ok);
}

#[test]
fn rejected_when_a_covering_listener_is_refused() {
    let ps = probes(Success, Success, Refused, Success);
    let d = run(Expect::Public, &[v6only(l("::"), false)], &ps);
    assert_eq!(d.cause, Cause::Rejected);
    assert_eq!(
        d.summary,
        "listening on [::]:8080 (python3, pid 4242) covers 10.77.0.1:8080, yet it was refused from the interface vantage: a firewall rejects it"
    );
    assert!(d.fix.contains("REJECT rules for port 8080"));
}

#[test]
fn filtered_when_a_farther_vantage_times_out() {
    let ps = probes(Success, Success, Timeout, Success);
    let d = run(Expect::Public, &[v6only(l("::"), false)], &ps);
    assert_eq!(d.cause, Cause::Filtered);
    assert_eq!(
        d.summary,
        "10.77.0.1:8080 timed out from the interface vantage while 127.0.0.1:8080 and [::1]:8080 answered: packets to port 8080 are dropped"
    );
}

#[test]
fn unreachable() {
    let ps = probes(Success, Success, Outcome::Unreachable, Success);
    let d = run(Expect::Public, &[v6only(l("::"), false)], &ps);
    assert_eq!(d.cause, Cause::Unreachable);
    assert!(d.summary.contains("No route to host"), "{}", d.summary);
}

#[test]
fn failures_outside_the_policy_do_not_count() {
    // An internal port that times out from outside is ok.
    let mut ps = probes(Success, Success, Success, Success);
    ps.push(p(External, "203.0.113.7", Timeout));
    let d = run(Expect::Internal, &[v6only(l("::"), false)], &ps);
    assert_eq!(d.cause, Cause::Ok, "{}", d.summary);
    assert!(
        d.summary.contains("external closed as expected"),
        "{}",
        d.summary
    );
    // The same port public: filtered from outside.
    let d = run(Expect::Public, &[v6only(l("::"), false)], &ps);
    assert_eq!(d.cause, Cause::Filtered);
    assert!(d.summary.contains("from the external vantage"));
    assert!(
        d.evidence
            .iter()
            .any(|e| e.contains("(probed by outside-1)"))
    );
}

#[test]
fn exposed() {
    let mut ps = probes(Success, Success, Success, Success);
    ps.push(p(External, "203.0.113.7", Success));
    let d = run(Expect::Internal, &[v6only(l("::"), false)], &ps);
    assert_eq!(d.cause, Cause::Exposed);
    assert_eq!(
        d.summary,
        "the internal port 8080 answers from the external vantage at 203.0.113.7:8080"
    );
    assert!(d.fix.starts_with("a security finding"));
    // A local port answering on an interface address.
    let d = run(
        Expect::Local,
        &[l("0.0.0.0")],
        &probes(Success, Refused, Success, Refused),
    );
    assert_eq!(d.cause, Cause::Exposed);
    assert!(
        d.summary
            .contains("the local port 8080 answers from the interface vantage at 10.77.0.1:8080")
    );
}

#[test]
fn transient_within_the_window_then_ok() {
    let ls = [v6only(l("::"), false)];
    let ps = probes(Success, Success, Success, Success);
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
    let failure = Failure {
        at: now - Duration::from_secs(90),
        cause: Cause::NotListening,
        vantage: Some(Loopback),
        target: Some("127.0.0.1:8080".parse().unwrap()),
    };
    let input = Input {
        port: PORT,
        protocol: Protocol::Tcp,
        probed: true,
        expect: Expect::Public,
        listeners: &ls,
        probes: &ps,
        vantages: ALL_VANTAGES,
        last_failure: Some(&failure),
        own_addresses: &OWN,
        transient_window: Duration::from_secs(300),
        now,
        firewall: None,
        queue_drops: None,
        conntrack: None,
        forward: None,
        netns: None,
    };
    let d = diagnose(&input);
    assert_eq!(d.cause, Cause::Transient);
    assert_eq!(
        d.summary,
        "reachable now, but it was not_listening at 1970-01-12T13:45:10Z (127.0.0.1:8080 from the loopback vantage), 1m 30s ago"
    );
    let later = Input {
        now: now + Duration::from_secs(211),
        ..input
    };
    assert_eq!(diagnose(&later).cause, Cause::Ok);
}

#[test]
fn not_measured_is_never_assumed() {
    let d = run(Expect::Public, &[v6only(l("::"), false)], &[]);
    assert_eq!(d.cause, Cause::Ok);
    assert_eq!(
        d.summary,
        "reachable as expected (public): loopback not measured yet, interface not measured yet, external not measured"
    );
}

/// DESIGN.md's table of causes, in its order (`conntrack_full` is not implemented yet).
const DESIGN_ORDER: [&str; 14] = [
    "not_listening",
    "forwarded",
    "unexpected_listener",
    "accept_queue_full",
    "conntrack_full",
    "loopback_only",
    "bound_elsewhere",
    "address_family_mismatch",
    "rejected",
    "filtered",
    "unreachable",
    "exposed",
    "transient",
    "ok",
];

#[test]
fn one_rule_per_cause_in_the_design_order() {
    let rules: Vec<Cause> = rules::RULES.iter().map(|&(c, _)| c).collect();
    assert_eq!(rules, Cause::ALL, "the rules, in order, are the causes");
    let names: Vec<&str> = rules.iter().map(|c| c.as_str()).collect();
    assert_eq!(names, DESIGN_ORDER);
    let distinct: std::collections::HashSet<&str> = names.iter().copied().collect();
    assert_eq!(distinct.len(), names.len(), "{names:?}");
    for &c in Cause::ALL {
        assert_eq!(
            serde_json::to_string(&c).unwrap(),
            format!("\"{}\"", c.as_str())
        );
    }
}

#[test]
fn the_readme_lists_the_causes_in_the_rules_order() {
    let readme = include_str!("../../README.md");
    let table = readme
        .split("\n## Diagnosis\n")
        .nth(1)
        .expect("a Diagnosis section");
    let listed: Vec<&str> = table
        .lines()
        .skip_while(|l| !l.starts_with("| cause"))
        .skip(2)
        .take_while(|l| l.starts_with("| `"))
        .filter_map(|l| l.split('`').nth(1))
        .collect();
    assert_eq!(listed, DESIGN_ORDER);
}

#[test]
fn severity_is_ok_warning_or_critical() {
    for &c in Cause::ALL {
        let want = match c.as_str() {
            "ok" => Severity::Ok,
            "transient" | "forwarded" => Severity::Warning,
            _ => Severity::Critical,
        };
        assert_eq!(c.severity(), want, "{}", c.as_str());
    }
}

#[test]
fn a_closed_port_that_nothing_listens_on_is_ok_even_after_a_failure() {
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
    let failure = Failure {
        at: now - Duration::from_secs(10),
        cause: Cause::NotListening,
        vantage: None,
        target: None,
    };
    let d = diagnose(&Input {
        port: PORT,
        protocol: Protocol::Tcp,
        probed: true,
        expect: Expect::Closed,
        listeners: &[],
        probes: &probes(Refused, Refused, Refused, Refused),
        vantages: ALL_VANTAGES,
        last_failure: Some(&failure),
        own_addresses: &OWN,
        transient_window: Duration::from_secs(300),
        now,
        firewall: None,
        queue_drops: None,
        conntrack: None,
        forward: None,
        netns: None,
    });
    assert_eq!(d.cause, Cause::Ok);
    assert_eq!(
        d.summary,
        "closed as expected: nothing listens on port 8080 and nothing answers"
    );
    assert_eq!(d.fix, "");
}

#[test]
fn a_listener_of_the_family_elsewhere_is_bound_elsewhere_not_a_family_mismatch() {
    let ls = [l("10.77.0.1"), v6only(l("::"), true)];
    let ps = vec![
        p(Loopback, "127.0.0.1", Refused),
        p(Loopback, "::1", Success),
        p(Interface, "10.77.0.1", Success),
        p(Interface, "10.77.0.2", Refused),
    ];
    let d = run(Expect::Public, &ls, &ps);
    assert_eq!(d.cause, Cause::BoundElsewhere, "{}", d.summary);
}

#[test]
fn a_natted_public_address_that_times_out_is_filtered() {
    // 203.0.113.7 is not this host's address: it reaches the listener through NAT.
    let mut ps = probes(Success, Success, Success, Success);
    ps.push(p(External, "203.0.113.7", Timeout));
    let d = run(Expect::Public, &[v6only(l("::"), false)], &ps);
    assert_eq!(d.cause, Cause::Filtered, "{}", d.summary);
    let d = run(
        Expect::Public,
        &[l("10.77.0.1"), v6only(l("::"), true)],
        &ps,
    );
    assert_eq!(
        d.cause,
        Cause::Filtered,
        "a specific address is NATed to as well: {}",
        d.summary
    );
}

// UDP: the same causes, except that silence from a bound address is `ok`.

fn udp_socket(addr: &str) -> Listener {
    Listener {
        protocol: Protocol::Udp,
        accept_queue_limit: None,
        ..l(addr)
    }
}

fn udp(mut r: ProbeResult) -> ProbeResult {
    r.target.protocol = Protocol::Udp;
    r
}

fn udp_probes(lo4: Outcome, lo6: Outcome, if4: Outcome, if6: Outcome) -> Vec<ProbeResult> {
    probes(lo4, lo6, if4, if6).into_iter().map(udp).collect()
}

fn run_udp(
    expect: Expect,
    probed: bool,
    listeners: &[Listener],
    probes: &[ProbeResult],
) -> Diagnosis {
    diagnose(&Input {
        port: PORT,
        protocol: Protocol::Udp,
        probed,
        expect,
        listeners,
        probes,
        vantages: ALL_VANTAGES,
        last_failure: None,
        own_addresses: &OWN,
        transient_window: Duration::from_secs(300),
        now: SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000),
        firewall: None,
        queue_drops: None,
        conntrack: None,
        forward: None,
        netns: None,
    })
}

#[test]
fn udp_silence_from_a_bound_address_is_ok_never_filtered() {
    let both = [udp_socket("0.0.0.0"), v6only(udp_socket("::"), true)];
    let d = run_udp(
        Expect::Public,
        true,
        &both,
        &udp_probes(Timeout, Timeout, Success, Timeout),
    );
    assert_eq!(d.cause, Cause::Ok, "{}", d.summary);
    assert_eq!(
        d.summary,
        "reachable as expected (public): loopback 0/2 answered, 2 silent, interface 1/2 answered, 1 silent, external not measured"
    );
    assert!(
        d.evidence
            .iter()
            .any(|e| e.ends_with("timeout in 0.10 ms (no reply: normal for many UDP services)")),
        "{:?}",
        d.evidence
    );
    // The same probes of TCP are filtered.
    let tcp = [l("0.0.0.0"), v6only(l("::"), true)];
    let d = run(
        Expect::Public,
        &tcp,
        &probes(Success, Success, Success, Timeout),
    );
    assert_eq!(d.cause, Cause::Filtered);
}

#[test]
fn udp_nothing_bound_names_the_protocol() {
    let d = run_udp(
        Expect::Public,
        true,
        &[],
        &udp_probes(Refused, Refused, Refused, Refused),
    );
    assert_eq!(d.cause, Cause::NotListening);
    assert_eq!(
        d.summary,
        "nothing listens on port 8080/udp; 127.0.0.1:8080, [::1]:8080, 10.77.0.1:8080 and [fd77::1]:8080 refused"
    );
    assert_eq!(d.evidence[0], "no listener on port 8080/udp");
}

#[test]
fn udp_loopback_only_mismatch_and_rejected_as_for_tcp() {
    let lo = [udp_socket("127.0.0.53")];
    let d = run_udp(
        Expect::Public,
        true,
        &lo,
        &udp_probes(Refused, Refused, Refused, Refused),
    );
    assert_eq!(d.cause, Cause::LoopbackOnly);
    assert!(
        d.summary
            .starts_with("listening on 127.0.0.53:8080 (python3, pid 4242) only; "),
        "{}",
        d.summary
    );

    let v4 = [udp_socket("0.0.0.0")];
    let d = run_udp(
        Expect::Public,
        true,
        &v4,
        &udp_probes(Timeout, Refused, Timeout, Refused),
    );
    assert_eq!(d.cause, Cause::AddressFamilyMismatch);

    let both = [udp_socket("0.0.0.0"), v6only(udp_socket("::"), true)];
    let d = run_udp(
        Expect::Public,
        true,
        &both,
        &udp_probes(Success, Success, Refused, Success),
    );
    assert_eq!(d.cause, Cause::Rejected);
    assert!(
        d.fix.contains("REJECT rules for port 8080/udp"),
        "{}",
        d.fix
    );
}

#[test]
fn a_discovered_udp_port_is_diagnosed_from_its_sockets_alone() {
    let d = run_udp(Expect::Internal, false, &[udp_socket("0.0.0.0")], &[]);
    assert_eq!(d.cause, Cause::Ok);
    assert_eq!(
        d.summary,
        "listening on 0.0.0.0:8080 (python3, pid 4242) as expected (internal), from the socket table alone: a discovered UDP port is not probed"
    );
    assert!(
        d.evidence
            .iter()
            .any(|e| e.starts_with("loopback: not probed (a discovered UDP port")),
        "{:?}",
        d.evidence
    );
    let lo = run_udp(Expect::Public, false, &[udp_socket("127.0.0.1")], &[]);
    assert_eq!(lo.cause, Cause::LoopbackOnly);
    let gone = run_udp(Expect::Internal, false, &[], &[]);
    assert_eq!(gone.cause, Cause::NotListening);
    assert_eq!(gone.summary, "nothing listens on port 8080/udp");
}

/// A container `web-1` at 10.77.50.2 whose app is `backend`, port 8080
/// published to its port 80 by `via`.
fn published(via: &'static str, backend: &[&str], on_this_host: bool) -> ForwardStatus {
    ForwardStatus {
        via,
        backend: "10.77.50.2:80".parse().unwrap(),
        netns: on_this_host.then(|| Namespace {
            name: "web-1".into(),
            container: Some("3f2a9c1b7d4e".into()),
            pod: None,
            inode: 4026532512,
            id: crate::netns::NsId::named("web-1"),
        }),
        on_this_host,
        backend_listeners: backend
            .iter()
            .map(|a| Listener { port: 80, ..l(a) })
            .collect(),
        rule: Some("ip nat DOCKER handle 12: tcp dport 8080 dnat to 10.77.50.2:80".into()),
    }
}

fn run_through(listeners: &[Listener], probes: &[ProbeResult], f: &ForwardStatus) -> Diagnosis {
    run_with(Expect::Internal, listeners, probes, Some(f))
}

#[test]
fn a_published_port_whose_app_listens_on_its_own_loopback_is_loopback_only_naming_the_container() {
    // A docker-proxy-like listener on the host port accepts on loopback;
    // the DNAT path is refused by the container.
    let proxy = [l("0.0.0.0")];
    let f = published("dnat", &["127.0.0.1"], true);
    let d = run_through(&proxy, &probes(Success, Success, Refused, Refused), &f);
    assert_eq!(d.cause, Cause::LoopbackOnly, "{d:?}");
    assert!(
        d.summary
            .contains("published to container web-1 (10.77.50.2:80)")
            && d.summary.contains("127.0.0.1:80"),
        "{}",
        d.summary
    );
    assert!(
        d.fix.contains("bind 0.0.0.0") && d.fix.contains("inside the container"),
        "{}",
        d.fix
    );
    assert!(
        d.evidence
            .iter()
            .any(|e| e.contains("dnat to 10.77.50.2:80")),
        "{:?}",
        d.evidence
    );
}

#[test]
fn a_published_port_with_nothing_inside_is_not_listening_though_a_proxy_listens() {
    let f = published("proxy", &[], true);
    let d = run_through(
        &[l("0.0.0.0")],
        &probes(Success, Success, Refused, Refused),
        &f,
    );
    assert_eq!(d.cause, Cause::NotListening, "{d:?}");
    assert!(
        d.summary.contains("nothing listens on port 80"),
        "{}",
        d.summary
    );
}

#[test]
fn a_backend_bound_to_another_address_or_family() {
    let f = published("dnat", &["10.77.51.9"], true);
    let d = run_through(&[], &probes(Refused, Refused, Refused, Refused), &f);
    assert_eq!(d.cause, Cause::BoundElsewhere, "{d:?}");
    let mut f = published("dnat", &["::"], true);
    f.backend_listeners[0].v6only = Some(true);
    let d = run_through(&[], &probes(Refused, Refused, Refused, Refused), &f);
    assert_eq!(d.cause, Cause::AddressFamilyMismatch, "{d:?}");
}

#[test]
fn a_healthy_forward_is_ok_with_the_forward_in_evidence_even_with_no_host_listener() {
    let f = published("dnat", &["0.0.0.0"], true);
    let d = run_through(&[], &probes(Success, Success, Success, Success), &f);
    assert_eq!(d.cause, Cause::Ok, "{d:?}");
    assert!(
        d.evidence
            .iter()
            .any(|e| e.contains("published to container web-1")),
        "{:?}",
        d.evidence
    );
    // The same forward with a failing target is not hidden: a timeout
    // through a served forward is `filtered`.
    let d = run_through(&[], &probes(Success, Success, Timeout, Success), &f);
    assert_eq!(d.cause, Cause::Filtered, "{d:?}");
}

#[test]
fn a_forward_to_another_host_is_forwarded() {
    let f = published("dnat", &[], false);
    let d = run_through(&[], &probes(Success, Success, Success, Success), &f);
    assert_eq!(d.cause, Cause::Forwarded, "{d:?}");
    assert!(d.summary.contains("on another host"), "{}", d.summary);
}
