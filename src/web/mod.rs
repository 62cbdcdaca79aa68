//! The HTTP server: routes, and graceful shutdown with a bounded drain. It
//! is handed [`Handles`] — the latest snapshot, the metrics, the live
//! config — never the engine; it never reads /proc, and probes only for the
//! probe server. With a web config ([`WebConfig`]) it speaks TLS and asks
//! for basic auth.

use std::convert::Infallible;
use std::future::Future;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hyper::header::{ALLOW, CONTENT_SECURITY_POLICY, CONTENT_TYPE, HeaderValue, WWW_AUTHENTICATE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use socket2::{Domain, Socket, Type};
use tokio::net::TcpListener;

use crate::config::{self, ListenAddress};
use crate::engine::Live;
use crate::metrics::{self, Metrics};
use crate::snapshot::Snapshot;
use crate::status_page;
use body::Chunks;
use connections::Connections;

mod body;
pub mod connections;
mod probe_server;
mod tls_server;
mod watch;
mod web_config;
use probe_server::Gate;
pub use tls_server::{ClientAuth, TlsVersion};
pub use watch::{CHECK_EVERY, Watched};
pub use web_config::{BasicAuth, Error as WebConfigError, Spec, TlsSpec, WebConfig, parse};

/// Paths that basic auth does not cover: they carry the probe server's
/// bearer token in the same `Authorization` header, and check it.
const BEARER_PATHS: [&str; 2] = ["/probe", "/api/v1/probe"];

/// How long in-flight requests may take to finish after shutdown begins.
pub const DRAIN_GRACE: Duration = Duration::from_secs(10);
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

type Body = Chunks;

/// The request bodies the routes take: hyper's [`hyper::body::Incoming`],
/// or any other (tests call [`handle`] in-process with `Full<Bytes>`).
pub trait RequestBody:
    hyper::body::Body<Data = Bytes, Error: Into<Box<dyn std::error::Error + Send + Sync>>>
{
}

impl<B> RequestBody for B where
    B: hyper::body::Body<Data = Bytes, Error: Into<Box<dyn std::error::Error + Send + Sync>>>
{
}

/// Binds the HTTP listener. `:PORT` is `[::]:PORT` with IPV6_V6ONLY off, so
/// that IPv4 and IPv6 clients both connect, or `0.0.0.0:PORT` where IPv6 is
/// not available.
pub fn bind(addr: ListenAddress) -> std::io::Result<TcpListener> {
    let socket = match addr {
        ListenAddress::Socket(a) => bind_socket(a, None)?,
        ListenAddress::All(port) => {
            match bind_socket(
                SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), port),
                Some(false),
            ) {
                Ok(s) => s,
                Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => return Err(e),
                Err(_) => bind_socket(SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), port), None)?,
            }
        }
    };
    socket.set_nonblocking(true)?;
    TcpListener::from_std(socket.into())
}

fn bind_socket(addr: SocketAddr, v6only: Option<bool>) -> std::io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    if let Some(only) = v6only {
        socket.set_only_v6(only)?;
    }
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    Ok(socket)
}

/// What the server is handed: the latest snapshot, the metrics, and the
/// live config (reload, and the probe server's settings).
#[derive(Clone)]
pub struct Handles {
    pub snapshot: tokio::sync::watch::Receiver<Arc<Snapshot>>,
    pub metrics: Arc<Metrics>,
    pub live: Arc<Live>,
}

impl Handles {
    fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.borrow().clone()
    }

    /// Reloads the config (`POST /-/reload`, SIGHUP) and says how it went
    /// in `portsight_config_last_reload_successful`.
    pub fn reload(&self) -> Result<(), config::Error> {
        let result = self.live.reload();
        self.metrics
            .set_reload(result.is_ok(), std::time::SystemTime::now());
        result
    }
}

/// What every connection shares.
pub struct Shared {
    handles: Handles,
    gate: Gate,
    web: Watched,
    connections: Arc<Connections>,
    /// The soft descriptor limit, read when the server starts.
    nofile: u64,
}

impl Shared {
    pub fn new(handles: Handles, web: WebConfig) -> Shared {
        Shared {
            handles,
            gate: Gate::default(),
            web: Watched::new(web),
            connections: Arc::default(),
            nofile: crate::descriptors::soft_limit(),
        }
    }

