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
    pub proc: Proc,
    pub web: SocketAddr,
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
        let cfg = format!("[web]\nlisten_address = \"{web}\"\n{cfg}");
        let path = dir.join(format!("{name}.toml"));
        std::fs::write(&path, cfg).expect("write config");
        let log = std::fs::File::create(dir.join(format!("{name}.log"))).expect("log");
        let proc = Proc::spawn(
            Command::new(bin)
                .args(["serve", "--config"])
                .arg(&path)
                .args(["--log.level", "warn"])
                .stdout(Stdio::null())
                .stderr(log),
        );
        let web: SocketAddr = web.parse().expect("web address");
        wait_for(Duration::from_secs(60), "portsight /-/ready", || {
            Http::new(web)
                .get("/-/ready")
                .ok()
                .filter(|(s, _)| *s == 200)
        });
        Portsight { proc, web }
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
