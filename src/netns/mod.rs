//! The host's other network namespaces (containers, pods): which there are,
//! what to call them, and a thread that works inside them.
//!
//! Only namespaces of processes portsight sees in its `/proc`, and only when
//! portsight shares the network namespace of PID 1 there (DESIGN's safety
//! rule: run in a namespace of its own, it never looks up into the host's).

pub mod id;

use serde::Serialize;

pub use id::NsId;

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