    /// Counts a connection from `peer` against the limits
    /// ([`connections`]), or says why it is refused.
    fn admit(&self, peer: SocketAddr) -> Result<connections::Held, connections::Refused> {
        let limit = connections::global_limit(self.nofile, &self.handles.live.current().config);
        self.connections.admit(peer.ip(), limit)
    }
}

/// Serves HTTP (HTTPS when `web` has TLS) on an already bound `listener`
/// until `shutdown` resolves, then stops accepting and gives in-flight
/// requests [`DRAIN_GRACE`] to finish.
pub async fn serve(
    listener: TcpListener,
    handles: Handles,
    web: WebConfig,
    shutdown: impl Future<Output = ()>,
) {
    let graceful = GracefulShutdown::new();
    let shared = Arc::new(Shared::new(handles, web));
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // EMFILE and the like: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let held = match shared.admit(peer) {
                    Ok(held) => held,
                    Err(limit) => {
                        // Closed at once: its descriptor is back before the next accept.
                        tracing::debug!(peer = %peer, limit = ?limit, "connection refused: over the connection limit");
                        drop(stream);
                        continue;
                    }
                };
                let (shared, watcher) = (Arc::clone(&shared), graceful.watcher());
                // The web config as of now serves the whole connection.
                let web = shared.web.current();
                match web.tls().cloned() {
                    None => {
                        tokio::spawn(async move {
                            connection(TokioIo::new(stream), shared, web, watcher, peer).await;
                            drop(held);
                        });
                    }
                    Some(acceptor) => {
                        tokio::spawn(async move {
                            let _held = held;
                            // The handshake runs in the connection's task, so
                            // that a slow client does not hold up accepting.
                            match tokio::time::timeout(HEADER_READ_TIMEOUT, acceptor.accept(stream)).await {
                                Ok(Ok(tls)) => connection(TokioIo::new(tls), shared, web, watcher, peer).await,
                                Ok(Err(e)) => tracing::debug!(peer = %peer, error = %e, "TLS handshake failed"),
                                Err(_) => tracing::debug!(peer = %peer, "TLS handshake timed out"),
                            }
                        });
                    }
                }
            }
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => tracing::info!("HTTP connections drained"),
        () = tokio::time::sleep(DRAIN_GRACE) => {
            tracing::warn!(grace = ?DRAIN_GRACE, "HTTP drain timed out; closing remaining connections");
        }
    }
}

/// Serves one connection (plain or TLS) with `web` until it ends or
/// shutdown drains it.
async fn connection<I>(
    io: I,
    shared: Arc<Shared>,
    web: Arc<WebConfig>,
    watcher: Watcher,
    peer: SocketAddr,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .serve_connection(
            io,
            service_fn(move |req| {
                let (shared, web) = (Arc::clone(&shared), Arc::clone(&web));
                async move { Ok::<_, Infallible>(handle_with(req, &shared, &web, peer).await) }
            }),
        );
    if let Err(e) = watcher.watch(conn).await {
        tracing::debug!(peer = %peer, error = %e, "connection ended with an error");
    }
}

/// Answers one request from `client` with the current web config. Any
/// body type, so that tests can call it in-process.
pub async fn handle<B: RequestBody>(
    req: Request<B>,
    shared: &Shared,
    client: SocketAddr,
) -> Response<Body> {
    handle_with(req, shared, &shared.web.current(), client).await
}

/// Basic auth first when `web` has users (except on [`BEARER_PATHS`]),
/// then the route; `web`'s extra headers on every answer.
async fn handle_with<B: RequestBody>(
    req: Request<B>,
    shared: &Shared,
    web: &WebConfig,
    client: SocketAddr,
) -> Response<Body> {
    let mut r = if let Some(auth) = web.basic_auth()
        && !BEARER_PATHS.contains(&req.uri().path())
        && !auth.allows(req.headers()).await
    {
        let mut r = text(StatusCode::UNAUTHORIZED, "Unauthorized\n");
        r.headers_mut().insert(
            WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"portsight\""),
        );
        r
    } else {
        route(req, &shared.handles, &shared.gate, client).await
    };
    for (name, value) in web.headers() {
        r.headers_mut().insert(name.clone(), value.clone());
    }
    r
}

