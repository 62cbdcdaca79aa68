//! The only place that knows metric names: writes the latest snapshot and the
//! probe counters as text at scrape time, and keeps the fixed-size families
//! (cycle stages, peers, requests, reload, process) in a Prometheus registry.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::SystemTime;

use bytes::Bytes;
use prometheus::core::Collector;
use prometheus::{
    CounterVec, Encoder, Gauge, GaugeVec, HistogramOpts, HistogramVec, Opts, Registry, TextEncoder,
};

use crate::diagnosis::Cause;
use crate::probe::{Outcome, ProbeResult};
use crate::snapshot::{PROTOCOL, PortStatus, Snapshot};

/// Cycle stages with a duration histogram and a completion timestamp.
#[derive(Debug, Clone, Copy)]
pub enum Stage {
    Scan,
    Probe,
    Peer,
}

impl Stage {
    fn as_str(self) -> &'static str {
        match self {
            Stage::Scan => "scan",
            Stage::Probe => "probe",
            Stage::Peer => "peer",
        }
    }
}

pub struct Metrics {
    registry: Registry,
    /// The text of the snapshot's series as of its `generation`: scrapes
    /// between two changes (a scan or a probe round) share one rendering.
    /// The per-port series are written as text rather than kept as registry
    /// children: a child costs about 2 KiB and a rebuild on every scan,
    /// which for 1,000 ports × 3 vantages took hundreds of MiB (BENCHMARKS.md).
    rendered: Mutex<Option<(u64, Bytes)>>,
    cycle_duration: HistogramVec,
    last_cycle: GaugeVec,
    peer_up: GaugeVec,
    probe_requests: CounterVec,
    reload_successful: Gauge,
    reload_timestamp: Gauge,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("metrics: {0}")]
    Prometheus(#[from] prometheus::Error),
}

fn gauge_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> Result<GaugeVec, Error> {
    let g = GaugeVec::new(Opts::new(name, help), labels)?;
    r.register(Box::new(g.clone()))?;
    Ok(g)
}

