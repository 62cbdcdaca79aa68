//! Issue 15, the whole `portsight serve` process in steady state (BENCHMARKS
//! section 11), each figure beside its reference in the same run:
//!
//! - `cpu` (items 1 and 7): 1,000 ports on loopback, 500 listening, with
//!   `vantage.interfaces = false` (2,000 targets: `127.0.0.1` and `::1`),
//!   `probe.interval = 1s`, `probe.timeout = 500ms`, one `/metrics` scrape a
//!   second. CPU per probe of the whole process against a bare C epoll connect
//!   loop (`benches/connect_loop.c`) on the same targets at the same rate, and
//!   against blackbox_exporter driven as Prometheus would: `/probe` for every
//!   target every second. The three alternate, `PSS_REPEAT` times; portsight
//!   is stopped (SIGSTOP) while the others are measured. RSS of both
//!   exporters. `PSS_PERF=1` also records the first portsight window with
//!   `perf record -e cpu-clock -g` and prints where the time goes (and writes
//!   a flamegraph when `inferno-flamegraph` is on PATH).
//! - `memory` (item 2): resident memory above the empty process (no ports)
//!   at 2,000 and at 20,000 targets after `PSS_SECONDS` of the same steady
//!   state; then the gap between probe rounds while idle and while `wrk`
//!   scrapes `/metrics` with 8 connections.
//! - `large` (item 4): 1,000 and 10,000 ports, all listening, three vantages
//!   each: one scan, one full probe round and one scrape, each timed with
//!   the other stages an hour apart (two processes for each size), and the
//!   whole process's CPU per probe while rounds run.
//!
//! - `idle` (item 3): 100 ports at default settings (scan every 1 s, probe
//!   every 15 s), found by discovery alone; the same on a host, where the
//!   namespace scan runs (portsight as PID 1 of a PID namespace of its own
//!   with 300 processes, 5 in network namespaces of their own, and one
//!   starting 5 short-lived processes a second: it lists them every scan,
//!   and reads new ones' `ns/net`); then 100 configured of 1,000
//!   listening with discovery off. CPU (from a cgroup v2 directory of each
//!   process: `support::CpuMeter`) over `PSS_IDLE_SECONDS` (default 60),
//!   `PSS_REPEAT` times; with `PSS_BASE` (the path of another build of
//!   `portsight`) the two alternate, each first in every other repeat, an
//!   A/B in one run. `PSS_PERF=1` profiles the first window of this build. `PSS_IDLE_SETUPS` picks
//!   set-ups: `defaults,host,section4`.
//!
//! `cargo bench --bench steady` (root). `PSS_ONLY=cpu,memory,large,idle`
//! runs a subset; `PSS_SECONDS` (default 20) is each measuring window;
//! `PSS_PERF_HZ` (default 999) is perf's sampling rate.

mod support;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use support::serve::{Listeners, Portsight, probes_total};
use support::{Http, cpu_of, env, fmt_secs, median, sample, status_kib, table, verdict};

/// The steady job's settings (the issue's), as a config section.
const STEADY: &str =
    "[probe]\ninterval = \"1s\"\ntimeout = \"500ms\"\n[vantage]\ninterfaces = false\n";

fn main() {
    if !support::bench_mode("steady") {
        return;
    }
    support::enter_world();
    let only = std::env::var("PSS_ONLY").unwrap_or_default();
    let run = |n: &str| only.is_empty() || only.split(',').any(|o| o.trim() == n);
    let dir = tempfile::tempdir().expect("tempdir");
    let secs = env("PSS_SECONDS", 20);
    println!(
        "\nportsight serve: {}; machine: {}\n",
        support::portsight_bin(),
        support::machine()
    );
    if run("cpu") {
        cpu(dir.path(), secs);
    }
    if run("memory") {
        memory(dir.path(), secs);
    }
    if run("large") {
        large(dir.path());
    }
    if run("idle") {
        idle(dir.path());
    }
}

