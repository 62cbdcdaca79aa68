//! A forward: a port of this host whose connections go elsewhere — a DNAT
//! or redirect rule of the nat table (`netfilter::forwards`), or a
//! userland proxy such as docker-proxy or socat (`sockets::proxy`). Both
//! sources give this one type; the engine maps the backend to the network
//! namespace that holds it.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;

use crate::config::Protocol;
use crate::netfilter::Family;
use crate::netfilter::packet::Hook;

/// How the port is forwarded: the metric label `via`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Via {
    Dnat,
    Redirect,
    Proxy,
}

impl Via {
    pub fn as_str(self) -> &'static str {
        match self {
            Via::Dnat => "dnat",
            Via::Redirect => "redirect",
            Via::Proxy => "proxy",
        }
    }
}

/// The host port(s) a forward takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum HostPort {
    One(u16),
    /// Every port from the first to the last: too many to list one by one
    /// (or no port condition at all: `0..=65535`).
    Range(u16, u16),
    /// The rule looks at the port in a way portsight does not interpret
    /// (a named set it could not read, an iptables match nft does not
    /// translate): it forwards some port, portsight does not say which.
    Unknown,
}

impl HostPort {
    /// Whether the forward takes `port`: `None` when not known.
    pub fn covers(self, port: u16) -> Option<bool> {
        match self {
            HostPort::One(p) => Some(p == port),
            HostPort::Range(lo, hi) => Some((lo..=hi).contains(&port)),
            HostPort::Unknown => None,
        }
    }
}

/// A condition on the destination address; a forward's conditions all hold.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Daddr {
    /// An address of this host (`fib daddr type local`, iptables' `addrtype
    /// --dst-type LOCAL`).
    Local,
    /// One of these networks (`ip daddr 10.77.0.1`, `ip daddr { … }`).
    In(Vec<IpNet>),
    /// None of these (`ip daddr != 127.0.0.0/8`).
    NotIn(Vec<IpNet>),
}

/// One forward of one host port to one backend.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Forward {
    pub protocol: Protocol,
    pub port: HostPort,
    pub via: Via,
    /// Connections of which family it takes: `Ip` (IPv4), `Ip6`, or
    /// `Inet` (both).
    pub family: Family,
    /// The backend's address; `None` when the rule's target is not known
    /// (a map portsight could not read, an iptables target nft did not
    /// translate). A redirect's is the loopback address of the family.
    pub backend_addr: Option<IpAddr>,
    /// The backend's port; `None` when not one port (a host port range
    /// forwarded port for port, a target port range) or not known.
    pub backend_port: Option<u16>,
    /// Conditions on the destination address; empty: every address.
    pub daddr: Vec<Daddr>,
    /// Other conditions the connection must meet, in words (`meta iifname
    /// != "docker0"`, `chosen at random (statistic)`): empty when it is
    /// every connection to the port and address.
    pub conditions: Vec<String>,
    /// The nat hooks where the rule is reached (`prerouting`: from other
    /// hosts and namespaces; `output`: from this host); empty for a proxy.
    pub hooks: Vec<Hook>,
    /// The chains jumped to on the way to the rule from the base chain
    /// (`KUBE-SERVICES`, `KUBE-NODEPORTS`, …, `KUBE-SEP-…`).
    pub chains: Vec<String>,
    /// Where it is: `ip nat DOCKER, handle 10: iifname != "docker0" tcp
    /// dport 8080 dnat to 10.77.50.2:80`. `None` for a proxy.
    pub rule: Option<String>,
    /// The rule's comment, or the nearest one on the way to it.
    pub comment: Option<String>,
    /// A proxy's process.
    pub pid: Option<u32>,
    pub process: Option<String>,
}

impl Forward {
    /// The backend as one address and port, when both are known.
    pub fn backend(&self) -> Option<SocketAddr> {
        Some(SocketAddr::new(self.backend_addr?, self.backend_port?))
    }

    /// Whether a connection to `daddr` (an address of this host when
    /// `local`) meets the forward's family and address conditions. Its other
    /// `conditions` are not known here.
    pub fn applies_to(&self, daddr: IpAddr, local: bool) -> bool {
        let family = match self.family {
            Family::Ip => daddr.is_ipv4(),
            Family::Ip6 => daddr.is_ipv6(),
            _ => true,
        };
        family
            && self.daddr.iter().all(|c| match c {
                Daddr::Local => local,
                Daddr::In(nets) => nets.iter().any(|n| n.contains(&daddr)),
                Daddr::NotIn(nets) => !nets.iter().any(|n| n.contains(&daddr)),
            })
    }
}

impl fmt::Display for Forward {
    /// `8080/tcp → 10.77.50.2:80 (dnat)`; `?` for what is not known.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.port {
            HostPort::One(p) => write!(f, "{p}")?,
            HostPort::Range(lo, hi) => write!(f, "{lo}-{hi}")?,
            HostPort::Unknown => f.write_str("?")?,
        }
        write!(f, "/{} → ", self.protocol)?;
        match (self.backend_addr, self.backend_port) {
            (Some(a), Some(p)) => write!(f, "{}", SocketAddr::new(a, p))?,
            (Some(IpAddr::V6(a)), None) => write!(f, "[{a}]:?")?,
            (Some(a), None) => write!(f, "{a}:?")?,
            (None, Some(p)) => write!(f, "?:{p}")?,
            (None, None) => f.write_str("?")?,
        }
        write!(f, " ({})", self.via.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn forward() -> Forward {
        Forward {
            protocol: Protocol::Tcp,
            port: HostPort::One(8080),
            via: Via::Dnat,
            family: Family::Ip,
            backend_addr: Some("10.77.50.2".parse().unwrap()),
            backend_port: Some(80),
            daddr: vec![
                Daddr::NotIn(vec!["127.0.0.0/8".parse().unwrap()]),
                Daddr::Local,
            ],
            conditions: Vec::new(),
            hooks: vec![Hook::Output],
            chains: Vec::new(),
            rule: None,
            comment: None,
            pid: None,
            process: None,
        }
    }

    #[test]
    fn the_address_conditions_all_hold() {
        let f = forward();
        assert!(f.applies_to("10.77.0.1".parse().unwrap(), true));
        assert!(!f.applies_to("127.0.0.1".parse().unwrap(), true));
        assert!(!f.applies_to("10.77.0.9".parse().unwrap(), false));
        assert!(!f.applies_to("fd77::1".parse().unwrap(), true), "IPv4 only");
        assert_eq!(f.to_string(), "8080/tcp → 10.77.50.2:80 (dnat)");
        assert_eq!(f.backend(), Some("10.77.50.2:80".parse().unwrap()));
    }

    #[test]
    fn what_is_not_known_is_shown_as_such() {
        let mut f = forward();
        f.port = HostPort::Unknown;
        f.backend_addr = None;
        assert_eq!(f.to_string(), "?/tcp → ?:80 (dnat)");
        assert_eq!(f.port.covers(8080), None);
        assert_eq!(HostPort::Range(1, 10).covers(10), Some(true));
        assert_eq!(f.backend(), None);
    }
}
