//! Whether a network namespace has TCP or UDP sockets at all: the `inuse`
//! counts of `/proc/net/sockstat` and `sockstat6`, the sockets of the
//! namespace in the kernel's hash tables. A sock_diag dump walks the whole
//! table, which every namespace shares (16,384 slots for UDP here, walked
//! once per family), even for a namespace without a single socket, as most
//! containers have no UDP socket; a count of 0 means the dump would return
//! nothing, so it is not made. The files are opened once and read again
//! from the start (`pread`): each stays with the namespace it was opened
//! in.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

/// Which socket tables have sockets of the namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InUse {
    /// TCP of either family (one dump covers both).
    pub tcp: bool,
    pub udp4: bool,
    pub udp6: bool,
}

impl InUse {
    /// Everything may be there: what a count that cannot be read means.
    pub const ALL: InUse = InUse {
        tcp: true,
        udp4: true,
        udp6: true,
    };
}

/// The calling thread's namespace's count files.
#[derive(Debug)]
pub struct Counts {
    sockstat: File,
    /// `None` without IPv6 (`ipv6.disable=1`): no IPv6 socket exists.
    sockstat6: Option<File>,
}

impl Counts {
    /// Opens `/proc/thread-self/net/sockstat{,6}`: the namespace of the
    /// calling thread, as a netlink socket made by it.
    pub fn open() -> io::Result<Counts> {
        let sockstat = File::open("/proc/thread-self/net/sockstat")?;
        let sockstat6 = match File::open("/proc/thread-self/net/sockstat6") {
            Ok(f) => Some(f),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
        Ok(Counts {
            sockstat,
            sockstat6,
        })
    }

    pub fn read(&self) -> io::Result<InUse> {
        let v4 = read_all(&self.sockstat)?;
        let v6 = match &self.sockstat6 {
            Some(f) => read_all(f)?,
            None => String::new(),
        };
        Ok(parse(&v4, &v6))
    }
}

fn read_all(file: &File) -> io::Result<String> {
    let mut buf = vec![0u8; 512];
    let mut len = 0;
    loop {
        let n = file.read_at(&mut buf[len..], len as u64)?;
        if n == 0 {
            break;
        }
        len += n;
        if len == buf.len() {
            buf.resize(len * 2, 0);
        }
    }
    buf.truncate(len);
    String::from_utf8(buf).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// The counts of a `sockstat` and a `sockstat6` text (`TCP: inuse 3 …`,
/// `UDP6: inuse 0`). A line that is missing or does not parse counts as
/// in use, so nothing is left out on a kernel that words them otherwise;
/// an empty `sockstat6` (no IPv6) has no IPv6 socket.
pub fn parse(sockstat: &str, sockstat6: &str) -> InUse {
    let inuse = |text: &str, key: &str| -> bool {
        text.lines()
            .find_map(|l| {
                let rest = l.strip_prefix(key)?.strip_prefix(": inuse ")?;
                rest.split_whitespace().next()?.parse::<u64>().ok()
            })
            .is_none_or(|n| n > 0)
    };
    let v6 = !sockstat6.trim().is_empty();
    InUse {
        tcp: inuse(sockstat, "TCP") || (v6 && inuse(sockstat6, "TCP6")),
        udp4: inuse(sockstat, "UDP"),
        udp6: v6 && inuse(sockstat6, "UDP6"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const V4: &str = "sockets: used 290\nTCP: inuse 0 orphan 0 tw 3 alloc 5 mem 1\nUDP: inuse 2 mem 2\nUDPLITE: inuse 0\nRAW: inuse 0\nFRAG: inuse 0 memory 0\n";
    const V6: &str =
        "TCP6: inuse 4\nUDP6: inuse 0\nUDPLITE6: inuse 0\nRAW6: inuse 0\nFRAG6: inuse 0 memory 0\n";

    #[test]
    fn counts_of_each_table() {
        let got = parse(V4, V6);
        assert_eq!(
            got,
            InUse {
                tcp: true,
                udp4: true,
                udp6: false
            }
        );
        let none = parse(
            &V4.replace("UDP: inuse 2", "UDP: inuse 0"),
            &V6.replace("TCP6: inuse 4", "TCP6: inuse 0"),
        );
        assert_eq!(
            none,
            InUse {
                tcp: false,
                udp4: false,
                udp6: false
            },
            "UDPLITE is not UDP"
        );
        assert!(!parse(V4, "").udp6, "no sockstat6: no IPv6 sockets");
    }

    #[test]
    fn what_does_not_parse_counts_as_in_use() {
        assert_eq!(
            parse("", ""),
            InUse {
                udp6: false,
                ..InUse::ALL
            }
        );
        assert!(parse("TCP: inuse x\nUDP: used 0\n", V6).tcp);
        assert!(parse("TCP: inuse x\nUDP: used 0\n", V6).udp4);
        assert!(parse(V4, "UDP6: inuse -1\n").udp6);
    }

    /// Against the kernel: a bound UDP socket and a TCP listener of this
    /// process are counted in this namespace's files.
    #[test]
    fn the_kernel_counts_a_bound_socket() {
        let counts = Counts::open().unwrap();
        let _udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let _tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let got = counts.read().unwrap();
        assert!(got.udp4 && got.tcp, "{got:?}");
        let again = counts.read().unwrap();
        assert_eq!(got.udp4, again.udp4, "read again from the start");
    }

    /// In a network namespace of its own (a thread that unshared one, gone
    /// with the thread): nothing is counted, so no table is dumped, and
    /// a UDP socket bound there is counted and dumped.
    #[test]
    fn an_empty_namespace_is_not_dumped_and_one_socket_is() {
        if !crate::test_is_root("needs root to unshare a network namespace") {
            return;
        }
        std::thread::spawn(|| {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            let counts = Counts::open().unwrap();
            let none = InUse {
                tcp: false,
                udp4: false,
                udp6: false,
            };
            assert_eq!(counts.read().unwrap(), none);
            let mut dumper = crate::sockets::netlink::Dumper::open().unwrap();
            assert!(dumper.sockets().unwrap().is_empty());
            let udp = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
            let port = udp.local_addr().unwrap().port();
            assert_eq!(counts.read().unwrap(), InUse { udp4: true, ..none });
            let got = dumper.sockets().unwrap();
            assert!(got.len() == 1 && got[0].port == port, "{got:?}");
        })
        .join()
        .unwrap();
    }
}
