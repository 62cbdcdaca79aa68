//! Real Prometheus and Alertmanager in a test host: finding the binaries,
//! their HTTP APIs, and a webhook receiver that records what Alertmanager
//! sends.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

use super::get;
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

/// Percent-encodes a query-string value.
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// GET `path` on `addr` from inside `host`; the body as JSON (`Err` with the
/// raw response when it is not JSON, or the connection failed).
pub fn api(host: &Host, addr: SocketAddr, path: &str) -> Result<Value, String> {
    let path = path.to_string();
    host.run(move || {
        // A refused connection is an answer too while a server starts.
        if std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_err() {
            return Err(format!("{addr} does not accept connections yet"));
        }
        let r = get(addr, &path);
        let body = if r
            .header("transfer-encoding")
            .is_some_and(|t| t.eq_ignore_ascii_case("chunked"))
        {
            dechunk(&r.body)
        } else {
            r.body.clone()
        };
        serde_json::from_str(&body).map_err(|e| {
            let head: String = body.chars().take(500).collect();
            format!("{} {e}: {head}", r.status)
        })
    })
}

/// The payload of a `Transfer-Encoding: chunked` body.
fn dechunk(body: &str) -> String {
    let mut out = String::new();
    let mut rest = body;
    while let Some((size, after)) = rest.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        let (Some(chunk), Some(next)) = (after.get(..size), after.get(size..)) else {
            break;
        };
        if size == 0 {
            break;
        }
        out.push_str(chunk);
        rest = next.strip_prefix("\r\n").unwrap_or(next);
    }
    out
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
/// receiver gets).
pub struct Webhook {
    pub received: Arc<Mutex<Vec<Value>>>,
}

impl Webhook {
    pub fn start(host: &Host, addr: SocketAddr) -> Webhook {
        let listener = host.run(|| TcpListener::bind(addr).expect("bind webhook"));
        let received = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&received);
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
                let mut reader = BufReader::new(&conn);
                let mut length = 0usize;
                let mut line = String::new();
                loop {
                    line.clear();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        break;
                    }
                    let l = line.trim_end();
                    if l.is_empty() {
                        break;
                    }
                    if let Some((k, v)) = l.split_once(':')
                        && k.eq_ignore_ascii_case("content-length")
                    {
                        length = v.trim().parse().unwrap_or(0);
                    }
                }
                let mut body = vec![0; length];
                if reader.read_exact(&mut body).is_ok()
                    && let Ok(v) = serde_json::from_slice::<Value>(&body)
                {
                    sink.lock().unwrap().push(v);
                }
                let mut w = &conn;
                let _ = w.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                );
            }
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
