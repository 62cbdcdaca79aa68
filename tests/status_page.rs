//! The status page at `/` as a person sees it: rendered by real headless
//! Chromium (Debian's `chromium`) from a sidecar in this process that
//! watches three ports on loopback (discovery off, interface vantage off, so
//! only ports this test opened are watched and all traffic stays on
//! loopback). What comes from the system — a configured name, a process
//! name — holds markup, and must show as text.

mod support;

use std::fs::{self, File};
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use portsight::config::Expect;
use support::{sidecar, skip};

const CHROMIUM: &str = "/usr/bin/chromium";
/// A hang of Chromium must not stall the suite.
const CHROMIUM_LIMIT: Duration = Duration::from_secs(60);

/// A configured name that, were it not escaped, would become an image whose
/// failed load runs script: Chromium would run it and change the title.
const HOSTILE_NAME: &str = r#"<img src=x onerror="document.title='pwned'">"#;
/// A process name (at most 15 bytes, the kernel's limit for `comm`) that,
/// were it not escaped, would become an element of its own.
const HOSTILE_PROCESS: &str = "<s id=pwn>";

/// The DOM of `url` once loaded (after any script ran), as Chromium's
/// `--dump-dom` serializes it. Panics when Chromium fails or takes longer
/// than [`CHROMIUM_LIMIT`].
fn dump_dom(url: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let dom_file = dir.path().join("dom.html");
    let log_file = dir.path().join("chromium.log");
    let mut cmd = Command::new(CHROMIUM);
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        // Even with the flags above, Chromium resolves Google's hostnames
        // (accounts.google.com, clients2.google.com, update.googleapis.com)
        // through the host's DNS server; no name is needed here.
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
    ])
    .arg(format!(
        "--user-data-dir={}",
        dir.path().join("profile").display()
    ))
    .arg("--dump-dom")
    .arg(url)
    // It writes crash reports and dconf state under $HOME whatever
    // --user-data-dir says.
    .env("HOME", dir.path())
    .env("XDG_CONFIG_HOME", dir.path().join("config"))
    .env("XDG_CACHE_HOME", dir.path().join("cache"))
    .stdin(Stdio::null())
    .stdout(File::create(&dom_file).unwrap())
    .stderr(File::create(&log_file).unwrap())
    // A group of its own, so that its helper processes can be ended with it.
    .process_group(0);
    let started = Instant::now();
    let mut child = cmd.spawn().expect("start chromium");
    let group = Pid::from_raw(child.id() as i32);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if started.elapsed() > CHROMIUM_LIMIT {
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    // On a timeout the whole group; after an exit, any helper left behind.
    let _ = killpg(group, Signal::SIGKILL);
    if status.is_none() {
        let _ = child.wait();
    }
    // Its stderr is mostly D-Bus complaints (no bus in a container): leave them out.
    let log: String = fs::read_to_string(&log_file)
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.contains("dbus"))
        .map(|l| format!("{l}\n"))
        .collect();
    let Some(status) = status else {
        panic!("chromium did not finish within {CHROMIUM_LIMIT:?}; its log:\n{log}");
    };
    assert!(
        status.success(),
        "chromium exited with {status}; its log:\n{log}"
    );
    eprintln!("chromium rendered {url} in {:.1?}", started.elapsed());
    let dom = fs::read_to_string(&dom_file).unwrap();
    assert!(!dom.is_empty(), "chromium printed no DOM; its log:\n{log}");
    dom
}

/// Text as the DOM serializer escapes it, unescaped.
fn unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&nbsp;", "\u{a0}")
        .replace("&amp;", "&")
}

/// The text of a serialized fragment: tags dropped, entities unescaped.
/// (The serializer escapes every `<` in text, so each `<` opens a tag.)
fn text(html: &str) -> String {
    let mut out = String::new();
    let mut in_tag = false;
    for c in html.chars() {
        match c {
            '<' => in_tag = true,
            '>' if in_tag => in_tag = false,
            c if !in_tag => out.push(c),
            _ => {}
        }
    }
    unescape(&out)
}

/// The inner HTML of the first `<tag ...>` at or after `from` whose opening
/// tag starts with `open` (e.g. `<tr id="port-80"`); elements of one tag
/// do not nest on this page.
fn inner<'a>(html: &'a str, open: &str, tag: &str) -> Option<&'a str> {
    let start = html.find(open)?;
    let body = start + html[start..].find('>')? + 1;
    let end = body + html[body..].find(&format!("</{tag}>"))?;
    Some(&html[body..end])
}

/// One row of `#ports` as a person reads it.
#[derive(Debug)]
struct Row {
    port: String,
    name: String,
    expect: String,
    cause: String,
    cause_class: String,
    summary: String,
    evidence: Vec<String>,
    fix: String,
}

