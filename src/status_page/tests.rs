use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

use super::*;
use crate::config::Expect;
use crate::diagnosis::{Diagnosis, Vantages};
use crate::netns::{Namespace, NsId};
use crate::probe::{Target, Vantage};
use crate::snapshot::Origin;
use crate::sockets::{Listener, Owner};

const NOW: SystemTime = SystemTime::UNIX_EPOCH;

fn at(secs: u64) -> SystemTime {
    NOW + Duration::from_secs(secs)
}

/// A TCP port with `cause`, probed from loopback with `outcomes` (one
/// target each), the loopback and interface vantages configured.
fn port(number: u16, expect: Expect, cause: Cause, outcomes: &[(&str, Outcome)]) -> PortStatus {
    PortStatus {
        port: number,
        protocol: Protocol::Tcp,
        name: format!("svc-{number}"),
        expect,
        origin: Origin::Config,
        listeners: Vec::new(),
        probes: outcomes
            .iter()
            .map(|&(ip, outcome)| ProbeResult {
                target: Target::local(
                    Vantage::Loopback,
                    SocketAddr::new(ip.parse().unwrap(), number),
                ),
                outcome,
                duration: Duration::from_millis(1),
                errno: None,
                error: None,
                at: NOW,
                started: Instant::now(),
            })
            .collect(),
        diagnosis: Diagnosis {
            cause,
            summary: format!("summary of {number}"),
            fix: String::new(),
            evidence: Vec::new(),
            firewall: Vec::new(),
            failed: None,
        },
        since: NOW,
        vantages: Vantages {
            loopback: true,
            interface: true,
            external: false,
            host: false,
        },
        probe_counts: Vec::new(),
        netns: None,
        forward: None,
    }
}

fn snapshot(ports: Vec<PortStatus>) -> Snapshot {
    Snapshot {
        ports: std::sync::Arc::new(ports),
        scanned_at: Some(NOW),
        probed_at: Some(NOW),
        ..Snapshot::default()
    }
}

/// The `<tr>` of the row with `id`, up to the next row of the ports table.
fn row<'a>(html: &'a str, id: &str) -> &'a str {
    let start = html
        .find(&format!("<tr id=\"port-{id}\""))
        .unwrap_or_else(|| panic!("no row {id}:\n{html}"));
    let end = html[start + 1..]
        .find("<tr id=\"port-")
        .map_or(html.len(), |e| start + 1 + e);
    &html[start..end]
}

fn row_ids(html: &str) -> Vec<&str> {
    html.split("<tr id=\"port-")
        .skip(1)
        .map(|r| &r[..r.find('"').unwrap()])
        .collect()
}

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
    use crate::config::{Config, PortConfig};
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
    st.apply_scan(&config, scan, Instant::now(), SystemTime::now());
    let (snapshot, _) = st.snapshot(&config, SystemTime::now());
    let html = render(&snapshot, View::default(), SystemTime::now());
    assert!(
        html.contains("<tr id=\"port-53\" class=\"sev-bad\"><td>53</td><td class=\"name\">"),
        "{html}"
    );
    assert!(
        html.contains(
            "<tr id=\"port-53-udp\" class=\"sev-bad\"><td>53/udp</td><td class=\"name\">"
        ),
        "{html}"
    );
    assert!(html.contains("nothing listens on port 53/udp"), "{html}");
}

#[test]
fn the_filter_is_read_from_the_query() {
    for q in [
        "attention=1",
        "attention=true",
        "x=2&attention=on",
        "attention=YES",
    ] {
        assert!(View::from_query(Some(q)).attention, "{q}");
    }
    for q in [
        None,
        Some(""),
        Some("attention=0"),
        Some("attention"),
        Some("x=1"),
    ] {
        assert!(!View::from_query(q).attention, "{q:?}");
    }
}

