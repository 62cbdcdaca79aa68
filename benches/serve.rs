//! Targets 3 to 6: the real `portsight serve` binary in the benchmark's
//! network namespace, watching listeners this process holds.
//!
//! 3. detection latency: a watched listener closes → `/metrics` shows
//!    `portsight_port_listening 0`; beside blackbox_exporter scraped every 15 s;
//! 4. footprint: RSS watching 1,000 ports against blackbox_exporter's idle
//!    RSS; idle CPU with 100 ports at default settings;
//! 5. probe cycles with `/metrics` for 1,000 ports × 3 vantages under wrk load;
//! 6. TIME_WAIT left by probing 1,000 targets every second for 60 s.
//!
//! `cargo bench --bench serve` (root). `PSB_ONLY=3,5` runs a subset;
//! `PSB_IDLE_SECONDS`, `PSB_LOAD_SECONDS`, `PSB_TIMEWAIT_SECONDS` shorten runs.

mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use support::serve::{Listeners, Portsight};
use support::{Http, env, fmt_secs, median, sample, table, verdict};

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

fn main() {
    if !support::bench_mode("serve") {
        return;
    }
    support::enter_world();
    let only = std::env::var("PSB_ONLY").unwrap_or_default();
    let run = |n: &str| only.is_empty() || only.split(',').any(|o| o.trim() == n);
    let dir = tempfile::tempdir().expect("tempdir");
    let bb = support::blackbox_bin();
    println!(
        "\nportsight serve: {}; machine: {}\n",
        support::portsight_bin(),
        support::machine()
    );
    if run("3") {
        detection(dir.path(), bb.as_deref());
    }
    if run("4") {
        footprint(dir.path(), bb.as_deref());
    }
    if run("5") {
        scrape_under_load(dir.path());
    }
    if run("6") {
        time_wait(dir.path());
    }
}

