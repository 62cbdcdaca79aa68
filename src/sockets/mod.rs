//! The listening-socket table: which TCP sockets are in LISTEN and which UDP
//! sockets are bound (unconnected, with a local port), on which address, with
//! which accept queue, owned by which process; and the host's interface
//! addresses.
//!
//! The netlink `NETLINK_SOCK_DIAG` dump (state mask LISTEN only) is the
//! primary source; `/proc/net/tcp{,6}` is the fallback when netlink is not
//! available. Parsers are pure functions over bytes / text; I/O lives in the
//! thin functions that call them.

pub mod interfaces;
pub mod netlink;
pub mod process;
pub mod procfs;
pub mod proxy;
pub mod sockstat;

use std::net::IpAddr;
use std::path::Path;

use serde::Serialize;

use crate::config::Protocol;
use crate::netns::NsId;

/// Address family of a socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    Ipv4,
    Ipv6,
}

impl Family {
    pub fn of(address: IpAddr) -> Family {
        if address.is_ipv4() {
            Family::Ipv4
        } else {
            Family::Ipv6
        }
    }
}

/// Where a bind address reaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// `0.0.0.0` or `::`: every address of the family (both families for `::` without v6only).
    Any,
    Loopback,
    Private,
    Public,
    LinkLocal,
}

impl Scope {
    /// The scope of a bind address.
    pub fn of(addr: IpAddr) -> Scope {
        match addr {
            IpAddr::V4(a) => {
                if a.is_unspecified() {
                    Scope::Any
                } else if a.is_loopback() {
                    Scope::Loopback
                } else if a.is_link_local() {
                    Scope::LinkLocal
                } else if a.is_private() || is_shared_v4(a) {
                    Scope::Private
                } else {
                    Scope::Public
                }
            }
            IpAddr::V6(a) => {
                if let Some(v4) = a.to_ipv4_mapped() {
                    return Scope::of(IpAddr::V4(v4));
                }
                if a.is_unspecified() {
                    Scope::Any
                } else if a.is_loopback() {
                    Scope::Loopback
                } else if a.is_unicast_link_local() {
                    Scope::LinkLocal
                } else if a.is_unique_local() {
                    Scope::Private
                } else {
                    Scope::Public
                }
            }
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Any => "any",
            Scope::Loopback => "loopback",
            Scope::Private => "private",
            Scope::Public => "public",
            Scope::LinkLocal => "link_local",
        }
    }
}

/// 100.64.0.0/10, carrier-grade NAT space: not reachable from the internet.
fn is_shared_v4(a: std::net::Ipv4Addr) -> bool {
    let o = a.octets();
    o[0] == 100 && (o[1] & 0xc0) == 64
}

/// The process that owns a socket, where /proc lets us see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Owner {
    pub pid: u32,
    pub name: String,
}

/// One TCP socket in LISTEN state, or one bound, unconnected UDP socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    pub address: IpAddr,
    pub port: u16,
    pub protocol: Protocol,
    pub family: Family,
    /// `IPV6_V6ONLY` of an IPv6 socket, where the source tells it (netlink
    /// does, /proc/net/tcp6 does not). `None` for IPv4 sockets. The kernel
    /// makes a socket bound to a specific, non-IPv4-mapped IPv6 address
    /// v6-only whatever the socket option said.
    pub v6only: Option<bool>,
    /// Connections waiting in the accept queue (0 for UDP).
    pub accept_queue_length: u32,
    /// The accept queue's limit: the listen backlog, capped at
    /// `net.core.somaxconn`. The kernel drops new connections only once the
    /// length exceeds it (a full queue holds limit + 1). `None` where the
    /// source cannot tell (the /proc fallback), and for UDP.
    pub accept_queue_limit: Option<u32>,
    /// Socket inode, to find the owning process.
    pub inode: u64,
    /// The owning process; `None` where permissions hide it.
    pub owner: Option<Owner>,
    /// The network namespace the socket is in.
    pub netns: NsId,
}

impl Listener {
    /// A TCP listener on `address:port` with nothing else known (no queue,
    /// no owner, inode 0); the sources and tests fill in the rest.
    pub fn on(address: IpAddr, port: u16) -> Listener {
        Listener {
            address,
            port,
            protocol: Protocol::Tcp,
            family: Family::of(address),
            v6only: None,
            accept_queue_length: 0,
            accept_queue_limit: None,
            inode: 0,
            owner: None,
            netns: NsId::OWN,
        }
    }

    /// A bound UDP socket on `address:port`, as [`Listener::on`].
    pub fn udp(address: IpAddr, port: u16) -> Listener {
        Listener {
            protocol: Protocol::Udp,
            ..Listener::on(address, port)
        }
    }

    pub fn scope(&self) -> Scope {
        Scope::of(self.address)
    }
}

/// Which source produced a socket table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    Netlink,
    Procfs,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("netlink sock_diag: {0}")]
    Netlink(String),
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("parsing {path} line {line}: {reason}")]
    Parse {
        path: String,
        line: usize,
        reason: String,
    },
}

/// Reads the LISTEN TCP sockets and the bound UDP sockets of this network
/// namespace, IPv4 and IPv6: netlink first, `/proc/net/{tcp,udp}{,6}` under
/// `proc_root` when netlink fails (for either protocol: one source for the
/// whole table). Owners are not filled in; see [`process::Owners`].
/// `dumper` is the netlink socket kept from the last scan: opened when
/// `None`, left `None` after a failure.
pub fn scan_listeners(
    proc_root: &Path,
    dumper: &mut Option<netlink::Dumper>,
) -> Result<(Vec<Listener>, Source), Error> {
    let netlink = dumper
        .take()
        .map_or_else(netlink::Dumper::open, Ok)
        .and_then(|mut d| {
            let sockets = d.sockets()?;
            *dumper = Some(d);
            Ok(sockets)
        });
    match netlink {
        Ok(listeners) => Ok((listeners, Source::Netlink)),
        Err(err) => {
            tracing::debug!(error = %err, "netlink unavailable, reading /proc/net/tcp and udp");
            let mut listeners = procfs::read_listeners(proc_root)?;
            listeners.extend(procfs::read_udp_sockets(proc_root)?);
            Ok((listeners, Source::Procfs))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes() {
        let s = |a: &str| Scope::of(a.parse().unwrap());
        assert_eq!(s("0.0.0.0"), Scope::Any);
        assert_eq!(s("::"), Scope::Any);
        assert_eq!(s("127.0.0.1"), Scope::Loopback);
        assert_eq!(s("127.3.2.1"), Scope::Loopback);
        assert_eq!(s("::1"), Scope::Loopback);
        assert_eq!(s("10.77.0.2"), Scope::Private);
        assert_eq!(s("100.64.1.1"), Scope::Private);
        assert_eq!(s("fd77::2"), Scope::Private);
        assert_eq!(s("169.254.1.1"), Scope::LinkLocal);
        assert_eq!(s("fe80::1"), Scope::LinkLocal);
        assert_eq!(s("8.8.8.8"), Scope::Public);
        assert_eq!(s("2001:db8::1"), Scope::Public);
        assert_eq!(s("::ffff:127.0.0.1"), Scope::Loopback);
    }
}
