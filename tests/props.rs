//! Property tests: whatever comes from outside — the netlink and /proc
//! parsers' bytes, the web config, the TOML config, a peer's JSON answer, a
//! batch request — is parsed to a value or an error, never a panic. (The
//! query string, targets and `Authorization` headers are held to the same
//! in `src/web/probe_server.rs`, where their parsers live.)

use std::collections::HashMap;

use portsight::config::{Config, Protocol};
use portsight::engine::watch::parse_port_range;
use portsight::peer::wire::{BatchRequest, BatchResponse};
use portsight::sockets::{Family, netlink, process, procfs};
use proptest::prelude::*;

/// A netlink message header (length, type, flags, sequence, pid) of a type
/// the parser takes apart, then whatever follows.
fn netlink_bytes() -> impl Strategy<Value = Vec<u8>> {
    let kinds = prop::sample::select(vec![1u16, 2, 3, 20, 0xffff]);
    (
        prop::collection::vec((0u32..600, kinds, any::<u16>()), 1..4),
        prop::collection::vec(any::<u8>(), 0..400),
    )
        .prop_map(|(headers, tail)| {
            let mut out = Vec::new();
            for (len, kind, flags) in headers {
                out.extend_from_slice(&len.to_ne_bytes());
                out.extend_from_slice(&kind.to_ne_bytes());
                out.extend_from_slice(&flags.to_ne_bytes());
                out.extend_from_slice(&[0; 8]);
                out.extend_from_slice(&tail);
            }
            out
        })
}

/// Rows in the shape of /proc/net/tcp, with fields drawn from odd values.
fn proc_net_tcp() -> impl Strategy<Value = String> {
    let field = prop::sample::select(vec![
        "0:",
        "sl",
        "0100007F:1F90",
        "00000000:0050",
        "0A",
        "01",
        "zz:zz",
        ":",
        "",
        "00000000000000000000000001000000:1F90",
        "00000000:00000000",
        "-1",
        "4294967296",
        "18446744073709551616",
        "0100007F",
        "FFFFFFFF:FFFFF",
        "0",
        "12345",
    ]);
    prop::collection::vec(prop::collection::vec(field, 0..14), 0..6).prop_map(|rows| {
        let mut text = String::from("  sl  local_address rem_address   st\n");
        for r in rows {
            text.push_str(&r.join(" "));
            text.push('\n');
        }
        text
    })
}

/// TOML built from the config's own sections and keys with odd values.
fn config_toml() -> impl Strategy<Value = String> {
    let section = prop::sample::select(vec![
        "web",
        "scan",
        "probe",
        "vantage",
        "discover",
        "diagnosis",
        "peers",
        "probe_server",
        "[port]",
        "[peer]",
        "nope",
    ]);
    let key = prop::sample::select(vec![
        "listen_address",
        "enable_lifecycle",
        "config_file",
        "interval",
        "proc_root",
        "timeout",
        "concurrency",
        "loopback",
        "interfaces",
        "addresses",
        "external_addresses",
        "enabled",
        "forget_after",
        "min_age",
        "max_ports",
        "transient_window",
        "dns",
        "dns_port",
        "fanout",
        "token_file",
        "identity",
        "allow",
        "rate_limit",
        "burst",
        "port",
        "name",
        "expect",
        "url",
        "x",
    ]);
    let value = prop::sample::select(vec![
        "\"1s\"",
        "\"0s\"",
        "\"8d\"",
        "\"often\"",
        "-1",
        "0",
        "1",
        "65536",
        "99999999999999999999",
        "1e400",
        "nan",
        "inf",
        "-0.0",
        "true",
        "\"\"",
        "[]",
        "{}",
        "[\"::\"]",
        "\":0\"",
        "\"[::1]:99999\"",
        "\"10.0.0.0/33\"",
        "[\"10.0.0.0/8:0-0\"]",
        "[\"255.255.255.255/0\"]",
        "\"http://[::1]:1\"",
        "\"ftp://x\"",
        "\"auto\"",
        "\"closed\"",
        "\"/dev/null\"",
        "\"\\u0000\"",
    ]);
    prop::collection::vec((section, prop::collection::vec((key, value), 0..5)), 0..5).prop_map(
        |tables| {
            let mut text = String::new();
            for (section, pairs) in tables {
                text.push_str(&format!("[{section}]\n"));
                for (k, v) in pairs {
                    text.push_str(&format!("{k} = {v}\n"));
                }
            }
            text
        },
    )
}

