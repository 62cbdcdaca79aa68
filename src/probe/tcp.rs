//! One TCP connect attempt with a deadline.

use std::io;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::time::Duration;

use socket2::{Domain, Socket, Type};

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
    let socket = match socket {
        Some(fd) => {
            let s = Socket::from(fd);
            s.set_nonblocking(true)?;
            s
        }
        None => Socket::new(
            Domain::for_address(addr),
            Type::STREAM.nonblocking().cloexec(),
            None,
        )?,
    };
    socket.set_linger(Some(Duration::ZERO))?;
    match socket.connect(&addr.into()) {
        Ok(()) => return Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    // Over loopback (and to this host's own addresses) the kernel has
    // usually finished the handshake inside connect(): asking once costs
    // a system call, where waiting on the runtime costs two (registering
    // with epoll and leaving it) and a wake-up.
    if let Some(done) = settled(&socket) {
        return done;
    }
    let stream = tokio::net::TcpStream::from_std(std::net::TcpStream::from(socket))?;
    stream.writable().await?;
    match stream.take_error()? {
        Some(e) => Err(e),
        None => stream.peer_addr().map(|_| ()),
    }
}

/// How a connect in progress ended, if it has: connected (it has a peer),
/// or failed (its error); `None` while the handshake goes on.
fn settled(socket: &Socket) -> Option<io::Result<()>> {
    if socket.peer_addr().is_ok() {
        return Some(Ok(()));
    }
    match socket.take_error() {
        Ok(Some(e)) => Some(Err(e)),
        Ok(None) => None,
        Err(e) => Some(Err(e)),
    }
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

    /// A handshake that does not finish inside connect() is waited for on
    /// the runtime: the listener's accept queue is full, so the first SYN
    /// is dropped; a slot frees, and the retransmitted SYN (after 1 s)
    /// connects.
    #[tokio::test]
    async fn a_handshake_that_finishes_later_is_waited_for() {
        use socket2::SockAddr;
        let listener = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
        listener.bind(&SockAddr::from(any)).unwrap();
        listener.listen(0).unwrap();
        let addr = listener.local_addr().unwrap().as_socket().unwrap();
        let queued = std::net::TcpStream::connect(addr).unwrap();
        let freeing = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            let accepted = listener.accept().unwrap();
            drop(queued);
            (listener, accepted)
        });
        let r = connect(target(addr), Duration::from_secs(5)).await;
        let _kept = freeing.join().unwrap();
        assert_eq!(r.outcome, Outcome::Success, "{r:?}");
        assert!(r.duration >= Duration::from_millis(300), "{r:?}");
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
