//! The outside view: asking remote portsight instances (peers) to probe this
//! host's external addresses. Peers come from `[[peer]]` and from DNS; each
//! round, `fanout` of them are chosen by rendezvous hashing on this host's
//! identity, so n hosts cost n·k requests, not n².

pub mod client;
mod outside;
mod tls;
pub mod wire;

pub use outside::{Answers, OutsideView};
pub use tls::PeerTls;

use std::net::IpAddr;

use hyper::Uri;

use crate::config::{self, Config, Scheme};

/// A peer we can ask.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// The `source` label of its probes.
    pub name: String,
    /// `http://HOST:PORT` or `https://HOST:PORT`.
    pub url: Uri,
    pub token: String,
    /// How to speak TLS to it, for an `https` URL.
    pub tls: Option<PeerTls>,
}

/// The configured peers with their tokens (and CA files) read; DNS peers
/// are resolved each round.
#[derive(Debug, Clone, Default)]
pub struct PeerSet {
    pub listed: Vec<Peer>,
    /// Token for DNS-discovered peers.
    pub dns_token: Option<String>,
    /// TLS for DNS-discovered peers, when `peers.scheme = "https"`.
    pub dns_tls: Option<PeerTls>,
}

impl PeerSet {
    /// Reads the token and CA files of `config`'s peers. Errors name the key.
    pub fn load(config: &Config) -> Result<PeerSet, config::Error> {
        let mut listed = Vec::new();
        for (i, p) in config.peer_list.iter().enumerate() {
            let (path, key) = if p.token_file.as_os_str().is_empty() {
                (&config.peers.token_file, "peers.token_file".to_string())
            } else {
                (&p.token_file, format!("peer[{i}].token_file"))
            };
            let tls = (p.url.scheme_str() == Some("https"))
                .then(|| PeerTls::load(&p.ca_file, &p.server_name, &format!("peer[{i}]")))
                .transpose()?;
            listed.push(Peer {
                name: p.name.clone(),
                url: p.url.clone(),
                token: config::read_secret(path, &key)?,
                tls,
            });
        }
        let peers = &config.peers;
        if peers.dns.is_empty() {
            return Ok(PeerSet {
                listed,
                ..PeerSet::default()
            });
        }
        let dns_token = Some(config::read_secret(&peers.token_file, "peers.token_file")?);
        // The name looked up is the name verified, unless told otherwise.
        let server_name = if peers.server_name.is_empty() {
            &peers.dns
        } else {
            &peers.server_name
        };
        let dns_tls = (peers.scheme == Scheme::Https)
            .then(|| PeerTls::load(&peers.ca_file, server_name, "peers"))
            .transpose()?;
        Ok(PeerSet {
            listed,
            dns_token,
            dns_tls,
        })
    }

    /// The peers `peers.dns` resolves to, minus this host's own addresses (a
    /// headless service lists every member, us included); `None` when no
    /// name is configured. The lookup is bounded by `peers.timeout`.
    pub async fn resolve_dns(
        &self,
        config: &Config,
        own: &[IpAddr],
    ) -> Option<Result<Vec<Peer>, String>> {
        let token = self
            .dns_token
            .as_ref()
            .filter(|_| !config.peers.dns.is_empty())?;
        let scheme = if self.dns_tls.is_some() {
            "https"
        } else {
            "http"
        };
        let name = format!("{}:{}", config.peers.dns, config.peers.dns_port);
        let lookup = tokio::time::timeout(config.peers.timeout, tokio::net::lookup_host(&name));
        let addrs = match lookup.await {
            Ok(Ok(addrs)) => addrs,
            Ok(Err(e)) => return Some(Err(format!("looking up {name}: {e}"))),
            Err(_) => return Some(Err(format!("looking up {name}: no answer in time"))),
        };
        let mut addrs: Vec<_> = addrs.filter(|a| !own.contains(&a.ip())).collect();
        addrs.sort();
        addrs.dedup();
        Some(Ok(addrs
            .into_iter()
            .filter_map(|a| {
                Some(Peer {
                    name: a.ip().to_string(),
                    url: format!("{scheme}://{a}").parse::<Uri>().ok()?,
                    token: token.clone(),
                    tls: self.dns_tls.clone(),
                })
            })
            .collect()))
    }
}

/// Where a bearer token would cross the network in clear text: each
/// `[[peer]]` with an `http` URL whose host is not a loopback address, and
/// DNS peers over `http`. Logged as warnings at start-up and at each reload
/// that changes them.
pub fn clear_text_tokens(config: &Config) -> Vec<String> {
    let mut found: Vec<String> = config
        .peer_list
        .iter()
        .enumerate()
        .filter(|(_, p)| p.url.scheme_str() == Some("http") && !is_loopback(&p.url))
        .map(|(i, p)| {
            format!(
                "peer[{i}] ({}): its bearer token goes in clear text over http to {}; use an https URL",
                p.name,
                p.url.authority().map_or("?", |a| a.as_str())
            )
        })
        .collect();
    if !config.peers.dns.is_empty() && config.peers.scheme == Scheme::Http {
        found.push(format!(
            "peers.dns ({}): the bearer token goes in clear text over http to every address it resolves to; set peers.scheme = \"https\"",
            config.peers.dns
        ));
    }
    found
}