/// Item 3: idle CPU with 100 ports, each build of `portsight` (this one,
/// and `PSS_BASE`) in two set-ups: section 4's (100 ports in the config,
/// discovery off, 1,000 listening), and the defaults themselves (no port
/// in the config: discovery finds the 100 listening, and the web ports of
/// the builds, after its `min_age`).
/// Every build runs throughout; all but the measured one are stopped
/// (SIGSTOP), so the windows alternate without restarts.
fn idle(dir: &Path) {
    use nix::sys::signal::Signal;
    const FIRST: u16 = 24_000;
    let secs = env("PSS_IDLE_SECONDS", 60);
    let repeat = env("PSS_REPEAT", 3);
    let mut builds = vec![(
        "this build".to_string(),
        support::portsight_bin().to_string(),
    )];
    if let Ok(b) = std::env::var("PSS_BASE") {
        builds.push((format!("PSS_BASE ({b})"), b));
    }
    let ports: Vec<u16> = (FIRST..FIRST + 100).collect();
    let watched = Listeners::new(ports.iter().copied(), true);
    let mut rows = Vec::new();
    let mut results = Vec::new();
    let setups = [
        (
            "defaults",
            "defaults: the 100 listening ports found by discovery, nothing else listening",
        ),
        (
            "host",
            "defaults on a host: as above, portsight seeing 300 processes (hostPID), 5 of them in network namespaces of their own, and 5 new processes a second",
        ),
        (
            "section4",
            "section 4: the 100 ports in the config, discovery off, 1,000 listening",
        ),
    ];
    let chosen = std::env::var("PSS_IDLE_SETUPS").unwrap_or_default();
    let mut others = None;
    for (setup, what) in setups
        .iter()
        .filter(|(key, _)| chosen.is_empty() || chosen.split(',').any(|c| c.trim() == *key))
    {
        if *setup == "section4" {
            others = Some(Listeners::new(FIRST + 100..FIRST + 1000, true));
        }
        let running: Vec<(Portsight, support::CpuMeter)> = builds
            .iter()
            .enumerate()
            .map(|(i, (_, bin))| {
                let web = format!("127.0.0.1:{}", 10931 + i);
                let name = format!("idle-{setup}-{i}");
                let ps = match *setup {
                    "defaults" => Portsight::start_config(bin, dir, &name, &web, ""),
                    "host" => Portsight::start_host(bin, dir, &name, &web, "", 300, 5),
                    _ => Portsight::start_bin(bin, dir, &name, &web, &ports, ""),
                };
                support::wait_for(Duration::from_secs(120), "100 ports watched", || {
                    // Discovery also finds the web ports of the builds.
                    let body = ps.metrics();
                    let n = ports
                        .iter()
                        .filter(|p| {
                            let port = format!("port=\"{p}\"");
                            body.lines()
                                .any(|l| l.starts_with("portsight_port_info{") && l.contains(&port))
                        })
                        .count();
                    if n != ports.len() {
                        std::thread::sleep(Duration::from_millis(500));
                    }
                    (n == ports.len()).then_some(())
                });
                signal(ps.pid(), Signal::SIGSTOP);
                let meter = support::CpuMeter::new(ps.pid(), &name);
                (ps, meter)
            })
            .collect();
        let mut shares: Vec<Vec<f64>> = vec![Vec::new(); builds.len()];
        for r in 0..repeat {
            // Each build first in every other repeat: the first window of a
            // repeat measured 1.16x the second with the same build in both.
            let mut order: Vec<usize> = (0..running.len()).collect();
            if r % 2 == 1 {
                order.reverse();
            }
            for i in order {
                let (ps, meter) = &running[i];
                signal(ps.pid(), Signal::SIGCONT);
                std::thread::sleep(Duration::from_secs(3));
                let perf =
                    (r == 0 && i == 0 && env("PSS_PERF", 0) == 1).then(|| Perf::start(ps.pid()));
                let (c0, t0) = (meter.used(), Instant::now());
                std::thread::sleep(Duration::from_secs(secs));
                let cpu = (meter.used() - c0).as_secs_f64();
                shares[i].push(cpu / t0.elapsed().as_secs_f64() * 100.0);
                if let Some(perf) = perf {
                    println!("\n({what})");
                    perf.report();
                }
                signal(ps.pid(), Signal::SIGSTOP);
            }
        }
        for (ps, _) in &running {
            signal(ps.pid(), Signal::SIGCONT);
        }
        drop(running);
        for ((name, _), s) in builds.iter().zip(&shares) {
            let each: Vec<String> = s.iter().map(|v| format!("{v:.3} %")).collect();
            rows.push(vec![
                what.to_string(),
                name.clone(),
                each.join(", "),
                format!("{:.3} %", median(s)),
            ]);
        }
        results.push(vec![
            format!("idle CPU, this build, {what}"),
            format!("{:.3} % of one core", median(&shares[0])),
            "≤ 0.2 %".into(),
            verdict(median(&shares[0]) <= 0.2),
        ]);
        if shares.len() > 1 {
            results.push(vec![
                format!("this build / PSS_BASE, {what}"),
                format!("{:.2}×", median(&shares[0]) / median(&shares[1])),
                "reported".into(),
                "—".into(),
            ]);
        }
    }
    drop((watched, others));
    table(
        &format!("Item 3: idle, 100 ports, {secs} s windows, builds alternating"),
        &["set-up", "build", "CPU of one core, each window", "median"],
        &rows,
    );
    table(
        "Item 3: result",
        &["figure", "value", "target", "result"],
        &results,
    );
}

