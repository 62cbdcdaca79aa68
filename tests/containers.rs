//! Following a port into containers: Docker- and Kubernetes-like worlds
//! built from network namespaces, as DESIGN's "Facts checked" describes.
//!
//! Each world is a host namespace with a bridge `br0` (10.77.50.1/24) and
//! containers joined to it by veth pairs, each in a namespace of its own
//! with its own UTS hostname and a cgroup directory named the way Docker or
//! the kubelet names them (made by the test, removed after). Ports are
//! published by DNAT (written with nft, or with iptables as Docker and
//! kube-proxy write it) and a socat proxy stands in for docker-proxy.
//!
//! The safety rule: portsight and the containers run inside
//! `unshare --pid --fork --mount-proc` whose first process is in the
//! world's host namespace, so portsight sees only the world's processes
//! (and never the machine's own namespaces).

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use support::netns::{self, Host, Served};
use support::{metric, needs};

const PORTSIGHT: &str = env!("CARGO_BIN_EXE_portsight");

/// Why these worlds cannot be built here.
fn unavailable() -> Option<String> {
    netns::nft_unavailable()
        .or_else(|| tool("socat", "-V"))
        .or_else(|| tool("iptables", "-V"))
        .or_else(|| tool("unshare", "--version"))
        .or_else(|| {
            (!Path::new("/sys/fs/cgroup/pids/cgroup.procs").exists())
                .then(|| "no cgroup v1 pids hierarchy at /sys/fs/cgroup/pids".into())
        })
}

fn tool(name: &str, arg: &str) -> Option<String> {
    Command::new(name)
        .arg(arg)
        .output()
        .is_err()
        .then(|| format!("`{name}` is not installed"))
}

/// A cgroup directory the test made, removed on drop (after its
/// processes are gone).
struct Cgroup(PathBuf);

