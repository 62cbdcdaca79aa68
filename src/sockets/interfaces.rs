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

/// A `NETLINK_ROUTE` socket of the namespace it was made in, for its
/// addresses: one `RTM_GETADDR` dump, both families, where `getifaddrs`
/// opens a socket and dumps the links too, and the loopback's `::1` from
/// the same dump instead of a bind test. Kept, it reads its namespace from
/// any thread.
pub struct AddressReader {
    socket: netlink_sys::Socket,
    buf: Vec<u8>,
    seq: u32,
}

/// What [`AddressReader::read`] finds: as [`interface_addresses`] and
/// [`ipv6_loopback_up`] say.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Addresses {
    pub addresses: Vec<IpAddr>,
    pub ipv6_loopback: bool,
}

const AF_INET: u8 = libc::AF_INET as u8;
const AF_INET6: u8 = libc::AF_INET6 as u8;
const RTM_NEWADDR: u16 = 20;
const RTM_GETADDR: u16 = 22;
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
/// `struct ifaddrmsg`: family, prefix length, flags, scope, index.
const IFADDRMSG_LEN: usize = 8;

impl AddressReader {
    /// Of the calling thread's namespace.
    pub fn open() -> Result<AddressReader, super::Error> {
        Ok(AddressReader {
            socket: super::netlink::open_protocol(netlink_sys::protocols::NETLINK_ROUTE)?,
            buf: Vec::new(),
            seq: 0,
        })
    }

    pub fn read(&mut self) -> Result<Addresses, super::Error> {
        use super::netlink::NLMSG_HDRLEN;
        self.seq = self.seq.wrapping_add(1);
        let len = (NLMSG_HDRLEN + IFADDRMSG_LEN) as u32;
        let mut request = Vec::with_capacity(len as usize);
        request.extend(len.to_ne_bytes());
        request.extend(RTM_GETADDR.to_ne_bytes());
        request.extend(
            (netlink_packet_core::NLM_F_REQUEST | netlink_packet_core::NLM_F_DUMP).to_ne_bytes(),
        );
        request.extend(self.seq.to_ne_bytes());
        request.extend(0u32.to_ne_bytes());
        // AF_UNSPEC: both families.
        request.extend([0u8; IFADDRMSG_LEN]);
        let mut all = Vec::new();
        super::netlink::exchange(&self.socket, &mut self.buf, &request, |datagram| {
            parse_addresses(datagram, &mut all)
        })?;
        Ok(addresses_of(all))
    }
}

/// The addresses of one datagram of an `RTM_GETADDR` dump appended to
/// `out` (`IFA_LOCAL` where given, else `IFA_ADDRESS`, as `getifaddrs`
/// takes them: with a peer, `IFA_ADDRESS` is the peer's); whether the dump
/// is done.
pub fn parse_addresses(buf: &[u8], out: &mut Vec<IpAddr>) -> Result<bool, super::Error> {
    use super::netlink::{attribute, each_message, malformed};
    each_message(buf, |offset, kind, payload| {
        if kind != RTM_NEWADDR {
            return Ok(());
        }
        if payload.len() < IFADDRMSG_LEN {
            return Err(malformed(offset, "an ifaddrmsg is cut short"));
        }
        let attrs = &payload[IFADDRMSG_LEN..];
        let find = |kind| attribute(attrs, kind).map_err(|what| malformed(offset, what));
        let Some(raw) = find(IFA_LOCAL)?.or(find(IFA_ADDRESS)?) else {
            return Ok(());
        };
        let address = match (payload[0], raw.len()) {
            (AF_INET, 4) => IpAddr::from(<[u8; 4]>::try_from(raw).unwrap_or_default()),
            (AF_INET6, 16) => IpAddr::from(<[u8; 16]>::try_from(raw).unwrap_or_default()),
            (AF_INET | AF_INET6, n) => {
                return Err(malformed(offset, &format!("an address of {n} bytes")));
            }
            _ => return Ok(()),
        };
        out.push(address);
        Ok(())
    })
}

/// The probe-worthy ones, sorted and unique, and whether `::1` is there.
fn addresses_of(all: Vec<IpAddr>) -> Addresses {
    let ipv6_loopback = all.contains(&IpAddr::V6(Ipv6Addr::LOCALHOST));
    let mut addresses: Vec<IpAddr> = all.into_iter().filter(|&a| probe_worthy(a)).collect();
    addresses.sort_unstable();
    addresses.dedup();
    Addresses {
        addresses,
        ipv6_loopback,
    }
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

    /// The dump says what `getifaddrs` and the bind test say, in this
    /// namespace, and read again on the kept socket.
    #[test]
    fn the_address_dump_agrees_with_getifaddrs_and_the_bind_test() {
        let mut reader = AddressReader::open().unwrap();
        let want = Addresses {
            addresses: interface_addresses(),
            ipv6_loopback: ipv6_loopback_up(),
        };
        assert_eq!(reader.read().unwrap(), want);
        assert_eq!(reader.read().unwrap(), want, "read again");
    }

    /// Rows as the kernel lays them out: `IFA_LOCAL` over `IFA_ADDRESS`,
    /// other message types and families skipped, a wrong length refused.
    #[test]
    fn address_rows() {
        fn row(family: u8, attrs: &[(u16, &[u8])]) -> Vec<u8> {
            let mut payload = vec![family, 24, 0, 0, 1, 0, 0, 0];
            for (kind, value) in attrs {
                let len = 4 + value.len() as u16;
                payload.extend(len.to_ne_bytes());
                payload.extend(kind.to_ne_bytes());
                payload.extend(*value);
                payload.resize(payload.len().next_multiple_of(4), 0);
            }
            let mut msg = Vec::new();
            msg.extend((16 + payload.len() as u32).to_ne_bytes());
            msg.extend(RTM_NEWADDR.to_ne_bytes());
            msg.extend([0u8; 10]);
            msg.extend(payload);
            msg
        }
        let mut buf = row(
            AF_INET,
            &[(IFA_ADDRESS, &[10, 77, 0, 9]), (IFA_LOCAL, &[10, 77, 0, 2])],
        );
        buf.extend(row(
            AF_INET6,
            &[(IFA_ADDRESS, &Ipv6Addr::LOCALHOST.octets())],
        ));
        buf.extend(row(17, &[(IFA_ADDRESS, &[1, 2, 3, 4, 5, 6])]));
        let mut out = Vec::new();
        assert!(!parse_addresses(&buf, &mut out).unwrap());
        assert_eq!(
            out,
            [
                "10.77.0.2".parse::<IpAddr>().unwrap(),
                "::1".parse().unwrap()
            ]
        );
        assert_eq!(
            addresses_of(out),
            Addresses {
                addresses: vec!["10.77.0.2".parse().unwrap()],
                ipv6_loopback: true
            }
        );
        let bad = row(AF_INET, &[(IFA_ADDRESS, &[10, 77, 0])]);
        assert!(parse_addresses(&bad, &mut Vec::new()).is_err());
        assert!(
            parse_addresses(&bad[..20], &mut Vec::new()).is_err(),
            "cut short"
        );
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
