//! alerts/ and dashboards/ proven with the real things.
//!
//! `stopped_service_alerts_with_its_cause_and_every_panel_has_data` builds
//! one network namespace holding a listener on port 8080, `portsight serve`
//! watching it, the real Prometheus (scraping every 1s, evaluating
//! alerts/portsight.yml as is, every 1s), the real Alertmanager and a webhook
//! receiver. It stops the listener and waits for PortsightPortNotListening,
//! with its cause and port labels, at the webhook; starts it again and waits
//! for the resolution; then runs every PromQL expression of dashboards/
//! against that Prometheus. Needs root, prometheus and alertmanager: skips
//! without them, fails in CI.
//!
//! The other tests need nothing but the files (and promtool/amtool, when
//! installed): rule and example-config checks, the runbook's anchors, and
//! the dashboards' shape.

mod support;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use serde_json::Value;
use support::netns::{Host, Served};
use support::prom::{self, Webhook, data, query_string};
use support::{listen, needs, skip, wait_for};

const PROMETHEUS: &str = "127.0.0.1:9090";
const ALERTMANAGER: &str = "127.0.0.1:9093";
const PORTSIGHT: &str = "127.0.0.1:10917";
const WEBHOOK: &str = "127.0.0.1:5001";
const SERVICE: &str = "[::]:8080";

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn addr(a: &str) -> SocketAddr {
    a.parse().unwrap()
}

/// A TCP service on [::]:8080 (both families) that accepts and drops
/// connections, until stopped: then its socket is closed, nothing listens.
struct Service {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Service {
    fn start(host: &Host) -> Service {
        let listener = listen(SERVICE).bind_in(host);
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((conn, _)) => drop(conn),
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        Service {
            stop,
            thread: Some(thread),
        }
    }

    fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }
}

fn unix(t: SystemTime) -> f64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// An instant query's result vector.
fn query(prometheus: &Served, q: &str) -> Result<Vec<Value>, String> {
    let d = data(prometheus.json(&format!("/api/v1/query?{}", query_string(&[("query", q)]))))?;
    Ok(d["result"].as_array().cloned().unwrap_or_default())
}

/// A range query's result matrix, every second from `start` to a second
/// from now (the last step then covers the newest sample).
fn query_range(prometheus: &Served, q: &str, start: SystemTime) -> Result<Vec<Value>, String> {
    let (start, end) = (
        format!("{:.3}", unix(start)),
        format!("{:.3}", unix(SystemTime::now()) + 1.0),
    );
    let d = data(prometheus.json(&format!(
        "/api/v1/query_range?{}",
        query_string(&[
            ("query", q),
            ("start", &start),
            ("end", &end),
            ("step", "1")
        ])
    )))?;
    Ok(d["result"].as_array().cloned().unwrap_or_default())
}

fn label<'a>(alert: &'a Value, name: &str) -> &'a str {
    alert["labels"][name].as_str().unwrap_or("")
}

/// The alerts at the webhook named `alertname` with `status`.
fn received(webhook: &Webhook, alertname: &str, status: &str) -> Vec<Value> {
    webhook
        .alerts()
        .into_iter()
        .filter(|a| label(a, "alertname") == alertname && a["status"] == status)
        .collect()
}

