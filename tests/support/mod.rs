//! Test support: a tiny HTTP client, a parser and matcher for the text
//! exposition format, polling, network-namespace worlds and the CI rules
//! for skipping.
#![allow(dead_code)]

pub mod netns;
pub mod prom;
pub mod sidecar;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// True when tests run in CI, where a missing prerequisite is a failure.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// Skips the calling test with a printed reason, or fails it in CI.
/// Use as `if let Some(reason) = ... { skip(reason); return; }`.
pub fn skip(reason: &str) {
    if in_ci() {
        panic!("CI=true, so this test may not skip: {reason}");
    }
    eprintln!("SKIPPED: {reason}");
}

/// A whole HTTP/1.1 response.
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Sends one request and reads the whole response (`Connection: close`).
pub fn http(method: &str, addr: SocketAddr, path: &str) -> HttpResponse {
    http_with(method, addr, path, &[], "")
}

/// As [`http`], with extra headers and a body.
pub fn http_with(
    method: &str,
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> HttpResponse {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body.as_bytes()).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("read response");
    parse_response(&String::from_utf8_lossy(&raw))
}

/// A whole HTTP/1.1 response read up to the end of the connection.
pub fn parse_response(raw: &str) -> HttpResponse {
    let (head, body) = raw.split_once("\r\n\r\n").expect("response head");
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .expect("status line");
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    HttpResponse {
        status,
        headers,
        body: body.to_string(),
    }
}

pub fn get(addr: SocketAddr, path: &str) -> HttpResponse {
    http("GET", addr, path)
}

/// One sample of the text exposition format.
#[derive(Debug, Clone)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

/// Parses the samples of a text exposition (comments skipped).
pub fn parse_metrics(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let (series, value) = l.rsplit_once(' ').expect("sample has a value");
            let value = match value {
                "+Inf" => f64::INFINITY,
                "-Inf" => f64::NEG_INFINITY,
                v => v.parse().expect("sample value"),
            };
            let (name, labels) = match series.split_once('{') {
                Some((n, rest)) => (n.to_string(), parse_labels(rest.trim_end_matches('}'))),
                None => (series.to_string(), Vec::new()),
            };
            Sample {
                name,
                labels,
                value,
            }
        })
        .collect()
}

fn parse_labels(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        let name: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if name.is_empty() {
            break;
        }
        assert_eq!(chars.next(), Some('"'));
        let mut value = String::new();
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some('n') => value.push('\n'),
                    Some(c) => value.push(c),
                    None => break,
                },
                '"' => break,
                c => value.push(c),
            }
        }
        out.push((name.trim_start_matches(',').to_string(), value));
        if chars.peek() == Some(&',') {
            chars.next();
        }
    }
    out
}

/// A query over scraped samples: `metric("x").label("port", "80").value()`.
pub struct Query<'a> {
    samples: &'a [Sample],
    name: String,
    labels: Vec<(String, String)>,
}

pub fn metric<'a>(samples: &'a [Sample], name: &str) -> Query<'a> {
    Query {
        samples,
        name: name.to_string(),
        labels: Vec::new(),
    }
}

impl<'a> Query<'a> {
    pub fn label(mut self, k: &str, v: impl ToString) -> Self {
        self.labels.push((k.to_string(), v.to_string()));
        self
    }

    pub fn all(&self) -> Vec<&'a Sample> {
        self.samples
            .iter()
            .filter(|s| s.name == self.name)
            .filter(|s| {
                self.labels
                    .iter()
                    .all(|(k, v)| s.labels.iter().any(|(sk, sv)| sk == k && sv == v))
            })
            .collect()
    }

    /// The value of `label` on the one matching series that is 1 (a state
    /// set's current state); `None` when none is. Panics when several are.
    pub fn state(&self, label: &str) -> Option<String> {
        let on: Vec<&Sample> = self.all().into_iter().filter(|s| s.value == 1.0).collect();
        assert!(
            on.len() <= 1,
            "{} {:?}: {} states at 1",
            self.name,
            self.labels,
            on.len()
        );
        on.first()
            .and_then(|s| s.labels.iter().find(|(k, _)| k == label))
            .map(|(_, v)| v.clone())
    }

    /// The value of the one matching sample; `None` when there is none.
    /// Panics when several match: the query is not precise enough.
    pub fn value(&self) -> Option<f64> {
        let all = self.all();
        assert!(
            all.len() <= 1,
            "{} {:?} matches {} samples",
            self.name,
            self.labels,
            all.len()
        );
        all.first().map(|s| s.value)
    }
}

/// Polls `f` every 50 ms until it returns `Some`, or panics after `limit`
/// with `what` and the last state seen.
pub fn wait_for<T>(limit: Duration, what: &str, mut f: impl FnMut() -> Result<T, String>) -> T {
    let start = Instant::now();
    loop {
        match f() {
            Ok(v) => return v,
            Err(last) if start.elapsed() > limit => {
                panic!("waited {limit:?} for {what}; last seen: {last}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// A running `portsight serve`, killed on drop; its stderr is collected.
pub struct Portsight {
    pub child: Child,
    pub log: Arc<Mutex<Vec<String>>>,
}

impl Portsight {
    pub fn spawn(mut cmd: Command) -> Portsight {
        cmd.stdout(Stdio::null()).stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("start portsight");
        let stderr = child.stderr.take().expect("stderr");
        let log = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        Portsight { child, log }
    }

    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// The address it listens on, from its start-up log line.
    pub fn address(&mut self) -> SocketAddr {
        wait_for(Duration::from_secs(20), "portsight to listen", || {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("exited with {status}: {}", self.log_text()));
            }
            let found = self
                .log
                .lock()
                .unwrap()
                .iter()
                .find(|l| l.contains("portsight listening"))
                .and_then(|l| l.split("address=").nth(1))
                .and_then(|a| a.split_whitespace().next())
                .and_then(|a| a.parse().ok());
            found.ok_or_else(|| self.log_text())
        })
    }
}

impl Drop for Portsight {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
