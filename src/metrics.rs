//! The only place that knows metric names: renders snapshots and probe
//! results into a Prometheus registry, and the registry into text.

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::SystemTime;

use prometheus::core::Collector;
use prometheus::{
    CounterVec, Encoder, Gauge, GaugeVec, HistogramOpts, HistogramVec, Opts, Registry, TextEncoder,
};

use crate::diagnosis::Cause;
use crate::probe::{Outcome, ProbeResult};
use crate::snapshot::{PROTOCOL, PortStatus, Snapshot};

const PORT_LABELS: [&str; 3] = ["port", "protocol", "name"];
const PROBE_LABELS: [&str; 6] = ["port", "protocol", "name", "vantage", "source", "target"];

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
    /// Held while a snapshot is written and while the registry is gathered, so a
    /// scrape never sees a half-written snapshot.
    lock: Mutex<Known>,
    port_info: GaugeVec,
    port_listening: GaugeVec,
    port_diagnosis: GaugeVec,
    listener_info: GaugeVec,
    accept_queue_length: GaugeVec,
    accept_queue_limit: GaugeVec,
    probe_success: GaugeVec,
    probe_outcome: GaugeVec,
    probe_duration: GaugeVec,
    probes_total: CounterVec,
    cycle_duration: HistogramVec,
    last_cycle: GaugeVec,
    peer_up: GaugeVec,
    probe_requests: CounterVec,
    reload_successful: Gauge,
    reload_timestamp: Gauge,
}

