//! `--web.config.file`: the server speaks TLS with certificates generated
//! here, asks for basic auth (bcrypt) or client certificates, keeps to its
//! versions and suites, adds headers, and follows the files on disk —
//! everything on loopback. A bad web config stops `portsight serve` with
//! exit 2 and file, key, reason; at runtime it is logged and ignored.

mod support;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use base64::Engine as _;
use portsight::config::Expect;
use rustls::pki_types::CertificateDer;
use support::certs::Ca;
use support::sidecar::{self, Sidecar};
use support::{Process, TlsClient, http_with, https, try_https, wait_for};

const PASSWORD: &str = "s3cr3t";
const TOKEN: &str = "probe-token";

/// A sidecar with TLS and the user `alice`, and the certificate to trust.
struct Secured {
    sidecar: Sidecar,
    cert: CertificateDer<'static>,
    _dir: tempfile::TempDir,
}

/// Writes a self-signed certificate for `localhost`, its key and a web
/// config naming them relatively (plus `users`); returns the web config's path.
fn write_web_config(dir: &Path, users: &str) -> (PathBuf, CertificateDer<'static>) {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    std::fs::create_dir(dir.join("tls")).unwrap();
    std::fs::write(dir.join("tls/server.crt"), ck.cert.pem()).unwrap();
    std::fs::write(dir.join("tls/server.key"), ck.signing_key.serialize_pem()).unwrap();
    let path = dir.join("tls/web.yml");
    std::fs::write(
        &path,
        format!("tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n{users}"),
    )
    .unwrap();
    (path, ck.cert.der().clone())
}

fn secured(users: bool) -> Secured {
    let dir = tempfile::tempdir().unwrap();
    let users = if users {
        // Cost 4: the lowest bcrypt allows, so that tests stay fast.
        format!(
            "basic_auth_users:\n  alice: {}\n",
            bcrypt::hash(PASSWORD, 4).unwrap()
        )
    } else {
        String::new()
    };
    let (path, cert) = write_web_config(dir.path(), &users);
    std::fs::write(dir.path().join("token"), TOKEN).unwrap();
    let mut config = sidecar::config(&[]);
    config.probe_server.enabled = true;
    config.probe_server.allow = vec!["127.0.0.0/8".parse().unwrap()];
    config.probe_server.token_file = dir.path().join("token");
    Secured {
        sidecar: sidecar::start_with(config, None, false, Some(&path)),
        cert,
        _dir: dir,
    }
}

fn basic(user: &str, password: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

#[test]
fn https_with_basic_auth_serves_metrics_to_the_right_user_only() {
    let s = secured(true);
    let addr = s.sidecar.addr;
    let right = basic("alice", PASSWORD);

    let r = https(addr, &s.cert, "/metrics", &[("Authorization", &right)]);
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains("portsight_build_info"), "{}", r.body);
    // Again: now answered from the cache of verified credentials.
    let r = https(addr, &s.cert, "/-/healthy", &[("Authorization", &right)]);
    assert_eq!((r.status, r.body.as_str()), (200, "Healthy\n"));

    for auth in [
        Some(basic("alice", "wrong")),
        Some(basic("mallory", PASSWORD)),
        Some("Bearer whatever".to_string()),
        None,
    ] {
        let headers: Vec<(&str, &str)> =
            auth.iter().map(|a| ("Authorization", a.as_str())).collect();
        for path in ["/metrics", "/", "/api/v1/status", "/-/ready"] {
            let r = https(addr, &s.cert, path, &headers);
            assert_eq!(r.status, 401, "{path} with {auth:?}: {}", r.body);
            assert_eq!(
                r.header("www-authenticate"),
                Some("Basic realm=\"portsight\""),
                "{path} with {auth:?}"
            );
            assert!(!r.body.contains("portsight_"), "{}", r.body);
        }
    }
}

#[test]
fn plain_http_to_the_tls_port_gets_no_http_answer() {
    let s = secured(true);
    let mut tcp = TcpStream::connect_timeout(&s.sidecar.addr, Duration::from_secs(5)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    tcp.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut raw = Vec::new();
    // The server closes (or resets) after a TLS alert at most.
    let _ = tcp.read_to_end(&mut raw);
    assert!(
        !raw.starts_with(b"HTTP/"),
        "plain HTTP was answered: {}",
        String::from_utf8_lossy(&raw)
    );
    // The HTTPS port still works after the bad client.
    let r = https(
        s.sidecar.addr,
        &s.cert,
        "/-/healthy",
        &[("Authorization", &basic("alice", PASSWORD))],
    );
    assert_eq!(r.status, 200);
}

#[test]
fn tls_without_users_needs_no_auth() {
    let s = secured(false);
    let r = https(s.sidecar.addr, &s.cert, "/metrics", &[]);
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains("portsight_build_info"));
}