/// Target 3: close watched listeners at spread-out moments and time until
/// `/metrics` says `portsight_port_listening 0` (polled every 25 ms), and
/// until a blackbox_exporter scraped every 15 s (each target at its own
/// offset, as Prometheus spreads them) returns `probe_success 0`.
fn detection(dir: &Path, bb: Option<&str>) {
    const N: u16 = 20;
    const FIRST: u16 = 23_000;
    const SCRAPE: f64 = 15.0;
    let ports: Vec<u16> = (FIRST..FIRST + N).collect();
    let listeners = Listeners::new(ports.iter().copied(), false);
    let ps = Portsight::start(
        dir,
        "detect",
        "127.0.0.1:10917",
        &ports,
        "[vantage]\ninterfaces = false\n",
    );
    let bb_web: SocketAddr = "127.0.0.1:19116".parse().expect("addr");
    let _bb = bb.map(|b| support::start_blackbox(b, dir, bb_web));

    let t0 = unix_now() + 1.0;
    let closed_at: Vec<f64> = (0..N).map(|i| t0 + f64::from(i) * 1.05).collect();
    let deadline = t0 + f64::from(N) * 1.05 + SCRAPE + 3.0;
    let ours: Arc<Mutex<BTreeMap<u16, f64>>> = Arc::default();
    let theirs: Arc<Mutex<BTreeMap<u16, f64>>> = Arc::default();
    std::thread::scope(|s| {
        // portsight: poll /metrics.
        s.spawn(|| {
            let mut http = Http::new(ps.web);
            while unix_now() < deadline && ours.lock().expect("lock").len() < ports.len() {
                let (_, body) = http.get("/metrics").expect("GET /metrics");
                let at = unix_now();
                for &p in &ports {
                    let label = format!("port=\"{p}\"");
                    if sample(&body, "portsight_port_listening", &[&label]) == Some(0.0) {
                        ours.lock().expect("lock").entry(p).or_insert(at);
                    }
                }
                std::thread::sleep(Duration::from_millis(25));
            }
        });
        // blackbox_exporter: one scrape loop per target, 15 s apart.
        if bb.is_some() {
            for (i, &p) in ports.iter().enumerate() {
                let theirs = Arc::clone(&theirs);
                s.spawn(move || {
                    let mut http = Http::new(bb_web);
                    let mut next = t0 - SCRAPE + (i as f64 * 7.3) % SCRAPE;
                    while next < deadline {
                        let wait = next - unix_now();
                        if wait > 0.0 {
                            std::thread::sleep(Duration::from_secs_f64(wait));
                        }
                        let (_, body) = http
                            .get(&format!("/probe?module=tcp_connect&target=127.0.0.1:{p}"))
                            .expect("blackbox /probe");
                        if sample(&body, "probe_success", &[]) == Some(0.0) {
                            theirs.lock().expect("lock").insert(p, unix_now());
                            break;
                        }
                        next += SCRAPE;
                    }
                });
            }
        }
        // Close the listeners one by one.
        for (i, &p) in ports.iter().enumerate() {
            let wait = closed_at[i] - unix_now();
            if wait > 0.0 {
                std::thread::sleep(Duration::from_secs_f64(wait));
            }
            listeners.close(p);
        }
    });
    let latencies = |seen: &BTreeMap<u16, f64>| -> Vec<f64> {
        ports
            .iter()
            .enumerate()
            .filter_map(|(i, p)| seen.get(p).map(|t| t - closed_at[i]))
            .collect()
    };
    let ours = latencies(&ours.lock().expect("lock"));
    let theirs = latencies(&theirs.lock().expect("lock"));
    assert_eq!(
        ours.len(),
        ports.len(),
        "portsight missed a closed listener"
    );
    let max = |v: &[f64]| v.iter().copied().fold(0.0, f64::max);
    let ours_med = median(&ours);
    let mut rows = vec![vec![
        "portsight serve, scan.interval 1s (default), `/metrics` polled every 25 ms".into(),
        ours.len().to_string(),
        fmt_secs(ours_med),
        fmt_secs(max(&ours)),
        format!("{:.2} × scan.interval", ours_med / 1.0),
    ]];
    if !theirs.is_empty() {
        rows.push(vec![
            "blackbox_exporter `tcp_connect`, scraped every 15 s".into(),
            theirs.len().to_string(),
            fmt_secs(median(&theirs)),
            fmt_secs(max(&theirs)),
            format!("{:.2} × scrape interval", median(&theirs) / SCRAPE),
        ]);
    }
    table(
        "Target 3: detection latency, listener closed → reported not listening",
        &[
            "watcher",
            "listeners closed",
            "median",
            "max",
            "median in intervals",
        ],
        &rows,
    );
    table(
        "Target 3: result",
        &["figure", "value", "target", "result"],
        &[vec![
            "portsight median detection latency".into(),
            fmt_secs(ours_med),
            "≤ 1.2 × scan.interval = 1.2 s".into(),
            verdict(ours_med <= 1.2),
        ]],
    );
    drop(ps);
}

