//! The routes, in-process: requests built in memory, answered by
//! [`handle`] with no socket in between (a few real-socket tests are in
//! tests/local.rs and tests/web_config.rs).

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode};
use tokio::sync::watch;

use super::{Handles, Shared, WebConfig, handle};
use crate::engine::{Flags, Live};
use crate::metrics::Metrics;
use crate::snapshot::Snapshot;

/// A server on a config loaded from `toml`, and the sender of its snapshots.
struct Server {
    shared: Shared,
    snapshots: watch::Sender<Arc<Snapshot>>,
    /// The config file.
    file: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

fn server(toml: &str) -> Server {
    server_with(toml, Flags::default())
}

fn server_with(toml: &str, flags: Flags) -> Server {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token"), "s3cret\n").unwrap();
    let file = dir.path().join("portsight.toml");
    let toml = toml.replace("TOKEN", &dir.path().join("token").display().to_string());
    std::fs::write(&file, toml).unwrap();
    let live = Live::load(Some(file.clone()), flags).unwrap();
    let (snapshots, snapshot) = watch::channel(Arc::new(Snapshot::default()));
    let handles = Handles {
        snapshot,
        metrics: Arc::new(Metrics::new().unwrap()),
        live: Arc::new(live),
    };
    Server {
        shared: Shared::new(handles, WebConfig::default()),
        snapshots,
        file,
        _dir: dir,
    }
}

const PROBE_SERVER: &str = r#"
[probe_server]
enabled = true
allow = ["127.0.0.0/8:1-65535"]
token_file = "TOKEN"
"#;

impl Server {
    async fn send(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
    ) -> (StatusCode, String) {
        let client: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        self.send_from(client, method, path, headers, "").await
    }

    /// A request from `client` with `body`.
    async fn send_from(
        &self,
        client: SocketAddr,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> (StatusCode, String) {
        let mut req = Request::builder().method(method).uri(path);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req.body(Full::new(Bytes::from(body.to_string()))).unwrap();
        let resp = handle(req, &self.shared, client).await;
        let status = resp.status();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    async fn get(&self, path: &str) -> (StatusCode, String) {
        self.send(Method::GET, path, &[]).await
    }
}

#[tokio::test]
async fn ready_only_once_a_snapshot_says_so() {
    let s = server("");
    assert_eq!(s.get("/-/healthy").await.0, StatusCode::OK);
    assert_eq!(s.get("/-/ready").await.0, StatusCode::SERVICE_UNAVAILABLE);
    let now = std::time::SystemTime::now();
    s.snapshots.send_replace(Arc::new(Snapshot {
        scanned_at: Some(now),
        probed_at: Some(now),
        generation: 1,
        ..Snapshot::default()
    }));
    assert_eq!(s.get("/-/ready").await, (StatusCode::OK, "Ready\n".into()));
    let (status, body) = s.get("/api/v1/status").await;
    assert_eq!(status, StatusCode::OK);
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["ready"], true);
}

#[tokio::test]
async fn metrics_and_wrong_methods() {
    let s = server("");
    let (status, body) = s.get("/metrics").await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains("portsight_build_info{"), "{body}");
    let (status, body) = s.send(Method::POST, "/metrics", &[]).await;
    assert_eq!(
        (status, body.as_str()),
        (
            StatusCode::METHOD_NOT_ALLOWED,
            "Method not allowed: use GET, HEAD\n"
        )
    );
    assert_eq!(s.get("/nope").await.0, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn reload_needs_the_lifecycle_api() {
    let off = server("");
    let (status, body) = off.send(Method::POST, "/-/reload", &[]).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let on = server("[web]\nenable_lifecycle = true\n");
    let (status, body) = on.send(Method::POST, "/-/reload", &[]).await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::OK, "Configuration reloaded\n")
    );
    let (status, _) = on.send(Method::POST, "/-/reload", &[]).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "the lifecycle API survives a reload"
    );
}

#[tokio::test]
async fn the_probe_server_is_off_unless_enabled() {
    let (status, body) = server("").get("/probe?target=127.0.0.1:1").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
}

