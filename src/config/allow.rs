//! Allow-list entries of the probe server: `CIDR`, `CIDR:PORT` or
//! `CIDR:LOW-HIGH` (`10.0.0.0/8`, `10.0.0.0/8:80`, `2001:db8::/32:8000-8100`).
//! A bare address means that one address.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::str::FromStr;

use ipnet::IpNet;
use serde::{Deserialize, Deserializer, Serialize, Serializer, de};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowRule {
    pub net: IpNet,
    pub ports: RangeInclusive<u16>,
}

impl AllowRule {
    pub fn allows(&self, target: SocketAddr) -> bool {
        // `::ffff:a.b.c.d` is the IPv4 address it maps.
        self.net.contains(&target.ip().to_canonical()) && self.ports.contains(&target.port())
    }
}

/// Not unspecified, multicast or broadcast, also as an IPv4-mapped address:
/// an address one host can be probed at.
pub fn is_unicast(ip: IpAddr) -> bool {
    match ip.to_canonical() {
        IpAddr::V4(a) => !(a.is_unspecified() || a.is_multicast() || a.is_broadcast()),
        IpAddr::V6(a) => !(a.is_unspecified() || a.is_multicast()),
    }
}

impl FromStr for AllowRule {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("{s:?}: want CIDR, CIDR:PORT or CIDR:LOW-HIGH (e.g. 10.0.0.0/8:80)");
        let (net, ports) = match s.split_once('/') {
            Some((addr, rest)) => {
                let (len, ports) = match rest.split_once(':') {
                    Some((len, ports)) => (len, Some(ports)),
                    None => (rest, None),
                };
                let net: IpNet = format!("{addr}/{len}").parse().map_err(|_| bad())?;
                (net, ports)
            }
            None => {
                let ip: IpAddr = s.parse().map_err(|_| bad())?;
                (IpNet::from(ip), None)
            }
        };
        if net.trunc() != net {
            return Err(format!(
                "{s:?}: host bits are set; did you mean {}?",
                net.trunc()
            ));
        }
        let ports = match ports {
            None => 1..=65535,
            Some(p) => {
                let (lo, hi) = p.split_once('-').unwrap_or((p, p));
                let lo: u16 = lo.parse().map_err(|_| bad())?;
                let hi: u16 = hi.parse().map_err(|_| bad())?;
                if lo == 0 || lo > hi {
                    return Err(format!(
                        "{s:?}: the port range must be 1-65535, low to high"
                    ));
                }
                lo..=hi
            }
        };
        Ok(AllowRule { net, ports })
    }
}

impl fmt::Display for AllowRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (lo, hi) = (*self.ports.start(), *self.ports.end());
        match (lo, hi) {
            (1, 65535) => write!(f, "{}", self.net),
            _ if lo == hi => write!(f, "{}:{lo}", self.net),
            _ => write!(f, "{}:{lo}-{hi}", self.net),
        }
    }
}

/// Parsed when the config is read, so a bad entry is refused with its index.
impl<'de> Deserialize<'de> for AllowRule {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(de::Error::custom)
    }
}

impl Serialize for AllowRule {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(s: &str) -> AllowRule {
        s.parse().unwrap()
    }

    fn allows(rule_text: &str, target: &str) -> bool {
        rule(rule_text).allows(target.parse().unwrap())
    }

    #[test]
    fn forms() {
        assert!(allows("10.0.0.0/8", "10.1.2.3:22"));
        assert!(!allows("10.0.0.0/8", "11.0.0.1:22"));
        assert!(allows("10.0.0.0/8:80", "10.1.2.3:80"));
        assert!(!allows("10.0.0.0/8:80", "10.1.2.3:81"));
        assert!(allows("2001:db8::/32:8000-8100", "[2001:db8::5]:8050"));
        assert!(!allows("2001:db8::/32:8000-8100", "[2001:db8::5]:8101"));
        assert!(!allows("2001:db8::/32:8000-8100", "[2001:db9::5]:8050"));
        assert!(allows("10.77.0.2", "10.77.0.2:1"));
        assert!(!allows("10.77.0.2", "10.77.0.3:1"));
        assert!(
            allows("10.0.0.0/8", "[::ffff:10.0.0.1]:80"),
            "v4-mapped is v4"
        );
    }

    #[test]
    fn displays_as_it_parses() {
        for text in ["10.0.0.0/8", "10.0.0.0/8:80", "2001:db8::/32:8000-8100"] {
            assert_eq!(rule(text).to_string(), text);
        }
        assert_eq!(rule("10.77.0.2").to_string(), "10.77.0.2/32");
    }

    #[test]
    fn errors() {
        let err = |s: &str| s.parse::<AllowRule>().unwrap_err();
        assert_eq!(
            err("10.0.0.0/33"),
            "\"10.0.0.0/33\": want CIDR, CIDR:PORT or CIDR:LOW-HIGH (e.g. 10.0.0.0/8:80)"
        );
        assert_eq!(
            err("10.0.0.1/8"),
            "\"10.0.0.1/8\": host bits are set; did you mean 10.0.0.0/8?"
        );
        assert_eq!(
            err("10.0.0.0/8:90-80"),
            "\"10.0.0.0/8:90-80\": the port range must be 1-65535, low to high"
        );
        assert_eq!(
            err("everything"),
            "\"everything\": want CIDR, CIDR:PORT or CIDR:LOW-HIGH (e.g. 10.0.0.0/8:80)"
        );
    }
}
