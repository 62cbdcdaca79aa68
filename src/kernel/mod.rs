//! Kernel counters, read by the names in their header lines, never by
//! position (newer kernels add fields): `<proc_root>/net/netstat`'s TcpExt.
//! Per network namespace: a portsight reads those of its own.

use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{0}: no TcpExt header and values")]
    NoTcpExt(String),
}

/// The TcpExt counters about listen queues; `None` where this kernel has
/// no such field.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TcpExt {
    /// Connections dropped because an accept queue was full.
    pub listen_overflows: Option<u64>,
    /// Every SYN or ACK dropped at a listener (overflows included).
    pub listen_drops: Option<u64>,
    /// SYNs dropped because the SYN queue was full (and no syncookies).
    pub req_q_full_drop: Option<u64>,
    pub backlog_drop: Option<u64>,
    pub syncookies_sent: Option<u64>,
}

impl TcpExt {
    /// How many connections the kernel dropped at full queues since
    /// `before`: the growth of ListenOverflows, else of ListenDrops (a
    /// counter that went down — a reset — counts nothing).
    pub fn dropped_since(&self, before: &TcpExt) -> u64 {
        let grew = |now: Option<u64>, then: Option<u64>| match (now, then) {
            (Some(n), Some(t)) => Some(n.saturating_sub(t)),
            _ => None,
        };
        grew(self.listen_overflows, before.listen_overflows)
            .or_else(|| grew(self.listen_drops, before.listen_drops))
            .unwrap_or(0)
    }
}

/// Reads `<proc_root>/net/netstat`.
pub fn read_tcpext(proc_root: &Path) -> Result<TcpExt, Error> {
    let path = proc_root.join("net/netstat");
    let text = std::fs::read_to_string(&path).map_err(|source| Error::Read {
        path: path.display().to_string(),
        source,
    })?;
    parse_tcpext(&text).ok_or_else(|| Error::NoTcpExt(path.display().to_string()))
}

/// Parses the text of `/proc/net/netstat`: a header line of names and a
/// line of values per group; the TcpExt group's counters by name.
pub fn parse_tcpext(text: &str) -> Option<TcpExt> {
    let mut lines = text.lines();
    while let Some(header) = lines.next() {
        let Some(names) = header.strip_prefix("TcpExt:") else {
            continue;
        };
        let values = lines.next()?.strip_prefix("TcpExt:")?;
        let pairs: Vec<(&str, u64)> = names
            .split_whitespace()
            .zip(values.split_whitespace())
            .filter_map(|(n, v)| v.parse().ok().map(|v| (n, v)))
            .collect();
        let get = |name: &str| pairs.iter().find(|(n, _)| *n == name).map(|(_, v)| *v);
        return Some(TcpExt {
            listen_overflows: get("ListenOverflows"),
            listen_drops: get("ListenDrops"),
            req_q_full_drop: get("TCPReqQFullDrop"),
            backlog_drop: get("TCPBacklogDrop"),
            syncookies_sent: get("SyncookiesSent"),
        });
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_by_name_whatever_their_position() {
        let a = "IpExt: InNoRoutes\nIpExt: 3\n\
                 TcpExt: SyncookiesSent ListenOverflows ListenDrops TCPBacklogDrop TCPReqQFullDrop\n\
                 TcpExt: 1 37 40 2 5\n";
        let b = "TcpExt: NewField ListenDrops TCPReqQFullDrop SyncookiesSent TCPBacklogDrop ListenOverflows\n\
                 TcpExt: 9 40 5 1 2 37\n";
        let want = TcpExt {
            listen_overflows: Some(37),
            listen_drops: Some(40),
            req_q_full_drop: Some(5),
            backlog_drop: Some(2),
            syncookies_sent: Some(1),
        };
        assert_eq!(parse_tcpext(a), Some(want));
        assert_eq!(parse_tcpext(b), Some(want));
    }

    #[test]
    fn missing_fields_and_odd_text() {
        let t = parse_tcpext("TcpExt: ListenDrops\nTcpExt: 4\n").unwrap();
        assert_eq!((t.listen_overflows, t.listen_drops), (None, Some(4)));
        assert_eq!(parse_tcpext("TcpExt: ListenDrops\n"), None);
        assert_eq!(parse_tcpext(""), None);
        let before = TcpExt {
            listen_overflows: Some(10),
            ..TcpExt::default()
        };
        let after = TcpExt {
            listen_overflows: Some(47),
            ..TcpExt::default()
        };
        assert_eq!(after.dropped_since(&before), 37);
        assert_eq!(before.dropped_since(&after), 0, "a reset counts nothing");
        let drops_only = |n| TcpExt {
            listen_drops: Some(n),
            ..TcpExt::default()
        };
        assert_eq!(drops_only(5).dropped_since(&drops_only(2)), 3);
    }

    #[test]
    fn the_fixture_proc_root_is_read() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/proc");
        let t = read_tcpext(&root).unwrap();
        assert_eq!(t.listen_overflows, Some(37));
        assert!(read_tcpext(Path::new("/nonexistent")).is_err());
    }
}