/// What one process did in one measuring window.
struct Window {
    cpu: f64,
    probes: f64,
    wall: f64,
}

impl Window {
    fn per_probe(&self) -> f64 {
        self.cpu / self.probes
    }
}

/// `portsight serve` over `secs`, scraped once a second when `scraped`
/// (the scrapes are part of what it costs), else only at the start and
/// the end: what the exposition itself costs is the difference.
fn serve_window(ps: &Portsight, secs: u64, scraped: bool) -> Window {
    let mut http = Http::new(ps.web);
    let scrape = |http: &mut Http| {
        let (status, body) = http.get("/metrics").expect("GET /metrics");
        assert_eq!(status, 200);
        body
    };
    let p0 = probes_total(&scrape(&mut http));
    let (c0, t0) = (cpu_of(ps.pid()), Instant::now());
    let mut body = String::new();
    for i in 1..=secs {
        let wait = Duration::from_secs(i).saturating_sub(t0.elapsed());
        std::thread::sleep(wait);
        if scraped || i == secs {
            body = scrape(&mut http);
        }
    }
    Window {
        cpu: (cpu_of(ps.pid()) - c0).as_secs_f64(),
        probes: probes_total(&body) - p0,
        wall: t0.elapsed().as_secs_f64(),
    }
}

/// The C loop over `targets` for `secs`, one round a second.
fn bare_window(exe: &Path, targets: &str, secs: u64) -> Window {
    let mut child = Command::new(exe)
        .args([&secs.to_string(), "1000", "500", "256"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run connect_loop");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(targets.as_bytes())
        .expect("write targets");
    let t0 = Instant::now();
    let out = child.wait_with_output().expect("connect_loop");
    assert!(out.status.success(), "connect_loop failed");
    let text = String::from_utf8_lossy(&out.stdout);
    let field = |name: &str| -> f64 {
        let words: Vec<&str> = text.split_whitespace().collect();
        let at = words.iter().position(|w| *w == name).expect(name);
        words[at + 1].parse().expect("number")
    };
    let rounds = field("rounds");
    assert_eq!(
        field("ok"),
        rounds * 1000.0,
        "the C loop saw the wrong number of listeners: {text}"
    );
    Window {
        cpu: field("cpu_us") / 1e6,
        probes: field("probes"),
        wall: t0.elapsed().as_secs_f64(),
    }
}

/// blackbox_exporter driven as Prometheus would drive it: `/probe` for every
/// target once a second, 32 requests in flight on kept-alive connections.
fn blackbox_window(
    bb: &support::Proc,
    web: std::net::SocketAddr,
    ports: &[u16],
    secs: u64,
) -> Window {
    let targets: Vec<String> = ports
        .iter()
        .flat_map(|p| [format!("127.0.0.1:{p}"), format!("%5B%3A%3A1%5D:{p}")])
        .collect();
    let (c0, t0) = (cpu_of(bb.pid()), Instant::now());
    let (mut done, mut ok) = (0, 0);
    let mut late = 0;
    for round in 0..secs {
        let (succeeded, failed) = support::blackbox_probe_all(web, &targets, 32);
        (done, ok) = (done + succeeded + failed, ok + succeeded);
        let wait = Duration::from_secs(round + 1).checked_sub(t0.elapsed());
        match wait {
            Some(w) => std::thread::sleep(w),
            None => late += 1,
        }
    }
    assert_eq!(ok * 2, done, "blackbox_exporter saw the wrong listeners");
    if late > 0 {
        println!("(blackbox_exporter: {late} of {secs} rounds took longer than a second)");
    }
    Window {
        cpu: (cpu_of(bb.pid()) - c0).as_secs_f64(),
        probes: done as f64,
        wall: t0.elapsed().as_secs_f64(),
    }
}

/// Builds the C reference loop into cargo's scratch directory.
fn connect_loop() -> std::path::PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/connect_loop.c");
    let exe = Path::new(env!("CARGO_TARGET_TMPDIR")).join("connect_loop");
    let st = Command::new("cc")
        .args(["-O2", "-o"])
        .arg(&exe)
        .arg(&src)
        .status()
        .expect("run cc");
    assert!(st.success(), "cc benches/connect_loop.c failed");
    exe
}

fn signal(pid: u32, sig: nix::sys::signal::Signal) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), sig).expect("kill");
}

