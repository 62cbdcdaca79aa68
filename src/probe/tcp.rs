//! One TCP connect attempt with a deadline.

use std::io;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::time::Duration;

use tokio::net::TcpSocket;

use super::{Outcome, ProbeResult, Target};

/// Connects to `target.addr`, waiting at most `timeout`, and closes at once.
/// The socket has `SO_LINGER {on, 0}`: closing sends RST instead of FIN, so
/// the prober leaves no `TIME_WAIT` behind however often it probes.
pub async fn connect(target: Target, timeout: Duration) -> ProbeResult {
    connect_on(None, target, timeout).await
}

/// As [`connect`], on `socket` when given (a non-blocking TCP socket of the
/// target's family, not connected yet: one made inside another network
/// namespace), else on a new one.
pub async fn connect_on(socket: Option<OwnedFd>, target: Target, timeout: Duration) -> ProbeResult {
    let addr = target.addr;
    super::timed(target, timeout, ("answer", ""), attempt(socket, addr)).await
}

async fn attempt(socket: Option<OwnedFd>, addr: SocketAddr) -> io::Result<()> {
    let socket = match (socket, addr) {
        (Some(fd), _) => TcpSocket::from_std_stream(std::net::TcpStream::from(fd)),
        (None, SocketAddr::V4(_)) => TcpSocket::new_v4()?,
        (None, SocketAddr::V6(_)) => TcpSocket::new_v6()?,
    };
    socket.set_zero_linger()?;
    let stream = socket.connect(addr).await?;
    drop(stream);
    Ok(())
}

/// Maps a failed connect to its outcome by errno.
pub fn classify(e: &io::Error) -> Outcome {
    match e.raw_os_error() {
        Some(libc::ECONNREFUSED) => Outcome::Refused,
        Some(libc::EHOSTUNREACH) | Some(libc::ENETUNREACH) => Outcome::Unreachable,
        Some(libc::ETIMEDOUT) => Outcome::Timeout,
        _ => Outcome::Error,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::Vantage;

    fn target(addr: SocketAddr) -> Target {
        Target::local(Vantage::Loopback, addr)
    }

    #[tokio::test]
    async fn success_on_a_listener() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let r = connect(
            target(listener.local_addr().unwrap()),
            Duration::from_secs(2),
        )
        .await;
        assert_eq!(r.outcome, Outcome::Success);
        assert_eq!(r.errno, None);
        assert!(r.duration < Duration::from_secs(2));
    }

    #[tokio::test]
    async fn refused_without_listener() {
        let addr = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let r = connect(target(addr), Duration::from_secs(2)).await;
        assert_eq!(r.outcome, Outcome::Refused);
        assert_eq!(r.errno, Some(libc::ECONNREFUSED));
        assert!(r.error.unwrap().contains("refused"));
    }

    #[test]
    fn errno_classes() {
        let e = |n| io::Error::from_raw_os_error(n);
        assert_eq!(classify(&e(libc::ECONNREFUSED)), Outcome::Refused);
        assert_eq!(classify(&e(libc::EHOSTUNREACH)), Outcome::Unreachable);
        assert_eq!(classify(&e(libc::ENETUNREACH)), Outcome::Unreachable);
        assert_eq!(classify(&e(libc::ETIMEDOUT)), Outcome::Timeout);
        assert_eq!(classify(&e(libc::EADDRNOTAVAIL)), Outcome::Error);
        assert_eq!(classify(&e(libc::EACCES)), Outcome::Error);
    }
}
