//! The Debian package as a user gets it: built by `cargo deb` (scripts/test
//! builds it and names it in `PORTSIGHT_DEB`), installed with `dpkg -i` into
//! a throwaway copy of this machine's root (an overlay in a mount namespace
//! of its own, see tests/support/installed-root.sh), and its binary run the
//! way `portsight.service` runs it: as the `portsight` user with exactly the
//! unit's ambient capabilities and `no_new_privs` (`setpriv`), a read-only
//! root and a private /tmp, inside a test network namespace.
mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;
use support::netns::{self, Host};
use support::{listen, needs, run};

const UNIT: &str = "./usr/lib/systemd/system/portsight.service";
const INSTALLED_ROOT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/support/installed-root.sh"
);

/// The package under test, from `PORTSIGHT_DEB`.
fn deb() -> Result<PathBuf, String> {
    let path = std::env::var_os("PORTSIGHT_DEB")
        .map(PathBuf::from)
        .ok_or("PORTSIGHT_DEB names no package: build it with `cargo deb` (scripts/test does)")?;
    if path.is_file() {
        Ok(path)
    } else {
        Err(format!("PORTSIGHT_DEB={}: no such file", path.display()))
    }
}

/// Why these tests cannot run here, if they cannot.
fn unavailable() -> Option<String> {
    if let Err(e) = deb() {
        return Some(e);
    }
    netns::unavailable().or_else(|| {
        ["dpkg-deb", "setpriv", "systemd-analyze", "unshare"]
            .into_iter()
            .find(|tool| which(tool).is_none())
            .map(|tool| format!("`{tool}` is not installed"))
    })
}

fn which(tool: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(tool))
            .find(|p| p.is_file())
    })
}

fn stdout(cmd: &mut Command) -> String {
    String::from_utf8(run(cmd).stdout).expect("UTF-8 output")
}

/// A file of the package's data, by its path in the archive (`./usr/…`).
fn file_in_deb(deb: &Path, path: &str) -> String {
    let tar = run(Command::new("dpkg-deb").arg("--fsys-tarfile").arg(deb)).stdout;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("data.tar"), tar).unwrap();
    stdout(
        Command::new("tar")
            .arg("-xOf")
            .arg(dir.path().join("data.tar"))
            .arg(path),
    )
}

/// The systemd unit the package ships.
struct Unit(String);

impl Unit {
    fn of(deb: &Path) -> Unit {
        Unit(file_in_deb(deb, UNIT))
    }

    /// Every value given to `key=`, in order.
    fn values(&self, key: &str) -> Vec<&str> {
        self.0
            .lines()
            .filter_map(|l| l.strip_prefix(key)?.strip_prefix('='))
            .collect()
    }

    fn one(&self, key: &str) -> &str {
        match self.values(key)[..] {
            [v] => v,
            ref all => panic!("{key}= given {} times in the unit", all.len()),
        }
    }

    /// `AmbientCapabilities=`, as setpriv names them (`sys_ptrace`).
    fn capabilities(&self) -> Vec<String> {
        self.one("AmbientCapabilities")
            .split_whitespace()
            .map(|c| c.trim_start_matches("CAP_").to_lowercase())
            .collect()
    }

    /// The command that starts the service as the unit does, with only
    /// `caps` of its capabilities: `setpriv` with the unit's user and
    /// group, those as the inheritable, ambient and bounding sets, and
    /// `no_new_privs`; then a shell that reads the unit's
    /// `EnvironmentFile=` and execs its `ExecStart=` (expanding `$ARGS`
    /// as systemd does).
    fn command(&self, caps: &[String]) -> Vec<String> {
        assert_eq!(self.one("NoNewPrivileges"), "yes");
        let set: String = std::iter::once("-all".to_string())
            .chain(caps.iter().map(|c| format!("+{c}")))
            .collect::<Vec<_>>()
            .join(",");
        let env_file = self.one("EnvironmentFile").trim_start_matches('-');
        vec![
            "setpriv".into(),
            format!("--reuid={}", self.one("User")),
            format!("--regid={}", self.one("Group")),
            "--init-groups".into(),
            format!("--inh-caps={set}"),
            format!("--ambient-caps={set}"),
            format!("--bounding-set={set}"),
            "--no-new-privs".into(),
            "/bin/sh".into(),
            "-c".into(),
            format!(". {env_file}; exec {}", self.one("ExecStart")),
        ]
    }
}

