//! The namespace room's costs: `netns::find` over a world of 50 network
//! namespaces (one sleeping process each, half with a UTS hostname of its
//! own), entering and leaving one namespace (`setns` there and back on a
//! thread), the worker's round trip for one closure and for a batch
//! over all 50, and a whole `Engine::scan` with `scan.namespaces` on (each
//! namespace holding `PSNB_LISTENERS`, default 10, listening sockets) beside
//! the same scan with it off, in the same run: what the namespace scan
//! adds to every scan of `serve` (one per second by default).
//!
//! The world is the benchmark's own: namespaces `psnsb-<pid>-*` made with
//! `ip netns add` and deleted at the end, seen from inside
//! `unshare --pid --fork --mount-proc` (DESIGN's safety rule), where the
//! benchmark runs itself again with `PSNB_CHILD` set.
//! `cargo bench --bench netns` (root). `PSNB_NAMESPACES` sets the count.

mod support;

use std::fs::File;
use std::hint::black_box;
use std::os::unix::fs::MetadataExt;
use std::process::{Command, Stdio};

use nix::sched::{CloneFlags, setns};
use portsight::netns::worker::Job;
use portsight::netns::{Roots, Worker, find};
use support::{Proc, fmt_secs, median, table, time_each};

const FIND_RUNS: usize = 300;
const SETNS_RUNS: usize = 20_000;
const RUN_RUNS: usize = 5_000;
const BATCH_RUNS: usize = 500;