impl Cgroup {
    fn new(name: &str) -> Cgroup {
        let path = Path::new("/sys/fs/cgroup/pids").join(name);
        std::fs::create_dir(&path).unwrap_or_else(|e| panic!("mkdir {}: {e}", path.display()));
        Cgroup(path)
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        for _ in 0..100 {
            if std::fs::remove_dir(&self.0).is_ok() || !self.0.exists() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        eprintln!("could not remove {}", self.0.display());
    }
}

/// A container: its namespace, address, hostname and cgroup.
struct Container {
    ns: Host,
    hostname: String,
    cgroup: Cgroup,
}

/// A host with a bridge and containers on it, and what runs in them.
struct World {
    host: Host,
    containers: Vec<Container>,
    /// Shell commands started in the background before portsight, inside
    /// the private PID namespace.
    started: Vec<String>,
    /// `(namespace, port)` that must listen before portsight starts.
    awaited: Vec<(String, u16)>,
    dir: tempfile::TempDir,
}

/// 64 hex digits, unique per call: a container id.
fn container_id() -> String {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(1);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{:08x}{:056x}", std::process::id(), n)
}

impl World {
    fn new(tag: &str) -> World {
        let host = Host::new(tag);
        host.ip(&["link", "add", "br0", "type", "bridge"]);
        host.ip(&["addr", "add", "10.77.50.1/24", "dev", "br0"]);
        host.ip(&["link", "set", "br0", "up"]);
        host.exec(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
        World {
            host,
            containers: Vec::new(),
            started: Vec::new(),
            awaited: Vec::new(),
            dir: tempfile::tempdir().unwrap(),
        }
    }

    /// A container at 10.77.50.`n`, hostname `hostname`, in cgroup
    /// directory `cgroup` (under the pids hierarchy).
    fn container(&mut self, n: u8, hostname: &str, cgroup: &str) -> usize {
        let ns = Host::new(&format!("c{n}"));
        let (outer, inner) = (format!("veth{n}h"), format!("veth{n}c"));
        self.host.ip(&[
            "link", "add", &outer, "type", "veth", "peer", "name", &inner,
        ]);
        self.host.ip(&["link", "set", &inner, "netns", &ns.name]);
        self.host.ip(&["link", "set", &outer, "master", "br0"]);
        self.host.ip(&["link", "set", &outer, "up"]);
        let ip = format!("10.77.50.{n}");
        ns.ip(&["addr", "add", &format!("{ip}/24"), "dev", &inner]);
        ns.ip(&["link", "set", &inner, "up"]);
        ns.ip(&["route", "add", "default", "via", "10.77.50.1"]);
        self.containers.push(Container {
            ns,
            hostname: hostname.into(),
            cgroup: Cgroup::new(cgroup),
        });
        self.containers.len() - 1
    }

    /// Runs `command` (a shell command) in container `c`, in its own UTS
    /// namespace with its hostname and in its cgroup; waits for `port` to
    /// listen there when given.
    fn run_in(&mut self, c: usize, command: &str, port: Option<u16>) {
        let k = &self.containers[c];
        // Into the cgroup first: `ip netns exec` mounts a /sys of its own,
        // without the cgroup hierarchies.
        self.started.push(format!(
            "sh -c 'echo $$ > {}/cgroup.procs && exec ip netns exec {} unshare --uts sh -c \"hostname {}; exec {}\"'",
            k.cgroup.0.display(),
            k.ns.name,
            k.hostname,
            command.replace('\\', "\\\\").replace('"', "\\\"")
        ));
        if let Some(port) = port {
            self.awaited.push((k.ns.name.clone(), port));
        }
    }

    /// Runs `command` on the host, in the private PID namespace too.
    fn run_on_host(&mut self, command: &str, port: Option<u16>) {
        self.started.push(command.to_string());
        if let Some(port) = port {
            self.awaited.push((self.host.name.clone(), port));
        }
    }

    /// An app in container `c`: a socat that answers on `addr:port`.
    fn app(&mut self, c: usize, addr: &str, port: u16) {
        self.run_in(
            c,
            &format!("socat TCP-LISTEN:{port},bind={addr},fork,reuseaddr SYSTEM:true"),
            Some(port),
        );
    }

    /// A docker-proxy-like userland proxy: host port `port` to `backend`.
    fn proxy(&mut self, port: u16, backend: &str) {
        self.run_on_host(
            // Both families, as docker-proxy listens.
            &format!("socat TCP6-LISTEN:{port},ipv6only=0,fork,reuseaddr TCP:{backend}"),
            Some(port),
        );
    }

    /// The script that is the first process of the private PID namespace:
    /// starts everything, waits for what must listen, then execs its
    /// arguments (portsight).
    fn driver(&self) -> PathBuf {
        let log = self.dir.path().join("started.log");
        let log = log.display();
        let mut s = String::from("#!/bin/sh\n");
        for cmd in &self.started {
            s.push_str(&format!("{cmd} >/dev/null 2>>{log} &\n"));
        }
        for (ns, port) in &self.awaited {
            s.push_str(&format!(
                "i=0; until ip netns exec {ns} ss -Hltn 'sport = :{port}' | grep -q .; do i=$((i+1)); [ $i -lt 100 ] || {{ echo 'port {port} in {ns} never listened:' >&2; cat {log} >&2; exit 3; }}; sleep 0.1; done\n"
            ));
        }
        s.push_str("exec \"$@\"\n");
        let path = self.dir.path().join("driver.sh");
        std::fs::write(&path, s).unwrap();
        path
    }

    /// The config portsight runs with: discovery on at once, the world's
    /// pod directories.
    fn config(&self, extra: &str) -> PathBuf {
        let path = self.dir.path().join("portsight.toml");
        let pods = self.dir.path().join("pods");
        std::fs::create_dir_all(&pods).unwrap();
        std::fs::write(
            &path,
            format!(
                "[scan]\npods_root = {:?}\n[discover]\nmin_age = \"0s\"\n[probe]\ntimeout = \"1s\"\n{extra}",
                pods.display().to_string()
            ),
        )
        .unwrap();
        path
    }

    /// The command that runs ARGS as the first process of a private PID
    /// namespace in the host's network namespace: `nsenter --net`, not `ip
    /// netns exec`, which mounts a /sys of its own without the cgroup
    /// hierarchies the containers' processes are moved into.
    fn unshared(&self) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net=/run/netns/{}", self.host.name));
        cmd.args(self.unshare_args());
        cmd
    }

    fn unshare_args(&self) -> Vec<String> {
        vec![
            "unshare".into(),
            "--pid".into(),
            "--fork".into(),
            "--mount-proc".into(),
            "sh".into(),
            self.driver().display().to_string(),
        ]
    }

    /// `portsight check --json ARGS` in the world: its exit code and JSON.
    fn check(&self, args: &[&str]) -> (i32, Value) {
        let config = self.config("");
        let out = self
            .unshared()
            .args([PORTSIGHT, "check", "--json", "--config"])
            .arg(&config)
            .args(args)
            .output()
            .expect("run portsight check");
        let json: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "check {args:?}: {e}: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        });
        (out.status.code().unwrap_or(-1), json)
    }

