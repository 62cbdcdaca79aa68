//! This process's file descriptor limit (`RLIMIT_NOFILE`): raised to the
//! hard limit at start (as the Go runtime does since Go 1.19), and read to
//! size the HTTP connection limit so that probes and scans keep a reserve.

use nix::sys::resource::{Resource, getrlimit, setrlimit};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("RLIMIT_NOFILE: {0}")]
    Rlimit(#[from] nix::Error),
}

/// Raises the soft descriptor limit to the hard one; returns the soft limit
/// before and after. systemd's default soft limit is 1,024 (for `select()`
/// users), far below what a server with many connections and probes needs.
pub fn raise_to_hard_limit() -> Result<(u64, u64), Error> {
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard)?;
    }
    Ok((soft, soft_limit()))
}

/// The current soft descriptor limit (1,024 if it cannot be read).
pub fn soft_limit() -> u64 {
    getrlimit(Resource::RLIMIT_NOFILE).map_or(1024, |(soft, _)| soft)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_soft_limit_ends_at_the_hard_limit() {
        let (_, after) = raise_to_hard_limit().unwrap();
        let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
        assert_eq!((after, soft), (hard, hard));
    }
}
