//! `--web.config.file` / `web.config_file`: TLS (mutual TLS, versions,
//! cipher suites), extra headers and basic auth in the format of
//! Prometheus's exporter-toolkit `web-config.yml`, the subset portsight
//! supports. [`parse`] turns text into a [`Spec`] without touching the
//! filesystem; [`WebConfig::load`] reads the file and the certificates and
//! key it names (relative to the file's directory, as exporter-toolkit does).
//! Anything else exporter-toolkit knows is refused by name rather than
//! ignored: a TLS setting silently dropped is a security hole.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use std::str::FromStr;

use base64::Engine as _;
use hyper::header::{AUTHORIZATION, HeaderMap, HeaderName, HeaderValue};
use serde::{Deserialize, Deserializer, de};
use serde_norway::Value;
use tokio_rustls::TlsAcceptor;

use super::tls_server::{self, ClientAuth, TlsVersion};

/// Successful verifications remembered; when full, the cache starts over.
const CACHE_CAPACITY: usize = 1024;

const SUPPORTED: &str = "supported: tls_server_config.{cert_file, key_file, client_auth_type, client_ca_file, min_version, max_version, cipher_suites}, http_server_config.headers, basic_auth_users";

/// The headers exporter-toolkit lets a web config add, and the values it
/// allows where they are an enumeration.
const EXTRA_HEADERS: [(&str, &[&str]); 5] = [
    ("Strict-Transport-Security", &[]),
    ("X-Content-Type-Options", &["nosniff"]),
    ("X-Frame-Options", &["deny", "sameorigin"]),
    ("X-XSS-Protection", &[]),
    ("Content-Security-Policy", &[]),
];

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

fn invalid(file: &str, key: &str, reason: impl Into<String>) -> Error {
    Error::Invalid {
        file: file.to_string(),
        key: key.to_string(),
        reason: reason.into(),
    }
}

/// What a web-config file says, paths as written.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Spec {
    pub tls: Option<TlsSpec>,
    /// User name → bcrypt hash.
    pub users: BTreeMap<String, String>,
    /// `http_server_config.headers`, added to every response.
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

/// `tls_server_config`, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct TlsSpec {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    pub client_auth: ClientAuth,
    pub client_ca_file: Option<PathBuf>,
    pub min_version: TlsVersion,
    pub max_version: TlsVersion,
    /// Go names of the TLS 1.2 suites; empty: rustls's defaults.
    pub cipher_suites: Vec<&'static str>,
}

/// What an unknown key is told.
fn unsupported() -> String {
    format!("not supported by portsight ({SUPPORTED})")
}

/// What a section must be, when it is something else.
const SHAPES: &[(&str, &str)] = &[
    ("tls_server_config", "must be a mapping"),
    ("http_server_config", "must be a mapping"),
    (
        "http_server_config.headers",
        "must be a mapping of header names to values",
    ),
    ("tls_server_config.cipher_suites", "must be a list of names"),
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
    http_server_config: Option<HttpServerConfig>,
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
    #[serde(default)]
    client_auth_type: Option<Parsed<ClientAuth>>,
    #[serde(default, deserialize_with = "non_empty_path")]
    client_ca_file: Option<PathBuf>,
    #[serde(default)]
    min_version: Option<Parsed<TlsVersion>>,
    #[serde(default)]
    max_version: Option<Parsed<TlsVersion>>,
    #[serde(default)]
    cipher_suites: Option<Vec<Parsed<Suite>>>,
}

/// `http_server_config`: only `headers`.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct HttpServerConfig {
    #[serde(default)]
    headers: Option<BTreeMap<String, String>>,
}

/// A string value parsed by its type's `FromStr`, whose message is kept.
struct Parsed<T>(T);

impl<'de, T: FromStr<Err = String>> Deserialize<'de> for Parsed<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Value::deserialize(d)? {
            Value::String(s) => s.parse().map(Parsed).map_err(de::Error::custom),
            _ => Err(de::Error::custom("must be a string")),
        }
    }
}