fn count() -> usize {
    std::env::var("PSNB_NAMESPACES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50)
}

fn ip(args: &[&str]) {
    let st = Command::new("ip").args(args).status().expect("run ip");
    assert!(st.success(), "ip {}", args.join(" "));
}

/// The namespaces, deleted on drop.
struct World(Vec<String>);

impl Drop for World {
    fn drop(&mut self) {
        for n in &self.0 {
            let _ = Command::new("ip").args(["netns", "del", n]).status();
        }
    }
}

fn main() {
    if std::env::var("PSNB_CHILD").is_ok() {
        return measure();
    }
    if !support::bench_mode("netns") {
        return;
    }
    if !nix::unistd::geteuid().is_root() {
        eprintln!("the netns benchmark needs root (network namespaces)");
        std::process::exit(2);
    }
    let names: Vec<String> = (0..=count())
        .map(|i| format!("psnsb-{}-{i}", std::process::id()))
        .collect();
    let world = World(names.clone());
    for n in &world.0 {
        ip(&["netns", "add", n]);
    }
    let st = Command::new("nsenter")
        .arg(format!("--net=/run/netns/{}", names[0]))
        .args(["unshare", "--pid", "--fork", "--mount-proc"])
        .arg(std::env::current_exe().unwrap())
        .env("PSNB_CHILD", names[1..].join(" "))
        .status()
        .expect("run the benchmark in its world");
    drop(world);
    assert!(st.success(), "the benchmark's child: {st}");
}

fn listeners() -> usize {
    std::env::var("PSNB_LISTENERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10)
}

/// A process in `netns` listening on `listeners()` ports on its loopback
/// (8000..), with hostname `host` when given.
fn sleeper(netns: &str, host: Option<&str>) -> Proc {
    let listen = format!(
        "python3 -c 'import socket,time\nss=[]\nfor p in range(8000,{}):\n s=socket.socket();s.bind((\"127.0.0.1\",p));s.listen();ss.append(s)\ntime.sleep(600)'",
        8000 + listeners()
    );
    let mut cmd = Command::new("nsenter");
    cmd.arg(format!("--net=/run/netns/{netns}"));
    cmd.args(["unshare", "--uts", "sh", "-c"]);
    match host {
        Some(h) => cmd.arg(format!("hostname {h} && exec {listen}")),
        None => cmd.arg(format!("exec {listen}")),
    };
    Proc::spawn(cmd.stdin(Stdio::null()))
}

const SCAN_RUNS: usize = 200;

/// The median wall time and the mean CPU of one `Engine::scan`, with
/// `scan.namespaces` as given (discovery on, as by default).
fn engine_scan(namespaces: bool) -> (f64, f64) {
    use portsight::engine::{Engine, Flags, Live, Loaded};
    let mut config = portsight::config::Config::default();
    config.scan.namespaces = namespaces;
    config.discover.min_age = std::time::Duration::ZERO;
    let live = Live::with(Loaded::new(config).unwrap(), None, Flags::default());
    let engine = Engine::new(std::sync::Arc::new(live));
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(engine.scan());
    let cpu = support::cpu_self();
    let wall = median(&time_each(SCAN_RUNS, || {
        rt.block_on(engine.scan());
    }));
    let cpu = (support::cpu_self() - cpu).as_secs_f64() / SCAN_RUNS as f64;
    let s = engine.snapshot();
    if namespaces {
        assert_eq!(s.namespaces.len(), count(), "every namespace scanned");
        assert!(
            s.ports.len() >= count() * listeners(),
            "their ports watched"
        );
    }
    (wall, cpu)
}

fn measure() {
    let names: Vec<String> = std::env::var("PSNB_CHILD")
        .unwrap()
        .split_whitespace()
        .map(String::from)
        .collect();
    let _sleepers: Vec<Proc> = names
        .iter()
        .enumerate()
        .map(|(i, n)| sleeper(n, (i % 2 == 0).then(|| format!("psnsb-{i}")).as_deref()))
        .collect();
    let roots = Roots::default();
    let found = support::wait_for(std::time::Duration::from_secs(20), "the sleepers", || {
        let f = find(&roots).ok()?;
        let hosts = f
            .namespaces
            .iter()
            .filter(|s| s.ns.name.starts_with("psnsb-") && !names.contains(&s.ns.name))
            .count();
        (f.namespaces.len() == names.len() && hosts == names.len().div_ceil(2)).then_some(f)
    });
    let cpu = support::cpu_self();
    let find_t = median(&time_each(FIND_RUNS, || {
        black_box(find(&roots).expect("find"));
    }));
    let find_cpu = (support::cpu_self() - cpu).as_secs_f64() / FIND_RUNS as f64;

    let target = File::open(format!("/run/netns/{}", names[0])).unwrap();
    let inode = target.metadata().unwrap().ino();
    let setns_t = std::thread::scope(|s| {
        s.spawn(|| {
            let own = File::open("/proc/thread-self/ns/net").unwrap();
            median(&time_each(SETNS_RUNS, || {
                setns(&target, CloneFlags::CLONE_NEWNET).unwrap();
                setns(&own, CloneFlags::CLONE_NEWNET).unwrap();
            }))
        })
        .join()
        .unwrap()
    });

    let worker = Worker::start().unwrap();
    assert!(worker.sync(&found.namespaces).is_empty());
    let run_t = median(&time_each(RUN_RUNS, || {
        worker.run(inode, || ()).unwrap();
    }));
    let own_t = median(&time_each(RUN_RUNS, || {
        worker.run(worker.own(), || ()).unwrap();
    }));
    let batch_t = median(&time_each(BATCH_RUNS, || {
        let jobs: Vec<(u64, Job<()>)> = found
            .namespaces
            .iter()
            .map(|s| (s.ns.inode, Box::new(|| ()) as Job<()>))
            .collect();
        assert!(worker.run_all(jobs).into_iter().all(|r| r.is_ok()));
    }));
    let n = found.namespaces.len();
    let (off_t, off_cpu) = engine_scan(false);
    let (on_t, on_cpu) = engine_scan(true);
    let rows = vec![
        vec![
            "`Engine::scan`, scan.namespaces = false (wall; CPU)".into(),
            format!("{}; {}", fmt_secs(off_t), fmt_secs(off_cpu)),
        ],
        vec![
            format!(
                "`Engine::scan`, {n} namespaces x {} listeners (wall; CPU)",
                listeners()
            ),
            format!("{}; {}", fmt_secs(on_t), fmt_secs(on_cpu)),
        ],
        vec![
            "CPU the namespace scan adds to `serve` at scan.interval 1s".into(),
            format!("{:.2} % of one core", (on_cpu - off_cpu) * 100.0),
        ],
        vec![
            format!("`find`, {n} namespaces ({} with a hostname)", n.div_ceil(2)),
            fmt_secs(find_t),
        ],
        vec![
            "`find`: CPU per call (mean, all threads)".into(),
            fmt_secs(find_cpu),
        ],
        vec![
            "`setns` into one namespace and back (a thread)".into(),
            fmt_secs(setns_t),
        ],
        vec![
            "`Worker::run`, one closure in one namespace".into(),
            fmt_secs(run_t),
        ],
        vec![
            "`Worker::run`, one closure at home (the channel hop)".into(),
            fmt_secs(own_t),
        ],
        vec![
            format!("`Worker::run_all`, one closure in each of {n}"),
            fmt_secs(batch_t),
        ],
    ];
    table(
        &format!("Namespaces: {}", support::machine()),
        &["what", "median"],
        &rows,
    );
}