async fn route<B: RequestBody>(
    req: Request<B>,
    h: &Handles,
    gate: &Gate,
    client: SocketAddr,
) -> Response<Body> {
    let method = req.method().clone();
    let method = &method;
    let read_only = [Method::GET, Method::HEAD];
    match req.uri().path() {
        "/" => only(method, &read_only, || {
            let view = status_page::View::from_query(req.uri().query());
            let page = status_page::render(&h.snapshot(), view, std::time::SystemTime::now());
            let mut r = respond(StatusCode::OK, "text/html; charset=utf-8", page);
            r.headers_mut().insert(
                CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(status_page::content_security_policy()),
            );
            r
        }),
        "/api/v1/status" => only(method, &read_only, || {
            match serde_json::to_vec(&h.snapshot().status(None)) {
                Ok(body) => respond(StatusCode::OK, "application/json", body),
                Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")),
            }
        }),
        "/metrics" => {
            if !read_only.contains(method) {
                return method_not_allowed(&read_only);
            }
            // Rendering a large host's snapshot takes a while: not on the
            // threads the probes run on.
            let (metrics, snapshot) = (Arc::clone(&h.metrics), h.snapshot());
            match tokio::task::spawn_blocking(move || metrics.render_chunks(&snapshot)).await {
                Ok(Ok(chunks)) => {
                    respond_chunks(StatusCode::OK, metrics::CONTENT_TYPE, Chunks::new(chunks))
                }
                Ok(Err(e)) => text(StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")),
                Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")),
            }
        }
        "/-/healthy" => only(method, &read_only, || text(StatusCode::OK, "Healthy\n")),
        "/-/ready" => only(method, &read_only, || {
            if h.snapshot().ready() {
                text(StatusCode::OK, "Ready\n")
            } else {
                text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "Not ready: the first scan and probe round have not completed\n",
                )
            }
        }),
        "/probe" => {
            if !read_only.contains(method) {
                return method_not_allowed(&read_only);
            }
            probe_server::probe(req, h, gate, client.ip()).await
        }
        "/api/v1/probe" => {
            if method != Method::POST {
                return method_not_allowed(&[Method::POST]);
            }
            probe_server::batch(req, h, gate, client.ip()).await
        }
        "/-/reload" => {
            if method != Method::POST && method != Method::PUT {
                return method_not_allowed(&[Method::POST, Method::PUT]);
            }
            if !h.live.current().config.web.enable_lifecycle {
                return text(
                    StatusCode::FORBIDDEN,
                    "Lifecycle API is not enabled (web.enable_lifecycle, --web.enable-lifecycle); SIGHUP reloads\n",
                );
            }
            match h.reload() {
                Ok(()) => text(StatusCode::OK, "Configuration reloaded\n"),
                Err(e) => text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("Reload failed, the running configuration is kept: {e}\n"),
                ),
            }
        }
        _ => text(
            StatusCode::NOT_FOUND,
            "Not found: see / for the endpoints\n",
        ),
    }
}

fn only(
    method: &Method,
    allowed: &[Method],
    ok: impl FnOnce() -> Response<Body>,
) -> Response<Body> {
    if allowed.contains(method) {
        ok()
    } else {
        method_not_allowed(allowed)
    }
}

fn method_not_allowed(allowed: &[Method]) -> Response<Body> {
    let allow = allowed
        .iter()
        .map(Method::as_str)
        .collect::<Vec<_>>()
        .join(", ");
    let mut r = text(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("Method not allowed: use {allow}\n"),
    );
    if let Ok(v) = HeaderValue::from_str(&allow) {
        r.headers_mut().insert(ALLOW, v);
    }
    r
}

fn respond(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Body> {
    respond_chunks(status, content_type, Chunks::from(body.into()))
}

fn respond_chunks(status: StatusCode, content_type: &'static str, body: Chunks) -> Response<Body> {
    let mut r = Response::new(body);
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    respond(status, "text/plain; charset=utf-8", body)
}

#[cfg(test)]
mod tests;
