//! `--web.config.file` / `web.config_file`: TLS and basic auth in the format
//! of Prometheus's exporter-toolkit `web-config.yml`, the subset portsight
//! supports. [`parse`] turns text into a [`Spec`] without touching the
//! filesystem; [`WebConfig::load`] reads the file, the certificate and the
//! key it names (relative to the file's directory, as exporter-toolkit does).
//! Anything else exporter-toolkit knows is refused by name rather than
//! ignored: a TLS setting silently dropped is a security hole.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use hyper::header::{AUTHORIZATION, HeaderMap};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_norway::Value;
use tokio_rustls::TlsAcceptor;

/// Successful verifications remembered; when full, the cache starts over.
const CACHE_CAPACITY: usize = 1024;

const SUPPORTED: &str =
    "supported: tls_server_config.cert_file, tls_server_config.key_file, basic_auth_users";

/// A web-config error: the file, the key (dotted) and what is wrong.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    #[error("{file}: {reason}")]
    Syntax { file: String, reason: String },
    #[error("{file}: {key}: {reason}")]
    Invalid {
        file: String,
        key: String,
        reason: String,
    },
}

/// What a web-config file says, paths as written.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Spec {
    pub tls: Option<TlsFiles>,
    /// User name → bcrypt hash.
    pub users: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TlsFiles {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

/// Parses web-config text; `file` only names it in errors.
pub fn parse(file: &str, text: &str) -> Result<Spec, Error> {
    let invalid = |key: &str, reason: String| Error::Invalid {
        file: file.to_string(),
        key: key.to_string(),
        reason,
    };
    let value: Value = serde_norway::from_str(text).map_err(|e| Error::Syntax {
        file: file.to_string(),
        reason: e.to_string(),
    })?;
    let top = match value {
        Value::Null => return Ok(Spec::default()),
        Value::Mapping(m) => m,
        _ => {
            return Err(Error::Syntax {
                file: file.to_string(),
                reason: "must be a mapping (tls_server_config, basic_auth_users)".into(),
            });
        }
    };
    let mut spec = Spec::default();
    for (k, v) in top {
        let key = key_name(&k);
        match key.as_str() {
            "tls_server_config" => {
                let m = mapping(v).ok_or_else(|| invalid(&key, "must be a mapping".into()))?;
                let (mut cert, mut key_file) = (None, None);
                for (k, v) in m {
                    let sub = format!("tls_server_config.{}", key_name(&k));
                    let slot = match key_name(&k).as_str() {
                        "cert_file" => &mut cert,
                        "key_file" => &mut key_file,
                        _ => {
                            return Err(invalid(
                                &sub,
                                format!("not supported by portsight ({SUPPORTED})"),
                            ));
                        }
                    };
                    match v {
                        Value::String(s) if !s.is_empty() => *slot = Some(PathBuf::from(s)),
                        _ => return Err(invalid(&sub, "must be a non-empty path".into())),
                    }
                }
                let cert_file =
                    cert.ok_or_else(|| invalid("tls_server_config.cert_file", "missing".into()))?;
                let key_file = key_file
                    .ok_or_else(|| invalid("tls_server_config.key_file", "missing".into()))?;
                spec.tls = Some(TlsFiles {
                    cert_file,
                    key_file,
                });
            }
            "basic_auth_users" => {
                let m = mapping(v).ok_or_else(|| {
                    invalid(
                        &key,
                        "must be a mapping of user names to bcrypt hashes".into(),
                    )
                })?;
                for (k, v) in m {
                    let user = key_name(&k);
                    let sub = format!("basic_auth_users.{user}");
                    if user.is_empty() || user.contains(':') {
                        return Err(invalid(
                            &sub,
                            "a user name must be non-empty and without ':'".into(),
                        ));
                    }
                    let hash = match v {
                        Value::String(s) if s.parse::<bcrypt::HashParts>().is_ok() => s,
                        _ => {
                            return Err(invalid(
                                &sub,
                                "not a bcrypt hash (like $2y$10$…, from htpasswd -nBC 10 USER)"
                                    .into(),
                            ));
                        }
                    };
                    spec.users.insert(user, hash);
                }
            }
            _ => {
                return Err(invalid(
                    &key,
                    format!("not supported by portsight ({SUPPORTED})"),
                ));
            }
        }
    }
    Ok(spec)
}

fn key_name(k: &Value) -> String {
    match k {
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::Null => "null".to_string(),
        other => format!("{other:?}"),
    }
}

fn mapping(v: Value) -> Option<serde_norway::Mapping> {
    match v {
        Value::Null => Some(serde_norway::Mapping::new()),
        Value::Mapping(m) => Some(m),
        _ => None,
    }
}

/// TLS and basic auth of the HTTP server. The default is plain HTTP and no auth.
#[derive(Clone, Default)]
pub struct WebConfig {
    tls: Option<TlsAcceptor>,
    auth: Option<Arc<BasicAuth>>,
}

impl fmt::Debug for WebConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebConfig")
            .field("tls", &self.tls.is_some())
            .field("users", &self.auth.as_ref().map_or(0, |a| a.users.len()))
            .finish()
    }
}

