//! One UDP probe: a datagram sent on a connected socket, and whatever comes
//! back before the deadline.
//!
//! On a connected UDP socket Linux reports the ICMP error a datagram drew as
//! the error of the next call: port-unreachable as `ECONNREFUSED` (nothing
//! bound there, or a firewall REJECT), host or network unreachable (or
//! admin-prohibited) as `EHOSTUNREACH` / `ENETUNREACH`. A reply is
//! `success`; silence is `timeout`, which for UDP is what many services do
//! with a datagram they do not understand.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::OwnedFd;
use std::time::Duration;

use tokio::net::UdpSocket;

use super::{ProbeResult, Target};

/// Sends `payload` to `target.addr` and waits at most `timeout` for one
/// datagram back (or an ICMP error). The socket is closed when this returns.
pub async fn exchange(target: Target, payload: &[u8], timeout: Duration) -> ProbeResult {
    exchange_on(None, target, payload, timeout).await
}

/// As [`exchange`], on `socket` when given (a non-blocking UDP socket of
/// the target's family, made inside another network namespace), else on a
/// new one.
pub async fn exchange_on(
    socket: Option<OwnedFd>,
    target: Target,
    payload: &[u8],
    timeout: Duration,
) -> ProbeResult {
    let addr = target.addr;
    let note = " (many UDP services answer nothing)";
    super::timed(
        target,
        timeout,
        ("reply", note),
        attempt(socket, addr, payload),
    )
    .await
}

async fn attempt(socket: Option<OwnedFd>, addr: SocketAddr, payload: &[u8]) -> io::Result<()> {
    let any: SocketAddr = match addr {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = match socket {
        Some(fd) => UdpSocket::from_std(std::net::UdpSocket::from(fd))?,
        None => UdpSocket::bind(any).await?,
    };
    socket.connect(addr).await?;
    socket.send(payload).await?;
    // One byte is enough to know a reply came; the rest is discarded.
    let mut buf = [0u8; 1];
    socket.recv(&mut buf).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::{Outcome, Protocol, Vantage};

    fn target(addr: SocketAddr) -> Target {
        Target::new(Vantage::Loopback, Protocol::Udp, addr)
    }

    #[tokio::test]
    async fn a_reply_is_success_and_the_payload_is_sent() {
        let server = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = server.local_addr().unwrap();
        let echo = std::thread::spawn(move || {
            let mut buf = [0u8; 64];
            let (n, from) = server.recv_from(&mut buf).unwrap();
            server.send_to(&buf[..n], from).unwrap();
            buf[..n].to_vec()
        });
        let r = exchange(target(addr), b"ping", Duration::from_secs(2)).await;
        assert_eq!(r.outcome, Outcome::Success, "{r:?}");
        assert_eq!(r.error, None);
        assert_eq!(echo.join().unwrap(), b"ping");
    }

    /// A UDP port that no datagram of the prober can reach while the socket
    /// lives: bound (so no one else takes it) and connected elsewhere (so
    /// the kernel delivers it nothing from other peers, and answers ICMP
    /// port-unreachable).
    pub(crate) fn closed_udp() -> (std::net::UdpSocket, SocketAddr) {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        s.connect("127.0.0.1:9").unwrap();
        let addr = s.local_addr().unwrap();
        (s, addr)
    }

    #[tokio::test]
    async fn nothing_bound_is_refused() {
        let (_closed, addr) = closed_udp();
        let r = exchange(target(addr), b"", Duration::from_secs(2)).await;
        assert_eq!(r.outcome, Outcome::Refused, "{r:?}");
        assert_eq!(r.errno, Some(libc::ECONNREFUSED));
    }

    #[tokio::test]
    async fn a_silent_listener_is_a_timeout() {
        let server = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let r = exchange(
            target(server.local_addr().unwrap()),
            b"",
            Duration::from_millis(200),
        )
        .await;
        assert_eq!(r.outcome, Outcome::Timeout, "{r:?}");
        let mut buf = [0u8; 8];
        server.set_nonblocking(true).unwrap();
        assert_eq!(
            server.recv(&mut buf).unwrap(),
            0,
            "an empty datagram arrived"
        );
    }
}
