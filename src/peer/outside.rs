//! [`OutsideView`]: one round of asking peers for the external view — which
//! peers (listed, and DNS with its last answer kept), which `fanout` of them
//! (rendezvous hashing), batches of at most [`wire::MAX_TARGETS`], all at once.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::client::PeerClient;
use super::{Peer, PeerSet, choose, identity, wire};
use crate::config::Config;
use crate::probe::ProbeResult;

/// Asks peers; remembers what `peers.dns` last resolved to.
#[derive(Default)]
pub struct OutsideView {
    client: PeerClient,
    dns_peers: Mutex<Vec<Peer>>,
}

/// What one round of asking brought.
#[derive(Debug, Default)]
pub struct Answers {
    /// The results of the peers that answered.
    pub results: Vec<ProbeResult>,
    /// The peers chosen this round.
    pub asked: HashSet<String>,
    /// Each peer asked, and whether it answered (`portsight_peer_up`).
    pub up: Vec<(String, bool)>,
    /// Every peer known this round, asked or not.
    pub known: HashSet<String>,
    pub took: Duration,
}

impl Answers {
    /// Whether `source`'s old results still stand: it was not asked this
    /// time, and still exists. (Those asked have new results, or none.)
    pub fn keeps(&self, source: &str) -> bool {
        self.known.contains(source) && !self.asked.contains(source)
    }
}

impl OutsideView {
    /// Asks `peers.fanout` peers at once to probe `ports` on the
    /// `external` addresses; `own` (this host's addresses) are never peers.
    pub async fn ask(
        &self,
        config: &Config,
        peers: &PeerSet,
        ports: &[u16],
        external: &[IpAddr],
        own: &[IpAddr],
    ) -> Answers {
        let started = Instant::now();
        let targets: Vec<SocketAddr> = ports
            .iter()
            .flat_map(|&p| external.iter().map(move |ip| SocketAddr::new(*ip, p)))
            .collect();
        let all = self.peers(config, peers, own).await;
        let chosen = choose(&identity(config), &all, config.peers.fanout);
        let asked = chosen.iter().map(|p| p.name.clone()).collect();
        let mut asks = tokio::task::JoinSet::new();
        for p in chosen.into_iter().filter(|_| !targets.is_empty()) {
            let (client, p, targets) = (self.client.clone(), p.clone(), targets.clone());
            let (probe_timeout, timeout) = (config.probe.timeout, config.peers.timeout);
            asks.spawn(async move {
                let mut results = Vec::new();
                for batch in targets.chunks(wire::MAX_TARGETS) {
                    match client.probe(&p, batch, probe_timeout, timeout).await {
                        Ok(r) => results.extend(r),
                        Err(e) => return (p.name, Err(e)),
                    }
                }
                (p.name, Ok(results))
            });
        }
        let mut answers = Answers {
            known: all.into_iter().map(|p| p.name).collect(),
            asked,
            ..Answers::default()
        };
        while let Some(joined) = asks.join_next().await {
            let Ok((name, answer)) = joined else { continue };
            match answer {
                Ok(r) => {
                    answers.results.extend(r);
                    answers.up.push((name, true));
                }
                Err(e) => {
                    tracing::warn!(peer = %name, error = %e, "peer did not answer; no external evidence from it");
                    answers.up.push((name, false));
                }
            }
        }
        answers.took = started.elapsed();
        answers
    }

    /// The listed peers and those `peers.dns` resolves to; on a failed
    /// lookup, those it resolved to last time: a DNS outage must not make
    /// dead peers vanish from `portsight_peer_up`.
    async fn peers(&self, config: &Config, peers: &PeerSet, own: &[IpAddr]) -> Vec<Peer> {
        let mut all = peers.listed.clone();
        let last = |found: Option<Vec<Peer>>| {
            let mut kept = self.dns_peers.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(found) = found {
                *kept = found;
            }
            kept.clone()
        };
        match peers.resolve_dns(config, own).await {
            Some(Ok(found)) => all.extend(last(Some(found))),
            Some(Err(e)) => {
                tracing::warn!(error = %e, "peer DNS lookup failed; using the last answer");
                all.extend(last(None));
            }
            None => {}
        }
        all
    }
}
