//! Reading the ruleset, read-only: `nft -j list ruleset` for its structure
//! and `nft -a list ruleset` for each rule's text, cached by the ruleset's
//! generation (nfnetlink's `NFT_MSG_GETGEN`, one small message), so that it
//! is read again only after a change.
//!
//! Why the `nft` binary and not netlink for the ruleset itself: over
//! netlink the rules are the kernel's bytecode (payload offsets, registers,
//! lookups); turning that back into `tcp dport 8080 reject` is what
//! libnftables' decompiler does, and the text a person recognises is
//! exactly what `nft` prints. The binary is run only when a port fails and
//! the generation has changed.

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Error, Ruleset, ruleset, text, xt};

/// Without a generation (no netlink answer), a read is kept this long.
const TTL: Duration = Duration::from_secs(10);

/// The cached ruleset and what it was read under.
#[derive(Debug, Default)]
pub struct Reader {
    cached: Option<(Stamp, Arc<Ruleset>)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stamp {
    Generation(u32),
    ReadAt(Instant),
}

impl Reader {
    /// The current ruleset: the cached one while the generation is the
    /// same, else read anew (twice at most, when it changed meanwhile).
    pub fn current(&mut self) -> Result<Arc<Ruleset>, Error> {
        let before = generation().ok();
        if let Some((stamp, rs)) = &self.cached {
            let fresh = match (*stamp, before) {
                (Stamp::Generation(g), Some(now)) => g == now,
                (Stamp::ReadAt(at), None) => at.elapsed() < TTL,
                _ => false,
            };
            if fresh {
                return Ok(Arc::clone(rs));
            }
        }
        let mut rs = read_once()?;
        let mut stamp = before;
        if before.is_some() && generation().ok() != before {
            rs = read_once()?;
            stamp = generation().ok();
        }
        let rs = Arc::new(rs);
        let stamp = stamp.map_or_else(|| Stamp::ReadAt(Instant::now()), Stamp::Generation);
        self.cached = Some((stamp, Arc::clone(&rs)));
        Ok(rs)
    }

    /// Whether the ruleset can be read at all (privilege, an nftables
    /// kernel, an `nft` to read it with): the generation answers, cheaply,
    /// and `nft` is on `PATH` (without it the scan's reads fail, and the
    /// source would say 0 and 1 by turns).
    pub fn available() -> Result<(), Error> {
        let path = std::env::var_os("PATH").unwrap_or_default();
        if !on_path(&path, "nft") {
            return Err(Error::Spawn("nft: not found on PATH".into()));
        }
        generation().map(|_| ())
    }
}

/// An executable file `name` in one of the directories of `path`.
fn on_path(path: &std::ffi::OsStr, name: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::env::split_paths(path).any(|dir| {
        std::fs::metadata(dir.join(name))
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    })
}

/// `nft ARGS`: its output and its warnings (stderr, of a run that succeeded).
fn nft(args: &[&str]) -> Result<(Vec<u8>, String), Error> {
    let out = Command::new("nft")
        .args(args)
        .output()
        .map_err(|e| Error::Spawn(e.to_string()))?;
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    if !out.status.success() {
        return Err(Error::Nft(err.trim().to_string()));
    }
    Ok((out.stdout, err))
}

fn read_once() -> Result<Ruleset, Error> {
    let (json, _) = nft(&["-j", "list", "ruleset"])?;
    // nft prints "# Warning: table ip filter is managed by iptables-nft"
    // on stderr: the text is read with its warnings.
    let (txt, warnings) = nft(&["-a", "list", "ruleset"])?;
    let txt = format!("{warnings}\n{}", String::from_utf8_lossy(&txt));
    Ok(with_text(ruleset::parse(&json)?, &txt))
}

/// The ruleset with each rule's text and the iptables-nft tables, and the
/// `xt` statements of iptables-nft's rules interpreted from that text.
pub fn with_text(mut rs: Ruleset, txt: &str) -> Ruleset {
    let t = text::parse(txt);
    rs.text = t.rules;
    rs.iptables = t.iptables;
    xt::interpret(&mut rs);
    rs
}

/// nfnetlink: subsystem nftables (10), `NFT_MSG_GETGEN` (16).
const GETGEN: u16 = (10 << 8) | 16;
const NLMSG_ERROR: u16 = 2;
const NFTA_GEN_ID: u16 = 1;

/// The ruleset's generation, bumped by the kernel on every change.
fn generation() -> Result<u32, Error> {
    use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_NETFILTER};
    let io = |e: std::io::Error| Error::Nft(format!("netlink: {e}"));
    let mut socket = Socket::new(NETLINK_NETFILTER).map_err(io)?;
    socket.bind_auto().map_err(io)?;
    socket.connect(&SocketAddr::new(0, 0)).map_err(io)?;
    let mut msg = Vec::with_capacity(20);
    msg.extend_from_slice(&20u32.to_ne_bytes());
    msg.extend_from_slice(&GETGEN.to_ne_bytes());
    msg.extend_from_slice(&1u16.to_ne_bytes()); // NLM_F_REQUEST
    msg.extend_from_slice(&1u32.to_ne_bytes()); // sequence
    msg.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel's
    msg.extend_from_slice(&[0, 0, 0, 0]); // nfgenmsg: AF_UNSPEC, version 0, res_id 0
    socket.send(&msg, 0).map_err(io)?;
    let mut buf = Vec::with_capacity(4096);
    socket.recv(&mut buf, 0).map_err(io)?;
    parse_generation(&buf)
}

