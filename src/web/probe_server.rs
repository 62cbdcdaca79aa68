//! `/probe` and `POST /api/v1/probe`: probes served to others (peers, or
//! Prometheus using portsight as a blackbox-style prober). Off unless
//! enabled; then a request passes, in order: the bearer token (401; 400 for
//! several `Authorization` headers), the per-client rate limit (429; only
//! clients with the token get a bucket, so that clients without one can
//! never lock out one with it), a well-formed target (400), the allow-list
//! (403, and no connection is made), the concurrency limit (429). Every
//! refusal says why and is counted in `portsight_probe_requests_total{result}`.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::header::{AUTHORIZATION, HeaderMap, HeaderValue, WWW_AUTHENTICATE};
use hyper::{Request, Response, StatusCode};

use super::{Body, Handles, RequestBody, respond, text};
use crate::config::{AllowRule, Config, is_unicast};
use crate::engine::Loaded;
use crate::metrics::{self, RequestResult};
use crate::peer::wire::{BatchRequest, BatchResponse, MAX_TARGETS, TargetResult};
use crate::probe::scheduler::with_empty;
use crate::probe::{ProbeResult, Target, Vantage};

/// The longest timeout a client may ask for.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(30);
/// The longest a batch request may take, all its probes together.
const MAX_BATCH_TIME: Duration = Duration::from_secs(60);
/// The largest batch request body.
const MAX_BODY: usize = 1 << 20;
/// Buckets kept before full ones are dropped; beyond it (after dropping),
/// new clients are refused until old ones go quiet.
const MAX_BUCKETS: usize = 10_000;

/// Shared state of the probe server: rate-limit buckets and requests in flight.
#[derive(Default)]
pub struct Gate {
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
    inflight: AtomicUsize,
}

struct Bucket {
    tokens: f64,
    last: Instant,
}

/// A refusal: status, result for the counter, reason for the client.
struct Refusal(StatusCode, RequestResult, String);

/// Held while a request is served; frees its concurrency slot on drop.
struct Slot<'a>(&'a AtomicUsize);

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Gate {
    /// Token bucket per client (an IPv4 address, or an IPv6 /64, so that a
    /// client cannot get a fresh bucket per address): `rate` per second, up
    /// to `burst`. The map holds at most [`MAX_BUCKETS`]: buckets that have
    /// refilled (the same as none) go first, then new clients wait. `now`
    /// is the time of the request (`Instant::now()`; tests pass their own).
    fn take(&self, client: IpAddr, rate: f64, burst: u32, now: Instant) -> bool {
        let client = super::connections::client_key(client);
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if buckets.len() >= MAX_BUCKETS && !buckets.contains_key(&client) {
            let refill =
                Duration::try_from_secs_f64(f64::from(burst) / rate).unwrap_or(Duration::MAX);
            buckets.retain(|_, b| now.duration_since(b.last) < refill);
            if buckets.len() >= MAX_BUCKETS {
                return false;
            }
        }
        let b = buckets.entry(client).or_insert(Bucket {
            tokens: f64::from(burst),
            last: now,
        });
        b.tokens =
            (b.tokens + now.duration_since(b.last).as_secs_f64() * rate).min(f64::from(burst));
        b.last = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    fn slot(&self, limit: usize) -> Option<Slot<'_>> {
        let before = self.inflight.fetch_add(1, Ordering::AcqRel);
        let slot = Slot(&self.inflight);
        (before < limit).then_some(slot)
    }
}