#[tokio::test]
async fn probe_requests_pass_the_token_the_target_and_the_allow_list() {
    let s = server(PROBE_SERVER);
    let auth = [("Authorization", "Bearer s3cret")];
    let (status, _) = s.get("/probe?target=127.0.0.1:1").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let wrong = [("Authorization", "Bearer s3cret!")];
    assert_eq!(
        s.send(Method::GET, "/probe?target=127.0.0.1:1", &wrong)
            .await
            .0,
        StatusCode::UNAUTHORIZED
    );
    let (status, body) = s
        .send(Method::GET, "/probe?target=localhost:1", &auth)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, body) = s
        .send(Method::GET, "/probe?target=10.77.0.1:80", &auth)
        .await;
    assert_eq!(
        (status, body.as_str()),
        (
            StatusCode::FORBIDDEN,
            "not in probe_server.allow: 10.77.0.1:80\n"
        )
    );
    let open = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let target = open.local_addr().unwrap();
    let path = format!("/probe?target={target}&format=json");
    let (status, body) = s.send(Method::GET, &path, &auth).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["outcome"], "success", "{json}");
    let (_, metrics) = s.get("/metrics").await;
    for result in ["served 1", "denied 1", "unauthorized 2", "invalid 1"] {
        let (result, n) = result.split_once(' ').unwrap();
        let line = format!("portsight_probe_requests_total{{result=\"{result}\"}} {n}");
        assert!(metrics.contains(&line), "{line} in\n{metrics}");
    }
}

#[tokio::test]
async fn a_command_line_flag_survives_reloads() {
    let flags = Flags {
        enable_lifecycle: true,
        ..Flags::default()
    };
    // The file does not enable the lifecycle API: only the flag does.
    let s = server_with("[scan]\ninterval = \"1s\"\n", flags);
    for n in 0..3 {
        let (status, body) = s.send(Method::POST, "/-/reload", &[]).await;
        assert_eq!(status, StatusCode::OK, "reload {n}: {body}");
    }
}

#[tokio::test]
async fn an_empty_file_never_replaces_the_running_config() {
    let s = server("[web]\nenable_lifecycle = true\n[[port]]\nport = 8080\nname = \"web\"\n");
    let reload_ok = |metrics: &str| {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix("portsight_config_last_reload_successful "))
            .map(str::to_string)
    };
    for empty in ["", "\n  \n\t"] {
        std::fs::write(&s.file, empty).unwrap();
        let (status, body) = s.send(Method::POST, "/-/reload", &[]).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{body}");
        assert!(
            body.contains("the file is empty: a reload never replaces the running config"),
            "{body}"
        );
        let config = &s.shared.handles.live.current().config;
        assert_eq!(config.ports.len(), 1, "the running config is kept");
        assert!(config.web.enable_lifecycle);
        let (_, metrics) = s.get("/metrics").await;
        assert_eq!(reload_ok(&metrics).as_deref(), Some("0"));
    }
    // A comment means the default on purpose.
    std::fs::write(&s.file, "# the defaults\n[web]\nenable_lifecycle = true\n").unwrap();
    let (status, body) = s.send(Method::POST, "/-/reload", &[]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(s.shared.handles.live.current().config.ports.is_empty());
    let (_, metrics) = s.get("/metrics").await;
    assert_eq!(reload_ok(&metrics).as_deref(), Some("1"));
}

