//! The engine and its HTTP server in the test process, on 127.0.0.1:0, with
//! a config that watches only the ports a test opened (discovery off,
//! interface vantage off: everything stays on loopback).
//!
//! [`start_with`] is the one place where tests use the crate's engine, web
//! server and metrics in-process; [`load`] the one place they load a config
//! file through the library.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use portsight::config::{Config, Expect, PortConfig};
use portsight::engine::{self, Engine, Flags, Live, Loaded};
use portsight::metrics::Metrics;
use portsight::web::{Handles, WebConfig};

use super::{Sample, get, parse_metrics, wait_for, wait_scans, within_scans};

/// An engine and its HTTP server, on a runtime of their own.
pub struct Sidecar {
    pub addr: SocketAddr,
    _rt: tokio::runtime::Runtime,
}

/// Watches `ports` (port, name, expect) on loopback; scans every 500 ms and
/// probes rarely, so what a test sees after a change comes from the scan and
/// the re-probe it triggers.
pub fn config(ports: &[(u16, &str, Expect)]) -> Config {
    let mut c = Config::default();
    c.discover.enabled = false;
    c.vantage.interfaces = false;
    c.scan.interval = Duration::from_millis(500);
    c.probe.interval = Duration::from_secs(600);
    c.ports = ports
        .iter()
        .map(|&(port, name, expect)| PortConfig {
            name: name.to_string(),
            ..PortConfig::tcp(port, expect)
        })
        .collect();
    c
}

/// Starts the web server, and the engine's loops when `run`.
pub fn start(config: Config, file: Option<PathBuf>, run: bool) -> Sidecar {
    start_with(config, file, run, None)
}

/// A config file as `serve --config FILE` loads it (no environment overrides).
pub fn load(file: &Path) -> Config {
    Config::load_with_env(Some(file), Default::default())
        .unwrap_or_else(|e| panic!("{}: {e}", file.display()))
}

/// As [`start`], with TLS and basic auth from the exporter-toolkit web
/// config file `web_config`.
pub fn start_with(
    config: Config,
    file: Option<PathBuf>,
    run: bool,
    web_config: Option<&Path>,
) -> Sidecar {
    let web = match web_config {
        Some(path) => WebConfig::load(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
        None => WebConfig::default(),
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let live = Arc::new(Live::with(
        Loaded::new(config).unwrap(),
        file,
        Flags::default(),
    ));
    let metrics = Arc::new(Metrics::new().unwrap());
    metrics.set_reload(true, std::time::SystemTime::now());
    let engine = Arc::new(Engine::new(Arc::clone(&live)));
    let handles = Handles {
        snapshot: engine.subscribe(),
        metrics: Arc::clone(&metrics),
        live,
    };
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    if run {
        rt.spawn(engine::run::run(engine, metrics, std::future::pending()));
    }
    rt.spawn(portsight::web::serve(
        listener,
        handles,
        web,
        std::future::pending(),
    ));
    Sidecar { addr, _rt: rt }
}

impl Sidecar {
    pub fn scrape(&self) -> Vec<Sample> {
        let r = get(self.addr, "/metrics");
        assert_eq!(r.status, 200);
        parse_metrics(&r.body)
    }

    pub fn wait_ready(&self) {
        wait_for(Duration::from_secs(10), "/-/ready", || {
            let r = get(self.addr, "/-/ready");
            if r.status == 200 { Ok(()) } else { Err(r.body) }
        });
    }

    /// Polls `/metrics` until `f` holds; fails if `scans` more socket scans
    /// finish first (see [`super::within_scans`]).
    pub fn within_scans<T>(
        &self,
        scans: u64,
        what: &str,
        f: impl FnMut(&[Sample]) -> Result<T, String>,
    ) -> T {
        within_scans(|| self.scrape(), scans, what, f)
    }

    /// Waits until `scans` more socket scans have finished.
    pub fn wait_scans(&self, scans: u64) {
        wait_scans(|| self.scrape(), scans);
    }
}
