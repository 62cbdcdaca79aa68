//! The status page at `/` as a person sees it, in real headless Chromium
//! (`support::chromium`): the rows, their text and their colours as
//! Chromium computed them, with the page's scripts on and off, the filter
//! followed by a mouse click, and a screenshot kept in
//! `target/test-artifacts/`.
//!
//! The live page comes from a sidecar in this process that watches three
//! ports on loopback (discovery off, interface vantage off, so only ports
//! this test opened are watched and all traffic stays on loopback). What
//! comes from the system — a configured name, a process name — holds
//! markup, and must show as text. A page rendered from a snapshot built
//! here (every outcome, a container's port, a forward) is opened as a file.

mod support;

use std::fs;
use std::net::{SocketAddr, TcpListener};
use std::time::{Duration, Instant, SystemTime};

use portsight::config::{Expect, Protocol};
use portsight::diagnosis::{Cause, Diagnosis, Vantages};
use portsight::netns::{Namespace, NsId};
use portsight::probe::{Outcome, ProbeResult, Target, Vantage};
use portsight::snapshot::{ForwardStatus, Origin, PortStatus, Snapshot};
use portsight::sockets::{Listener, Owner};
use portsight::status_page::{self, View};
use serde::Deserialize;
use support::chromium::{self, Browser};
use support::{needs, sidecar};

/// A configured name that, were it not escaped, would become an image whose
/// failed load runs script: Chromium would run it and change the title.
const HOSTILE_NAME: &str = r#"<img src=x onerror="document.title='pwned'">"#;
/// A process name (at most 15 bytes, the kernel's limit for `comm`) that,
/// were it not escaped, would become an element of its own.
const HOSTILE_PROCESS: &str = "<s id=pwn>";

/// What the page shows, read by Chromium: text as laid out, colours as
/// computed from the style sheet.
const READ_PAGE: &str = r#"JSON.stringify({
  title: document.title,
  images: document.querySelectorAll('img').length,
  pwn: document.getElementById('pwn') !== null,
  notReady: document.getElementById('not-ready') !== null,
  counts: document.getElementById('counts').textContent,
  search: location.search,
  current: document.querySelector('#filter [aria-current]').textContent,
  rows: [...document.querySelectorAll('#ports > tbody > tr')].map(tr => {
    const c = tr.children;
    const text = n => [...n.childNodes].filter(x => x.nodeType === 3).map(x => x.textContent).join('');
    return {
      id: tr.id,
      port: c[0].textContent,
      name: c[1].textContent,
      where: c[2].innerText,
      expect: c[3].textContent,
      cause: c[4].querySelector('.cause-name').textContent,
      held: c[4].querySelector('.held').innerText,
      causeColor: getComputedStyle(c[4]).color,
      matrix: [...c[5].querySelectorAll('tr')].map(m => ({
        vantage: m.querySelector('th').firstChild.textContent,
        want: m.querySelector('.want').textContent,
        cells: [...m.querySelectorAll('.o')].map(o => ({
          addr: o.querySelector('.addr') ? o.querySelector('.addr').textContent : null,
          text: o.innerText,
          background: getComputedStyle(o).backgroundColor,
        })),
      })),
      summary: text(c[6]),
      firewall: [...c[6].querySelectorAll('.firewall li')].map(li => li.textContent),
      evidence: [...c[6].querySelectorAll('details li')].map(li => li.textContent),
      fix: c[7].textContent,
    };
  }),
})"#;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Page {
    title: String,
    images: usize,
    pwn: bool,
    not_ready: bool,
    counts: String,
    search: String,
    current: String,
    rows: Vec<Row>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Row {
    id: String,
    port: String,
    name: String,
    #[serde(rename = "where")]
    where_: String,
    expect: String,
    cause: String,
    held: String,
    cause_color: String,
    matrix: Vec<VantageRow>,
    summary: String,
    firewall: Vec<String>,
    evidence: Vec<String>,
    fix: String,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
struct VantageRow {
    vantage: String,
    want: String,
    cells: Vec<Cell>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
struct Cell {
    addr: Option<String>,
    text: String,
    background: String,
}

impl Row {
    fn vantage(&self, v: &str) -> Option<&VantageRow> {
        self.matrix.iter().find(|m| m.vantage == v)
    }

    fn cell(&self, addr: &str) -> &Cell {
        self.matrix
            .iter()
            .flat_map(|m| &m.cells)
            .find(|c| c.addr.as_deref() == Some(addr))
            .unwrap_or_else(|| panic!("no cell for {addr}: {self:#?}"))
    }
}

fn read(b: &mut Browser) -> Page {
    let json = b.eval(READ_PAGE);
    serde_json::from_str(json.as_str().unwrap()).unwrap()
}

fn row<'a>(page: &'a Page, id: &str) -> &'a Row {
    page.rows
        .iter()
        .find(|r| r.id == format!("port-{id}"))
        .unwrap_or_else(|| panic!("no row port-{id}: {page:#?}"))
}