/// All ports, the critical first, then warnings, then ok, each group in port
/// order; the filter leaves the ok ones out and marks its link as current.
#[test]
fn ports_that_need_attention_come_first_and_the_filter_keeps_only_them() {
    let s = snapshot(vec![
        port(22, Expect::Public, Cause::Ok, &[]),
        port(80, Expect::Public, Cause::Transient, &[]),
        port(443, Expect::Public, Cause::Rejected, &[]),
        port(8080, Expect::Public, Cause::NotListening, &[]),
    ]);
    let all = render(&s, View::default(), NOW);
    assert_eq!(row_ids(&all), ["443", "8080", "80", "22"]);
    assert!(all.contains("4 ports watched, 1 ok, 3 need attention."));
    assert!(all.contains("<a href=\"./\" aria-current=\"page\">all 4 ports</a>"));
    assert!(all.contains("<a href=\"?attention=1\">only the 3 that need attention</a>"));

    let some = render(&s, View { attention: true }, NOW);
    assert_eq!(row_ids(&some), ["443", "8080", "80"]);
    assert!(
        some.contains("<a href=\"?attention=1\" aria-current=\"page\">"),
        "{some}"
    );
    assert!(some.contains("4 ports watched, 1 ok, 3 need attention."));

    let none = render(
        &snapshot(vec![port(22, Expect::Public, Cause::Ok, &[])]),
        View { attention: true },
        NOW,
    );
    assert!(row_ids(&none).is_empty());
    assert!(none.contains("<p id=\"empty\">Nothing needs attention.</p>"));
}

#[test]
fn the_cause_says_its_severity_and_how_long_it_has_held() {
    let mut p = port(80, Expect::Public, Cause::Rejected, &[]);
    p.since = at(100);
    let html = render(
        &snapshot(vec![p]),
        View::default(),
        at(100 + 3 * 3600 + 12 * 60 + 5),
    );
    assert!(
        row(&html, "80").contains(
            "<td class=\"cause bad\"><span class=\"cause-name\">rejected</span>\
             <span class=\"held\">critical for 3h 12m<br>since \
             <time datetime=\"1970-01-01T00:01:40Z\">1970-01-01 00:01:40 UTC</time></span></td>"
        ),
        "{html}"
    );
    assert!(held(Severity::Warning, at(10), at(55)).starts_with("warning for 45s<br>"));
    assert!(
        held(Severity::Ok, at(10), at(0)).starts_with("ok for 0s<br>"),
        "a clock stepped back"
    );
}

/// Each target is a cell saying its outcome in words, with ✓ or ✗ by what
/// the policy wants of its vantage; a vantage without results is "not
/// measured" (and why) where it is configured or the policy wants answers
/// from it, and left out otherwise.
#[test]
fn the_matrix_has_a_cell_per_vantage_and_target() {
    let public = port(
        80,
        Expect::Public,
        Cause::Rejected,
        &[("127.0.0.1", Outcome::Success), ("::1", Outcome::Refused)],
    );
    let mut local = port(
        81,
        Expect::Local,
        Cause::Ok,
        &[("127.0.0.1", Outcome::Timeout), ("::1", Outcome::Success)],
    );
    local.vantages.interface = false;
    let html = render(&snapshot(vec![public, local]), View::default(), NOW);
    let r = row(&html, "80");
    assert!(r.contains(
        "<tr><th scope=\"row\">loopback<span class=\"want\">every target should answer</span></th>\
         <td><span class=\"o success\"><span class=\"addr\">127.0.0.1:80</span>\
         <span class=\"outcome\" title=\"as the policy wants\">✓ success</span></span>\
         <span class=\"o refused\"><span class=\"addr\">[::1]:80</span>\
         <span class=\"outcome\" title=\"not as the policy wants\">✗ refused</span></span></td></tr>"
    ), "{r}");
    assert!(
        r.contains("<td><span class=\"o unmeasured\">not measured yet</span></td>"),
        "interface is configured: {r}"
    );
    assert!(
        r.contains(
            "external<span class=\"want\">every target should answer</span></th>\
             <td><span class=\"o unmeasured\">not measured (no peers configured)</span></td>"
        ),
        "a public port wants external answers: {r}"
    );
    let r = row(&html, "81");
    assert!(
        r.contains("✓ timeout") && r.contains("✓ success"),
        "one loopback target answering is enough for local: {r}"
    );
    assert!(
        !r.contains("interface") && !r.contains("external"),
        "vantages off that local wants closed are left out: {r}"
    );
}

