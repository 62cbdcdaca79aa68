//! Real headless Chromium (Debian's `chromium`), driven over the DevTools
//! protocol on `--remote-debugging-pipe`: JSON messages, each ended by a
//! NUL byte, on the browser's file descriptors 3 (it reads) and 4 (it
//! writes). A pipe, not `--remote-debugging-port`: no port to find or race
//! for, nothing else on the machine can talk to the browser, and no
//! WebSocket client is needed.
//!
//! `Runtime.evaluate` reads the page as a person sees it (text, computed
//! colours) even when the page's own scripts are off
//! (`--blink-settings=scriptEnabled=false`); `Input.dispatchMouseEvent`
//! clicks like a person, so a link followed that way works without script.

use std::fs::{self, File};
use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use serde_json::{Value, json};

pub const CHROMIUM: &str = "/usr/bin/chromium";
/// A hang of Chromium must not stall the suite: every step of one browser
/// together gets this long.
pub const LIMIT: Duration = Duration::from_secs(60);

/// Why Chromium cannot run here, if it cannot.
pub fn unavailable() -> Option<String> {
    (!Path::new(CHROMIUM).exists())
        .then(|| "chromium is not installed (apt-get install chromium)".to_string())
}

/// A browser with one page, ended (its whole process group) when dropped.
pub struct Browser {
    child: Child,
    to: std::io::PipeWriter,
    from: mpsc::Receiver<Value>,
    /// Events that arrived while waiting for something else.
    events: Vec<Value>,
    session: String,
    next_id: u64,
    deadline: Instant,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Browser {
    /// Starts Chromium with a 1280×1024 window and attaches to a new page;
    /// `script: false` turns the pages' own JavaScript off.
    pub fn launch(script: bool) -> Browser {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("chromium.log");
        let (browser_reads, to) = std::io::pipe().unwrap();
        let (from_reader, browser_writes) = std::io::pipe().unwrap();
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
            "--window-size=1280,1024",
            "--hide-scrollbars",
            "--remote-debugging-pipe",
        ])
        .args((!script).then_some("--blink-settings=scriptEnabled=false"))
        .arg(format!(
            "--user-data-dir={}",
            dir.path().join("profile").display()
        ))
        .arg("about:blank")
        // It writes crash reports and dconf state under $HOME whatever
        // --user-data-dir says.
        .env("HOME", dir.path())
        .env("XDG_CONFIG_HOME", dir.path().join("config"))
        .env("XDG_CACHE_HOME", dir.path().join("cache"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(File::create(&log).unwrap())
        // A group of its own, so that its helper processes can be ended with it.
        .process_group(0);
        let (r, w) = (browser_reads.as_raw_fd(), browser_writes.as_raw_fd());
        // SAFETY: between fork and exec only fcntl and dup2, which are
        // async-signal-safe. Both ends are first copied above 10 so that
        // neither is overwritten by the other's dup2 onto 3 or 4; dup2's
        // copies are not close-on-exec, so the browser inherits 3 and 4.
        unsafe {
            cmd.pre_exec(move || {
                let r = libc::fcntl(r, libc::F_DUPFD_CLOEXEC, 10);
                let w = libc::fcntl(w, libc::F_DUPFD_CLOEXEC, 10);
                if r < 0 || w < 0 || libc::dup2(r, 3) < 0 || libc::dup2(w, 4) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().expect("start chromium");
        // Only the browser holds these ends now: its exit ends the reader.
        drop((browser_reads, browser_writes));
        let (tx, from) = mpsc::channel();
        std::thread::spawn(move || {
            for message in BufReader::new(from_reader).split(0) {
                let Ok(message) = message else { break };
                let Ok(value) = serde_json::from_slice::<Value>(&message) else {
                    break;
                };
                if tx.send(value).is_err() {
                    break;
                }
            }
        });
        let mut b = Browser {
            child,
            to,
            from,
            events: Vec::new(),
            session: String::new(),
            next_id: 0,
            deadline: Instant::now() + LIMIT,
            log,
            _dir: dir,
        };
        let target = b.browser_call("Target.createTarget", json!({"url": "about:blank"}));
        let target = target["targetId"].clone();
        let attached = b.browser_call(
            "Target.attachToTarget",
            json!({"targetId": target, "flatten": true}),
        );
        b.session = attached["sessionId"].as_str().unwrap().to_string();
        b.call("Page.enable", json!({}));
        b
    }

    /// Chromium's log, without the D-Bus complaints (no bus in a container).
    fn log(&self) -> String {
        fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter(|l| !l.contains("dbus"))
            .map(|l| format!("{l}\n"))
            .collect()
    }

    fn next(&mut self) -> Value {
        let left = self.deadline.saturating_duration_since(Instant::now());
        match self.from.recv_timeout(left) {
            Ok(v) => v,
            Err(mpsc::RecvTimeoutError::Timeout) => panic!(
                "chromium did not answer within {LIMIT:?}; its log:\n{}",
                self.log()
            ),
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                panic!("chromium exited; its log:\n{}", self.log())
            }
        }
    }

    fn send(&mut self, session: Option<&str>, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut message = json!({"id": id, "method": method, "params": params});
        if let Some(s) = session {
            message["sessionId"] = json!(s);
        }
        let mut bytes = serde_json::to_vec(&message).unwrap();
        bytes.push(0);
        self.to.write_all(&bytes).expect("write to chromium");
        loop {
            let m = self.next();
            if m["id"] == json!(id) {
                assert!(
                    m.get("error").is_none(),
                    "{method} {params}: {m}\nchromium's log:\n{}",
                    self.log()
                );
                return m["result"].clone();
            }
            if m.get("method").is_some() {
                self.events.push(m);
            }
        }
    }

    fn browser_call(&mut self, method: &str, params: Value) -> Value {
        self.send(None, method, params)
    }

    /// Calls `method` on the page.
    pub fn call(&mut self, method: &str, params: Value) -> Value {
        let session = self.session.clone();
        self.send(Some(&session), method, params)
    }

    /// Waits for the page's next `method` event.
    fn event(&mut self, method: &str) -> Value {
        if let Some(i) = self.events.iter().position(|e| e["method"] == method) {
            return self.events.remove(i);
        }
        loop {
            let m = self.next();
            if m["method"] == method {
                return m;
            }
            self.events.push(m);
        }
    }

    /// Runs `navigate` and waits until the page it leads to has loaded.
    fn loading(&mut self, navigate: impl FnOnce(&mut Browser)) {
        self.events.clear();
        navigate(self);
        self.event("Page.loadEventFired");
    }

    /// Opens `url` and waits until it has loaded.
    pub fn open(&mut self, url: &str) {
        self.loading(|b| {
            let r = b.call("Page.navigate", json!({"url": url}));
            assert!(r.get("errorText").is_none(), "{url}: {r}");
        });
    }

    /// The value of a JavaScript expression (evaluated by DevTools, so
    /// also where the page's scripts are off).
    pub fn eval(&mut self, expression: &str) -> Value {
        let r = self.call(
            "Runtime.evaluate",
            json!({"expression": expression, "returnByValue": true}),
        );
        assert!(
            r.get("exceptionDetails").is_none(),
            "{expression}: {}",
            r["exceptionDetails"]
        );
        r["result"]["value"].clone()
    }

    /// Clicks the middle of the element `selector` finds with the mouse,
    /// as a person would, and waits for the page it leads to.
    pub fn click(&mut self, selector: &str) {
        let rect = self.eval(&format!(
            "(() => {{ const r = document.querySelector({}).getBoundingClientRect(); \
             return [r.x + r.width / 2, r.y + r.height / 2]; }})()",
            json!(selector)
        ));
        let (x, y) = (rect[0].clone(), rect[1].clone());
        self.loading(|b| {
            for kind in ["mouseMoved", "mousePressed", "mouseReleased"] {
                b.call(
                    "Input.dispatchMouseEvent",
                    json!({"type": kind, "x": x, "y": y, "button": "left", "clickCount": 1}),
                );
            }
        });
    }

    /// Saves what the window shows as a PNG.
    pub fn screenshot(&mut self, path: &Path) {
        let shot = self.call("Page.captureScreenshot", json!({"format": "png"}));
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().unwrap())
            .unwrap();
        fs::write(path, png).unwrap();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = killpg(Pid::from_raw(self.child.id() as i32), Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

/// Where tests keep what a person may want to look at afterwards:
/// `target/test-artifacts/` (created).
pub fn artifacts() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .unwrap()
        .join("test-artifacts");
    fs::create_dir_all(&dir).unwrap();
    dir
}