/// `GET /probe?target=IP:PORT[&timeout=2s][&format=json]`.
pub async fn probe<B>(req: Request<B>, h: &Handles, gate: &Gate, client: IpAddr) -> Response<Body> {
    let loaded = h.live.current();
    let config = &loaded.config;
    if !config.probe_server.enabled {
        return disabled();
    }
    let query = parse_query(req.uri().query().unwrap_or(""));
    let outcome = async {
        admit(&loaded, gate, req.headers(), client)?;
        let target = match query.get("target") {
            Some(t) => parse_target(t)?,
            None => {
                return Err(invalid(
                    "missing the target parameter: /probe?target=IP:PORT".into(),
                ));
            }
        };
        let timeout = timeout(
            config,
            query.get("timeout").map(String::as_str),
            req.headers(),
        )?;
        allowed(&config.probe_server.allow, &[target])?;
        let _slot = gate
            .slot(config.probe_server.concurrency)
            .ok_or_else(busy)?;
        // The timeout bounds the whole request, the wait for a connect slot
        // included; single probes have slots of their own, so batches never
        // hold them up.
        let deadline = tokio::time::Instant::now() + timeout;
        let target = Target::local(Vantage::External, target);
        let results = loaded
            .single_prober
            .run_by(with_empty(vec![target]), timeout, Some(deadline))
            .await;
        results
            .into_iter()
            .flatten()
            .next()
            .map(|r| vec![r])
            .ok_or_else(|| {
                Refusal(
                    StatusCode::SERVICE_UNAVAILABLE,
                    RequestResult::Limited,
                    format!(
                        "no connect slot came free within the timeout ({}); retry later",
                        humantime::format_duration(timeout)
                    ),
                )
            })
    };
    match outcome.await {
        Err(refusal) => refuse(h, refusal),
        Ok(results) => {
            h.metrics.count_probe_request(RequestResult::Served);
            let Some(r) = results.first() else {
                return text(StatusCode::INTERNAL_SERVER_ERROR, "the probe did not run\n");
            };
            if query.get("format").is_some_and(|f| f == "json") {
                json(StatusCode::OK, &TargetResult::from(r))
            } else {
                match metrics::render_probe(r) {
                    Ok(body) => respond(StatusCode::OK, metrics::CONTENT_TYPE, body),
                    Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")),
                }
            }
        }
    }
}

/// `POST /api/v1/probe` with `{"targets": ["IP:PORT", …], "timeout": "2s"}`.
pub async fn batch<B: RequestBody>(
    req: Request<B>,
    h: &Handles,
    gate: &Gate,
    client: IpAddr,
) -> Response<Body> {
    let loaded = h.live.current();
    let config = &loaded.config;
    if !config.probe_server.enabled {
        return disabled();
    }
    let (parts, body) = req.into_parts();
    let outcome = async {
        admit(&loaded, gate, &parts.headers, client)?;
        let body: Bytes = Limited::new(body, MAX_BODY)
            .collect()
            .await
            .map_err(|e| invalid(format!("reading the body: {e} (at most {MAX_BODY} bytes)")))?
            .to_bytes();
        let request: BatchRequest = serde_json::from_slice(&body).map_err(|e| {
            invalid(format!(
                "the body must be {{\"targets\": [\"IP:PORT\", ...], \"timeout\": \"2s\"}}: {e}"
            ))
        })?;
        if request.targets.is_empty() || request.targets.len() > MAX_TARGETS {
            return Err(invalid(format!(
                "{} targets: a batch holds 1 to {MAX_TARGETS}",
                request.targets.len()
            )));
        }
        let targets = request
            .targets
            .iter()
            .map(|t| parse_target(t))
            .collect::<Result<Vec<_>, _>>()?;
        let timeout = match request.timeout {
            Some(t) => checked_timeout(t)?,
            None => timeout(config, None, &parts.headers)?,
        };
        allowed(&config.probe_server.allow, &targets)?;
        let _slot = gate
            .slot(config.probe_server.concurrency)
            .ok_or_else(busy)?;
        // A batch may not hold the shared connect slots for ever: when the
        // deadline passes, its unfinished probes are dropped (and their
        // slots freed) and the client is told to send less.
        tokio::time::timeout(MAX_BATCH_TIME, probe_for_client(&loaded, targets, timeout))
            .await
            .map_err(|_| {
                Refusal(
                    StatusCode::SERVICE_UNAVAILABLE,
                    RequestResult::Limited,
                    format!(
                        "the batch did not finish within {}: send fewer targets or a shorter timeout",
                        humantime::format_duration(MAX_BATCH_TIME)
                    ),
                )
            })
    };
    match outcome.await {
        Err(refusal) => refuse(h, refusal),
        Ok(results) => {
            h.metrics.count_probe_request(RequestResult::Served);
            json(
                StatusCode::OK,
                &BatchResponse {
                    results: results.iter().map(TargetResult::from).collect(),
                },
            )
        }
    }
}

/// Probes `targets` for a client under the probe server's own concurrency
/// limit. Callers check the allow-list first.
async fn probe_for_client(
    loaded: &Loaded,
    targets: Vec<SocketAddr>,
    timeout: Duration,
) -> Vec<ProbeResult> {
    let targets = targets
        .into_iter()
        .map(|a| Target::local(Vantage::External, a))
        .collect();
    loaded.server_prober.run(targets, timeout).await
}

