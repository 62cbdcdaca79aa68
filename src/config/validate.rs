//! Cross-field checks, run once after loading: an ordered list of small
//! rules, the first that fails names the key and the reason.

use std::collections::HashMap;
use std::time::Duration;

use super::{
    Config, MAX_CONCURRENCY, MAX_DURATION, Protocol, Scheme, fmt_duration, parse_server_name,
};

/// The offending key and the reason.
type Checked = Result<(), (String, String)>;

/// Every rule, in the order their errors are reported.
const RULES: &[fn(&Config) -> Checked] = &[
    scan,
    probe,
    durations,
    vantage,
    peer_list,
    peers,
    probe_server,
    discover,
    ports,
];

impl Config {
    /// Cross-field checks; returns the offending key and the reason.
    pub(super) fn validate(&self) -> Checked {
        RULES.iter().try_for_each(|rule| rule(self))
    }
}

fn fail(key: impl Into<String>, reason: impl Into<String>) -> Checked {
    Err((key.into(), reason.into()))
}

fn scan(c: &Config) -> Checked {
    if c.scan.interval < Duration::from_millis(100) {
        let got = fmt_duration(c.scan.interval);
        return fail(
            "scan.interval",
            format!("must be at least 100ms, got {got}"),
        );
    }
    Ok(())
}

/// An unset `probe.timeout` was already fitted to the interval
/// ([`super::Probe::default_timeout`]), so only a set one can be too long.
fn probe(c: &Config) -> Checked {
    let p = &c.probe;
    if p.interval.is_zero() {
        return fail("probe.interval", "must be greater than zero");
    }
    if p.timeout.is_zero() {
        return fail("probe.timeout", "must be greater than zero");
    }
    if p.timeout >= p.interval {
        let (t, i) = (fmt_duration(p.timeout), fmt_duration(p.interval));
        return fail(
            "probe.timeout",
            format!("must be shorter than probe.interval ({t} >= {i})"),
        );
    }
    if !(1..=MAX_CONCURRENCY).contains(&p.concurrency) {
        return fail(
            "probe.concurrency",
            format!("must be 1 to {MAX_CONCURRENCY}"),
        );
    }
    Ok(())
}

fn durations(c: &Config) -> Checked {
    for (key, value) in [
        ("scan.interval", c.scan.interval),
        ("probe.interval", c.probe.interval),
        ("discover.forget_after", c.discover.forget_after),
        ("discover.min_age", c.discover.min_age),
        ("diagnosis.transient_window", c.diagnosis.transient_window),
        ("peers.timeout", c.peers.timeout),
    ] {
        if value > MAX_DURATION {
            return fail(
                key,
                format!("must be at most {}", fmt_duration(MAX_DURATION)),
            );
        }
    }
    Ok(())
}

fn vantage(c: &Config) -> Checked {
    for (key, list) in [
        ("vantage.addresses", &c.vantage.addresses),
        ("vantage.external_addresses", &c.vantage.external_addresses),
    ] {
        if let Some(addr) = list.iter().find(|a| !super::allow::is_unicast(**a)) {
            return fail(key, format!("{addr} is not a unicast address"));
        }
    }
    Ok(())
}

fn peer_list(c: &Config) -> Checked {
    let mut names = HashMap::new();
    for (i, p) in c.peer_list.iter().enumerate() {
        let key = |k: &str| format!("peer[{i}].{k}");
        if p.name.trim().is_empty() {
            return fail(key("name"), "must not be empty");
        }
        if let Some(first) = names.insert(p.name.as_str(), i) {
            let reason = format!("{:?} is already the name of peer[{first}]", p.name);
            return fail(key("name"), reason);
        }
        if p.token_file.as_os_str().is_empty() && c.peers.token_file.as_os_str().is_empty() {
            return fail(key("token_file"), "required (or set peers.token_file)");
        }
        if p.url.scheme_str() != Some("https") {
            tls_keys_unused(&key, &p.ca_file, &p.server_name, "the url is http")?;
        }
        server_name(&key, &p.server_name)?;
    }
    Ok(())
}

fn server_name(key: &dyn Fn(&str) -> String, name: &str) -> Checked {
    if name.is_empty() {
        return Ok(());
    }
    parse_server_name(name).map_or_else(|reason| fail(key("server_name"), reason), |_| Ok(()))
}

