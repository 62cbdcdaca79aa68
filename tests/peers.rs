//! The outside view: two hosts in two namespaces joined by a veth pair, the
//! watched host (10.77.0.1) and an outside observer (10.77.0.2), each with a
//! real portsight. The observer serves /probe; the watched host asks it.
//! Needs root (and nftables for the firewall cases); fails in CI without.

mod support;

use std::io::ErrorKind;
use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

use nix::sys::signal::Signal;
use serde_json::Value;
use support::certs::Ca;
use support::netns::{self, Host, Served};
use support::{Sample, get, http_with, listen, metric, needs, parse_metrics, wait_for};

const TOKEN: &str = "s3cret-peer-token";
const INSIDE_WEB: &str = "127.0.0.1:10917";
const OUTSIDE_WEB: &str = "10.77.0.2:10917";

struct World {
    inside: Host,
    outside: Host,
    dir: tempfile::TempDir,
    observer: Option<Served>,
}

fn write(dir: &tempfile::TempDir, name: &str, text: &str) -> String {
    let path = dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    path.to_string_lossy().into_owned()
}

impl World {
    /// Both hosts, and the observer's portsight serving /probe for 10.77.0.0/24.
    fn new(tag: &str, server_extra: &str) -> World {
        let dir = tempfile::tempdir().unwrap();
        World::start(tag, server_extra, dir, &[])
    }

    /// As [`World::new`], the observer speaking HTTPS with a certificate
    /// for 10.77.0.2 and `observer.pstls.test` that `ca.crt` signs
    /// (`wrong-ca.crt` is another CA).
    fn tls(tag: &str) -> World {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::new("pstls peer CA");
        ca.write(&dir.path().join("ca.crt"));
        Ca::new("pstls wrong CA").write(&dir.path().join("wrong-ca.crt"));
        ca.issue(&["10.77.0.2", "observer.pstls.test"])
            .write(dir.path(), "observer");
        let web = write(
            &dir,
            "web.yml",
            "tls_server_config:\n  cert_file: observer.crt\n  key_file: observer.key\n",
        );
        World::start(tag, "", dir, &["--web.config.file", &web])
    }

    fn start(tag: &str, server_extra: &str, dir: tempfile::TempDir, args: &[&str]) -> World {
        let (inside, outside) = Host::pair(tag);
        let token = write(&dir, "token", &format!("{TOKEN}\n"));
        let cfg = write(
            &dir,
            "observer.toml",
            &format!(
                "[discover]\nenabled = false\n[probe_server]\nenabled = true\n\
                 allow = [\"10.77.0.0/24\"]\ntoken_file = \"{token}\"\n{server_extra}\n"
            ),
        );
        let mut observer_args = vec!["--config", &cfg, "--web.listen-address", OUTSIDE_WEB];
        observer_args.extend(args);
        let observer = outside.serve(&observer_args);
        World {
            inside,
            outside,
            dir,
            observer: Some(observer),
        }
    }

    fn token_file(&self) -> String {
        self.dir.path().join("token").to_string_lossy().into_owned()
    }

    /// The watched host's config: port 8080 with `expect`, and peer outside-1
    /// when `peer`.
    fn inside_config(&self, expect: &str, peer: bool) -> String {
        let file = if peer { "inside.toml" } else { "check.toml" };
        let peer = if peer {
            format!(
                "[[peer]]\nname = \"outside-1\"\nurl = \"http://{OUTSIDE_WEB}\"\ntoken_file = \"{}\"\n",
                self.token_file()
            )
        } else {
            String::new()
        };
        write(
            &self.dir,
            file,
            &format!(
                "[scan]\ninterval = \"200ms\"\n[probe]\ninterval = \"2s\"\ntimeout = \"500ms\"\n\
                 [discover]\nenabled = false\n[peers]\ntimeout = \"3s\"\n{peer}\
                 [[port]]\nport = 8080\nname = \"web\"\nexpect = \"{expect}\"\n"
            ),
        )
    }

    fn serve_inside(&self, expect: &str) -> Served {
        let cfg = self.inside_config(expect, true);
        self.inside
            .serve(&["--config", &cfg, "--web.listen-address", INSIDE_WEB])
    }

    /// /metrics of the watched host's portsight (whichever runs there).
    fn scrape_inside(&self) -> Vec<Sample> {
        self.inside
            .run(|| parse_metrics(&get(INSIDE_WEB.parse().unwrap(), "/metrics").body))
    }