/// The colour a person would name, of a CSS `rgb(r, g, b)`.
fn hue(css: &str) -> &'static str {
    let rgb: Vec<i32> = css
        .trim_start_matches("rgb(")
        .trim_end_matches(')')
        .split(", ")
        .map(|n| n.parse().unwrap_or_else(|_| panic!("not rgb(): {css}")))
        .collect();
    let (r, g, b) = (rgb[0], rgb[1], rgb[2]);
    let spread = r.max(g).max(b) - r.min(g).min(b);
    if spread < 8 {
        "grey"
    } else if g > r + 20 && g > b + 20 {
        "green"
    } else if r > g + 30 && r > b + 30 && g < b + 30 {
        "red"
    } else if r >= g && g > b + 30 {
        "amber"
    } else if b > g + 20 && r > g + 10 {
        "purple"
    } else if b > r + 10 && b >= g {
        "blue-grey"
    } else {
        "other"
    }
}

/// The colour each outcome's cell should look, by the word it says.
fn hue_of_outcome(text: &str) -> &'static str {
    for (word, hue) in [
        ("success", "green"),
        ("refused", "red"),
        ("timeout", "amber"),
        ("unreachable", "purple"),
        ("error", "blue-grey"),
        ("not measured", "grey"),
        ("not probed", "grey"),
    ] {
        if text.contains(word) {
            return hue;
        }
    }
    panic!("a cell that says no outcome: {text:?}")
}

/// Every cell of every row is coloured as the outcome it says in words.
fn assert_cells_coloured_by_outcome(page: &Page) {
    for r in &page.rows {
        for m in &r.matrix {
            assert!(!m.cells.is_empty(), "{r:#?}");
            for c in &m.cells {
                assert_eq!(
                    hue(&c.background),
                    hue_of_outcome(&c.text),
                    "{} {}: {c:?}",
                    r.id,
                    m.vantage
                );
            }
        }
    }
}