#[tokio::test]
async fn clients_without_the_token_cannot_lock_out_one_with_it() {
    let s = server(&format!("{PROBE_SERVER}rate_limit = 1.0\nburst = 1\n"));
    let open = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let path = format!("/probe?target={}", open.local_addr().unwrap());
    // 20,000 requests without the token, each from an IPv6 /64 of its own.
    for i in 0..20_000u32 {
        let client: SocketAddr = format!("[fd77:{:x}:{:x}::1]:40000", i >> 16, i & 0xffff)
            .parse()
            .unwrap();
        let (status, _) = s.send_from(client, Method::GET, &path, &[], "").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    let client: SocketAddr = "[fd77:ffff::1]:40000".parse().unwrap();
    let auth = [("Authorization", "Bearer s3cret")];
    let (status, body) = s.send_from(client, Method::GET, &path, &auth, "").await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn the_token_is_compared_exactly_and_only_one_is_taken() {
    let s = server(PROBE_SERVER);
    let open = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let path = format!("/probe?target={}", open.local_addr().unwrap());
    for wrong in [
        "Bearer s3cret ",
        "Bearer  s3cret",
        "Bearer s3cret\t",
        "Bearers3cret",
        "s3cret",
    ] {
        let (status, body) = s
            .send(Method::GET, &path, &[("Authorization", wrong)])
            .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{wrong:?}: {body}");
    }
    let two = [
        ("Authorization", "Bearer s3cret"),
        ("Authorization", "Bearer other"),
    ];
    let (status, body) = s.send(Method::GET, &path, &two).await;
    assert_eq!(
        (status, body.as_str()),
        (
            StatusCode::BAD_REQUEST,
            "several Authorization headers: send exactly one\n"
        )
    );
    let (status, _) = s
        .send(Method::GET, &path, &[("Authorization", "Bearer s3cret")])
        .await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn a_bad_target_is_echoed_only_in_part() {
    let s = server(PROBE_SERVER);
    let auth = [("Authorization", "Bearer s3cret")];
    // As long as a URI may be (hyper's limit).
    let long = "A".repeat(60_000);
    let (status, body) = s
        .send(Method::GET, &format!("/probe?target={long}"), &auth)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.len() < 300, "{} bytes echoed", body.len());
    assert!(body.contains("... (60000 bytes)"), "{body}");
    let huge = "A".repeat((1 << 20) - 100);
    let batch = format!(r#"{{"targets": ["{huge}"]}}"#);
    let client: SocketAddr = "127.0.0.1:40000".parse().unwrap();
    let (status, body) = s
        .send_from(client, Method::POST, "/api/v1/probe", &auth, &batch)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.len() < 600, "{} bytes echoed", body.len());
    // Control characters come back escaped.
    let (_, body) = s
        .send(Method::GET, "/probe?target=%1B%5D0%3Bx%07%0AFIX", &auth)
        .await;
    assert!(
        !body.trim_end().contains(['\x1b', '\x07', '\n']),
        "{body:?}"
    );
}

/// A listener whose accept queue is full: the kernel drops every SYN to
/// it, so a connect stays pending until its timeout.
fn black_hole() -> (socket2::Socket, std::net::TcpStream, SocketAddr) {
    use socket2::{Domain, Socket, Type};
    let l = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    l.bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into())
        .unwrap();
    l.listen(0).unwrap();
    let addr = l.local_addr().unwrap().as_socket().unwrap();
    let queued = std::net::TcpStream::connect(addr).unwrap();
    (l, queued, addr)
}

/// On tokio's paused clock, which moves only when every task waits: the
/// durations below are the server's own timers, not the machine's speed.
#[tokio::test(start_paused = true)]
async fn the_timeout_bounds_a_probe_request_while_a_batch_holds_the_slots() {
    let s = Arc::new(server(&format!("{PROBE_SERVER}concurrency = 2\n")));
    let (_l, _queued, hole) = black_hole();
    let batch = {
        let s = Arc::clone(&s);
        let body =
            format!(r#"{{"targets": ["{hole}", "{hole}", "{hole}", "{hole}"], "timeout": "30s"}}"#);
        tokio::spawn(async move {
            let client: SocketAddr = "127.0.0.2:40000".parse().unwrap();
            let auth = [("Authorization", "Bearer s3cret")];
            s.send_from(client, Method::POST, "/api/v1/probe", &auth, &body)
                .await
        })
    };
    // The batch's four connects take both of its slots, for 30 s each.
    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    assert!(!batch.is_finished());
    let started = tokio::time::Instant::now();
    let auth = [("Authorization", "Bearer s3cret")];
    let (status, body) = s
        .send(
            Method::GET,
            &format!("/probe?target={hole}&timeout=1s&format=json"),
            &auth,
        )
        .await;
    let took = started.elapsed();
    assert!(
        took <= std::time::Duration::from_millis(1100),
        "a 1s probe request took {took:?} behind a batch"
    );
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.contains(r#""outcome":"timeout""#), "{body}");
    assert!(!batch.is_finished(), "the batch still runs");
    batch.abort();
}
