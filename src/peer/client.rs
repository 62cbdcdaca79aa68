//! Asks one peer to probe a batch of targets.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{AUTHORIZATION, CONTENT_TYPE};
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use super::wire::{BatchRequest, BatchResponse};
use super::{Peer, PeerTls};
use crate::probe::{ProbeResult, Protocol, Target, Vantage};

/// The largest answer accepted from a peer.
const MAX_RESPONSE: usize = 16 << 20;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("request to {peer}: {reason}")]
    Request { peer: String, reason: String },
    #[error("{peer} answered {status}: {body}")]
    Status {
        peer: String,
        status: StatusCode,
        body: String,
    },
    #[error("{peer} did not answer within {timeout:?}")]
    Timeout { peer: String, timeout: Duration },
}

/// An HTTP client shared by every request to peers.
#[derive(Clone)]
pub struct PeerClient {
    http: Client<HttpConnector, Full<Bytes>>,
}

impl Default for PeerClient {
    fn default() -> Self {
        PeerClient {
            http: Client::builder(TokioExecutor::new()).build_http(),
        }
    }
}

impl PeerClient {
    /// Asks `peer` to probe `targets` with `probe_timeout` each, waiting at
    /// most `timeout` for the whole answer. Results carry `vantage="external"`
    /// and `source=<peer name>`.
    pub async fn probe(
        &self,
        peer: &Peer,
        targets: &[SocketAddr],
        probe_timeout: Duration,
        timeout: Duration,
    ) -> Result<Vec<ProbeResult>, Error> {
        let (at, started) = (SystemTime::now(), Instant::now());
        let err = |reason: String| Error::Request {
            peer: peer.name.clone(),
            reason,
        };
        let request = batch_request(peer, targets, probe_timeout).map_err(err)?;
        let exchange = self.exchange(peer.tls.as_ref(), request);
        let (status, body) = tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| Error::Timeout {
                peer: peer.name.clone(),
                timeout,
            })?
            .map_err(err)?;
        if status != StatusCode::OK {
            return Err(Error::Status {
                peer: peer.name.clone(),
                status,
                body: String::from_utf8_lossy(&body)
                    .trim()
                    .chars()
                    .take(200)
                    .collect(),
            });
        }
        let answer: BatchResponse =
            serde_json::from_slice(&body).map_err(|e| err(format!("bad answer: {e}")))?;
        // Only what we asked for counts as evidence.
        let asked: HashSet<&SocketAddr> = targets.iter().collect();
        let results = answer.results.into_iter().filter_map(|r| {
            let addr = r.attempt.target.parse::<SocketAddr>().ok()?;
            asked.contains(&addr).then(|| ProbeResult {
                target: Target {
                    vantage: Vantage::External,
                    source: peer.name.clone(),
                    protocol: Protocol::Tcp,
                    addr,
                    netns: crate::netns::NsId::OWN,
                },
                outcome: r.attempt.outcome,
                duration: Duration::try_from_secs_f64(r.attempt.duration_seconds)
                    .unwrap_or_default(),
                errno: None,
                error: r.attempt.error,
                at,
                started,
            })
        });
        Ok(results.collect())
    }

    /// Sends `request`, over `tls` when the peer has it (an `https` peer
    /// never falls back to plain HTTP); the status and the whole body (at
    /// most [`MAX_RESPONSE`]).
    async fn exchange(
        &self,
        tls: Option<&PeerTls>,
        request: Request<Full<Bytes>>,
    ) -> Result<(StatusCode, Bytes), String> {
        let response = match tls {
            None => self.http.request(request).await,
            Some(tls) => tls.client.request(request).await,
        }
        .map_err(|e| chain(&e))?;
        let status = response.status();
        let body = Limited::new(response.into_body(), MAX_RESPONSE)
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok((status, body))
    }
}

/// `POST <peer>/api/v1/probe` with the targets and their timeout.
fn batch_request(
    peer: &Peer,
    targets: &[SocketAddr],
    probe_timeout: Duration,
) -> Result<Request<Full<Bytes>>, String> {
    let body = serde_json::to_vec(&BatchRequest {
        targets: targets.iter().map(ToString::to_string).collect(),
        timeout: Some(probe_timeout),
    })
    .map_err(|e| e.to_string())?;
    Request::builder()
        .method(Method::POST)
        .uri(format!("{}api/v1/probe", with_slash(&peer.url.to_string())))
        .header(CONTENT_TYPE, "application/json")
        .header(AUTHORIZATION, format!("Bearer {}", peer.token))
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| e.to_string())
}

/// An error and its sources, so that a TLS failure says why (hyper's own
/// message is only "client error (Connect)").
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let more = s.to_string();
        if !text.contains(&more) {
            text = format!("{text}: {more}");
        }
        source = s.source();
    }
    text
}

fn with_slash(base: &str) -> String {
    if base.ends_with('/') {
        base.to_string()
    } else {
        format!("{base}/")
    }
}