    /// `portsight serve` in the world, ready.
    fn serve(&self) -> Served {
        let config = self.config("");
        let mut cmd = self.unshared();
        cmd.args([PORTSIGHT, "serve", "--config"])
            .arg(&config)
            .args(["--web.listen-address", "127.0.0.1:0"]);
        let mut served = self.host.serve_from_outside(cmd);
        served.wait_ready();
        served
    }
}

/// Docker's nat rules for one published port, written with nft as in
/// DESIGN's "Facts checked" (loopback goes to the proxy, as with Docker).
fn docker_nft(port: u16, backend: &str) -> String {
    format!(
        "table ip nat {{
  chain prerouting {{
    type nat hook prerouting priority dstnat;
    fib daddr type local tcp dport {port} dnat to {backend}
  }}
  chain output {{
    type nat hook output priority -100;
    ip daddr != 127.0.0.0/8 fib daddr type local tcp dport {port} dnat to {backend}
  }}
  chain postrouting {{
    type nat hook postrouting priority srcnat;
    ip saddr 10.77.50.0/24 oifname != \"br0\" masquerade
  }}
}}\n"
    )
}

/// Docker's nat rules for one published port, as Docker writes them with
/// iptables (the nft backend).
fn docker_iptables(host: &Host, port: u16, backend: &str) {
    iptables(
        host,
        &[
            "-t nat -N DOCKER",
            "-t nat -A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER",
            "-t nat -A OUTPUT ! -d 127.0.0.0/8 -m addrtype --dst-type LOCAL -j DOCKER",
            "-t nat -A POSTROUTING -s 10.77.50.0/24 ! -o br0 -j MASQUERADE",
            "-t nat -A DOCKER -i br0 -j RETURN",
            &format!(
                "-t nat -A DOCKER ! -i br0 -p tcp -m tcp --dport {port} -j DNAT --to-destination {backend}"
            ),
        ],
    );
}

/// Runs `iptables RULE` in `host` for each rule (arguments split at spaces).
fn iptables(host: &Host, rules: &[&str]) {
    for rule in rules {
        let mut args = vec!["iptables"];
        args.extend(rule.split(' '));
        host.exec(&args);
    }
}

/// The port `port` of a check's JSON.
fn port_of(json: &Value, port: u64) -> &Value {
    json["ports"]
        .as_array()
        .and_then(|ps| {
            ps.iter()
                .find(|p| p["port"] == port && p["netns"].is_null())
        })
        .unwrap_or_else(|| panic!("port {port} not in {json:#}"))
}

fn summary(p: &Value) -> &str {
    p["diagnosis"]["summary"].as_str().unwrap_or_default()
}

/// One Docker-like world: container web-1 at 10.77.50.2, port 8080
/// published to its port 80 by DNAT (nft) and a proxy.
fn docker_world(tag: &str) -> (World, usize) {
    let mut w = World::new(tag);
    let id = container_id();
    let c = w.container(2, "web-1", &format!("docker-{id}.scope"));
    w.host.nft(&docker_nft(8080, "10.77.50.2:80"));
    w.proxy(8080, "10.77.50.2:80");
    (w, c)
}

#[test]
fn an_app_on_the_containers_loopback_is_loopback_only_naming_the_container_and_backend() {
    needs!(unavailable());
    let (mut w, c) = docker_world("cl");
    w.app(c, "127.0.0.1", 80);
    let (code, json) = w.check(&["8080"]);
    assert_eq!(json["sources"]["namespaces"], true, "{json:#}");
    assert_eq!(code, 1, "{json:#}");
    let p = port_of(&json, 8080);
    assert_eq!(p["diagnosis"]["cause"], "loopback_only", "{p:#}");
    let s = summary(p);
    assert!(
        s.contains("published to container web-1 (10.77.50.2:80)") && s.contains("127.0.0.1:80"),
        "{s}"
    );
    assert!(
        p["diagnosis"]["fix"]
            .as_str()
            .unwrap()
            .contains("inside the container"),
        "{p:#}"
    );
    let f = &p["forward"];
    assert_eq!(f["backend"], "10.77.50.2:80", "{p:#}");
    assert_eq!(f["netns"]["name"], "web-1", "{p:#}");
    let id = f["netns"]["container"].as_str().unwrap_or_default();
    assert_eq!(id.len(), 12, "a short container id: {p:#}");
    assert_eq!(json["sources"]["namespaces"], true, "{json:#}");
}

