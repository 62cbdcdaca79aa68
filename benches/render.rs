//! Render time of `/metrics` for 1,000 ports × 3 vantages (127.0.0.1, ::1,
//! 10.77.0.1), all listening on 0.0.0.0 and ::, every target counted: the
//! snapshot of BENCHMARKS.md targets 4 and 5, made in memory.
//!
//! `cargo bench --bench render`; `PSB_RENDERS` (default 200) sets how many
//! renders are timed, `PSB_PORTS` (default 1000) the ports; `PSB_DUMP=FILE`
//! writes one rendering to FILE, to
//! compare two versions' output. Prints the median and quartiles of a
//! render of a new generation (the text written again) and of a cached one.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant, SystemTime};

use portsight::config::{Expect, Protocol};
use portsight::diagnosis::{Cause, Diagnosis};
use portsight::metrics::Metrics;
use portsight::probe::{Outcome, OutcomeCounts, ProbeResult, Target, Vantage};
use portsight::snapshot::Origin;
use portsight::snapshot::{PortStatus, Snapshot};
use portsight::sockets::{Listener, Owner};

fn listener(address: &str, port: u16) -> Listener {
    let address: IpAddr = address.parse().unwrap();
    Listener {
        v6only: address.is_ipv6().then_some(true),
        accept_queue_length: 0,
        accept_queue_limit: Some(4096),
        inode: u64::from(port),
        owner: Some(Owner {
            pid: 1,
            name: "portsight-bench".into(),
        }),
        ..Listener::on(address, port)
    }
}

fn port_status(port: u16) -> PortStatus {
    let targets = [
        (Vantage::Loopback, "127.0.0.1"),
        (Vantage::Loopback, "::1"),
        (Vantage::Interface, "10.77.0.1"),
    ];
    let mut probes = Vec::new();
    let mut probe_counts = Vec::new();
    for (vantage, ip) in targets {
        let addr = SocketAddr::new(ip.parse().unwrap(), port);
        let target = Target::local(vantage, addr);
        let mut counts = OutcomeCounts::default();
        (0..40).for_each(|_| counts.add(Outcome::Success));
        counts.add(Outcome::Timeout);
        probe_counts.push((target.clone(), counts));
        probes.push(ProbeResult {
            target,
            outcome: Outcome::Success,
            duration: Duration::from_nanos(87_654 + u64::from(port)),
            errno: None,
            error: None,
            at: SystemTime::now(),
            started: Instant::now(),
        });
    }
    probes.sort_by(|a, b| a.target.cmp(&b.target));
    probe_counts.sort_by(|a, b| a.0.cmp(&b.0));
    PortStatus {
        port,
        protocol: Protocol::Tcp,
        name: format!("svc-{port}"),
        expect: Expect::Public,
        origin: Origin::Config,
        listeners: vec![listener("0.0.0.0", port), listener("::", port)],
        probes,
        diagnosis: Diagnosis {
            cause: Cause::Ok,
            summary: String::new(),
            fix: String::new(),
            evidence: Vec::new(),
            firewall: Vec::new(),
            failed: None,
        },
        since: SystemTime::UNIX_EPOCH,
        vantages: Default::default(),
        probe_counts,
        netns: None,
        forward: None,
    }
}

fn quartiles(mut times: Vec<Duration>) -> (Duration, Duration, Duration) {
    times.sort();
    let at = |q: usize| times[(times.len() - 1) * q / 4];
    (at(1), at(2), at(3))
}

fn main() {
    let renders: usize = std::env::var("PSB_RENDERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let ports: u16 = std::env::var("PSB_PORTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let mut snapshot = Snapshot {
        ports: std::sync::Arc::new((20_000..20_000 + ports).map(port_status).collect()),
        ..Snapshot::default()
    };
    let metrics = Metrics::new().unwrap();
    let mut bytes = 0;
    let mut fresh = Vec::new();
    let mut cached = Vec::new();
    for i in 0..renders + 5 {
        snapshot.generation += 1;
        // `render_chunks`, what `/metrics` sends: `render` would also copy
        // the chunks into one buffer, and at 10,000 ports (73 MB, above
        // malloc's mmap threshold) that fresh buffer's page faults were a
        // third of the time.
        let start = Instant::now();
        let chunks = metrics.render_chunks(&snapshot).unwrap();
        let new = start.elapsed();
        bytes = chunks.iter().map(|c| c.len()).sum();
        drop(chunks);
        let start = Instant::now();
        std::hint::black_box(metrics.render_chunks(&snapshot).unwrap());
        if i >= 5 {
            fresh.push(new);
            cached.push(start.elapsed());
        }
    }
    if let Some(path) = std::env::var_os("PSB_DUMP") {
        std::fs::write(path, metrics.render(&snapshot).unwrap()).unwrap();
    }
    for (what, times) in [("new generation", fresh), ("cached", cached)] {
        let (q1, median, q3) = quartiles(times);
        println!(
            "render, {what}: median {:.3} ms (quartiles {:.3} / {:.3} ms), n={renders}, {bytes} bytes",
            median.as_secs_f64() * 1e3,
            q1.as_secs_f64() * 1e3,
            q3.as_secs_f64() * 1e3,
        );
    }
}