impl WebConfig {
    /// Reads and validates a web-config file and the certificate and key it names.
    pub fn load(path: &Path) -> Result<WebConfig, Error> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| Error::Syntax {
            file: file.clone(),
            reason: format!("cannot read: {e}"),
        })?;
        let spec = parse(&file, &text)?;
        let dir = path.parent().unwrap_or(Path::new(""));
        WebConfig::from_spec(&file, dir, spec)
    }

    /// Builds the TLS acceptor and the user table; relative paths are taken
    /// from `dir`, and errors name `file`.
    pub fn from_spec(file: &str, dir: &Path, spec: Spec) -> Result<WebConfig, Error> {
        let invalid = |key: &str, reason: String| Error::Invalid {
            file: file.to_string(),
            key: key.to_string(),
            reason,
        };
        let tls = match spec.tls {
            None => None,
            Some(files) => {
                let cert_path = dir.join(&files.cert_file);
                let key_path = dir.join(&files.key_file);
                let read = |key: &str, p: &Path| {
                    std::fs::read(p)
                        .map_err(|e| invalid(key, format!("cannot read {}: {e}", p.display())))
                };
                let cert_pem = read("tls_server_config.cert_file", &cert_path)?;
                let key_pem = read("tls_server_config.key_file", &key_path)?;
                let certs = CertificateDer::pem_slice_iter(&cert_pem)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| {
                        invalid(
                            "tls_server_config.cert_file",
                            format!("{}: {e}", cert_path.display()),
                        )
                    })?;
                if certs.is_empty() {
                    return Err(invalid(
                        "tls_server_config.cert_file",
                        format!("{}: no PEM certificate in it", cert_path.display()),
                    ));
                }
                let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
                    invalid(
                        "tls_server_config.key_file",
                        format!("{}: no PEM private key in it ({e})", key_path.display()),
                    )
                })?;
                let provider = Arc::new(rustls::crypto::ring::default_provider());
                let mut config = rustls::ServerConfig::builder_with_provider(provider)
                    .with_safe_default_protocol_versions()
                    .map_err(|e| invalid("tls_server_config", e.to_string()))?
                    .with_no_client_auth()
                    .with_single_cert(certs, key)
                    .map_err(|e| {
                        invalid(
                            "tls_server_config.key_file",
                            format!("does not fit the certificate: {e}"),
                        )
                    })?;
                config.alpn_protocols = vec![b"http/1.1".to_vec()];
                Some(TlsAcceptor::from(Arc::new(config)))
            }
        };
        let auth = (!spec.users.is_empty()).then(|| Arc::new(BasicAuth::new(spec.users)));
        Ok(WebConfig { tls, auth })
    }

    /// The acceptor that wraps accepted connections, when TLS is on.
    pub fn tls(&self) -> Option<&TlsAcceptor> {
        self.tls.as_ref()
    }

    /// The user table, when basic auth is on.
    pub fn basic_auth(&self) -> Option<&Arc<BasicAuth>> {
        self.auth.as_ref()
    }
}