impl Metrics {
    pub fn new() -> Result<Metrics, Error> {
        let r = Registry::new();
        let cycle_duration = HistogramVec::new(
            HistogramOpts::new(
                "portsight_cycle_duration_seconds",
                "Time spent in each stage of a cycle.",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0,
            ]),
            &["stage"],
        )?;
        r.register(Box::new(cycle_duration.clone()))?;
        let last_cycle = gauge_vec(
            &r,
            "portsight_last_cycle_timestamp_seconds",
            "When each stage last completed, in seconds since the epoch.",
            &["stage"],
        )?;
        let build_info = gauge_vec(
            &r,
            "portsight_build_info",
            "Version, git revision and compiler of this portsight.",
            &["version", "revision", "rustc"],
        )?;
        build_info
            .with_label_values(&[
                env!("CARGO_PKG_VERSION"),
                env!("PORTSIGHT_REVISION"),
                env!("PORTSIGHT_RUSTC"),
            ])
            .set(1.0);
        let peer_up = gauge_vec(
            &r,
            "portsight_peer_up",
            "1 if the peer answered the last request for the outside view.",
            &["peer"],
        )?;
        let probe_requests = CounterVec::new(
            Opts::new(
                "portsight_probe_requests_total",
                "Probe requests (/probe, /api/v1/probe) from others, by result.",
            ),
            &["result"],
        )?;
        r.register(Box::new(probe_requests.clone()))?;
        for result in RequestResult::ALL {
            probe_requests.with_label_values(&[result.as_str()]);
        }
        let reload_successful = Gauge::new(
            "portsight_config_last_reload_successful",
            "1 if the last configuration load succeeded.",
        )?;
        r.register(Box::new(reload_successful.clone()))?;
        let reload_timestamp = Gauge::new(
            "portsight_config_last_reload_success_timestamp_seconds",
            "When the configuration was last loaded successfully, in seconds since the epoch.",
        )?;
        r.register(Box::new(reload_timestamp.clone()))?;
        r.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        for stage in [Stage::Scan, Stage::Probe, Stage::Peer] {
            cycle_duration.with_label_values(&[stage.as_str()]);
        }
        Ok(Metrics {
            registry: r,
            rendered: Mutex::new(None),
            cycle_duration,
            last_cycle,
            peer_up,
            probe_requests,
            reload_successful,
            reload_timestamp,
        })
    }

    pub fn observe_stage(&self, stage: Stage, seconds: f64, finished: SystemTime) {
        self.cycle_duration
            .with_label_values(&[stage.as_str()])
            .observe(seconds);
        self.last_cycle
            .with_label_values(&[stage.as_str()])
            .set(unix_seconds(finished));
    }

    /// Sets `portsight_peer_up` for the peers asked, and drops the series of
    /// peers that no longer exist (`known`).
    pub fn set_peers(&self, asked: &[(String, bool)], known: &[&str]) {
        for (name, up) in asked {
            self.peer_up
                .with_label_values(&[name.as_str()])
                .set(if *up { 1.0 } else { 0.0 });
        }
        for family in self.peer_up.collect() {
            for m in family.get_metric() {
                if let Some(l) = m.get_label().iter().find(|l| l.name() == "peer")
                    && !known.contains(&l.value())
                {
                    let _ = self.peer_up.remove_label_values(&[l.value()]);
                }
            }
        }
    }

    pub fn count_probe_request(&self, result: RequestResult) {
        self.probe_requests
            .with_label_values(&[result.as_str()])
            .inc();
    }

    pub fn set_reload(&self, ok: bool, at: SystemTime) {
        self.reload_successful.set(if ok { 1.0 } else { 0.0 });
        if ok {
            self.reload_timestamp.set(unix_seconds(at));
        }
    }

    /// The text exposition format: `snapshot`'s series, then the registry's.
    pub fn render(&self, snapshot: &Snapshot) -> Result<Vec<u8>, Error> {
        let mut rendered = self.rendered.lock().unwrap_or_else(|e| e.into_inner());
        let generation = snapshot.generation;
        let cached = rendered.take().filter(|(g, _)| *g == generation);
        let text = match cached {
            Some((_, text)) => text,
            None => {
                let mut text = String::with_capacity(64 * 1024);
                write_probes_total(&mut text, snapshot);
                write_snapshot(&mut text, snapshot);
                Bytes::from(text)
            }
        };
        let mut out = Vec::with_capacity(text.len() + 16 * 1024);
        out.extend_from_slice(&text);
        *rendered = Some((generation, text));
        drop(rendered);
        TextEncoder::new().encode(&self.registry.gather(), &mut out)?;
        Ok(out)
    }
}

/// How a probe request from another client ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestResult {
    Served,
    Denied,
    Unauthorized,
    Invalid,
    Limited,
}

impl RequestResult {
    pub const ALL: [RequestResult; 5] = [
        RequestResult::Served,
        RequestResult::Denied,
        RequestResult::Unauthorized,
        RequestResult::Invalid,
        RequestResult::Limited,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RequestResult::Served => "served",
            RequestResult::Denied => "denied",
            RequestResult::Unauthorized => "unauthorized",
            RequestResult::Invalid => "invalid",
            RequestResult::Limited => "limited",
        }
    }
}

/// The answer to `/probe` in the text format: blackbox_exporter's
/// `probe_success` and `probe_duration_seconds`, and the outcome state set.
pub fn render_probe(r: &ProbeResult) -> Result<Vec<u8>, Error> {
    let registry = Registry::new();
    let success = Gauge::new(
        "probe_success",
        "Displays whether or not the probe was a success",
    )?;
    success.set(if r.outcome == Outcome::Success {
        1.0
    } else {
        0.0
    });
    registry.register(Box::new(success))?;
    let duration = Gauge::new(
        "probe_duration_seconds",
        "Returns how long the probe took to complete in seconds",
    )?;
    duration.set(r.duration.as_secs_f64());
    registry.register(Box::new(duration))?;
    let outcome = GaugeVec::new(
        Opts::new(
            "portsight_probe_outcome",
            "Outcome of the connect attempt, as a state set: 1 on the current outcome.",
        ),
        &["outcome"],
    )?;
    for o in Outcome::ALL {
        outcome
            .with_label_values(&[o.as_str()])
            .set(if o == r.outcome { 1.0 } else { 0.0 });
    }
    registry.register(Box::new(outcome))?;
    let mut out = Vec::new();
    TextEncoder::new().encode(&registry.gather(), &mut out)?;
    Ok(out)
}