#[test]
fn nothing_in_the_container_is_not_listening_though_the_proxy_accepts() {
    needs!(unavailable());
    let mut w = World::new("ci");
    let c = w.container(2, "web-1", &format!("docker-{}.scope", container_id()));
    docker_iptables(&w.host, 8080, "10.77.50.2:80");
    w.proxy(8080, "10.77.50.2:80");
    // The container runs something else, so that its namespace is seen.
    w.app(c, "0.0.0.0", 9999);
    let (_, json) = w.check(&["8080"]);
    let p = port_of(&json, 8080);
    assert_eq!(p["diagnosis"]["cause"], "not_listening", "{p:#}");
    let s = summary(p);
    assert!(
        s.contains("container web-1") && s.contains("nothing listens on port 80"),
        "{s}"
    );
}

#[test]
fn an_app_on_another_port_is_not_listening_on_the_published_one() {
    needs!(unavailable());
    let (mut w, c) = docker_world("co");
    w.app(c, "0.0.0.0", 8000);
    let (_, json) = w.check(&["8080"]);
    let p = port_of(&json, 8080);
    assert_eq!(p["diagnosis"]["cause"], "not_listening", "{p:#}");
    assert!(summary(p).contains("nothing listens on port 80"), "{p:#}");
}

#[test]
fn a_healthy_published_port_is_ok_with_the_forward_in_its_evidence() {
    needs!(unavailable());
    let (mut w, c) = docker_world("ch");
    w.app(c, "0.0.0.0", 80);
    let (code, json) = w.check(&["8080"]);
    let p = port_of(&json, 8080);
    assert_eq!(p["diagnosis"]["cause"], "ok", "{p:#}");
    assert_eq!(code, 0, "{json:#}");
    let evidence = p["diagnosis"]["evidence"].to_string();
    assert!(
        evidence.contains("published to container web-1 (10.77.50.2:80)"),
        "{evidence}"
    );
}

#[test]
fn a_kubernetes_node_port_into_a_pod_on_loopback_names_the_pod() {
    needs!(unavailable());
    let mut w = World::new("kp");
    let uid = format!("{:08x}-1111-2222-3333-444455556666", std::process::id());
    let c = w.container(
        3,
        "web-7d4b9c",
        &format!("kubepods-besteffort-pod{}.slice", uid.replace('-', "_")),
    );
    std::fs::create_dir_all(
        w.dir
            .path()
            .join("pods")
            .join(format!("default_web-7d4b9c_{uid}")),
    )
    .unwrap();
    iptables(
        &w.host,
        &[
            "-t nat -N KUBE-SERVICES",
            "-t nat -N KUBE-NODEPORTS",
            "-t nat -N KUBE-SVC-ABCDEF",
            "-t nat -N KUBE-SEP-123456",
            "-t nat -A PREROUTING -m comment --comment kubernetes-service-portals -j KUBE-SERVICES",
            "-t nat -A OUTPUT -m comment --comment kubernetes-service-portals -j KUBE-SERVICES",
            "-t nat -A KUBE-SERVICES -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS",
            "-t nat -A KUBE-NODEPORTS -p tcp -m comment --comment default/web:http -m tcp --dport 30080 -j KUBE-SVC-ABCDEF",
            "-t nat -A KUBE-SVC-ABCDEF -m comment --comment default/web:http -j KUBE-SEP-123456",
            "-t nat -A KUBE-SEP-123456 -p tcp -m comment --comment default/web:http -m tcp -j DNAT --to-destination 10.77.50.3:8080",
        ],
    );
    w.app(c, "127.0.0.1", 8080);
    let (_, json) = w.check(&["30080"]);
    let p = port_of(&json, 30080);
    assert_eq!(p["diagnosis"]["cause"], "loopback_only", "{p:#}");
    assert!(
        summary(p).contains("pod default/web-7d4b9c (10.77.50.3:8080)"),
        "{p:#}"
    );
    assert_eq!(p["forward"]["netns"]["pod"], "default/web-7d4b9c", "{p:#}");
}

