//! Test worlds in network namespaces. Every host a test builds lives in a
//! namespace of its own, with addresses in 10.77.0.0/16 and fd77::/16, no route
//! to the root namespace, and is deleted when the world is dropped (also when
//! the test fails).
//!
//! What runs in a host: `host.serve(ARGS)` starts `portsight serve ARGS`
//! there and returns a [`Served`] once it listens (`wait_ready`, `get`,
//! `scrape`, `status`, signals); `host.serve_program` does the same for
//! another server (Prometheus, Alertmanager) at a known address;
//! `host.check(ARGS)` runs `portsight check --json ARGS` once.

use std::fs::File;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use nix::sched::{CloneFlags, setns};
use serde_json::Value;

use super::{HttpResponse, Process, Sample, parse_metrics, try_get, wait_for};

/// Why namespace tests cannot run here, if they cannot.
pub fn unavailable() -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("network-namespace tests need root".into());
    }
    if Command::new("ip").arg("-V").output().is_err() {
        return Some("`ip` (iproute2) is not installed".into());
    }
    None
}

/// Why nftables scenarios cannot run here, if they cannot.
pub fn nft_unavailable() -> Option<String> {
    unavailable().or_else(|| {
        Command::new("nft")
            .arg("--version")
            .output()
            .is_err()
            .then(|| "`nft` (nftables) is not installed".into())
    })
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A host of its own: a network namespace with `lo` up.
pub struct Host {
    pub name: String,
}

static NEXT: AtomicU32 = AtomicU32::new(0);

impl Host {
    /// A new namespace named after the test and this process.
    pub fn new(tag: &str) -> Host {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let name = format!("ps-{tag}-{}-{n}", std::process::id());
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        ip(&["netns", "add", &name]);
        let host = Host { name };
        host.ip(&["link", "set", "lo", "up"]);
        host
    }

    /// A host with two interface addresses, on a veth pair whose both ends
    /// stay in this namespace: `veth-a` 10.77.0.1/24 + fd77::1/64 and
    /// `veth-b` 10.77.0.2/24 + fd77::2/64.
    pub fn with_interfaces(tag: &str) -> Host {
        let host = Host::new(tag);
        host.ip(&[
            "link", "add", "veth-a", "type", "veth", "peer", "name", "veth-b",
        ]);
        for (dev, v4, v6) in [
            ("veth-a", "10.77.0.1/24", "fd77::1/64"),
            ("veth-b", "10.77.0.2/24", "fd77::2/64"),
        ] {
            host.ip(&["addr", "add", v4, "dev", dev]);
            host.ip(&["addr", "add", v6, "dev", dev, "nodad"]);
            host.ip(&["link", "set", dev, "up"]);
        }
        host
    }

    /// A host without IPv6 (`disable_ipv6` in its namespace: no `::1`), with
    /// `veth-a` 10.77.0.1/24 and `veth-b` 10.77.0.2/24.
    pub fn ipv4_only(tag: &str) -> Host {
        let host = Host::new(tag);
        for key in ["all", "default", "lo"] {
            host.exec(&[
                "sysctl",
                "-qw",
                &format!("net.ipv6.conf.{key}.disable_ipv6=1"),
            ]);
        }
        host.ip(&[
            "link", "add", "veth-a", "type", "veth", "peer", "name", "veth-b",
        ]);
        for (dev, v4) in [("veth-a", "10.77.0.1/24"), ("veth-b", "10.77.0.2/24")] {
            host.ip(&["addr", "add", v4, "dev", dev]);
            host.ip(&["link", "set", dev, "up"]);
        }
        host
    }

    /// Two IPv4-only hosts joined by a veth pair: the watched host with
    /// 10.77.0.1/24 and the outside observer with 10.77.0.2/24.
    pub fn pair(tag: &str) -> (Host, Host) {
        let (inside, outside) = (Host::new(&format!("{tag}a")), Host::new(&format!("{tag}b")));
        for h in [&inside, &outside] {
            for key in ["all", "default", "lo"] {
                h.exec(&[
                    "sysctl",
                    "-qw",
                    &format!("net.ipv6.conf.{key}.disable_ipv6=1"),
                ]);
            }
        }
        inside.ip(&[
            "link", "add", "veth-in", "type", "veth", "peer", "name", "veth-out",
        ]);
        inside.ip(&["link", "set", "veth-out", "netns", &outside.name]);
        inside.ip(&["addr", "add", "10.77.0.1/24", "dev", "veth-in"]);
        inside.ip(&["link", "set", "veth-in", "up"]);
        outside.ip(&["addr", "add", "10.77.0.2/24", "dev", "veth-out"]);
        outside.ip(&["link", "set", "veth-out", "up"]);
        (inside, outside)
    }

    /// This host's own `/etc/hosts`: `ip netns exec` binds
    /// `/etc/netns/<name>/hosts` over `/etc/hosts` for what it runs.
    pub fn hosts_file(&self, text: &str) {
        let dir = Path::new("/etc/netns").join(&self.name);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("hosts"), text).unwrap();
    }

    /// Runs a command in this namespace (`ip netns exec`), asserting success.
    pub fn exec(&self, args: &[&str]) {
        let mut all = vec!["netns", "exec", &self.name];
        all.extend_from_slice(args);
        ip(&all);
    }

    /// Loads an nftables ruleset into this namespace's own firewall.
    pub fn nft(&self, ruleset: &str) {
        use std::io::Write;
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.name, "nft", "-f", "-"])
            .stdin(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("run nft");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(ruleset.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "nft: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Runs `ip -n <this> ARGS`.
    pub fn ip(&self, args: &[&str]) {
        let mut all = vec!["-n", &self.name];
        all.extend_from_slice(args);
        ip(&all);
    }

    /// Runs `f` on a thread inside this namespace. Sockets made there stay in
    /// this namespace when used elsewhere.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        run_in(&self.name, f)
    }

    /// Starts `PROGRAM ARGS` in this namespace (through `ip netns exec`,
    /// which execs it: the child's pid is the program's).
    pub fn spawn(&self, program: &Path, args: &[String]) -> Process {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name]);
        cmd.arg(program).args(args);
        Process::spawn(cmd)
    }

    /// `portsight serve ARGS` in this namespace, once it listens (the
    /// address from its start-up log line).
    pub fn serve(&self, args: &[&str]) -> Served {
        self.serve_with(&[], &[], args)
    }

    /// As [`Host::serve`], run through `wrapper` (`prlimit --nofile=…`) with
    /// `env` set.
    pub fn serve_with(&self, wrapper: &[&str], env: &[(&str, &str)], args: &[&str]) -> Served {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name]).args(wrapper);
        cmd.arg(PORTSIGHT).arg("serve").args(args);
        cmd.envs(env.iter().copied());
        self.served(Process::spawn(cmd))
    }

    /// A portsight that `PROGRAM ARGS` starts in this namespace (a wrapper
    /// that execs it: an installed package, a container), once it listens.
    pub fn serve_via(&self, program: &Path, args: &[String]) -> Served {
        self.served(self.spawn(program, args))
    }

    /// A portsight that `cmd`, run outside, puts into this namespace (a
    /// container runtime given `--network ns:/run/netns/<name>`), once it
    /// listens.
    pub fn serve_from_outside(&self, cmd: Command) -> Served {
        self.served(Process::spawn(cmd))
    }

    /// `process`, once its start-up log line says where it listens.
    fn served(&self, mut process: Process) -> Served {
        let listen = process.address();
        Served {
            process,
            netns: self.name.clone(),
            listen,
            addr: reachable(listen),
        }
    }

    /// Another server (Prometheus, Alertmanager) in this namespace, to be
    /// reached at `addr`; call [`Served::wait_ready`] before using it.
    pub fn serve_program(&self, program: &Path, args: &[String], addr: SocketAddr) -> Served {
        Served {
            process: self.spawn(program, args),
            netns: self.name.clone(),
            listen: addr,
            addr: reachable(addr),
        }
    }

    /// `portsight check --json ARGS` in this namespace: its exit code and
    /// its JSON.
    pub fn check(&self, args: &[&str]) -> (i32, Value) {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.name, PORTSIGHT, "check", "--json"])
            .args(args)
            .output()
            .expect("run portsight check");
        let json: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "check --json {}: {e}: {}{}",
                args.join(" "),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        });
        (out.status.code().unwrap_or(-1), json)
    }
}