/// Target 4: resident memory watching 1,000 ports (3 vantages each) after a
/// full probe round and a few scrapes, beside blackbox_exporter idle; and
/// idle CPU with 100 ports at default settings.
fn footprint(dir: &Path, bb: Option<&str>) {
    const FIRST: u16 = 24_000;
    let idle_secs = env("PSB_IDLE_SECONDS", 60);
    let listeners = Listeners::new(FIRST..FIRST + 1000, true);
    let ports: Vec<u16> = (FIRST..FIRST + 1000).collect();

    let big = Portsight::start(dir, "footprint1000", "127.0.0.1:10918", &ports, "");
    let series = big
        .metrics()
        .lines()
        .filter(|l| !l.starts_with('#'))
        .count();
    for _ in 0..3 {
        big.metrics();
    }
    std::thread::sleep(Duration::from_secs(1));
    let big_rss = support::status_kib(big.pid(), "VmRSS");
    let big_hwm = support::status_kib(big.pid(), "VmHWM");
    drop(big);

    // Idle CPU: 100 ports, default settings; blackbox_exporter idles alongside.
    let bb_web: SocketAddr = "127.0.0.1:19117".parse().expect("addr");
    let bb_proc = bb.map(|b| support::start_blackbox(b, dir, bb_web));
    let small = Portsight::start(dir, "idle100", "127.0.0.1:10919", &ports[..100], "");
    std::thread::sleep(Duration::from_secs(2));
    let (c0, t0) = (support::cpu_of(small.pid()), Instant::now());
    std::thread::sleep(Duration::from_secs(idle_secs));
    let cpu = (support::cpu_of(small.pid()) - c0).as_secs_f64() / t0.elapsed().as_secs_f64();
    let small_rss = support::status_kib(small.pid(), "VmRSS");
    let bb_rss = bb_proc
        .as_ref()
        .map(|p| support::status_kib(p.pid(), "VmRSS"));
    drop(small);
    drop(listeners);

    let mib = |k: u64| format!("{:.1} MiB", k as f64 / 1024.0);
    let mut rows = vec![
        vec![
            format!(
                "portsight serve, 1,000 ports × 3 vantages, after the first probe round and 4 scrapes ({series} series)"
            ),
            mib(big_rss),
            format!("peak {}", mib(big_hwm)),
        ],
        vec![
            format!("portsight serve, 100 ports, defaults, after {idle_secs} s"),
            mib(small_rss),
            format!("CPU {:.2}% of one core over {idle_secs} s", cpu * 100.0),
        ],
    ];
    let mut results = vec![vec![
        "idle CPU, 100 ports, default settings (scan 1 s, probe 15 s)".into(),
        format!("{:.2}% of one core", cpu * 100.0),
        "reported".into(),
        "—".into(),
    ]];
    match bb_rss {
        Some(bb_rss) => {
            rows.push(vec![
                format!("blackbox_exporter, idle {} s after start", idle_secs + 2),
                mib(bb_rss),
                String::new(),
            ]);
            let ratio = big_rss as f64 / bb_rss as f64;
            results.insert(
                0,
                vec![
                    "portsight RSS (1,000 ports) / blackbox_exporter idle RSS".into(),
                    format!("{ratio:.2}"),
                    "≤ 0.5".into(),
                    verdict(ratio <= 0.5),
                ],
            );
        }
        None => results.insert(
            0,
            vec![
                "portsight RSS / blackbox_exporter idle RSS".into(),
                "not measured: prometheus-blackbox-exporter not installed".into(),
                "≤ 0.5".into(),
                "—".into(),
            ],
        ),
    }
    table(
        "Target 4: footprint (VmRSS from /proc/<pid>/status; CPU from /proc/<pid>/stat)",
        &["process", "resident memory", "other"],
        &rows,
    );
    table(
        "Target 4: result",
        &["figure", "value", "target", "result"],
        &results,
    );
}

/// Cycle timestamps seen by polling `/metrics`.
#[derive(Default)]
struct Cycles {
    /// (completion timestamp, stage)
    probe: Vec<f64>,
    scan: Vec<f64>,
    /// (when seen, duration) of probe rounds seen one at a time.
    probe_durations: Vec<(f64, f64)>,
}

