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

/// The connection-tracking table: how full it is, and its drop counters
/// summed over CPUs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Conntrack {
    pub count: u64,
    pub max: u64,
    /// `drop` + `early_drop` + `insert_failed` of `net/stat/nf_conntrack`,
    /// summed over every CPU's line.
    pub dropped: u64,
}

impl Conntrack {
    pub fn full(&self) -> bool {
        self.max > 0 && self.count >= self.max
    }
}

/// Reads `<proc_root>/sys/net/netfilter/nf_conntrack_{count,max}` and
/// `<proc_root>/net/stat/nf_conntrack`. `None` without conntrack (the
/// module not loaded: nothing is tracked, nothing can fill).
pub fn read_conntrack(proc_root: &Path) -> Option<Conntrack> {
    let number = |p: &str| -> Option<u64> {
        std::fs::read_to_string(proc_root.join(p))
            .ok()?
            .trim()
            .parse()
            .ok()
    };
    let count = number("sys/net/netfilter/nf_conntrack_count")?;
    let max = number("sys/net/netfilter/nf_conntrack_max")?;
    let stat = std::fs::read_to_string(proc_root.join("net/stat/nf_conntrack")).unwrap_or_default();
    Some(Conntrack {
        count,
        max,
        dropped: parse_conntrack_stat(&stat),
    })
}

/// `drop` + `early_drop` + `insert_failed` of the text of
/// `/proc/net/stat/nf_conntrack`: a header of names, then one line of hex
/// values per CPU; fields by name.
pub fn parse_conntrack_stat(text: &str) -> u64 {
    let mut lines = text.lines();
    let Some(header) = lines.next() else {
        return 0;
    };
    let names: Vec<&str> = header.split_whitespace().collect();
    let wanted: Vec<usize> = names
        .iter()
        .enumerate()
        .filter(|(_, n)| matches!(**n, "drop" | "early_drop" | "insert_failed"))
        .map(|(i, _)| i)
        .collect();
    lines
        .map(|line| {
            let values: Vec<&str> = line.split_whitespace().collect();
            wanted
                .iter()
                .filter_map(|&i| values.get(i))
                .filter_map(|v| u64::from_str_radix(v, 16).ok())
                .fold(0u64, u64::saturating_add)
        })
        .fold(0u64, u64::saturating_add)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conntrack_drops_summed_over_cpus_by_name() {
        let stat = "entries  clashres found new invalid ignore delete chainlength insert insert_failed drop early_drop icmp_error\n\
                    00000010  00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000001 0000000a 00000002 00000000\n\
                    00000010  00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000010 00000000 00000000\n";
        assert_eq!(parse_conntrack_stat(stat), 1 + 10 + 2 + 16);
        assert_eq!(parse_conntrack_stat(""), 0);
        assert_eq!(parse_conntrack_stat("drop\nzz\n"), 0);
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/proc");
        let ct = read_conntrack(&root).unwrap();
        assert_eq!(
            ct,
            Conntrack {
                count: 262144,
                max: 262144,
                dropped: 0x25 + 0x3
            }
        );
        assert!(ct.full());
        assert_eq!(read_conntrack(Path::new("/nonexistent")), None);
    }

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