/// The token, then the rate limit: a bucket is taken (and made) only for
/// a client that sent the right token.
fn admit(loaded: &Loaded, gate: &Gate, headers: &HeaderMap, client: IpAddr) -> Result<(), Refusal> {
    check_token(loaded.server_token.as_deref(), headers)?;
    let s = &loaded.config.probe_server;
    if !gate.take(client, s.rate_limit, s.burst, Instant::now()) {
        return Err(Refusal(
            StatusCode::TOO_MANY_REQUESTS,
            RequestResult::Limited,
            format!(
                "rate limit: at most {} requests per second from {client}",
                s.rate_limit
            ),
        ));
    }
    Ok(())
}

/// Exactly one `Authorization: Bearer <token>` header, the token compared
/// byte for byte (nothing trimmed).
fn check_token(expected: Option<&str>, headers: &HeaderMap) -> Result<(), Refusal> {
    let mut all = headers.get_all(AUTHORIZATION).iter();
    let (first, more) = (all.next(), all.next());
    if more.is_some() {
        return Err(invalid(
            "several Authorization headers: send exactly one".into(),
        ));
    }
    let given = first.and_then(|v| v.as_bytes().strip_prefix(b"Bearer ".as_slice()));
    let expected = expected.unwrap_or_default().as_bytes();
    match given {
        None => Err(Refusal(
            StatusCode::UNAUTHORIZED,
            RequestResult::Unauthorized,
            "missing bearer token: send Authorization: Bearer <token>".into(),
        )),
        Some(t) if !expected.is_empty() && same(t, expected) => Ok(()),
        Some(_) => Err(Refusal(
            StatusCode::UNAUTHORIZED,
            RequestResult::Unauthorized,
            "wrong bearer token".into(),
        )),
    }
}

/// Compares in constant time (for equal lengths).
fn same(a: &[u8], b: &[u8]) -> bool {
    bool::from(subtle::ConstantTimeEq::ct_eq(a, b))
}

fn allowed(rules: &[AllowRule], targets: &[SocketAddr]) -> Result<(), Refusal> {
    let denied: Vec<String> = targets
        .iter()
        .filter(|t| !rules.iter().any(|r| r.allows(**t)))
        .map(ToString::to_string)
        .collect();
    if denied.is_empty() {
        Ok(())
    } else {
        Err(Refusal(
            StatusCode::FORBIDDEN,
            RequestResult::Denied,
            format!("not in probe_server.allow: {}", denied.join(", ")),
        ))
    }
}

/// The most of a client's text a refusal repeats.
const ECHO: usize = 64;

/// `text` quoted for a reason sent back (and logged): at most [`ECHO`]
/// characters of it, control characters escaped, and its length when cut.
fn echo(text: &str) -> String {
    let mut chars = text.chars();
    let head: String = chars.by_ref().take(ECHO).collect();
    if chars.next().is_none() {
        format!("{head:?}")
    } else {
        format!("{head:?}... ({} bytes)", text.len())
    }
}

/// `IP:PORT` or `[IPv6]:PORT`; no host names (nothing is resolved).
fn parse_target(text: &str) -> Result<SocketAddr, Refusal> {
    let s = echo(text);
    match text.parse::<SocketAddr>() {
        Ok(a) if a.port() == 0 => Err(invalid(format!("target {s}: port 0"))),
        Ok(a) if !is_unicast(a.ip()) => Err(invalid(format!(
            "target {s}: not a unicast address (unspecified, multicast or broadcast)"
        ))),
        Ok(a) => Ok(a),
        Err(_) => Err(invalid(format!(
            "target {s}: want IP:PORT or [IPv6]:PORT (host names are not resolved)"
        ))),
    }
}

/// The timeout: `timeout=` (like `2s`, or seconds), else `probe.timeout`, and
/// never past Prometheus's scrape timeout (minus 0.5 s) when it sends one.
fn timeout(config: &Config, param: Option<&str>, headers: &HeaderMap) -> Result<Duration, Refusal> {
    let mut t = match param {
        Some(p) => checked_timeout(parse_duration(p).ok_or_else(|| {
            invalid(format!(
                "timeout {}: want a duration like 2s or 500ms",
                echo(p)
            ))
        })?)?,
        None => config.probe.timeout,
    };
    if let Some(scrape) = headers
        .get("X-Prometheus-Scrape-Timeout-Seconds")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<f64>().ok())
        .and_then(|s| Duration::try_from_secs_f64(s - 0.5).ok())
        .filter(|d| !d.is_zero())
    {
        t = t.min(scrape);
    }
    Ok(t)
}

