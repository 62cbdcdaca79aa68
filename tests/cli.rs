//! The `portsight` command line: config subcommands, exit codes, and errors
//! that name the file, the key and the reason.

use std::process::{Command, Output};

fn portsight(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_portsight"))
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("run portsight")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn config_default_prints_a_config_that_checks() {
    let o = portsight(&["config", "default"]);
    assert!(o.status.success());
    let text = String::from_utf8(o.stdout).unwrap();
    assert!(text.contains("listen_address = \":10917\""));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("default.toml");
    std::fs::write(&path, &text).unwrap();
    let o = portsight(&["config", "check", path.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        format!("{}: OK\n", path.display())
    );
}

#[test]
fn config_check_exits_2_naming_file_key_and_reason() {
    let o = portsight(&[
        "config",
        "check",
        "tests/fixtures/config/invalid-duration.toml",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(
        stderr(&o),
        "portsight: bad config: tests/fixtures/config/invalid-duration.toml: probe.interval: invalid value: string \"fast\", expected a duration\n"
    );
}

#[test]
fn serve_with_a_bad_config_exits_2_before_listening() {
    let o = portsight(&[
        "serve",
        "--config",
        "tests/fixtures/config/invalid-port-duplicate.toml",
        "--web.listen-address",
        "127.0.0.1:0",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("tests/fixtures/config/invalid-port-duplicate.toml: port[1].port: port 80 is already listed in port[0]"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn serve_with_a_bad_listen_address_exits_2() {
    let o = portsight(&["serve", "--web.listen-address", "nowhere"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("--web.listen-address: invalid address \"nowhere\""),
        "{}",
        stderr(&o)
    );
}

#[test]
fn a_bad_environment_override_exits_2_naming_the_variable() {
    let o = Command::new(env!("CARGO_BIN_EXE_portsight"))
        .args(["serve", "--web.listen-address", "127.0.0.1:0"])
        .env("PORTSIGHT__SCAN__INTERVAL", "often")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains(
            "environment PORTSIGHT__SCAN__INTERVAL: scan.interval: invalid value: string \"often\""
        ),
        "{}",
        stderr(&o)
    );
}

#[test]
fn usage_errors_exit_2() {
    assert_eq!(
        portsight(&["serve", "--no-such-flag"]).status.code(),
        Some(2)
    );
    assert_eq!(portsight(&["frobnicate"]).status.code(), Some(2));
    assert_eq!(portsight(&["--help"]).status.code(), Some(0));
    assert_eq!(portsight(&["--version"]).status.code(), Some(0));
}