/// `# HELP` and `# TYPE` of one family.
fn family(out: &mut String, name: &str, help: &str, kind: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// One sample; `labels` in alphabetical order of their names, as the
/// prometheus crate writes them.
fn sample(out: &mut String, name: &str, labels: &[(&str, &str)], value: f64) {
    out.push_str(name);
    out.push('{');
    for (i, (k, v)) in labels.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(k);
        out.push_str("=\"");
        for c in v.chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '"' => out.push_str("\\\""),
                '\n' => out.push_str("\\n"),
                c => out.push(c),
            }
        }
        out.push('"');
    }
    out.push_str("} ");
    if value.is_infinite() {
        out.push_str(if value > 0.0 { "+Inf" } else { "-Inf" });
    } else {
        let _ = write!(out, "{value}");
    }
    out.push('\n');
}

fn bool_value(b: bool) -> f64 {
    if b { 1.0 } else { 0.0 }
}

fn write_probes_total(out: &mut String, snapshot: &Snapshot) {
    if snapshot.ports.iter().all(|p| p.probe_counts.is_empty()) {
        return;
    }
    let name = "portsight_probes_total";
    family(out, name, "Connect attempts, by outcome.", "counter");
    for p in &snapshot.ports {
        let port = p.port.to_string();
        for (t, counts) in &p.probe_counts {
            let target = t.addr.to_string();
            for (o, n) in counts.iter() {
                let labels = [
                    ("name", p.name.as_str()),
                    ("outcome", o.as_str()),
                    ("port", port.as_str()),
                    ("protocol", PROTOCOL),
                    ("source", t.source.as_str()),
                    ("target", target.as_str()),
                    ("vantage", t.vantage.as_str()),
                ];
                sample(out, name, &labels, n as f64);
            }
        }
    }
}

/// The listening sockets of one address of a port, as one series: sockets
/// sharing an address (SO_REUSEPORT) would otherwise repeat a label set.
struct ListenerSeries<'a> {
    address: String,
    scope: &'static str,
    /// The owning processes' names (empty where not visible), each once.
    processes: BTreeSet<&'a str>,
    /// The fullest socket's accept queue and its limit.
    length: u32,
    limit: Option<u32>,
}

fn listener_series(p: &PortStatus) -> Vec<ListenerSeries<'_>> {
    let mut by_address: BTreeMap<std::net::IpAddr, ListenerSeries<'_>> = BTreeMap::new();
    for l in &p.listeners {
        let process = l.owner.as_ref().map_or("", |o| o.name.as_str());
        let series = by_address
            .entry(l.address)
            .or_insert_with(|| ListenerSeries {
                address: l.address.to_string(),
                scope: l.scope().as_str(),
                processes: BTreeSet::new(),
                length: l.accept_queue_length,
                limit: l.accept_queue_limit,
            });
        series.processes.insert(process);
        if l.accept_queue_length > series.length {
            series.length = l.accept_queue_length;
            series.limit = l.accept_queue_limit;
        }
    }
    by_address.into_values().collect()
}

