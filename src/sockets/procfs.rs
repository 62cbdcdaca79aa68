//! LISTEN sockets from `/proc/net/tcp` and `/proc/net/tcp6`, and bound UDP
//! sockets from `/proc/net/udp` and `/proc/net/udp6`: the fallback when
//! netlink is not available.
//!
//! What this source cannot tell, compared with netlink:
//! - the accept queue limit: for a LISTEN row the kernel prints the accept
//!   queue length as `rx_queue`, but `tx_queue` is `write_seq - snd_una`
//!   (always 0 for a listener), and the backlog appears nowhere, so
//!   `accept_queue_limit` is `None`;
//! - `IPV6_V6ONLY`: `v6only` is `None`.
//!
//! Reading the files makes the kernel walk every socket, established ones
//! included, so this costs more than the netlink dump on a busy host.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;

use super::{Error, Family, Listener};
use crate::config::Protocol;

/// `TCP_LISTEN` as printed in the `st` column.
const STATE_LISTEN: u8 = 0x0A;
/// `TCP_CLOSE`: the state of an unconnected UDP socket (a connected one,
/// a client, is `01`).
const STATE_CLOSE: u8 = 0x07;

/// Reads `<proc_root>/net/tcp` and `<proc_root>/net/tcp6`. A missing `tcp6`
/// means IPv6 is disabled and is not an error.
pub fn read_listeners(proc_root: &Path) -> Result<Vec<Listener>, Error> {
    let mut listeners = read_file(&proc_root.join("net/tcp"), Protocol::Tcp, Family::Ipv4)?;
    listeners.extend(read_optional(
        &proc_root.join("net/tcp6"),
        Protocol::Tcp,
        Family::Ipv6,
    )?);
    Ok(listeners)
}

/// Reads `<proc_root>/net/udp` and `<proc_root>/net/udp6`: the bound,
/// unconnected UDP sockets. A missing file (IPv6 disabled, or a fixture
/// root without UDP) is no sockets, not an error.
pub fn read_udp_sockets(proc_root: &Path) -> Result<Vec<Listener>, Error> {
    let mut sockets = read_optional(&proc_root.join("net/udp"), Protocol::Udp, Family::Ipv4)?;
    sockets.extend(read_optional(
        &proc_root.join("net/udp6"),
        Protocol::Udp,
        Family::Ipv6,
    )?);
    Ok(sockets)
}

fn read_optional(path: &Path, protocol: Protocol, family: Family) -> Result<Vec<Listener>, Error> {
    match read_file(path, protocol, family) {
        Err(Error::Read { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            Ok(Vec::new())
        }
        other => other,
    }
}

fn read_file(path: &Path, protocol: Protocol, family: Family) -> Result<Vec<Listener>, Error> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
        path: shown.clone(),
        source,
    })?;
    parse_proc_net(&text, protocol, family, &shown)
}

/// [`parse_proc_net`] of `/proc/net/tcp{,6}`.
pub fn parse_proc_net_tcp(text: &str, family: Family, path: &str) -> Result<Vec<Listener>, Error> {
    parse_proc_net(text, Protocol::Tcp, family, path)
}

/// Parses the text of `/proc/net/tcp` (`family` IPv4) or `/proc/net/tcp6`
/// (IPv6) and returns its LISTEN rows; for `/proc/net/udp{,6}` (the same
/// columns), its unconnected rows with a local port. `path` names the file in errors;
/// lines are counted from 1, the header line included.
///
/// Addresses are printed by the kernel as 32-bit words in host byte order
/// (`0100007F` is 127.0.0.1 on a little-endian host), ports as plain hex.
///
/// The file is not a snapshot: the kernel prints it a page at a time and
/// finds its place again by counting rows, so a socket can show twice when
/// others come and go while it is read. A socket is one inode: the second
/// row of an inode is dropped.
pub fn parse_proc_net(
    text: &str,
    protocol: Protocol,
    family: Family,
    path: &str,
) -> Result<Vec<Listener>, Error> {
    let mut listeners: Vec<Listener> = Vec::new();
    let mut seen = HashSet::new();
    for (index, line) in text.lines().enumerate() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.is_empty() || (index == 0 && fields[0] == "sl") {
            continue;
        }
        let row = parse_row(&fields, protocol, family).map_err(|reason| Error::Parse {
            path: path.to_string(),
            line: index + 1,
            reason,
        })?;
        // Inode 0 names no socket (never the case for a listener): kept.
        listeners.extend(row.filter(|l| l.inode == 0 || seen.insert(l.inode)));
    }
    Ok(listeners)
}

