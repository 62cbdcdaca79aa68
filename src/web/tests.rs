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
    let live = Live::load(Some(file), flags).unwrap();
    let (snapshots, snapshot) = watch::channel(Arc::new(Snapshot::default()));
    let handles = Handles {
        snapshot,
        metrics: Arc::new(Metrics::new().unwrap()),
        live: Arc::new(live),
    };
    Server {
        shared: Shared::new(handles, WebConfig::default()),
        snapshots,
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
        let mut req = Request::builder().method(method).uri(path);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req.body(Full::new(Bytes::new())).unwrap();
        let client: SocketAddr = "127.0.0.1:40000".parse().unwrap();
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
