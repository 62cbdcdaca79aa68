//! The OCI image: built by deploy/image/build with buildah from scratch
//! around the packaged binary (from `PORTSIGHT_DEB`), without a registry,
//! in a container storage of the test's own; inspected; and run with
//! podman (Debian's runc, cgroupfs: DESIGN's "Facts checked") as the
//! DaemonSet runs it: the host's PID namespace, a test host's network
//! namespace (`--network ns:/run/netns/<test host>`), user 65534, a
//! read-only root, `no-new-privileges`, every capability dropped but the
//! ones added.
mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use support::netns::{self, Host, Served};
use support::{listen, needs, run};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const IMAGE: &str = "localhost/portsight:test";

fn unavailable() -> Option<String> {
    if std::env::var_os("PORTSIGHT_DEB").is_none_or(|d| !Path::new(&d).is_file()) {
        return Some(
            "PORTSIGHT_DEB names no package: build it with `cargo deb` (scripts/test does)".into(),
        );
    }
    netns::unavailable().or_else(|| {
        ["buildah", "podman", "setcap", "dpkg-deb"]
            .into_iter()
            .find(|t| Command::new(t).arg("--version").output().is_err())
            .map(|t| format!("`{t}` is not installed"))
            .or_else(|| {
                (!Path::new("/usr/sbin/runc").exists())
                    .then(|| "/usr/sbin/runc (Debian runc) is not installed".into())
            })
    })
}

/// A container storage, configuration and cgroup parent of the test's own,
/// removed at the end: this machine's images, containers and cgroups are
/// never touched.
struct Storage {
    dir: tempfile::TempDir,
    cgroup: String,
}

impl Storage {
    fn new() -> Storage {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display();
        std::fs::write(
            dir.path().join("storage.conf"),
            format!(
                "[storage]\ndriver = \"vfs\"\ngraphroot = \"{d}/graph\"\nrunroot = \"{d}/run\"\n"
            ),
        )
        .unwrap();
        // Podman's default ulimits exceed this machine's hard limits.
        std::fs::write(
            dir.path().join("containers.conf"),
            "[containers]\ndefault_ulimits = []\n[engine]\nevents_logger = \"file\"\n",
        )
        .unwrap();
        let cgroup = format!("portsight-test-{}", std::process::id());
        Storage { dir, cgroup }
    }

    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        cmd.env(
            "CONTAINERS_STORAGE_CONF",
            self.dir.path().join("storage.conf"),
        )
        .env("CONTAINERS_CONF", self.dir.path().join("containers.conf"));
        cmd
    }

    /// `podman` with Debian's runc and cgroupfs: crun refuses this
    /// machine's hybrid cgroup hierarchy.
    fn podman(&self) -> Command {
        let mut cmd = self.command("podman");
        cmd.arg("--tmpdir").arg(self.dir.path().join("tmp")).args([
            "--runtime",
            "/usr/sbin/runc",
            "--cgroup-manager=cgroupfs",
        ]);
        cmd
    }
}

impl Drop for Storage {
    fn drop(&mut self) {
        // Containers are run with --rm; the vfs layers are plain files, but
        // let buildah unmount anything it still holds before they go.
        let _ = self.podman().args(["rm", "--all", "--force"]).output();
        let _ = self.command("buildah").args(["rm", "--all"]).output();
        // podman (cgroupfs) makes <parent>/… in every hierarchy; rmdir
        // them deepest first once the container has gone.
        for hierarchy in std::fs::read_dir("/sys/fs/cgroup").into_iter().flatten() {
            let top = hierarchy.unwrap().path().join(&self.cgroup);
            if top.is_dir() {
                let _ = Command::new("find")
                    .arg(&top)
                    .args(["-depth", "-type", "d", "-exec", "rmdir", "{}", ";"])
                    .output();
            }
        }
    }
}

/// The binary the package ships, extracted into `dir`.
fn packaged_binary(dir: &Path) -> PathBuf {
    let deb = std::env::var_os("PORTSIGHT_DEB").unwrap();
    run(Command::new("dpkg-deb").arg("-x").arg(deb).arg(dir));
    dir.join("usr/bin/portsight")
}

fn build(storage: &Storage) {
    let dir = tempfile::tempdir().unwrap();
    let binary = packaged_binary(dir.path());
    run(storage
        .command(&format!("{ROOT}/deploy/image/build"))
        .arg(&binary)
        .arg(IMAGE));
}

