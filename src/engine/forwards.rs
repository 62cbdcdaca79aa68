//! The forwards of the host's ports, for every scan: the nat table's DNAT
//! and redirect rules (computed once per ruleset generation: the reader
//! hands out the same ruleset until it changes) and the userland proxies
//! among the processes.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::forward::{self, HostPort};
use crate::netfilter::{self, Ruleset};
use crate::sockets::{Listener, proxy};

use super::state::Forward;
use super::watch::PortKey;

/// The ruleset's reader and the forwards of the ruleset it read last; the
/// proxy (or not) each process is, by pid.
#[derive(Default)]
pub struct Forwards {
    reader: netfilter::Reader,
    last: Option<(Arc<Ruleset>, Vec<Forward>)>,
    /// Each process's proxy (or `None`), and how many scans read it.
    processes: HashMap<u32, (Option<Forward>, u8)>,
    /// The host's sockets (inode, owner) of the last scan, sorted.
    sockets: Vec<(u64, Option<u32>)>,
    /// When reading the ruleset last failed: it is not tried again for
    /// [`RETRY`] (no privilege, no `nft`: one `nft` run per scan would cost
    /// more than the rest of the scan).
    failed_at: Option<Instant>,
}

const RETRY: Duration = Duration::from_secs(30);

impl Forwards {
    /// The forwards now, and whether the ruleset could be read (without
    /// it, only the proxies'). `owners_complete`: no process's descriptors
    /// were hidden when owners were looked for ([`crate::sockets::process::Owners::complete`]).
    /// Blocking.
    pub fn read(
        &mut self,
        proc_root: &Path,
        listeners: &[Listener],
        owners_complete: bool,
    ) -> (Vec<Forward>, bool) {
        if self.failed_at.is_some_and(|at| at.elapsed() < RETRY) {
            return (self.proxies(proc_root, listeners, owners_complete), false);
        }
        let (mut out, up) = match self.reader.current() {
            Ok(rs) => {
                if !self.last.as_ref().is_some_and(|(r, _)| Arc::ptr_eq(r, &rs)) {
                    let found = netfilter::forwards::forwards(&rs);
                    let mapped = found.iter().filter_map(mapped).collect();
                    self.last = Some((rs, mapped));
                }
                self.failed_at = None;
                (
                    self.last.as_ref().map_or_else(Vec::new, |(_, f)| f.clone()),
                    true,
                )
            }
            Err(e) => {
                tracing::debug!(error = %e, "no forwards from the nat table");
                self.last = None;
                self.failed_at = Some(Instant::now());
                (Vec::new(), false)
            }
        };
        out.extend(self.proxies(proc_root, listeners, owners_complete));
        (out, up)
    }

    /// The proxies among the processes: a process's command line is read
    /// in the first two scans that see its pid (a process seen between
    /// `fork` and `exec` still shows its parent's), then kept. Processes
    /// that are gone are forgotten.
    ///
    /// A proxy forwards only through a socket of its own in the host's
    /// namespace (`listeners`: it listens on, or binds, the host port).
    /// So the processes looked at are the sockets' owners, and nothing is
    /// listed: a socat inside a container, or one not bound yet, forwards
    /// no host port. The owner of a socket new since the last scan is read
    /// again whatever its count: its pid may have been another process's
    /// when it was read. A socket without an owner where every process's
    /// descriptors could be read has none portsight can see (a kernel
    /// socket: nfsd's, WireGuard's; or a process of another PID
    /// namespace). Only where permissions hid some process's descriptors
    /// and a socket's owner is missing is every process listed, every scan.
    fn proxies(
        &mut self,
        proc_root: &Path,
        listeners: &[Listener],
        owners_complete: bool,
    ) -> Vec<Forward> {
        let mut sockets: Vec<(u64, Option<u32>)> = listeners
            .iter()
            .filter(|l| l.netns.is_own())
            .map(|l| (l.inode, l.owner.as_ref().map(|o| o.pid)))
            .collect();
        sockets.sort_unstable();
        let fresh: HashSet<u32> = sockets
            .iter()
            .filter(|s| self.sockets.binary_search(s).is_err())
            .filter_map(|(_, pid)| *pid)
            .collect();
        let pids: HashSet<u32> = if owners_complete || sockets.iter().all(|(_, pid)| pid.is_some())
        {
            sockets.iter().filter_map(|(_, pid)| *pid).collect()
        } else {
            proxy::pids(proc_root).into_iter().collect()
        };
        self.processes.retain(|pid, _| pids.contains(pid));
        for &pid in &pids {
            let entry = self.processes.entry(pid).or_insert((None, 0));
            if fresh.contains(&pid) {
                entry.1 = 0;
            }
            if entry.1 < 2 {
                entry.0 = proxy::of(proc_root, pid).as_ref().and_then(mapped);
                entry.1 += 1;
            }
        }
        self.sockets = sockets;
        let mut out: Vec<Forward> = self
            .processes
            .values()
            .filter_map(|(f, _)| f.clone())
            .collect();
        out.sort_by_key(|f| (f.key, f.backend));
        out
    }
}