#[test]
fn probe_endpoints_check_the_bearer_token_not_basic_auth() {
    let s = secured(true);
    let target = TcpListener::bind("127.0.0.1:0").unwrap();
    let path = format!("/probe?target={}", target.local_addr().unwrap());
    let bearer = format!("Bearer {TOKEN}");

    let r = https(
        s.sidecar.addr,
        &s.cert,
        &path,
        &[("Authorization", &bearer)],
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains("probe_success 1"), "{}", r.body);

    // Basic credentials do not stand in for the token.
    let r = https(
        s.sidecar.addr,
        &s.cert,
        &path,
        &[("Authorization", &basic("alice", PASSWORD))],
    );
    assert_eq!(r.status, 401, "{}", r.body);
    assert!(r.body.starts_with("missing bearer token"), "{}", r.body);
    assert_eq!(
        r.header("www-authenticate"),
        Some("Bearer realm=\"portsight\"")
    );
}

#[test]
fn the_default_is_plain_http_without_auth() {
    let s = sidecar::start(
        sidecar::config(&[(1, "unused", Expect::Closed)]),
        None,
        false,
    );
    let r = http_with("GET", s.addr, "/-/healthy", &[], "");
    assert_eq!((r.status, r.body.as_str()), (200, "Healthy\n"));
}

