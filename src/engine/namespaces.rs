//! The scan of the host's other network namespaces (containers, pods):
//! their socket tables, addresses and ephemeral ranges, read through a
//! [`Reader`] the [`netns::Worker`] thread makes inside each once, and the
//! sockets that probes of their ports are sent from.

use std::collections::HashMap;
use std::fs::File;
use std::os::fd::OwnedFd;

use crate::config::{Config, Protocol};
use crate::netns::{self, Namespace, NsId, Roots, Worker, worker::Job};
use crate::probe::Target;
use crate::sockets::interfaces::AddressReader;
use crate::sockets::netlink::Dumper;

use super::state::NsScan;
use super::watch;

/// The namespace scan's thread and what it keeps between scans.
#[derive(Default)]
pub struct Namespaces {
    worker: Option<Worker>,
    /// The inode of each namespace, as of the last scan, by name.
    inodes: HashMap<NsId, u64>,
    /// Why the last scan read no namespace, logged once per change.
    off: Option<String>,
    /// The processes' namespaces as of the last scans.
    known: netns::Known,
    /// Each namespace's [`Reader`], by inode.
    readers: HashMap<u64, Reader>,
}

/// What one namespace is read with, made inside it by the first scan that
/// reads it and kept while it is seen: its sock_diag socket and socket
/// counts, a route socket for its addresses, and its `ip_local_port_range`
/// (a `/proc/sys/net` file shows the namespace it was opened in). Netlink
/// sockets and those files stay with their namespace, so later scans read
/// it from any thread without entering it; they keep it, as its handle
/// does, so its inode is not reused meanwhile.
struct Reader {
    dumper: Dumper,
    addresses: AddressReader,
    /// `None` where it cannot be opened: Linux's default range.
    ephemeral: Option<File>,
}

impl Reader {
    /// Inside the namespace.
    fn open() -> Result<Reader, String> {
        Ok(Reader {
            dumper: Dumper::open().map_err(|e| e.to_string())?,
            addresses: AddressReader::open().map_err(|e| e.to_string())?,
            ephemeral: File::open("/proc/sys/net/ipv4/ip_local_port_range").ok(),
        })
    }

    /// The namespace's socket tables (netlink only: `/proc/net` would
    /// show portsight's own namespace), addresses and ephemeral range,
    /// its listeners marked with its id.
    fn read(&mut self, ns: &Namespace) -> Result<NsScan, String> {
        let mut listeners = self.dumper.sockets().map_err(|e| e.to_string())?;
        for l in &mut listeners {
            l.netns = ns.id;
        }
        let addresses = self.addresses.read().map_err(|e| e.to_string())?;
        Ok(NsScan {
            ns: ns.clone(),
            listeners,
            addresses: addresses.addresses,
            ipv6_loopback: addresses.ipv6_loopback,
            ephemeral: watch::ephemeral_range_in(self.ephemeral.as_ref()),
        })
    }
}

/// The outcome of one namespace scan: what was read, and whether the
/// `namespaces` source worked (`None`: not used).
pub struct Read {
    pub namespaces: Vec<NsScan>,
    pub up: Option<bool>,
}

impl Namespaces {
    /// Reads every other namespace (blocking). A namespace that vanishes
    /// or cannot be entered is left out and makes the source 0; the rest
    /// are read.
    pub fn scan(&mut self, config: &Config) -> Read {
        if !config.scan.namespaces {
            self.inodes.clear();
            self.readers.clear();
            self.known = netns::Known::default();
            return Read {
                namespaces: Vec::new(),
                up: None,
            };
        }
        let roots = Roots {
            proc_root: config.scan.proc_root.clone(),
            pods_root: config.scan.pods_root.clone(),
            run_netns: config.scan.netns_dir.clone(),
        };
        let found = match netns::find_known(&roots, &mut self.known) {
            Ok(found) => found,
            Err(e) => {
                let refusal = matches!(e, netns::Error::NotHostNetwork { .. });
                return self.off(e.to_string(), refusal);
            }
        };
        if self.worker.is_none() {
            match Worker::start() {
                Ok(w) => self.worker = Some(w),
                Err(e) => {
                    return self.off(format!("cannot start the namespace thread: {e}"), false);
                }
            }
        }
        let Some(worker) = self.worker.as_ref() else {
            return self.off("no namespace thread".into(), false);
        };
        let mut up = found.unreadable == 0;
        for (inode, e) in worker.sync(&found.namespaces) {
            up = false;
            tracing::debug!(inode, error = %e, "namespace handle not opened");
        }
        // Readers for the namespaces seen for the first time, made inside
        // them in one trip to the namespace thread; the others' are used
        // here, without entering any namespace.
        let mut readers = std::mem::take(&mut self.readers);
        let new: Vec<u64> = found
            .namespaces
            .iter()
            .map(|seen| seen.ns.inode)
            .filter(|inode| !readers.contains_key(inode))
            .collect();
        let jobs: Vec<(u64, Job<Result<Reader, String>>)> = new
            .iter()
            .map(|&inode| (inode, Box::new(Reader::open) as Job<_>))
            .collect();
        for (inode, made) in new.into_iter().zip(worker.run_all(jobs)) {
            match made.map_err(|e| e.to_string()).and_then(|r| r) {
                Ok(reader) => {
                    readers.insert(inode, reader);
                }
                Err(e) => {
                    up = false;
                    tracing::debug!(inode, error = %e, "namespace not entered to read it");
                }
            }
        }
        let mut out = Vec::with_capacity(found.namespaces.len());
        for seen in &found.namespaces {
            let Some(mut reader) = readers.remove(&seen.ns.inode) else {
                continue;
            };
            match reader.read(&seen.ns) {
                Ok(scan) => {
                    self.readers.insert(seen.ns.inode, reader);
                    out.push(scan);
                }
                // The reader is dropped: a dump cut short would leave its
                // rest in the socket.
                Err(e) => {
                    up = false;
                    tracing::debug!(netns = %seen.ns.name, error = %e, "namespace not read");
                }
            }
        }
        if let Some(why) = self.off.take() {
            tracing::info!(namespaces = out.len(), was = %why, "scanning other network namespaces");
        }
        self.inodes = out.iter().map(|n| (n.ns.id, n.ns.inode)).collect();
        Read {
            namespaces: out,
            up: Some(up),
        }
    }

