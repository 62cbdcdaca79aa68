//! Test worlds in network namespaces. Every host a test builds lives in a
//! namespace of its own, with addresses in 10.77.0.0/16 and fd77::/16, no route
//! to the root namespace, and is deleted when the world is dropped (also when
//! the test fails).

use std::fs::File;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use nix::sched::{CloneFlags, setns};

use super::Portsight;

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
        let path = Path::new("/run/netns").join(&self.name);
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

    /// Starts `portsight ARGS` in this namespace (through `ip netns exec`).
    pub fn spawn_portsight(&self, args: &[&str]) -> Portsight {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name, env!("CARGO_BIN_EXE_portsight")]);
        cmd.args(args);
        Portsight::spawn(cmd)
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