/// `localhost`, or a loopback address (`127.0.0.0/8`, `[::1]`).
fn is_loopback(url: &Uri) -> bool {
    let host = url.host().unwrap_or_default();
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// The `k` peers with the highest rendezvous score for `identity`: every
/// host spreads its requests over different peers, and a change in the peer
/// set moves only the choices that involved the changed peer.
pub fn choose<'a>(identity: &str, peers: &'a [Peer], k: usize) -> Vec<&'a Peer> {
    let mut scored: Vec<(u64, &Peer)> = peers
        .iter()
        .map(|p| (score(identity, &p.name, &p.url.to_string()), p))
        .collect();
    scored.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.name.cmp(&b.1.name)));
    scored.into_iter().take(k).map(|(_, p)| p).collect()
}

/// FNV-1a over the identity and the peer, finished with a 64-bit mix: the
/// same on every host and every build, unlike std's hasher.
fn score(identity: &str, name: &str, url: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in identity
        .bytes()
        .chain([0])
        .chain(name.bytes())
        .chain([0])
        .chain(url.bytes())
    {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// This host's identity: `peers.identity`, else the hostname.
pub fn identity(config: &Config) -> String {
    if !config.peers.identity.is_empty() {
        return config.peers.identity.clone();
    }
    sysinfo::System::host_name().unwrap_or_else(|_| "portsight".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peers(n: usize) -> Vec<Peer> {
        (0..n)
            .map(|i| Peer {
                name: format!("peer-{i}"),
                url: format!("http://10.77.0.{}:10917", i + 1).parse().unwrap(),
                token: "t".into(),
                tls: None,
            })
            .collect()
    }

    #[test]
    fn says_where_tokens_go_in_clear_text() {
        let mut config = Config::default();
        for (name, url) in [
            ("far", "http://10.77.0.2:10917"),
            ("near", "http://127.0.0.1:10917"),
            ("here", "http://[::1]:10917"),
            ("named", "http://localhost:10917"),
            ("safe", "https://10.77.0.3:10917"),
        ] {
            config.peer_list.push(config::PeerConfig {
                name: name.into(),
                url: url.parse().unwrap(),
                token_file: "/t".into(),
                ca_file: Default::default(),
                server_name: String::new(),
            });
        }
        assert_eq!(
            clear_text_tokens(&config),
            vec![
                "peer[0] (far): its bearer token goes in clear text over http to 10.77.0.2:10917; use an https URL"
            ]
        );
        config.peers.dns = "peers.example.net".into();
        assert_eq!(clear_text_tokens(&config).len(), 2);
        config.peers.scheme = Scheme::Https;
        assert_eq!(clear_text_tokens(&config).len(), 1);
    }

    #[test]
    fn chooses_k_stably() {
        let ps = peers(10);
        let a = choose("host-a", &ps, 3);
        assert_eq!(a.len(), 3);
        assert_eq!(a, choose("host-a", &ps, 3), "deterministic");
        assert_eq!(choose("host-a", &ps, 20).len(), 10);
    }

    #[test]
    fn load_is_spread_over_peers() {
        let ps = peers(10);
        let mut asked = [0usize; 10];
        for h in 0..1000 {
            for p in choose(&format!("host-{h}"), &ps, 3) {
                asked[p.name.trim_start_matches("peer-").parse::<usize>().unwrap()] += 1;
            }
        }
        // 3000 requests over 10 peers: 300 each on average.
        assert!(asked.iter().all(|&n| (200..400).contains(&n)), "{asked:?}");
    }

    #[test]
    fn removing_a_peer_moves_only_its_hosts() {
        let ps = peers(10);
        let fewer: Vec<Peer> = ps.iter().filter(|p| p.name != "peer-3").cloned().collect();
        for h in 0..200 {
            let id = format!("host-{h}");
            let before: Vec<&str> = choose(&id, &ps, 3)
                .iter()
                .map(|p| p.name.as_str())
                .collect();
            let after: Vec<&str> = choose(&id, &fewer, 3)
                .iter()
                .map(|p| p.name.as_str())
                .collect();
            let kept: Vec<&&str> = before.iter().filter(|n| **n != "peer-3").collect();
            assert!(
                kept.iter().all(|n| after.contains(n)),
                "{id}: {before:?} -> {after:?}"
            );
        }
    }
}