const PORTSIGHT: &str = env!("CARGO_BIN_EXE_portsight");

/// Runs `f` on a thread inside the namespace `/run/netns/<name>`.
fn run_in<T: Send>(name: &str, f: impl FnOnce() -> T + Send) -> T {
    let path = Path::new("/run/netns").join(name);
    std::thread::scope(|s| {
        s.spawn(|| {
            let ns = File::open(&path).expect("open netns");
            setns(ns, CloneFlags::CLONE_NEWNET).expect("setns");
            f()
        })
        .join()
        .expect("thread in namespace")
    })
}

/// Where a client reaches a server listening on `addr`: the loopback
/// address of its family for a wildcard.
fn reachable(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(a) if a.is_unspecified() => (Ipv4Addr::LOCALHOST, addr.port()).into(),
        IpAddr::V6(a) if a.is_unspecified() => (Ipv6Addr::LOCALHOST, addr.port()).into(),
        _ => addr,
    }
}

/// A server process run in a test host, killed on drop. Its HTTP helpers
/// are clients in the same host.
pub struct Served {
    pub process: Process,
    netns: String,
    /// The address it listens on.
    pub listen: SocketAddr,
    /// The address its helpers connect to.
    pub addr: SocketAddr,
}

impl Served {
    /// Waits until `GET /-/ready` answers 200; fails at once when the
    /// process exits.
    pub fn wait_ready(&mut self) {
        let what = format!("{} to be ready", self.addr);
        wait_for(Duration::from_secs(30), &what, || {
            if let Some(exited) = self.process.exited() {
                return Err(exited);
            }
            match self.try_get("/-/ready") {
                Ok(r) if r.status == 200 => Ok(()),
                Ok(r) => Err(format!("{}: {}", r.status, r.body)),
                Err(e) => Err(e),
            }
        });
    }