#[test]
fn stopped_service_alerts_with_its_cause_and_every_panel_has_data() {
    needs!(prom::unavailable());
    needs!(support::netns::nft_unavailable());
    let started = Instant::now();
    let t0 = SystemTime::now();
    let host = Host::new("alert");
    // A second port, rejected by a rule of the host's firewall, so that
    // the panels about firewall rules have data.
    let _admin = support::listen("[::]:8081").v6only(false).bind_in(&host);
    host.nft(
        "table inet fw {\n chain input {\n  type filter hook input priority 0;\n  \
         tcp dport 8081 reject comment \"block-admin\"\n }\n}\n",
    );
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name).to_string_lossy().into_owned();

    // portsight: scans every 200ms, probes every 2s, watches 8080 only.
    std::fs::write(
        path("portsight.toml"),
        r#"
[scan]
interval = "200ms"
[probe]
interval = "2s"
timeout = "500ms"
[discover]
enabled = false
[[port]]
port = 8080
name = "web"
expect = "public"
[[port]]
port = 8081
name = "admin"
expect = "public"
"#,
    )
    .unwrap();
    // Prometheus: the rules of alerts/ as they are, evaluated every second.
    let rules = repo("alerts/*.yml");
    let rules = rules.display();
    std::fs::write(
        path("prometheus.yml"),
        format!(
            r#"
global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
rule_files:
  - {rules}
alerting:
  alertmanagers:
    - static_configs:
        - targets: ["{ALERTMANAGER}"]
scrape_configs:
  - job_name: portsight
    static_configs:
      - targets: ["{PORTSIGHT}"]
"#
        ),
    )
    .unwrap();
    // Alertmanager: everything to the webhook, notified within a second.
    std::fs::write(
        path("alertmanager.yml"),
        format!(
            r#"
route:
  receiver: webhook
  group_by: [alertname, instance, netns, port]
  group_wait: 1s
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: webhook
    webhook_configs:
      - url: http://{WEBHOOK}/alerts
        send_resolved: true
"#
        ),
    )
    .unwrap();
    std::fs::create_dir(path("prometheus-data")).unwrap();
    std::fs::create_dir(path("alertmanager-data")).unwrap();

    let webhook = Webhook::start(&host, addr(WEBHOOK));
    let service = Service::start(&host);
    let portsight = host.serve(&[
        "--config",
        &path("portsight.toml"),
        "--web.listen-address",
        PORTSIGHT,
    ]);
    let mut alertmanager = host.serve_program(
        &prom::alertmanager().unwrap(),
        &[
            format!("--config.file={}", path("alertmanager.yml")),
            format!("--storage.path={}", path("alertmanager-data")),
            format!("--web.listen-address={ALERTMANAGER}"),
            "--cluster.listen-address=".into(),
        ],
        addr(ALERTMANAGER),
    );
    let mut prometheus = host.serve_program(
        &prom::prometheus().unwrap(),
        &[
            format!("--config.file={}", path("prometheus.yml")),
            format!("--storage.tsdb.path={}", path("prometheus-data")),
            format!("--web.listen-address={PROMETHEUS}"),
        ],
        addr(PROMETHEUS),
    );
    alertmanager.wait_ready();
    prometheus.wait_ready();

    // Every rule loaded, and Prometheus has seen the port listening and ok.
    let rules = data(prometheus.json("/api/v1/rules")).unwrap();
    let alert_names: BTreeSet<String> = rules["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
        .filter(|r| r["type"] == "alerting")
        .map(|r| r["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(alert_names, alerts_in_file(), "rules Prometheus loaded");
    wait_for(
        Duration::from_secs(30),
        "Prometheus to see port 8080 listening and ok",
        || {
            let r = query(
                &prometheus,
                r#"portsight_port_diagnosis{port="8080",cause="ok"} == 1 and on (port) portsight_port_listening == 1"#,
            )?;
            if r.is_empty() {
                Err(format!(
                    "not yet; portsight says: {}",
                    portsight.get("/api/v1/status").body
                ))
            } else {
                Ok(())
            }
        },
    );
    let dashboards_start = t0;

    // Stop the service: the alert, with its cause, arrives at the webhook.
    let stopped = Instant::now();
    service.stop();
    let alert = wait_for(
        Duration::from_secs(150),
        "PortsightPortNotListening at the webhook",
        || {
            received(&webhook, "PortsightPortNotListening", "firing")
                .into_iter()
                .next()
                .ok_or_else(|| {
                    format!(
                        "webhook got {:?}; ALERTS: {:?}",
                        webhook.alerts(),
                        query(&prometheus, "ALERTS")
                    )
                })
        },
    );
    let fired_after = stopped.elapsed();
    eprintln!("PortsightPortNotListening arrived {fired_after:?} after the service stopped");
    assert!(
        fired_after >= Duration::from_secs(60),
        "fired before its `for` (1m): {fired_after:?}"
    );
    for (k, v) in [
        ("cause", "not_listening"),
        ("port", "8080"),
        ("protocol", "tcp"),
        ("name", "web"),
        ("job", "portsight"),
        ("instance", PORTSIGHT),
        ("severity", "critical"),
    ] {
        assert_eq!(label(&alert, k), v, "label {k}: {alert:#}");
    }
    let description = alert["annotations"]["description"].as_str().unwrap_or("");
    for part in [
        "127.0.0.1:10917: nothing listens on port 8080/tcp (web) any more; cause not_listening.",
        "loopback 127.0.0.1:8080 refused;",
        "loopback [::1]:8080 refused;",
    ] {
        assert!(description.contains(part), "{part:?} in {description:?}");
    }
    let runbook = alert["annotations"]["runbook_url"].as_str().unwrap_or("");
    assert!(
        runbook.ends_with("docs/runbook.md#portsightportnotlistening"),
        "{runbook}"
    );

    // Start it again: the resolution arrives.
    let restarted = Instant::now();
    let service = Service::start(&host);
    wait_for(
        Duration::from_secs(60),
        "the resolution of PortsightPortNotListening at the webhook",
        || {
            received(&webhook, "PortsightPortNotListening", "resolved")
                .into_iter()
                .find(|a| label(a, "port") == "8080" && label(a, "cause") == "not_listening")
                .ok_or_else(|| format!("webhook got {:?}", webhook.alerts()))
        },
    );
    eprintln!(
        "resolved {:?} after the service started again",
        restarted.elapsed()
    );
    let others: Vec<Value> = webhook
        .alerts()
        .into_iter()
        .filter(|a| label(a, "alertname") != "PortsightPortNotListening")
        .filter(|a| {
            !(label(a, "alertname") == "PortsightPortRejected" && label(a, "port") == "8081")
        })
        .collect();
    assert!(others.is_empty(), "no other alert: {others:#?}");

    // portsight stops too, so that "Hosts down" has something to show.
    drop(portsight);
    wait_for(
        Duration::from_secs(20),
        "Prometheus to see portsight down",
        || {
            if query(&prometheus, r#"up{job="portsight"} == 0"#)?.is_empty() {
                Err("up is not 0 yet".into())
            } else {
                Ok(())
            }
        },
    );

    // Every panel and variable query of dashboards/ parses and has data.
    let checked = check_dashboards(&prometheus, dashboards_start);
    eprintln!(
        "{checked} dashboard queries returned data; whole test took {:?}",
        started.elapsed()
    );
    drop(service);
}

/// Runs every expression of dashboards/*.json (panel targets and variable
/// queries, template variables substituted as Grafana would for this host)
/// against Prometheus over [start, now]: each must parse and return data at
/// some point of the run (instant-query panels show one such point); a
/// stat's `… or vector(0)` also without its fallback. Returns how many
/// queries were checked.
fn check_dashboards(prometheus: &Served, start: SystemTime) -> usize {
    let mut checked = 0;
    let mut failures = Vec::new();
    for (file, dashboard) in dashboards() {
        for (what, expr) in expressions(&dashboard) {
            let q = substitute(&expr);
            assert!(!q.contains('$'), "{file} {what}: unsubstituted in {q}");
            // Instant queries at the end must parse too.
            if let Err(e) = query(prometheus, &q) {
                failures.push(format!("{file} {what}: {q}: {e}"));
                continue;
            }
            // A stat's `or vector(0)` shows 0 when nothing matches: what it
            // counts must have had data too, or a typo would show 0 forever.
            let mut variants = vec![q.clone()];
            if let Some(counted) = q.strip_suffix(" or vector(0)") {
                variants.push(counted.to_string());
            }
            for q in variants {
                match query_range(prometheus, &q, start) {
                    Ok(r) if has_data(&r, what.label.as_deref()) => checked += 1,
                    // Parsed; shows other namespaces, which this world lacks.
                    Ok(_) if needs_other_namespaces(&what, &q) => {}
                    Ok(r) => failures.push(format!("{file} {what}: no data: {q} -> {r:?}")),
                    Err(e) => failures.push(format!("{file} {what}: {q}: {e}")),
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    checked
}

/// Queries about containers, pods and forwards into them: this world has
/// none (portsight's namespace scan needs a private PID namespace, which
/// this test does not build), so they are only checked to parse here; the
/// metrics and labels they name are held to the golden exposition by
/// `dashboards_and_alerts_select_only_labels_the_metrics_have`.
fn needs_other_namespaces(what: &Source, q: &str) -> bool {
    what.label.as_deref() == Some("netns")
        || ["portsight_port_forward_info", "portsight_netns_info"]
            .iter()
            .any(|m| q.contains(m))
}

/// Some series of a range result has samples (and a non-empty `label`).
fn has_data(result: &[Value], label: Option<&str>) -> bool {
    result.iter().any(|s| {
        s["values"].as_array().is_some_and(|v| !v.is_empty())
            && label.is_none_or(|l| s["metric"][l].as_str().is_some_and(|v| !v.is_empty()))
    })
}

/// Where an expression comes from; `label` is set for a variable's
/// `label_values(selector, label)`: the results must carry that label.
struct Source {
    name: String,
    label: Option<String>,
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name)
    }
}

fn dashboards() -> Vec<(String, Value)> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo("dashboards"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    assert!(files.len() >= 2, "dashboards/: {files:?}");
    files
        .into_iter()
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap();
            let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{p:?}: {e}"));
            (p.file_name().unwrap().to_string_lossy().into_owned(), v)
        })
        .collect()
}

/// Every panel (rows' panels included).
fn panels(dashboard: &Value) -> Vec<Value> {
    let mut out = Vec::new();
    for p in dashboard["panels"].as_array().cloned().unwrap_or_default() {
        if p["type"] == "row" {
            out.extend(p["panels"].as_array().cloned().unwrap_or_default());
        } else {
            out.push(p);
        }
    }
    out
}

/// The PromQL of every panel target and variable; `label_values(sel, l)`
/// becomes `count by (l) (sel)`.
fn expressions(dashboard: &Value) -> Vec<(Source, String)> {
    let mut out = Vec::new();
    for p in panels(dashboard) {
        for t in p["targets"].as_array().cloned().unwrap_or_default() {
            out.push((
                Source {
                    name: format!("panel {:?} {}", p["title"], t["refId"]),
                    label: None,
                },
                t["expr"].as_str().unwrap_or("").to_string(),
            ));
        }
    }
    for v in dashboard["templating"]["list"]
        .as_array()
        .cloned()
        .unwrap_or_default()
    {
        if v["type"] != "query" {
            continue;
        }
        let def = v["definition"].as_str().unwrap_or("");
        let inner = def
            .strip_prefix("label_values(")
            .and_then(|s| s.strip_suffix(')'))
            .unwrap_or_else(|| panic!("variable {}: {def}", v["name"]));
        let (selector, label) = inner.rsplit_once(',').unwrap();
        out.push((
            Source {
                name: format!("variable {}", v["name"]),
                label: Some(label.trim().to_string()),
            },
            format!("count by ({}) ({})", label.trim(), selector.trim()),
        ));
    }
    out
}

/// Template variables as Grafana substitutes them with this test's host
/// selected, and `$__rate_interval` as for a 15s scrape interval.
fn substitute(expr: &str) -> String {
    let mut q = expr.to_string();
    for (var, value) in [
        ("job", "portsight"),
        ("instance", PORTSIGHT),
        ("netns", ".*"),
        ("port", "8080"),
        ("__rate_interval", "1m"),
    ] {
        q = q
            .replace(&format!("${{{var}}}"), value)
            .replace(&format!("${var}"), value);
    }
    q
}

/// The alert names of alerts/portsight.yml.
fn alerts_in_file() -> BTreeSet<String> {
    read("alerts/portsight.yml")
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
        .map(|s| s.trim().to_string())
        .collect()
}

fn run_ok(program: &str, args: &[&str]) -> Option<String> {
    let out = match Command::new(program)
        .args(args)
        .current_dir(repo("."))
        .output()
    {
        Ok(out) => out,
        Err(e) => {
            skip(&format!("`{program}` cannot run: {e}"));
            return None;
        }
    };
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{program} {}: {text}", args.join(" "));
    Some(text)
}

#[test]
fn rules_pass_promtool_check_and_unit_tests() {
    let mut tests: Vec<String> = std::fs::read_dir(repo("alerts/tests"))
        .unwrap()
        .map(|e| e.unwrap().path().to_string_lossy().into_owned())
        .filter(|p| p.ends_with(".yml"))
        .collect();
    tests.sort();
    let Some(out) = run_ok("promtool", &["check", "rules", "alerts/portsight.yml"]) else {
        return;
    };
    assert!(out.contains("SUCCESS"), "{out}");
    let mut args = vec!["test", "rules"];
    args.extend(tests.iter().map(String::as_str));
    run_ok("promtool", &args);
}

#[test]
fn every_alert_has_severity_annotations_a_test_and_a_runbook_section() {
    let rules = read("alerts/portsight.yml");
    let runbook = read("docs/runbook.md");
    let tests: String = std::fs::read_dir(repo("alerts/tests"))
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .collect();
    let names = alerts_in_file();
    assert!(names.len() >= 14, "{names:?}");
    // Each rule's text, from its `- alert:` line to the next rule.
    let blocks: Vec<&str> = rules.split("- alert: ").skip(1).collect();
    assert_eq!(blocks.len(), names.len());
    for block in blocks {
        let name = block.lines().next().unwrap().trim();
        let severity = block
            .lines()
            .find_map(|l| l.trim().strip_prefix("severity: "))
            .unwrap_or_else(|| panic!("{name}: no severity"));
        assert!(
            ["critical", "warning", "info"].contains(&severity),
            "{name}: severity {severity}"
        );
        for key in ["for: ", "summary: ", "description: ", "runbook_url: "] {
            assert!(block.contains(key), "{name}: no {key}");
        }
        let anchor = name.to_lowercase();
        assert!(
            block.contains(&format!(
                "runbook_url: https://github.com/portsight/portsight/blob/main/docs/runbook.md#{anchor}\n"
            )),
            "{name}: runbook_url"
        );
        assert!(
            runbook.lines().any(|l| l == format!("## {name}")),
            "docs/runbook.md has no `## {name}` section"
        );
        assert!(
            tests.contains(&format!("alertname: {name}\n")),
            "alerts/tests/ has no test of {name}"
        );
    }
}

#[test]
fn example_configs_are_valid_and_route_by_severity_and_cause() {
    let Some(_) = run_ok("promtool", &["check", "config", "config/prometheus.yml"]) else {
        return;
    };
    if which("amtool").is_none() {
        skip("`amtool` is not installed (Debian package prometheus-alertmanager)");
        return;
    }
    run_ok("amtool", &["check-config", "config/alertmanager.yml"]);
    for (labels, receiver) in [
        (
            &[
                "alertname=PortsightPortNotListening",
                "severity=critical",
                "cause=not_listening",
            ][..],
            "oncall-pager",
        ),
        (
            &[
                "alertname=PortsightPortExposed",
                "severity=warning",
                "cause=exposed",
            ][..],
            "security",
        ),
        (
            &[
                "alertname=PortsightPortUnexpectedListener",
                "severity=warning",
                "cause=unexpected_listener",
            ][..],
            "security",
        ),
        (
            &["alertname=PortsightPortFlapping", "severity=warning"][..],
            "team-chat",
        ),
        (
            &["alertname=PortsightPortNeverListening", "severity=info"][..],
            "team-chat",
        ),
        (
            &["alertname=PortsightDown", "severity=critical"][..],
            "oncall-pager",
        ),
    ] {
        let mut args = vec![
            "config",
            "routes",
            "test",
            "--config.file=config/alertmanager.yml",
            "--verify.receivers",
            receiver,
        ];
        args.extend_from_slice(labels);
        run_ok("amtool", &args);
    }
}

fn which(name: &str) -> Option<PathBuf> {
    prom::find_binary(&[name])
}

#[test]
fn dashboards_are_importable_and_every_panel_has_a_purpose() {
    for (file, d) in dashboards() {
        assert!(d["schemaVersion"].as_u64().unwrap_or(0) >= 39, "{file}");
        assert!(!d["uid"].as_str().unwrap_or("").is_empty(), "{file}: uid");
        let inputs = d["__inputs"].as_array().expect("__inputs");
        assert!(
            inputs
                .iter()
                .any(|i| i["name"] == "DS_PROMETHEUS" && i["pluginId"] == "prometheus"),
            "{file}: __inputs"
        );
        let vars: Vec<&Value> = d["templating"]["list"].as_array().unwrap().iter().collect();
        let names: Vec<&str> = vars.iter().filter_map(|v| v["name"].as_str()).collect();
        assert_eq!(
            names,
            ["datasource", "job", "instance", "netns", "port"],
            "{file}: variables"
        );
        // All namespaces by default, and All must match the host's own
        // ports, which have no netns label: `.*` matches the empty value.
        let netns = vars[3];
        assert_eq!(netns["includeAll"], true, "{file}: netns");
        assert_eq!(netns["allValue"], ".*", "{file}: netns");
        assert_eq!(netns["current"]["value"][0], "$__all", "{file}: netns");
        assert_eq!(vars[0]["type"], "datasource");
        assert_eq!(vars[0]["query"], "prometheus");
        assert_eq!(vars[0]["current"]["value"], "${DS_PROMETHEUS}");
        let panels = panels(&d);
        assert!(!panels.is_empty(), "{file}");
        let mut ids = BTreeSet::new();
        for p in &panels {
            let title = p["title"].as_str().unwrap_or("");
            assert!(!title.is_empty(), "{file}: a panel without title");
            assert!(
                ids.insert(p["id"].as_u64().unwrap()),
                "{file}: duplicate id"
            );
            assert!(
                p["description"].as_str().is_some_and(|s| s.len() > 20),
                "{file} {title}: say what the panel is for"
            );
            assert_eq!(p["datasource"]["uid"], "${datasource}", "{file} {title}");
            let targets = p["targets"].as_array().expect("targets");
            assert!(!targets.is_empty(), "{file} {title}: no query");
            for t in targets {
                assert_eq!(t["datasource"]["uid"], "${datasource}", "{file} {title}");
                let expr = t["expr"].as_str().unwrap_or("");
                assert!(!expr.is_empty(), "{file} {title}: empty query");
                for var in ["$job", "$instance"] {
                    assert!(
                        expr.contains(var) || expr.starts_with("count(ALERTS"),
                        "{file} {title}: {expr} ignores {var}"
                    );
                }
                assert!(
                    !expr.contains("$port") || expr.contains("netns=~\"$netns\""),
                    "{file} {title}: {expr} ignores $netns"
                );
            }
            if p["type"] != "table" {
                assert!(
                    p["fieldConfig"]["defaults"]["unit"]
                        .as_str()
                        .is_some_and(|u| !u.is_empty()),
                    "{file} {title}: unit"
                );
            }
            assert!(
                p["fieldConfig"]["defaults"]["thresholds"]["steps"]
                    .as_array()
                    .is_some_and(|s| !s.is_empty()),
                "{file} {title}: thresholds"
            );
        }
    }
}

/// The label names of each metric in the golden exposition
/// (src/metrics/testdata/golden.prom). A family with port labels has
/// `netns` too: the golden file shows it where a port is in another
/// namespace, and the contract puts it on every port family.
fn golden_labels() -> std::collections::BTreeMap<String, BTreeSet<String>> {
    let mut out = std::collections::BTreeMap::<String, BTreeSet<String>>::new();
    for line in read("src/metrics/testdata/golden.prom").lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let end = line.find(['{', ' ']).unwrap_or(line.len());
        let labels = out.entry(line[..end].to_string()).or_default();
        if let Some(rest) = line[end..].strip_prefix('{') {
            for pair in rest.split("\",") {
                if let Some((k, _)) = pair.split_once("=\"") {
                    labels.insert(k.trim().to_string());
                }
            }
        }
    }
    for labels in out.values_mut() {
        if labels.contains("port") {
            labels.insert("netns".into());
        }
    }
    out
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

/// The leading identifier of `s` (after spaces).
fn ident(s: &str) -> &str {
    let s = s.trim_start();
    &s[..s.find(|c| !is_ident(c)).unwrap_or(s.len())]
}

/// What a PromQL text (or a rule file with templated queries) names: the
/// (metric, label) of each `portsight_…{label…}` selector, and the labels
/// of `on`, `by`, `without`, `group_left` and `group_right` lists and of
/// templates (`$labels.x`, `.Labels.x`, `sortByLabel "x"`, `label "x"`).
fn named_labels(text: &str) -> (Vec<(String, String)>, BTreeSet<String>) {
    let (mut selected, mut listed) = (Vec::new(), BTreeSet::new());
    let starts = text
        .char_indices()
        .filter(|&(i, c)| is_ident(c) && !text[..i].ends_with(is_ident));
    for (i, _) in starts {
        let word = ident(&text[i..]);
        let rest = &text[i + word.len()..];
        if word.starts_with("portsight_") || word.starts_with("job_instance_port_vantage:") {
            if let Some(body) = rest.strip_prefix('{').and_then(|b| b.split_once('}')) {
                for part in body.0.split(',') {
                    let label = ident(part);
                    if !label.is_empty() {
                        selected.push((word.to_string(), label.to_string()));
                    }
                }
            }
        } else if ["on", "by", "without", "group_left", "group_right"].contains(&word) {
            let Some((list, _)) = rest
                .trim_start()
                .strip_prefix('(')
                .and_then(|l| l.split_once(')'))
            else {
                continue;
            };
            let labels: Vec<&str> = list.split(',').map(str::trim).collect();
            if labels
                .iter()
                .all(|l| !l.is_empty() && l.chars().all(is_ident))
            {
                listed.extend(labels.iter().map(|l| l.to_string()));
            }
        }
    }
    for prefix in ["$labels.", ".Labels.", "sortByLabel \"", "label \""] {
        for (i, _) in text.match_indices(prefix) {
            listed.insert(ident(&text[i + prefix.len()..]).to_string());
        }
    }
    listed.remove("");
    (selected, listed)
}

/// The `on (…)` and `by (…)` lists of `text` that name a port (`port` and
/// `protocol`).
fn port_lists(text: &str) -> Vec<&str> {
    ["on (", "by ("]
        .iter()
        .flat_map(|k| text.match_indices(k).map(|(i, _)| &text[i + k.len()..]))
        .filter_map(|rest| rest.split_once(')').map(|(list, _)| list))
        .filter(|list| {
            let labels: Vec<&str> = list.split(',').map(str::trim).collect();
            labels.contains(&"port") && labels.contains(&"protocol")
        })
        .collect()
}

#[test]
fn dashboards_and_alerts_select_only_labels_the_metrics_have() {
    let golden = golden_labels();
    // The families only other namespaces have, which the end-to-end world
    // lacks (see needs_other_namespaces): they must at least exist.
    for m in ["portsight_port_forward_info", "portsight_netns_info"] {
        assert!(golden.contains_key(m), "{m} is not in golden.prom");
    }
    let mut known: BTreeSet<String> = golden.values().flatten().cloned().collect();
    // Prometheus' own, and portsight_peer_up's (no peer in golden.prom).
    known.extend(
        [
            "job",
            "instance",
            "alertname",
            "alertstate",
            "severity",
            "__name__",
            "peer",
        ]
        .map(String::from),
    );
    let mut texts = vec![(
        "alerts/portsight.yml".to_string(),
        read("alerts/portsight.yml"),
    )];
    for (file, d) in dashboards() {
        for (what, expr) in expressions(&d) {
            texts.push((format!("{file} {what}"), expr));
        }
    }
    let mut wrong = Vec::new();
    for (what, text) in &texts {
        let (selected, listed) = named_labels(text);
        for (metric, label) in selected {
            if let Some(has) = golden.get(&metric)
                && !has.contains(&label)
                && !["job", "instance"].contains(&label.as_str())
            {
                wrong.push(format!("{what}: {metric} has no label {label}"));
            }
        }
        for label in listed.difference(&known) {
            wrong.push(format!("{what}: no metric has a label {label}"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    // A join or aggregation that keeps the port keeps its namespace: a
    // host port 80 and a container's port 80 are two ports.
    for (what, text) in &texts {
        for list in port_lists(text) {
            assert!(list.contains("netns"), "{what}: ({list}) without netns");
        }
    }
    // The scanner finds what it must: the netns joins of the rules.
    let (_, listed) = named_labels(&read("alerts/portsight.yml"));
    for l in [
        "netns",
        "backend",
        "backend_netns",
        "via",
        "container",
        "pod",
    ] {
        assert!(listed.contains(l), "{l} not found in alerts/portsight.yml");
    }
}
