//! The status page at `/`: one row per port with its cause in words,
//! readable without Grafana. Everything from the system is escaped.

use std::fmt::Write as _;

use crate::config::Protocol;
use crate::diagnosis::{Cause, Severity};
use crate::snapshot::Snapshot;

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}\
table{border-collapse:collapse;width:100%}\
td,th{border-bottom:1px solid #ddd;padding:.4em .6em;text-align:left;vertical-align:top}\
th{background:#f4f4f4}.cause{font-weight:bold;white-space:nowrap}\
.ok{color:#1a7f37}.warn{color:#9a6700}.bad{color:#cf222e}\
details{font-size:.9em;color:#555}ul{margin:.3em 0;padding-left:1.2em}\
.meta{color:#666;font-size:.9em}";

/// Renders the page.
pub fn render(snapshot: &Snapshot) -> String {
    let mut h = String::with_capacity(8192);
    h.push_str("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">");
    h.push_str("<meta http-equiv=\"refresh\" content=\"15\">");
    h.push_str("<title>portsight</title><style>");
    h.push_str(STYLE);
    h.push_str("</style></head><body><h1>portsight</h1>");
    h.push_str("<p>Is this port reachable, from where, and if not, why?</p>");
    h.push_str(
        "<p class=\"meta\"><a href=\"metrics\">/metrics</a> · \
         <a href=\"api/v1/status\">/api/v1/status</a> · \
         <a href=\"-/healthy\">/-/healthy</a> · <a href=\"-/ready\">/-/ready</a></p>",
    );
    if !snapshot.ready() {
        h.push_str(
            "<p id=\"not-ready\">The first scan and probe round have not completed yet.</p>",
        );
    }
    let not_ok = snapshot
        .ports
        .iter()
        .filter(|p| p.diagnosis.cause != Cause::Ok)
        .count();
    let _ = write!(
        h,
        "<p id=\"counts\">{} ports watched, {} ok, {} need attention.</p>",
        snapshot.ports.len(),
        snapshot.ports.len() - not_ok,
        not_ok
    );
    h.push_str(
        "<table id=\"ports\"><thead><tr><th>port</th><th>name</th><th>expect</th>\
         <th>cause</th><th>what</th><th>fix</th></tr></thead><tbody>",
    );
    for p in &snapshot.ports {
        let d = &p.diagnosis;
        let _ = write!(
            h,
            "<tr id=\"port-{id}\"><td>{port}</td><td>{name}</td><td>{expect}</td>\
             <td class=\"cause {class}\">{cause}</td><td>{summary}",
            // TCP rows as they always were (`port-80`, `80`); UDP `port-53-udp`, `53/udp`.
            id = match p.protocol {
                Protocol::Tcp => p.port.to_string(),
                Protocol::Udp => format!("{}-udp", p.port),
            },
            port = match p.protocol {
                Protocol::Tcp => p.port.to_string(),
                Protocol::Udp => p.key().to_string(),
            },
            name = escape(&p.name),
            expect = p.expect,
            class = class(d.cause),
            cause = d.cause.as_str(),
            summary = escape(&d.summary),
        );
        if !d.firewall.is_empty() {
            h.push_str("<ul class=\"firewall\">");
            for r in &d.firewall {
                let maybe = r
                    .may_match
                    .as_ref()
                    .map(|w| format!(" (may match: {w})"))
                    .unwrap_or_default();
                let _ = write!(
                    h,
                    "<li>firewall: <code>{}</code>{}</li>",
                    escape(&r.to_string()),
                    escape(&maybe)
                );
            }
            h.push_str("</ul>");
        }
        h.push_str("<details><summary>evidence</summary><ul>");
        for line in &d.evidence {
            let _ = write!(h, "<li>{}</li>", escape(line));
        }
        let _ = write!(h, "</ul></details></td><td>{}</td></tr>", escape(&d.fix));
    }
    h.push_str("</tbody></table></body></html>\n");
    h
}

fn class(c: Cause) -> &'static str {
    match c.severity() {
        Severity::Ok => "ok",
        Severity::Warning => "warn",
        Severity::Critical => "bad",
    }
}

/// Escapes text for HTML; process names come from the system and may hold anything.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup() {
        assert_eq!(
            escape("<script>a&'\"</script>"),
            "&lt;script&gt;a&amp;&#39;&quot;&lt;/script&gt;"
        );
    }

    /// 53/tcp and 53/udp are two rows with two ids.
    #[test]
    fn tcp_and_udp_of_one_number_are_two_rows() {
        use crate::config::{Config, Expect, PortConfig};
        use crate::engine::state::{Scan, State};
        let mut config = Config::default();
        config.discover.enabled = false;
        config.ports = vec![
            PortConfig::tcp(53, Expect::Public),
            PortConfig {
                protocol: Protocol::Udp,
                ..PortConfig::tcp(53, Expect::Public)
            },
        ];
        let mut st = State::default();
        let scan = Scan {
            listeners: Vec::new(),
            source: crate::sockets::Source::Netlink,
            sources: Default::default(),
            ephemeral: 32768..=60999,
            tcpext: None,
            conntrack: None,
            namespaces: Vec::new(),
            forwards: None,
        };
        st.apply_scan(
            &config,
            scan,
            std::time::Instant::now(),
            std::time::SystemTime::now(),
        );
        let (snapshot, _) = st.snapshot(&config, std::time::SystemTime::now());
        let html = render(&snapshot);
        assert!(html.contains("<tr id=\"port-53\"><td>53</td>"), "{html}");
        assert!(
            html.contains("<tr id=\"port-53-udp\"><td>53/udp</td>"),
            "{html}"
        );
        assert!(html.contains("nothing listens on port 53/udp"), "{html}");
    }
}
