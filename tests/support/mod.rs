//! Test support: an HTTP client, a parser and matcher for the text
//! exposition format, polling, listeners, processes served in network
//! namespaces (`netns::Served`), the sidecar in this process, and the CI
//! rules for skipping.
#![allow(dead_code, unused_imports, unused_macros)]

pub mod certs;
pub mod chromium;
pub mod http;
pub mod listener;
pub mod netns;
pub mod prom;
pub mod sidecar;

pub use http::{
    HttpResponse, TlsClient, get, http, http_with, https, try_get, try_http_with, try_https,
};
pub use listener::{ClosedPort, closed_port, listen};

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// True when tests run in CI, where a missing prerequisite is a failure.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// What `sources.namespaces` says for a portsight run in a test namespace
/// without a private PID namespace, with CAP_SYS_PTRACE (`ptrace`) or
/// without: the safety rule refuses to look into other namespaces (the
/// source is not used: `None`) when PID 1's namespace link can be read;
/// where it cannot (without the capability, or on a machine whose PID 1
/// hides it even from root, as this one's does) the rule cannot be
/// checked, and the source says 0.
pub fn namespaces_source(ptrace: bool) -> Option<bool> {
    (!ptrace || std::fs::read_link("/proc/1/ns/net").is_err()).then_some(false)
}

/// Skips the calling test with a printed reason, or fails it in CI.
/// Use as `if let Some(reason) = ... { skip(reason); return; }`.
pub fn skip(reason: &str) {
    if in_ci() {
        panic!("CI=true, so this test may not skip: {reason}");
    }
    eprintln!("SKIPPED: {reason}");
}

/// Returns from the calling test when `$why` (an `Option` of a reason) says
/// it cannot run here: skipped with the reason printed, or failed in CI.
/// `needs!(netns::unavailable());`
macro_rules! needs {
    ($why:expr) => {
        if let Some(reason) = $why {
            $crate::support::skip(&reason);
            return;
        }
    };
}
pub(crate) use needs;

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

/// How many socket scans a portsight has finished, from its samples
/// (`portsight_cycle_duration_seconds_count{stage="scan"}`).
pub fn scans(m: &[Sample]) -> u64 {
    metric(m, "portsight_cycle_duration_seconds_count")
        .label("stage", "scan")
        .value()
        .unwrap_or(0.0) as u64
}

/// No scan for this long: the engine is stuck (a hang guard, not a bound
/// on how fast it should be).
const STUCK: Duration = Duration::from_secs(120);

/// Polls `scrape()` until `f` holds, and fails if `scans` more socket scans
/// of that portsight finish first (counted from the first scrape). Progress
/// is measured in the engine's own scans, not in wall-clock time, so that a
/// slow machine slows both alike.
pub fn within_scans<T>(
    scrape: impl Fn() -> Vec<Sample>,
    scans: u64,
    what: &str,
    mut f: impl FnMut(&[Sample]) -> Result<T, String>,
) -> T {
    let first = self::scans(&scrape());
    wait_for(STUCK, what, || {
        let m = scrape();
        let now = self::scans(&m);
        match f(&m) {
            Ok(v) => Ok(v),
            Err(last) if now >= first + scans => {
                panic!("{what}: not within {scans} scans ({first} -> {now}); last seen: {last}")
            }
            Err(last) => Err(format!("after {} scans: {last}", now - first)),
        }
    })
}

/// Waits until `scans` more socket scans of that portsight have finished.
pub fn wait_scans(scrape: impl Fn() -> Vec<Sample>, scans: u64) {
    let first = self::scans(&scrape());
    wait_for(STUCK, &format!("{scans} more scans"), || {
        let now = self::scans(&scrape());
        if now >= first + scans {
            Ok(())
        } else {
            Err(format!("{first} -> {now}"))
        }
    });
}

/// A running process (portsight, Prometheus, …), killed on drop; its
/// stderr is collected.
pub struct Process {
    pub child: Child,
    pub log: Arc<Mutex<Vec<String>>>,
}

impl Process {
    pub fn spawn(mut cmd: Command) -> Process {
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
        Process { child, log }
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

impl Process {
    pub fn pid(&self) -> nix::unistd::Pid {
        nix::unistd::Pid::from_raw(self.child.id() as i32)
    }

    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        nix::sys::signal::kill(self.pid(), signal).expect("signal the process");
    }

    /// Waits up to `limit` for the process to exit by itself.
    pub fn wait_exit(&mut self, limit: Duration) -> std::process::ExitStatus {
        wait_for(limit, "the process to exit", || {
            self.child
                .try_wait()
                .expect("wait")
                .ok_or_else(|| "running".to_string())
        })
    }

    /// Why it is not running any more, if it is not.
    pub fn exited(&mut self) -> Option<String> {
        match self.child.try_wait() {
            Ok(Some(status)) => Some(format!("exited with {status}: {}", self.log_text())),
            _ => None,
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `cmd` and fails the test, with its output, unless it succeeds.
pub fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}
