//! Target 2: CPU time per probe of portsight's `Prober`, against a bare
//! non-blocking connect loop (epoll, written here as the physical reference)
//! and against prometheus-blackbox-exporter probing the same targets through
//! `/probe?module=tcp_connect`.
//!
//! The targets: 1,000 loopback ports with a listener, 1,000 without.
//!
//! UDP beside TCP, in the same run: 2,000 closed UDP ports (each held by a
//! socket connected elsewhere, so every probe draws an ICMP
//! port-unreachable, `refused`) against the 1,000 closed TCP ports (RST,
//! `refused`), twice each: the kernel answers both, so the ratio is what a
//! UDP probe costs portsight next to a TCP one.
//! `cargo bench --bench probe` (root). `PSB_ROUNDS` sets the sweeps per
//! in-process prober (default 15), `PSB_BLACKBOX_ROUNDS` those of
//! blackbox_exporter (default 3).

mod support;

use std::collections::VecDeque;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use portsight::probe::scheduler::Prober;
use portsight::probe::{Outcome, Protocol, Target, Vantage};
use socket2::{Domain, Socket, Type};
use support::{cpu_of, cpu_self, env, fmt_secs, median, table, verdict};

const OPEN: u16 = 1000;
const CLOSED: u16 = 1000;
const FIRST_PORT: u16 = 20_000;
const FIRST_UDP_PORT: u16 = 30_000;
const UDP_TARGETS: u16 = 2000;
const CONCURRENCY: usize = 256;
const TIMEOUT: Duration = Duration::from_secs(2);
/// Requests to blackbox_exporter in flight at once.
const BLACKBOX_CLIENTS: usize = 32;
const BLACKBOX_ADDR: &str = "127.0.0.1:19115";

/// Accepts (and drops) whatever waits on the listeners, so accept queues do
/// not fill between sweeps. Not timed.
fn drain(listeners: &[TcpListener]) {
    for l in listeners {
        while l.accept().is_ok() {}
    }
}

/// One sweep's cost: process CPU and wall time, in seconds.
struct Sweep {
    cpu: f64,
    wall: f64,
}

fn sweep(f: impl FnOnce() -> (usize, usize)) -> Sweep {
    let (c0, t0) = (cpu_self(), Instant::now());
    let (ok, refused) = f();
    let (wall, cpu) = (t0.elapsed(), cpu_self() - c0);
    assert_eq!(
        (ok, refused),
        (usize::from(OPEN), usize::from(CLOSED)),
        "every listening target succeeds, every closed one is refused"
    );
    Sweep {
        cpu: cpu.as_secs_f64(),
        wall: wall.as_secs_f64(),
    }
}

/// portsight's prober, in-process, on a runtime like `portsight serve`'s.
fn portsight_sweep(rt: &tokio::runtime::Runtime, prober: &Prober, targets: &[Target]) -> Sweep {
    sweep(|| {
        let results = rt.block_on(prober.run(targets.to_vec(), TIMEOUT));
        let count = |o| results.iter().filter(|r| r.outcome == o).count();
        (count(Outcome::Success), count(Outcome::Refused))
    })
}

/// CPU per probe of one sweep in which every probe must be refused.
fn refused_sweep(rt: &tokio::runtime::Runtime, prober: &Prober, targets: &[Target]) -> Sweep {
    let (c0, t0) = (cpu_self(), Instant::now());
    let results = rt.block_on(prober.run(targets.to_vec(), TIMEOUT));
    let (wall, cpu) = (t0.elapsed(), cpu_self() - c0);
    let refused = results
        .iter()
        .filter(|r| r.outcome == Outcome::Refused)
        .count();
    assert_eq!(refused, targets.len(), "every closed target is refused");
    Sweep {
        cpu: cpu.as_secs_f64() / targets.len() as f64,
        wall: wall.as_secs_f64(),
    }
}