/// A `cipher_suites` entry: a TLS 1.2 suite, or `None` for a TLS 1.3 one.
struct Suite(Option<&'static str>);

impl FromStr for Suite {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        tls_server::cipher_suite(s).map(Suite)
    }
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
                "must be a mapping (tls_server_config, http_server_config, basic_auth_users)"
                    .into(),
            ));
        }
    };
    let tls = document
        .tls_server_config
        .map(|t| tls_spec(file, t))
        .transpose()?;
    let headers = document
        .http_server_config
        .and_then(|h| h.headers)
        .unwrap_or_default();
    let users = document.basic_auth_users.unwrap_or_default();
    Ok(Spec {
        tls,
        users: users.into_iter().map(|(u, h)| (u.0, h.0)).collect(),
        headers: extra_headers(file, headers)?,
    })
}

/// `tls_server_config` checked as a whole, as exporter-toolkit does: both
/// files, a CA file exactly where certificates are verified, versions in order.
fn tls_spec(file: &str, t: TlsServerConfig) -> Result<TlsSpec, Error> {
    let missing = |key: &str| invalid(file, key, "missing");
    let cert_file = t
        .cert_file
        .ok_or_else(|| missing("tls_server_config.cert_file"))?;
    let key_file = t
        .key_file
        .ok_or_else(|| missing("tls_server_config.key_file"))?;
    let client_auth = t.client_auth_type.map(|p| p.0).unwrap_or_default();
    let ca_key = "tls_server_config.client_ca_file";
    match (&t.client_ca_file, client_auth) {
        (Some(_), ClientAuth::NoClientCert) => {
            return Err(invalid(
                file,
                ca_key,
                "set, but client_auth_type is NoClientCert; set client_auth_type (e.g. RequireAndVerifyClientCert)",
            ));
        }
        (None, auth) if auth.verifies() => {
            return Err(invalid(
                file,
                ca_key,
                format!("required for client_auth_type {auth:?}"),
            ));
        }
        _ => {}
    }
    let min_version = t.min_version.map_or(TlsVersion::Tls12, |p| p.0);
    let max_version = t.max_version.map_or(TlsVersion::Tls13, |p| p.0);
    if min_version > max_version {
        return Err(invalid(
            file,
            "tls_server_config.min_version",
            format!("{min_version} is above max_version {max_version}"),
        ));
    }
    let cipher_suites = t.cipher_suites.unwrap_or_default();
    Ok(TlsSpec {
        cert_file,
        key_file,
        client_auth,
        client_ca_file: t.client_ca_file,
        min_version,
        max_version,
        cipher_suites: cipher_suites.into_iter().filter_map(|s| s.0.0).collect(),
    })
}

/// `http_server_config.headers`: only those exporter-toolkit allows, with
/// the values it allows (names are matched without regard to case).
fn extra_headers(
    file: &str,
    headers: BTreeMap<String, String>,
) -> Result<Vec<(HeaderName, HeaderValue)>, Error> {
    let allowed: Vec<&str> = EXTRA_HEADERS.iter().map(|(n, _)| *n).collect();
    headers
        .into_iter()
        .map(|(name, value)| {
            let key = format!("http_server_config.headers.{name}");
            let Some((_, values)) = EXTRA_HEADERS
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(&name))
            else {
                let reason = format!(
                    "this header cannot be configured (as in exporter-toolkit, only {})",
                    allowed.join(", ")
                );
                return Err(invalid(file, &key, reason));
            };
            if !values.is_empty() && !values.contains(&value.as_str()) {
                let reason = format!("{value:?} is not one of {}", values.join(", "));
                return Err(invalid(file, &key, reason));
            }
            let name =
                HeaderName::from_str(&name).map_err(|e| invalid(file, &key, e.to_string()))?;
            let value = HeaderValue::from_str(&value)
                .map_err(|_| invalid(file, &key, "not a valid header value"))?;
            Ok((name, value))
        })
        .collect()
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
    invalid(file, &key, reason)
}

/// TLS, basic auth and extra headers of the HTTP server. The default is
/// plain HTTP, no auth, no headers.
#[derive(Clone, Default)]
pub struct WebConfig {
    tls: Option<TlsAcceptor>,
    auth: Option<Arc<BasicAuth>>,
    headers: Arc<[(HeaderName, HeaderValue)]>,
    /// The file it was loaded from, and every file it names (relative to
    /// it): what [`Watched`](super::watch::Watched) looks at for changes.
    source: Option<PathBuf>,
    files: Arc<[PathBuf]>,
}

