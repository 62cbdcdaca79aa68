//! Which process owns a listening socket: the process holding a file
//! descriptor that links to `socket:[<inode>]` under `<proc_root>/<pid>/fd`.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::path::PathBuf;

use super::{Listener, Owner};

/// The inode in a `/proc/<pid>/fd/<n>` link target: `socket:[12345]` → 12345.
pub fn parse_socket_link(target: &str) -> Option<u64> {
    let inode = target.strip_prefix("socket:[")?.strip_suffix(']')?;
    if inode.is_empty() || !inode.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    inode.parse().ok()
}

/// Resolves listener inodes to their owning processes, with a cache so that
/// `/proc/*/fd` is walked only when a listener the cache does not know
/// appears.
///
/// The name comes from `<proc_root>/<pid>/comm` rather than from `sysinfo`'s
/// process list: it honours the configurable proc root (fixture tests), and
/// reads one small file per owner instead of refreshing every process.
///
/// Where several processes share a socket (a pre-fork server), the lowest
/// pid is reported, usually the parent that opened it. Unreadable entries
/// (permissions, processes exiting during the walk) are skipped; a socket
/// whose owner cannot be seen gets `None`, and that answer is cached too.
#[derive(Debug)]
pub struct Owners {
    proc_root: PathBuf,
    cache: HashMap<u64, Option<Owner>>,
    walks: u64,
    /// False when the last walk missed an owner and permissions hid some
    /// process's descriptors: the owners it did not find may exist.
    complete: bool,
}

impl Owners {
    pub fn new(proc_root: PathBuf) -> Self {
        Owners {
            proc_root,
            cache: HashMap::new(),
            walks: 0,
            complete: true,
        }
    }

