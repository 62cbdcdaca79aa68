//! UDP, for real: bound UDP sockets in a test host's own network namespace,
//! probed with datagrams by `portsight check` and `portsight serve` running
//! in that namespace. Needs root (and nftables for the REJECT case); skips
//! without them, fails in CI.

mod support;

use std::net::{SocketAddr, UdpSocket};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use serde_json::Value;
use support::netns::{self, Host};
use support::{metric, needs};

const PORT: u16 = 5300;
const WEB: &str = "127.0.0.1:10917";

/// Scans every 200 ms, probes every 2 s with a 300 ms timeout; watches
/// `PORT/udp` (with `extra` in its `[[port]]` table), discovery off.
fn config(host: &Host, port: u16, extra: &str) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(format!("{}.toml", host.name));
    std::fs::write(
        &path,
        format!(
            "[scan]\ninterval = \"200ms\"\n[probe]\ninterval = \"2s\"\ntimeout = \"300ms\"\n\
             [discover]\nenabled = false\n\
             [[port]]\nport = {port}\nprotocol = \"udp\"\nname = \"svc\"\n{extra}\n"
        ),
    )
    .unwrap();
    let path = path.to_string_lossy().into_owned();
    (dir, path)
}

/// A UDP socket bound in `host` (it stays in that namespace).
fn bind(host: &Host, addr: &str) -> UdpSocket {
    let addr: SocketAddr = addr.parse().unwrap();
    host.run(|| UdpSocket::bind(addr))
        .unwrap_or_else(|e| panic!("bind {addr}: {e}"))
}

/// An IPv6 UDP socket with `IPV6_V6ONLY` set, bound in `host`.
fn bind_v6only(host: &Host, addr: &str) -> UdpSocket {
    use socket2::{Domain, Socket, Type};
    let addr: SocketAddr = addr.parse().unwrap();
    host.run(|| {
        let s = Socket::new(Domain::IPV6, Type::DGRAM, None)?;
        s.set_only_v6(true)?;
        s.bind(&addr.into())?;
        Ok::<_, std::io::Error>(UdpSocket::from(s))
    })
    .unwrap_or_else(|e| panic!("bind {addr}: {e}"))
}

/// Echoes every datagram of its socket back, until dropped.
struct Echo {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

fn echo(socket: UdpSocket) -> Echo {
    socket
        .set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let thread = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while !stop.load(Ordering::Acquire) {
                if let Ok((n, from)) = socket.recv_from(&mut buf) {
                    let _ = socket.send_to(&buf[..n], from);
                }
            }
        })
    };
    Echo {
        stop,
        thread: Some(thread),
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// `check --json --config cfg PORT/udp`: exit code and the port's entry.
fn check(host: &Host, cfg: &str, port: u16) -> (i32, Value) {
    let (code, json) = host.check(&["--config", cfg, &format!("{port}/udp")]);
    let ports = json["ports"].as_array().cloned().unwrap_or_default();
    assert_eq!(ports.len(), 1, "{json:#}");
    assert_eq!(ports[0]["protocol"], "udp", "{json:#}");
    (code, ports[0].clone())
}

fn cause(port: &Value) -> &str {
    port["diagnosis"]["cause"].as_str().unwrap_or_default()
}

fn outcomes(port: &Value) -> Vec<(String, String)> {
    port["probes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let s = |k: &str| p[k].as_str().unwrap_or_default().to_string();
            (s("target"), s("outcome"))
        })
        .collect()
}

/// `serve` in `host` until /metrics says `cause` for `port`/udp.
fn assert_served(host: &Host, cfg: &str, port: u16, cause: &str) {
    let served = host.serve(&["--config", cfg, "--web.listen-address", WEB]);
    served.within_scans(40, &format!("/metrics to say {cause}"), |m| {
        let now = metric(m, "portsight_port_diagnosis")
            .label("port", port)
            .label("protocol", "udp")
            .state("cause");
        if now.as_deref() == Some(cause) {
            Ok(())
        } else {
            Err(format!("{now:?}"))
        }
    });
    let m = served.scrape();
    assert!(
        metric(&m, "portsight_listener_accept_queue_length")
            .label("protocol", "udp")
            .all()
            .is_empty(),
        "the accept queue families are TCP-only"
    );
}