impl fmt::Debug for WebConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebConfig")
            .field("tls", &self.tls.is_some())
            .field("users", &self.auth.as_ref().map_or(0, |a| a.users.len()))
            .field("headers", &self.headers.len())
            .field("files", &self.files)
            .finish()
    }
}

impl WebConfig {
    /// Reads and validates a web-config file and the files it names.
    pub fn load(path: &Path) -> Result<WebConfig, Error> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| Error::Syntax {
            file: file.clone(),
            reason: format!("cannot read: {e}"),
        })?;
        let spec = parse(&file, &text)?;
        let dir = path.parent().unwrap_or(Path::new(""));
        let mut config = WebConfig::from_spec(&file, dir, spec)?;
        config.source = Some(path.to_path_buf());
        Ok(config)
    }

    /// Builds the TLS acceptor, the user table and the headers; relative
    /// paths are taken from `dir`, and errors name `file`.
    pub fn from_spec(file: &str, dir: &Path, spec: Spec) -> Result<WebConfig, Error> {
        let (tls, files) = match spec.tls {
            None => (None, Vec::new()),
            Some(tls) => {
                let files: Vec<PathBuf> = [Some(&tls.cert_file), Some(&tls.key_file)]
                    .into_iter()
                    .chain([tls.client_ca_file.as_ref()])
                    .flatten()
                    .map(|p| dir.join(p))
                    .collect();
                (Some(tls_acceptor(file, dir, tls)?), files)
            }
        };
        let auth = (!spec.users.is_empty()).then(|| Arc::new(BasicAuth::new(spec.users)));
        Ok(WebConfig {
            tls,
            auth,
            headers: spec.headers.into(),
            source: None,
            files: files.into(),
        })
    }

    /// The acceptor that wraps accepted connections, when TLS is on.
    pub fn tls(&self) -> Option<&TlsAcceptor> {
        self.tls.as_ref()
    }

    /// The user table, when basic auth is on.
    pub fn basic_auth(&self) -> Option<&Arc<BasicAuth>> {
        self.auth.as_ref()
    }

    /// `http_server_config.headers`.
    pub fn headers(&self) -> &[(HeaderName, HeaderValue)] {
        &self.headers
    }

    /// The file it was loaded from, if it was.
    pub fn source(&self) -> Option<&Path> {
        self.source.as_deref()
    }

    /// The web config file, if any, and the files it names.
    pub fn files(&self) -> Vec<PathBuf> {
        self.source
            .iter()
            .chain(self.files.iter())
            .cloned()
            .collect()
    }
}