/// One data row: `Ok(None)` for a socket not in LISTEN (TCP), or connected
/// or without a local port (UDP).
fn parse_row(
    fields: &[&str],
    protocol: Protocol,
    family: Family,
) -> Result<Option<Listener>, String> {
    // sl local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt uid timeout inode ...
    if fields.len() < 10 {
        return Err(format!(
            "expected at least 10 fields, found {}",
            fields.len()
        ));
    }
    let state = u8::from_str_radix(fields[3], 16)
        .ok()
        .filter(|_| fields[3].len() == 2)
        .ok_or_else(|| format!("bad state {:?}", fields[3]))?;
    let wanted = match protocol {
        Protocol::Tcp => STATE_LISTEN,
        Protocol::Udp => STATE_CLOSE,
    };
    if state != wanted {
        return Ok(None);
    }
    let (address, port) = parse_endpoint(fields[1], family)
        .ok_or_else(|| format!("bad local address {:?}", fields[1]))?;
    if protocol == Protocol::Udp && port == 0 {
        return Ok(None);
    }
    let accept_queue_length = fields[4]
        .split_once(':')
        .and_then(|(_tx, rx)| u32::from_str_radix(rx, 16).ok())
        .ok_or_else(|| format!("bad queues {:?}", fields[4]))?;
    let inode = fields[9]
        .parse::<u64>()
        .map_err(|_| format!("bad inode {:?}", fields[9]))?;
    let accept_queue_length = match protocol {
        Protocol::Tcp => accept_queue_length,
        Protocol::Udp => 0,
    };
    Ok(Some(Listener {
        address,
        port,
        protocol,
        family,
        v6only: None,
        accept_queue_length,
        accept_queue_limit: None,
        inode,
        owner: None,
        netns: crate::netns::NsId::OWN,
    }))
}

/// `0100007F:1F90` → 127.0.0.1:8080 (on a little-endian host).
fn parse_endpoint(field: &str, family: Family) -> Option<(IpAddr, u16)> {
    let (addr, port) = field.split_once(':')?;
    if port.len() != 4 {
        return None;
    }
    let port = u16::from_str_radix(port, 16).ok()?;
    let words = match family {
        Family::Ipv4 => 1,
        Family::Ipv6 => 4,
    };
    if addr.len() != 8 * words || !addr.is_ascii() {
        return None;
    }
    let mut bytes = Vec::with_capacity(4 * words);
    for i in 0..words {
        let word = u32::from_str_radix(&addr[8 * i..8 * (i + 1)], 16).ok()?;
        bytes.extend_from_slice(&word.to_ne_bytes());
    }
    let address = match family {
        Family::Ipv4 => IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(bytes).ok()?)),
        Family::Ipv6 => IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(bytes).ok()?)),
    };
    Some((address, port))
}

// The text fixtures are as a little-endian kernel prints them.
#[cfg(all(test, target_endian = "little"))]
mod tests {
    use std::net::TcpListener;
    use std::path::PathBuf;

    use super::*;