/// The cells of a row: (attributes of the `<td>`, inner HTML).
fn cells(row: &str) -> Vec<(&str, &str)> {
    let mut out = Vec::new();
    let mut rest = row;
    while let Some(start) = rest.find("<td") {
        let attrs_end = start + rest[start..].find('>').unwrap();
        let end = attrs_end + rest[attrs_end..].find("</td>").unwrap();
        out.push((&rest[start + 3..attrs_end], &rest[attrs_end + 1..end]));
        rest = &rest[end + 5..];
    }
    out
}

fn row(dom: &str, port: u16) -> Row {
    let html = inner(dom, &format!("<tr id=\"port-{port}\""), "tr")
        .unwrap_or_else(|| panic!("no row for port {port} in:\n{dom}"));
    let cells = cells(html);
    assert_eq!(cells.len(), 6, "row of port {port}: {html}");
    let what = cells[4].1;
    let (summary, details) = what.split_once("<details").unwrap_or((what, ""));
    Row {
        port: text(cells[0].1),
        name: text(cells[1].1),
        expect: text(cells[2].1),
        cause: text(cells[3].1),
        cause_class: cells[3].0.trim().to_string(),
        summary: text(summary),
        evidence: details
            .split("<li>")
            .skip(1)
            .map(|li| text(li.split("</li>").next().unwrap()))
            .collect(),
        fix: text(cells[5].1),
    }
}

#[test]
fn chromium_shows_one_row_per_port_with_its_cause_and_runs_nothing_from_the_system() {
    if !Path::new(CHROMIUM).exists() {
        skip("chromium is not installed (apt-get install chromium)");
        return;
    }
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

    let dom = dump_dom(&format!("http://{}/", s.addr));

    // Nothing from the system became markup, and no script ran.
    let title = inner(&dom, "<title", "title").map(text);
    assert_eq!(
        title.as_deref(),
        Some("portsight"),
        "the title changed: a handler from an unescaped name ran"
    );
    assert!(
        !dom.to_ascii_lowercase().contains("<img"),
        "a name became an <img> element:\n{dom}"
    );
    assert!(
        !dom.contains("id=\"pwn\""),
        "a process name became an element:\n{dom}"
    );
    assert!(!dom.contains("id=\"not-ready\""), "{dom}");

    let tbody = inner(&dom, "<tbody", "tbody").expect("a <tbody> in #ports");
    assert_eq!(
        tbody.matches("<tr").count(),
        3,
        "one row per watched port:\n{tbody}"
    );
    let counts = inner(&dom, "<p id=\"counts\"", "p").map(text);
    assert_eq!(
        counts.as_deref(),
        Some("3 ports watched, 1 ok, 2 need attention.")
    );

    let owner = format!("{HOSTILE_PROCESS}, pid {pid}");

    let r = row(&dom, public_port);
    assert_eq!(r.port, public_port.to_string(), "{r:?}");
    assert_eq!(
        r.name, HOSTILE_NAME,
        "the name shows as the text it is: {r:?}"
    );
    assert_eq!(r.expect, "public", "{r:?}");
    assert_eq!(r.cause, "loopback_only", "{r:?}");
    assert_eq!(r.cause_class, "class=\"cause bad\"", "{r:?}");
    assert!(
        r.summary.starts_with(&format!(
            "listening on 127.0.0.1:{public_port} ({owner}) only"
        )),
        "the summary names the bind address and the process, as text: {r:?}"
    );
    assert!(
        r.fix
            .starts_with("bind to 0.0.0.0 or :: instead of 127.0.0.1"),
        "{r:?}"
    );

    let r = row(&dom, closed_port);
    assert_eq!(r.port, closed_port.to_string(), "{r:?}");
    assert_eq!(r.name, "gone", "{r:?}");
    assert_eq!(r.expect, "public", "{r:?}");
    assert_eq!(r.cause, "not_listening", "{r:?}");
    assert_eq!(r.cause_class, "class=\"cause bad\"", "{r:?}");
    assert!(
        r.summary
            .starts_with(&format!("nothing listens on port {closed_port}")),
        "{r:?}"
    );
    assert!(
        r.evidence
            .contains(&format!("no listener on port {closed_port}")),
        "{r:?}"
    );
    assert!(r.fix.starts_with("start the service"), "{r:?}");
    assert!(
        r.fix.contains(&format!("(expected {closed_port})")),
        "{r:?}"
    );

    let r = row(&dom, local_port);
    assert_eq!(r.port, local_port.to_string(), "{r:?}");
    assert_eq!(r.name, "admin", "{r:?}");
    assert_eq!(r.expect, "local", "{r:?}");
    assert_eq!(r.cause, "ok", "{r:?}");
    assert_eq!(r.cause_class, "class=\"cause ok\"", "{r:?}");
    assert!(
        r.summary.starts_with("reachable as expected (local)"),
        "{r:?}"
    );
    // The bind address of a port that is ok is in its evidence list
    // (behind the "evidence" disclosure).
    assert!(
        r.evidence
            .iter()
            .any(|e| e.starts_with(&format!("listening on 127.0.0.1:{local_port} ({owner})"))),
        "{r:?}"
    );
    assert_eq!(r.fix, "", "an ok port needs no fix: {r:?}");

    drop((public, local));
}
