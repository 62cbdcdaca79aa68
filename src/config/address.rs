//! Addresses and URLs a config names: where the HTTP server listens, and
//! where peers are.

use std::fmt;
use std::net::SocketAddr;

use rustls::pki_types::ServerName;
use serde::{Deserialize, Deserializer, Serialize, Serializer, de};

/// Where the HTTP server listens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenAddress {
    /// `:PORT`: every address of both families (`::` with IPV6_V6ONLY off,
    /// or `0.0.0.0` where IPv6 is not available), as Prometheus exporters do.
    All(u16),
    /// `IP:PORT` or `[IPv6]:PORT`: that address only.
    Socket(SocketAddr),
}

impl Default for ListenAddress {
    fn default() -> Self {
        ListenAddress::All(10917)
    }
}

impl fmt::Display for ListenAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListenAddress::All(port) => write!(f, ":{port}"),
            ListenAddress::Socket(addr) => write!(f, "{addr}"),
        }
    }
}

impl<'de> Deserialize<'de> for ListenAddress {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        parse_listen_address(&String::deserialize(d)?).map_err(de::Error::custom)
    }
}

impl Serialize for ListenAddress {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Parses `IP:PORT`, `[IPv6]:PORT`, or `:PORT` (all addresses, both families).
pub fn parse_listen_address(s: &str) -> Result<ListenAddress, String> {
    let bad = || format!("invalid address {s:?}: want IP:PORT, [IPv6]:PORT or :PORT");
    match s.strip_prefix(':') {
        Some(port) => port.parse().map(ListenAddress::All).map_err(|_| bad()),
        None => s.parse().map(ListenAddress::Socket).map_err(|_| bad()),
    }
}

/// Checks a peer URL: `http://HOST:PORT` or `https://HOST:PORT` with
/// nothing after the port.
pub fn parse_peer_url(url: &str) -> Result<hyper::Uri, String> {
    let want = || format!("invalid URL {url:?}: want http://HOST:PORT or https://HOST:PORT");
    let uri: hyper::Uri = url.parse().map_err(|_| want())?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) {
        return Err(want());
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(format!("invalid URL {url:?}: no host"));
    }
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        return Err(format!(
            "invalid URL {url:?}: give the server only, without a path"
        ));
    }
    Ok(uri)
}

/// Checks a `server_name`: a DNS name or an IP address (`[v6]` too), as
/// TLS verifies it.
pub fn parse_server_name(name: &str) -> Result<ServerName<'static>, String> {
    let bare = name
        .strip_prefix('[')
        .and_then(|n| n.strip_suffix(']'))
        .unwrap_or(name);
    ServerName::try_from(bare.to_string())
        .map_err(|_| format!("{name:?} is not a DNS name or IP address"))
}

/// `#[serde(with = "peer_url")]`: a `[[peer]] url`, parsed by [`parse_peer_url`].
pub(super) mod peer_url {
    use serde::{Deserialize, Deserializer, Serializer, de};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<hyper::Uri, D::Error> {
        super::parse_peer_url(&String::deserialize(d)?).map_err(de::Error::custom)
    }

    pub fn serialize<S: Serializer>(uri: &hyper::Uri, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(uri)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_addresses() {
        assert_eq!(
            parse_listen_address(":10917").unwrap(),
            ListenAddress::All(10917)
        );
        assert_eq!(
            parse_listen_address("[::1]:80").unwrap(),
            ListenAddress::Socket("[::1]:80".parse().unwrap())
        );
        assert!(parse_listen_address(":http").is_err());
        assert!(parse_listen_address("localhost:80").is_err());
        for text in [":10917", "127.0.0.1:80", "[::1]:80"] {
            assert_eq!(parse_listen_address(text).unwrap().to_string(), text);
        }
    }
}