#[test]
fn nothing_bound_is_not_listening() {
    needs!(netns::unavailable());
    let host = Host::with_interfaces("udp-nl");
    let (_d, cfg) = config(&host, PORT, "");
    let (code, port) = check(&host, &cfg, PORT);
    assert_eq!((code, cause(&port)), (1, "not_listening"), "{port:#}");
    assert!(
        outcomes(&port).iter().all(|(_, o)| o == "refused"),
        "ICMP port-unreachable from every address: {port:#}"
    );
    assert!(
        port["diagnosis"]["summary"]
            .as_str()
            .unwrap()
            .starts_with("nothing listens on port 5300/udp; 127.0.0.1:5300"),
        "{port:#}"
    );
}

#[test]
fn bound_to_both_loopbacks_is_loopback_only() {
    needs!(netns::unavailable());
    let host = Host::with_interfaces("udp-lo");
    let _v4 = bind(&host, "127.0.0.1:5300");
    let _v6 = bind(&host, "[::1]:5300");
    let (_d, cfg) = config(&host, PORT, "");
    let (code, port) = check(&host, &cfg, PORT);
    assert_eq!((code, cause(&port)), (1, "loopback_only"), "{port:#}");
    let listeners = port["listeners"].as_array().unwrap();
    assert_eq!(listeners.len(), 2, "{port:#}");
    assert!(
        listeners
            .iter()
            .all(|l| l["scope"] == "loopback" && l["accept_queue_length"].is_null()),
        "{port:#}"
    );
    assert!(
        outcomes(&port)
            .iter()
            .any(|(t, o)| t == "10.77.0.1:5300" && o == "refused"),
        "{port:#}"
    );
}

#[test]
fn ipv4_wildcard_only_is_an_address_family_mismatch() {
    needs!(netns::unavailable());
    let host = Host::with_interfaces("udp-af");
    let _v4 = bind(&host, "0.0.0.0:5300");
    let (_d, cfg) = config(&host, PORT, "");
    let (code, port) = check(&host, &cfg, PORT);
    assert_eq!(
        (code, cause(&port)),
        (1, "address_family_mismatch"),
        "{port:#}"
    );
    let got = outcomes(&port);
    assert!(
        got.contains(&("[::1]:5300".into(), "refused".into())),
        "{got:?}"
    );
    assert!(
        got.contains(&("127.0.0.1:5300".into(), "timeout".into())),
        "a silent IPv4 socket: {got:?}"
    );
}

#[test]
fn a_silent_socket_on_both_families_is_ok() {
    needs!(netns::unavailable());
    let host = Host::with_interfaces("udp-ok");
    let v4 = bind(&host, "0.0.0.0:5300");
    let _v6 = bind_v6only(&host, "[::]:5300");
    let (_d, cfg) = config(&host, PORT, "");
    let (code, port) = check(&host, &cfg, PORT);
    assert_eq!((code, cause(&port)), (0, "ok"), "{port:#}");
    let got = outcomes(&port);
    assert_eq!(got.len(), 6, "loopback ×2, interfaces ×4: {got:?}");
    assert!(got.iter().all(|(_, o)| o == "timeout"), "{got:?}");
    // The probes were sent: empty datagrams arrived.
    v4.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 16];
    assert_eq!(v4.recv(&mut buf).unwrap(), 0, "an empty datagram");
    assert_served(&host, &cfg, PORT, "ok");
}

#[test]
fn an_echo_server_answers_every_probe_with_the_payload() {
    needs!(netns::unavailable());
    let host = Host::with_interfaces("udp-echo");
    let _echo = echo(bind(&host, "[::]:5300"));
    let (_d, cfg) = config(&host, PORT, "payload = \"hex:70 69 6e 67\"");
    let (code, port) = check(&host, &cfg, PORT);
    assert_eq!((code, cause(&port)), (0, "ok"), "{port:#}");
    let got = outcomes(&port);
    assert_eq!(got.len(), 6, "{got:?}");
    assert!(got.iter().all(|(_, o)| o == "success"), "{got:?}");
}