/// Target 5: probe-round timestamps (`portsight_last_cycle_timestamp_seconds`)
/// while idle and while wrk hammers `/metrics` for 1,000 ports × 3 vantages.
fn scrape_under_load(dir: &Path) {
    const FIRST: u16 = 25_000;
    let secs = env("PSB_LOAD_SECONDS", 40);
    let ports: Vec<u16> = (FIRST..FIRST + 1000).collect();
    let _listeners = Listeners::new(ports.iter().copied(), true);
    let ps = Portsight::start(
        dir,
        "load",
        "127.0.0.1:10920",
        &ports,
        "[probe]\ninterval = \"2s\"\ntimeout = \"1s\"\n",
    );
    let body = ps.metrics();
    let series = body.lines().filter(|l| !l.starts_with('#')).count();
    let targets = body
        .lines()
        .filter(|l| l.starts_with("portsight_probe_success{"))
        .count();

    let cycles = Mutex::new(Cycles::default());
    let stop = std::sync::atomic::AtomicBool::new(false);
    let started = unix_now();
    let load_from = started + secs as f64;
    let mut wrk_out = String::new();
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut http = Http::new(ps.web);
            let (mut last_sum, mut last_count) = (None::<f64>, None::<f64>);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let Ok((_, body)) = http.get("/metrics") else {
                    continue;
                };
                let at = unix_now();
                let mut c = cycles.lock().expect("lock");
                let get = |name: &str| sample(&body, name, &["stage=\"probe\""]);
                if let Some(t) = sample(
                    &body,
                    "portsight_last_cycle_timestamp_seconds",
                    &["stage=\"probe\""],
                ) && c.probe.last() != Some(&t)
                {
                    c.probe.push(t);
                }
                if let Some(t) = sample(
                    &body,
                    "portsight_last_cycle_timestamp_seconds",
                    &["stage=\"scan\""],
                ) && c.scan.last() != Some(&t)
                {
                    c.scan.push(t);
                }
                let (sum, count) = (
                    get("portsight_cycle_duration_seconds_sum"),
                    get("portsight_cycle_duration_seconds_count"),
                );
                if let (Some(s0), Some(n0), Some(s1), Some(n1)) = (last_sum, last_count, sum, count)
                    && n1 - n0 == 1.0
                {
                    c.probe_durations.push((at, s1 - s0));
                }
                (last_sum, last_count) = (sum, count);
                drop(c);
                std::thread::sleep(Duration::from_millis(200));
            }
        });
        std::thread::sleep(Duration::from_secs(secs));
        let out = Command::new("wrk")
            .args(["-t2", "-c8", &format!("-d{secs}s")])
            .arg(format!("http://{}/metrics", ps.web))
            .output()
            .expect("run wrk (apt-get install wrk)");
        wrk_out = String::from_utf8_lossy(&out.stdout).into_owned();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    let load_to = load_from + secs as f64;
    let c = cycles.into_inner().expect("lock");
    // Gaps between consecutive completions, each wholly inside one phase.
    let gaps = |ts: &[f64], from: f64, to: f64| -> Vec<f64> {
        ts.windows(2)
            .filter(|w| w[0] >= from && w[1] <= to)
            .map(|w| w[1] - w[0])
            .collect()
    };
    let durs = |from: f64, to: f64| -> Vec<f64> {
        c.probe_durations
            .iter()
            .filter(|(at, _)| *at >= from && *at <= to)
            .map(|(_, d)| *d)
            .collect()
    };
    let (p_idle, p_load) = (
        gaps(&c.probe, started + 2.0, load_from),
        gaps(&c.probe, load_from + 1.0, load_to),
    );
    let (s_idle, s_load) = (
        gaps(&c.scan, started + 2.0, load_from),
        gaps(&c.scan, load_from + 1.0, load_to),
    );
    let (d_idle, d_load) = (
        durs(started + 2.0, load_from),
        durs(load_from + 1.0, load_to),
    );
    let wrk_rate = wrk_out
        .lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .map_or("?".into(), |v| v.trim().to_string());
    let wrk_latency = wrk_out
        .lines()
        .find_map(|l| l.trim().strip_prefix("Latency"))
        .and_then(|v| v.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".into());
    let m = |v: &[f64]| if v.is_empty() { f64::NAN } else { median(v) };
    let row = |what: &str, idle: &[f64], load: &[f64]| {
        vec![
            what.to_string(),
            format!("{} (n={})", fmt_secs(m(idle)), idle.len()),
            format!("{} (n={})", fmt_secs(m(load)), load.len()),
            format!("{:.3}×", m(load) / m(idle)),
        ]
    };
    table(
        &format!(
            "Target 5: cycles while idle and under `wrk -t2 -c8 -d{secs}s /metrics` ({targets} probe targets, {series} series per scrape; wrk: {wrk_rate} scrapes/s, mean latency {wrk_latency}; probe.interval 2s ±10% jitter)"
        ),
        &["median", "idle", "under wrk load", "load / idle"],
        &[
            row("gap between probe-round completions", &p_idle, &p_load),
            row("probe round duration (3,000 connects)", &d_idle, &d_load),
            row(
                "gap between scan completions (scan.interval 1s)",
                &s_idle,
                &s_load,
            ),
        ],
    );
    let delay = m(&p_load) / m(&p_idle);
    table(
        "Target 5: result",
        &["figure", "value", "target", "result"],
        &[vec![
            "probe-cycle gap under load / idle".into(),
            format!("{delay:.3}× ({:+.1}%)", (delay - 1.0) * 100.0),
            "≤ 1.05× (+5%)".into(),
            verdict(delay <= 1.05),
        ]],
    );
}