/// `basic_auth_users` and a bounded cache of verified credentials (bcrypt
/// is slow on purpose; exporter-toolkit caches too). The cache holds
/// SHA-256 digests of user, hash and password, never the password itself.
pub struct BasicAuth {
    users: BTreeMap<String, String>,
    verified: Mutex<HashSet<[u8; 32]>>,
}

impl BasicAuth {
    pub fn new(users: BTreeMap<String, String>) -> BasicAuth {
        BasicAuth {
            users,
            verified: Mutex::new(HashSet::new()),
        }
    }

    /// Whether `headers` carry `Authorization: Basic` with a configured user
    /// and its password.
    pub async fn allows(&self, headers: &HeaderMap) -> bool {
        let Some((user, password)) = credentials(headers) else {
            return false;
        };
        // An unknown user costs one bcrypt run too, so that timing does not
        // tell which users exist.
        let (known, hash) = match self.users.get(&user) {
            Some(h) => (true, h.clone()),
            None => match self.users.values().next() {
                Some(h) => (false, h.clone()),
                None => return false,
            },
        };
        let digest = cache_key(&user, &hash, &password);
        if known && self.lock().contains(&digest) {
            return true;
        }
        let ok = tokio::task::spawn_blocking(move || bcrypt::verify(password, &hash))
            .await
            .is_ok_and(|r| r.unwrap_or(false));
        if !(known && ok) {
            return false;
        }
        let mut verified = self.lock();
        if verified.len() >= CACHE_CAPACITY {
            verified.clear();
        }
        verified.insert(digest);
        true
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<[u8; 32]>> {
        self.verified.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn cache_key(user: &str, hash: &str, password: &str) -> [u8; 32] {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for part in [user, hash, password] {
        ctx.update(&(part.len() as u64).to_be_bytes());
        ctx.update(part.as_bytes());
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

/// User and password of `Authorization: Basic base64(user:password)`.
fn credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (user, password) = decoded.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        parse("web.yml", text).unwrap_err().to_string()
    }

    #[test]
    fn parses_the_supported_subset() {
        let hash = bcrypt::hash("s3cr3t", 4).unwrap();
        let text = format!(
            "tls_server_config:\n  cert_file: a.crt\n  key_file: a.key\nbasic_auth_users:\n  alice: {hash}\n"
        );
        let spec = parse("web.yml", &text).unwrap();
        assert_eq!(
            spec.tls,
            Some(TlsFiles {
                cert_file: "a.crt".into(),
                key_file: "a.key".into()
            })
        );
        assert_eq!(spec.users.get("alice"), Some(&hash));
        assert_eq!(parse("web.yml", "").unwrap(), Spec::default());
    }

    #[test]
    fn refuses_what_it_does_not_support() {
        assert_eq!(
            err("http_server_config:\n  http2: false\n"),
            format!("web.yml: http_server_config: not supported by portsight ({SUPPORTED})")
        );
        assert_eq!(
            err(
                "tls_server_config:\n  cert_file: a\n  key_file: b\n  client_auth_type: RequireAndVerifyClientCert\n"
            ),
            format!(
                "web.yml: tls_server_config.client_auth_type: not supported by portsight ({SUPPORTED})"
            )
        );
        assert_eq!(
            err("tls_server_config:\n  cert_file: a\n"),
            "web.yml: tls_server_config.key_file: missing"
        );
        assert_eq!(
            err("basic_auth_users:\n  bob: hunter2\n"),
            "web.yml: basic_auth_users.bob: not a bcrypt hash (like $2y$10$…, from htpasswd -nBC 10 USER)"
        );
        assert!(err("- a\n").starts_with("web.yml: must be a mapping"));
    }

    #[test]
    fn reads_basic_credentials() {
        let mut h = HeaderMap::new();
        h.insert(
            AUTHORIZATION,
            "Basic YWxpY2U6czNjcjN0OmV4dHJh".parse().unwrap(),
        );
        assert_eq!(
            credentials(&h),
            Some(("alice".into(), "s3cr3t:extra".into()))
        );
        h.insert(AUTHORIZATION, "Bearer YWxpY2U6czNjcjN0".parse().unwrap());
        assert_eq!(credentials(&h), None);
    }
}
