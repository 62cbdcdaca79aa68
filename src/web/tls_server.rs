//! The TLS side of a web config: exporter-toolkit's `tls_server_config`
//! keys in Go's words (`client_auth_type`, `min_version`, `cipher_suites`),
//! and the rustls server config built from them.

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms, ring};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ServerConfig, WebPkiClientVerifier};
use rustls::{
    DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme, SupportedCipherSuite,
    SupportedProtocolVersion,
};

/// `tls_server_config.client_auth_type`, as Go's `tls.ClientAuthType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ClientAuth {
    #[default]
    NoClientCert,
    /// Asks for a certificate; takes any, or none.
    RequestClientCert,
    /// Wants a certificate, any certificate, not verified.
    RequireAnyClientCert,
    /// Verifies a certificate against `client_ca_file` when one is sent.
    VerifyClientCertIfGiven,
    /// Wants a certificate that `client_ca_file` signs.
    RequireAndVerifyClientCert,
}

const CLIENT_AUTH_TYPES: &str = "NoClientCert, RequestClientCert, RequireAnyClientCert, VerifyClientCertIfGiven, RequireAndVerifyClientCert";

impl FromStr for ClientAuth {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "" | "NoClientCert" => ClientAuth::NoClientCert,
            "RequestClientCert" => ClientAuth::RequestClientCert,
            // exporter-toolkit keeps the old name too.
            "RequireAnyClientCert" | "RequireClientCert" => ClientAuth::RequireAnyClientCert,
            "VerifyClientCertIfGiven" => ClientAuth::VerifyClientCertIfGiven,
            "RequireAndVerifyClientCert" => ClientAuth::RequireAndVerifyClientCert,
            _ => {
                return Err(format!(
                    "unknown value {s:?}, expected one of {CLIENT_AUTH_TYPES}"
                ));
            }
        })
    }
}

impl ClientAuth {
    /// Whether certificates are checked against `client_ca_file`.
    pub fn verifies(self) -> bool {
        matches!(
            self,
            ClientAuth::VerifyClientCertIfGiven | ClientAuth::RequireAndVerifyClientCert
        )
    }
}

/// `min_version` / `max_version`: the versions rustls speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TlsVersion {
    Tls12,
    Tls13,
}

impl FromStr for TlsVersion {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "TLS12" => Ok(TlsVersion::Tls12),
            "TLS13" => Ok(TlsVersion::Tls13),
            "TLS10" | "TLS11" => Err(format!(
                "{s} is not supported: portsight (rustls) speaks TLS12 and TLS13 only"
            )),
            _ => Err(format!("unknown value {s:?}, expected TLS12 or TLS13")),
        }
    }
}

impl std::fmt::Display for TlsVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TlsVersion::Tls12 => "TLS12",
            TlsVersion::Tls13 => "TLS13",
        })
    }
}

impl TlsVersion {
    fn rustls(self) -> &'static SupportedProtocolVersion {
        match self {
            TlsVersion::Tls12 => &rustls::version::TLS12,
            TlsVersion::Tls13 => &rustls::version::TLS13,
        }
    }
}

/// The TLS 1.2 suites rustls offers, by their Go names.
fn tls12_suites() -> [(&'static str, SupportedCipherSuite); 6] {
    use ring::cipher_suite as s;
    [
        (
            "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
            s::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        ),
        (
            "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
            s::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        ),
        (
            "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
            s::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
        ),
        (
            "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
            s::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        ),
        (
            "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
            s::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
        ),
        (
            "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
            s::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
        ),
    ]
}

/// TLS 1.3 suites: always all on, as in Go, so naming them changes nothing.
const TLS13_NAMES: [&str; 3] = [
    "TLS_AES_128_GCM_SHA256",
    "TLS_AES_256_GCM_SHA384",
    "TLS_CHACHA20_POLY1305_SHA256",
];

/// Suites Go knows that rustls does not offer (CBC, RC4, 3DES, RSA key exchange).
const GO_ONLY: [&str; 16] = [
    "TLS_RSA_WITH_RC4_128_SHA",
    "TLS_RSA_WITH_3DES_EDE_CBC_SHA",
    "TLS_RSA_WITH_AES_128_CBC_SHA",
    "TLS_RSA_WITH_AES_256_CBC_SHA",
    "TLS_RSA_WITH_AES_128_CBC_SHA256",
    "TLS_RSA_WITH_AES_128_GCM_SHA256",
    "TLS_RSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_ECDSA_WITH_RC4_128_SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA",
    "TLS_ECDHE_RSA_WITH_RC4_128_SHA",
    "TLS_ECDHE_RSA_WITH_3DES_EDE_CBC_SHA",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA",
    "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256",
];

/// One `cipher_suites` entry: a TLS 1.2 suite (its Go name), or `None`
/// for a TLS 1.3 suite (not configurable).
pub fn cipher_suite(name: &str) -> Result<Option<&'static str>, String> {
    // Go's constants for ChaCha20 lack the `_SHA256` of its names.
    let full = match name {
        "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305" | "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305" => {
            format!("{name}_SHA256")
        }
        _ => name.to_string(),
    };
    if let Some((go, _)) = tls12_suites().into_iter().find(|(go, _)| *go == full) {
        return Ok(Some(go));
    }
    if TLS13_NAMES.contains(&name) {
        return Ok(None);
    }
    let supported: Vec<&str> = tls12_suites().iter().map(|(go, _)| *go).collect();
    let supported = supported.join(", ");
    if GO_ONLY.contains(&name) {
        Err(format!(
            "{name} is not offered by rustls (no CBC, RC4, 3DES or RSA key exchange); supported: {supported}"
        ))
    } else {
        Err(format!(
            "unknown cipher suite {name:?}; supported: {supported}"
        ))
    }
}