/// Target 6: 1,000 targets (500 ports × `127.0.0.1` and `[::1]`, half of
/// them listening) probed every second for 60 s; TIME_WAIT sockets counted
/// with `ss` every 5 s, on the prober's side (the peer is a probed port) and
/// on the listeners' side (the local port is); the benchmark's own HTTP
/// connections to portsight are neither.
fn time_wait(dir: &Path) {
    const FIRST: u16 = 26_000;
    let secs = env("PSB_TIMEWAIT_SECONDS", 60);
    let ports: Vec<u16> = (FIRST..FIRST + 500).collect();
    let _listeners = Listeners::new(ports[..250].iter().copied(), true);
    let ps = Portsight::start(
        dir,
        "timewait",
        "127.0.0.1:10921",
        &ports,
        "[probe]\ninterval = \"1s\"\ntimeout = \"500ms\"\n[vantage]\ninterfaces = false\n",
    );
    let probes = support::serve::probes_total;
    let before = probes(&ps.metrics());
    let t0 = Instant::now();
    let (mut max_prober, mut max_server, mut last) = (0usize, 0usize, (0, 0));
    while t0.elapsed() < Duration::from_secs(secs) {
        std::thread::sleep(Duration::from_secs(5));
        let out = Command::new("ss")
            .args(["-Htan", "state", "time-wait"])
            .output()
            .expect("run ss");
        let text = String::from_utf8_lossy(&out.stdout);
        let (mut prober, mut server) = (0, 0);
        let probed = |p: Option<u16>| p.is_some_and(|p| ports.contains(&p));
        for line in text.lines() {
            // Recv-Q Send-Q Local:Port Peer:Port
            let port = |i| {
                line.split_whitespace()
                    .nth(i)
                    .and_then(|a: &str| a.rsplit(':').next()?.parse::<u16>().ok())
            };
            if probed(port(3)) {
                prober += 1;
            } else if probed(port(2)) {
                server += 1;
            }
        }
        max_prober = max_prober.max(prober);
        max_server = max_server.max(server);
        last = (prober, server);
    }
    let elapsed = t0.elapsed().as_secs_f64();
    let attempts = probes(&ps.metrics()) - before;
    table(
        &format!(
            "Target 6: TIME_WAIT after probing 1,000 targets every second for {secs} s ({attempts:.0} connect attempts, {:.0}/s)",
            attempts / elapsed
        ),
        &[
            "TIME_WAIT sockets (`ss -Htan state time-wait`, every 5 s)",
            "max",
            "at the end",
            "target",
            "result",
        ],
        &[
            vec![
                "prober's side (peer port a probed port)".into(),
                max_prober.to_string(),
                last.0.to_string(),
                "< 100".into(),
                verdict(max_prober < 100),
            ],
            vec![
                "listeners' side (local port a probed port)".into(),
                max_server.to_string(),
                last.1.to_string(),
                String::new(),
                String::new(),
            ],
        ],
    );
}
