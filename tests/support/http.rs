//! An HTTP and HTTPS client for tests: hyper-util's legacy client (with
//! hyper-rustls for TLS) on a small current-thread runtime of its own, so
//! that the connection is made by the calling thread — inside the network
//! namespace that thread is in (see `netns::Host::run`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_rustls::FixedServerNameResolver;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::{Connect, HttpConnector};
use hyper_util::rt::TokioExecutor;
use rustls::SupportedProtocolVersion;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

/// How long one request may take, connecting included.
const LIMIT: Duration = Duration::from_secs(15);

/// A whole HTTP/1.1 response.
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Sends one request and reads the whole response; panics when there is none.
pub fn http(method: &str, addr: SocketAddr, path: &str) -> HttpResponse {
    http_with(method, addr, path, &[], "")
}

/// As [`http`], with extra headers and a body.
pub fn http_with(
    method: &str,
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> HttpResponse {
    try_http_with(method, addr, path, headers, body)
        .unwrap_or_else(|e| panic!("{method} http://{addr}{path}: {e}"))
}

pub fn get(addr: SocketAddr, path: &str) -> HttpResponse {
    http("GET", addr, path)
}

/// `GET`, or why no response came (refused while a server starts, …).
pub fn try_get(addr: SocketAddr, path: &str) -> Result<HttpResponse, String> {
    try_http_with("GET", addr, path, &[], "")
}

/// As [`http_with`], with the failure to get a response as an `Err`.
pub fn try_http_with(
    method: &str,
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Result<HttpResponse, String> {
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(Duration::from_secs(5)));
    send(
        connector,
        method,
        &format!("http://{addr}{path}"),
        headers,
        body,
    )
}

/// One HTTPS `GET` to `addr` that trusts only `cert` and expects it to be
/// issued for `localhost` (the SNI sent and the name verified).
pub fn https(
    addr: SocketAddr,
    cert: &CertificateDer<'static>,
    path: &str,
    headers: &[(&str, &str)],
) -> HttpResponse {
    try_https(addr, &TlsClient::trusting(cert), path, headers)
        .unwrap_or_else(|e| panic!("GET https://{addr}{path}: {e}"))
}

/// What an HTTPS client trusts, presents and speaks.
pub struct TlsClient {
    pub roots: Vec<CertificateDer<'static>>,
    /// A client certificate (chain) and its key.
    pub identity: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
    pub versions: Vec<&'static SupportedProtocolVersion>,
    /// The name sent and verified.
    pub server_name: String,
}

impl TlsClient {
    /// Trusts `cert` for `localhost`, TLS 1.2 and 1.3, no client certificate.
    pub fn trusting(cert: &CertificateDer<'static>) -> TlsClient {
        TlsClient {
            roots: vec![cert.clone()],
            identity: None,
            versions: vec![&rustls::version::TLS12, &rustls::version::TLS13],
            server_name: "localhost".into(),
        }
    }
}

/// One HTTPS `GET` as `client`, or why there was no response (a refused
/// handshake, …).
pub fn try_https(
    addr: SocketAddr,
    client: &TlsClient,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<HttpResponse, String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in &client.roots {
        roots.add(cert.clone()).expect("a CA certificate");
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&client.versions)
    .expect("TLS versions")
    .with_root_certificates(roots);
    let tls = match &client.identity {
        None => builder.with_no_client_auth(),
        Some((chain, key)) => builder
            .with_client_auth_cert(chain.clone(), key.clone_key())
            .expect("a client certificate"),
    };
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_only()
        .with_server_name_resolver(FixedServerNameResolver::new(
            ServerName::try_from(client.server_name.clone()).expect("a server name"),
        ))
        .enable_http1()
        .build();
    send(
        connector,
        "GET",
        &format!("https://{addr}{path}"),
        headers,
        "",
    )
}

fn send<C>(
    connector: C,
    method: &str,
    uri: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Result<HttpResponse, String>
where
    C: Connect + Clone + Send + Sync + 'static,
{
    let mut request = Request::builder().method(method).uri(uri);
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let request = request
        .body(Full::new(Bytes::from(body.to_string())))
        .map_err(|e| format!("building the request: {e}"))?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("a runtime: {e}"))?;
    rt.block_on(async {
        let client: Client<C, Full<Bytes>> = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(0)
            .build(connector);
        let exchange = async {
            let response = client.request(request).await.map_err(|e| {
                // The legacy client's error says little; its source says why.
                let why = std::error::Error::source(&e).map(ToString::to_string);
                format!("{e}: {}", why.unwrap_or_default())
            })?;
            let (head, body) = response.into_parts();
            let body = body
                .collect()
                .await
                .map_err(|e| format!("reading the body: {e}"))?
                .to_bytes();
            Ok(HttpResponse {
                status: head.status.as_u16(),
                headers: head
                    .headers
                    .iter()
                    .map(|(k, v)| {
                        (
                            k.as_str().to_string(),
                            String::from_utf8_lossy(v.as_bytes()).into_owned(),
                        )
                    })
                    .collect(),
                body: String::from_utf8_lossy(&body).into_owned(),
            })
        };
        tokio::time::timeout(LIMIT, exchange)
            .await
            .map_err(|_| format!("no whole response within {LIMIT:?}"))?
    })
}