fn inspect(storage: &Storage) -> Value {
    let out = run(storage
        .command("buildah")
        .args(["inspect", "--type", "image", IMAGE]));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The capability names of the Debian unit, as podman takes them.
fn unit_capabilities() -> Vec<String> {
    let unit = std::fs::read_to_string(format!("{ROOT}/debian/portsight.service")).unwrap();
    unit.lines()
        .find_map(|l| l.strip_prefix("AmbientCapabilities="))
        .unwrap()
        .split_whitespace()
        .map(|c| c.trim_start_matches("CAP_").to_lowercase())
        .collect()
}

/// `podman run` of the image into `host`'s network namespace, as the
/// DaemonSet runs it, adding `caps`.
fn serve(storage: &Storage, host: &Host, caps: &[String]) -> Served {
    let mut cmd = storage.podman();
    cmd.args(["run", "--rm"])
        .arg(format!("--network=ns:/run/netns/{}", host.name))
        .args([
            "--pid=host",
            "--ipc=none",
            "--read-only",
            "--security-opt=no-new-privileges",
            "--cap-drop=all",
            // The default config, discovering at once (discover.min_age is 1m).
            "--env=PORTSIGHT__DISCOVER__MIN_AGE=0s",
        ])
        .arg(format!("--cgroup-parent=/{}", storage.cgroup));
    if !caps.is_empty() {
        cmd.arg(format!("--cap-add={}", caps.join(",")));
    }
    cmd.arg(IMAGE);
    let mut served = host.serve_from_outside(cmd);
    served.wait_ready();
    served
}

/// A port's first listener in `/api/v1/status`.
fn listener(status: &Value, port: u16) -> Value {
    status["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["port"] == port)
        .unwrap_or_else(|| panic!("{port} not watched: {status}"))["listeners"][0]
        .clone()
}

fn status_line(pid: u64, key: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key}:")))
        .unwrap_or_else(|| panic!("no {key} in /proc/{pid}/status"))
        .trim()
        .to_string()
}

#[test]
fn the_image_is_built_without_a_registry_and_runs_non_root_with_only_its_capabilities() {
    needs!(unavailable());
    let storage = Storage::new();
    build(&storage);

    let image = inspect(&storage);
    let config = &image["OCIv1"]["config"];
    assert_eq!(
        config["Entrypoint"],
        serde_json::json!(["/usr/bin/portsight"])
    );
    assert_eq!(config["Cmd"], serde_json::json!(["serve"]));
    assert_eq!(config["User"], "65534:65534");
    assert!(config["ExposedPorts"]["10917/tcp"].is_object(), "{config}");
    let labels = &config["Labels"];
    assert_eq!(labels["org.opencontainers.image.title"], "portsight");
    assert_eq!(
        labels["org.opencontainers.image.version"],
        env!("CARGO_PKG_VERSION")
    );
    assert!(
        labels["org.opencontainers.image.revision"]
            .as_str()
            .is_some_and(|r| r.len() == 40),
        "{labels}"
    );

    // Run as the DaemonSet runs it: it sees the owner of a socket another
    // user (root: this test) holds, with the capabilities raised from the
    // binary's permitted file capabilities, and nothing more.
    let caps = unit_capabilities();
    let host = Host::new("img");
    let _held = host.run(|| listen("[::]:8080").v6only(false).bind());
    let served = serve(&storage, &host, &caps);
    served.within_scans(5, "the owner of 8080", |_| {
        let held = listener(&served.status(), 8080);
        if held["pid"] == std::process::id() {
            Ok(())
        } else {
            Err(held.to_string())
        }
    });
    let mut want = serde_json::json!({"netfilter": true, "netlink": true, "owners": true});
    if let Some(up) = support::namespaces_source(true) {
        want["namespaces"] = up.into();
    }
    assert_eq!(served.status()["sources"], want);
    // portsight's own listener names its pid (the host's PID namespace).
    let own = listener(&served.status(), 10917);
    assert_eq!(own["process"], "portsight", "{own}");
    let pid = own["pid"].as_u64().unwrap();
    assert_eq!(status_line(pid, "Uid"), "65534\t65534\t65534\t65534");
    assert_eq!(status_line(pid, "NoNewPrivs"), "1");
    let bits = u64::from_str_radix(&status_line(pid, "CapEff"), 16).unwrap();
    assert_eq!(
        bits,
        (1 << 2) | (1 << 12) | (1 << 19) | (1 << 21),
        "CapEff: dac_read_search, net_admin, sys_admin, sys_ptrace"
    );
    stop(served);

    // Without them (a plain `docker run`), it still starts, and only the
    // owners of other users' sockets are missing.
    let host = Host::new("imgnocap");
    let _held = host.run(|| listen("[::]:8080").v6only(false).bind());
    let served = serve(&storage, &host, &[]);
    support::wait_scans(|| served.scrape(), 2);
    let status = served.status();
    let mut want = serde_json::json!({"netfilter": false, "netlink": true, "owners": false});
    if let Some(up) = support::namespaces_source(false) {
        want["namespaces"] = up.into();
    }
    assert_eq!(status["sources"], want, "{status}");
    let held = listener(&status, 8080);
    assert_eq!(held["process"], Value::Null, "{held}");
    let port = status["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["port"] == 8080)
        .unwrap();
    assert_eq!(port["diagnosis"]["cause"], "ok", "{port}");
    stop(served);
}

/// SIGTERM to `podman run`, which passes it on: portsight shuts down and
/// podman removes the container (`--rm`).
fn stop(mut served: Served) {
    served.signal(nix::sys::signal::Signal::SIGTERM);
    let status = served.process.wait_exit(std::time::Duration::from_secs(60));
    assert!(
        status.success(),
        "podman run: {status}: {}",
        served.log_text()
    );
}
