//! What the benchmarks of the whole `portsight serve` process share:
//! listeners for it to watch, and the running process.

use std::collections::BTreeMap;
use std::net::{Ipv6Addr, SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use socket2::{Domain, Socket, Type};

use super::{Http, Proc, wait_for};

/// Listeners this process holds for portsight to watch, with a thread that
/// accepts and drops whatever connects, so accept queues never fill.
pub struct Listeners {
    open: Arc<Mutex<BTreeMap<u16, TcpListener>>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl Listeners {
    /// One listener per port: on `127.0.0.1`, or on `[::]` accepting both
    /// families (so every vantage connects).
    pub fn new(ports: impl IntoIterator<Item = u16>, dual_stack: bool) -> Listeners {
        let open: BTreeMap<u16, TcpListener> = ports
            .into_iter()
            .map(|p| {
                let (domain, addr): (Domain, SocketAddr) = if dual_stack {
                    (Domain::IPV6, (Ipv6Addr::UNSPECIFIED, p).into())
                } else {
                    (Domain::IPV4, ([127, 0, 0, 1], p).into())
                };
                let s = Socket::new(domain, Type::STREAM, None).expect("socket");
                if dual_stack {
                    s.set_only_v6(false).expect("v6only");
                }
                s.set_reuse_address(true).expect("reuseaddr");
                s.bind(&addr.into()).expect("bind");
                s.listen(1024).expect("listen");
                s.set_nonblocking(true).expect("nonblocking");
                (p, s.into())
            })
            .collect();
        let open = Arc::new(Mutex::new(open));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (o, st) = (Arc::clone(&open), Arc::clone(&stop));
        // A sweep of thousands of listeners is itself work: sweep them less
        // often (the backlog holds far more than the probes between sweeps).
        let pause = Duration::from_millis(100.max(o.lock().expect("lock").len() as u64 / 10));
        std::thread::spawn(move || {
            while !st.load(std::sync::atomic::Ordering::Relaxed) {
                for l in o.lock().expect("lock").values() {
                    while l.accept().is_ok() {}
                }
                std::thread::sleep(pause);
            }
        });
        Listeners { open, stop }
    }

    /// Closes the listener on `port`; returns when it is closed.
    pub fn close(&self, port: u16) {
        self.open.lock().expect("lock").remove(&port);
    }
}

impl Drop for Listeners {
    /// Closes every listener now (not when the accepting thread next
    /// wakes), so that the next benchmark can bind the same ports.
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.open.lock().expect("lock").clear();
    }
}

/// A running `portsight serve` with a config of its own.
pub struct Portsight {
    /// What was spawned: `portsight` itself, or the `unshare` around it.
    pub proc: Proc,
    pub web: SocketAddr,
    /// The `portsight` process (the one to measure and to signal).
    pid: u32,
}

impl Portsight {
    /// Starts `portsight serve` watching `ports` (discovery off) with the
    /// config sections in `extra`, and waits until `/-/ready`.
    pub fn start(dir: &Path, name: &str, web: &str, ports: &[u16], extra: &str) -> Portsight {
        Portsight::start_bin(super::portsight_bin(), dir, name, web, ports, extra)
    }

    /// [`Portsight::start`] with another build of `portsight` (an A/B).
    pub fn start_bin(
        bin: &str,
        dir: &Path,
        name: &str,
        web: &str,
        ports: &[u16],
        extra: &str,
    ) -> Portsight {
        let mut cfg = format!("[discover]\nenabled = false\n{extra}\n");
        for p in ports {
            cfg += &format!("[[port]]\nport = {p}\nname = \"svc{p}\"\n");
        }
        Portsight::start_config(bin, dir, name, web, &cfg)
    }

    /// `portsight serve` (the build `bin`) on `web` with the config text
    /// `cfg` (without its `[web]` section), once `/-/ready`.
    pub fn start_config(bin: &str, dir: &Path, name: &str, web: &str, cfg: &str) -> Portsight {
        let path = Portsight::config_file(dir, name, web, cfg);
        let log = std::fs::File::create(dir.join(format!("{name}.log"))).expect("log");
        let proc = Proc::spawn(
            Command::new(bin)
                .args(["serve", "--config"])
                .arg(&path)
                .args(["--log.level", "warn"])
                .stdout(Stdio::null())
                .stderr(log),
        );
        let pid = proc.pid();
        Portsight::ready(proc, pid, web)
    }

    /// [`Portsight::start_config`] as on a host where it sees every
    /// process (hostPID): PID 1 of a PID namespace of its own
    /// (`unshare --pid --fork --mount-proc --kill-child`, DESIGN's safety
    /// rule: the machine's processes and namespaces stay unseen), in this
    /// network namespace, beside `processes` sleeping ones of which
    /// `containers` each sit in a network namespace of their own (nothing
    /// listening there), and one that starts five short-lived processes a
    /// second (as cron jobs, health checks and shells do on a host: new
    /// pids for the namespace scan to read). The namespace names are read
    /// from empty directories, not the machine's `/run/netns` and
    /// `/var/log/pods`.
    pub fn start_host(
        bin: &str,
        dir: &Path,
        name: &str,
        web: &str,
        cfg: &str,
        processes: usize,
        containers: usize,
    ) -> Portsight {
        let (netns_dir, pods) = (
            dir.join(format!("{name}-netns")),
            dir.join(format!("{name}-pods")),
        );
        for d in [&netns_dir, &pods] {
            std::fs::create_dir_all(d).expect("an empty directory");
        }
        let cfg = format!(
            "[scan]\nnetns_dir = \"{}\"\npods_root = \"{}\"\n{cfg}",
            netns_dir.display(),
            pods.display()
        );
        let path = Portsight::config_file(dir, name, web, &cfg);
        let script = format!(
            "i=0; while [ $i -lt {processes} ]; do \
               if [ $i -lt {containers} ]; then unshare -n sleep 100000 & else sleep 100000 & fi; \
               i=$((i+1)); done; \
             (while :; do /bin/true; /bin/true; /bin/true; /bin/true; sleep 1; done) & \
             exec \"$0\" serve --config \"$1\" --log.level warn"
        );
        let log = std::fs::File::create(dir.join(format!("{name}.log"))).expect("log");
        let proc = Proc::spawn(
            Command::new("unshare")
                .args([
                    "--pid",
                    "--fork",
                    "--mount-proc",
                    "--kill-child",
                    "sh",
                    "-c",
                ])
                .arg(script)
                .arg(bin)
                .arg(&path)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log),
        );
        // unshare's child, once it is portsight (sh execs it).
        let exe = std::fs::canonicalize(bin).expect("portsight binary");
        let pid = super::wait_for(Duration::from_secs(30), "portsight as PID 1", || {
            let children =
                std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", proc.pid())).ok()?;
            let pid: u32 = children.split_whitespace().next()?.parse().ok()?;
            (std::fs::read_link(format!("/proc/{pid}/exe")).ok()? == exe).then_some(pid)
        });
        Portsight::ready(proc, pid, web)
    }

    /// Writes the config file of `name`: `cfg` with its `[web]` section.
    fn config_file(dir: &Path, name: &str, web: &str, cfg: &str) -> std::path::PathBuf {
        let path = dir.join(format!("{name}.toml"));
        std::fs::write(&path, format!("[web]\nlisten_address = \"{web}\"\n{cfg}"))
            .expect("write config");
        path
    }

    /// Waits until `/-/ready` on `web`.
    fn ready(proc: Proc, pid: u32, web: &str) -> Portsight {
        let web: SocketAddr = web.parse().expect("web address");
        wait_for(Duration::from_secs(60), "portsight /-/ready", || {
            Http::new(web)
                .get("/-/ready")
                .ok()
                .filter(|(s, _)| *s == 200)
        });
        Portsight { proc, web, pid }
    }

    /// The `portsight` process.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    pub fn metrics(&self) -> String {
        let (status, body) = Http::new(self.web).get("/metrics").expect("GET /metrics");
        assert_eq!(status, 200);
        body
    }
}

/// The sum of `portsight_probes_total` over every series of a scrape.
pub fn probes_total(body: &str) -> f64 {
    body.lines()
        .filter(|l| l.starts_with("portsight_probes_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