/// The per-port, per-listener and per-probe families of `snapshot`.
fn write_snapshot(out: &mut String, snapshot: &Snapshot) {
    let ports = &snapshot.ports;
    if ports.is_empty() {
        return;
    }
    let names: Vec<String> = ports.iter().map(|p| p.port.to_string()).collect();
    let each = || ports.iter().zip(&names);

    let name = "portsight_port_info";
    family(
        out,
        name,
        "A watched port: its policy and where it comes from.",
        "gauge",
    );
    for (p, port) in each() {
        let labels = [
            ("expect", p.expect.as_str()),
            ("name", p.name.as_str()),
            ("origin", p.origin.as_str()),
            ("port", port.as_str()),
            ("protocol", PROTOCOL),
        ];
        sample(out, name, &labels, 1.0);
    }
    let name = "portsight_port_listening";
    family(
        out,
        name,
        "1 if a LISTEN socket exists on the port.",
        "gauge",
    );
    for (p, port) in each() {
        let labels = [
            ("name", p.name.as_str()),
            ("port", port),
            ("protocol", PROTOCOL),
        ];
        sample(out, name, &labels, bool_value(p.listening()));
    }
    let name = "portsight_port_diagnosis";
    family(
        out,
        name,
        "Why the port is (not) reachable, as a state set: 1 on the current cause.",
        "gauge",
    );
    for (p, port) in each() {
        for &cause in Cause::ALL {
            let labels = [
                ("cause", cause.as_str()),
                ("name", p.name.as_str()),
                ("port", port),
                ("protocol", PROTOCOL),
            ];
            sample(out, name, &labels, bool_value(cause == p.diagnosis.cause));
        }
    }

    let listeners: Vec<(&str, ListenerSeries)> = each()
        .flat_map(|(p, port)| {
            listener_series(p)
                .into_iter()
                .map(move |l| (port.as_str(), l))
        })
        .collect();
    if !listeners.is_empty() {
        let name = "portsight_listener_info";
        family(
            out,
            name,
            "One per listening socket of a watched port: bind address, its scope and owning process.",
            "gauge",
        );
        for (port, l) in &listeners {
            for process in &l.processes {
                let labels = [
                    ("address", l.address.as_str()),
                    ("port", port),
                    ("process", process),
                    ("protocol", PROTOCOL),
                    ("scope", l.scope),
                ];
                sample(out, name, &labels, 1.0);
            }
        }
        let name = "portsight_listener_accept_queue_length";
        family(
            out,
            name,
            "Connections waiting in the listener's accept queue.",
            "gauge",
        );
        for (port, l) in &listeners {
            let labels = [
                ("address", l.address.as_str()),
                ("port", port),
                ("protocol", PROTOCOL),
            ];
            sample(out, name, &labels, f64::from(l.length));
        }
        if listeners.iter().any(|(_, l)| l.limit.is_some()) {
            let name = "portsight_listener_accept_queue_limit";
            family(
                out,
                name,
                "The listener's accept queue limit (listen backlog).",
                "gauge",
            );
            for (port, l) in &listeners {
                if let Some(limit) = l.limit {
                    let labels = [
                        ("address", l.address.as_str()),
                        ("port", port),
                        ("protocol", PROTOCOL),
                    ];
                    sample(out, name, &labels, f64::from(limit));
                }
            }
        }
    }

    if ports.iter().all(|p| p.probes.is_empty()) {
        return;
    }
    let probes = || {
        each().flat_map(|(p, port)| {
            p.probes
                .iter()
                .map(move |r| (p, port.as_str(), r, r.target.addr.to_string()))
        })
    };
    let name = "portsight_probe_success";
    family(
        out,
        name,
        "1 if the last connect attempt to the target succeeded.",
        "gauge",
    );
    for (p, port, r, target) in probes() {
        let labels = probe_series(p, port, r, &target);
        sample(
            out,
            name,
            &labels,
            bool_value(r.outcome == Outcome::Success),
        );
    }
    let name = "portsight_probe_outcome";
    family(
        out,
        name,
        "Outcome of the last connect attempt, as a state set: 1 on the current outcome.",
        "gauge",
    );
    for (p, port, r, target) in probes() {
        let [name_label, rest @ ..] = probe_series(p, port, r, &target);
        for o in Outcome::ALL {
            let [port_label, protocol, source, target, vantage] = rest;
            let labels = [
                name_label,
                ("outcome", o.as_str()),
                port_label,
                protocol,
                source,
                target,
                vantage,
            ];
            sample(out, name, &labels, bool_value(o == r.outcome));
        }
    }
    let name = "portsight_probe_duration_seconds";
    family(out, name, "Duration of the last connect attempt.", "gauge");
    for (p, port, r, target) in probes() {
        let labels = probe_series(p, port, r, &target);
        sample(out, name, &labels, r.duration.as_secs_f64());
    }
}

/// The probe labels of one result, in the order they are written (by name).
fn probe_series<'a>(
    p: &'a PortStatus,
    port: &'a str,
    r: &'a ProbeResult,
    target: &'a str,
) -> [(&'static str, &'a str); 6] {
    [
        ("name", p.name.as_str()),
        ("port", port),
        ("protocol", PROTOCOL),
        ("source", r.target.source.as_str()),
        ("target", target),
        ("vantage", r.target.vantage.as_str()),
    ]
}

fn unix_seconds(t: SystemTime) -> f64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// The content type of [`Metrics::render`]'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