/// UDP ports nothing can send to while the sockets live: bound, and
/// connected to 127.0.0.1:9, so the kernel delivers them nothing else.
fn closed_udp(n: u16) -> (Vec<UdpSocket>, Vec<Target>) {
    let sockets: Vec<UdpSocket> = (0..n)
        .map(|i| {
            let s = UdpSocket::bind(("127.0.0.1", FIRST_UDP_PORT + i)).expect("bind udp");
            s.connect("127.0.0.1:9").expect("connect udp");
            s
        })
        .collect();
    let targets = sockets
        .iter()
        .map(|s| {
            Target::new(
                Vantage::Loopback,
                Protocol::Udp,
                s.local_addr().expect("addr"),
            )
        })
        .collect();
    (sockets, targets)
}

/// TCP refused and UDP refused, interleaved sweeps; returns the table rows
/// and the UDP / TCP ratio of CPU per probe.
fn udp_beside_tcp(
    rt: &tokio::runtime::Runtime,
    prober: &Prober,
    tcp_closed: &[Target],
    rounds: usize,
) -> (Vec<Vec<String>>, f64) {
    let (_sockets, udp) = closed_udp(UDP_TARGETS);
    refused_sweep(rt, prober, &udp);
    refused_sweep(rt, prober, tcp_closed);
    let (mut t, mut u) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        t.push(refused_sweep(rt, prober, tcp_closed));
        u.push(refused_sweep(rt, prober, &udp));
    }
    let cpu = |xs: &[Sweep]| median(&xs.iter().map(|s| s.cpu).collect::<Vec<_>>());
    let wall = |xs: &[Sweep]| median(&xs.iter().map(|s| s.wall).collect::<Vec<_>>());
    let rows = vec![
        vec![
            format!("TCP, {} closed ports (RST → refused)", tcp_closed.len()),
            rounds.to_string(),
            fmt_secs(cpu(&t)),
            fmt_secs(wall(&t)),
        ],
        vec![
            format!("UDP, {UDP_TARGETS} closed ports (ICMP port-unreachable → refused)"),
            rounds.to_string(),
            fmt_secs(cpu(&u)),
            fmt_secs(wall(&u)),
        ],
    ];
    (rows, cpu(&u) / cpu(&t))
}

/// The physical reference: non-blocking connects, `CONCURRENCY` in flight,
/// completion by epoll, `SO_LINGER {on, 0}` like portsight's prober.
fn raw_sweep(addrs: &[SocketAddr]) -> Sweep {
    sweep(|| raw_connect_all(addrs))
}

fn raw_connect_all(addrs: &[SocketAddr]) -> (usize, usize) {
    // SAFETY: plain syscalls on descriptors this function owns; the event
    // buffer outlives every epoll_wait that writes into it.
    let epfd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    assert!(epfd >= 0, "epoll_create1");
    let mut pending: VecDeque<SocketAddr> = addrs.iter().copied().collect();
    let mut in_flight: std::collections::HashMap<i32, Socket> = Default::default();
    let (mut ok, mut refused) = (0, 0);
    let mut finish = |res: std::io::Result<()>| match res {
        Ok(()) => ok += 1,
        Err(e) if e.raw_os_error() == Some(libc::ECONNREFUSED) => refused += 1,
        Err(e) => panic!("unexpected connect error: {e}"),
    };
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; CONCURRENCY];
    while !pending.is_empty() || !in_flight.is_empty() {
        while in_flight.len() < CONCURRENCY {
            let Some(addr) = pending.pop_front() else {
                break;
            };
            let s = Socket::new(Domain::for_address(addr), Type::STREAM.nonblocking(), None)
                .expect("socket");
            s.set_linger(Some(Duration::ZERO)).expect("SO_LINGER");
            match s.connect(&addr.into()) {
                Ok(()) => finish(Ok(())),
                Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {
                    let fd = s.as_raw_fd();
                    let mut ev = libc::epoll_event {
                        events: libc::EPOLLOUT as u32,
                        u64: fd as u64,
                    };
                    let rc = unsafe { libc::epoll_ctl(epfd, libc::EPOLL_CTL_ADD, fd, &mut ev) };
                    assert_eq!(rc, 0, "epoll_ctl");
                    in_flight.insert(fd, s);
                }
                Err(e) => finish(Err(e)),
            }
        }
        if in_flight.is_empty() {
            continue;
        }
        let n = unsafe {
            libc::epoll_wait(
                epfd,
                events.as_mut_ptr(),
                CONCURRENCY as i32,
                TIMEOUT.as_millis() as i32,
            )
        };
        assert!(n > 0, "epoll_wait: nothing completed within the timeout");
        for ev in &events[..n as usize] {
            let fd = ev.u64 as i32;
            // Dropping the socket closes it, which also removes it from epoll.
            let s = in_flight.remove(&fd).expect("known fd");
            match s.take_error().expect("SO_ERROR") {
                None => finish(Ok(())),
                Some(e) => finish(Err(e)),
            }
        }
    }
    unsafe { libc::close(epfd) };
    (ok, refused)
}