/// `installed-root.sh` in a mount namespace of its own: installs the
/// package into a throwaway root and runs `command` there.
fn in_installed_root(deb: &Path, service: bool, command: &[&str]) -> Output {
    let work = tempfile::tempdir().unwrap();
    let mut cmd = Command::new("unshare");
    cmd.args(["--mount", "--propagation", "private", INSTALLED_ROOT])
        .arg(work.path())
        .arg(deb)
        .arg(if service { "service" } else { "admin" })
        .args(command);
    cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"))
}

#[test]
fn the_package_ships_the_binary_unit_configs_and_docs() {
    needs!(unavailable());
    let deb = deb().unwrap();
    let listing = stdout(Command::new("dpkg-deb").arg("-c").arg(&deb));
    for path in [
        "./usr/bin/portsight",
        UNIT,
        "./etc/portsight/portsight.toml",
        "./etc/default/portsight",
        "./usr/share/doc/portsight/README.md",
        "./usr/share/doc/portsight/alerts/portsight.yml",
        "./usr/share/doc/portsight/dashboards/portsight-host.json",
    ] {
        assert!(
            listing.lines().any(|l| l.ends_with(&format!(" {path}"))),
            "{path} not in the package:\n{listing}"
        );
    }
    let info = stdout(Command::new("dpkg-deb").arg("-I").arg(&deb));
    assert!(info.contains("Depends: adduser"), "{info}");
    let name = stdout(Command::new("dpkg-deb").arg("-f").arg(&deb).arg("Package"));
    assert_eq!(name.trim(), "portsight");
    let control = tempfile::tempdir().unwrap();
    run(Command::new("dpkg-deb")
        .arg("-e")
        .arg(&deb)
        .arg(control.path()));
    let conffiles = std::fs::read_to_string(control.path().join("conffiles")).unwrap();
    let mut conffiles: Vec<&str> = conffiles.lines().collect();
    conffiles.sort();
    assert_eq!(
        conffiles,
        ["/etc/default/portsight", "/etc/portsight/portsight.toml"]
    );
    // The packaged config is the embedded default, and valid.
    let toml = file_in_deb(&deb, "./etc/portsight/portsight.toml");
    assert_eq!(toml, portsight::config::DEFAULT_TOML);
}

