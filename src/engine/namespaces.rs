//! The scan of the host's other network namespaces (containers, pods):
//! their socket tables, addresses and ephemeral ranges, read inside each
//! by the [`netns::Worker`] thread, and the sockets that probes of their
//! ports are sent from.

use std::collections::HashMap;
use std::net::IpAddr;
use std::ops::RangeInclusive;
use std::os::fd::OwnedFd;

use crate::config::{Config, Protocol};
use crate::netns::{self, Namespace, NsId, Roots, Worker};
use crate::probe::Target;
use crate::sockets::{self, Listener, interfaces};

use super::watch;

/// What one other namespace holds, as one scan read it.
#[derive(Debug, Clone)]
pub struct NsScan {
    pub ns: Namespace,
    /// Its listening and bound sockets, each with `netns` set.
    pub listeners: Vec<Listener>,
    /// Its probe-worthy interface addresses.
    pub addresses: Vec<IpAddr>,
    pub ipv6_loopback: bool,
    pub ephemeral: RangeInclusive<u16>,
}

/// The namespace scan's thread and what it keeps between scans.
#[derive(Default)]
pub struct Namespaces {
    worker: Option<Worker>,
    /// The inode of each namespace, as of the last scan, by name.
    inodes: HashMap<NsId, u64>,
    /// Why the last scan read no namespace, logged once per change.
    off: Option<String>,
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
        let found = match netns::find(&roots) {
            Ok(found) => found,
            Err(e) => return self.off(e.to_string(), e.is_refusal()),
        };
        if self.worker.is_none() {
            match Worker::new() {
                Ok(w) => self.worker = Some(w),
                Err(e) => return self.off(format!("cannot start the namespace thread: {e}"), false),
            }
        }
        let Some(worker) = self.worker.as_mut() else {
            return self.off("no namespace thread".into(), false);
        };
        worker.sync(&found.namespaces);
        let mut up = true;
        let mut out = Vec::with_capacity(found.namespaces.len());
        for seen in &found.namespaces {
            let ns = seen.ns.clone();
            let id = ns.id;
            match worker.run(ns.inode, move || read_inside(id)) {
                Ok(Ok((listeners, addresses, ipv6_loopback, ephemeral))) => out.push(NsScan {
                    ns,
                    listeners,
                    addresses,
                    ipv6_loopback,
                    ephemeral,
                }),
                Ok(Err(e)) | Err(e) => {
                    up = false;
                    tracing::debug!(netns = %ns.name, error = %e, "namespace not read");
                }
            }
        }
        if !up && self.off.is_none() {
            tracing::warn!("some network namespaces could not be read (portsight_source_up{{source=\"namespaces\"}} 0)");
        }
        if self.off.take().is_some() {
            tracing::info!(namespaces = out.len(), "scanning other network namespaces again");
        }
        self.inodes = out.iter().map(|n| (n.ns.id, n.ns.inode)).collect();
        Read {
            namespaces: out,
            up: Some(up),
        }
    }

    /// No namespace read this time: says why once. A refusal by the safety
    /// rule (portsight is not the host network of what it sees) is not a
    /// failure of the source: it is simply not used.
    fn off(&mut self, why: String, refusal: bool) -> Read {
        if self.off.as_deref() != Some(why.as_str()) {
            if refusal {
                tracing::info!(reason = %why, "not scanning other network namespaces");
            } else {
                tracing::warn!(reason = %why, "cannot scan other network namespaces (portsight_source_up{{source=\"namespaces\"}} 0)");
            }
            self.off = Some(why);
        }
        self.inodes.clear();
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
        let mut by_ns: HashMap<NsId, Vec<usize>> = HashMap::new();
        for (i, t) in targets.iter().enumerate() {
            if !t.sent_from().is_own() {
                by_ns.entry(t.sent_from()).or_default().push(i);
            }
        }
        let Some(worker) = &self.worker else {
            return out;
        };
        for (id, indices) in by_ns {
            let Some(&inode) = self.inodes.get(&id) else {
                continue;
            };
            let kinds: Vec<(bool, Protocol)> = indices
                .iter()
                .map(|&i| (targets[i].addr.is_ipv4(), targets[i].protocol))
                .collect();
            let made = worker.run(inode, move || {
                kinds
                    .into_iter()
                    .map(|(v4, protocol)| new_socket(v4, protocol).ok())
                    .collect::<Vec<_>>()
            });
            match made {
                Ok(sockets) => {
                    for (i, s) in indices.into_iter().zip(sockets) {
                        out[i] = s;
                    }
                }
                Err(e) => tracing::debug!(netns = %id.name(), error = %e, "no sockets in namespace"),
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

type Inside = (Vec<Listener>, Vec<IpAddr>, bool, RangeInclusive<u16>);

/// What is read inside one namespace, on the namespace thread: the
/// netlink socket tables (no `/proc` fallback: `/proc/net` shows
/// portsight's own namespace), the addresses and the ephemeral range.
fn read_inside(id: NsId) -> Result<Inside, netns::Error> {
    let mut listeners = sockets::netlink::dump_listeners()
        .map_err(|e| netns::Error::Inside(e.to_string()))?;
    listeners.extend(
        sockets::netlink::dump_udp_sockets().map_err(|e| netns::Error::Inside(e.to_string()))?,
    );
    for l in &mut listeners {
        l.netns = id;
    }
    Ok((
        listeners,
        interfaces::interface_addresses(),
        interfaces::ipv6_loopback_up(),
        // /proc/sys/net shows the namespace of the thread that opens it.
        watch::ephemeral_range(std::path::Path::new("/proc")),
    ))
}
