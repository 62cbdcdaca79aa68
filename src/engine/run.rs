//! The loops of `serve`: a scan every `scan.interval`, a probe round every
//! `probe.interval` (with jitter), and an immediate re-probe of the ports
//! whose listeners changed. They only schedule, and report each stage's
//! cost to the metrics.

use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::mpsc;

use super::{Engine, PortKey, ScanReport};
use crate::metrics::{Metrics, Stage};

/// Runs the scan loop, the probe loop and the re-probe loop until
/// `shutdown` resolves.
pub async fn run(
    engine: Arc<Engine>,
    metrics: Arc<Metrics>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let (changed_tx, mut changed_rx) = mpsc::unbounded_channel::<Vec<PortKey>>();
    // The first probe round needs the first watch list.
    let first_scan = Instant::now();
    scanned(&metrics, &engine.scan().await);
    let scanner = {
        let (engine, metrics) = (Arc::clone(&engine), Arc::clone(&metrics));
        tokio::spawn(async move {
            let mut started = first_scan;
            loop {
                let interval = engine.live().current().config.scan.interval;
                tokio::time::sleep(interval.saturating_sub(started.elapsed())).await;
                started = Instant::now();
                let report = engine.scan().await;
                scanned(&metrics, &report);
                if !report.changed.is_empty() {
                    tracing::debug!(ports = ?report.changed, "listeners changed");
                    let _ = changed_tx.send(report.changed);
                }
            }
        })
    };
    let reprober = {
        let (engine, metrics) = (Arc::clone(&engine), Arc::clone(&metrics));
        tokio::spawn(async move {
            while let Some(mut ports) = changed_rx.recv().await {
                while let Ok(more) = changed_rx.try_recv() {
                    ports.extend(more);
                }
                ports.sort_unstable();
                ports.dedup();
                probe_round(&engine, &metrics, Some(&ports)).await;
            }
        })
    };
    let prober = {
        let (engine, metrics) = (Arc::clone(&engine), Arc::clone(&metrics));
        tokio::spawn(async move {
            loop {
                let started = Instant::now();
                probe_round(&engine, &metrics, None).await;
                let interval = jittered(engine.live().current().config.probe.interval);
                tokio::time::sleep(interval.saturating_sub(started.elapsed())).await;
            }
        })
    };
    shutdown.await;
    scanner.abort();
    reprober.abort();
    prober.abort();
}

fn scanned(metrics: &Metrics, report: &ScanReport) {
    if !report.failed {
        metrics.observe_stage(Stage::Scan, report.took.as_secs_f64(), SystemTime::now());
    }
}

/// Local probes of `ports` (all when `None`), then the peers; reports the
/// cost of a full round, and the peers.
async fn probe_round(engine: &Engine, metrics: &Metrics, ports: Option<&[PortKey]>) {
    let round = engine.probe(ports).await;
    if ports.is_none() {
        metrics.observe_stage(Stage::Probe, round.took.as_secs_f64(), SystemTime::now());
    }
    if !round.external {
        // No peers (any more): no peer_up series either.
        metrics.set_peers(&[], &[]);
    } else if let Some(answers) = engine.ask_peers(&round).await {
        let known: Vec<&str> = answers.known.iter().map(String::as_str).collect();
        metrics.set_peers(&answers.up, &known);
        metrics.observe_stage(Stage::Peer, answers.took.as_secs_f64(), SystemTime::now());
    }
}

/// `interval` ± 10%, so a fleet started together does not probe in step.
fn jittered(interval: Duration) -> Duration {
    let r = RandomState::new().hash_one(Instant::now()) % 2001; // 0..=2000
    interval.mul_f64(0.9 + r as f64 / 10_000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_within_ten_percent() {
        for _ in 0..100 {
            let d = jittered(Duration::from_secs(10));
            assert!(
                d >= Duration::from_secs(9) && d <= Duration::from_secs(11),
                "{d:?}"
            );
        }
    }
}
