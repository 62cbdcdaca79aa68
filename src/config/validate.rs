//! Cross-field checks, run once after loading.

use std::collections::HashMap;
use std::time::Duration;

use super::{Config, MAX_CONCURRENCY, MAX_DURATION, fmt_duration};

impl Config {
    /// Cross-field checks; returns the offending key and the reason.
    pub(super) fn validate(&self) -> Result<(), (String, String)> {
        let err = |key: &str, reason: String| Err((key.to_string(), reason));
        if self.scan.interval < Duration::from_millis(100) {
            return err(
                "scan.interval",
                format!(
                    "must be at least 100ms, got {}",
                    fmt_duration(self.scan.interval)
                ),
            );
        }
        if self.probe.timeout.is_zero() {
            return err("probe.timeout", "must be greater than zero".to_string());
        }
        if self.probe.timeout >= self.probe.interval {
            return err(
                "probe.timeout",
                format!(
                    "must be shorter than probe.interval ({} >= {})",
                    fmt_duration(self.probe.timeout),
                    fmt_duration(self.probe.interval)
                ),
            );
        }
        if !(1..=MAX_CONCURRENCY).contains(&self.probe.concurrency) {
            return err(
                "probe.concurrency",
                format!("must be 1 to {MAX_CONCURRENCY}"),
            );
        }
        for (key, value) in [
            ("scan.interval", self.scan.interval),
            ("probe.interval", self.probe.interval),
            ("discover.forget_after", self.discover.forget_after),
            (
                "diagnosis.transient_window",
                self.diagnosis.transient_window,
            ),
            ("peers.timeout", self.peers.timeout),
        ] {
            if value > MAX_DURATION {
                return err(
                    key,
                    format!("must be at most {}", fmt_duration(MAX_DURATION)),
                );
            }
        }
        for (key, list) in [
            ("vantage.addresses", &self.vantage.addresses),
            (
                "vantage.external_addresses",
                &self.vantage.external_addresses,
            ),
        ] {
            if let Some(addr) = list.iter().find(|a| a.is_unspecified() || a.is_multicast()) {
                return err(key, format!("{addr} is not a unicast address"));
            }
        }
        self.validate_peers()?;
        self.validate_probe_server()?;
        let mut seen = HashMap::new();
        for (i, p) in self.ports.iter().enumerate() {
            if p.port == 0 {
                return err(&format!("port[{i}].port"), "must be 1 to 65535".to_string());
            }
            if let Some(first) = seen.insert(p.port, i) {
                return err(
                    &format!("port[{i}].port"),
                    format!("port {} is already listed in port[{first}]", p.port),
                );
            }
        }
        Ok(())
    }

    fn validate_peers(&self) -> Result<(), (String, String)> {
        let mut names = HashMap::new();
        for (i, p) in self.peer_list.iter().enumerate() {
            let key = |k: &str| format!("peer[{i}].{k}");
            if p.name.trim().is_empty() {
                return Err((key("name"), "must not be empty".into()));
            }
            if let Some(first) = names.insert(p.name.as_str(), i) {
                return Err((
                    key("name"),
                    format!("{:?} is already the name of peer[{first}]", p.name),
                ));
            }
            if p.token_file.as_os_str().is_empty() && self.peers.token_file.as_os_str().is_empty() {
                return Err((
                    key("token_file"),
                    "required (or set peers.token_file)".into(),
                ));
            }
        }
        if !self.peers.dns.is_empty() && self.peers.token_file.as_os_str().is_empty() {
            return Err((
                "peers.token_file".into(),
                "required when peers.dns is set".into(),
            ));
        }
        if self.peers.fanout == 0 {
            return Err(("peers.fanout".into(), "must be at least 1".into()));
        }
        if self.has_external_vantage() && self.peers.timeout <= self.probe.timeout {
            return Err((
                "peers.timeout".into(),
                format!(
                    "must be longer than probe.timeout ({} <= {}): a peer probes for that long",
                    fmt_duration(self.peers.timeout),
                    fmt_duration(self.probe.timeout)
                ),
            ));
        }
        Ok(())
    }

    fn validate_probe_server(&self) -> Result<(), (String, String)> {
        let s = &self.probe_server;
        if !s.enabled {
            return Ok(());
        }
        if s.token_file.as_os_str().is_empty() {
            return Err((
                "probe_server.token_file".into(),
                "required when probe_server.enabled: /probe is never served without a token".into(),
            ));
        }
        if s.allow.is_empty() {
            return Err((
                "probe_server.allow".into(),
                "empty: nothing could be probed; list the CIDRs (and ports) peers may probe".into(),
            ));
        }
        if !(1..=MAX_CONCURRENCY).contains(&s.concurrency) {
            return Err((
                "probe_server.concurrency".into(),
                format!("must be 1 to {MAX_CONCURRENCY}"),
            ));
        }
        if !(s.rate_limit > 0.0 && s.rate_limit.is_finite()) {
            return Err((
                "probe_server.rate_limit".into(),
                "must be a positive number of requests per second".into(),
            ));
        }
        if s.burst == 0 {
            return Err(("probe_server.burst".into(), "must be at least 1".into()));
        }
        Ok(())
    }
}