    /// Sets `owner` on every listener. Forgets inodes that are no longer
    /// among `listeners`, so give it every socket of a scan at once (the
    /// host's and the other namespaces'): one call per part would walk
    /// `/proc` for each.
    pub fn fill<'a>(&mut self, listeners: impl IntoIterator<Item = &'a mut Listener>) {
        let mut listeners: Vec<&mut Listener> = listeners.into_iter().collect();
        let current: HashSet<u64> = listeners.iter().map(|l| l.inode).collect();
        self.cache.retain(|inode, _| current.contains(inode));
        let missing: HashSet<u64> = current
            .iter()
            .copied()
            .filter(|inode| !self.cache.contains_key(inode))
            .collect();
        if !missing.is_empty() {
            let found = self.walk(&missing);
            for inode in missing {
                let owner = found.get(&inode).and_then(|&pid| self.owner(pid));
                self.cache.insert(inode, owner);
            }
        }
        for listener in listeners.iter_mut() {
            listener.owner = self.cache.get(&listener.inode).cloned().flatten();
        }
    }

    /// Whether every owner looked for could be looked for: no permission
    /// hid the descriptors of a process that may hold a missing one.
    pub fn complete(&self) -> bool {
        self.complete
    }

    /// How many times `/proc/*/fd` has been walked.
    pub fn walks(&self) -> u64 {
        self.walks
    }

    /// Maps each of `wanted` to the lowest pid holding it. Stops once all are
    /// found.
    fn walk(&mut self, wanted: &HashSet<u64>) -> HashMap<u64, u32> {
        self.walks += 1;
        let mut found = HashMap::new();
        let Ok(entries) = fs::read_dir(&self.proc_root) else {
            self.complete = false;
            return found;
        };
        let mut denied = false;
        let mut pids: Vec<u32> = entries
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .collect();
        pids.sort_unstable();
        for pid in pids {
            let fds = match fs::read_dir(self.proc_root.join(pid.to_string()).join("fd")) {
                Ok(fds) => fds,
                Err(e) => {
                    // A process that exited meanwhile hides nothing.
                    denied |= e.kind() == std::io::ErrorKind::PermissionDenied;
                    continue;
                }
            };
            for fd in fds.flatten() {
                // With CAP_DAC_READ_SEARCH alone the list is readable but
                // the links are not (they need CAP_SYS_PTRACE).
                let target = match fs::read_link(fd.path()) {
                    Ok(target) => target,
                    Err(e) => {
                        denied |= e.kind() == std::io::ErrorKind::PermissionDenied;
                        continue;
                    }
                };
                match target.to_str().and_then(parse_socket_link) {
                    Some(inode) if wanted.contains(&inode) => {
                        found.entry(inode).or_insert(pid);
                    }
                    _ => {}
                }
            }
            if found.len() == wanted.len() {
                break;
            }
        }
        self.complete = found.len() == wanted.len() || !denied;
        found
    }

    fn owner(&self, pid: u32) -> Option<Owner> {
        let comm = fs::read_to_string(self.proc_root.join(pid.to_string()).join("comm")).ok()?;
        Some(Owner {
            pid,
            name: comm.trim().to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;
    use std::path::Path;

    use super::*;
    use crate::sockets::{Family, netlink, procfs};

    fn fixture_root() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/proc")
    }

    fn listener(inode: u64) -> Listener {
        Listener {
            address: "127.0.0.1".parse().unwrap(),
            port: 8080,
            protocol: crate::config::Protocol::Tcp,
            family: Family::Ipv4,
            v6only: None,
            accept_queue_length: 0,
            accept_queue_limit: None,
            inode,
            owner: None,
            netns: crate::netns::NsId::OWN,
        }
    }

    fn owner(pid: u32, name: &str) -> Option<Owner> {
        Some(Owner {
            pid,
            name: name.into(),
        })
    }

    #[test]
    fn socket_links() {
        assert_eq!(parse_socket_link("socket:[12345]"), Some(12345));
        assert_eq!(parse_socket_link("socket:[0]"), Some(0));
        assert_eq!(parse_socket_link("socket:[]"), None);
        assert_eq!(parse_socket_link("socket:[+1]"), None);
        assert_eq!(parse_socket_link("socket:[12345"), None);
        assert_eq!(parse_socket_link("pipe:[12345]"), None);
        assert_eq!(parse_socket_link("/dev/null"), None);
        assert_eq!(parse_socket_link("socket:[99999999999999999999]"), None);
    }

    #[test]
    fn fixture_owners() {
        let mut owners = Owners::new(fixture_root());
        let mut ls = vec![
            listener(31337),
            listener(20001),
            listener(20003),
            listener(20002),
        ];
        owners.fill(&mut ls);
        let got: Vec<_> = ls.iter().map(|l| l.owner.clone()).collect();
        assert_eq!(
            got,
            vec![
                owner(1234, "webd"),
                owner(5678, "sshd"),
                owner(5678, "sshd"),
                None
            ]
        );
    }

    #[test]
    fn fixture_listeners_from_procfs() {
        let mut ls = procfs::read_listeners(&fixture_root()).unwrap();
        Owners::new(fixture_root()).fill(&mut ls);
        let named: Vec<_> = ls
            .iter()
            .filter_map(|l| Some((l.address.to_string(), l.port, l.owner.clone()?.name)))
            .collect();
        assert_eq!(
            named,
            vec![
                ("127.0.0.1".to_string(), 8080, "webd".to_string()),
                ("0.0.0.0".to_string(), 22, "sshd".to_string()),
                ("::".to_string(), 22, "sshd".to_string()),
            ]
        );
    }

    #[test]
    fn walks_only_when_the_listener_set_changes() {
        let mut owners = Owners::new(fixture_root());
        let mut ls = vec![listener(31337), listener(20002)];
        owners.fill(&mut ls);
        assert_eq!(owners.walks(), 1);
        // Same set, an unowned inode included: no new walk.
        owners.fill(&mut ls);
        owners.fill(&mut ls);
        assert_eq!(owners.walks(), 1);
        assert_eq!(ls[0].owner, owner(1234, "webd"));
        assert_eq!(ls[1].owner, None);
        // A new listener: one walk.
        let mut ls = vec![listener(31337), listener(20001)];
        owners.fill(&mut ls);
        assert_eq!(owners.walks(), 2);
        assert_eq!(ls[1].owner, owner(5678, "sshd"));
        // 20002 was dropped from the cache, so it is looked up again.
        let mut ls = vec![listener(20002)];
        owners.fill(&mut ls);
        assert_eq!(owners.walks(), 3);
        // Fewer listeners than before: nothing to look up.
        let mut ls: Vec<Listener> = vec![];
        owners.fill(&mut ls);
        assert_eq!(owners.walks(), 3);
    }

    #[test]
    fn missing_proc_root_gives_no_owner() {
        let mut owners = Owners::new(PathBuf::from("/nonexistent/portsight"));
        let mut ls = vec![listener(31337)];
        owners.fill(&mut ls);
        assert_eq!(ls[0].owner, None);
    }

    /// Against the running kernel: our own listener is ours.
    #[test]
    fn real_listener_is_owned_by_this_process() {
        let server = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = server.local_addr().unwrap().port();
        let mut ls: Vec<_> = netlink::dump_listeners()
            .or_else(|_| procfs::read_listeners(Path::new("/proc")))
            .unwrap()
            .into_iter()
            .filter(|l| l.port == port)
            .collect();
        assert_eq!(ls.len(), 1);
        Owners::new(PathBuf::from("/proc")).fill(&mut ls);
        let owner = ls[0].owner.clone().expect("owner found");
        assert_eq!(owner.pid, std::process::id());
        assert!(!owner.name.is_empty());
    }
}
