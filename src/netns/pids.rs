//! The pids of `<proc_root>`: the whole listing, or only the processes
//! started since the last walk.
//!
//! `/proc`'s directory offset of process N is N + [`TGID_OFFSET`]
//! (`fs/proc/base.c`: 256 offsets for `/proc`'s own entries, then `self`
//! and `thread-self`), and the kernel finds the first process from there in
//! its pid tree: seeking there lists the processes from N on without
//! visiting the others. Pids are handed out upward from the last one
//! (`sys/kernel/ns_last_pid`, of the reader's PID namespace) and wrap at
//! `pid_max`, so the processes started since the last walk are those listed
//! from its `ns_last_pid` + 1 on, unless the number went down (a wrap: then
//! everything is listed). A pid set by hand below the last (CRIU's
//! `clone3` `set_tid`, a write to `ns_last_pid`) is not seen this way; the
//! walk's full listings find it ([`super::find::FULL_WALK_EVERY`]).
//!
//! [`Allocated`] is used only where it was checked: the mount's PID
//! namespace is portsight's (so `ns_last_pid` and `kill` speak of its
//! pids), and seeking to portsight's own pid lists that pid first. A
//! fixture tree, or a kernel that numbers `/proc` otherwise, is listed
//! whole every time.

use std::fs::File;
use std::io::{self, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::Path;

use nix::errno::Errno;
use nix::sys::signal::kill;
use nix::unistd::Pid;

use super::Error;

/// `FIRST_PROCESS_ENTRY + 2` in `fs/proc/base.c`.
pub const TGID_OFFSET: u64 = 258;

/// The pids `<proc_root>` lists.
pub fn list(proc_root: &Path) -> Result<Vec<u32>, Error> {
    let entries = std::fs::read_dir(proc_root).map_err(|source| Error::Read {
        path: proc_root.to_path_buf(),
        source,
    })?;
    Ok(entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect())
}

/// The pids `<proc_root>` lists from `pid` on (see the module's text).
pub fn list_from(proc_root: &Path, pid: u32) -> io::Result<Vec<u32>> {
    let mut dir = File::open(proc_root)?;
    dir.seek(SeekFrom::Start(TGID_OFFSET + u64::from(pid)))?;
    let dir = nix::dir::Dir::from_fd(dir.into())?;
    Ok(dir
        .into_iter()
        .filter_map(|e| e.ok()?.file_name().to_str().ok()?.parse().ok())
        .collect())
}

/// Whether process `pid` (of portsight's PID namespace) still exists; a
/// zombie does until it is reaped.
pub fn alive(pid: u32) -> bool {
    match i32::try_from(pid) {
        Ok(raw) if raw > 0 => !matches!(kill(Pid::from_raw(raw), None), Err(Errno::ESRCH)),
        _ => false,
    }
}

/// What is new since the last walk.
#[derive(Debug, PartialEq, Eq)]
pub enum New {
    /// No process was started.
    Nothing,
    /// The processes from this pid on.
    From(u32),
    /// The numbers wrapped: list them all.
    All,
}

/// The last pid handed out as of the last walk, and the file that says.
#[derive(Debug)]
pub struct Allocated {
    last_pid: File,
    last: u32,
}

impl Allocated {
    /// `None` where listing from a pid cannot be trusted (see the module's
    /// text). Call it before listing: what starts after is new next time.
    pub fn open(proc_root: &Path) -> Option<Allocated> {
        let pid_ns = |path: &str| {
            std::fs::read_link(proc_root.join(path))
                .ok()
                .filter(|t| t.to_string_lossy().starts_with("pid:["))
        };
        let ours = pid_ns("self/ns/pid")?;
        if pid_ns("1/ns/pid")? != ours {
            return None;
        }
        let own: u32 = std::fs::read_link(proc_root.join("self"))
            .ok()?
            .to_str()?
            .parse()
            .ok()?;
        if list_from(proc_root, own).ok()?.first() != Some(&own) {
            return None;
        }
        let last_pid = File::open(proc_root.join("sys/kernel/ns_last_pid")).ok()?;
        let last = read_number(&last_pid).ok()?;
        Some(Allocated { last_pid, last })
    }

    /// Reads the last pid handed out and says what is new since the last
    /// call.
    pub fn advance(&mut self) -> io::Result<New> {
        let now = read_number(&self.last_pid)?;
        let before = std::mem::replace(&mut self.last, now);
        Ok(match now.cmp(&before) {
            std::cmp::Ordering::Equal => New::Nothing,
            std::cmp::Ordering::Greater => New::From(before.saturating_add(1)),
            std::cmp::Ordering::Less => New::All,
        })
    }
}

fn read_number(file: &File) -> io::Result<u32> {
    let mut buf = [0u8; 16];
    let n = file.read_at(&mut buf, 0)?;
    std::str::from_utf8(&buf[..n])
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "ns_last_pid is not a number"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// On this machine's `/proc`: listing from a pid gives that pid first
    /// and only pids from it on. Only pids are read.
    #[test]
    fn listing_from_a_pid() {
        let own = std::process::id();
        let from = list_from(Path::new("/proc"), own).unwrap();
        assert_eq!(from.first(), Some(&own));
        assert!(from.iter().all(|&p| p >= own), "{from:?}");
        assert!(alive(own));
        assert!(!alive(0), "pid 0 is not a process (kill(0) is the group)");
    }

    /// [`started_since_open_in_a_pid_namespace`] inside a PID namespace of
    /// its own with its own `/proc` (`unshare --pid --fork --mount-proc`),
    /// where PID 1's links can be read: [`Allocated`] needs that.
    #[test]
    fn allocated_in_a_pid_namespace_of_its_own() {
        if !crate::test_is_root("needs root for unshare --pid") {
            return;
        }
        let out = std::process::Command::new("unshare")
            .args(["--pid", "--fork", "--mount-proc", "--kill-child"])
            .arg(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "netns::pids::tests::started_since_open_in_a_pid_namespace",
                "--ignored",
                "--nocapture",
            ])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(text.contains("1 passed"), "{text}");
    }

    /// A process started after `open` is new at the next `advance` and
    /// listed from where it says; once reaped it is not alive.
    #[test]
    #[ignore = "run inside a PID namespace by allocated_in_a_pid_namespace_of_its_own"]
    fn started_since_open_in_a_pid_namespace() {
        let proc_root = Path::new("/proc");
        let mut allocated = Allocated::open(proc_root).expect("checked in a PID namespace");
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pid = child.id();
        let new = allocated.advance().unwrap();
        let New::From(from) = new else {
            panic!("{new:?} after starting {pid}");
        };
        assert!(from <= pid);
        assert!(list_from(proc_root, from).unwrap().contains(&pid));
        assert!(alive(pid));
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(!alive(pid), "reaped");
    }
}