    /// No namespace read this time: says why once, as information (the
    /// engine warns once that the source is down, as for every source). A
    /// refusal by the safety rule (portsight is not the host network of
    /// what it sees) is not a failure of the source: it is simply not used.
    fn off(&mut self, why: String, refusal: bool) -> Read {
        if self.off.as_deref() != Some(why.as_str()) {
            tracing::info!(reason = %why, "not scanning other network namespaces");
            self.off = Some(why);
        }
        self.inodes.clear();
        self.readers.clear();
        self.known = netns::Known::default();
        Read {
            namespaces: Vec::new(),
            up: (!refusal).then_some(false),
        }
    }

    /// A socket for each target, made inside the namespace the target is
    /// probed from (blocking; one trip to the namespace thread per
    /// namespace). `None` where it could not be made: that target is not
    /// probed this round, so it gives no evidence either way.
    pub fn sockets(&self, targets: &[Target]) -> Vec<Option<OwnedFd>> {
        let mut out: Vec<Option<OwnedFd>> = targets.iter().map(|_| None).collect();
        let Some(worker) = &self.worker else {
            return out;
        };
        let mut by_ns: HashMap<NsId, Vec<usize>> = HashMap::new();
        for (i, t) in targets.iter().enumerate() {
            if !t.sent_from().is_own() {
                by_ns.entry(t.sent_from()).or_default().push(i);
            }
        }
        let mut jobs: Vec<(u64, Job<Vec<Option<OwnedFd>>>)> = Vec::new();
        let mut order = Vec::new();
        for (id, indices) in by_ns {
            let Some(&inode) = self.inodes.get(&id) else {
                continue;
            };
            let kinds: Vec<(bool, Protocol)> = indices
                .iter()
                .map(|&i| (targets[i].addr.is_ipv4(), targets[i].protocol))
                .collect();
            jobs.push((
                inode,
                Box::new(move || {
                    kinds
                        .into_iter()
                        .map(|(v4, protocol)| new_socket(v4, protocol).ok())
                        .collect()
                }),
            ));
            order.push(indices);
        }
        for (indices, made) in order.into_iter().zip(worker.run_all(jobs)) {
            match made {
                Ok(sockets) => {
                    for (i, s) in indices.into_iter().zip(sockets) {
                        out[i] = s;
                    }
                }
                Err(e) => tracing::debug!(error = %e, "no sockets made in a namespace"),
            }
        }
        out
    }
}

/// A non-blocking socket of the calling thread's namespace, for one probe.
fn new_socket(v4: bool, protocol: Protocol) -> std::io::Result<OwnedFd> {
    use socket2::{Domain, Socket, Type};
    let domain = if v4 { Domain::IPV4 } else { Domain::IPV6 };
    let ty = match protocol {
        Protocol::Tcp => Type::STREAM,
        Protocol::Udp => Type::DGRAM,
    };
    let s = Socket::new(domain, ty.nonblocking().cloexec(), None)?;
    Ok(s.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reader made inside a namespace (a thread that unshared one, with
    /// an ephemeral range and a UDP socket of its own) reads that
    /// namespace from another thread, after the thread has gone.
    #[test]
    fn a_kept_reader_reads_its_namespace_from_any_thread() {
        if !crate::test_is_root("needs root to unshare a network namespace") {
            return;
        }
        let (mut reader, udp) = std::thread::spawn(|| {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            std::fs::write("/proc/sys/net/ipv4/ip_local_port_range", "40000 40100").unwrap();
            let udp = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
            (Reader::open().unwrap(), udp)
        })
        .join()
        .unwrap();
        let ns = Namespace {
            name: "unshared".into(),
            container: None,
            pod: None,
            inode: 1,
            id: NsId::OWN,
        };
        for _ in 0..2 {
            let scan = reader.read(&ns).unwrap();
            assert_eq!(scan.ephemeral, 40000..=40100);
            assert!(scan.addresses.is_empty(), "{:?}", scan.addresses);
            assert!(!scan.ipv6_loopback, "its loopback is down");
            let port = udp.local_addr().unwrap().port();
            assert!(
                scan.listeners.len() == 1 && scan.listeners[0].port == port,
                "{:?}",
                scan.listeners
            );
        }
    }
}
