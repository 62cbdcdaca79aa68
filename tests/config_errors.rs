//! Every bad-config fixture fails with its exact message: error messages are
//! part of the interface.

use std::collections::HashMap;
use std::path::Path;

use portsight::config::Config;

const CASES: &[(&str, &str)] = &[
    (
        "invalid-discover-max-ports.toml",
        "discover.max_ports: must be 1 to 65535",
    ),
    (
        "invalid-discover-min-age.toml",
        "discover.min_age: must be at most 7days",
    ),
    (
        "invalid-concurrency-huge.toml",
        "probe.concurrency: must be 1 to 65536",
    ),
    (
        "invalid-external-address.toml",
        "vantage.external_addresses: 0.0.0.0 is not a unicast address",
    ),
    (
        "invalid-interval-huge.toml",
        "probe.interval: must be at most 7days",
    ),
    (
        "invalid-bool.toml",
        "discover.enabled: invalid type: string \"yes please\", expected a boolean",
    ),
    (
        "invalid-concurrency.toml",
        "probe.concurrency: invalid type: 64-bit integer `-1`, expected an unsigned 64 bit or less integer",
    ),
    (
        "invalid-duration.toml",
        "probe.interval: invalid value: string \"fast\", expected a duration",
    ),
    (
        "invalid-expect.toml",
        "port[0].expect: unknown value \"open\", expected one of public, internal, local, closed, auto",
    ),
    (
        "invalid-listen-address.toml",
        "web.listen_address: invalid address \"localhost:80\": want IP:PORT, [IPv6]:PORT or :PORT",
    ),
    (
        "invalid-peer-token.toml",
        "peer[0].token_file: required (or set peers.token_file)",
    ),
    (
        "invalid-peer-url.toml",
        "peer[0].url: invalid URL \"ftp://10.77.0.9:10917\": want http://HOST:PORT or https://HOST:PORT",
    ),
    (
        "invalid-peer-ca-on-http.toml",
        "peer[0].ca_file: only for https peers; the url is http",
    ),
    (
        "invalid-peer-server-name.toml",
        "peer[0].server_name: \"not a name!\" is not a DNS name or IP address",
    ),
    (
        "invalid-peers-scheme.toml",
        "peers.scheme: unknown value \"ftp\", expected one of http, https",
    ),
    (
        "invalid-port-duplicate.toml",
        "port[1].port: port 80 is already listed in port[0]",
    ),
    (
        "invalid-port-duplicate-udp.toml",
        "port[2].port: port 53/udp is already listed in port[0]",
    ),
    (
        "invalid-protocol.toml",
        "port[0].protocol: unknown value \"sctp\", expected one of tcp, udp",
    ),
    (
        "invalid-payload-hex.toml",
        "port[0].payload: \"hex:0g\": \"0g\" is not a hex byte",
    ),
    (
        "invalid-payload-tcp.toml",
        "port[0].payload: only a UDP port sends a payload; set protocol = \"udp\" or remove it",
    ),
    (
        "invalid-port-missing.toml",
        "port[0].port: missing, and it has no default",
    ),
    (
        "invalid-port-range.toml",
        "port[0].port: must be 1 to 65535, got 70000",
    ),
    (
        "invalid-probe-server-allow.toml",
        "probe_server.allow[0]: \"10.0.0.1/8:80\": host bits are set; did you mean 10.0.0.0/8?",
    ),
    (
        "invalid-probe-server-no-token.toml",
        "probe_server.token_file: required when probe_server.enabled: /probe is never served without a token",
    ),
    (
        "invalid-syntax.toml",
        "line 1, column 6: unclosed table, expected `]`",
    ),
    (
        "invalid-timeout-longer-than-interval.toml",
        "probe.timeout: must be shorter than probe.interval (2s >= 1s)",
    ),
    (
        "invalid-timeout-equal-to-interval.toml",
        "probe.timeout: must be shorter than probe.interval (2s >= 2s)",
    ),
    (
        "invalid-unknown-key.toml",
        "probe.intervall: unknown field `intervall`, expected one of `interval`, `timeout`, `concurrency`",
    ),
    (
        "invalid-unknown-section.toml",
        "colour: unknown field `colour`, expected one of `web`, `scan`, `probe`, `vantage`, `discover`, `diagnosis`, `port`, `peer`, `peers`, `probe_server`",
    ),
    (
        "invalid-vantage-address.toml",
        "vantage.addresses[0]: invalid IP address syntax",
    ),
];

fn fixture(name: &str) -> String {
    format!("tests/fixtures/config/{name}")
}

#[test]
fn each_invalid_fixture_has_its_exact_message() {
    for (file, want) in CASES {
        let path = fixture(file);
        let err = Config::load_with_env(Some(Path::new(&path)), HashMap::new()).expect_err(file);
        assert_eq!(err.to_string(), format!("{path}: {want}"), "{file}");
    }
}

#[test]
fn every_invalid_fixture_is_covered() {
    let mut on_disk: Vec<String> = std::fs::read_dir("tests/fixtures/config")
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with("invalid-"))
        .collect();
    on_disk.sort();
    let mut covered: Vec<String> = CASES.iter().map(|(f, _)| f.to_string()).collect();
    covered.sort();
    assert_eq!(on_disk, covered);
}

#[test]
fn a_bad_environment_value_names_the_variable() {
    let env = HashMap::from([("PORTSIGHT__PROBE__TIMEOUT".to_string(), "soon".to_string())]);
    let err = Config::load_with_env(None, env).unwrap_err();
    assert_eq!(
        err.to_string(),
        "environment PORTSIGHT__PROBE__TIMEOUT: probe.timeout: invalid value: string \"soon\", expected a duration"
    );
}

#[test]
fn a_missing_file_is_named() {
    let err =
        Config::load_with_env(Some(Path::new("/nonexistent/p.toml")), HashMap::new()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "/nonexistent/p.toml: cannot read: No such file or directory (os error 2)"
    );
}

#[test]
fn a_valid_file_overrides_the_default() {
    let dir = std::env::temp_dir().join(format!("portsight-cfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("ok.toml");
    std::fs::write(
        &path,
        "[probe]\ninterval = \"30s\"\n[[port]]\nport = 8080\nname = \"api\"\nexpect = \"internal\"\n",
    )
    .unwrap();
    let c = Config::load_with_env(Some(&path), HashMap::new()).unwrap();
    assert_eq!(c.probe.interval.as_secs(), 30);
    assert_eq!(
        c.probe.timeout.as_secs(),
        2,
        "untouched keys keep their default"
    );
    assert_eq!(c.ports.len(), 1);
    assert_eq!(c.ports[0].name, "api");
    assert_eq!(c.ports[0].expect, portsight::config::Expect::Internal);
    assert_eq!(c.ports[0].protocol, portsight::config::Protocol::Tcp);
    std::fs::write(
        &path,
        "[[port]]\nport = 53\nprotocol = \"udp\"\npayload = \"hex:00 01\"\n[[port]]\nport = 53\n",
    )
    .unwrap();
    let c = Config::load_with_env(Some(&path), HashMap::new()).unwrap();
    assert_eq!(c.ports[0].protocol, portsight::config::Protocol::Udp);
    assert_eq!(&c.ports[0].payload.bytes()[..], [0, 1]);
    assert_eq!(c.ports[1].protocol, portsight::config::Protocol::Tcp);
    std::fs::remove_dir_all(&dir).unwrap();
}