/// Probe label sets with a counter, so counters of targets no longer probed
/// can be removed.
#[derive(Default)]
struct Known {
    probe_series: HashSet<Vec<String>>,
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
        let port_info = gauge_vec(
            &r,
            "portsight_port_info",
            "A watched port: its policy and where it comes from.",
            &["port", "protocol", "name", "expect", "origin"],
        )?;
        let port_listening = gauge_vec(
            &r,
            "portsight_port_listening",
            "1 if a LISTEN socket exists on the port.",
            &PORT_LABELS,
        )?;
        let mut cause_labels = PORT_LABELS.to_vec();
        cause_labels.push("cause");
        let port_diagnosis = gauge_vec(
            &r,
            "portsight_port_diagnosis",
            "Why the port is (not) reachable, as a state set: 1 on the current cause.",
            &cause_labels,
        )?;
        let listener_info = gauge_vec(
            &r,
            "portsight_listener_info",
            "One per listening socket of a watched port: bind address, its scope and owning process.",
            &["port", "protocol", "address", "scope", "process"],
        )?;
        let queue = ["port", "protocol", "address"];
        let accept_queue_length = gauge_vec(
            &r,
            "portsight_listener_accept_queue_length",
            "Connections waiting in the listener's accept queue.",
            &queue,
        )?;
        let accept_queue_limit = gauge_vec(
            &r,
            "portsight_listener_accept_queue_limit",
            "The listener's accept queue limit (listen backlog).",
            &queue,
        )?;
        let probe_success = gauge_vec(
            &r,
            "portsight_probe_success",
            "1 if the last connect attempt to the target succeeded.",
            &PROBE_LABELS,
        )?;
        let mut outcome_labels = PROBE_LABELS.to_vec();
        outcome_labels.push("outcome");
        let probe_outcome = gauge_vec(
            &r,
            "portsight_probe_outcome",
            "Outcome of the last connect attempt, as a state set: 1 on the current outcome.",
            &outcome_labels,
        )?;
        let probe_duration = gauge_vec(
            &r,
            "portsight_probe_duration_seconds",
            "Duration of the last connect attempt.",
            &PROBE_LABELS,
        )?;
        let probes_total = CounterVec::new(
            Opts::new("portsight_probes_total", "Connect attempts, by outcome."),
            &outcome_labels,
        )?;
        r.register(Box::new(probes_total.clone()))?;
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
            lock: Mutex::new(Known::default()),
            port_info,
            port_listening,
            port_diagnosis,
            listener_info,
            accept_queue_length,
            accept_queue_limit,
            probe_success,
            probe_outcome,
            probe_duration,
            probes_total,
            cycle_duration,
            last_cycle,
            peer_up,
            probe_requests,
            reload_successful,
            reload_timestamp,
        })
    }

    /// Replaces every per-port series with those of `snapshot`.
    pub fn set_snapshot(&self, snapshot: &Snapshot) {
        let mut known = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        for g in [
            &self.port_info,
            &self.port_listening,
            &self.port_diagnosis,
            &self.listener_info,
            &self.accept_queue_length,
            &self.accept_queue_limit,
            &self.probe_success,
            &self.probe_outcome,
            &self.probe_duration,
        ] {
            g.reset();
        }
        let mut current = HashSet::new();
        for p in &snapshot.ports {
            let port = p.port.to_string();
            let port_labels = [port.as_str(), PROTOCOL, p.name.as_str()];
            self.port_info
                .with_label_values(&[
                    port.as_str(),
                    PROTOCOL,
                    &p.name,
                    p.expect.as_str(),
                    p.origin.as_str(),
                ])
                .set(1.0);
            self.port_listening
                .with_label_values(&port_labels)
                .set(if p.listening() { 1.0 } else { 0.0 });
            for cause in Cause::ALL {
                self.port_diagnosis
                    .with_label_values(&[port.as_str(), PROTOCOL, &p.name, cause.as_str()])
                    .set(if cause == p.diagnosis.cause { 1.0 } else { 0.0 });
            }
            for l in &p.listeners {
                let address = l.address.to_string();
                let process = l.owner.as_ref().map_or("", |o| o.name.as_str());
                self.listener_info
                    .with_label_values(&[&port, PROTOCOL, &address, l.scope().as_str(), process])
                    .set(1.0);
                let q = [port.as_str(), PROTOCOL, address.as_str()];
                self.accept_queue_length
                    .with_label_values(&q)
                    .set(f64::from(l.accept_queue_length));
                if let Some(limit) = l.accept_queue_limit {
                    self.accept_queue_limit
                        .with_label_values(&q)
                        .set(f64::from(limit));
                }
            }
            for r in &p.probes {
                let labels = probe_labels(p, r);
                let l: Vec<&str> = labels.iter().map(String::as_str).collect();
                let success = r.outcome == Outcome::Success;
                self.probe_success
                    .with_label_values(&l)
                    .set(if success { 1.0 } else { 0.0 });
                self.probe_duration
                    .with_label_values(&l)
                    .set(r.duration.as_secs_f64());
                for o in Outcome::ALL {
                    let mut lo = l.clone();
                    lo.push(o.as_str());
                    self.probe_outcome
                        .with_label_values(&lo)
                        .set(if o == r.outcome { 1.0 } else { 0.0 });
                }
                current.insert(labels);
            }
        }
        for gone in known.probe_series.difference(&current) {
            for o in Outcome::ALL {
                let mut lo: Vec<&str> = gone.iter().map(String::as_str).collect();
                lo.push(o.as_str());
                let _ = self.probes_total.remove_label_values(&lo);
            }
        }
        known.probe_series = current;
    }

    /// Counts attempts in `portsight_probes_total`; every attempt, so failures
    /// between two scrapes are not lost.
    pub fn count_probes(&self, port: &PortStatus, results: &[ProbeResult]) {
        let _known = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        for r in results {
            let labels = probe_labels(port, r);
            let mut l: Vec<&str> = labels.iter().map(String::as_str).collect();
            // Every outcome of a target exists from its first attempt on, so
            // `increase()` sees the first failure too.
            for o in Outcome::ALL {
                l.push(o.as_str());
                let c = self.probes_total.with_label_values(&l);
                if o == r.outcome {
                    c.inc();
                }
                l.pop();
            }
        }
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

    /// The text exposition format.
    pub fn render(&self) -> Result<Vec<u8>, Error> {
        let families = {
            let _known = self.lock.lock().unwrap_or_else(|e| e.into_inner());
            self.registry.gather()
        };
        let mut out = Vec::with_capacity(64 * 1024);
        TextEncoder::new().encode(&families, &mut out)?;
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

fn probe_labels(p: &PortStatus, r: &ProbeResult) -> Vec<String> {
    vec![
        p.port.to_string(),
        PROTOCOL.to_string(),
        p.name.clone(),
        r.target.vantage.as_str().to_string(),
        r.target.source.clone(),
        r.target.addr.to_string(),
    ]
}

fn unix_seconds(t: SystemTime) -> f64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// The content type of [`Metrics::render`]'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