/// The generation in a reply to `NFT_MSG_GETGEN`.
fn parse_generation(buf: &[u8]) -> Result<u32, Error> {
    let bad = || Error::Nft("netlink: a short or odd answer to GETGEN".into());
    let u16_at = |i: usize| buf.get(i..i + 2).map(|b| u16::from_ne_bytes([b[0], b[1]]));
    let kind = u16_at(4).ok_or_else(bad)?;
    if kind == NLMSG_ERROR {
        let code = buf.get(16..20).ok_or_else(bad)?;
        let errno = -i32::from_ne_bytes([code[0], code[1], code[2], code[3]]);
        return Err(Error::Nft(format!(
            "netlink: {}",
            std::io::Error::from_raw_os_error(errno)
        )));
    }
    // Header (16), nfgenmsg (4), then attributes.
    let mut i = 20;
    while let (Some(len), Some(kind)) = (u16_at(i), u16_at(i + 2)) {
        let len = usize::from(len);
        if len < 4 {
            break;
        }
        if kind & 0x3fff == NFTA_GEN_ID
            && let Some(b) = buf.get(i + 4..i + 8)
        {
            return Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
        }
        i += (len + 3) & !3;
    }
    Err(bad())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nft_is_looked_for_as_an_executable_file_on_path() {
        use std::os::unix::fs::PermissionsExt;
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let path = std::env::join_paths([a.path(), b.path()]).unwrap();
        assert!(!on_path(&path, "nft"));
        let nft = b.path().join("nft");
        std::fs::write(&nft, "").unwrap();
        assert!(!on_path(&path, "nft"), "not executable");
        std::fs::set_permissions(&nft, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert!(on_path(&path, "nft"));
        std::fs::create_dir(a.path().join("nft")).unwrap();
        assert!(on_path(&path, "nft"), "a directory is skipped");
    }

    fn reply(attrs: &[u8]) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&((20 + attrs.len()) as u32).to_ne_bytes());
        b.extend_from_slice(&GETGEN.to_ne_bytes());
        b.extend_from_slice(&[0; 10]);
        b.extend_from_slice(&[0; 4]);
        b.extend_from_slice(attrs);
        b
    }

    #[test]
    fn the_generation_is_read_from_its_attribute() {
        let mut attrs = Vec::new();
        attrs.extend_from_slice(&8u16.to_ne_bytes());
        attrs.extend_from_slice(&NFTA_GEN_ID.to_ne_bytes());
        attrs.extend_from_slice(&42u32.to_be_bytes());
        assert_eq!(parse_generation(&reply(&attrs)), Ok(42));
        assert!(parse_generation(&reply(&[])).is_err());
        assert!(parse_generation(&[1, 2, 3]).is_err());
    }

    #[test]
    fn a_netlink_error_is_named() {
        let mut b = Vec::new();
        b.extend_from_slice(&36u32.to_ne_bytes());
        b.extend_from_slice(&NLMSG_ERROR.to_ne_bytes());
        b.extend_from_slice(&[0; 10]);
        b.extend_from_slice(&(-1i32).to_ne_bytes());
        let err = parse_generation(&b).unwrap_err().to_string();
        assert!(err.contains("not permitted"), "{err}");
    }
}
