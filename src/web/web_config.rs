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
use serde::{Deserialize, Deserializer, de};
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

/// What an unknown key is told.
fn unsupported() -> String {
    format!("not supported by portsight ({SUPPORTED})")
}

/// What a section must be, when it is something else.
const SHAPES: &[(&str, &str)] = &[
    ("tls_server_config", "must be a mapping"),
    (
        "basic_auth_users",
        "must be a mapping of user names to bcrypt hashes",
    ),
];

const NOT_BCRYPT: &str = "not a bcrypt hash (like $2y$10$…, from htpasswd -nBC 10 USER)";

/// The file, as far as portsight supports exporter-toolkit's format.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Document {
    #[serde(default, deserialize_with = "section")]
    tls_server_config: Option<TlsServerConfig>,
    #[serde(default, deserialize_with = "section")]
    basic_auth_users: Option<BTreeMap<UserName, Hash>>,
}

/// `tls_server_config`; both files are required, checked after decoding so
/// that `cert_file` is reported first.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct TlsServerConfig {
    #[serde(default, deserialize_with = "non_empty_path")]
    cert_file: Option<PathBuf>,
    #[serde(default, deserialize_with = "non_empty_path")]
    key_file: Option<PathBuf>,
}

/// A `basic_auth_users` key: non-empty, without ':'. A YAML number or bool
/// is the name it is written as.
#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct UserName(String);

impl<'de> Deserialize<'de> for UserName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = key_name(&Value::deserialize(d)?);
        if name.is_empty() || name.contains(':') {
            return Err(de::Error::custom(
                "a user name must be non-empty and without ':'",
            ));
        }
        Ok(UserName(name))
    }
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

/// A `basic_auth_users` value: a bcrypt hash.
struct Hash(String);

impl<'de> Deserialize<'de> for Hash {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Value::deserialize(d)? {
            Value::String(s) if s.parse::<bcrypt::HashParts>().is_ok() => Ok(Hash(s)),
            _ => Err(de::Error::custom(NOT_BCRYPT)),
        }
    }
}

/// A section present but null is an empty one (so a `tls_server_config:`
/// with nothing under it says which file is missing).
fn section<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Option::<T>::deserialize(d).map(|t| Some(t.unwrap_or_default()))
}

fn non_empty_path<'de, D: Deserializer<'de>>(d: D) -> Result<Option<PathBuf>, D::Error> {
    match Value::deserialize(d)? {
        Value::String(s) if !s.is_empty() => Ok(Some(PathBuf::from(s))),
        _ => Err(de::Error::custom("must be a non-empty path")),
    }
}

/// Parses web-config text; `file` only names it in errors.
pub fn parse(file: &str, text: &str) -> Result<Spec, Error> {
    let syntax = |reason: String| Error::Syntax {
        file: file.to_string(),
        reason,
    };
    let value: Value = serde_norway::from_str(text).map_err(|e| syntax(e.to_string()))?;
    let document: Document = match value {
        Value::Null => return Ok(Spec::default()),
        Value::Mapping(_) => {
            serde_path_to_error::deserialize(value).map_err(|e| decode_error(file, &e))?
        }
        _ => {
            return Err(syntax(
                "must be a mapping (tls_server_config, basic_auth_users)".into(),
            ));
        }
    };
    let missing = |key: &str| Error::Invalid {
        file: file.to_string(),
        key: key.to_string(),
        reason: "missing".into(),
    };
    let tls = match document.tls_server_config {
        None => None,
        Some(t) => Some(TlsFiles {
            cert_file: t
                .cert_file
                .ok_or_else(|| missing("tls_server_config.cert_file"))?,
            key_file: t
                .key_file
                .ok_or_else(|| missing("tls_server_config.key_file"))?,
        }),
    };
    let users = document.basic_auth_users.unwrap_or_default();
    Ok(Spec {
        tls,
        users: users.into_iter().map(|(u, h)| (u.0, h.0)).collect(),
    })
}

/// The key serde was at and the reason, in this module's words: an
/// unknown field is "not supported", a section of the wrong type says what
/// it must be.
fn decode_error(file: &str, e: &serde_path_to_error::Error<serde_norway::Error>) -> Error {
    let key = e.path().to_string();
    let message = e.inner().to_string();
    let shape = SHAPES.iter().find(|(k, _)| *k == key).map(|(_, s)| *s);
    let reason = match shape {
        _ if message.starts_with("unknown field") => unsupported(),
        Some(shape) if message.starts_with("invalid type") => shape.to_string(),
        _ => message,
    };
    Error::Invalid {
        file: file.to_string(),
        key,
        reason,
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
            Some(files) => Some(tls_acceptor(&invalid, dir, &files)?),
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

/// A TLS acceptor for the certificate and key `files` name (relative to
/// `dir`); `invalid` words its errors.
fn tls_acceptor(
    invalid: &dyn Fn(&str, String) -> Error,
    dir: &Path,
    files: &TlsFiles,
) -> Result<TlsAcceptor, Error> {
    let cert_path = dir.join(&files.cert_file);
    let key_path = dir.join(&files.key_file);
    let read = |key: &str, p: &Path| {
        std::fs::read(p).map_err(|e| invalid(key, format!("cannot read {}: {e}", p.display())))
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
    Ok(TlsAcceptor::from(Arc::new(config)))
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
    fn says_what_each_key_must_be() {
        let hash = bcrypt::hash("s3cr3t", 4).unwrap();
        let users = "must be a mapping of user names to bcrypt hashes";
        for (text, want) in [
            (
                "tls_server_config: 5\n",
                "tls_server_config: must be a mapping",
            ),
            (
                "tls_server_config: [a, b]\n",
                "tls_server_config: must be a mapping",
            ),
            (
                "tls_server_config:\n",
                "tls_server_config.cert_file: missing",
            ),
            (
                "tls_server_config:\n  cert_file: ''\n  key_file: b\n",
                "tls_server_config.cert_file: must be a non-empty path",
            ),
            (
                "tls_server_config:\n  cert_file: a\n  key_file: 5\n",
                "tls_server_config.key_file: must be a non-empty path",
            ),
            (
                "basic_auth_users: 5\n",
                &format!("basic_auth_users: {users}"),
            ),
            (
                "basic_auth_users: [a]\n",
                &format!("basic_auth_users: {users}"),
            ),
            (
                "basic_auth_users:\n  'a:b': x\n",
                "basic_auth_users.a:b: a user name must be non-empty and without ':'",
            ),
            (
                "basic_auth_users:\n  1: nope\n",
                &format!("basic_auth_users.1: {NOT_BCRYPT}"),
            ),
            (
                "basic_auth_users:\n  alice: 5\n",
                &format!("basic_auth_users.alice: {NOT_BCRYPT}"),
            ),
            (
                "tls_server_config: {cert_file: a, key_file: b}\nhttp_server_config: {}\n",
                &format!("http_server_config: {}", unsupported()),
            ),
            (
                "42\n",
                "must be a mapping (tls_server_config, basic_auth_users)",
            ),
        ] {
            assert_eq!(err(text), format!("web.yml: {want}"), "{text}");
        }
        let spec = parse("web.yml", &format!("basic_auth_users:\n  1: {hash}\n")).unwrap();
        assert_eq!(spec.users.get("1"), Some(&hash), "a number is a name");
        assert_eq!(
            parse("web.yml", "basic_auth_users:\n").unwrap(),
            Spec::default()
        );
        assert!(err("a: [\n").starts_with("web.yml: "));
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
