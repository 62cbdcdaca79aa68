//! The host's other network namespaces (containers, pods): which there are,
//! what to call them, and a thread that works inside them.
//!
//! Only namespaces of processes portsight sees in its `/proc`, and only when
//! portsight shares the network namespace of PID 1 there (DESIGN's safety
//! rule: run in a namespace of its own, it never looks up into the host's).

pub mod find;
pub mod id;
pub mod pids;
pub mod worker;

use std::path::PathBuf;

use nix::errno::Errno;
use serde::Serialize;

pub use find::{Found, Known, Roots, Seen, find, find_known};
pub use id::NsId;
pub use worker::Worker;

/// What went wrong finding namespaces or working inside one.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The safety rule: not the host network of the world portsight sees.
    /// Normal in a pod without host networking; nothing is looked at.
    #[error(
        "portsight is not in the network namespace of PID 1 of its PID namespace \
         (net:[{own}], PID 1 is in net:[{pid1}]): not looking into other namespaces"
    )]
    NotHostNetwork { own: u64, pid1: u64 },
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// `setns` refused: portsight lacks `CAP_SYS_ADMIN`.
    #[error("entering network namespace {inode} needs CAP_SYS_ADMIN (setns: {errno})")]
    Permission { inode: u64, errno: Errno },
    /// The namespace has no process left, or no handle was opened for it.
    #[error("network namespace {inode} is gone")]
    Gone { inode: u64 },
    #[error("cannot open network namespace {inode} at {}: {source}", path.display())]
    Open {
        inode: u64,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("entering network namespace {inode}: {errno}")]
    Enter { inode: u64, errno: Errno },
    /// The worker could not return to portsight's own namespace once and
    /// does no work any more (it would run it in the wrong namespace).
    #[error(
        "the namespace worker could not return to portsight's own network namespace \
         ({errno}) and does no more work"
    )]
    Poisoned { errno: Errno },
    #[error("the work inside network namespace {inode} panicked")]
    Panicked { inode: u64 },
    #[error("the namespace worker has stopped")]
    Stopped,
    #[error("cannot make a socket in network namespace {inode}: {source}")]
    Socket { inode: u64, source: std::io::Error },
}

/// One network namespace other than portsight's own, named as DESIGN says:
/// the pod (`namespace/pod`), the UTS hostname, the short container id, the
/// `ip netns` name, else `netns-<inode>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Namespace {
    /// The `netns` label.
    pub name: String,
    /// The short container id (12 hex digits), from the cgroup path.
    pub container: Option<String>,
    /// `namespace/pod`, from the kubelet's `/var/log/pods` directories.
    pub pod: Option<String>,
    /// The namespace's inode (`/proc/<pid>/ns/net`).
    pub inode: u64,
    /// `name`, interned: what per-port keys carry.
    #[serde(skip)]
    pub id: NsId,
}