    fn cause(&self) -> Option<String> {
        let m = self.scrape_inside();
        metric(&m, "portsight_port_diagnosis")
            .label("port", 8080)
            .state("cause")
    }

    fn status(&self) -> Value {
        let body = self
            .inside
            .run(|| get(INSIDE_WEB.parse().unwrap(), "/api/v1/status").body);
        serde_json::from_str(&body).unwrap()
    }

    /// The port's diagnosis summary now.
    fn summary(&self) -> String {
        self.status()["ports"][0]["diagnosis"]["summary"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    fn wait_cause(&self, cause: &str) -> Value {
        wait_for(Duration::from_secs(20), &format!("cause {cause}"), || {
            let now = self.cause();
            if now.as_deref() == Some(cause) {
                Ok(())
            } else {
                Err(format!("{now:?}: {}", self.status()))
            }
        });
        self.status()["ports"][0]["diagnosis"].clone()
    }

    /// Waits for `ok` with the outside view measured: a round publishes its
    /// local results before the peers answer, so `ok` alone may come first.
    fn wait_ok_from_outside(&self) -> Value {
        wait_for(Duration::from_secs(20), "ok, measured from outside", || {
            let d = self.status()["ports"][0]["diagnosis"].clone();
            let summary = d["summary"].as_str().unwrap_or_default().to_string();
            if d["cause"] == "ok" && summary.contains("external 1/1 answered") {
                Ok(())
            } else {
                Err(format!("{}: {summary}", d["cause"]))
            }
        });
        self.status()["ports"][0]["diagnosis"].clone()
    }

    /// `portsight check --json --peer … 8080` on the watched host, with a
    /// config that lists no peer.
    fn check(&self, expect: &str) -> (i32, Value) {
        let cfg = self.inside_config(expect, false);
        let (code, json) = self.inside.check(&[
            "--config",
            &cfg,
            "8080",
            "--peer",
            &format!("http://{OUTSIDE_WEB}"),
            "--peer.token-file",
            &self.token_file(),
        ]);
        (code, json["ports"][0].clone())
    }

    /// A request to the observer's /probe from the watched host.
    fn probe_request(&self, path: &str, token: Option<&str>) -> support::HttpResponse {
        let auth = token.map(|t| format!("Bearer {t}"));
        let headers: Vec<(&str, &str)> =
            auth.iter().map(|a| ("Authorization", a.as_str())).collect();
        self.inside
            .run(|| http_with("GET", OUTSIDE_WEB.parse().unwrap(), path, &headers, ""))
    }

    fn listen_inside(&self) -> TcpListener {
        listen("0.0.0.0:8080").bind_in(&self.inside)
    }

    fn firewall_inside(&self, verdict: &str) {
        self.inside.nft(&format!(
            "table inet portsight_test {{\n chain input {{\n  type filter hook input priority 0;\n  \
             ip saddr 10.77.0.2 tcp dport 8080 {verdict}\n }}\n}}\n"
        ));
    }
}

fn peer_up(m: &[Sample], peer: &str) -> Option<f64> {
    metric(m, "portsight_peer_up").label("peer", peer).value()
}

/// The watched host's config for peers `peers` (written as TOML).
fn peers_config(w: &World, file: &str, peers: &str) -> String {
    write(
        &w.dir,
        file,
        &format!(
            "[scan]\ninterval = \"200ms\"\n[probe]\ninterval = \"2s\"\ntimeout = \"500ms\"\n\
             [discover]\nenabled = false\n{peers}\n[[port]]\nport = 8080\nexpect = \"public\"\n"
        ),
    )
}

/// Waits until `portsight_peer_up` is `want` for each peer.
fn wait_peers_up(w: &World, want: &[(&str, f64)]) {
    wait_for(Duration::from_secs(30), "peer_up of each peer", || {
        let m = w.scrape_inside();
        let got: Vec<(&str, Option<f64>)> =
            want.iter().map(|(p, _)| (*p, peer_up(&m, p))).collect();
        let expected: Vec<(&str, Option<f64>)> = want.iter().map(|(p, v)| (*p, Some(*v))).collect();
        if got == expected {
            Ok(())
        } else {
            Err(format!("{got:?}"))
        }
    });
}

fn external(m: &[Sample], what: &str) -> Option<f64> {
    metric(m, what)
        .label("vantage", "external")
        .label("source", "outside-1")
        .label("target", "10.77.0.1:8080")
        .value()
}

#[test]
fn reachable_from_outside_is_ok() {
    needs!(netns::unavailable());
    let w = World::new("pok", "");
    let _l = w.listen_inside();
    let _p = w.serve_inside("public");
    let d = w.wait_ok_from_outside();
    assert_eq!(
        d["summary"],
        "reachable as expected (public): loopback 1/1 answered, interface 1/1 answered, external 1/1 answered"
    );
    let m = w.scrape_inside();
    assert_eq!(external(&m, "portsight_probe_success"), Some(1.0));
    assert_eq!(
        metric(&m, "portsight_peer_up")
            .label("peer", "outside-1")
            .value(),
        Some(1.0)
    );
    assert!(
        metric(&m, "portsight_cycle_duration_seconds_count")
            .label("stage", "peer")
            .value()
            >= Some(1.0)
    );

    let (code, port) = w.check("public");
    assert_eq!(
        (code, port["diagnosis"]["cause"].as_str()),
        (0, Some("ok")),
        "{port:#}"
    );
    let ext: Vec<&Value> = port["probes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["vantage"] == "external")
        .collect();
    assert_eq!(ext.len(), 1, "{port:#}");
    assert_eq!(ext[0]["source"], "10.77.0.2:10917");
    assert_eq!(ext[0]["outcome"], "success");
}

#[test]
fn peers_found_through_dns_are_asked_except_this_host() {
    needs!(netns::unavailable());
    let w = World::new("pdns", "");
    // The name resolves to the observer and to the watched host itself.
    w.inside.hosts_file(
        "127.0.0.1 localhost\n10.77.0.2 observers.portsight.test\n10.77.0.1 observers.portsight.test\n",
    );
    let _l = w.listen_inside();
    let cfg = write(
        &w.dir,
        "dns.toml",
        &format!(
            "[scan]\ninterval = \"200ms\"\n[probe]\ninterval = \"2s\"\ntimeout = \"500ms\"\n\
             [discover]\nenabled = false\n[peers]\ndns = \"observers.portsight.test\"\n\
             token_file = \"{}\"\n[[port]]\nport = 8080\nexpect = \"public\"\n",
            w.token_file()
        ),
    );
    let _p = w
        .inside
        .serve(&["--config", &cfg, "--web.listen-address", INSIDE_WEB]);
    w.wait_ok_from_outside();
    let m = w.scrape_inside();
    assert_eq!(
        metric(&m, "portsight_peer_up")
            .label("peer", "10.77.0.2")
            .value(),
        Some(1.0)
    );
    assert_eq!(
        metric(&m, "portsight_peer_up").all().len(),
        1,
        "this host's own address is not a peer: {:?}",
        metric(&m, "portsight_peer_up").all()
    );
    assert_eq!(
        metric(&m, "portsight_probe_success")
            .label("vantage", "external")
            .label("source", "10.77.0.2")
            .label("target", "10.77.0.1:8080")
            .value(),
        Some(1.0)
    );
}

#[test]
fn dropped_from_outside_is_filtered() {
    needs!(netns::nft_unavailable());
    let w = World::new("pdr", "");
    let _l = w.listen_inside();
    w.firewall_inside("drop");
    let _p = w.serve_inside("public");
    let d = w.wait_cause("filtered");
    assert_eq!(
        d["summary"],
        "10.77.0.1:8080 timed out from the external vantage while 127.0.0.1:8080 and 10.77.0.1:8080 answered: it was perhaps dropped by rule (inet portsight_test input, handle 2: ip saddr 10.77.0.2 tcp dport 8080 drop) (it may match: ip saddr of the packet is not known here)"
    );
    assert_eq!(d["firewall"][0]["handle"], 2, "{d}");
    assert_eq!(
        external(&w.scrape_inside(), "portsight_probe_success"),
        Some(0.0)
    );
    let (code, port) = w.check("public");
    assert_eq!(
        (code, port["diagnosis"]["cause"].as_str()),
        (1, Some("filtered"))
    );
}

#[test]
fn dropped_on_the_path_is_said_to_be_off_this_host() {
    needs!(netns::nft_unavailable());
    let w = World::new("ppa", "");
    let _l = w.listen_inside();
    // The block is between the hosts (here: the observer's own output),
    // not in the watched host's firewall, which has a table with no rule
    // for the port.
    w.inside.nft(
        "table inet portsight_test {\n chain input {\n  type filter hook input priority 0;\n  \
         tcp dport 22 drop\n }\n}\n",
    );
    w.outside.nft(
        "table inet portsight_test {\n chain output {\n  type filter hook output priority 0;\n  \
         ip daddr 10.77.0.1 tcp dport 8080 drop\n }\n}\n",
    );
    let _p = w.serve_inside("public");
    let d = w.wait_cause("filtered");
    assert_eq!(
        d["summary"],
        "10.77.0.1:8080 timed out from the external vantage while 127.0.0.1:8080 and 10.77.0.1:8080 answered: it was dropped on the path, not on this host: no rule of this host's firewall matches the packet"
    );
    assert!(d["fix"].as_str().unwrap().contains("security group"), "{d}");
    assert_eq!(d["firewall"], serde_json::json!([]));
    let m = w.scrape_inside();
    assert_eq!(
        metric(&m, "portsight_source_up")
            .label("source", "netfilter")
            .value(),
        Some(1.0)
    );
}

#[test]
fn rejected_from_outside_is_rejected() {
    needs!(netns::nft_unavailable());
    let w = World::new("prj", "");
    let _l = w.listen_inside();
    w.firewall_inside("reject");
    let _p = w.serve_inside("public");
    let d = w.wait_cause("rejected");
    assert!(
        d["summary"]
            .as_str()
            .unwrap()
            .contains("yet it was perhaps rejected by rule (inet portsight_test input, handle 2: ip saddr 10.77.0.2 tcp dport 8080 reject"),
        "{d}"
    );
    let (_, port) = w.check("public");
    assert_eq!(port["diagnosis"]["cause"], "rejected");
}

#[test]
fn internal_port_open_to_the_outside_is_exposed() {
    needs!(netns::unavailable());
    let w = World::new("pex", "");
    let _l = w.listen_inside();
    let _p = w.serve_inside("internal");
    let d = w.wait_cause("exposed");
    assert_eq!(
        d["summary"],
        "the internal port 8080 answers from the external vantage at 10.77.0.1:8080"
    );
    let (code, port) = w.check("internal");
    assert_eq!(
        (code, port["diagnosis"]["cause"].as_str()),
        (1, Some("exposed"))
    );
}

#[test]
fn a_dead_peer_gives_no_evidence_and_no_false_cause() {
    needs!(netns::unavailable());
    let mut w = World::new("pdd", "");
    let _l = w.listen_inside();
    let _p = w.serve_inside("public");
    w.wait_ok_from_outside();
    assert_eq!(
        external(&w.scrape_inside(), "portsight_probe_success"),
        Some(1.0)
    );
    drop(w.observer.take());
    wait_for(Duration::from_secs(20), "peer_up 0", || {
        let m = w.scrape_inside();
        match metric(&m, "portsight_peer_up")
            .label("peer", "outside-1")
            .value()
        {
            Some(0.0) => Ok(()),
            v => Err(format!("{v:?}")),
        }
    });
    let m = w.scrape_inside();
    assert_eq!(
        external(&m, "portsight_probe_success"),
        None,
        "no external evidence is kept"
    );
    assert_eq!(w.cause().as_deref(), Some("ok"), "{}", w.status());
    let summary = w.summary();
    assert!(summary.ends_with("external not measured yet"), "{summary}");
}

#[test]
fn peers_removed_by_a_reload_leave_no_evidence_behind() {
    needs!(netns::unavailable());
    let w = World::new("prm", "");
    let _l = w.listen_inside();
    let p = w.serve_inside("public");
    w.wait_ok_from_outside();
    assert_eq!(
        external(&w.scrape_inside(), "portsight_probe_success"),
        Some(1.0)
    );
    // The same config without the peer, then SIGHUP.
    let text = std::fs::read_to_string(w.inside_config("public", false)).unwrap();
    write(&w.dir, "inside.toml", &text);
    p.signal(Signal::SIGHUP);
    wait_for(Duration::from_secs(20), "the external view to go", || {
        let m = w.scrape_inside();
        let ext = metric(&m, "portsight_probe_success")
            .label("vantage", "external")
            .all()
            .len();
        let up = metric(&m, "portsight_peer_up").all().len();
        if ext == 0 && up == 0 {
            Ok(())
        } else {
            Err(format!("{ext} external series, {up} peer_up series"))
        }
    });
    let summary = w.summary();
    assert!(summary.ends_with("external not measured"), "{summary}");
}

#[test]
fn probe_server_refuses_what_it_must() {
    needs!(netns::unavailable());
    let w = World::new("psr", "");
    // A listener outside the allow-list that counts its connections, and one inside it.
    let (forbidden, allowed) = w.outside.run(|| {
        let f = TcpListener::bind("127.0.0.1:9999").unwrap();
        let a = TcpListener::bind("10.77.0.2:9998").unwrap();
        f.set_nonblocking(true).unwrap();
        a.set_nonblocking(true).unwrap();
        (f, a)
    });
    let r = w.probe_request("/probe?target=127.0.0.1:9999", Some(TOKEN));
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(r.body, "not in probe_server.allow: 127.0.0.1:9999\n");
    assert_eq!(
        forbidden.accept().map(|_| ()).map_err(|e| e.kind()),
        Err(ErrorKind::WouldBlock),
        "no connection was made to the forbidden target"
    );
    // The same request to an allowed target does connect: the counter works.
    let r = w.probe_request("/probe?target=10.77.0.2:9998", Some(TOKEN));
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        allowed.accept().is_ok(),
        "the allowed target was connected to"
    );

    let r = w.probe_request("/probe?target=10.77.0.2:9998", None);
    assert_eq!(r.status, 401);
    assert_eq!(
        r.header("www-authenticate"),
        Some("Bearer realm=\"portsight\"")
    );
    assert!(r.body.starts_with("missing bearer token"), "{}", r.body);
    let r = w.probe_request("/probe?target=10.77.0.2:9998", Some("guess"));
    assert_eq!(r.status, 401);
    assert_eq!(r.body, "wrong bearer token\n");
    let r = w.probe_request("/probe?target=example.com:80", Some(TOKEN));
    assert_eq!(r.status, 400);
    assert!(r.body.contains("host names are not resolved"), "{}", r.body);
    let r = w.probe_request("/probe", Some(TOKEN));
    assert_eq!(r.status, 400);

    let m = w.observer.as_ref().unwrap().scrape();
    let count = |result: &str| {
        metric(&m, "portsight_probe_requests_total")
            .label("result", result)
            .value()
    };
    assert_eq!(count("denied"), Some(1.0));
    assert_eq!(count("served"), Some(1.0));
    assert_eq!(count("unauthorized"), Some(2.0));
    assert_eq!(count("invalid"), Some(2.0));
    assert_eq!(count("limited"), Some(0.0));
}

#[test]
fn probe_is_blackbox_compatible_and_json_and_batch() {
    needs!(netns::unavailable());
    let w = World::new("pbb", "");
    let _l = w.listen_inside();
    let r = w.probe_request("/probe?target=10.77.0.1:8080", Some(TOKEN));
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let m = parse_metrics(&r.body);
    assert_eq!(metric(&m, "probe_success").value(), Some(1.0));
    assert!(metric(&m, "probe_duration_seconds").value() > Some(0.0));
    assert_eq!(
        metric(&m, "portsight_probe_outcome")
            .label("outcome", "success")
            .value(),
        Some(1.0)
    );
    assert_eq!(metric(&m, "portsight_probe_outcome").all().len(), 5);

    let r = w.probe_request("/probe?target=10.77.0.1:8081&format=json", Some(TOKEN));
    let j: Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(j["target"], "10.77.0.1:8081");
    assert_eq!(j["outcome"], "refused");
    assert_eq!(j["success"], false);

    let post = |body: &str| {
        let auth = format!("Bearer {TOKEN}");
        w.inside.run(|| {
            http_with(
                "POST",
                OUTSIDE_WEB.parse().unwrap(),
                "/api/v1/probe",
                &[
                    ("Authorization", auth.as_str()),
                    ("Content-Type", "application/json"),
                ],
                body,
            )
        })
    };
    let r = post(r#"{"targets": ["10.77.0.1:8080", "10.77.0.1:8081"], "timeout": "1s"}"#);
    assert_eq!(r.status, 200, "{}", r.body);
    let j: Value = serde_json::from_str(&r.body).unwrap();
    let outcomes: Vec<&str> = j["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes, ["success", "refused"]);
    let r = post("{not json");
    assert_eq!(r.status, 400);
    assert!(r.body.starts_with("the body must be"), "{}", r.body);
    let r = post(r#"{"targets": ["10.77.0.1:8080", "192.0.2.1:80"]}"#);
    assert_eq!(r.status, 403);
    assert_eq!(r.body, "not in probe_server.allow: 192.0.2.1:80\n");
    let r = post(r#"{"targets": ["10.77.0.1:8080"], "timeout": "5m"}"#);
    assert_eq!(r.status, 400);
}

#[test]
fn probe_server_rate_limits_each_client() {
    needs!(netns::unavailable());
    let w = World::new("prl", "rate_limit = 0.01\nburst = 3\n");
    let codes: Vec<u16> = (0..5)
        .map(|_| {
            w.probe_request("/probe?target=10.77.0.2:1", Some(TOKEN))
                .status
        })
        .collect();
    assert_eq!(codes, [200, 200, 200, 429, 429]);
}

#[test]
fn probe_server_is_off_by_default() {
    needs!(netns::unavailable());
    let host = Host::new("poff");
    let p = host.serve(&["--web.listen-address", INSIDE_WEB]);
    let addr: SocketAddr = p.addr;
    let r = p.run(|| {
        http_with(
            "GET",
            addr,
            "/probe?target=127.0.0.1:1",
            &[("Authorization", "Bearer x")],
            "",
        )
    });
    assert_eq!(r.status, 404);
    assert_eq!(
        r.body,
        "the probe server is disabled (probe_server.enabled = false)\n"
    );
}

/// `check` asks the https peer at `url` too, trusting `ca` (`--peer.ca-file`).
fn check_asks_https_peer(w: &World, url: &str, ca: &str) {
    let check_cfg = w.inside_config("public", false);
    let (code, json) = w.inside.check(&[
        "--config",
        &check_cfg,
        "8080",
        "--peer",
        url,
        "--peer.token-file",
        &w.token_file(),
        "--peer.ca-file",
        ca,
    ]);
    let port = &json["ports"][0];
    assert_eq!(code, 0, "{port:#}");
    let external: Vec<&Value> = port["probes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["vantage"] == "external")
        .collect();
    assert_eq!(external.len(), 1, "{port:#}");
    assert_eq!(external[0]["outcome"], "success", "{port:#}");
}

#[test]
fn https_peers_are_asked_only_with_the_right_ca_and_name() {
    needs!(netns::unavailable());
    let w = World::tls("pstlsp");
    let _l = w.listen_inside();
    let dir = w.dir.path().display().to_string();
    let url = format!("https://{OUTSIDE_WEB}");
    let mut peers = format!("[peers]\nfanout = 5\ntoken_file = \"{}\"\n", w.token_file());
    for (name, url, ca, server_name) in [
        ("right-ca", url.as_str(), "ca.crt", ""),
        ("wrong-ca", &url, "wrong-ca.crt", ""),
        ("named", &url, "ca.crt", "observer.pstls.test"),
        ("misnamed", &url, "ca.crt", "other.pstls.test"),
        ("plain", &format!("http://{OUTSIDE_WEB}"), "", ""),
    ] {
        let tls = if ca.is_empty() {
            String::new()
        } else {
            format!("ca_file = \"{dir}/{ca}\"\nserver_name = \"{server_name}\"\n")
        };
        peers += &format!("[[peer]]\nname = \"{name}\"\nurl = \"{url}\"\n{tls}");
    }
    let cfg = peers_config(&w, "tls.toml", &peers);
    let p = w
        .inside
        .serve(&["--config", &cfg, "--web.listen-address", INSIDE_WEB]);
    wait_peers_up(
        &w,
        &[
            ("right-ca", 1.0),
            ("wrong-ca", 0.0),
            ("named", 1.0),
            ("misnamed", 0.0),
            ("plain", 0.0),
        ],
    );
    let m = w.scrape_inside();
    assert_eq!(
        metric(&m, "portsight_probe_success")
            .label("vantage", "external")
            .label("source", "right-ca")
            .label("target", "10.77.0.1:8080")
            .value(),
        Some(1.0)
    );
    check_asks_https_peer(&w, &url, &format!("{dir}/ca.crt"));

    let log = p.log_text();
    let said = |peer: &str, what: &str| {
        log.lines()
            .any(|l| l.contains(&format!("peer={peer} ")) && l.contains(what))
    };
    assert!(
        said("wrong-ca", "invalid peer certificate: UnknownIssuer"),
        "{log}"
    );
    assert!(said("misnamed", "not valid for name"), "{log}");
    // Only the http peer's token crosses the network in clear text, and that is said.
    let insecure: Vec<&str> = log.lines().filter(|l| l.contains("INSECURE")).collect();
    assert_eq!(insecure.len(), 1, "{log}");
    assert!(
        insecure[0].contains(
            "peer[4] (plain): its bearer token goes in clear text over http to 10.77.0.2:10917"
        ),
        "{log}"
    );
}

#[test]
fn dns_peers_over_https_verify_the_name_looked_up() {
    needs!(netns::unavailable());
    let w = World::tls("pstlsd");
    w.inside
        .hosts_file("127.0.0.1 localhost\n10.77.0.2 observer.pstls.test\n");
    let _l = w.listen_inside();
    let dir = w.dir.path().display().to_string();
    let dns = |extra: &str| {
        format!(
            "[peers]\ndns = \"observer.pstls.test\"\nscheme = \"https\"\n\
             ca_file = \"{dir}/ca.crt\"\ntoken_file = \"{}\"\n{extra}",
            w.token_file()
        )
    };
    let cfg = peers_config(&w, "dns.toml", &dns(""));
    let p = w
        .inside
        .serve(&["--config", &cfg, "--web.listen-address", INSIDE_WEB]);
    wait_peers_up(&w, &[("10.77.0.2", 1.0)]);
    assert!(!p.log_text().contains("INSECURE"), "{}", p.log_text());

    // A CA file that is not one: the reload fails, naming it, and the
    // running config goes on.
    let bad_ca = write(&w.dir, "bad-ca.crt", "not a certificate\n");
    peers_config(&w, "dns.toml", &dns("").replace("ca.crt", "bad-ca.crt"));
    p.signal(Signal::SIGHUP);
    wait_for(Duration::from_secs(20), "the reload to fail", || {
        let m = w.scrape_inside();
        match metric(&m, "portsight_config_last_reload_successful").value() {
            Some(0.0) => Ok(()),
            v => Err(format!("{v:?}")),
        }
    });
    assert!(
        p.log_text().contains(&format!(
            "{bad_ca}: peers.ca_file: no PEM certificate (BEGIN CERTIFICATE) in it"
        )),
        "{}",
        p.log_text()
    );
    // Two more rounds of asking peers, with the running config.
    let rounds = |m: &[Sample]| {
        metric(m, "portsight_cycle_duration_seconds_count")
            .label("stage", "peer")
            .value()
            .unwrap_or_default()
    };
    let before = rounds(&w.scrape_inside());
    wait_for(Duration::from_secs(20), "two more peer rounds", || {
        let now = rounds(&w.scrape_inside());
        if now >= before + 2.0 {
            Ok(())
        } else {
            Err(format!("{now} rounds"))
        }
    });
    assert_eq!(peer_up(&w.scrape_inside(), "10.77.0.2"), Some(1.0));

    // A name the certificate does not carry: refused.
    peers_config(&w, "dns.toml", &dns("server_name = \"other.pstls.test\"\n"));
    p.signal(Signal::SIGHUP);
    wait_peers_up(&w, &[("10.77.0.2", 0.0)]);
}

#[test]
fn a_bad_peer_ca_file_stops_serve_with_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let token = write(&dir, "token", "t\n");
    let ca = write(
        &dir,
        "ca.crt",
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    );
    for (ca_file, want) in [
        (
            ca.clone(),
            format!("{ca}: peer[0].ca_file: certificate 1: not a usable CA"),
        ),
        (
            format!("{ca}.missing"),
            format!(
                "{ca}.missing: peer[0].ca_file: cannot read the CA file: No such file or directory"
            ),
        ),
    ] {
        let cfg = write(
            &dir,
            "bad.toml",
            &format!(
                "[discover]\nenabled = false\n[[peer]]\nname = \"p\"\nurl = \"https://10.77.0.2:10917\"\n\
                 token_file = \"{token}\"\nca_file = \"{ca_file}\"\n"
            ),
        );
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_portsight"))
            .args([
                "serve",
                "--web.listen-address",
                "127.0.0.1:0",
                "--config",
                &cfg,
            ])
            .env_remove("RUST_LOG")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{stderr}");
        assert!(
            stderr.contains(&format!("portsight: bad config: {want}")),
            "{stderr}"
        );
    }
}