/// Items 1 and 7.
fn cpu(dir: &Path, secs: u64) {
    use nix::sys::signal::Signal;
    const FIRST: u16 = 20_000;
    let repeat = env("PSS_REPEAT", 3);
    let ports: Vec<u16> = (FIRST..FIRST + 1000).collect();
    let _listeners = Listeners::new(ports[..500].iter().copied(), true);
    let targets: String = ports
        .iter()
        .flat_map(|p| [format!("127.0.0.1 {p}\n"), format!("::1 {p}\n")])
        .collect();
    let exe = connect_loop();
    let ps = Portsight::start(dir, "steady", "127.0.0.1:10930", &ports, STEADY);
    std::thread::sleep(Duration::from_secs(3));
    let bb_web: std::net::SocketAddr = "127.0.0.1:19130".parse().expect("addr");
    let bb = support::blackbox_bin().map(|b| support::start_blackbox(&b, dir, bb_web));

    let (mut ours, mut unscraped, mut bare, mut theirs) = (vec![], vec![], vec![], vec![]);
    for r in 0..repeat {
        let perf = (r == 0 && env("PSS_PERF", 0) == 1).then(|| Perf::start(ps.pid()));
        ours.push(serve_window(&ps, secs, true));
        if let Some(perf) = perf {
            perf.report();
        }
        unscraped.push(serve_window(&ps, secs, false));
        signal(ps.pid(), Signal::SIGSTOP);
        bare.push(bare_window(&exe, &targets, secs));
        if let Some(bb) = &bb {
            theirs.push(blackbox_window(bb, bb_web, &ports, secs));
        }
        signal(ps.pid(), Signal::SIGCONT);
        std::thread::sleep(Duration::from_secs(3));
    }
    let ours_rss = status_kib(ps.pid(), "VmRSS");
    let bb_rss = bb.as_ref().map(|b| status_kib(b.pid(), "VmRSS"));
    let med = |w: &[Window]| median(&w.iter().map(Window::per_probe).collect::<Vec<_>>());
    let rate = |w: &[Window]| median(&w.iter().map(|w| w.probes / w.wall).collect::<Vec<_>>());
    let mib = |k: u64| format!("{:.1} MiB", k as f64 / 1024.0);
    let row = |what: &str, w: &[Window], rss: String| {
        vec![
            what.to_string(),
            w.len().to_string(),
            format!("{:.0}/s", rate(w)),
            fmt_secs(med(w)),
            format!(
                "{:.1}% of one core",
                median(&w.iter().map(|w| w.cpu / w.wall * 100.0).collect::<Vec<_>>())
            ),
            rss,
        ]
    };
    let mut rows = vec![
        row(
            "portsight serve (whole process: scans, rounds, diagnosis, 1 scrape/s)",
            &ours,
            mib(ours_rss),
        ),
        row(
            "the same, scraped only at the start and end of the window",
            &unscraped,
            "—".into(),
        ),
        row(
            "bare C epoll connect loop (`benches/connect_loop.c`)",
            &bare,
            "—".into(),
        ),
    ];
    if let Some(rss) = bb_rss {
        rows.push(row(
            "blackbox_exporter, `/probe` for every target every second",
            &theirs,
            mib(rss),
        ));
    }
    table(
        &format!(
            "Item 1/7: steady state, 2,000 targets (1,000 ports × 127.0.0.1, ::1; 500 listening), one round a second, {secs} s windows alternating"
        ),
        &[
            "process",
            "windows",
            "probes",
            "CPU per probe (median)",
            "CPU",
            "RSS",
        ],
        &rows,
    );
    let ratio = med(&ours) / med(&bare);
    let mut results = vec![
        vec![
            "portsight / bare C loop, CPU per probe".into(),
            format!("{ratio:.2}×"),
            "≤ 1.5×".into(),
            verdict(ratio <= 1.5),
        ],
        vec![
            "the same without the scrapes / bare C loop (what the exposition costs is the rest)"
                .into(),
            format!("{:.2}×", med(&unscraped) / med(&bare)),
            "reported".into(),
            "—".into(),
        ],
    ];
    if !theirs.is_empty() {
        results.push(vec![
            "blackbox_exporter / portsight, CPU per probe".into(),
            format!("{:.1}×", med(&theirs) / med(&ours)),
            "reported".into(),
            "—".into(),
        ]);
        results.push(vec![
            "blackbox_exporter / bare C loop, CPU per probe".into(),
            format!("{:.1}×", med(&theirs) / med(&bare)),
            "reported".into(),
            "—".into(),
        ]);
    }
    table(
        "Item 1/7: result",
        &["figure", "value", "target", "result"],
        &results,
    );
}