/// YAML in the shape of exporter-toolkit's web config, with odd values.
fn web_yaml() -> impl Strategy<Value = String> {
    let line = prop::sample::select(vec![
        "tls_server_config:",
        "  cert_file: x.crt",
        "  key_file: /dev/null",
        "  cert_file: ~",
        "basic_auth_users:",
        "  alice: $2y$10$abc",
        "  bob: ''",
        "  : x",
        "http_server_config:",
        "  http2: true",
        "- a",
        "&a [*a]",
        "!!binary AAAA",
        "{",
        "key: [1, 2",
        "tls_server_config: []",
        "basic_auth_users: 7",
        "\t",
        "---",
        "...",
    ]);
    prop::collection::vec(line, 0..8).prop_map(|l| l.join("\n"))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn netlink_replies_never_panic(bytes in netlink_bytes()) {
        for protocol in [Protocol::Tcp, Protocol::Udp] {
            let _ = netlink::parse_messages(&bytes, protocol);
        }
    }

    #[test]
    fn random_bytes_as_netlink_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        for protocol in [Protocol::Tcp, Protocol::Udp] {
            let _ = netlink::parse_messages(&bytes, protocol);
        }
    }

    #[test]
    fn proc_net_tcp_never_panics(text in proc_net_tcp(), any_text in ".{0,200}") {
        for family in [Family::Ipv4, Family::Ipv6] {
            let _ = procfs::parse_proc_net_tcp(&text, family, "tcp");
            let _ = procfs::parse_proc_net_tcp(&any_text, family, "tcp");
        }
    }

    #[test]
    fn proc_links_and_ranges_never_panic(text in ".{0,40}") {
        let _ = process::parse_socket_link(&text);
        let _ = parse_port_range(&text);
    }

    #[test]
    fn the_config_file_never_panics(text in config_toml(), any_text in ".{0,200}") {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.toml");
        for t in [&text, &any_text] {
            std::fs::write(&path, t).unwrap();
            let _ = Config::load_with_env(Some(&path), HashMap::new());
            let _ = Config::reload(Some(&path));
        }
    }

    #[test]
    fn environment_overrides_never_panic(key in config_key(), value in ".{0,20}") {
        let env = HashMap::from([(key, value)]);
        let _ = Config::load_with_env(None, env);
    }

    #[test]
    fn the_web_config_never_panics(text in web_yaml(), any_text in ".{0,200}") {
        let _ = portsight::web::parse("web.yml", &text);
        let _ = portsight::web::parse("web.yml", &any_text);
    }

    #[test]
    fn json_from_peers_and_clients_never_panics(text in json_text()) {
        let _ = serde_json::from_str::<BatchRequest>(&text);
        let _ = serde_json::from_str::<BatchResponse>(&text);
    }
}

fn config_key() -> impl Strategy<Value = String> {
    "PORTSIGHT__[A-Z_]{0,12}(__[A-Z_]{0,16})?"
}

/// JSON in the shape of a batch request or answer, with odd values.
fn json_text() -> impl Strategy<Value = String> {
    let value = prop::sample::select(vec![
        "\"10.77.0.1:80\"",
        "\"[::1]:0\"",
        "\"2s\"",
        "\"-1s\"",
        "\"999999999999d\"",
        "1e999",
        "-0",
        "null",
        "true",
        "[]",
        "{}",
        "\"\\ud800\"",
        "\"success\"",
        "\"nope\"",
        "18446744073709551616",
    ]);
    let key = prop::sample::select(vec![
        "targets",
        "timeout",
        "results",
        "target",
        "success",
        "outcome",
        "duration_seconds",
        "error",
        "x",
    ]);
    prop::collection::vec(
        (key, prop::collection::vec(value, 0..3), any::<bool>()),
        0..5,
    )
    .prop_map(|fields| {
        let body: Vec<String> = fields
            .into_iter()
            .map(|(k, vs, list)| {
                if list {
                    format!("\"{k}\": [{}]", vs.join(", "))
                } else {
                    format!("\"{k}\": {}", vs.first().copied().unwrap_or("null"))
                }
            })
            .collect();
        format!("{{{}}}", body.join(", "))
    })
}
