//! deploy/kubernetes: the PrometheusRule is alerts/portsight.yml unchanged,
//! the DaemonSet has the Debian unit's privileges and DESIGN's shape, and
//! everything `kubectl apply -k deploy/kubernetes` would send validates
//! offline: against Kubernetes' schemas (kubernetes-validate), and the
//! custom resources against the Prometheus Operator's CRD schemas
//! (@kubernetes-models/prometheus-operator) and promtool. scripts/test
//! installs the tools into target/deploy-tools (`PORTSIGHT_DEPLOY_TOOLS`).
mod support;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde::Deserialize;
use serde_norway::Value;
use support::needs;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn path(rel: &str) -> PathBuf {
    Path::new(ROOT).join(rel)
}

fn yaml(rel: &str) -> Value {
    let text = std::fs::read_to_string(path(rel)).unwrap();
    serde_norway::from_str(&text).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// Every document of a multi-document YAML stream.
fn documents(text: &str) -> Vec<Value> {
    serde_norway::Deserializer::from_str(text)
        .map(|d| Value::deserialize(d).expect("YAML document"))
        .collect()
}

fn output(cmd: &mut Command, stdin: Option<&[u8]>) -> Output {
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let mut pipe = child.stdin.take().unwrap();
    pipe.write_all(stdin.unwrap_or_default()).unwrap();
    drop(pipe);
    child.wait_with_output().unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn the_prometheus_rule_is_the_alerts_file_unchanged() {
    let out = output(&mut Command::new(path("scripts/kubernetes-rules")), None);
    assert!(out.status.success(), "{}", text(&out));
    let committed = std::fs::read_to_string(path("deploy/kubernetes/prometheusrule.yaml")).unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout) == committed,
        "deploy/kubernetes/prometheusrule.yaml is stale: run \
         scripts/kubernetes-rules > deploy/kubernetes/prometheusrule.yaml"
    );
    // Not only the same text: the same rule groups, value for value.
    let rule = yaml("deploy/kubernetes/prometheusrule.yaml");
    let alerts = yaml("alerts/portsight.yml");
    assert_eq!(rule["kind"], "PrometheusRule");
    assert_eq!(rule["spec"]["groups"], alerts["groups"]);
    assert!(alerts["groups"].as_sequence().is_some_and(|g| g.len() >= 3));
}

#[test]
fn promtool_accepts_the_prometheus_rules_groups() {
    needs!(
        Command::new("promtool")
            .arg("--version")
            .output()
            .is_err()
            .then(|| "promtool (Debian prometheus) is not installed".to_string())
    );
    let rule = yaml("deploy/kubernetes/prometheusrule.yaml");
    let file = tempfile::Builder::new().suffix(".yml").tempfile().unwrap();
    let groups = serde_norway::to_string(&rule["spec"]).unwrap();
    std::fs::write(file.path(), groups).unwrap();
    let out = output(
        Command::new("promtool")
            .args(["check", "rules"])
            .arg(file.path()),
        None,
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("SUCCESS"), "{}", text(&out));
}

/// `AmbientCapabilities=` of the Debian unit, as Kubernetes names them.
fn unit_capabilities() -> Vec<String> {
    let unit = std::fs::read_to_string(path("debian/portsight.service")).unwrap();
    let line = unit
        .lines()
        .find_map(|l| l.strip_prefix("AmbientCapabilities="))
        .expect("AmbientCapabilities= in the unit");
    let mut caps: Vec<String> = line
        .split_whitespace()
        .map(|c| c.trim_start_matches("CAP_").to_string())
        .collect();
    caps.sort();
    caps
}

#[test]
fn the_daemon_set_runs_on_the_hosts_network_unprivileged_with_the_units_capabilities() {
    let ds = yaml("deploy/kubernetes/daemonset.yaml");
    let pod = &ds["spec"]["template"]["spec"];
    assert_eq!(pod["hostNetwork"], true);
    assert_eq!(pod["hostPID"], true);
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_ne!(pod["securityContext"]["runAsUser"], 0);
    let c = &pod["containers"][0];
    let sc = &c["securityContext"];
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(
        sc["capabilities"]["drop"],
        serde_norway::to_value(["ALL"]).unwrap()
    );
    let mut add: Vec<String> = serde_norway::from_value(sc["capabilities"]["add"].clone()).unwrap();
    add.sort();
    assert_eq!(
        add,
        unit_capabilities(),
        "the DaemonSet and the unit disagree"
    );
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/-/healthy");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/-/ready");
    assert_eq!(c["ports"][0]["containerPort"], 10917);
    for key in ["requests", "limits"] {
        for what in ["cpu", "memory"] {
            assert!(
                c["resources"][key][what].is_string(),
                "resources.{key}.{what}"
            );
        }
    }
    // The host's /proc and /var/log/pods, read-only; proc_root points there.
    let mounts = c["volumeMounts"].as_sequence().unwrap();
    for (volume, host, at) in [
        ("proc", "/proc", "/host/proc"),
        ("pods", "/var/log/pods", "/var/log/pods"),
    ] {
        let m = mounts.iter().find(|m| m["name"] == volume).unwrap();
        assert_eq!(m["mountPath"], at);
        assert_eq!(m["readOnly"], true, "{volume} mounted writable");
        let v = pod["volumes"]
            .as_sequence()
            .unwrap()
            .iter()
            .find(|v| v["name"] == volume)
            .unwrap();
        assert_eq!(v["hostPath"]["path"], host);
    }
    let config = std::fs::read_to_string(path("deploy/kubernetes/portsight.toml")).unwrap();
    assert!(config.contains("proc_root = \"/host/proc\""));
}

