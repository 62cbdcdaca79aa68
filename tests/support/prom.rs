//! Real Prometheus and Alertmanager in a test host: finding the binaries,
//! their HTTP APIs, and a webhook receiver that records what Alertmanager
//! sends.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::Value;

use super::netns::Host;

/// The first of `names` found on `PATH`.
pub fn find_binary(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    names.iter().find_map(|name| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    })
}

/// Debian names it `prometheus-alertmanager`, upstream `alertmanager`.
pub fn alertmanager() -> Option<PathBuf> {
    find_binary(&["alertmanager", "prometheus-alertmanager"])
}

pub fn prometheus() -> Option<PathBuf> {
    find_binary(&["prometheus"])
}

/// Why the real-Prometheus tests cannot run here, if they cannot.
pub fn unavailable() -> Option<String> {
    super::netns::unavailable().or_else(|| {
        if prometheus().is_none() {
            Some("`prometheus` is not installed (Debian package prometheus)".into())
        } else if alertmanager().is_none() {
            Some("`alertmanager` is not installed (Debian package prometheus-alertmanager)".into())
        } else {
            None
        }
    })
}

/// A query string (`a=1&b=x%2By`) of `pairs`, form-encoded.
pub fn query_string(pairs: &[(&str, &str)]) -> String {
    form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
}

/// A Prometheus HTTP API response's `data`, or the error it reports.
pub fn data(v: Result<Value, String>) -> Result<Value, String> {
    let v = v?;
    if v["status"] == "success" {
        Ok(v["data"].clone())
    } else {
        Err(format!("{}: {}", v["errorType"], v["error"]))
    }
}

/// An HTTP server in `host` that answers 200 to every request and keeps
/// the JSON bodies of the POSTs it receives (what Alertmanager's webhook
/// receiver gets). It runs until the test process ends.
pub struct Webhook {
    pub received: Arc<Mutex<Vec<Value>>>,
}

impl Webhook {
    pub fn start(host: &Host, addr: SocketAddr) -> Webhook {
        let listener = host.run(|| std::net::TcpListener::bind(addr).expect("bind webhook"));
        listener.set_nonblocking(true).unwrap();
        let received = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&received);
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                loop {
                    let Ok((conn, _)) = listener.accept().await else {
                        continue;
                    };
                    let sink = Arc::clone(&sink);
                    let service = service_fn(move |req: Request<Incoming>| {
                        let sink = Arc::clone(&sink);
                        async move {
                            if let Ok(body) = req.into_body().collect().await
                                && let Ok(v) = serde_json::from_slice::<Value>(&body.to_bytes())
                            {
                                sink.lock().unwrap().push(v);
                            }
                            Ok::<_, Infallible>(Response::new(Empty::<Bytes>::new()))
                        }
                    });
                    tokio::spawn(
                        http1::Builder::new().serve_connection(TokioIo::new(conn), service),
                    );
                }
            });
        });
        Webhook { received }
    }

    /// Every alert of every notification received so far, in order; each
    /// carries its own `status` (`firing` / `resolved`), labels and annotations.
    pub fn alerts(&self) -> Vec<Value> {
        self.received
            .lock()
            .unwrap()
            .iter()
            .flat_map(|n| n["alerts"].as_array().cloned().unwrap_or_default())
            .collect()
    }
}