#[test]
fn dpkg_installs_it_makes_the_user_enables_the_unit_and_purges_cleanly() {
    needs!(unavailable());
    let deb = deb().unwrap();
    let script = "set -e
        getent passwd portsight
        test -L /etc/systemd/system/multi-user.target.wants/portsight.service
        dpkg-query -W -f '${Conffiles}\\n' portsight
        portsight config check /etc/portsight/portsight.toml
        dpkg --purge portsight >/dev/null 2>&1
        if getent passwd portsight; then echo 'user left after purge'; exit 1; fi
        if getent group portsight; then echo 'group left after purge'; exit 1; fi
        test ! -e /etc/portsight/portsight.toml
        echo purged";
    let out = in_installed_root(&deb, false, &["/bin/sh", "-c", script]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let user = text.lines().next().unwrap();
    // A system user (uid below 1000) that cannot log in and has no home.
    let fields: Vec<&str> = user.split(':').collect();
    assert_eq!(fields[0], "portsight");
    assert!(fields[2].parse::<u32>().unwrap() < 1000, "{user}");
    assert_eq!(fields[5], "/nonexistent");
    assert_eq!(fields[6], "/usr/sbin/nologin");
    assert!(text.contains("/etc/portsight/portsight.toml "), "{text}");
    assert!(text.contains("/etc/default/portsight "), "{text}");
    assert!(text.contains("/etc/portsight/portsight.toml: OK"), "{text}");
    assert!(text.trim_end().ends_with("purged"), "{text}");
    // Nothing of it reached this machine's own root.
    assert!(!Path::new("/usr/lib/systemd/system/portsight.service").exists() || is_installed());
}

/// Whether this machine itself has the package installed (then the unit in
/// its root is that one, not a leak from the test).
fn is_installed() -> bool {
    Command::new("dpkg-query")
        .args(["-W", "portsight"])
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn systemd_accepts_the_installed_unit_and_rates_it_hardened() {
    needs!(unavailable());
    let deb = deb().unwrap();
    let unit = "/usr/lib/systemd/system/portsight.service";
    let out = in_installed_root(&deb, true, &["systemd-analyze", "verify", unit]);
    // verify prints nothing for a good unit; anything it says is a finding.
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "systemd-analyze verify: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // The exposure score of `systemd-analyze security` (0 safest, 10
    // unsafe): at most 3.0, "OK" in its own words.
    let out = in_installed_root(
        &deb,
        true,
        &[
            "systemd-analyze",
            "security",
            "--offline=yes",
            "--threshold=30",
            "--no-pager",
            unit,
        ],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "systemd-analyze security: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("Overall exposure level for portsight.service"),
        "{text}"
    );
}

/// The packaged binary, started as the unit starts it but with only
/// `caps`, in `host`, watching a listener the test (another user: root)
/// holds on 8080.
fn serve_installed(host: &Host, deb: &Path, caps: &[String]) -> (netns::Served, u32) {
    let unit = Unit::of(deb);
    let work = tempfile::tempdir().unwrap();
    let mut args = vec![
        work.path().display().to_string(),
        deb.display().to_string(),
        "service".into(),
    ];
    // The unit as it is, but discovering at once: the test's listener is
    // seconds old, and discover.min_age is 1m.
    args.extend(["env".into(), "PORTSIGHT__DISCOVER__MIN_AGE=0s".into()]);
    args.extend(unit.command(caps));
    let mut served = host.serve_via(Path::new(INSTALLED_ROOT), &args);
    served.wait_ready();
    // The work dir's mounts live in the child's mount namespace; the
    // directory itself may go once the child has started.
    drop(work);
    let pid = served.process.child.id();
    (served, pid)
}

/// The capability bits of a set in `/proc/<pid>/status` (`CapAmb` …).
fn cap_set(pid: u32, set: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let hex = status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{set}:")))
        .unwrap_or_else(|| panic!("no {set} in /proc/{pid}/status"));
    u64::from_str_radix(hex.trim(), 16).unwrap()
}

fn cap_bits(caps: &[String]) -> u64 {
    caps.iter()
        .map(|c| {
            let bit = match c.as_str() {
                "dac_read_search" => 2,
                "net_bind_service" => 10,
                "net_admin" => 12,
                "net_raw" => 13,
                "sys_ptrace" => 19,
                "sys_admin" => 21,
                other => panic!("capability {other}: add its number here"),
            };
            1u64 << bit
        })
        .fold(0, |a, b| a | b)
}

/// The listener on 8080 in `/api/v1/status`.
fn listener_8080(status: &Value) -> Value {
    let port = status["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["port"] == 8080)
        .unwrap_or_else(|| panic!("8080 not watched: {status}"));
    assert_eq!(port["listening"], true, "{port}");
    assert_eq!(port["diagnosis"]["cause"], "ok", "{port}");
    port["listeners"][0].clone()
}

#[test]
fn the_service_runs_unprivileged_with_only_its_capabilities_and_sees_every_owner() {
    needs!(unavailable());
    let deb = deb().unwrap();
    let host = Host::new("pkg");
    let _held = host.run(|| listen("[::]:8080").v6only(false).bind());
    let caps = Unit::of(&deb).capabilities();
    let (served, pid) = serve_installed(&host, &deb, &caps);

    // It is the portsight user, with exactly the unit's capabilities.
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let uid = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    let passwd = std::fs::read_to_string(format!("/proc/{pid}/root/etc/passwd")).unwrap();
    let portsight_uid = passwd
        .lines()
        .find_map(|l| l.strip_prefix("portsight:x:"))
        .and_then(|rest| rest.split(':').next())
        .expect("portsight user in the installed root");
    assert!(portsight_uid != "0");
    assert_eq!(
        uid.split_whitespace().skip(1).collect::<Vec<_>>(),
        [portsight_uid; 4],
        "{uid}"
    );
    for set in ["CapAmb", "CapEff", "CapPrm", "CapBnd"] {
        assert_eq!(cap_set(pid, set), cap_bits(&caps), "{set} of {caps:?}");
    }
    assert!(status.contains("NoNewPrivs:\t1"), "{status}");

    // Every source works: the socket table from netlink, and the owner of
    // a socket another user (root, this test) holds.
    served.within_scans(5, "the owner of 8080", |_| {
        let listener = listener_8080(&served.status());
        if listener["pid"] == std::process::id() {
            Ok(())
        } else {
            Err(listener.to_string())
        }
    });
    let comm = std::fs::read_to_string("/proc/self/comm").unwrap();
    let status = served.status();
    assert_eq!(listener_8080(&status)["process"], comm.trim());
    assert_sources(&served, &status, &expected_sources(&caps));
}

/// What each source should say with `caps`: owners need both
/// CAP_DAC_READ_SEARCH and CAP_SYS_PTRACE, the nftables ruleset
/// CAP_NET_ADMIN, the socket table nothing; the namespace scan, outside a
/// private PID namespace, is refused or cannot check the safety rule
/// ([`support::namespaces_source`]).
fn expected_sources(caps: &[String]) -> Vec<(&'static str, bool)> {
    let has = |c: &str| caps.iter().any(|have| have == c);
    let namespaces = support::namespaces_source(has("sys_ptrace"));
    namespaces
        .map(|up| ("namespaces", up))
        .into_iter()
        .chain([
            ("netfilter", has("net_admin")),
            ("netlink", true),
            ("owners", has("dac_read_search") && has("sys_ptrace")),
        ])
        .collect()
}

/// `portsight_source_up` and the JSON's `sources` say exactly `want`.
fn assert_sources(served: &netns::Served, status: &Value, want: &[(&str, bool)]) {
    let json: Vec<(String, bool)> = status["sources"]
        .as_object()
        .unwrap_or_else(|| panic!("no sources: {status}"))
        .iter()
        .map(|(k, v)| (k.clone(), v.as_bool().unwrap()))
        .collect();
    let want: Vec<(String, bool)> = want.iter().map(|(k, v)| (k.to_string(), *v)).collect();
    assert_eq!(json, want, "the JSON's sources");
    let mut metrics: Vec<(String, bool)> = served
        .scrape()
        .into_iter()
        .filter(|s| s.name == "portsight_source_up")
        .map(|s| {
            let source = s.labels.iter().find(|(k, _)| k == "source").unwrap();
            (source.1.clone(), s.value == 1.0)
        })
        .collect();
    metrics.sort();
    assert_eq!(metrics, want, "portsight_source_up");
}

/// Each of the unit's capabilities left out in turn, then all of them.
#[test]
fn without_each_capability_its_source_reports_0_and_the_rest_works() {
    needs!(unavailable());
    let deb = deb().unwrap();
    let all = Unit::of(&deb).capabilities();
    let mut cases: Vec<Vec<String>> = all
        .iter()
        .map(|dropped| all.iter().filter(|c| *c != dropped).cloned().collect())
        .collect();
    cases.push(Vec::new());
    for caps in cases {
        let host = Host::new("pkgcap");
        let _held = host.run(|| listen("[::]:8080").v6only(false).bind());
        let (served, pid) = serve_installed(&host, &deb, &caps);
        assert_eq!(cap_set(pid, "CapEff"), cap_bits(&caps));
        // The first scan after readiness has settled the owners (the
        // cache keeps a failed lookup): wait for two more, then look.
        support::wait_scans(|| served.scrape(), 2);
        let status = served.status();
        let listener = listener_8080(&status);
        let want = expected_sources(&caps);
        if want.contains(&("owners", false)) {
            assert_eq!(
                listener["process"],
                Value::Null,
                "with {caps:?}: {listener}"
            );
            assert_eq!(listener["pid"], Value::Null, "with {caps:?}: {listener}");
        } else {
            assert_eq!(
                listener["pid"],
                std::process::id(),
                "with {caps:?}: {listener}"
            );
        }
        // The missing source says so; the socket table, the probes and
        // the diagnosis (listener_8080: ok) work on.
        assert_sources(&served, &status, &want);
    }
}