#[test]
fn the_kubernetes_config_is_valid_and_the_kustomization_lists_every_manifest() {
    let out = output(
        Command::new(env!("CARGO_BIN_EXE_portsight"))
            .args(["config", "check"])
            .arg(path("deploy/kubernetes/portsight.toml")),
        None,
    );
    assert!(out.status.success(), "{}", text(&out));
    let k = yaml("deploy/kubernetes/kustomization.yaml");
    let mut listed: Vec<String> = serde_norway::from_value(k["resources"].clone()).unwrap();
    listed.sort();
    let mut files: Vec<String> = std::fs::read_dir(path("deploy/kubernetes"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yaml") && n != "kustomization.yaml")
        .collect();
    files.sort();
    assert_eq!(listed, files);
}

/// Where scripts/test installed kubectl, kubernetes-validate and the
/// operator's schemas.
fn tools() -> Result<PathBuf, String> {
    let dir = std::env::var_os("PORTSIGHT_DEPLOY_TOOLS")
        .map(PathBuf::from)
        .unwrap_or_else(|| path("target/deploy-tools"));
    for need in [
        "venv/bin/kubectl",
        "venv/bin/kubernetes-validate",
        "npm/node_modules/@kubernetes-models/prometheus-operator",
    ] {
        if !dir.join(need).exists() {
            return Err(format!(
                "{} is missing: scripts/test installs it",
                dir.join(need).display()
            ));
        }
    }
    if Command::new("node").arg("--version").output().is_err() {
        return Err("node is not installed".into());
    }
    Ok(dir)
}

/// What `kubectl apply -k deploy/kubernetes` would send.
fn kustomized(tools: &Path) -> String {
    let out = output(
        Command::new(tools.join("venv/bin/kubectl"))
            .arg("kustomize")
            .arg(path("deploy/kubernetes")),
        None,
    );
    assert!(out.status.success(), "kubectl kustomize: {}", text(&out));
    String::from_utf8(out.stdout).unwrap()
}

fn kubernetes_validate(tools: &Path, manifests: &str) -> Output {
    let file = tempfile::Builder::new().suffix(".yaml").tempfile().unwrap();
    std::fs::write(file.path(), manifests).unwrap();
    output(
        Command::new(tools.join("venv/bin/kubernetes-validate"))
            .arg("--strict")
            .arg(file.path()),
        None,
    )
}

fn operator_validate(tools: &Path, manifests: &str) -> Output {
    let custom: Vec<serde_json::Value> = documents(manifests)
        .into_iter()
        .filter(|d| {
            d["apiVersion"]
                .as_str()
                .is_some_and(|v| v.starts_with("monitoring.coreos.com/"))
        })
        .map(|d| serde_json::to_value(d).unwrap())
        .collect();
    let json = serde_json::to_vec(&custom).unwrap();
    output(
        Command::new("node")
            .arg(path("tests/deploy/operator-schema.mjs"))
            .arg(tools.join("npm/node_modules")),
        Some(&json),
    )
}

#[test]
fn every_manifest_validates_against_the_kubernetes_and_operator_schemas() {
    needs!(tools().err());
    let tools = tools().unwrap();
    let manifests = kustomized(&tools);

    let out = kubernetes_validate(&tools, &manifests);
    let said = text(&out);
    assert!(out.status.success() && !said.contains("ERROR"), "{said}");
    for resource in [
        "namespace/portsight",
        "service/portsight",
        "daemonset/portsight",
    ] {
        assert!(
            said.contains(&format!("passed for resource {resource}")),
            "{said}"
        );
    }
    assert!(
        said.contains("passed for resource configmap/portsight-"),
        "{said}"
    );

    let out = operator_validate(&tools, &manifests);
    let said = text(&out);
    assert!(out.status.success(), "{said}");
    assert!(said.contains("ServiceMonitor/portsight: valid"), "{said}");
    assert!(said.contains("PrometheusRule/portsight: valid"), "{said}");
}

#[test]
fn the_validators_reject_a_broken_manifest() {
    needs!(tools().err());
    let tools = tools().unwrap();
    let manifests = kustomized(&tools);
    let broken = manifests.replace("runAsNonRoot: true", "runAsNonRoot: \"yes\"");
    assert_ne!(broken, manifests);
    let out = kubernetes_validate(&tools, &broken);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("runAsNonRoot"), "{}", text(&out));

    let broken = manifests.replace("interval: 15s", "interval: 15 seconds");
    assert_ne!(broken, manifests);
    let out = operator_validate(&tools, &broken);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("interval"), "{}", text(&out));
}