    pub(crate) fn fixture_root() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/proc")
    }

    fn endpoints(ls: &[Listener]) -> Vec<(String, u16, u32, u64)> {
        ls.iter()
            .map(|l| {
                (
                    l.address.to_string(),
                    l.port,
                    l.accept_queue_length,
                    l.inode,
                )
            })
            .collect()
    }

    #[test]
    fn ipv4_lines() {
        let text = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000003 00:00000000 00000000     0        0 9042 4 0000000022873dc5 100 0 0 10 0
   1: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1234 1 0000000000000000 100 0 0 10 0
   2: 0100007F:1F90 0100007F:960E 01 00000000:00000000 00:00000000 00000000     0        0 0 1 00000000b25dc9c1 20 0 0 10 -1
   3: 0200000A:01BB 00000000:0000 0A 00000000:00000000 00:00000000 00000000   999        0 777 1 0000000000000000 100 0 0 10 0
";
        let ls = parse_proc_net_tcp(text, Family::Ipv4, "/proc/net/tcp").unwrap();
        assert_eq!(
            endpoints(&ls),
            vec![
                ("127.0.0.1".into(), 8080, 3, 9042),
                ("0.0.0.0".into(), 22, 0, 1234),
                ("10.0.0.2".into(), 443, 0, 777),
            ]
        );
        assert!(ls.iter().all(|l| l.family == Family::Ipv4
            && l.v6only.is_none()
            && l.accept_queue_limit.is_none()
            && l.owner.is_none()));
    }

    #[test]
    fn ipv6_lines() {
        let text = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000001000000:1F90 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 501 1 0000000000000000 100 0 0 10 0
   1: 0000000000000000FFFF00000100007F:9A3F 00000000000000000000000000000000:0000 0A 00000000:00000001 00:00000000 00000000     0        0 9046 1 00000000739652cf 100 0 0 10 0
   2: 00000000000000000000000000000000:0016 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1235 1 0000000000000000 100 0 0 10 0
   3: B80D0120000000000000000001000000:0050 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 600 1 0000000000000000 100 0 0 10 0
";
        let ls = parse_proc_net_tcp(text, Family::Ipv6, "/proc/net/tcp6").unwrap();
        assert_eq!(
            endpoints(&ls),
            vec![
                ("::1".into(), 8080, 0, 501),
                ("::ffff:127.0.0.1".into(), 0x9A3F, 1, 9046),
                ("::".into(), 22, 0, 1235),
                ("2001:db8::1".into(), 80, 0, 600),
            ]
        );
        assert!(
            ls.iter()
                .all(|l| l.family == Family::Ipv6 && l.v6only.is_none())
        );
    }

    /// Read while sockets came and went, the file repeated the listener of
    /// inode 9042 (with another queue length, read a moment later).
    #[test]
    fn a_repeated_row_is_one_listener() {
        let text = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000003 00:00000000 00000000     0        0 9042 4 0000000022873dc5 100 0 0 10 0
   1: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1234 1 0000000000000000 100 0 0 10 0
   1: 0100007F:1F90 00000000:0000 0A 00000000:00000004 00:00000000 00000000     0        0 9042 4 0000000022873dc5 100 0 0 10 0
   2: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 9043 4 0000000022873dc6 100 0 0 10 0
";
        let ls = parse_proc_net_tcp(text, Family::Ipv4, "/proc/net/tcp").unwrap();
        assert_eq!(
            endpoints(&ls),
            vec![
                ("127.0.0.1".into(), 8080, 3, 9042),
                ("0.0.0.0".into(), 22, 0, 1234),
                // Another socket on the same address (SO_REUSEPORT) stays.
                ("127.0.0.1".into(), 8080, 0, 9043),
            ]
        );
    }

    #[test]
    fn malformed_line_names_file_and_line() {
        let text = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 9042 4 0 100 0 0 10 0
   1: 0100007G:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 9043 4 0 100 0 0 10 0
";
        let err = parse_proc_net_tcp(text, Family::Ipv4, "/proc/net/tcp").unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"parsing /proc/net/tcp line 3: bad local address "0100007G:1F90""#
        );
    }

    #[test]
    fn other_malformed_rows() {
        let reason = |line: &str, family| {
            parse_proc_net_tcp(line, family, "f")
                .unwrap_err()
                .to_string()
        };
        assert_eq!(
            reason("0: 0100007F:1F90 00000000:0000 0A", Family::Ipv4),
            "parsing f line 1: expected at least 10 fields, found 4"
        );
        assert_eq!(
            reason(
                "0: 0100007F:1F90 00000000:0000 A 0:0 0:0 0 0 0 1",
                Family::Ipv4
            ),
            r#"parsing f line 1: bad state "A""#
        );
        // An IPv4 address in tcp6.
        assert_eq!(
            reason(
                "0: 0100007F:1F90 00000000:0000 0A 0:0 0:0 0 0 0 1",
                Family::Ipv6
            ),
            r#"parsing f line 1: bad local address "0100007F:1F90""#
        );
        assert_eq!(
            reason(
                "0: 0100007F:1F90 00000000:0000 0A 00000000 0:0 0 0 0 1",
                Family::Ipv4
            ),
            r#"parsing f line 1: bad queues "00000000""#
        );
        assert_eq!(
            reason(
                "0: 0100007F:1F90 00000000:0000 0A 0:0 0:0 0 0 0 -1",
                Family::Ipv4
            ),
            r#"parsing f line 1: bad inode "-1""#
        );
    }

    #[test]
    fn udp_lines_bound_and_unconnected_only() {
        let text = "   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
  123: 3500007F:0035 00000000:0000 07 00000000:00000000 00:00000000 00000000   991        0 20412 2 0000000000000000 0
  200: 0100007F:D431 0100007F:0035 01 00000000:00000000 00:00000000 00000000     0        0 20500 2 0000000000000000 0
  201: 00000000:0000 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 20501 2 0000000000000000 0
  300: 00000000:007B 00000000:0000 07 00000000:00000340 00:00000000 00000000     0        0 20600 2 0000000000000000 0
";
        let ls = parse_proc_net(text, Protocol::Udp, Family::Ipv4, "/proc/net/udp").unwrap();
        assert_eq!(
            endpoints(&ls),
            vec![
                ("127.0.0.53".into(), 53, 0, 20412),
                ("0.0.0.0".into(), 123, 0, 20600)
            ]
        );
        assert!(
            ls.iter()
                .all(|l| l.protocol == Protocol::Udp && l.accept_queue_limit.is_none())
        );
        assert!(
            parse_proc_net_tcp(text, Family::Ipv4, "/proc/net/udp")
                .unwrap()
                .is_empty(),
            "no row of udp is a TCP listener"
        );
    }

    #[test]
    fn real_proc_shows_a_bound_udp_socket() {
        let server = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = server.local_addr().unwrap().port();
        let mut misses = 0;
        loop {
            let ls = read_udp_sockets(Path::new("/proc")).unwrap();
            let ours: Vec<&Listener> = ls
                .iter()
                .filter(|l| l.port == port && l.address == IpAddr::V4(Ipv4Addr::LOCALHOST))
                .collect();
            assert!(ours.len() <= 1, "one socket, one row: {ours:?}");
            if let Some(l) = ours.first() {
                assert_eq!(l.protocol, Protocol::Udp);
                break;
            }
            misses += 1;
            assert!(
                misses < 100,
                "{misses} reads of /proc/net/udp missed port {port}"
            );
        }
    }

    #[test]
    fn fixture_root_reads_both_files() {
        let ls = read_listeners(&fixture_root()).unwrap();
        let v4 = ls.iter().filter(|l| l.family == Family::Ipv4).count();
        let v6 = ls.iter().filter(|l| l.family == Family::Ipv6).count();
        assert!(v4 > 0 && v6 > 0, "{ls:?}");
        assert!(ls.iter().any(|l| l.inode == 31337 && l.port == 8080));
    }

    #[test]
    fn missing_tcp6_is_not_an_error_but_missing_tcp_is() {
        let dir = std::env::temp_dir().join(format!("portsight-procfs-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("net")).unwrap();
        let err = read_listeners(&dir).unwrap_err();
        assert!(
            matches!(&err, Error::Read { path, .. } if path.ends_with("net/tcp")),
            "{err}"
        );
        std::fs::copy(fixture_root().join("net/tcp"), dir.join("net/tcp")).unwrap();
        let ls = read_listeners(&dir).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(!ls.is_empty());
        assert!(ls.iter().all(|l| l.family == Family::Ipv4));
    }

    /// Against the running kernel: the accept queue length shows, the limit
    /// does not (tx_queue is 0 for a listener whatever its backlog). Other
    /// tests open and close sockets meanwhile, so a read may repeat a row
    /// (dropped by inode) or skip one (the kernel lost its place): a read
    /// that misses the listener is read again, one that shows it twice fails.
    #[test]
    fn real_proc_shows_a_listener() {
        let server = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = server.local_addr().unwrap().port();
        let _client = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        let mut misses = 0;
        let ours = loop {
            let ls = read_listeners(Path::new("/proc")).unwrap();
            // (An IPv6 socket of another test may hold the same port number.)
            let mut ours: Vec<Listener> = ls
                .into_iter()
                .filter(|l| l.port == port && l.family == Family::Ipv4)
                .collect();
            assert!(ours.len() <= 1, "one listener, one row: {ours:?}");
            if let Some(l) = ours.pop() {
                break l;
            }
            misses += 1;
            assert!(
                misses < 100,
                "{misses} reads of /proc/net/tcp missed port {port}"
            );
        };
        assert_eq!(ours.address, IpAddr::V4(Ipv4Addr::LOCALHOST));
        assert_eq!(ours.accept_queue_length, 1);
        assert_eq!(ours.accept_queue_limit, None);
        assert_ne!(ours.inode, 0);
    }
}
