//! The host's own addresses: what the `interface` vantage probes.

use std::net::{IpAddr, Ipv6Addr, TcpListener};

/// Every probe-worthy address on the network interfaces of the calling
/// thread's network namespace (see [`probe_worthy`]), de-duplicated and
/// sorted (IPv4 first). `getifaddrs` asks over netlink, so a thread that
/// entered another namespace gets that namespace's addresses (a list read
/// from `/proc/net` would be the process's).
pub fn interface_addresses() -> Vec<IpAddr> {
    let ifaddrs = match nix::ifaddrs::getifaddrs() {
        Ok(i) => i,
        Err(e) => {
            tracing::warn!(error = %e, "cannot list network interfaces");
            return Vec::new();
        }
    };
    let mut addrs: Vec<IpAddr> = ifaddrs
        .filter_map(|i| i.address)
        .filter_map(|a| {
            if let Some(v4) = a.as_sockaddr_in() {
                Some(IpAddr::V4(v4.ip()))
            } else {
                a.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip()))
            }
        })
        .filter(|&a| probe_worthy(a))
        .collect();
    addrs.sort_unstable();
    addrs.dedup();
    addrs
}

/// An interface address worth probing: not unspecified, not loopback
/// (127.0.0.0/8, `::1`), not link-local (169.254.0.0/16, fe80::/10).
pub fn probe_worthy(addr: IpAddr) -> bool {
    match addr {
        IpAddr::V4(a) => !(a.is_unspecified() || a.is_loopback() || a.is_link_local()),
        IpAddr::V6(a) => !(a.is_unspecified() || a.is_loopback() || a.is_unicast_link_local()),
    }
}

/// True when `[::1]` can be bound, i.e. IPv6 is up on the loopback interface.
pub fn ipv6_loopback_up() -> bool {
    TcpListener::bind((Ipv6Addr::LOCALHOST, 0)).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn worthy(s: &str) -> bool {
        probe_worthy(s.parse().unwrap())
    }

    #[test]
    fn filter() {
        for a in [
            "0.0.0.0",
            "127.0.0.1",
            "127.255.0.9",
            "169.254.0.1",
            "169.254.255.255",
            "::",
            "::1",
            "fe80::1",
            "febf:ffff::1",
        ] {
            assert!(!worthy(a), "{a} must be excluded");
        }
        for a in [
            "10.77.0.2",
            "192.0.2.2",
            "100.64.0.1",
            "8.8.8.8",
            "169.253.0.1",
            "fd00::2",
            "2001:db8::1",
            "fec0::1",
        ] {
            assert!(worthy(a), "{a} must be kept");
        }
    }

    /// Against this host: the result is filtered, sorted and unique, and
    /// agrees with the kernel's view in `/proc/net/if_inet6` for IPv6.
    #[test]
    fn real_addresses() {
        let addrs = interface_addresses();
        assert!(addrs.iter().all(|&a| probe_worthy(a)), "{addrs:?}");
        assert!(addrs.windows(2).all(|w| w[0] < w[1]), "{addrs:?}");
        let mut want: Vec<IpAddr> = std::fs::read_to_string("/proc/net/if_inet6")
            .unwrap_or_default()
            .lines()
            .filter_map(|l| {
                let hex = l.split_whitespace().next()?;
                u128::from_str_radix(hex, 16).ok()
            })
            .map(|n| IpAddr::V6(Ipv6Addr::from(n)))
            .filter(|&a| probe_worthy(a))
            .collect();
        want.sort_unstable();
        want.dedup();
        let got_v6: Vec<IpAddr> = addrs.iter().copied().filter(IpAddr::is_ipv6).collect();
        assert_eq!(got_v6, want);
    }

    #[test]
    fn ipv6_loopback_matches_if_inet6() {
        let lo_has_v6 = std::fs::read_to_string("/proc/net/if_inet6")
            .map(|t| {
                t.lines()
                    .any(|l| l.starts_with("00000000000000000000000000000001"))
            })
            .unwrap_or(false);
        assert_eq!(ipv6_loopback_up(), lo_has_v6);
    }
}