/// A forward of one host port to one known backend, as the state keeps it.
/// Ranges forwarded port for port, and targets portsight could not read,
/// are left out: they name no backend to look at.
fn mapped(f: &forward::Forward) -> Option<Forward> {
    let HostPort::One(port) = f.port else {
        return None;
    };
    let rule = match (&f.rule, &f.process, f.pid) {
        (Some(rule), _, _) => Some(rule.clone()),
        (None, Some(process), Some(pid)) => Some(format!("{process} (pid {pid})")),
        _ => None,
    };
    Some(Forward {
        key: PortKey {
            protocol: f.protocol,
            ..PortKey::tcp(port)
        },
        via: f.via.as_str(),
        backend: f.backend()?,
        rule,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn process(root: &Path, pid: u32, cmdline: &str) {
        let dir = root.join(pid.to_string());
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("cmdline"), cmdline.replace(' ', "\0")).unwrap();
    }

    /// A socket of the host owned by `pid`.
    fn socket(inode: u64, pid: u32) -> Listener {
        Listener {
            inode,
            owner: Some(crate::sockets::Owner {
                pid,
                name: String::new(),
            }),
            ..Listener::on("0.0.0.0".parse().unwrap(), 8080)
        }
    }

    #[test]
    fn a_proxy_is_read_in_its_first_two_scans_then_kept_until_its_socket_goes() {
        let root = tempfile::tempdir().unwrap();
        let root = root.path();
        // Seen between fork and exec: the parent's command line first.
        process(root, 41, "sh -c x");
        process(root, 7, "sleep 600");
        let listening = [socket(5, 7), socket(9, 41)];
        let mut f = Forwards::default();
        assert!(f.proxies(root, &listening, true).is_empty());
        process(root, 41, "socat TCP-LISTEN:8080,fork TCP:10.77.50.2:80");
        let found = f.proxies(root, &listening, true);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].key, PortKey::tcp(8080));
        assert_eq!(found[0].backend, "10.77.50.2:80".parse().unwrap());
        // Read twice: kept without reading again (its directory could go).
        process(root, 41, "sleep 1");
        assert_eq!(f.proxies(root, &listening, true).len(), 1);
        std::fs::remove_dir_all(root.join("41")).unwrap();
        assert_eq!(f.proxies(root, &listening, true).len(), 1);
        assert!(
            f.proxies(root, &listening[..1], true).is_empty(),
            "a process whose socket is gone is forgotten"
        );
        // Pid 7 was read twice as `sleep`; a proxy that got the pid later
        // is read again through its new socket.
        process(
            root,
            7,
            "docker-proxy -proto tcp -host-ip 0.0.0.0 -host-port 8080 -container-ip 10.77.50.4 -container-port 80",
        );
        let found = f.proxies(root, &[socket(10, 7)], true);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].backend, "10.77.50.4:80".parse().unwrap());
    }

    /// A socat that owns no socket of the host (in a container, or not
    /// bound yet) forwards no host port.
    #[test]
    fn only_a_proxy_that_owns_a_host_socket_forwards_a_host_port() {
        let root = tempfile::tempdir().unwrap();
        let root = root.path();
        process(root, 41, "sleep 600");
        process(root, 50, "socat TCP-LISTEN:9000,fork TCP:10.77.50.3:5432");
        let mut f = Forwards::default();
        for _ in 0..3 {
            assert!(f.proxies(root, &[socket(9, 41)], true).is_empty());
        }
        let found = f.proxies(root, &[socket(9, 41), socket(11, 50)], true);
        assert_eq!(found.len(), 1, "bound now: {found:?}");
    }

    #[test]
    fn an_owner_hidden_by_permissions_makes_every_process_listed_at_every_scan() {
        let root = tempfile::tempdir().unwrap();
        let root = root.path();
        let unowned = [Listener {
            inode: 9,
            ..Listener::on("0.0.0.0".parse().unwrap(), 8080)
        }];
        let mut f = Forwards::default();
        for _ in 0..3 {
            assert!(f.proxies(root, &unowned, false).is_empty());
        }
        process(root, 41, "socat TCP-LISTEN:8080,fork TCP:10.77.50.2:80");
        assert_eq!(f.proxies(root, &unowned, false).len(), 1);
        // With every process's descriptors read, the socket has no owner
        // to see (a kernel socket): nothing is listed.
        let mut f = Forwards::default();
        assert!(f.proxies(root, &unowned, true).is_empty());
    }
}