fn checked_timeout(t: Duration) -> Result<Duration, Refusal> {
    if t.is_zero() || t > MAX_TIMEOUT {
        Err(invalid(format!(
            "timeout {}: must be more than 0 and at most {}",
            humantime::format_duration(t),
            humantime::format_duration(MAX_TIMEOUT)
        )))
    } else {
        Ok(t)
    }
}

fn parse_duration(s: &str) -> Option<Duration> {
    humantime::parse_duration(s).ok().or_else(|| {
        s.parse::<f64>()
            .ok()
            .and_then(|f| Duration::try_from_secs_f64(f).ok())
    })
}

/// The query's parameters, percent-decoded; the last of a repeated name wins.
fn parse_query(q: &str) -> HashMap<String, String> {
    form_urlencoded::parse(q.as_bytes())
        .into_owned()
        .filter(|(k, _)| !k.is_empty())
        .collect()
}

fn invalid(reason: String) -> Refusal {
    Refusal(StatusCode::BAD_REQUEST, RequestResult::Invalid, reason)
}

fn busy() -> Refusal {
    Refusal(
        StatusCode::TOO_MANY_REQUESTS,
        RequestResult::Limited,
        "too many probe requests in flight (probe_server.concurrency); retry later".into(),
    )
}

/// The longest reason sent back.
const MAX_REASON: usize = 512;

fn refuse(h: &Handles, Refusal(status, result, mut reason): Refusal) -> Response<Body> {
    h.metrics.count_probe_request(result);
    if let Some((i, _)) = reason.char_indices().nth(MAX_REASON) {
        reason.truncate(i);
        reason.push_str("...");
    }
    tracing::debug!(status = %status, result = result.as_str(), reason = %reason, "probe request refused");
    let mut r = text(status, format!("{reason}\n"));
    if status == StatusCode::UNAUTHORIZED {
        r.headers_mut().insert(
            WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"portsight\""),
        );
    }
    r
}

fn disabled() -> Response<Body> {
    text(
        StatusCode::NOT_FOUND,
        "the probe server is disabled (probe_server.enabled = false)\n",
    )
}