/// A port in a container's namespace, forwarded to from the host: the
/// namespace's name, container and pod, the forward's backend, its
/// listeners and rule, all escaped.
#[test]
fn the_namespace_and_the_forward_are_shown_and_escaped() {
    let ns = |name: &str| Namespace {
        name: name.to_string(),
        container: Some("3f2a9c1b7d4e".into()),
        pod: Some("default/<b>web</b>".into()),
        inode: 4026532512,
        id: NsId::named(name),
    };
    let mut inside = port(80, Expect::Local, Cause::Ok, &[]);
    inside.netns = Some(ns("web-<1>"));
    let mut published = port(8080, Expect::Public, Cause::Forwarded, &[]);
    published.forward = Some(ForwardStatus {
        via: "dnat",
        backend: "10.77.50.2:80".parse().unwrap(),
        netns: Some(ns("web-<1>")),
        on_this_host: true,
        backend_listeners: vec![Listener {
            owner: Some(Owner {
                pid: 77,
                name: "<i>py".into(),
            }),
            ..Listener::on("127.0.0.1".parse().unwrap(), 80)
        }],
        rule: Some("tcp dport 8080 dnat to 10.77.50.2:80 comment \"<x>\"".into()),
    });
    let mut unknown = port(9090, Expect::Public, Cause::Forwarded, &[]);
    unknown.forward = Some(ForwardStatus {
        via: "proxy",
        backend: "10.77.9.9:90".parse().unwrap(),
        netns: None,
        on_this_host: false,
        backend_listeners: Vec::new(),
        rule: None,
    });
    let html = render(
        &snapshot(vec![inside, published, unknown]),
        View::default(),
        NOW,
    );
    let r = row(&html, "80-ns-4026532512");
    assert!(
        r.contains(
            "<td class=\"where\"><b>web-&lt;1&gt;</b>container <code>3f2a9c1b7d4e</code><br>\
             pod default/&lt;b&gt;web&lt;/b&gt;<br><span class=\"meta\">netns inode 4026532512</span></td>"
        ),
        "{r}"
    );
    let r = row(&html, "8080");
    assert!(
        r.contains(
            "<td class=\"where\"><b>host</b><p class=\"forward\">forwarded (dnat) to \
             <code>10.77.50.2:80</code> in web-&lt;1&gt; (container <code>3f2a9c1b7d4e</code>)\
             <br>backend: listening on 127.0.0.1:80 (&lt;i&gt;py, pid 77)\
             <br>by <code>tcp dport 8080 dnat to 10.77.50.2:80 comment &quot;&lt;x&gt;&quot;</code></p></td>"
        ),
        "{r}"
    );
    assert!(
        row(&html, "9090").contains(
            "forwarded (proxy) to <code>10.77.9.9:90</code><br>backend: no listener seen on this host</p>"
        ),
        "{html}"
    );
}

/// The page needs no script and carries none; its only style is the sheet
/// the Content-Security-Policy allows by its hash (no `style` attributes,
/// which it would block).
#[test]
fn the_page_carries_no_script_and_no_inline_style() {
    let html = render(
        &snapshot(vec![port(
            80,
            Expect::Public,
            Cause::Rejected,
            &[("127.0.0.1", Outcome::Refused)],
        )]),
        View::default(),
        NOW,
    );
    let handler = html.split(" on").skip(1).any(|rest| {
        let name = rest.trim_start_matches(|c: char| c.is_ascii_alphabetic());
        name.len() < rest.len() && name.starts_with('=')
    });
    assert!(!html.contains("<script") && !handler, "{html}");
    assert!(!html.contains("style="), "{html}");
    assert_eq!(html.matches("<style>").count(), 1);
    let csp = content_security_policy();
    assert!(
        csp.starts_with("default-src 'none'; style-src 'sha256-"),
        "{csp}"
    );
    assert!(!csp.contains("script-src"), "{csp}");
}
