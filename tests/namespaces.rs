//! `netns::find` and `netns::Worker` on real namespaces: "containers" with
//! their own hostnames and Docker-style or pod cgroups, an `ip netns` one,
//! two that share a hostname and an anonymous one, all seen from inside
//! `unshare --pid --fork --mount-proc` whose first process is in the
//! test's host namespace (so this machine's own namespaces are never seen).
//! The test binary re-executes itself there: `PSNS_CHILD` selects the
//! child's part. Needs root; skips without it (fails in CI).

mod support;

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use portsight::netns::{Error, Found, Roots, Seen, Worker, find};
use serde_json::{Value, json};
use socket2::{Domain, Socket, Type};
use support::netns::{self, Host};
use support::{needs, wait_for};

const CHILD: &str = "PSNS_CHILD";

/// Why these tests cannot run here, if they cannot.
fn unavailable() -> Option<String> {
    netns::unavailable()
        .or_else(|| {
            ["nsenter", "unshare", "sleep", "hostname"]
                .into_iter()
                .find(|b| {
                    Command::new("which")
                        .arg(b)
                        .output()
                        .map_or(true, |o| !o.status.success())
                })
                .map(|b| format!("`{b}` is not installed"))
        })
        .or_else(|| {
            ["pids", "unified"]
                .into_iter()
                .map(|h| Path::new("/sys/fs/cgroup").join(h))
                .find(|h| !h.join("cgroup.procs").exists())
                .map(|h| format!("no cgroup hierarchy at {}", h.display()))
        })
}

/// Cgroup directories this test made, removed (innermost first) on drop,
/// once the processes in them are gone.
struct Cgroups(Vec<PathBuf>);

impl Cgroups {
    /// Makes `dir` and the parents that do not exist yet.
    fn make(&mut self, dir: &Path) {
        let mut missing: Vec<PathBuf> = dir
            .ancestors()
            .take_while(|d| !d.exists())
            .map(Path::to_path_buf)
            .collect();
        missing.reverse();
        for d in missing {
            std::fs::create_dir(&d).unwrap_or_else(|e| panic!("mkdir {}: {e}", d.display()));
            self.0.push(d);
        }
    }
}

