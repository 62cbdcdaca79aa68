//! Listening sockets as the tests' services open them, and ports that are
//! closed for as long as a test needs them to be.

use std::net::{SocketAddr, TcpListener};

use socket2::{Domain, Socket, Type};

use super::netns::Host;

/// A TCP listener to open: `listen("0.0.0.0:8080").backlog(1).bind()`.
/// Like std's `TcpListener::bind` (SO_REUSEADDR, backlog 128) unless told.
#[must_use]
pub struct Listen {
    addr: SocketAddr,
    backlog: i32,
    v6only: Option<bool>,
    reuse_port: bool,
}

pub fn listen(addr: &str) -> Listen {
    Listen {
        addr: addr
            .parse()
            .unwrap_or_else(|e| panic!("listen address {addr}: {e}")),
        backlog: 128,
        v6only: None,
        reuse_port: false,
    }
}

impl Listen {
    /// The accept queue's limit (`listen(2)`'s backlog).
    pub fn backlog(mut self, backlog: i32) -> Self {
        self.backlog = backlog;
        self
    }

    /// `IPV6_V6ONLY` (IPv6 addresses only); the system's default otherwise.
    pub fn v6only(mut self, only: bool) -> Self {
        self.v6only = Some(only);
        self
    }

    /// `SO_REUSEPORT`: several sockets on one address, as pre-forked servers have.
    pub fn reuse_port(mut self) -> Self {
        self.reuse_port = true;
        self
    }

    /// Opens it in the calling thread's network namespace.
    pub fn bind(self) -> TcpListener {
        let addr = self.addr;
        let s = Socket::new(Domain::for_address(addr), Type::STREAM, None).expect("socket");
        if let Some(only) = self.v6only {
            s.set_only_v6(only).expect("IPV6_V6ONLY");
        }
        s.set_reuse_address(true).expect("SO_REUSEADDR");
        if self.reuse_port {
            s.set_reuse_port(true).expect("SO_REUSEPORT");
        }
        s.bind(&addr.into())
            .unwrap_or_else(|e| panic!("bind {addr}: {e}"));
        s.listen(self.backlog)
            .unwrap_or_else(|e| panic!("listen on {addr}: {e}"));
        s.into()
    }

    /// Opens it in `host` (the socket stays there wherever it is used).
    pub fn bind_in(self, host: &Host) -> TcpListener {
        host.run(|| self.bind())
    }
}

/// A port on which nothing listens, on any address of either family, for
/// as long as this lives: a socket bound to it (on `[::]` with IPV6_V6ONLY
/// off, so no other socket can take the port on any address) that never
/// listens. A connection to it is refused: the kernel answers a SYN to a
/// bound but not listening socket with RST.
pub struct ClosedPort {
    pub port: u16,
    _socket: Socket,
}

pub fn closed_port() -> ClosedPort {
    let bound = |addr: &str, v6only: Option<bool>| {
        let addr: SocketAddr = addr.parse().unwrap();
        let s = Socket::new(Domain::for_address(addr), Type::STREAM, None).ok()?;
        if let Some(only) = v6only {
            s.set_only_v6(only).ok()?;
        }
        s.bind(&addr.into()).ok()?;
        Some(s)
    };
    // Without IPv6, every IPv4 address is all there is.
    let socket = bound("[::]:0", Some(false))
        .or_else(|| bound("0.0.0.0:0", None))
        .expect("bind a port");
    let port = socket
        .local_addr()
        .unwrap()
        .as_socket()
        .expect("an IP socket")
        .port();
    ClosedPort {
        port,
        _socket: socket,
    }
}