/// blackbox_exporter probing every target through `/probe`, with
/// `BLACKBOX_CLIENTS` requests in flight; its CPU from /proc/<pid>/stat.
fn blackbox_sweep(pid: u32, addrs: &[SocketAddr]) -> Sweep {
    let web: SocketAddr = BLACKBOX_ADDR.parse().expect("addr");
    let targets: Vec<String> = addrs.iter().map(SocketAddr::to_string).collect();
    let (c0, t0) = (cpu_of(pid), Instant::now());
    let counts = support::blackbox_probe_all(web, &targets, BLACKBOX_CLIENTS);
    let (wall, cpu) = (t0.elapsed(), cpu_of(pid) - c0);
    assert_eq!(counts, (usize::from(OPEN), usize::from(CLOSED)));
    Sweep {
        cpu: cpu.as_secs_f64(),
        wall: wall.as_secs_f64(),
    }
}

fn main() {
    if !support::bench_mode("probe") {
        return;
    }
    support::enter_world();
    let rounds = env("PSB_ROUNDS", 15);
    let bb_rounds = env("PSB_BLACKBOX_ROUNDS", 3);

    let listeners: Vec<TcpListener> = (0..OPEN)
        .map(|i| {
            let s = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
            let addr: SocketAddr = ([127, 0, 0, 1], FIRST_PORT + i).into();
            s.bind(&addr.into()).expect("bind");
            s.listen(4096).expect("listen");
            s.set_nonblocking(true).expect("nonblocking");
            s.into()
        })
        .collect();
    let addrs: Vec<SocketAddr> = (0..OPEN + CLOSED)
        .map(|i| ([127, 0, 0, 1], FIRST_PORT + i).into())
        .collect();
    let targets: Vec<Target> = addrs
        .iter()
        .map(|a| Target::local(Vantage::Loopback, *a))
        .collect();
    let n = addrs.len() as f64;

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let prober = Prober::new(CONCURRENCY);

    // Warm-up, then interleaved sweeps so drift hits both alike.
    portsight_sweep(&rt, &prober, &targets);
    raw_sweep(&addrs);
    drain(&listeners);
    let (mut ours, mut raw) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        ours.push(portsight_sweep(&rt, &prober, &targets));
        drain(&listeners);
        raw.push(raw_sweep(&addrs));
        drain(&listeners);
    }

    let mut bb = Vec::new();
    let bb_bin = support::blackbox_bin();
    if let Some(bin) = &bb_bin {
        let dir = tempfile::tempdir().expect("tempdir");
        let web: SocketAddr = BLACKBOX_ADDR.parse().expect("addr");
        let proc = support::start_blackbox(bin, dir.path(), web);
        blackbox_sweep(proc.pid(), &addrs); // warm-up
        drain(&listeners);
        for _ in 0..bb_rounds {
            bb.push(blackbox_sweep(proc.pid(), &addrs));
            drain(&listeners);
        }
    }

    let per = |xs: &[Sweep]| median(&xs.iter().map(|s| s.cpu / n).collect::<Vec<_>>());
    let wall = |xs: &[Sweep]| median(&xs.iter().map(|s| s.wall).collect::<Vec<_>>());
    let (ours_cpu, raw_cpu) = (per(&ours), per(&raw));
    let mut rows = vec![
        vec![
            format!("portsight `Prober` (concurrency {CONCURRENCY}, tokio multi-thread)"),
            rounds.to_string(),
            fmt_secs(ours_cpu),
            fmt_secs(wall(&ours)),
        ],
        vec![
            format!("bare non-blocking connect loop (epoll, {CONCURRENCY} in flight)"),
            rounds.to_string(),
            fmt_secs(raw_cpu),
            fmt_secs(wall(&raw)),
        ],
    ];
    let mut ratios = vec![vec![
        "portsight / bare loop, CPU per probe".into(),
        format!("{:.2}×", ours_cpu / raw_cpu),
        "≤ 2×".into(),
        verdict(ours_cpu / raw_cpu <= 2.0),
    ]];
    if bb.is_empty() {
        ratios.push(vec![
            "blackbox_exporter / portsight".into(),
            "not measured: prometheus-blackbox-exporter not installed".into(),
            "≥ 20×".into(),
            "—".into(),
        ]);
    } else {
        let bb_cpu = per(&bb);
        rows.push(vec![
            format!(
                "blackbox_exporter {} `/probe?module=tcp_connect` ({BLACKBOX_CLIENTS} requests in flight)",
                blackbox_version()
            ),
            bb_rounds.to_string(),
            fmt_secs(bb_cpu),
            fmt_secs(wall(&bb)),
        ]);
        ratios.push(vec![
            "blackbox_exporter / bare loop, CPU per probe (the most any prober can reach)".into(),
            format!("{:.1}×", bb_cpu / raw_cpu),
            String::new(),
            String::new(),
        ]);
        ratios.push(vec![
            "blackbox_exporter / portsight, CPU per probe".into(),
            format!(
                "{:.0}× (portsight = 1/{:.0})",
                bb_cpu / ours_cpu,
                bb_cpu / ours_cpu
            ),
            "≥ 20×".into(),
            verdict(bb_cpu / ours_cpu >= 20.0),
        ]);
    }
    table(
        &format!(
            "Target 2: probing {} loopback targets ({OPEN} listening, {CLOSED} closed; medians over sweeps; {})",
            addrs.len(),
            support::machine()
        ),
        &["prober", "sweeps", "CPU per probe", "wall time per sweep"],
        &rows,
    );
    table(
        "Target 2: ratios",
        &["ratio", "value", "target", "result"],
        &ratios,
    );

    let tcp_closed = &targets[usize::from(OPEN)..];
    let (rows, ratio) = udp_beside_tcp(&rt, &prober, tcp_closed, rounds);
    table(
        "UDP beside TCP: portsight `Prober`, every probe refused (medians over sweeps)",
        &["probes", "sweeps", "CPU per probe", "wall time per sweep"],
        &rows,
    );
    table(
        "UDP beside TCP: ratio",
        &["ratio", "value", "target", "result"],
        &[vec![
            "UDP / TCP, CPU per refused probe".into(),
            format!("{ratio:.2}×"),
            "—".into(),
            "—".into(),
        ]],
    );
}

fn blackbox_version() -> String {
    support::blackbox_bin()
        .and_then(|b| std::process::Command::new(b).arg("--version").output().ok())
        .and_then(|o| {
            let text = String::from_utf8_lossy(&o.stdout).into_owned()
                + &String::from_utf8_lossy(&o.stderr);
            text.split_whitespace().nth(2).map(str::to_string)
        })
        .unwrap_or_default()
}