#[test]
fn chromium_shows_every_watched_port_with_its_matrix_and_cause_with_and_without_script() {
    needs!(chromium::unavailable());
    // The owner of the listeners below is this process; its name is that of
    // its main thread, which any thread of the process may rename.
    let pid = std::process::id();
    fs::write(format!("/proc/self/task/{pid}/comm"), HOSTILE_PROCESS).unwrap();

    let public = TcpListener::bind("127.0.0.1:0").unwrap();
    let public_port = public.local_addr().unwrap().port();
    let local = TcpListener::bind("127.0.0.1:0").unwrap();
    let local_port = local.local_addr().unwrap().port();
    let closed = support::closed_port();
    let closed_port = closed.port;
    let s = sidecar::start(
        sidecar::config(&[
            (public_port, HOSTILE_NAME, Expect::Public),
            (closed_port, "gone", Expect::Public),
            (local_port, "admin", Expect::Local),
        ]),
        None,
        true,
    );
    s.wait_ready();
    let url = format!("http://{}/", s.addr);

    let mut on = Browser::launch(true);
    let started = Instant::now();
    on.open(&url);
    let page = read(&mut on);
    eprintln!(
        "chromium loaded and read {url} in {:.1?}",
        started.elapsed()
    );
    on.screenshot(&chromium::artifacts().join("status-page.png"));

    // Nothing from the system became markup, and no script ran.
    assert_eq!(
        page.title, "portsight",
        "the title changed: a handler from an unescaped name ran"
    );
    assert_eq!(page.images, 0, "a name became an <img> element");
    assert!(!page.pwn, "a process name became an element");
    assert!(!page.not_ready);
    assert_eq!(page.counts, "3 ports watched, 1 ok, 2 need attention.");
    assert_eq!(page.current, "all 3 ports");
    // Attention first: the two critical ports in port order, then the ok one.
    let mut critical = [public_port, closed_port];
    critical.sort_unstable();
    let ids: Vec<String> = page.rows.iter().map(|r| r.id.clone()).collect();
    let want: Vec<String> = [critical[0], critical[1], local_port]
        .iter()
        .map(|p| format!("port-{p}"))
        .collect();
    assert_eq!(ids, want, "one row per watched port, attention first");
    assert_cells_coloured_by_outcome(&page);

    let owner = format!("{HOSTILE_PROCESS}, pid {pid}");
    let lo = |port: u16| format!("127.0.0.1:{port}");

    let r = row(&page, &public_port.to_string());
    assert_eq!(r.port, public_port.to_string(), "{r:#?}");
    assert_eq!(r.name, HOSTILE_NAME, "the name shows as the text it is");
    assert_eq!((r.where_.as_str(), r.expect.as_str()), ("host", "public"));
    assert_eq!(r.cause, "loopback_only", "{r:#?}");
    assert!(r.held.starts_with("critical for "), "{r:#?}");
    assert_eq!(hue(&r.cause_color), "red", "{r:#?}");
    assert!(
        r.summary.starts_with(&format!(
            "listening on 127.0.0.1:{public_port} ({owner}) only"
        )),
        "the summary names the bind address and the process, as text: {r:#?}"
    );
    assert!(
        r.fix
            .starts_with("bind to 0.0.0.0 or :: instead of 127.0.0.1"),
        "{r:#?}"
    );
    let loopback = r.vantage("loopback").expect("a loopback row");
    assert_eq!(loopback.want, "every target should answer");
    let c = r.cell(&lo(public_port));
    assert_eq!(c.text, format!("{}\n✓ success", lo(public_port)));
    assert_eq!(hue(&c.background), "green");
    let interface = r.vantage("interface").expect("an interface row");
    assert_eq!(interface.cells.len(), 1, "{r:#?}");
    assert_eq!(
        interface.cells[0].text,
        "not measured (turned off in the config)"
    );
    assert_eq!(
        r.vantage("external").map(|m| m.cells[0].text.as_str()),
        Some("not measured (no peers configured)"),
        "a public port wants answers from outside: {r:#?}"
    );

    let r = row(&page, &closed_port.to_string());
    assert_eq!((r.name.as_str(), r.expect.as_str()), ("gone", "public"));
    assert_eq!(r.cause, "not_listening", "{r:#?}");
    assert_eq!(hue(&r.cause_color), "red", "{r:#?}");
    assert!(
        r.summary
            .starts_with(&format!("nothing listens on port {closed_port}")),
        "{r:#?}"
    );
    assert!(
        r.evidence
            .contains(&format!("no listener on port {closed_port}")),
        "{r:#?}"
    );
    assert!(r.fix.starts_with("start the service"), "{r:#?}");
    assert!(
        r.fix.contains(&format!("(expected {closed_port})")),
        "{r:#?}"
    );
    let c = r.cell(&lo(closed_port));
    assert_eq!(c.text, format!("{}\n✗ refused", lo(closed_port)));
    assert_eq!(hue(&c.background), "red");

    let r = row(&page, &local_port.to_string());
    assert_eq!((r.name.as_str(), r.expect.as_str()), ("admin", "local"));
    assert_eq!(r.cause, "ok", "{r:#?}");
    assert!(r.held.starts_with("ok for "), "{r:#?}");
    assert_eq!(hue(&r.cause_color), "green", "{r:#?}");
    assert!(
        r.summary.starts_with("reachable as expected (local)"),
        "{r:#?}"
    );
    assert_eq!(hue(&r.cell(&lo(local_port)).background), "green");
    let vantages: Vec<&str> = r.matrix.iter().map(|m| m.vantage.as_str()).collect();
    assert_eq!(
        vantages,
        ["loopback"],
        "a local port wants nothing of vantages that are off"
    );
    // The bind address of a port that is ok is in its evidence list
    // (behind the "evidence" disclosure).
    assert!(
        r.evidence
            .iter()
            .any(|e| e.starts_with(&format!("listening on 127.0.0.1:{local_port} ({owner})"))),
        "{r:#?}"
    );
    assert_eq!(r.fix, "", "an ok port needs no fix: {r:#?}");
    drop(on);

    // Without JavaScript: the same rows, the same colours; and the filter,
    // followed with the mouse, shows only the ports that need attention.
    let mut off = Browser::launch(false);
    off.open(&url);
    assert_eq!(
        off.eval("document.querySelector('meta[http-equiv=refresh]') !== null"),
        true
    );
    let without = read(&mut off);
    let held = |p: &Page| {
        let mut p = p.clone();
        p.rows.iter_mut().for_each(|r| r.held.clear());
        p
    };
    assert_eq!(held(&without), held(&page), "the page without script");
    off.click("#filter a[href='?attention=1']");
    let filtered = read(&mut off);
    assert_eq!(filtered.search, "?attention=1");
    assert_eq!(filtered.current, "only the 2 that need attention");
    let ids: Vec<&str> = filtered.rows.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids, &want[..2], "only the ports that need attention");
    assert_eq!(filtered.rows[0].matrix, page.rows[0].matrix);
    off.click("#filter a[href='./']");
    assert_eq!(read(&mut off).rows.len(), 3, "back to every port");

    drop((public, local, closed));
}