#[test]
fn without_a_private_pid_namespace_no_other_namespace_is_looked_into() {
    needs!(unavailable());
    let (w, c) = docker_world("cs");
    // The app runs in the container's namespace, started from outside any
    // private PID namespace; portsight too.
    let _app = w.containers[c].ns.spawn(
        Path::new("/usr/bin/socat"),
        &[
            "TCP-LISTEN:80,bind=127.0.0.1,fork,reuseaddr".into(),
            "SYSTEM:echo".into(),
        ],
    );
    let config = w.config("");
    let (_, json) = w.host.check(&["--config", config.to_str().unwrap()]);
    let ports = json["ports"].as_array().unwrap();
    assert!(ports.iter().all(|p| p["netns"].is_null()), "{json:#}");
    assert!(
        ports.iter().all(|p| p["forward"]["netns"].is_null()),
        "{json:#}"
    );
    // Not scanned: refused by the rule, or (where PID 1's namespace link
    // is hidden, as on this machine) unknown, which says 0.
    assert_ne!(json["sources"]["namespaces"], true, "{json:#}");
}

#[test]
fn a_sidecar_on_a_containers_loopback_is_listed_with_its_namespace_and_does_not_alarm() {
    needs!(unavailable());
    let (mut w, c) = docker_world("cm");
    w.app(c, "127.0.0.1", 80);
    w.app(c, "127.0.0.1", 15000);
    let served = w.serve();
    let m = served.within_scans(20, "the container's ports and the forward", |m| {
        let sidecar = metric(m, "portsight_port_diagnosis")
            .label("netns", "web-1")
            .label("port", 15000)
            .state("cause")
            .ok_or("no sidecar series yet")?;
        let forwarded = metric(m, "portsight_port_forward_info")
            .label("port", 8080)
            .label("backend", "10.77.50.2:80")
            .label("backend_netns", "web-1")
            .value()
            .ok_or("no forward series yet")?;
        Ok((sidecar, forwarded))
    });
    assert_eq!(m.0, "ok", "a loopback sidecar inside a container is fine");
    assert_eq!(m.1, 1.0);
    let samples = served.scrape();
    let info = metric(&samples, "portsight_netns_info")
        .label("netns", "web-1")
        .all();
    assert_eq!(info.len(), 1, "{info:?}");
    let expect = metric(&samples, "portsight_port_info")
        .label("netns", "web-1")
        .label("port", 15000)
        .all();
    assert!(
        expect
            .iter()
            .any(|s| s.labels.contains(&("expect".into(), "local".into()))),
        "{expect:?}"
    );
    let status = served.status();
    let p = port_of(&status, 8080);
    assert_eq!(p["diagnosis"]["cause"], "loopback_only", "{p:#}");
    let inside: Vec<&Value> = status["ports"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["netns"]["name"] == "web-1")
        .collect();
    assert!(inside.iter().any(|p| p["port"] == 15000), "{status:#}");
}

/// Between full listings of `/proc` (one in 30 scans) portsight lists only
/// the processes started since its last walk: a container started while
/// it serves is seen, and one whose process ended is forgotten, each
/// within a few scans.
#[test]
fn a_container_started_and_stopped_while_serving_comes_and_goes_within_scans() {
    needs!(unavailable());
    let mut w = World::new("cg");
    let c = w.container(2, "late-1", "portsight-test-late");
    let name = w.containers[c].ns.name.clone();
    let (go, stop) = (w.dir.path().join("go"), w.dir.path().join("stop"));
    w.run_on_host(
        &format!(
            "sh -c 'until [ -e {go} ]; do sleep 0.1; done; ip netns exec {name} sleep 600 & p=$!; until [ -e {stop} ]; do sleep 0.1; done; kill $p; wait $p'",
            go = go.display(),
            stop = stop.display()
        ),
        None,
    );
    let served = w.serve();
    let seen = |m: &[support::Sample]| {
        !metric(m, "portsight_netns_info")
            .label("netns", &name)
            .all()
            .is_empty()
    };
    support::wait_scans(|| served.scrape(), 2);
    assert!(!seen(&served.scrape()), "no process is in {name} yet");
    std::fs::write(&go, "").unwrap();
    served.within_scans(3, "the started container's namespace", |m| {
        seen(m).then_some(()).ok_or_else(|| "not yet".to_string())
    });
    // Until its facts are kept (read when new and once more).
    support::wait_scans(|| served.scrape(), 3);
    std::fs::write(&stop, "").unwrap();
    served.within_scans(3, "the stopped container's namespace gone", |m| {
        (!seen(m))
            .then_some(())
            .ok_or_else(|| "still there".to_string())
    });
}
