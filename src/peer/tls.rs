//! TLS to `https` peers: the CA certificates their certificates must chain
//! to (a `ca_file`, or the system's bundle) and the name they must carry
//! (the URL's host, the DNS name looked up, or `server_name`).

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper_rustls::{FixedServerNameResolver, HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rustls::RootCertStore;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use crate::config::{Error, parse_server_name};

/// The system's CA bundle when `SSL_CERT_FILE` does not name one (Debian's
/// ca-certificates).
const SYSTEM_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

pub type HttpsClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// How to reach one `https` peer (or every DNS peer): a client with its
/// own roots and server name, shared by every request to it.
#[derive(Clone)]
pub struct PeerTls {
    pub client: HttpsClient,
    /// The CA file read; the system bundle's path when none was set.
    pub ca_file: PathBuf,
    /// The name verified, when not the URL's host.
    pub server_name: Option<String>,
}

impl fmt::Debug for PeerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PeerTls")
            .field("ca_file", &self.ca_file)
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

impl PartialEq for PeerTls {
    fn eq(&self, other: &Self) -> bool {
        self.ca_file == other.ca_file && self.server_name == other.server_name
    }
}

impl Eq for PeerTls {}

impl PeerTls {
    /// Reads `ca_file` (empty: the system's bundle) and checks
    /// `server_name` (empty: the URL's host); `key` is the config key
    /// without `.ca_file`, for errors.
    pub fn load(ca_file: &Path, server_name: &str, key: &str) -> Result<PeerTls, Error> {
        let roots = if ca_file.as_os_str().is_empty() {
            system_roots(&format!("{key}.ca_file"))?
        } else {
            read_roots(ca_file, &format!("{key}.ca_file"))?
        };
        let ca_file = if ca_file.as_os_str().is_empty() {
            system_bundle()
        } else {
            ca_file.to_path_buf()
        };
        // Checked when the config was read; this names the key all the same.
        let name = (!server_name.is_empty())
            .then(|| {
                parse_server_name(server_name).map_err(|reason| Error::Invalid {
                    origin: "config".into(),
                    key: format!("{key}.server_name"),
                    reason,
                })
            })
            .transpose()?;
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Invalid {
            origin: "config".into(),
            key: key.to_string(),
            reason: e.to_string(),
        })?
        .with_root_certificates(roots)
        .with_no_client_auth();
        let builder = HttpsConnectorBuilder::new()
            .with_tls_config(config)
            .https_only();
        let builder = match name {
            Some(n) => builder.with_server_name_resolver(FixedServerNameResolver::new(n)),
            None => builder,
        };
        let connector = builder.enable_http1().build();
        Ok(PeerTls {
            client: Client::builder(TokioExecutor::new()).build(connector),
            ca_file,
            server_name: (!server_name.is_empty()).then(|| server_name.to_string()),
        })
    }
}

/// `$SSL_CERT_FILE` (as OpenSSL and rustls-native-certs read it), else
/// [`SYSTEM_BUNDLE`].
fn system_bundle() -> PathBuf {
    std::env::var_os("SSL_CERT_FILE")
        .filter(|v| !v.is_empty())
        .map_or_else(|| PathBuf::from(SYSTEM_BUNDLE), PathBuf::from)
}

/// The system's CA bundle; certificates in it that do not parse are
/// skipped, as every TLS library does with system bundles.
fn system_roots(key: &str) -> Result<RootCertStore, Error> {
    let path = system_bundle();
    let unusable = |reason: String| Error::Invalid {
        origin: path.display().to_string(),
        key: key.to_string(),
        reason: format!("not set, and the system's CA bundle {reason}; set it"),
    };
    let pem = std::fs::read(&path).map_err(|e| unusable(format!("cannot be read: {e}")))?;
    let mut roots = RootCertStore::empty();
    roots.add_parsable_certificates(CertificateDer::pem_slice_iter(&pem).filter_map(Result::ok));
    if roots.is_empty() {
        return Err(unusable("holds no usable certificate".into()));
    }
    Ok(roots)
}

/// Every certificate of a PEM file, each of which must be a usable CA.
fn read_roots(path: &Path, key: &str) -> Result<RootCertStore, Error> {
    let bad = |reason: String| Error::Invalid {
        origin: path.display().to_string(),
        key: key.to_string(),
        reason,
    };
    let pem = std::fs::read(path).map_err(|e| bad(format!("cannot read the CA file: {e}")))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(format!("not PEM certificates: {e}")))?;
    if certs.is_empty() {
        return Err(bad("no PEM certificate (BEGIN CERTIFICATE) in it".into()));
    }
    let mut roots = RootCertStore::empty();
    for (i, cert) in certs.into_iter().enumerate() {
        roots
            .add(cert)
            .map_err(|e| bad(format!("certificate {}: not a usable CA: {e}", i + 1)))?;
    }
    Ok(roots)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(pem: &str) -> String {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, pem).unwrap();
        let e = PeerTls::load(&path, "", "peer[0]").unwrap_err().to_string();
        e.replace(&path.display().to_string(), "ca.pem")
    }

    #[test]
    fn a_bad_ca_file_names_file_key_and_reason() {
        assert_eq!(
            err("hello\n"),
            "ca.pem: peer[0].ca_file: no PEM certificate (BEGIN CERTIFICATE) in it"
        );
        assert!(
            err("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
                .starts_with("ca.pem: peer[0].ca_file: certificate 1: not a usable CA"),
        );
        let e = PeerTls::load(Path::new("/nonexistent/ca.pem"), "", "peers")
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "/nonexistent/ca.pem: peers.ca_file: cannot read the CA file: No such file or directory (os error 2)"
        );
    }

    #[test]
    fn a_good_ca_file_and_server_name_are_taken() {
        let ck = rcgen::generate_simple_self_signed(vec!["peer.test".to_string()]).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, ck.cert.pem()).unwrap();
        let tls = PeerTls::load(&path, "peer.test", "peer[0]").unwrap();
        assert_eq!(tls.server_name.as_deref(), Some("peer.test"));
        assert!(PeerTls::load(&path, "[fd77::2]", "peer[0]").is_ok());
        assert_eq!(
            parse_server_name("not a name!"),
            Err("\"not a name!\" is not a DNS name or IP address".into())
        );
    }
}