/// What the rustls server config is built from, files already read.
pub struct Settings {
    pub certs: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
    pub client_auth: ClientAuth,
    pub client_cas: Option<RootCertStore>,
    pub min_version: TlsVersion,
    pub max_version: TlsVersion,
    /// Go names of the TLS 1.2 suites, in order; empty: rustls's defaults.
    pub cipher_suites: Vec<&'static str>,
}

/// The rustls server config; errors are (key, reason).
pub fn server_config(s: Settings) -> Result<ServerConfig, (&'static str, String)> {
    let mut provider = ring::default_provider();
    if !s.cipher_suites.is_empty() {
        let tls12 = tls12_suites();
        let chosen = s.cipher_suites.iter().filter_map(|name| {
            tls12
                .iter()
                .find(|(go, _)| go == name)
                .map(|(_, suite)| *suite)
        });
        let tls13: Vec<SupportedCipherSuite> = provider
            .cipher_suites
            .iter()
            .copied()
            .filter(|suite| suite.version() == &rustls::version::TLS13)
            .collect();
        provider.cipher_suites = tls13.into_iter().chain(chosen).collect();
    }
    let provider = Arc::new(provider);
    let versions: Vec<&'static SupportedProtocolVersion> = [TlsVersion::Tls12, TlsVersion::Tls13]
        .into_iter()
        .filter(|v| (s.min_version..=s.max_version).contains(v))
        .map(TlsVersion::rustls)
        .collect();
    let verifier = client_verifier(&provider, s.client_auth, s.client_cas)
        .map_err(|e| ("tls_server_config.client_ca_file", e))?;
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(&versions)
        .map_err(|e| ("tls_server_config.cipher_suites", e.to_string()))?;
    let builder = match verifier {
        Some(v) => builder.with_client_cert_verifier(v),
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(s.certs, s.key).map_err(|e| {
        (
            "tls_server_config.key_file",
            format!("does not fit the certificate: {e}"),
        )
    })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

fn client_verifier(
    provider: &Arc<CryptoProvider>,
    auth: ClientAuth,
    cas: Option<RootCertStore>,
) -> Result<Option<Arc<dyn ClientCertVerifier>>, String> {
    let any = |mandatory| {
        Ok(Some(Arc::new(AnyClientCert {
            mandatory,
            algorithms: provider.signature_verification_algorithms,
        }) as Arc<dyn ClientCertVerifier>))
    };
    match auth {
        ClientAuth::NoClientCert => Ok(None),
        ClientAuth::RequestClientCert => any(false),
        ClientAuth::RequireAnyClientCert => any(true),
        ClientAuth::VerifyClientCertIfGiven | ClientAuth::RequireAndVerifyClientCert => {
            let roots = Arc::new(cas.ok_or("required by client_auth_type")?);
            let builder = WebPkiClientVerifier::builder_with_provider(roots, Arc::clone(provider));
            let builder = if auth == ClientAuth::VerifyClientCertIfGiven {
                builder.allow_unauthenticated()
            } else {
                builder
            };
            builder.build().map(Some).map_err(|e| e.to_string())
        }
    }
}

/// `RequestClientCert` and `RequireAnyClientCert`: any certificate is
/// taken, as Go does; the client must still prove it holds its key.
#[derive(Debug)]
struct AnyClientCert {
    mandatory: bool,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ClientCertVerifier for AnyClientCert {
    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// The PEM certificates of `path`, at least one.
pub fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no PEM certificate in it", path.display()));
    }
    Ok(certs)
}

/// The PEM private key of `path`.
pub fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    PrivateKeyDer::from_pem_slice(&pem)
        .map_err(|e| format!("{}: no PEM private key in it ({e})", path.display()))
}

/// `client_ca_file`: CA certificates, each usable as a root.
pub fn read_client_cas(path: &Path) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    for (i, cert) in read_certs(path)?.into_iter().enumerate() {
        roots.add(cert).map_err(|e| {
            format!(
                "{}: certificate {}: not a usable CA: {e}",
                path.display(),
                i + 1
            )
        })?;
    }
    Ok(roots)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_names() {
        assert_eq!(
            "RequireClientCert".parse(),
            Ok(ClientAuth::RequireAnyClientCert)
        );
        assert!(
            "Always"
                .parse::<ClientAuth>()
                .unwrap_err()
                .starts_with("unknown value \"Always\", expected one of NoClientCert,")
        );
        assert_eq!("TLS13".parse(), Ok(TlsVersion::Tls13));
        assert_eq!(
            "TLS11".parse::<TlsVersion>(),
            Err("TLS11 is not supported: portsight (rustls) speaks TLS12 and TLS13 only".into())
        );
        assert_eq!(
            cipher_suite("TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305"),
            Ok(Some("TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256"))
        );
        assert_eq!(cipher_suite("TLS_AES_128_GCM_SHA256"), Ok(None));
        assert!(
            cipher_suite("TLS_RSA_WITH_AES_128_CBC_SHA")
                .unwrap_err()
                .starts_with("TLS_RSA_WITH_AES_128_CBC_SHA is not offered by rustls")
        );
        assert!(
            cipher_suite("TLS_FAST")
                .unwrap_err()
                .starts_with("unknown cipher suite \"TLS_FAST\"; supported: TLS_ECDHE_ECDSA")
        );
    }

    #[test]
    fn every_go_name_maps_to_its_rustls_suite() {
        for (go, suite) in tls12_suites() {
            assert_eq!(format!("{:?}", suite.suite()), go);
        }
    }
}