/// `ca_file` and `server_name` set where no TLS is spoken: a mistake to
/// say, not to ignore (the token would go in clear text).
fn tls_keys_unused(
    key: &dyn Fn(&str) -> String,
    ca_file: &std::path::Path,
    server_name: &str,
    why: &str,
) -> Checked {
    for (k, set) in [
        ("ca_file", !ca_file.as_os_str().is_empty()),
        ("server_name", !server_name.is_empty()),
    ] {
        if set {
            return fail(key(k), format!("only for https peers; {why}"));
        }
    }
    Ok(())
}

fn peers(c: &Config) -> Checked {
    if !c.peers.dns.is_empty() && c.peers.token_file.as_os_str().is_empty() {
        return fail("peers.token_file", "required when peers.dns is set");
    }
    if c.peers.scheme == Scheme::Http {
        let key = |k: &str| format!("peers.{k}");
        tls_keys_unused(
            &key,
            &c.peers.ca_file,
            &c.peers.server_name,
            "peers.scheme is http",
        )?;
    }
    server_name(&|k: &str| format!("peers.{k}"), &c.peers.server_name)?;
    if c.peers.fanout == 0 {
        return fail("peers.fanout", "must be at least 1");
    }
    if c.has_external_vantage() && c.peers.timeout <= c.probe.timeout {
        let (peers, probe) = (fmt_duration(c.peers.timeout), fmt_duration(c.probe.timeout));
        return fail(
            "peers.timeout",
            format!(
                "must be longer than probe.timeout ({peers} <= {probe}): a peer probes for that long"
            ),
        );
    }
    Ok(())
}

fn probe_server(c: &Config) -> Checked {
    let s = &c.probe_server;
    if !s.enabled {
        return Ok(());
    }
    if s.token_file.as_os_str().is_empty() {
        return fail(
            "probe_server.token_file",
            "required when probe_server.enabled: /probe is never served without a token",
        );
    }
    if s.allow.is_empty() {
        return fail(
            "probe_server.allow",
            "empty: nothing could be probed; list the CIDRs (and ports) peers may probe",
        );
    }
    if !(1..=MAX_CONCURRENCY).contains(&s.concurrency) {
        return fail(
            "probe_server.concurrency",
            format!("must be 1 to {MAX_CONCURRENCY}"),
        );
    }
    if !(s.rate_limit > 0.0 && s.rate_limit.is_finite()) {
        return fail(
            "probe_server.rate_limit",
            "must be a positive number of requests per second",
        );
    }
    if s.burst == 0 {
        return fail("probe_server.burst", "must be at least 1");
    }
    Ok(())
}

/// The largest UDP payload of one IPv4 datagram.
const MAX_PAYLOAD: usize = 65_507;

fn discover(c: &Config) -> Checked {
    if !(1..=usize::from(u16::MAX)).contains(&c.discover.max_ports) {
        return fail("discover.max_ports", "must be 1 to 65535");
    }
    Ok(())
}

fn ports(c: &Config) -> Checked {
    let mut seen = HashMap::new();
    for (i, p) in c.ports.iter().enumerate() {
        if p.port == 0 {
            return fail(format!("port[{i}].port"), "must be 1 to 65535");
        }
        if let Some(first) = seen.insert((p.port, p.protocol, p.netns.as_str()), i) {
            let mut spelled = match p.protocol {
                Protocol::Tcp => p.port.to_string(),
                Protocol::Udp => format!("{}/udp", p.port),
            };
            if !p.netns.is_empty() {
                spelled = format!("{spelled} in netns {:?}", p.netns);
            }
            let reason = format!("port {spelled} is already listed in port[{first}]");
            return fail(format!("port[{i}].port"), reason);
        }
        if p.payload.bytes().len() > MAX_PAYLOAD {
            let reason = format!("must be at most {MAX_PAYLOAD} bytes (one UDP datagram)");
            return fail(format!("port[{i}].payload"), reason);
        }
        if p.protocol == Protocol::Tcp && !p.payload.is_empty() {
            return fail(
                format!("port[{i}].payload"),
                "only a UDP port sends a payload; set protocol = \"udp\" or remove it",
            );
        }
    }
    Ok(())
}