fn serve_exit(web_config: &str) -> (Option<i32>, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_portsight"))
        .args([
            "serve",
            "--web.listen-address",
            "127.0.0.1:0",
            "--web.config.file",
            web_config,
        ])
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    (
        o.status.code(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn serve_with_a_bad_web_config_exits_2_naming_file_key_and_reason() {
    let supported = "supported: tls_server_config.{cert_file, key_file, client_auth_type, client_ca_file, min_version, max_version, cipher_suites}, http_server_config.headers, basic_auth_users";
    for (file, message) in [
        (
            "tests/fixtures/web-config/invalid-unknown-key.yml",
            format!(
                "tls_server_config.client_allowed_sans: not supported by portsight ({supported})"
            ),
        ),
        (
            "tests/fixtures/web-config/invalid-http-server-config.yml",
            format!("http_server_config.http2: not supported by portsight ({supported})"),
        ),
        (
            "tests/fixtures/web-config/invalid-tls-version.yml",
            "tls_server_config.min_version: TLS11 is not supported: portsight (rustls) speaks TLS12 and TLS13 only".to_string(),
        ),
        (
            "tests/fixtures/web-config/invalid-missing-cert.yml",
            "tls_server_config.cert_file: cannot read tests/fixtures/web-config/missing.crt: No such file or directory (os error 2)".to_string(),
        ),
    ] {
        assert_eq!(
            serve_exit(file),
            (
                Some(2),
                format!("portsight: bad web config: {file}: {message}\n")
            )
        );
    }
}

#[test]
fn web_config_file_from_the_config_is_read_too() {
    let o = Command::new(env!("CARGO_BIN_EXE_portsight"))
        .args(["serve", "--web.listen-address", "127.0.0.1:0"])
        .env(
            "PORTSIGHT__WEB__CONFIG_FILE",
            "tests/fixtures/web-config/invalid-missing-cert.yml",
        )
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&o.stderr)
            .contains("invalid-missing-cert.yml: tls_server_config.cert_file: cannot read"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn config_check_reads_the_web_config_too() {
    let dir = tempfile::tempdir().unwrap();
    let toml = dir.path().join("portsight.toml");
    std::fs::write(
        &toml,
        "[web]\nconfig_file = \"tests/fixtures/web-config/invalid-unknown-key.yml\"\n",
    )
    .unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_portsight"))
        .args(["config", "check", toml.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&o.stderr).starts_with(
            "portsight: bad web config: tests/fixtures/web-config/invalid-unknown-key.yml: tls_server_config.client_allowed_sans: not supported"
        ),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

const TLS: &str = "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n";

/// A sidecar serving with the web config `text`, written as `dir/web.yml`.
fn serving(dir: &Path, text: &str) -> Sidecar {
    let path = dir.join("web.yml");
    std::fs::write(&path, text).unwrap();
    sidecar::start_with(sidecar::config(&[]), None, false, Some(&path))
}

/// A server certificate for `localhost` from a CA of its own, in `dir`.
fn server_cert(dir: &Path, name: &str) -> Ca {
    let ca = Ca::new(name);
    ca.issue(&["localhost"]).write(dir, "server");
    ca
}

#[test]
fn client_auth_types_take_the_clients_exporter_toolkit_takes() {
    let dir = tempfile::tempdir().unwrap();
    let server_ca = server_cert(dir.path(), "pstls server CA");
    let client_ca = Ca::new("pstls client CA");
    client_ca.write(&dir.path().join("clients.crt"));
    let signed = client_ca.issue(&[]);
    let stranger = Ca::new("pstls stranger CA").issue(&[]);
    // (client_auth_type, no certificate, a signed one, a stranger's) taken?
    for (auth, none, good, other) in [
        ("NoClientCert", true, true, true),
        ("RequestClientCert", true, true, true),
        ("RequireAnyClientCert", false, true, true),
        ("VerifyClientCertIfGiven", true, true, false),
        ("RequireAndVerifyClientCert", false, true, false),
    ] {
        let ca_file = if auth.starts_with("Verify") || auth.starts_with("RequireAnd") {
            "  client_ca_file: clients.crt\n"
        } else {
            ""
        };
        let s = serving(
            dir.path(),
            &format!("{TLS}  client_auth_type: {auth}\n{ca_file}"),
        );
        let mut client = TlsClient::trusting(&server_ca.der());
        for (who, leaf, want) in [
            ("no certificate", None, none),
            ("a certificate of the client CA", Some(&signed), good),
            ("a stranger's certificate", Some(&stranger), other),
        ] {
            client.identity = leaf.map(|l| (vec![l.cert.clone()], l.key()));
            let got = try_https(s.addr, &client, "/-/healthy", &[]);
            match (&got, want) {
                (Ok(r), true) => assert_eq!(r.status, 200, "{auth}, {who}: {}", r.body),
                (Err(_), false) => {}
                _ => panic!("{auth}, {who}: want taken={want}, got {got:?}"),
            }
        }
    }
}

#[test]
fn min_and_max_version_are_enforced() {
    let dir = tempfile::tempdir().unwrap();
    let ca = server_cert(dir.path(), "pstls versions CA");
    let only = |v: &'static rustls::SupportedProtocolVersion| {
        let mut c = TlsClient::trusting(&ca.der());
        c.versions = vec![v];
        c
    };
    let (tls12, tls13) = (only(&rustls::version::TLS12), only(&rustls::version::TLS13));
    for (versions, old_ok, new_ok) in [
        ("", true, true),
        ("  min_version: TLS13\n", false, true),
        ("  max_version: TLS12\n", true, false),
    ] {
        let s = serving(dir.path(), &format!("{TLS}{versions}"));
        for (client, want, name) in [(&tls12, old_ok, "TLS 1.2"), (&tls13, new_ok, "TLS 1.3")] {
            let got = try_https(s.addr, client, "/-/healthy", &[]);
            assert_eq!(got.is_ok(), want, "{versions:?}, a {name} client: {got:?}");
        }
    }
}

#[test]
fn cipher_suites_limit_tls12_to_those_named() {
    let dir = tempfile::tempdir().unwrap();
    let ca = server_cert(dir.path(), "pstls suites CA");
    let mut tls12 = TlsClient::trusting(&ca.der());
    tls12.versions = vec![&rustls::version::TLS12];
    // rcgen's keys are ECDSA: an RSA-only list leaves nothing to agree on.
    for (suites, want) in [
        ("[TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384]", true),
        ("[TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256]", false),
    ] {
        let s = serving(
            dir.path(),
            &format!("{TLS}  max_version: TLS12\n  cipher_suites: {suites}\n"),
        );
        let got = try_https(s.addr, &tls12, "/-/healthy", &[]);
        assert_eq!(got.is_ok(), want, "{suites}: {got:?}");
    }
}

#[test]
fn configured_headers_are_on_every_response() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "http_server_config:\n  headers:\n    X-Frame-Options: deny\n    \
         Strict-Transport-Security: max-age=31536000\n    X-Content-Type-Options: nosniff\n\
         basic_auth_users:\n  alice: {}\n",
        bcrypt::hash(PASSWORD, 4).unwrap()
    );
    let s = serving(dir.path(), &text);
    let right = basic("alice", PASSWORD);
    for (headers, status) in [
        (vec![("Authorization", right.as_str())], 200),
        (vec![], 401),
    ] {
        for path in ["/-/healthy", "/metrics", "/nowhere"] {
            let r = http_with("GET", s.addr, path, &headers, "");
            let want = if path == "/nowhere" && status == 200 {
                404
            } else {
                status
            };
            assert_eq!(r.status, want, "{path}: {}", r.body);
            assert_eq!(r.header("x-frame-options"), Some("deny"), "{path}");
            assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
            assert_eq!(
                r.header("strict-transport-security"),
                Some("max-age=31536000")
            );
        }
    }
}

#[test]
fn a_rotated_certificate_is_served_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let old = server_cert(dir.path(), "pstls old CA");
    let s = serving(dir.path(), TLS);
    let (old_client, new) = (TlsClient::trusting(&old.der()), Ca::new("pstls new CA"));
    let new_client = TlsClient::trusting(&new.der());
    assert_eq!(
        try_https(s.addr, &old_client, "/-/healthy", &[])
            .unwrap()
            .status,
        200
    );
    assert!(try_https(s.addr, &new_client, "/-/healthy", &[]).is_err());
    // As cert-manager and certbot do: new files renamed over the old ones.
    new.issue(&["localhost"]).write(dir.path(), "next");
    for ext in ["key", "crt"] {
        std::fs::rename(
            dir.path().join(format!("next.{ext}")),
            dir.path().join(format!("server.{ext}")),
        )
        .unwrap();
    }
    wait_for(Duration::from_secs(20), "the new certificate", || {
        try_https(s.addr, &new_client, "/-/healthy", &[]).map(|_| ())
    });
    assert!(
        try_https(s.addr, &old_client, "/-/healthy", &[]).is_err(),
        "the old certificate is not served any more"
    );
}

#[test]
fn an_invalid_web_config_written_at_runtime_keeps_the_running_one() {
    let dir = tempfile::tempdir().unwrap();
    let ca = server_cert(dir.path(), "pstls runtime CA");
    let web = dir.path().join("web.yml");
    std::fs::write(&web, TLS).unwrap();
    let config = dir.path().join("portsight.toml");
    std::fs::write(&config, "[discover]\nenabled = false\n").unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_portsight"));
    cmd.args(["serve", "--web.listen-address", "127.0.0.1:0", "--config"])
        .arg(&config)
        .arg("--web.config.file")
        .arg(&web)
        .env_remove("RUST_LOG");
    let mut p = Process::spawn(cmd);
    let addr = p.address();
    let client = TlsClient::trusting(&ca.der());
    assert_eq!(
        try_https(addr, &client, "/-/healthy", &[]).unwrap().status,
        200
    );

    std::fs::write(&web, format!("{TLS}  min_version: TLS10\n")).unwrap();
    let refused = "does not load; keeping the running one";
    wait_for(
        Duration::from_secs(20),
        "the bad web config noticed",
        || {
            // Every answer meanwhile comes with the running config.
            let r = try_https(addr, &client, "/-/healthy", &[])?;
            assert_eq!(r.status, 200);
            if p.log_text().contains(refused) {
                Ok(())
            } else {
                Err(p.log_text())
            }
        },
    );
    let log = p.log_text();
    assert!(
        log.contains(&format!(
            "{}: tls_server_config.min_version: TLS10 is not supported",
            web.display()
        )),
        "{log}"
    );
    assert_eq!(
        try_https(addr, &client, "/-/healthy", &[]).unwrap().status,
        200
    );

    // Fixed again: taken, headers and all.
    std::fs::write(
        &web,
        format!("{TLS}http_server_config:\n  headers:\n    X-Frame-Options: sameorigin\n"),
    )
    .unwrap();
    wait_for(Duration::from_secs(20), "the fixed web config", || {
        let r = try_https(addr, &client, "/-/healthy", &[])?;
        match r.header("x-frame-options") {
            Some("sameorigin") => Ok(()),
            other => Err(format!("{other:?}")),
        }
    });
    assert!(p.exited().is_none());
}
