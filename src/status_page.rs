//! The status page at `/`: one row per port with where it is (namespace,
//! forward), a matrix of its vantages and targets coloured by outcome, its
//! cause with its severity and since when it has held, the cause in words,
//! and a filter to the ports that need attention (`/?attention=1`).
//!
//! Plain HTML and CSS: nothing on it needs script, and it carries none (its
//! Content-Security-Policy allows none). Colour is never the only signal:
//! every cell says its outcome in words. Everything from the system is escaped.

use std::cmp::Reverse;
use std::fmt::Write as _;
use std::sync::LazyLock;
use std::time::{Duration, SystemTime};

use base64::Engine as _;

use crate::config::Protocol;
use crate::diagnosis::{self, Cause, Severity, Want};
use crate::netns::Namespace;
use crate::probe::{Outcome, ProbeResult};
use crate::snapshot::{ForwardStatus, PortStatus, Snapshot};

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}\
table{border-collapse:collapse;width:100%}\
td,th{border-bottom:1px solid #ddd;padding:.4em .6em;text-align:left;vertical-align:top}\
th{background:#f4f4f4}caption{text-align:left;font-weight:bold;padding:.4em 0}\
.cause-name{font-weight:bold;display:block}.held{display:block;font-size:.85em}\
.ok{color:#1a7f37}.warn{color:#9a6700}.bad{color:#cf222e}\
tr.sev-bad>td:first-child{border-left:4px solid #cf222e}\
tr.sev-warn>td:first-child{border-left:4px solid #d4a72c}\
tr.sev-ok>td:first-child{border-left:4px solid #2da44e}\
table.matrix{width:auto}table.matrix th,table.matrix td{border:0;padding:.15em .3em;font-size:.85em}\
table.matrix th{font-weight:normal;white-space:nowrap;background:none;width:10em}\
.want{display:block;color:#555;font-size:.9em}\
.o{display:inline-block;margin:1px;padding:.2em .4em;min-width:8.5em;vertical-align:top}\
.addr{display:block;font-family:ui-monospace,monospace;white-space:nowrap}\
.outcome{font-weight:bold}\
.success{background:#c8ecd1}.refused{background:#f9c9c9}.timeout{background:#fbe3b3}\
.unreachable{background:#e2d2f5}.error{background:#d3dce6}\
.unmeasured{background:#eeeeee;color:#555;font-style:italic;outline:1px dashed #999}\
.where b{display:block}.forward{margin:.3em 0 0;font-size:.9em}\
details{font-size:.9em;color:#555}ul{margin:.3em 0;padding-left:1.2em}\
nav a{margin-right:.8em}nav a[aria-current]{font-weight:bold;text-decoration:none;color:#222}\
.meta{color:#666;font-size:.9em}td.name{overflow-wrap:anywhere;min-width:6em;max-width:12em}\
td.what{min-width:14em}td.fix{min-width:10em}";

/// What the page shows: every port, or those that need attention only.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct View {
    /// Only the ports whose cause is not `ok` (`?attention=1`).
    pub attention: bool,
}

impl View {
    /// The view a query string asks for: `attention=1` (or `true`, `yes`,
    /// `on`) for the ports that need attention; anything else, all of them.
    pub fn from_query(query: Option<&str>) -> View {
        let attention =
            form_urlencoded::parse(query.unwrap_or_default().as_bytes()).any(|(k, v)| {
                k == "attention" && matches!(&*v.to_ascii_lowercase(), "1" | "true" | "yes" | "on")
            });
        View { attention }
    }
}

/// The page's Content-Security-Policy: no script, no images, no frames;
/// only its own style sheet, by its hash.
pub fn content_security_policy() -> &'static str {
    static CSP: LazyLock<String> = LazyLock::new(|| {
        let hash = ring::digest::digest(&ring::digest::SHA256, STYLE.as_bytes());
        format!(
            "default-src 'none'; style-src 'sha256-{}'; base-uri 'none'; \
             form-action 'self'; frame-ancestors 'none'",
            base64::engine::general_purpose::STANDARD.encode(hash)
        )
    });
    &CSP
}

fn needs_attention(p: &PortStatus) -> bool {
    p.diagnosis.cause != Cause::Ok
}

/// Renders the page as of `now`: the ports `view` selects, those that need
/// attention first (critical, then warning), each group in port order.
pub fn render(snapshot: &Snapshot, view: View, now: SystemTime) -> String {
    let mut h = String::with_capacity(8192 + snapshot.ports.len() * 2048);
    head(&mut h, view);
    if !snapshot.ready() {
        h.push_str(
            "<p id=\"not-ready\">The first scan and probe round have not completed yet.</p>",
        );
    }
    let total = snapshot.ports.len();
    let not_ok = snapshot.ports.iter().filter(|p| needs_attention(p)).count();
    let _ = write!(
        h,
        "<p id=\"counts\">{total} ports watched, {} ok, {not_ok} need attention.</p>",
        total - not_ok,
    );
    filter(&mut h, view, total, not_ok);
    let mut ports: Vec<&PortStatus> = snapshot
        .ports
        .iter()
        .filter(|p| !view.attention || needs_attention(p))
        .collect();
    ports.sort_by_key(|p| Reverse(p.diagnosis.cause.severity()));
    if ports.is_empty() {
        h.push_str(if view.attention {
            "<p id=\"empty\">Nothing needs attention.</p>"
        } else {
            "<p id=\"empty\">No ports are watched.</p>"
        });
    } else {
        let _ = write!(
            h,
            "<table id=\"ports\"><caption>{}</caption><thead><tr>\
             <th scope=\"col\">port</th><th scope=\"col\">name</th><th scope=\"col\">where</th>\
             <th scope=\"col\">expect</th><th scope=\"col\">cause</th>\
             <th scope=\"col\">reachability by vantage and target</th>\
             <th scope=\"col\">what</th><th scope=\"col\">fix</th></tr></thead><tbody>",
            if view.attention {
                "The ports that need attention, the most severe first"
            } else {
                "Every watched port, those that need attention first"
            }
        );
        for p in ports {
            row(&mut h, p, now);
        }
        h.push_str("</tbody></table>");
    }
    h.push_str("</body></html>\n");
    h
}

fn head(h: &mut String, view: View) {
    h.push_str("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">");
    // A refresh reloads this same URL, so the filter stays.
    h.push_str("<meta http-equiv=\"refresh\" content=\"15\">");
    h.push_str("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">");
    h.push_str(if view.attention {
        "<title>portsight: needs attention</title><style>"
    } else {
        "<title>portsight</title><style>"
    });
    h.push_str(STYLE);
    h.push_str("</style></head><body><h1>portsight</h1>");
    h.push_str("<p>Is this port reachable, from where, and if not, why?</p>");
    h.push_str(
        "<p class=\"meta\"><a href=\"metrics\">/metrics</a> · \
         <a href=\"api/v1/status\">/api/v1/status</a> · \
         <a href=\"-/healthy\">/-/healthy</a> · <a href=\"-/ready\">/-/ready</a></p>",
    );
}

/// Two links, so that the filter works without script; the one shown is marked.
fn filter(h: &mut String, view: View, total: usize, not_ok: usize) {
    let current = |on: bool| {
        if on { " aria-current=\"page\"" } else { "" }
    };
    let _ = write!(
        h,
        "<nav id=\"filter\" aria-label=\"which ports\">Show: \
         <a href=\"./\"{}>all {total} ports</a> \
         <a href=\"?attention=1\"{}>only the {not_ok} that need attention</a></nav>",
        current(!view.attention),
        current(view.attention),
    );
}

fn row(h: &mut String, p: &PortStatus, now: SystemTime) {
    let d = &p.diagnosis;
    let class = class(d.cause.severity());
    // TCP rows as they always were (`port-80`, `80`); UDP `port-53-udp`,
    // `53/udp`; a port of another namespace ends in `-ns-<inode>`.
    let mut id = p.port.to_string();
    if p.protocol == Protocol::Udp {
        id.push_str("-udp");
    }
    if let Some(ns) = &p.netns {
        let _ = write!(id, "-ns-{}", ns.inode);
    }
    let _ = write!(
        h,
        "<tr id=\"port-{id}\" class=\"sev-{class}\"><td>{port}</td><td class=\"name\">{name}</td>\
         <td class=\"where\">",
        port = match p.protocol {
            Protocol::Tcp => p.port.to_string(),
            Protocol::Udp => p.key().to_string(),
        },
        name = escape(&p.name),
    );
    namespace(h, p.netns.as_ref());
    if let Some(f) = &p.forward {
        forward(h, f);
    }
    let _ = write!(
        h,
        "</td><td>{expect}</td><td class=\"cause {class}\">\
         <span class=\"cause-name\">{cause}</span><span class=\"held\">{held}</span></td><td>",
        expect = p.expect,
        cause = d.cause.as_str(),
        held = held(d.cause.severity(), p.since, now),
    );
    matrix(h, p);
    let _ = write!(h, "</td><td class=\"what\">{}", escape(&d.summary));
    what(h, d);
    let _ = write!(h, "</td><td class=\"fix\">{}</td></tr>", escape(&d.fix));
}

fn class(s: Severity) -> &'static str {
    match s {
        Severity::Ok => "ok",
        Severity::Warning => "warn",
        Severity::Critical => "bad",
    }
}

/// `critical for 3m 12s<br>since <time>…</time>`.
fn held(severity: Severity, since: SystemTime, now: SystemTime) -> String {
    let word = match severity {
        Severity::Ok => "ok",
        Severity::Warning => "warning",
        Severity::Critical => "critical",
    };
    let secs = now.duration_since(since).unwrap_or_default().as_secs();
    // The two largest units: `3h 12m`, `2days 4h`, `45s`.
    let full = humantime::format_duration(Duration::from_secs(secs)).to_string();
    let short: Vec<&str> = full.split(' ').take(2).collect();
    let at = humantime::format_rfc3339_seconds(since);
    format!(
        "{word} for {}<br>since <time datetime=\"{at}\">{}</time>",
        short.join(" "),
        at.to_string().replace('T', " ").replace('Z', " UTC")
    )
}

/// The port's namespace: `host` for portsight's own, else its name, and
/// the container and pod it belongs to where known.
fn namespace(h: &mut String, ns: Option<&Namespace>) {
    let Some(ns) = ns else {
        h.push_str("<b>host</b>");
        return;
    };
    let _ = write!(h, "<b>{}</b>", escape(&ns.name));
    if let Some(c) = &ns.container {
        let _ = write!(h, "container <code>{}</code><br>", escape(c));
    }
    if let Some(pod) = &ns.pod {
        let _ = write!(h, "pod {}<br>", escape(pod));
    }
    let _ = write!(h, "<span class=\"meta\">netns inode {}</span>", ns.inode);
}

/// `forwarded (dnat) to 10.77.50.2:80 in web-1`, its backend's listeners
/// and the rule or process that forwards.
fn forward(h: &mut String, f: &ForwardStatus) {
    let _ = write!(
        h,
        "<p class=\"forward\">forwarded ({}) to <code>{}</code>",
        escape(f.via),
        f.backend
    );
    if let Some(ns) = &f.netns {
        let _ = write!(h, " in {}", escape(&ns.name));
        if let Some(c) = &ns.container {
            let _ = write!(h, " (container <code>{}</code>)", escape(c));
        }
    }
    h.push_str("<br>backend: ");
    if f.backend_listeners.is_empty() {
        h.push_str("no listener seen on this host");
    } else {
        let on: Vec<String> = f
            .backend_listeners
            .iter()
            .map(diagnosis::describe)
            .collect();
        let _ = write!(h, "listening on {}", escape(&on.join(" and ")));
    }
    if let Some(rule) = &f.rule {
        let _ = write!(h, "<br>by <code>{}</code>", escape(rule));
    }
    h.push_str("</p>");
}

/// A row per vantage, a cell (a box, so that they wrap) per target coloured by its outcome and saying
/// it in words, with ✓ where it is what the policy wants and ✗ where not.
/// A vantage without results that is configured, or that the policy wants
/// answers from, has one "not measured" cell saying why.
fn matrix(h: &mut String, p: &PortStatus) {
    h.push_str("<table class=\"matrix\"><tbody>");
    let mut rows = 0;
    for (v, configured) in p.vantages.each() {
        let of: Vec<&ProbeResult> = p.probes.iter().filter(|r| r.target.vantage == v).collect();
        let want = diagnosis::want(p.expect, v);
        if of.is_empty() && !configured && want == Want::None {
            continue;
        }
        rows += 1;
        let _ = write!(
            h,
            "<tr><th scope=\"row\">{}<span class=\"want\">{}</span></th>",
            v.as_str(),
            match want {
                Want::All => "every target should answer",
                Want::Any => "one target should answer",
                Want::None => "should be closed",
            }
        );
        h.push_str("<td>");
        if of.is_empty() {
            let why = diagnosis::not_measured(v, configured, p.protocol, p.probed());
            let _ = write!(h, "<span class=\"o unmeasured\">{why}</span>");
        }
        let any_ok = of.iter().any(|r| r.outcome == Outcome::Success);
        for r in &of {
            cell(h, r, want, any_ok);
        }
        h.push_str("</td></tr>");
    }
    if rows == 0 {
        h.push_str(
            "<tr><td><span class=\"o unmeasured\">no vantage measures this port</span></td></tr>",
        );
    }
    h.push_str("</tbody></table>");
}

fn cell(h: &mut String, r: &ProbeResult, want: Want, any_ok: bool) {
    let ok = r.outcome == Outcome::Success;
    let as_wanted = match want {
        Want::All => ok,
        Want::Any => any_ok,
        Want::None => !ok,
    };
    let (mark, title) = if as_wanted {
        ("✓", "as the policy wants")
    } else {
        ("✗", "not as the policy wants")
    };
    let by = if r.target.source == crate::probe::LOCAL {
        String::new()
    } else {
        format!(" by {}", escape(&r.target.source))
    };
    let _ = write!(
        h,
        "<span class=\"o {o}\"><span class=\"addr\">{addr}</span>\
         <span class=\"outcome\" title=\"{title}\">{mark} {o}</span>{by}</span>",
        o = r.outcome.as_str(),
        addr = r.target.addr,
    );
}

/// The firewall rules named, and the evidence behind a disclosure.
fn what(h: &mut String, d: &diagnosis::Diagnosis) {
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
    h.push_str("</ul></details>");
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
mod tests;