impl Drop for Cgroups {
    fn drop(&mut self) {
        for d in self.0.iter().rev() {
            for _ in 0..100 {
                if std::fs::remove_dir(d).is_ok() || !d.exists() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

/// Runs this test again as `PSNS_CHILD=<mode>`, the world in `PSNS_WORLD`,
/// through `wrapper`; fails with its output unless it passes.
fn child(test: &str, mode: &str, world: &Value, wrapper: &[String]) {
    let exe = std::env::current_exe().unwrap();
    let out = Command::new(&wrapper[0])
        .args(&wrapper[1..])
        .arg(exe)
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(CHILD, mode)
        .env("PSNS_WORLD", world.to_string())
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "the child ({mode}): {}\n{text}",
        out.status
    );
    assert!(text.contains("1 passed"), "the child ran no test: {text}");
}

/// A command prefix: a private PID namespace (with its own `/proc`) whose
/// first process is in `host`'s network namespace.
fn pid_namespace_in(host: &Host) -> Vec<String> {
    let netns = format!("--net=/run/netns/{}", host.name);
    [
        "nsenter",
        &netns,
        "unshare",
        "--pid",
        "--fork",
        "--mount-proc",
    ]
    .map(String::from)
    .to_vec()
}

fn hex_id(tag: u32) -> String {
    format!("{:08x}{tag:08x}{}", std::process::id(), "5e".repeat(24))
}

#[test]
fn namespaces_seen_from_a_private_pid_namespace_are_named_and_entered() {
    const TEST: &str = "namespaces_seen_from_a_private_pid_namespace_are_named_and_entered";
    if std::env::var(CHILD).as_deref() == Ok("world") {
        return in_the_world();
    }
    needs!(unavailable());
    let host = Host::new("psns-host");
    let web = Host::with_interfaces("psns-web");
    let (pod, plain) = (Host::new("psns-pod"), Host::new("psns-plain"));
    let twins = (Host::new("psns-twin"), Host::new("psns-twin"));
    let (id, id2) = (hex_id(1), hex_id(2));
    let uid = format!("{:08x}-0000-4000-8000-{:012x}", std::process::id(), 7);
    let mut cgroups = Cgroups(Vec::new());
    let docker = Path::new("/sys/fs/cgroup/pids/docker").join(&id);
    let kube = Path::new("/sys/fs/cgroup/unified/kubepods/besteffort")
        .join(format!("pod{uid}"))
        .join(&id2);
    cgroups.make(&docker);
    cgroups.make(&kube);
    let pods = tempfile::tempdir().unwrap();
    std::fs::create_dir(pods.path().join(format!("psns_api-0_{uid}"))).unwrap();
    let world = json!({
        "web": web.name, "pod": pod.name, "plain": plain.name,
        "twins": [twins.0.name, twins.1.name],
        "docker": docker, "kube": kube, "id": id, "id2": id2,
        "pods": pods.path(),
    });
    child(TEST, "world", &world, &pid_namespace_in(&host));
    drop(cgroups);
}

/// A process, killed and reaped on drop.
struct Sleeper(Child);

impl Sleeper {
    fn id(&self) -> u32 {
        self.0.id()
    }

    fn end(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Sleeper {
    fn drop(&mut self) {
        self.end();
    }
}

/// A "container" process: `nsenter` into `netns`, optionally its own UTS
/// namespace with `hostname`, moved into `cgroup`, then `sleep`.
fn container(netns: Option<&str>, hostname: Option<&str>, cgroup: Option<&str>) -> Sleeper {
    let mut script = String::new();
    if let Some(h) = hostname {
        script += &format!("hostname {h} && ");
    }
    if let Some(dir) = cgroup {
        script += &format!("echo $$ > {dir}/cgroup.procs && ");
    }
    script += "exec sleep 600";
    let mut cmd = match netns {
        Some(n) => {
            let mut c = Command::new("nsenter");
            c.arg(format!("--net=/run/netns/{n}"));
            c
        }
        None => {
            let mut c = Command::new("unshare");
            c.arg("--net");
            c
        }
    };
    if hostname.is_some() {
        cmd.args(["unshare", "--uts"]);
    }
    if netns.is_none() && hostname.is_none() {
        cmd.arg("--");
    }
    let child = cmd
        .args(["sh", "-c", &script])
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let comm = format!("/proc/{}/comm", child.id());
    wait_for(
        Duration::from_secs(10),
        "the container to sleep",
        || match std::fs::read_to_string(&comm) {
            Ok(c) if c.trim() == "sleep" => Ok(()),
            other => Err(format!("{other:?}")),
        },
    );
    Sleeper(child)
}

fn ns_of(path: &str) -> u64 {
    std::fs::metadata(path).unwrap().ino()
}

/// The inode of the caller's thread's network namespace.
fn here() -> u64 {
    ns_of("/proc/thread-self/ns/net")
}

fn in_the_world() {
    let w: Value = serde_json::from_str(&std::env::var("PSNS_WORLD").unwrap()).unwrap();
    let s = |k: &str| w[k].as_str().unwrap().to_string();
    let twins: Vec<String> = (0..2)
        .map(|i| w["twins"][i].as_str().unwrap().to_string())
        .collect();
    let _web = container(Some(&s("web")), Some("psns-web-1"), Some(&s("docker")));
    let _web_too = container(Some(&s("web")), None, None);
    let _pod = container(Some(&s("pod")), Some("psns-pod-host"), Some(&s("kube")));
    let _plain = container(Some(&s("plain")), None, None);
    let _twins: Vec<Sleeper> = twins
        .iter()
        .map(|t| container(Some(t), Some("psns-twin"), None))
        .collect();
    let mut anon = container(None, None, None);
    let anon_ns = ns_of(&format!("/proc/{}/ns/net", anon.id()));

    let roots = Roots {
        pods_root: PathBuf::from(s("pods")),
        ..Roots::default()
    };
    let found = find(&roots).unwrap();
    assert_eq!(found.own, here());
    let names: BTreeMap<&str, &Seen> = found
        .namespaces
        .iter()
        .map(|s| (s.ns.name.as_str(), s))
        .collect();
    let inode = |n: &str| ns_of(&format!("/run/netns/{n}"));
    let twin_names: Vec<String> = twins
        .iter()
        .map(|t| format!("psns-twin-{}", inode(t)))
        .collect();
    let mut expected = vec![
        "psns-web-1".to_string(),
        "psns/api-0".into(),
        s("plain"),
        format!("netns-{anon_ns}"),
    ];
    expected.extend(twin_names);
    expected.sort();
    assert_eq!(
        names.keys().map(|n| n.to_string()).collect::<Vec<_>>(),
        expected,
        "{found:#?}"
    );

    let web = names["psns-web-1"];
    assert_eq!(web.ns.inode, inode(&s("web")));
    assert_eq!(web.ns.container.as_deref(), Some(&s("id")[..12]));
    assert_eq!(web.pid, _web.id(), "the lowest pid with the best name");
    assert_eq!(web.handle, Path::new("/run/netns").join(s("web")));
    let pod = names["psns/api-0"];
    assert_eq!(
        (pod.ns.pod.as_deref(), pod.ns.container.as_deref()),
        (Some("psns/api-0"), Some(&s("id2")[..12]))
    );
    assert_eq!(names[s("plain").as_str()].ns.container, None);

    enter_each(&found, &s("web"));
    a_namespace_that_vanishes(&roots, &found, &mut anon, anon_ns);
}

/// The worker enters every namespace found, one by one and in one batch,
/// and comes back; sockets it makes stay where they were made.
fn enter_each(found: &Found, web: &str) {
    let worker = Worker::start().unwrap();
    assert_eq!(worker.own(), found.own);
    let failed = worker.sync(&found.namespaces);
    assert!(failed.is_empty(), "{failed:?}");
    let mut inodes: Vec<u64> = found.namespaces.iter().map(|s| s.ns.inode).collect();
    inodes.sort_unstable();
    assert_eq!(worker.held(), inodes);
    for &inode in &inodes {
        assert_eq!(worker.run(inode, here).unwrap(), inode);
    }
    let mut jobs: Vec<(u64, portsight::netns::worker::Job<u64>)> =
        inodes.iter().map(|&i| (i, Box::new(here) as _)).collect();
    jobs.push((found.own, Box::new(here)));
    let seen: Vec<u64> = worker
        .run_all(jobs)
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(seen[..inodes.len()], inodes[..]);
    assert_eq!(
        seen[inodes.len()],
        found.own,
        "own work in a batch runs at home"
    );
    assert_eq!(
        worker.run(found.own, here).unwrap(),
        found.own,
        "back home after the batch"
    );

    // 10.77.0.1 is an address of the web namespace only.
    let addr: SocketAddr = (Ipv4Addr::new(10, 77, 0, 1), 0).into();
    let bind = |inode| {
        let fd = worker.socket(inode, Domain::IPV4, Type::STREAM).unwrap();
        Socket::from(fd).bind(&addr.into())
    };
    bind(ns_of(&format!("/run/netns/{web}"))).expect("bind inside the namespace");
    let err = bind(found.own).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::AddrNotAvailable, "{err}");
}

/// A held handle keeps a namespace alive past its last process; once the
/// scan no longer sees it, its handle is closed and work there is a clean
/// error; a handle not yet opened fails to open.
fn a_namespace_that_vanishes(roots: &Roots, found: &Found, anon: &mut Sleeper, anon_ns: u64) {
    let worker = Worker::start().unwrap();
    assert!(worker.sync(&found.namespaces).is_empty());
    anon.end();
    assert_eq!(
        worker.run(anon_ns, here).unwrap(),
        anon_ns,
        "held, so still there"
    );
    let again = find(roots).unwrap();
    assert!(again.namespaces.iter().all(|s| s.ns.inode != anon_ns));
    assert!(worker.sync(&again.namespaces).is_empty());
    assert!(!worker.held().contains(&anon_ns), "closed at once");
    let err = worker.run(anon_ns, here).unwrap_err();
    assert!(
        matches!(err, Error::Gone { inode } if inode == anon_ns),
        "{err}"
    );
    assert_eq!(
        err.to_string(),
        format!("network namespace {anon_ns} is gone")
    );

    let late = Worker::start().unwrap();
    let failed = late.sync(&found.namespaces);
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert!(
        matches!(failed[0], (inode, Error::Gone { .. }) if inode == anon_ns),
        "{failed:?}"
    );
    assert!(matches!(
        late.socket(anon_ns, Domain::IPV4, Type::STREAM),
        Err(Error::Gone { .. })
    ));
}

/// In a pod without host networking (PID 1 in the host namespace,
/// portsight in one of its own) `find` refuses; without a private PID
/// namespace too (PID 1 of the machine: another namespace, or not even
/// readable).
#[test]
fn outside_pid_1_s_network_namespace_find_refuses_to_look() {
    const TEST: &str = "outside_pid_1_s_network_namespace_find_refuses_to_look";
    match std::env::var(CHILD).as_deref() {
        Ok("refuse") => {
            let err = find(&Roots::default()).unwrap_err();
            assert!(
                matches!(err, Error::NotHostNetwork { own, .. } if own == here()),
                "{err}"
            );
            assert!(
                err.to_string()
                    .contains("not looking into other namespaces"),
                "{err}"
            );
            return;
        }
        Ok("refuse-any") => {
            let err = find(&Roots::default()).unwrap_err();
            let pid1 = Path::new("/proc/1/ns/net");
            let why = match &err {
                Error::NotHostNetwork { .. } => "another namespace",
                Error::Read { path, .. } if path == pid1 => "not readable",
                other => panic!("an unexpected error: {other}"),
            };
            println!("refused: PID 1's namespace is {why}: {err}");
            return;
        }
        _ => {}
    }
    needs!(unavailable());
    let (host, own) = (Host::new("psns-refuse"), Host::new("psns-own"));
    let into_own = format!("nsenter --net=/run/netns/{} \"$@\"; exit $?", own.name);
    let mut pod = pid_namespace_in(&host);
    pod.extend(["sh", "-c", &into_own, "sh"].map(String::from));
    child(TEST, "refuse", &json!({}), &pod);
    let exec = ["ip", "netns", "exec", &host.name].map(String::from);
    child(TEST, "refuse-any", &json!({}), &exec);
}

/// Without `CAP_SYS_ADMIN` the namespaces are still found and their
/// handles opened, but entering one is refused, and said so.
#[test]
fn without_cap_sys_admin_entering_is_refused_as_such() {
    const TEST: &str = "without_cap_sys_admin_entering_is_refused_as_such";
    if std::env::var(CHILD).as_deref() == Ok("no-admin") {
        let w: Value = serde_json::from_str(&std::env::var("PSNS_WORLD").unwrap()).unwrap();
        let other = w["other"].as_str().unwrap();
        // The sleeper in `other` is started in the background just before
        // this child: wait for it to be there.
        let mut found = find(&Roots::default()).unwrap();
        for _ in 0..100 {
            if !found.namespaces.is_empty() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
            found = find(&Roots::default()).unwrap();
        }
        let names: Vec<&str> = found
            .namespaces
            .iter()
            .map(|s| s.ns.name.as_str())
            .collect();
        assert_eq!(names, [other]);
        let inode = found.namespaces[0].ns.inode;
        let worker = Worker::start().unwrap();
        assert!(worker.sync(&found.namespaces).is_empty());
        let err = worker.run(inode, here).unwrap_err();
        assert!(
            matches!(err, Error::Permission { inode: i, .. } if i == inode),
            "{err}"
        );
        assert!(err.to_string().contains("needs CAP_SYS_ADMIN"), "{err}");
        let err = worker
            .socket(inode, Domain::IPV4, Type::STREAM)
            .unwrap_err();
        assert!(matches!(err, Error::Permission { .. }), "{err}");
        assert_eq!(
            worker.run(found.own, here).unwrap(),
            found.own,
            "home work still runs"
        );
        return;
    }
    needs!(unavailable().or_else(|| {
        Command::new("setpriv")
            .arg("--version")
            .output()
            .is_err()
            .then(|| "`setpriv` is not installed".to_string())
    }));
    let (host, other) = (Host::new("psns-noadmin"), Host::new("psns-other"));
    let script = format!(
        "nsenter --net=/run/netns/{} sleep 600 & \
         setpriv --inh-caps=-sys_admin --bounding-set=-sys_admin \"$@\"; st=$?; kill $!; exit $st",
        other.name
    );
    let mut cmd = pid_namespace_in(&host);
    cmd.extend(["sh", "-c", &script, "sh"].map(String::from));
    child(TEST, "no-admin", &json!({ "other": other.name }), &cmd);
}
