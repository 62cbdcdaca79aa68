//! Target 1: the listener scan, flat in the number of established
//! connections, against reading `/proc/net/tcp{,6}`; `ss -Htn state listening`
//! for reference.
//!
//! `cargo bench --bench scan` (root). `PSB_CONNECTIONS` sets how many
//! established loopback connections are opened (default 40,000).

mod support;

use std::hint::black_box;
use std::io::{BufRead, BufReader, Read};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};

use portsight::sockets::{netlink, procfs};
use support::{fmt_secs, median, table, time_each, verdict};

/// Listening sockets in the world besides the connection sinks.
const LISTENERS: u16 = 20;
const NETLINK_RUNS: usize = 2000;
const PROCFS_RUNS: usize = 30;
const SS_RUNS: usize = 30;

struct Figures {
    netlink: f64,
    procfs: f64,
    ss: f64,
    listeners: usize,
}

fn measure() -> Figures {
    // Warm-up, and the listener count both sources agree on.
    let n = netlink::dump_listeners().expect("netlink dump").len();
    let p = procfs::read_listeners(Path::new("/proc"))
        .expect("/proc/net/tcp")
        .len();
    assert_eq!(n, p, "netlink and /proc disagree on the listeners");
    let netlink = median(&time_each(NETLINK_RUNS, || {
        black_box(netlink::dump_listeners().expect("netlink dump"));
    }));
    let procfs = median(&time_each(PROCFS_RUNS, || {
        black_box(procfs::read_listeners(Path::new("/proc")).expect("/proc/net/tcp"));
    }));
    let ss = median(&time_each(SS_RUNS, || {
        let st = Command::new("ss")
            .args(["-Htn", "state", "listening"])
            .stdout(Stdio::null())
            .status()
            .expect("run ss");
        assert!(st.success());
    }));
    Figures {
        netlink,
        procfs,
        ss,
        listeners: n,
    }
}

fn established() -> usize {
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|f| std::fs::read_to_string(f).ok())
        .map(|t| {
            t.lines()
                .skip(1)
                .filter(|l| l.split_whitespace().nth(3) == Some("01"))
                .count()
        })
        .sum()
}

/// Connections one holder process opens: two file descriptors each (both
/// ends), under the 20,000 hard limit.
const PER_HOLDER: usize = 8_000;

/// A holder: opens `n` loopback connections to a listener of its own,
/// accepts them, says `ready`, and holds them until its stdin closes.
fn hold(n: usize) {
    support::raise_fd_limit();
    let sink = TcpListener::bind("127.0.0.1:0").expect("bind sink");
    let addr = sink.local_addr().expect("addr");
    let mut held: Vec<(TcpStream, TcpStream)> = Vec::with_capacity(n);
    for _ in 0..n {
        let client = TcpStream::connect(addr).expect("connect");
        let (server, _) = sink.accept().expect("accept");
        held.push((client, server));
    }
    println!("ready");
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
    drop(held);
}

fn main() {
    if let Some(n) = std::env::var("PSB_HOLD").ok().and_then(|v| v.parse().ok()) {
        return hold(n);
    }
    if !support::bench_mode("scan") {
        return;
    }
    support::enter_world();
    let connections: usize = std::env::var("PSB_CONNECTIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(40_000);

    let _listeners: Vec<TcpListener> = (0..LISTENERS)
        .map(|i| TcpListener::bind(("127.0.0.1", 10_000 + i)).expect("bind listener"))
        .collect();

    let idle = measure();

    let started = std::time::Instant::now();
    let exe = std::env::current_exe().expect("current_exe");
    let mut holders = Vec::new();
    let mut left = connections;
    while left > 0 {
        let n = left.min(PER_HOLDER);
        left -= n;
        let mut child = support::Proc::spawn(
            Command::new(&exe)
                .env("PSB_HOLD", n.to_string())
                .stdin(Stdio::piped())
                .stdout(Stdio::piped()),
        );
        let mut line = String::new();
        BufReader::new(child.0.stdout.as_mut().expect("stdout"))
            .read_line(&mut line)
            .expect("read holder");
        assert_eq!(line.trim(), "ready", "holder failed");
        holders.push(child);
    }
    let open = established();
    eprintln!(
        "scan: {connections} connections ({open} ESTABLISHED sockets) opened by {} processes in {:.1} s",
        holders.len(),
        started.elapsed().as_secs_f64()
    );

    let busy = measure();
    let flat = busy.netlink / idle.netlink;
    let vs_proc = busy.procfs / busy.netlink;

    table(
        &format!(
            "Target 1: listener scan with {connections} established loopback connections ({} listeners; medians of {NETLINK_RUNS} netlink, {PROCFS_RUNS} /proc, {SS_RUNS} ss runs; {})",
            idle.listeners,
            support::machine()
        ),
        &[
            "ESTABLISHED sockets",
            "portsight netlink dump",
            "/proc/net/tcp + tcp6 read+parse",
            "`ss -Htn state listening` (incl. process start)",
        ],
        &[
            vec![
                "0".into(),
                fmt_secs(idle.netlink),
                fmt_secs(idle.procfs),
                fmt_secs(idle.ss),
            ],
            vec![
                open.to_string(),
                fmt_secs(busy.netlink),
                fmt_secs(busy.procfs),
                fmt_secs(busy.ss),
            ],
        ],
    );
    table(
        "Target 1: ratios",
        &["ratio", "value", "target", "result"],
        &[
            vec![
                format!("netlink with {open} / with 0 established"),
                format!("{flat:.2}×"),
                "≤ 1.2×".into(),
                verdict(flat <= 1.2),
            ],
            vec![
                format!("/proc/net/tcp{{,6}} / netlink, {open} established"),
                format!("{vs_proc:.0}× (netlink = 1/{vs_proc:.0})"),
                "≥ 50×".into(),
                verdict(vs_proc >= 50.0),
            ],
        ],
    );
    drop(holders);
}