fn json<T: serde::Serialize>(status: StatusCode, value: &T) -> Response<Body> {
    match serde_json::to_vec(value) {
        Ok(body) => respond(status, "application/json", body),
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_decoding() {
        let q = parse_query("target=%5B%3A%3A1%5D%3A80&format=json&x");
        assert_eq!(q["target"], "[::1]:80");
        assert_eq!(q["format"], "json");
        assert_eq!(parse_query("t=100%")["t"], "100%");
        assert_eq!(parse_query("t=%4")["t"], "%4");
        assert_eq!(parse_query("t=1&t=%zz")["t"], "%zz");
        assert_eq!(parse_query("t=a+b")["t"], "a b");
    }

    #[test]
    fn targets() {
        assert!(parse_target("10.0.0.1:80").is_ok());
        assert!(parse_target("[fd77::1]:80").is_ok());
        assert!(parse_target("example.com:80").is_err());
        assert!(parse_target("10.0.0.1:0").is_err());
        assert!(parse_target("10.0.0.1").is_err());
        for bad in [
            "0.0.0.0:80",
            "[::]:80",
            "224.0.0.1:80",
            "255.255.255.255:80",
            "[::ffff:0.0.0.0]:80",
            "[ff02::1]:80",
        ] {
            assert!(parse_target(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn rate_limit_is_per_client() {
        let g = Gate::default();
        let now = Instant::now();
        let ip: IpAddr = "10.77.0.2".parse().unwrap();
        assert!(g.take(ip, 1.0, 2, now));
        assert!(g.take(ip, 1.0, 2, now));
        assert!(!g.take(ip, 1.0, 2, now), "burst spent");
        assert!(
            g.take("10.77.0.3".parse().unwrap(), 1.0, 2, now),
            "per client"
        );
        let v6 = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(g.take(v6("fd77::1"), 1.0, 2, now));
        assert!(g.take(v6("fd77::2"), 1.0, 2, now));
        assert!(
            !g.take(v6("fd77::ffff:3"), 1.0, 2, now),
            "one bucket per IPv6 /64"
        );
        assert!(g.take(v6("fd77:0:0:1::1"), 1.0, 2, now), "another /64");
    }

    #[test]
    fn rate_limit_refills() {
        let g = Gate::default();
        let ip: IpAddr = "10.77.0.2".parse().unwrap();
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        // 2 per second, up to 3.
        let take = |ms| g.take(ip, 2.0, 3, at(ms));
        assert!(take(0) && take(0) && take(0), "the burst");
        assert!(!take(0), "burst spent");
        assert!(!take(400), "0.8 tokens after 400 ms: not yet");
        assert!(take(600), "1.2 tokens after 600 ms: one back");
        assert!(!take(600), "and only one: 0.2 left");
        assert!(!take(900), "0.8 at 900 ms");
        assert!(take(1100), "1.2 at 1100 ms");
        // A long pause refills up to the burst, not beyond.
        assert!(take(60_000) && take(60_000) && take(60_000));
        assert!(!take(60_000), "at most the burst after a pause");
        // The clock going nowhere gives nothing back.
        assert!(!take(60_000));
    }

    #[test]
    fn concurrency_slots() {
        let g = Gate::default();
        let a = g.slot(1);
        assert!(a.is_some());
        assert!(g.slot(1).is_none());
        drop(a);
        assert!(g.slot(1).is_some());
    }

    #[test]
    fn constant_time_compare() {
        assert!(same(b"abc", b"abc"));
        assert!(!same(b"abc", b"abd"));
        assert!(!same(b"abc", b"abcd"));
    }

    mod props {
        use proptest::prelude::*;

        use super::super::*;

        fn target_text() -> impl Strategy<Value = String> {
            prop_oneof![
                ".{0,80}",
                "\\[?[0-9a-fA-F:.%]{0,45}\\]?(:[0-9]{0,6})?",
                "[0-9]{1,4}(\\.[0-9]{1,4}){0,4}(:[0-9+-]{0,7})?",
            ]
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(512))]

            #[test]
            fn query_strings_never_panic(q in ".{0,200}", raw in prop::collection::vec(any::<u8>(), 0..100)) {
                let _ = parse_query(&q);
                let _ = parse_query(&String::from_utf8_lossy(&raw));
            }

            #[test]
            fn targets_never_panic_and_are_echoed_short(t in target_text()) {
                if let Err(Refusal(status, _, reason)) = parse_target(&t) {
                    prop_assert_eq!(status, StatusCode::BAD_REQUEST);
                    prop_assert!(reason.len() < 600, "{}", reason.len());
                }
            }

            #[test]
            fn authorization_headers_never_panic(
                values in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..40), 0..3),
                prefixed in prop::collection::vec(".{0,20}", 0..3),
            ) {
                let mut headers = HeaderMap::new();
                for v in values.iter().map(Vec::as_slice).chain(prefixed.iter().map(|p| p.as_bytes())) {
                    if let Ok(v) = HeaderValue::from_bytes(v) {
                        headers.append(AUTHORIZATION, v);
                    }
                    let mut bearer = b"Bearer ".to_vec();
                    bearer.extend_from_slice(v);
                    if let Ok(v) = HeaderValue::from_bytes(&bearer) {
                        headers.append(AUTHORIZATION, v);
                    }
                }
                let n = headers.get_all(AUTHORIZATION).iter().count();
                let ok = check_token(Some("s3cret"), &headers).is_ok();
                prop_assert!(!ok || (n == 1 && headers[AUTHORIZATION] == "Bearer s3cret"));
                let _ = check_token(None, &headers);
            }

            #[test]
            fn timeouts_never_panic(param in ".{0,30}", scrape in ".{0,30}") {
                let mut headers = HeaderMap::new();
                if let Ok(v) = HeaderValue::from_str(&scrape) {
                    headers.insert("X-Prometheus-Scrape-Timeout-Seconds", v);
                }
                let config = Config::default();
                if let Ok(t) = timeout(&config, Some(&param), &headers) {
                    prop_assert!(t <= MAX_TIMEOUT && !t.is_zero());
                }
            }
        }
    }
}
