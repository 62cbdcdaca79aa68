//! How many HTTP connections are open, per client and in all, so that one
//! client holding connections can neither crowd out another client's
//! scrape nor use up the descriptors that probes and scans need.
//!
//! A client is an IPv4 address or an IPv6 /64 (as for the probe server's
//! rate limit: a host gets a /64, so a client cannot become many by
//! changing addresses). Over a limit, a new connection is closed as soon as
//! it is accepted.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use crate::config::Config;

/// Connections one client may hold open at once: a Prometheus keeps one
/// per target, a browser six.
pub const PER_CLIENT: usize = 16;
/// Connections held open in all, at most.
pub const MAX: usize = 1024;
/// Connections in all, at least, however few descriptors there are.
pub const MIN: usize = 32;
/// Descriptors kept for everything but connections and connect attempts:
/// the netlink socket, `/proc` reads, the owner scan, peers, logs.
pub const RESERVE: u64 = 128;

/// The client a connection is counted against: an IPv4 address, or the /64
/// of an IPv6 address (an IPv4-mapped address is its IPv4 address).
pub fn client_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => IpAddr::V6((u128::from(v6) & !0u128 << 64).into()),
        v4 => v4,
    }
}

/// The limit on connections in all, for a soft descriptor limit of
/// `nofile` under `config`: what is left after the connect attempts
/// (`probe.concurrency`, and twice `probe_server.concurrency`: batches and
/// single probes have their own slots) and [`RESERVE`], within
/// [`MIN`]..=[`MAX`].
pub fn global_limit(nofile: u64, config: &Config) -> usize {
    let probes = config.probe.concurrency + 2 * config.probe_server.concurrency;
    let left = nofile.saturating_sub(RESERVE + probes as u64);
    usize::try_from(left).unwrap_or(usize::MAX).clamp(MIN, MAX)
}

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    per_client: HashMap<IpAddr, usize>,
}

/// The open connections, counted.
#[derive(Debug, Default)]
pub struct Connections {
    counts: Mutex<Counts>,
}

/// Which limit a connection would pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    Client,
    Total,
}

/// One open connection; uncounted when dropped.
#[derive(Debug)]
pub struct Held {
    connections: Arc<Connections>,
    client: IpAddr,
}

impl Connections {
    /// Counts a new connection from `client`, or refuses it when the client
    /// holds [`PER_CLIENT`] already or `total` are open.
    pub fn admit(self: &Arc<Self>, client: IpAddr, total: usize) -> Result<Held, Refused> {
        let client = client_key(client);
        let mut c = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let mine = c.per_client.get(&client).copied().unwrap_or(0);
        if mine >= PER_CLIENT {
            return Err(Refused::Client);
        }
        if c.total >= total {
            return Err(Refused::Total);
        }
        c.total += 1;
        c.per_client.insert(client, mine + 1);
        Ok(Held {
            connections: Arc::clone(self),
            client,
        })
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.counts.lock().unwrap_or_else(|e| e.into_inner()).total
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let mut c = self
            .connections
            .counts
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        c.total = c.total.saturating_sub(1);
        if let Some(n) = c.per_client.get_mut(&self.client) {
            *n -= 1;
            if *n == 0 {
                c.per_client.remove(&self.client);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn one_client_cannot_take_every_connection() {
        let c = Arc::new(Connections::default());
        let held: Vec<Held> = (0..PER_CLIENT)
            .map(|_| c.admit(ip("10.77.0.2"), 100).unwrap())
            .collect();
        assert_eq!(c.admit(ip("10.77.0.2"), 100).unwrap_err(), Refused::Client);
        assert!(c.admit(ip("10.77.0.3"), 100).is_ok(), "another client");
        // An IPv6 client is its /64.
        let v6: Vec<Held> = (0..PER_CLIENT)
            .map(|i| c.admit(ip(&format!("fd77::{i:x}")), 100).unwrap())
            .collect();
        assert_eq!(
            c.admit(ip("fd77::ffff:1"), 100).unwrap_err(),
            Refused::Client
        );
        assert!(c.admit(ip("fd77:0:0:1::1"), 100).is_ok());
        drop(held);
        assert!(c.admit(ip("10.77.0.2"), 100).is_ok(), "freed on drop");
        drop(v6);
        assert_eq!(c.open(), 0);
    }

    #[test]
    fn the_total_holds_across_clients() {
        let c = Arc::new(Connections::default());
        let held: Vec<Held> = (0..4)
            .map(|i| c.admit(ip(&format!("10.77.0.{i}")), 4).unwrap())
            .collect();
        assert_eq!(c.admit(ip("10.77.0.9"), 4).unwrap_err(), Refused::Total);
        drop(held);
        assert!(c.admit(ip("10.77.0.9"), 4).is_ok());
    }

    #[test]
    fn probes_keep_their_descriptors() {
        let config = Config::default(); // 256 + 2 × 64 connect slots
        assert_eq!(global_limit(1024, &config), 1024 - 128 - 384);
        assert_eq!(global_limit(1_048_576, &config), MAX);
        assert_eq!(global_limit(256, &config), MIN);
    }
}