const NOW: SystemTime = SystemTime::UNIX_EPOCH;

fn probe(vantage: Vantage, addr: &str, outcome: Outcome, source: &str) -> ProbeResult {
    ProbeResult {
        target: Target {
            source: source.to_string(),
            ..Target::local(vantage, addr.parse().unwrap())
        },
        outcome,
        duration: Duration::from_millis(2),
        errno: None,
        error: None,
        at: NOW,
        started: Instant::now(),
    }
}

fn status(port: u16, expect: Expect, cause: Cause, probes: Vec<ProbeResult>) -> PortStatus {
    PortStatus {
        port,
        protocol: Protocol::Tcp,
        name: format!("svc-{port}"),
        expect,
        origin: Origin::Config,
        listeners: Vec::new(),
        probes,
        diagnosis: Diagnosis {
            cause,
            summary: format!("the summary of {port}"),
            fix: String::new(),
            evidence: Vec::new(),
            firewall: Vec::new(),
            failed: None,
        },
        since: NOW,
        vantages: Vantages {
            loopback: true,
            interface: true,
            external: true,
            host: false,
        },
        probe_counts: Vec::new(),
        netns: None,
        forward: None,
    }
}

/// Every outcome, a port of a container and a port forwarded to it: what
/// the live page on loopback cannot show, from a snapshot built here.
fn sample() -> Snapshot {
    use Outcome::*;
    use Vantage::*;
    let every = status(
        8080,
        Expect::Public,
        Cause::Filtered,
        vec![
            probe(Loopback, "127.0.0.1:8080", Success, "local"),
            probe(Loopback, "[::1]:8080", Refused, "local"),
            probe(Interface, "10.77.0.1:8080", Timeout, "local"),
            probe(Interface, "10.77.0.2:8080", Unreachable, "local"),
            probe(Interface, "[fd77::1]:8080", Error, "local"),
        ],
    );
    let web = Namespace {
        name: "web-1".into(),
        container: Some("3f2a9c1b7d4e".into()),
        pod: Some("shop/web-1".into()),
        inode: 4026532512,
        id: NsId::named("web-1"),
    };
    let mut inside = status(
        80,
        Expect::Local,
        Cause::Ok,
        vec![probe(Loopback, "127.0.0.1:80", Success, "local")],
    );
    inside.netns = Some(web.clone());
    let mut published = status(
        8081,
        Expect::Public,
        Cause::Forwarded,
        vec![probe(External, "10.77.0.9:8081", Success, "outside-1")],
    );
    published.forward = Some(ForwardStatus {
        via: "dnat",
        backend: "10.77.50.2:80".parse::<SocketAddr>().unwrap(),
        netns: Some(web),
        on_this_host: true,
        backend_listeners: vec![Listener {
            owner: Some(Owner {
                pid: 77,
                name: "python3".into(),
            }),
            ..Listener::on("127.0.0.1".parse().unwrap(), 80)
        }],
        rule: Some("fib daddr type local tcp dport 8081 dnat to 10.77.50.2:80".into()),
    });
    Snapshot {
        ports: std::sync::Arc::new(vec![inside, every, published]),
        scanned_at: Some(NOW),
        probed_at: Some(NOW),
        ..Snapshot::default()
    }
}