/// A TLS acceptor for what `tls` says (files relative to `dir`); errors name `file`.
fn tls_acceptor(file: &str, dir: &Path, tls: TlsSpec) -> Result<TlsAcceptor, Error> {
    let cert_key = "tls_server_config.cert_file";
    let key_key = "tls_server_config.key_file";
    let ca_key = "tls_server_config.client_ca_file";
    let certs = tls_server::read_certs(&dir.join(&tls.cert_file))
        .map_err(|e| invalid(file, cert_key, e))?;
    let key =
        tls_server::read_key(&dir.join(&tls.key_file)).map_err(|e| invalid(file, key_key, e))?;
    let client_cas = tls
        .client_ca_file
        .map(|p| tls_server::read_client_cas(&dir.join(p)).map_err(|e| invalid(file, ca_key, e)))
        .transpose()?;
    let config = tls_server::server_config(tls_server::Settings {
        certs,
        key,
        client_auth: tls.client_auth,
        client_cas,
        min_version: tls.min_version,
        max_version: tls.max_version,
        cipher_suites: tls.cipher_suites,
    })
    .map_err(|(key, reason)| invalid(file, key, reason))?;
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
            Some(TlsSpec {
                cert_file: "a.crt".into(),
                key_file: "a.key".into(),
                client_auth: ClientAuth::NoClientCert,
                client_ca_file: None,
                min_version: TlsVersion::Tls12,
                max_version: TlsVersion::Tls13,
                cipher_suites: Vec::new(),
            })
        );
        assert_eq!(spec.users.get("alice"), Some(&hash));
        assert_eq!(parse("web.yml", "").unwrap(), Spec::default());
    }

    #[test]
    fn parses_exporter_toolkit_tls_and_headers() {
        let text = "tls_server_config:\n  cert_file: a.crt\n  key_file: a.key\n  \
            client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.crt\n  \
            min_version: TLS13\n  cipher_suites: [TLS_AES_128_GCM_SHA256, TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256]\n\
            http_server_config:\n  headers:\n    X-Frame-Options: deny\n    strict-transport-security: max-age=31536000\n";
        let spec = parse("web.yml", text).unwrap();
        let tls = spec.tls.unwrap();
        assert_eq!(tls.client_auth, ClientAuth::RequireAndVerifyClientCert);
        assert_eq!(tls.client_ca_file, Some("ca.crt".into()));
        assert_eq!(
            (tls.min_version, tls.max_version),
            (TlsVersion::Tls13, TlsVersion::Tls13)
        );
        assert_eq!(
            tls.cipher_suites,
            vec!["TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"]
        );
        let headers: Vec<(&str, &str)> = spec
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.to_str().unwrap()))
            .collect();
        assert_eq!(
            headers,
            vec![
                ("x-frame-options", "deny"),
                ("strict-transport-security", "max-age=31536000")
            ]
        );
    }

    #[test]
    fn refuses_tls_and_headers_as_exporter_toolkit_does() {
        let tls = "tls_server_config:\n  cert_file: a\n  key_file: b\n";
        for (extra, want) in [
            (
                "  client_ca_file: ca.crt\n",
                "tls_server_config.client_ca_file: set, but client_auth_type is NoClientCert; set client_auth_type (e.g. RequireAndVerifyClientCert)",
            ),
            (
                "  client_auth_type: VerifyClientCertIfGiven\n",
                "tls_server_config.client_ca_file: required for client_auth_type VerifyClientCertIfGiven",
            ),
            (
                "  client_auth_type: Always\n",
                "tls_server_config.client_auth_type: unknown value \"Always\", expected one of NoClientCert, RequestClientCert, RequireAnyClientCert, VerifyClientCertIfGiven, RequireAndVerifyClientCert",
            ),
            (
                "  min_version: TLS10\n",
                "tls_server_config.min_version: TLS10 is not supported: portsight (rustls) speaks TLS12 and TLS13 only",
            ),
            (
                "  min_version: TLS13\n  max_version: TLS12\n",
                "tls_server_config.min_version: TLS13 is above max_version TLS12",
            ),
            (
                "  max_version: 13\n",
                "tls_server_config.max_version: must be a string",
            ),
            (
                "  cipher_suites: [TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256, TLS_RSA_WITH_RC4_128_SHA]\n",
                "tls_server_config.cipher_suites[1]: TLS_RSA_WITH_RC4_128_SHA is not offered by rustls",
            ),
            (
                "  cipher_suites: TLS_AES_128_GCM_SHA256\n",
                "tls_server_config.cipher_suites: must be a list of names",
            ),
            (
                "http_server_config:\n  headers:\n    Server: portsight\n",
                "http_server_config.headers.Server: this header cannot be configured (as in exporter-toolkit, only Strict-Transport-Security, X-Content-Type-Options, X-Frame-Options, X-XSS-Protection, Content-Security-Policy)",
            ),
            (
                "http_server_config:\n  headers:\n    X-Frame-Options: DENY\n",
                "http_server_config.headers.X-Frame-Options: \"DENY\" is not one of deny, sameorigin",
            ),
            (
                "http_server_config:\n  headers: [a]\n",
                "http_server_config.headers: must be a mapping of header names to values",
            ),
        ] {
            let e = err(&format!("{tls}{extra}"));
            assert!(e.starts_with(&format!("web.yml: {want}")), "{extra}: {e}");
        }
    }

    #[test]
    fn refuses_what_it_does_not_support() {
        assert_eq!(
            err("http_server_config:\n  http2: false\n"),
            format!("web.yml: http_server_config.http2: not supported by portsight ({SUPPORTED})")
        );
        assert_eq!(
            err("tls_server_config:\n  cert_file: a\n  key_file: b\n  client_allowed_sans: [a]\n"),
            format!(
                "web.yml: tls_server_config.client_allowed_sans: not supported by portsight ({SUPPORTED})"
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
                "tls_server_config: {cert_file: a, key_file: b}\nhttp_server_config: {http2: true}\n",
                &format!("http_server_config.http2: {}", unsupported()),
            ),
            (
                "42\n",
                "must be a mapping (tls_server_config, http_server_config, basic_auth_users)",
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