    /// Runs `f` on a thread in this server's host.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        run_in(&self.netns, f)
    }

    pub fn try_get(&self, path: &str) -> Result<HttpResponse, String> {
        let addr = self.addr;
        self.run(|| try_get(addr, path))
    }

    /// `GET path` from inside its host; panics when no response comes.
    pub fn get(&self, path: &str) -> HttpResponse {
        self.try_get(path)
            .unwrap_or_else(|e| panic!("GET {path}: {e}; log: {}", self.process.log_text()))
    }

    /// `GET path` as JSON: `Err` with the status and the start of the body
    /// when it is not JSON, or with why no response came.
    pub fn json(&self, path: &str) -> Result<Value, String> {
        let r = self.try_get(path)?;
        serde_json::from_str(&r.body).map_err(|e| {
            let head: String = r.body.chars().take(500).collect();
            format!("{} {e}: {head}", r.status)
        })
    }

    /// The samples of `/metrics`.
    pub fn scrape(&self) -> Vec<Sample> {
        let r = self.get("/metrics");
        assert_eq!(r.status, 200, "/metrics: {}", r.body);
        parse_metrics(&r.body)
    }

    /// Polls `/metrics` until `f` holds; fails if `scans` more socket scans
    /// finish first (see [`super::within_scans`]).
    pub fn within_scans<T>(
        &self,
        scans: u64,
        what: &str,
        f: impl FnMut(&[Sample]) -> Result<T, String>,
    ) -> T {
        super::within_scans(|| self.scrape(), scans, what, f)
    }

    /// `/api/v1/status`.
    pub fn status(&self) -> Value {
        self.json("/api/v1/status").expect("/api/v1/status")
    }

    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        self.process.signal(signal);
    }

    pub fn log_text(&self) -> String {
        self.process.log_text()
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        // Kills what still runs in it, then deletes it.
        if let Ok(out) = Command::new("ip")
            .args(["netns", "pids", &self.name])
            .output()
        {
            for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                let _ = Command::new("kill").args(["-9", pid]).output();
            }
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
        let _ = std::fs::remove_dir_all(Path::new("/etc/netns").join(&self.name));
    }
}