#[test]
fn chromium_colours_every_outcome_apart_and_shows_the_namespace_and_the_forward() {
    needs!(chromium::unavailable());
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("status.html");
    let now = NOW + Duration::from_secs(125);
    fs::write(&file, status_page::render(&sample(), View::default(), now)).unwrap();
    let mut b = Browser::launch(false);
    b.open(&format!("file://{}", file.display()));
    let page = read(&mut b);
    b.screenshot(&chromium::artifacts().join("status-page-sample.png"));

    let ids: Vec<&str> = page.rows.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(
        ids,
        ["port-8080", "port-8081", "port-80-ns-4026532512"],
        "critical, warning, ok"
    );
    assert_cells_coloured_by_outcome(&page);
    let r = row(&page, "8080");
    let mut backgrounds: Vec<&str> = r
        .matrix
        .iter()
        .flat_map(|m| &m.cells)
        .map(|c| c.background.as_str())
        .collect();
    assert_eq!(
        backgrounds.len(),
        6,
        "five outcomes and one not measured: {r:#?}"
    );
    backgrounds.sort_unstable();
    backgrounds.dedup();
    assert_eq!(backgrounds.len(), 6, "six colours apart: {r:#?}");
    assert_eq!(r.cell("10.77.0.1:8080").text, "10.77.0.1:8080\n✗ timeout");
    assert_eq!(r.cell("[fd77::1]:8080").text, "[fd77::1]:8080\n✗ error");
    assert_eq!(
        r.held, "critical for 2m 5s\nsince 1970-01-01 00:00:00 UTC",
        "{r:#?}"
    );

    let r = row(&page, "8081");
    assert_eq!(
        hue(&r.cause_color),
        "amber",
        "forwarded is a warning: {r:#?}"
    );
    assert_eq!(
        r.where_,
        "host\n\nforwarded (dnat) to 10.77.50.2:80 in web-1 (container 3f2a9c1b7d4e)\n\
         backend: listening on 127.0.0.1:80 (python3, pid 77)\n\
         by fib daddr type local tcp dport 8081 dnat to 10.77.50.2:80",
        "{r:#?}"
    );
    assert_eq!(
        r.cell("10.77.0.9:8081").text,
        "10.77.0.9:8081\n✓ success by outside-1"
    );

    let r = row(&page, "80-ns-4026532512");
    assert_eq!(
        r.where_, "web-1\ncontainer 3f2a9c1b7d4e\npod shop/web-1\nnetns inode 4026532512",
        "{r:#?}"
    );
}
