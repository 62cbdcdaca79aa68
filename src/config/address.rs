//! Addresses and URLs a config names: where the HTTP server listens, and
//! where peers are.

use std::net::SocketAddr;

/// Where the HTTP server listens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenAddress {
    /// `:PORT`: every address of both families (`::` with IPV6_V6ONLY off,
    /// or `0.0.0.0` where IPv6 is not available), as Prometheus exporters do.
    All(u16),
    /// `IP:PORT` or `[IPv6]:PORT`: that address only.
    Socket(SocketAddr),
}

/// Parses `IP:PORT`, `[IPv6]:PORT`, or `:PORT` (all addresses, both families).
pub fn parse_listen_address(s: &str) -> Result<ListenAddress, String> {
    let bad = || format!("invalid address {s:?}: want IP:PORT, [IPv6]:PORT or :PORT");
    match s.strip_prefix(':') {
        Some(port) => port.parse().map(ListenAddress::All).map_err(|_| bad()),
        None => s.parse().map(ListenAddress::Socket).map_err(|_| bad()),
    }
}

/// Checks a peer URL: `http://HOST:PORT` with nothing after the port.
pub fn parse_peer_url(url: &str) -> Result<hyper::Uri, String> {
    let uri: hyper::Uri = url
        .parse()
        .map_err(|_| format!("invalid URL {url:?}: want http://HOST:PORT"))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => return Err(format!("{url:?}: https is not supported yet; use http")),
        _ => return Err(format!("invalid URL {url:?}: want http://HOST:PORT")),
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
    }
}
