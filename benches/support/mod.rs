//! What the benchmarks share: the world they run in (a network namespace of
//! their own), medians, CPU and memory of a process, a small HTTP client and
//! the report lines `bench/run` collects.
//!
//! Every benchmark runs in a network namespace that is not the host's: when
//! started in the host's namespace (plain `cargo bench`), it unshares a fresh
//! one, which the kernel deletes when the process exits; `bench/run` runs
//! them inside one it made with `ip netns add`.

#![allow(dead_code)] // each bench uses a part

pub mod serve;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Source ports the kernel picks inside the benchmark namespace; fixed
/// listener ports sit below.
pub const EPHEMERAL: (u16, u16) = (30000, 65000);

/// The interface address of the benchmark host (a veth pair, both ends in
/// the namespace: this kernel has no dummy links).
pub const HOST_ADDR: &str = "10.77.0.1";

/// `cargo bench` passes `--bench`; `cargo test --all-targets` does not, and
/// then the benchmarks only say so (they need root and minutes).
pub fn bench_mode(name: &str) -> bool {
    if std::env::args().any(|a| a == "--bench") {
        return true;
    }
    println!("{name}: benchmark; run with `cargo bench --bench {name}` or bench/run");
    false
}

/// Enters the benchmark world: a network namespace of its own with `lo` up,
/// a veth pair holding [`HOST_ADDR`], the ephemeral port range widened, and
/// the open-file limit raised to its hard limit. Exits with a message
/// without root.
pub fn enter_world() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("benchmarks need root (network namespaces, rlimits)");
        std::process::exit(2);
    }
    // Fail closed: unless this is the namespace bench/run made, unshare a
    // fresh one. (Comparing with PID 1's namespace is not enough: where
    // /proc/1/ns/net cannot be read, as here, that test cannot tell.)
    let started_in = std::fs::read_link("/proc/self/ns/net").ok();
    if !in_bench_run_namespace() {
        use nix::sched::CloneFlags;
        nix::sched::unshare(CloneFlags::CLONE_NEWNET | CloneFlags::CLONE_NEWNS)
            .expect("unshare(CLONE_NEWNET | CLONE_NEWNS)");
        // As `ip netns exec` does: /sys shows this namespace's interfaces.
        run("mount", &["--make-rprivate", "/"]);
        run("mount", &["-t", "sysfs", "sysfs", "/sys"]);
        assert_ne!(
            std::fs::read_link("/proc/self/ns/net").ok(),
            started_in,
            "refusing to run in the namespace the benchmark was started in"
        );
    }
    ip(&["link", "set", "lo", "up"]);
    if !Command::new("ip")
        .args(["link", "show", "psb0"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
    {
        ip(&[
            "link", "add", "psb0", "type", "veth", "peer", "name", "psb1",
        ]);
        ip(&["addr", "add", &format!("{HOST_ADDR}/24"), "dev", "psb0"]);
        ip(&["link", "set", "psb0", "up"]);
        ip(&["link", "set", "psb1", "up"]);
    }
    std::fs::write(
        "/proc/sys/net/ipv4/ip_local_port_range",
        format!("{} {}", EPHEMERAL.0, EPHEMERAL.1),
    )
    .expect("widen ip_local_port_range");
    raise_fd_limit();
}

/// Whether this process runs in the namespace `bench/run` made and named
/// in `PSB_NETNS` (`/run/netns/<name>` is that namespace's file).
fn in_bench_run_namespace() -> bool {
    use std::os::unix::fs::MetadataExt;
    let id = |p: &str| std::fs::metadata(p).ok().map(|m| (m.dev(), m.ino()));
    std::env::var("PSB_NETNS").is_ok_and(|name| {
        !name.contains('/')
            && id(&format!("/run/netns/{name}"))
                .is_some_and(|ns| id("/proc/self/ns/net") == Some(ns))
    })
}

fn ip(args: &[&str]) {
    run("ip", args);
}

fn run(cmd: &str, args: &[&str]) {
    let st = Command::new(cmd).args(args).status().expect(cmd);
    assert!(st.success(), "{cmd} {args:?} failed");
}

/// Raises the soft open-file limit to the hard one (this sandbox lacks
/// `CAP_SYS_RESOURCE`, so the hard limit, 20,000 here, stays): benchmarks
/// that need more file descriptors spread them over several processes.
pub fn raise_fd_limit() -> u64 {
    // SAFETY: getrlimit/setrlimit read and write the rlimit struct we pass.
    unsafe {
        let mut lim: libc::rlimit = std::mem::zeroed();
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        lim.rlim_cur = lim.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        lim.rlim_cur
    }
}

/// Interface and kernel of this machine, for the report.
pub fn machine() -> String {
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|m| m.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_default();
    format!(
        "{} cores ({model}), Linux {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        kernel.trim()
    )
}

/// The median of `xs` (the mean of the middle two for an even count).
pub fn median(xs: &[f64]) -> f64 {
    assert!(!xs.is_empty(), "median of nothing");
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Times `f` `n` times and returns each run's wall time in seconds.
pub fn time_each(n: usize, mut f: impl FnMut()) -> Vec<f64> {
    (0..n)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .collect()
}

/// CPU time (user + system) of this whole process, every thread.
pub fn cpu_self() -> Duration {
    // SAFETY: getrusage writes into the zeroed struct we pass.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    assert_eq!(rc, 0, "getrusage");
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// CPU time (utime + stime) of process `pid`, from `/proc/<pid>/stat`.
pub fn cpu_of(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read stat");
    // Fields after the command name, which is in parentheses.
    let rest = &stat[stat.rfind(')').expect("stat format") + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
    Duration::from_secs_f64(ticks as f64 / hz as f64)
}

/// The CPU time of one process to the microsecond: it is moved into a
/// cgroup v2 directory of its own, whose `cpu.stat` counts every thread,
/// including those that end (the ticks of `/proc/<pid>/stat` are 10 ms:
/// ±8 % of an idle minute at 0.2 %). Where no cgroup v2 hierarchy is
/// mounted, or the move fails, it falls back to [`cpu_of`] and says so.
/// Dropping it moves the process back and removes the directory (waiting
/// up to 5 s for a process killed just before to leave it).
pub struct CpuMeter {
    pid: u32,
    dir: Option<PathBuf>,
}

impl CpuMeter {
    pub fn new(pid: u32, name: &str) -> CpuMeter {
        let dir = cgroup2_root().and_then(|root| {
            let dir = root.join(format!("portsight-bench-{}-{name}", std::process::id()));
            std::fs::create_dir(&dir).ok()?;
            if std::fs::write(dir.join("cgroup.procs"), pid.to_string()).is_err() {
                let _ = std::fs::remove_dir(&dir);
                return None;
            }
            Some(dir)
        });
        if dir.is_none() {
            println!("(no cgroup v2 directory for {name}: CPU in clock ticks)");
        }
        CpuMeter { pid, dir }
    }

    pub fn used(&self) -> Duration {
        let Some(dir) = &self.dir else {
            return cpu_of(self.pid);
        };
        let stat = std::fs::read_to_string(dir.join("cpu.stat")).expect("read cpu.stat");
        let usec = stat
            .lines()
            .find_map(|l| l.strip_prefix("usage_usec ")?.trim().parse().ok())
            .expect("usage_usec in cpu.stat");
        Duration::from_micros(usec)
    }
}

impl Drop for CpuMeter {
    fn drop(&mut self) {
        let Some(dir) = &self.dir else { return };
        let parent = dir.parent().expect("cgroup parent").join("cgroup.procs");
        let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
        for pid in procs.lines() {
            let _ = std::fs::write(&parent, pid);
        }
        // A process killed just before may still be exiting in it (EBUSY).
        let mut tries = 0;
        while let Err(e) = std::fs::remove_dir(dir) {
            tries += 1;
            if tries == 100 {
                eprintln!("could not remove {}: {e}", dir.display());
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
}

/// Where a cgroup v2 hierarchy is mounted, from `/proc/self/mountinfo`.
/// The bench's own mount namespace (a fresh `/sys`, as `ip netns exec`
/// makes) has none: one is mounted on its `/sys/fs/cgroup`, which is
/// empty only in such a fresh `/sys` (the machine's holds its cgroups).
fn cgroup2_root() -> Option<PathBuf> {
    if let Some(root) = cgroup2_mount() {
        return Some(root);
    }
    let fresh = std::fs::read_dir("/sys/fs/cgroup").is_ok_and(|mut d| d.next().is_none());
    if !fresh {
        return None;
    }
    let mounted = Command::new("mount")
        .args(["-t", "cgroup2", "cgroup2", "/sys/fs/cgroup"])
        .status()
        .is_ok_and(|s| s.success());
    mounted.then(cgroup2_mount).flatten()
}

fn cgroup2_mount() -> Option<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    info.lines().find_map(|l| {
        let (left, right) = l.split_once(" - ")?;
        let point = left.split_whitespace().nth(4)?;
        // A mount a later one hides (the machine's, under a fresh /sys)
        // is still listed.
        (right.split_whitespace().next()? == "cgroup2"
            && Path::new(point).join("cgroup.procs").exists())
        .then(|| PathBuf::from(point))
    })
}

/// A `VmRSS`-style field of `/proc/<pid>/status`, in KiB.
pub fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| {
            v.trim_start_matches(':')
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("{field} not in /proc/{pid}/status"))
}

/// A child process killed (and reaped) when dropped.
pub struct Proc(pub Child);

impl Proc {
    pub fn spawn(cmd: &mut Command) -> Proc {
        Proc(cmd.spawn().unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}")))
    }

    pub fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits until `f` returns `Some`, up to `limit`.
pub fn wait_for<T>(limit: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let t = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(t.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// An HTTP/1.1 client on one kept-alive connection.
pub struct Http {
    addr: SocketAddr,
    conn: Option<BufReader<TcpStream>>,
}

impl Http {
    pub fn new(addr: SocketAddr) -> Http {
        Http { addr, conn: None }
    }

    /// `GET path`: the status and body. Reconnects once if the kept-alive
    /// connection was closed.
    pub fn get(&mut self, path: &str) -> std::io::Result<(u16, String)> {
        match self.try_get(path) {
            Ok(r) => Ok(r),
            Err(_) => {
                self.conn = None;
                self.try_get(path)
            }
        }
    }

    fn try_get(&mut self, path: &str) -> std::io::Result<(u16, String)> {
        if self.conn.is_none() {
            let s = TcpStream::connect_timeout(&self.addr, Duration::from_secs(5))?;
            s.set_read_timeout(Some(Duration::from_secs(30)))?;
            s.set_nodelay(true)?;
            self.conn = Some(BufReader::new(s));
        }
        let conn = self.conn.as_mut().expect("connected");
        write!(
            conn.get_mut(),
            "GET {path} HTTP/1.1\r\nHost: {}\r\nUser-Agent: portsight-bench\r\n\r\n",
            self.addr
        )?;
        let bad = |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, m.to_string());
        let mut line = String::new();
        if conn.read_line(&mut line)? == 0 {
            return Err(bad("connection closed"));
        }
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad("bad status line"))?;
        let (mut length, mut chunked, mut close) = (None, false, false);
        loop {
            line.clear();
            conn.read_line(&mut line)?;
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            let (k, v) = l.split_once(':').ok_or_else(|| bad("bad header"))?;
            let (k, v) = (k.to_ascii_lowercase(), v.trim().to_ascii_lowercase());
            match k.as_str() {
                "content-length" => length = v.parse::<usize>().ok(),
                "transfer-encoding" => chunked = v.contains("chunked"),
                "connection" => close = v == "close",
                _ => {}
            }
        }
        let mut body = Vec::new();
        if chunked {
            loop {
                line.clear();
                conn.read_line(&mut line)?;
                let n = usize::from_str_radix(line.trim(), 16).map_err(|_| bad("bad chunk"))?;
                let start = body.len();
                body.resize(start + n + 2, 0);
                conn.read_exact(&mut body[start..])?;
                body.truncate(start + n);
                if n == 0 {
                    break;
                }
            }
        } else if let Some(n) = length {
            body.resize(n, 0);
            conn.read_exact(&mut body)?;
        } else {
            conn.read_to_end(&mut body)?;
            close = true;
        }
        if close {
            self.conn = None;
        }
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    }
}

/// The value of the first sample of `name` whose labels contain every
/// `key="value"` in `labels`, in a text exposition.
pub fn sample(text: &str, name: &str, labels: &[&str]) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(['{', ' ']))
                && labels.iter().all(|kv| l.contains(kv))
        })
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

/// The path of the `portsight` binary cargo built for this benchmark.
pub fn portsight_bin() -> &'static str {
    env!("CARGO_BIN_EXE_portsight")
}

/// Blackbox exporter's binary, if installed (`prometheus-blackbox-exporter`).
pub fn blackbox_bin() -> Option<String> {
    let p = std::env::var("BLACKBOX_EXPORTER")
        .unwrap_or_else(|_| "/usr/bin/prometheus-blackbox-exporter".into());
    std::path::Path::new(&p).exists().then_some(p)
}

/// Starts blackbox_exporter on `listen` with a `tcp_connect` module; its
/// config goes into `dir`. Returns once it answers.
pub fn start_blackbox(bin: &str, dir: &std::path::Path, listen: SocketAddr) -> Proc {
    let cfg = dir.join("blackbox.yml");
    std::fs::write(
        &cfg,
        "modules:\n  tcp_connect:\n    prober: tcp\n    timeout: 2s\n    tcp:\n      preferred_ip_protocol: ip4\n",
    )
    .expect("write blackbox.yml");
    let p = Proc::spawn(
        Command::new(bin)
            .arg(format!("--config.file={}", cfg.display()))
            .arg(format!("--web.listen-address={listen}"))
            .arg("--log.level=error")
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    wait_for(Duration::from_secs(10), "blackbox_exporter", || {
        Http::new(listen)
            .get("/-/healthy")
            .ok()
            .filter(|(s, _)| *s == 200)
    });
    p
}

/// `/probe?module=tcp_connect&target=…` to the blackbox_exporter at `web`
/// for every one of `targets` (`host:port`, as the query takes it),
/// `clients` requests in flight on kept-alive connections: how many
/// probes succeeded and how many failed. Panics on an answer that is not
/// a probe's.
pub fn blackbox_probe_all(web: SocketAddr, targets: &[String], clients: usize) -> (usize, usize) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let next = AtomicUsize::new(0);
    let (ok, failed) = (AtomicUsize::new(0), AtomicUsize::new(0));
    std::thread::scope(|s| {
        for _ in 0..clients {
            s.spawn(|| {
                let mut http = Http::new(web);
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(target) = targets.get(i) else { break };
                    let (status, body) = http
                        .get(&format!("/probe?module=tcp_connect&target={target}"))
                        .expect("blackbox /probe");
                    assert_eq!(status, 200, "{body}");
                    match sample(&body, "probe_success", &[]) {
                        Some(1.0) => ok.fetch_add(1, Ordering::Relaxed),
                        Some(_) => failed.fetch_add(1, Ordering::Relaxed),
                        None => panic!("no probe_success in {body}"),
                    };
                }
            });
        }
    });
    (ok.into_inner(), failed.into_inner())
}

/// The number in environment variable `name`, else `default`.
pub fn env<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Prints a markdown table.
pub fn table(title: &str, header: &[&str], rows: &[Vec<String>]) {
    println!("\n#### {title}\n");
    println!("| {} |", header.join(" | "));
    println!("|{}", "---|".repeat(header.len()));
    for r in rows {
        println!("| {} |", r.join(" | "));
    }
    println!();
}

/// A duration in seconds, written with a fitting unit.
pub fn fmt_secs(s: f64) -> String {
    if s >= 1.0 {
        format!("{s:.3} s")
    } else if s >= 1e-3 {
        format!("{:.3} ms", s * 1e3)
    } else {
        format!("{:.2} µs", s * 1e6)
    }
}

/// `PASS`/`FAIL` for a target.
pub fn verdict(ok: bool) -> String {
    if ok { "PASS".into() } else { "**FAIL**".into() }
}
