//! The only place that knows metric names. The per-port families are written
//! as text from a snapshot at scrape time, with typed label sets
//! ([`labels`]); the fixed-size families (cycle stages, peers, requests,
//! reload, process) live in a Prometheus registry.

mod firewall;
mod labels;
mod listeners;
mod namespaces;
mod ports;
mod probes;
mod sources;
#[cfg(test)]
mod tests;
mod text;

use std::sync::Mutex;
use std::time::SystemTime;

use bytes::Bytes;
use prometheus::core::Collector;
use prometheus::{
    CounterVec, Encoder, Gauge, GaugeVec, HistogramOpts, HistogramVec, Opts, Registry, TextEncoder,
};

use crate::probe::{Outcome, ProbeResult};
use crate::snapshot::{PortStatus, Snapshot};
use labels::PortLabels;

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
    /// The text of the per-port families of the snapshot of a generation:
    /// scrapes between two changes (a scan or a probe round) share one
    /// rendering.
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

fn gauge(r: &Registry, name: &str, help: &str) -> Result<Gauge, Error> {
    let g = Gauge::new(name, help)?;
    r.register(Box::new(g.clone()))?;
    Ok(g)
}

/// `portsight_cycle_duration_seconds`, with a series for every stage.
fn cycle_duration(r: &Registry) -> Result<HistogramVec, Error> {
    let h = HistogramVec::new(
        HistogramOpts::new(
            "portsight_cycle_duration_seconds",
            "Time spent in each stage of a cycle.",
        )
        .buckets(vec![
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
        ]),
        &["stage"],
    )?;
    r.register(Box::new(h.clone()))?;
    for stage in [Stage::Scan, Stage::Probe, Stage::Peer] {
        h.with_label_values(&[stage.as_str()]);
    }
    Ok(h)
}

/// `portsight_build_info`.
fn build_info(r: &Registry) -> Result<(), Error> {
    let build_info = gauge_vec(
        r,
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
    Ok(())
}

/// `portsight_probe_requests_total`, with a series for every result.
fn probe_requests(r: &Registry) -> Result<CounterVec, Error> {
    let c = CounterVec::new(
        Opts::new(
            "portsight_probe_requests_total",
            "Probe requests (/probe, /api/v1/probe) from others, by result.",
        ),
        &["result"],
    )?;
    r.register(Box::new(c.clone()))?;
    for result in RequestResult::ALL {
        c.with_label_values(&[result.as_str()]);
    }
    Ok(c)
}

impl Metrics {
    pub fn new() -> Result<Metrics, Error> {
        let r = Registry::new();
        let cycle_duration = cycle_duration(&r)?;
        let last_cycle = gauge_vec(
            &r,
            "portsight_last_cycle_timestamp_seconds",
            "When each stage last completed, in seconds since the epoch.",
            &["stage"],
        )?;
        build_info(&r)?;
        let peer_up = gauge_vec(
            &r,
            "portsight_peer_up",
            "1 if the peer answered the last request for the outside view.",
            &["peer"],
        )?;
        let probe_requests = probe_requests(&r)?;
        let reload_successful = gauge(
            &r,
            "portsight_config_last_reload_successful",
            "1 if the last configuration load succeeded.",
        )?;
        let reload_timestamp = gauge(
            &r,
            "portsight_config_last_reload_success_timestamp_seconds",
            "When the configuration was last loaded successfully, in seconds since the epoch.",
        )?;
        r.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
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

    /// The text exposition format: the per-port families of `snapshot`,
    /// then the registry's, in one buffer (see [`Metrics::render_chunks`]).
    pub fn render(&self, snapshot: &Snapshot) -> Result<Vec<u8>, Error> {
        Ok(self.render_chunks(snapshot)?.concat())
    }

    /// The text exposition format as two chunks to send one after the
    /// other: the per-port families of `snapshot`, rendered once per
    /// `snapshot.generation` and shared by every scrape of it (not
    /// copied), then the registry's.
    pub fn render_chunks(&self, snapshot: &Snapshot) -> Result<[Bytes; 2], Error> {
        let mut rendered = self.rendered.lock().unwrap_or_else(|e| e.into_inner());
        let text = match rendered.take() {
            Some((generation, text)) if generation == snapshot.generation => text,
            previous => {
                let mut text = previous
                    .map_or_else(|| String::with_capacity(64 * 1024), |(_, text)| reuse(text));
                write_snapshot(&mut text, snapshot);
                Bytes::from(text)
            }
        };
        *rendered = Some((snapshot.generation, text.clone()));
        drop(rendered);
        let mut registry = Vec::with_capacity(16 * 1024);
        TextEncoder::new().encode(&self.registry.gather(), &mut registry)?;
        Ok([text, Bytes::from(registry)])
    }
}

/// An empty buffer for the next rendering: the last one's, when no
/// response still sends it (its pages are resident already: writing into
/// fresh ones costs a page fault each), else a new one of its size with
/// room to grow (counts gain digits; growing a buffer copies it).
fn reuse(last: Bytes) -> String {
    let room = last.len() + last.len() / 16;
    match last.try_into_mut() {
        Ok(buffer) => {
            let mut buffer = Vec::from(buffer);
            buffer.clear();
            buffer.reserve(room);
            String::from_utf8(buffer).unwrap_or_default()
        }
        Err(_) => String::with_capacity(room),
    }
}

/// The per-port families of `snapshot`, in the order scrapes have always
/// seen them: the counters first, then ports, listeners and latest probes.
fn write_snapshot(out: &mut String, snapshot: &Snapshot) {
    sources::write(out, &snapshot.sources);
    probes::write_discarded(out, &snapshot.probes_discarded);
    ports::write_left_out(out, snapshot.discovery_left_out);
    namespaces::write_info(out, &snapshot.namespaces);
    if snapshot.ports.is_empty() {
        return;
    }
    let numbers: Vec<String> = snapshot.ports.iter().map(|p| p.port.to_string()).collect();
    let ports: Vec<(&PortStatus, PortLabels)> = snapshot
        .ports
        .iter()
        .zip(&numbers)
        .map(|(p, port)| {
            let labels = PortLabels {
                name: &p.name,
                netns: p.netns.as_ref().map_or("", |n| n.name.as_str()),
                port,
                protocol: p.protocol.as_str(),
            };
            (p, labels)
        })
        .collect();
    probes::write_totals(out, &ports);
    ports::write(out, &ports);
    listeners::write(out, &ports);
    probes::write_latest(out, &ports);
    firewall::write_rules(out, &ports);
    namespaces::write_forwards(out, &ports);
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

fn unix_seconds(t: SystemTime) -> f64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// The content type of [`Metrics::render`]'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