/// `perf record` of one process while it is measured.
struct Perf(std::process::Child);

impl Perf {
    fn start(pid: u32) -> Perf {
        let child = Command::new("perf")
            .args(["record", "-q", "-e", "cpu-clock", "-g", "-F"])
            .arg(env("PSS_PERF_HZ", 999).to_string())
            .arg("-o")
            .arg(Path::new(env!("CARGO_TARGET_TMPDIR")).join("steady-perf.data"))
            .args(["-p", &pid.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("run perf (apt-get install linux-perf)");
        std::thread::sleep(Duration::from_millis(500));
        Perf(child)
    }

    /// Stops the recording and prints the top of `perf report` by symbol,
    /// self time, and writes a flamegraph with inferno; both files stay in
    /// cargo's scratch directory (`target/tmp/steady-*`).
    fn report(mut self) {
        signal(self.0.id(), nix::sys::signal::Signal::SIGINT);
        let _ = self.0.wait();
        let data = Path::new(env!("CARGO_TARGET_TMPDIR")).join("steady-perf.data");
        let out = Command::new("perf")
            .args([
                "report",
                "--stdio",
                "--no-children",
                "-g",
                "none",
                "--percent-limit",
                "0.7",
                "--sort",
                "dso,symbol",
                "-i",
            ])
            .arg(&data)
            .output()
            .expect("perf report");
        println!("\n#### perf report (cpu-clock, self time, ≥ 0.7 %)\n\n```");
        for l in String::from_utf8_lossy(&out.stdout).lines() {
            if !l.starts_with('#') && !l.trim().is_empty() {
                println!("{l}");
            }
        }
        println!("```");
        let svg = Path::new(env!("CARGO_TARGET_TMPDIR")).join("steady-flamegraph.svg");
        let sh = format!(
            "perf script -i {} | inferno-collapse-perf | inferno-flamegraph > {}",
            data.display(),
            svg.display()
        );
        if Command::new("sh")
            .args(["-c", "command -v inferno-flamegraph"])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
            && Command::new("sh")
                .args(["-c", &sh])
                .status()
                .is_ok_and(|s| s.success())
        {
            println!("flamegraph: {}", svg.display());
        }
    }
}

/// One probe round seen by polling `/metrics`: when it completed (its
/// timestamp), when it was seen, and how long it took when it was the
/// only round since the last poll.
struct Round {
    completed: f64,
    seen: Instant,
    took: Option<f64>,
}

/// Probe rounds seen by polling `/metrics` every 200 ms until `stop`.
fn rounds(web: std::net::SocketAddr, stop: &AtomicBool) -> Vec<Round> {
    let mut http = Http::new(web);
    let mut seen: Vec<Round> = vec![];
    let mut last: Option<(f64, f64)> = None;
    let probe = ["stage=\"probe\""];
    while !stop.load(Ordering::Relaxed) {
        if let Ok((_, body)) = http.get("/metrics")
            && let Some(t) = sample(&body, "portsight_last_cycle_timestamp_seconds", &probe)
        {
            let sum = sample(&body, "portsight_cycle_duration_seconds_sum", &probe);
            let count = sample(&body, "portsight_cycle_duration_seconds_count", &probe);
            let now = sum.zip(count);
            if seen.last().map(|r| r.completed) != Some(t) {
                let took = last
                    .zip(now)
                    .filter(|((_, n0), (_, n1))| n1 - n0 == 1.0)
                    .map(|((s0, _), (s1, _))| s1 - s0);
                seen.push(Round {
                    completed: t,
                    seen: Instant::now(),
                    took,
                });
            }
            last = now;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    seen
}

/// Item 2: each job at the same probe rate, 2,000 a second.
fn memory(dir: &Path, secs: u64) {
    const FIRST: u16 = 11_000;
    let ports: Vec<u16> = (FIRST..FIRST + 10_000).collect();
    let _listeners = Listeners::new(ports[..5_000].iter().copied(), true);
    let mib = |k: u64| format!("{:.1} MiB", k as f64 / 1024.0);
    let mut rows = vec![];
    let mut results = vec![];
    let mut empty = 0;
    for (n, web, interval) in [
        (0usize, "127.0.0.1:10931", 1),
        (1_000, "127.0.0.1:10932", 1),
        (10_000, "127.0.0.1:10933", 10),
    ] {
        // 1,000 ports: 500 listening, as in `cpu`.
        let watched: Vec<u16> = match n {
            1_000 => ports[4_500..5_500].to_vec(),
            _ => ports[..n].to_vec(),
        };
        let config = STEADY.replace("\"1s\"", &format!("\"{interval}s\""));
        let ps = Portsight::start(dir, &format!("memory{n}"), web, &watched, &config);
        let w = serve_window(&ps, secs.max(2 * interval), true);
        let rss = status_kib(ps.pid(), "VmRSS");
        let targets = 2 * n;
        if n == 0 {
            empty = rss;
            rows.push(vec![
                "no ports".into(),
                mib(rss),
                "—".into(),
                "—".into(),
                "—".into(),
            ]);
            continue;
        }
        let per = (rss.saturating_sub(empty)) as f64 / targets as f64;
        // Probe rounds idle, then under wrk, five rounds or more each.
        let stop = AtomicBool::new(false);
        let load = Duration::from_secs(secs.max(5 * interval));
        let mut wrk_rate = String::new();
        let seen = std::thread::scope(|s| {
            let seen = s.spawn(|| rounds(ps.web, &stop));
            std::thread::sleep(load);
            let out = Command::new("wrk")
                .args(["-t2", "-c8", &format!("-d{}s", load.as_secs())])
                .arg(format!("http://{}/metrics", ps.web))
                .output()
                .expect("run wrk (apt-get install wrk)");
            wrk_rate = String::from_utf8_lossy(&out.stdout)
                .lines()
                .find_map(|l| {
                    l.strip_prefix("Requests/sec:")
                        .map(|v| v.trim().to_string())
                })
                .unwrap_or_else(|| "?".into());
            stop.store(true, Ordering::Relaxed);
            seen.join().expect("poller")
        });
        let loaded_rss = status_kib(ps.pid(), "VmHWM");
        let split = seen[0].seen + load;
        // Rounds completed before wrk started, and within its run (after
        // its first second): the gaps between them and their durations.
        let phase = |from: Instant, to: Instant| -> (Vec<f64>, Vec<f64>) {
            let gaps = seen
                .windows(2)
                .filter(|w| w[0].seen >= from && w[1].seen <= to)
                .map(|w| w[1].completed - w[0].completed)
                .collect();
            let took = seen
                .iter()
                .filter(|r| r.seen >= from && r.seen <= to)
                .filter_map(|r| r.took)
                .collect();
            (gaps, took)
        };
        let (idle, idle_took) = phase(seen[0].seen, split);
        let (loaded, loaded_took) = phase(split + Duration::from_secs(1), split + load);
        let gap = median(&loaded) / median(&idle);
        let delay = (median(&loaded_took) - median(&idle_took)) / interval as f64;
        rows.push(vec![
            format!("{n} ports, {targets} targets, probe.interval {interval}s"),
            mib(rss),
            format!("{per:.1} KiB"),
            format!("{:.1} µs per probe", w.per_probe() * 1e6),
            format!(
                "round {} → {} ({:+.1}% of the interval); gap {gap:.3}× (n={}, {}); wrk {wrk_rate} scrapes/s; peak RSS {}",
                fmt_secs(median(&idle_took)),
                fmt_secs(median(&loaded_took)),
                delay * 100.0,
                idle.len(),
                loaded.len(),
                mib(loaded_rss)
            ),
        ]);
        results.push(vec![
            format!("RSS above the empty process per target, {targets} targets"),
            format!("{per:.1} KiB"),
            "≤ 8 KiB".into(),
            verdict(per <= 8.0),
        ]);
        results.push(vec![
            format!("probe rounds delayed by wrk on /metrics, {targets} targets (longer round / interval)"),
            format!("{:+.1}%", delay * 100.0),
            "≤ 5%".into(),
            verdict(delay <= 0.05),
        ]);
    }
    table(
        "Item 2: resident memory after the steady job (VmRSS), then `wrk -t2 -c8` on /metrics",
        &[
            "watching",
            "RSS",
            "per target above empty",
            "CPU",
            "under wrk (idle → loaded, medians)",
        ],
        &rows,
    );
    table(
        "Item 2: result",
        &["figure", "value", "target", "result"],
        &results,
    );
}

/// The sum and count of `portsight_cycle_duration_seconds` of `stage`.
fn stage_sum(body: &str, stage: &str) -> Option<(f64, f64)> {
    let l = format!("stage=\"{stage}\"");
    let sum = sample(body, "portsight_cycle_duration_seconds_sum", &[&l])?;
    let count = sample(body, "portsight_cycle_duration_seconds_count", &[&l])?;
    Some((sum, count))
}

/// Item 4.
fn large(dir: &Path) {
    const FIRST: u16 = 11_000;
    let ports: Vec<u16> = (FIRST..FIRST + 10_000).collect();
    let _listeners = Listeners::new(ports.iter().copied(), true);
    let mut rows = vec![];
    let mut per_port: Vec<[f64; 5]> = vec![];
    for (n, webs) in [
        (1_000usize, ["127.0.0.1:10934", "127.0.0.1:10936"]),
        (10_000, ["127.0.0.1:10935", "127.0.0.1:10937"]),
    ] {
        // Each stage alone, so that none is timed while another shares the
        // two cores with it (at 10,000 ports a scan takes ~85 ms of every
        // second and a scrape ~200 ms): rounds with scans an hour apart,
        // then scans and scrapes with rounds an hour apart.
        let ps = Portsight::start(
            dir,
            &format!("large{n}-rounds"),
            webs[0],
            &ports[..n],
            "[scan]\ninterval = \"1h\"\n[probe]\ninterval = \"5s\"\n",
        );
        let mut http = Http::new(ps.web);
        // A round's duration is the histogram's sum between two scrapes that
        // saw exactly one more (one scrape every 2.5 s; rounds come every
        // 5 s ± 10 %).
        let mut probes = vec![];
        let mut last_round: Option<(f64, f64)> = None;
        let perf = (env("PSS_PERF", 0) == 1).then(|| Perf::start(ps.pid()));
        let (t0, cpu0, mut counted0) = (Instant::now(), cpu_of(ps.pid()), None);
        while t0.elapsed() < Duration::from_secs(30) {
            let (_, body) = http.get("/metrics").expect("GET /metrics");
            counted0.get_or_insert(probes_total(&body));
            if let Some((s1, n1)) = stage_sum(&body, "probe") {
                if let Some((s0, n0)) = last_round
                    && n1 - n0 == 1.0
                {
                    probes.push(s1 - s0);
                }
                last_round = Some((s1, n1));
            }
            std::thread::sleep(Duration::from_millis(2_500));
        }
        let (cpu, window) = (cpu_of(ps.pid()) - cpu0, t0.elapsed());
        let probed = probes_total(&ps.metrics()) - counted0.unwrap_or(0.0);
        if let Some(perf) = perf {
            println!("\n{n} ports, probe rounds:");
            perf.report();
        }
        let rss = status_kib(ps.pid(), "VmRSS");
        drop(ps);
        let ps = Portsight::start(
            dir,
            &format!("large{n}-scans"),
            webs[1],
            &ports[..n],
            "[probe]\ninterval = \"1h\"\n",
        );
        let mut http = Http::new(ps.web);
        support::wait_for(Duration::from_secs(60), "the first round", || {
            let (_, body) = http.get("/metrics").ok()?;
            stage_sum(&body, "probe").filter(|(_, n)| *n >= 1.0)
        });
        let (_, body) = http.get("/metrics").expect("GET /metrics");
        let (s0, n0) = stage_sum(&body, "scan").expect("scans in /metrics");
        let (t1, cpu1) = (Instant::now(), cpu_of(ps.pid()));
        std::thread::sleep(Duration::from_secs(15));
        let (_, body) = http.get("/metrics").expect("GET /metrics");
        let (s1, n1) = stage_sum(&body, "scan").expect("scans in /metrics");
        // The CPU a second of scans alone costs, to take out of the scrapes'.
        let scanning = (cpu_of(ps.pid()) - cpu1).as_secs_f64() / t1.elapsed().as_secs_f64();
        assert!(n1 > n0, "no scans in the window");
        let scan = (s1 - s0) / (n1 - n0);
        let scans = (n1 - n0) as usize;
        // Scrapes, timed at the client: a full GET every 300 ms. Nothing
        // changes between them, so they send the text rendered once for
        // the snapshot (a new one's rendering: `cargo bench --bench render`).
        let mut scrapes = vec![];
        let mut size = 0;
        let (t2, cpu2) = (Instant::now(), cpu_of(ps.pid()));
        for _ in 0..30 {
            let t = Instant::now();
            let (_, body) = http.get("/metrics").expect("GET /metrics");
            scrapes.push(t.elapsed().as_secs_f64());
            size = body.len();
            std::thread::sleep(Duration::from_millis(300));
        }
        let serving = ((cpu_of(ps.pid()) - cpu2).as_secs_f64()
            - scanning * t2.elapsed().as_secs_f64())
            / scrapes.len() as f64;
        let (probe, scrape) = (median(&probes), median(&scrapes));
        let per_probe = cpu.as_secs_f64() / probed;
        per_port.push([
            scan / n as f64,
            probe / n as f64,
            scrape / n as f64,
            serving / n as f64,
            per_probe,
        ]);
        rows.push(vec![
            format!("{n} ports × 3 vantages"),
            format!("{} (mean of {scans})", fmt_secs(scan)),
            format!("{} (n={})", fmt_secs(probe), probes.len()),
            format!(
                "{} (n={}, {:.1} MB)",
                fmt_secs(scrape),
                scrapes.len(),
                size as f64 / 1e6
            ),
            fmt_secs(serving),
            format!("{:.1} MiB", rss as f64 / 1024.0),
            format!(
                "{:.1} µs ({probed:.0} probes, {:.2} s CPU in {:.0} s)",
                per_probe * 1e6,
                cpu.as_secs_f64(),
                window.as_secs_f64()
            ),
        ]);
    }
    table(
        "Item 4: one scan (mean), one full probe round and one scrape (medians), each stage alone (rounds every 5 s; scans every 1 s)",
        &[
            "watching",
            "scan",
            "probe round",
            "scrape (client's GET)",
            "serve's CPU per scrape",
            "RSS",
            "CPU of serve per probe while rounds are timed (12 scrapes in)",
        ],
        &rows,
    );
    let names = [
        "scan per port",
        "probe round per port",
        "client's GET of /metrics per port",
        "serve's CPU per scrape, per port",
        "CPU of serve per probe",
    ];
    let results: Vec<Vec<String>> = (0..5)
        .map(|i| {
            let r = per_port[1][i] / per_port[0][i];
            // The client's GET includes the client reading 70 MB into
            // fresh memory: reported; serve's own CPU per scrape is judged.
            let (target, result) = if i == 2 {
                (
                    "reported (the client's reading is in it)".into(),
                    "—".into(),
                )
            } else {
                ("≤ 1× (linear), noise allowing".into(), verdict(r <= 1.25))
            };
            vec![
                format!("{}, 10,000 / 1,000 ports", names[i]),
                format!("{r:.2}×"),
                target,
                result,
            ]
        })
        .collect();
    table(
        "Item 4: result",
        &["figure", "value", "target", "result"],
        &results,
    );
}