#[test]
fn an_nft_reject_on_the_interface_address_is_rejected() {
    needs!(netns::nft_unavailable());
    let host = Host::with_interfaces("udp-rej");
    let _echo = echo(bind(&host, "[::]:5300"));
    host.nft(
        "table inet fw {\n chain input {\n  type filter hook input priority 0; policy accept;\n  \
         ip daddr 10.77.0.1 udp dport 5300 reject\n }\n}\n",
    );
    let (_d, cfg) = config(&host, PORT, "payload = \"ping\"");
    let (code, port) = check(&host, &cfg, PORT);
    assert_eq!((code, cause(&port)), (1, "rejected"), "{port:#}");
    let got = outcomes(&port);
    assert!(
        got.contains(&("10.77.0.1:5300".into(), "refused".into())),
        "{got:?}"
    );
    assert!(
        got.contains(&("10.77.0.2:5300".into(), "success".into())),
        "{got:?}"
    );
    // The rule is named, matched as a UDP packet, and the fix speaks UDP.
    let d = &port["diagnosis"];
    let summary = d["summary"].as_str().unwrap();
    assert!(
        summary.contains("yet it was rejected by rule (inet fw input, handle ")
            && summary.contains("ip daddr 10.77.0.1 udp dport 5300 reject"),
        "{port:#}"
    );
    assert!(
        d["fix"]
            .as_str()
            .unwrap()
            .contains("or accept udp dport 5300 in chain inet fw input"),
        "{port:#}"
    );
    assert_eq!(d["firewall"][0]["chain"], "input", "{port:#}");
    assert_served(&host, &cfg, PORT, "rejected");
}

/// Discovery lists a UDP socket on an interface address, diagnosed from the
/// socket table: no datagram is sent to it.
#[test]
fn discovery_lists_a_udp_socket_on_an_interface_address_without_probing_it() {
    needs!(netns::unavailable());
    let host = Host::with_interfaces("udp-disc");
    let socket = bind(&host, "10.77.0.2:5301");
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("disc.toml");
    std::fs::write(&cfg, "[probe]\ntimeout = \"300ms\"\n").unwrap();
    let (_, json) = host.check(&["--config", cfg.to_str().unwrap()]);
    let ports = json["ports"].as_array().unwrap();
    let found: Vec<&Value> = ports
        .iter()
        .filter(|p| p["port"] == 5301 && p["protocol"] == "udp")
        .collect();
    assert_eq!(found.len(), 1, "{json:#}");
    let p = found[0];
    assert_eq!(p["origin"], "discovered", "{p:#}");
    assert_eq!(p["listeners"][0]["address"], "10.77.0.2", "{p:#}");
    assert_eq!(p["listeners"][0]["scope"], "private", "{p:#}");
    assert!(
        p["probes"].as_array().unwrap().is_empty(),
        "not probed: {p:#}"
    );
    assert!(
        ports
            .iter()
            .all(|q| !(q["port"] == 5301 && q["protocol"] == "tcp")),
        "no TCP port of that number: {json:#}"
    );
    socket.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 16];
    assert_eq!(
        socket.recv(&mut buf).map_err(|e| e.kind()),
        Err(std::io::ErrorKind::WouldBlock),
        "no datagram was sent to a discovered UDP port"
    );
}

/// `portsight check 53/udp` on a host whose resolver listens on 127.0.0.53
/// only: one line says so; the JSON, /metrics and `53/xyz` too.
#[test]
fn check_53_udp_names_a_stub_resolver_on_127_0_0_53() {
    needs!(netns::unavailable());
    let host = Host::with_interfaces("udp-53");
    let _resolver = echo(bind(&host, "127.0.0.53:53"));
    let out = Command::new("ip")
        .args(["netns", "exec", &host.name, env!("CARGO_BIN_EXE_portsight")])
        .args(["check", "53/udp"])
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    let row = text
        .lines()
        .find(|l| l.starts_with("53/udp "))
        .unwrap_or_else(|| panic!("a row for 53/udp: {text}"));
    assert!(row.contains("127.0.0.53"), "{row}");
    assert!(row.trim_end().ends_with("loopback_only"), "{row}");
    assert!(
        text.contains("listening on 127.0.0.53:53 (udp-") && text.contains(" only; 127.0.0.1:53"),
        "the summary names the bind address: {text}"
    );

    let bad = Command::new(env!("CARGO_BIN_EXE_portsight"))
        .args(["check", "53/xyz"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        err.contains("\"53/xyz\": unknown protocol \"xyz\", want PORT, PORT/tcp or PORT/udp"),
        "{err}"
    );

    let (_d, cfg) = config(&host, 53, "");
    assert_served(&host, &cfg, 53, "loopback_only");
}
