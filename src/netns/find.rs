//! Which network namespaces the processes in `<proc_root>` are in, and what
//! to call them (DESIGN, "Network namespaces, containers and forwards").
//!
//! The walk reads links (`net:[INODE]`), so a fixture tree of symlinks
//! stands in for `/proc`. Processes that exit mid-walk are skipped. The UTS
//! hostnames are read on a short-lived thread that enters each UTS
//! namespace (`setns`) and calls `gethostname`; it ends afterwards, so
//! nothing has to return from there.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::sched::{CloneFlags, setns};
use serde::Serialize;

use super::pids::{self, New};
use super::{Error, Namespace, NsId};

/// Where to look; tests point these at fixture trees.
#[derive(Debug, Clone)]
pub struct Roots {
    pub proc_root: PathBuf,
    /// The kubelet's pod log directories, `<namespace>_<pod>_<uid>`.
    pub pods_root: PathBuf,
    /// `ip netns` names (bind mounts of namespaces).
    pub run_netns: PathBuf,
}

impl Default for Roots {
    fn default() -> Roots {
        Roots {
            proc_root: PathBuf::from("/proc"),
            pods_root: PathBuf::from("/var/log/pods"),
            run_netns: PathBuf::from("/run/netns"),
        }
    }
}

/// The namespaces other than portsight's own, by inode.
#[derive(Debug, Clone, Serialize)]
pub struct Found {
    /// portsight's own network namespace (`<proc_root>/self/ns/net`).
    pub own: u64,
    pub namespaces: Vec<Seen>,
    /// Processes whose namespace could not be read (no permission): their
    /// namespaces may be missing from `namespaces`.
    pub unreadable: usize,
}

/// One namespace, the process it was named from and how to enter it.
#[derive(Debug, Clone, Serialize)]
pub struct Seen {
    pub ns: Namespace,
    pub pid: u32,
    /// `<run_netns>/<name>` when it has an `ip netns` name (it outlives
    /// processes), else `<proc_root>/<pid>/ns/net`.
    pub handle: PathBuf,
}

/// Finds and names the namespaces, under DESIGN's safety rule: only when
/// portsight shares the network namespace of PID 1 of `<proc_root>`.
pub fn find(roots: &Roots) -> Result<Found, Error> {
    find_known(roots, &mut Known::default())
}

/// [`find`], reading the `ns/net` link of only the processes `known` has
/// not seen (see [`Known`]).
pub fn find_known(roots: &Roots, known: &mut Known) -> Result<Found, Error> {
    find_with(roots, known, read_hostnames)
}

/// Every how many walks all links are read again.
pub const FULL_WALK_EVERY: u32 = 30;

/// What the last walks read: each listed process's namespace (`None`:
/// unreadable), by pid, and each member of another namespace's cgroup
/// facts. A new namespace comes with a new process (a container's, a
/// pod's), so between full walks only the processes started since the last
/// walk are listed ([`pids`], where it can be checked; else the whole
/// `/proc`, and only new pids' links are read), and their links read once
/// more at the next walk (`unshare -n CMD` forks first and moves after). A
/// namespace whose processes all ended goes at the next walk: listing only
/// the started ones, each other namespace's members are read in turn until
/// one is still in it ([`still_there`]). The members' `cgroup` and UTS
/// namespace are read the same way: when new,
/// once more at the next walk (a runtime moves its new process into the
/// container's cgroup right after `fork`), then kept. On a host with
/// hundreds of processes, reading every link was a third of an idle
/// `serve`'s CPU, and a member's `cgroup` and UTS link ~15 µs a scan. Every
/// [`FULL_WALK_EVERY`]th walk reads everything again: a process that
/// changed namespace or cgroup without a new pid (`unshare`, `setns`), or,
/// where the whole `/proc` is listed, a pid reused between two listings, is
/// seen by then. Nothing is reported
/// wrongly meanwhile: namespaces are entered through handles checked by
/// inode ([`super::Worker::sync`]).
#[derive(Debug, Default)]
pub struct Known {
    root: PathBuf,
    links: HashMap<u32, Option<u64>>,
    walks: u32,
    /// The pids first read by the last walk: read once more by this one.
    fresh: Vec<u32>,
    /// Each member of another namespace, as [`read_proc`] read it; a walk
    /// drops those to read again.
    procs: HashMap<u32, Proc>,
    /// Where only the processes started since the last walk need listing.
    allocated: Option<pids::Allocated>,
}

/// What one process of another namespace says about it.
#[derive(Debug, Clone, Default, PartialEq)]
struct Proc {
    pid: u32,
    container: Option<String>,
    pod_uid: Option<String>,
    /// Its UTS namespace, when not portsight's own.
    uts: Option<u64>,
}

fn find_with(
    roots: &Roots,
    known: &mut Known,
    hostnames: impl FnOnce(&[(u64, PathBuf)]) -> HashMap<u64, String>,
) -> Result<Found, Error> {
    let proc_root = &roots.proc_root;
    let own = safe_own_namespace(proc_root)?;
    let own_uts = ns_inode(&proc_root.join("self/ns/uts"), "uts").ok();
    let (members, unreadable) = walk(proc_root, own, known)?;
    let procs: BTreeMap<u64, Vec<Proc>> = members
        .into_iter()
        .map(|(inode, pids)| {
            let procs = pids
                .into_iter()
                .filter_map(|pid| known.proc(proc_root, pid, own_uts))
                .collect();
            (inode, procs)
        })
        .filter(|(_, procs): &(u64, Vec<Proc>)| !procs.is_empty())
        .collect();
    let pods = pod_names(&roots.pods_root);
    let wanted = hostnames_wanted(proc_root, &procs, &pods);
    let hosts = if wanted.is_empty() {
        HashMap::new()
    } else {
        hostnames(&wanted)
    };
    let ip_names = ip_netns_names(&roots.run_netns);
    let namespaces = name_all(&procs, &pods, &hosts, &ip_names)
        .into_iter()
        .map(|(ns, pid)| {
            let handle = match ip_names.get(&ns.inode) {
                Some(name) => roots.run_netns.join(name),
                None => proc_root.join(pid.to_string()).join("ns/net"),
            };
            Seen { ns, pid, handle }
        })
        .collect();
    Ok(Found {
        own,
        namespaces,
        unreadable,
    })
}

/// portsight's own namespace, if it is PID 1's.
fn safe_own_namespace(proc_root: &Path) -> Result<u64, Error> {
    let read = |path: PathBuf| {
        ns_inode(&path, "net").map_err(|source| Error::Read {
            path: path.clone(),
            source,
        })
    };
    let own = read(proc_root.join("self/ns/net"))?;
    let pid1 = read(proc_root.join("1/ns/net"))?;
    if own != pid1 {
        return Err(Error::NotHostNetwork { own, pid1 });
    }
    Ok(own)
}

/// The inode a namespace link (`net:[4026531840]`) names.
fn ns_inode(link: &Path, kind: &str) -> io::Result<u64> {
    let target = std::fs::read_link(link)?;
    parse_ns_link(&target.to_string_lossy(), kind).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{target:?} is not a {kind}:[INODE] link"),
        )
    })
}

fn parse_ns_link(text: &str, kind: &str) -> Option<u64> {
    text.strip_prefix(kind)?
        .strip_prefix(":[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

/// A process that exited between listing and reading.
fn vanished(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ESRCH)
}

/// The pids of every namespace but `own`, ascending, and how many
/// processes could not be read; `known` is brought up to date first
/// (see [`Known`]).
fn walk(
    proc_root: &Path,
    own: u64,
    known: &mut Known,
) -> Result<(BTreeMap<u64, Vec<u32>>, usize), Error> {
    let moved = known.root != proc_root;
    let mut full = moved || known.walks.is_multiple_of(FULL_WALK_EVERY);
    known.walks = known.walks.wrapping_add(1);
    if moved || (full && known.allocated.is_none()) {
        known.allocated = pids::Allocated::open(proc_root);
    }
    known.root = proc_root.to_path_buf();
    let mut new = New::All;
    match known.allocated.as_mut().map(pids::Allocated::advance) {
        // Wrapped: pids are handed out again, so every link is read.
        Some(Ok(New::All)) => full = true,
        Some(Ok(started)) if !full => new = started,
        Some(Err(_)) => known.allocated = None,
        _ => {}
    }
    // Read again this time: a process may fork first and change
    // namespace right after (`unshare -n CMD`).
    let again: HashSet<u32> = std::mem::take(&mut known.fresh).into_iter().collect();
    let reread = match new {
        New::All => {
            relist(proc_root, known, full, &again)?;
            again
        }
        started => read_started(proc_root, own, known, started, again).inspect_err(|_| {
            // What was started meanwhile is found by the next, whole, listing.
            known.allocated = None;
        })?,
    };
    let mut members: BTreeMap<u64, Vec<u32>> = BTreeMap::new();
    let mut unreadable = 0;
    for (&pid, link) in &known.links {
        match *link {
            Some(inode) if inode == own => {}
            Some(inode) => members.entry(inode).or_default().push(pid),
            None => unreadable += 1,
        }
    }
    for pids in members.values_mut() {
        pids.sort_unstable();
    }
    // A member first read by the last walk is read again (new ones are
    // not kept yet), and all on a full walk.
    let links = &known.links;
    known
        .procs
        .retain(|pid, _| !full && links.contains_key(pid) && !reread.contains(pid));
    Ok((members, unreadable))
}

/// The whole listing: links of pids not seen before, of those in
/// `again`, and on a full walk of all, are read; pids no longer listed go.
fn relist(
    proc_root: &Path,
    known: &mut Known,
    full: bool,
    again: &HashSet<u32>,
) -> Result<(), Error> {
    let before = std::mem::take(&mut known.links);
    known.links.reserve(before.len());
    for pid in pids::list(proc_root)? {
        let link = match before.get(&pid) {
            Some(&link) if !full && !again.contains(&pid) => Some(link),
            was => {
                if was.is_none() {
                    known.fresh.push(pid);
                }
                read_link(proc_root, pid)
            }
        };
        if let Some(link) = link {
            known.links.insert(pid, link);
        }
    }
    Ok(())
}

/// Only the processes started since the last walk are listed: their links
/// and those in `again` are read, and the members of other namespaces are
/// checked ([`still_there`]). Returns the pids read.
fn read_started(
    proc_root: &Path,
    own: u64,
    known: &mut Known,
    started: New,
    again: HashSet<u32>,
) -> Result<HashSet<u32>, Error> {
    let started = match started {
        New::From(from) => pids::list_from(proc_root, from).map_err(|source| Error::Read {
            path: proc_root.to_path_buf(),
            source,
        })?,
        New::Nothing | New::All => Vec::new(),
    };
    known.fresh.extend(&started);
    let mut read: HashSet<u32> = again.into_iter().chain(started).collect();
    for &pid in &read {
        match read_link(proc_root, pid) {
            Some(link) => known.links.insert(pid, link),
            None => known.links.remove(&pid),
        };
    }
    let moved = still_there(proc_root, own, &read, &mut known.links);
    read.extend(moved);
    Ok(read)
}

/// Between full listings, for the processes not read this walk: each
/// other namespace's members are read in turn, lowest pid first, until one
/// is still in it (the namespace is there; the rest wait for the next full
/// listing), and those that exited or moved are updated, so a namespace
/// whose processes all ended goes at once (a pid handed out again was
/// listed and read). A process whose link is unreadable stays while it
/// exists. portsight's own namespace's wait for the next full listing.
/// Returns the pids that moved to another namespace (or became
/// unreadable): their cgroup facts are read again.
fn still_there(
    proc_root: &Path,
    own: u64,
    read: &HashSet<u32>,
    links: &mut HashMap<u32, Option<u64>>,
) -> Vec<u32> {
    let mut members: BTreeMap<u64, Vec<u32>> = BTreeMap::new();
    for (&pid, &link) in links.iter() {
        if let Some(inode) = link.filter(|&i| i != own)
            && !read.contains(&pid)
        {
            members.entry(inode).or_default().push(pid);
        }
    }
    let mut moved = Vec::new();
    for (inode, mut pids) in members {
        pids.sort_unstable();
        for pid in pids {
            match read_link(proc_root, pid) {
                Some(Some(now)) if now == inode => break,
                Some(link) => {
                    links.insert(pid, link);
                    moved.push(pid);
                }
                None => {
                    links.remove(&pid);
                }
            }
        }
    }
    links.retain(|pid, link| link.is_some() || read.contains(pid) || pids::alive(*pid));
    moved
}

/// Process `pid`'s network namespace (`Some(None)`: unreadable); `None`
/// when there is no such process.
fn read_link(proc_root: &Path, pid: u32) -> Option<Option<u64>> {
    match ns_inode(&proc_root.join(pid.to_string()).join("ns/net"), "net") {
        Ok(inode) => Some(Some(inode)),
        Err(e) if vanished(&e) => None,
        Err(_) => Some(None),
    }
}

impl Known {
    /// Member `pid`'s cgroup facts and UTS namespace, as last read, else
    /// read now. `None` (and forgotten) when it exited.
    fn proc(&mut self, proc_root: &Path, pid: u32, own_uts: Option<u64>) -> Option<Proc> {
        if let Some(p) = self.procs.get(&pid) {
            return Some(p.clone());
        }
        let Some(p) = read_proc(proc_root, pid, own_uts) else {
            self.links.remove(&pid);
            self.procs.remove(&pid);
            return None;
        };
        self.procs.insert(pid, p.clone());
        Some(p)
    }
}

/// One process's cgroup facts and UTS namespace; `None` when it exited.
fn read_proc(proc_root: &Path, pid: u32, own_uts: Option<u64>) -> Option<Proc> {
    let dir = proc_root.join(pid.to_string());
    let cgroup = match std::fs::read_to_string(dir.join("cgroup")) {
        Ok(text) => text,
        Err(e) if vanished(&e) => return None,
        Err(_) => String::new(),
    };
    let uts = ns_inode(&dir.join("ns/uts"), "uts")
        .ok()
        .filter(|&u| Some(u) != own_uts);
    Some(Proc {
        pid,
        container: container_id(&cgroup),
        pod_uid: pod_uid(&cgroup),
        uts,
    })
}

/// The cgroup paths of a `/proc/<pid>/cgroup` text (v1
/// `ID:controllers:/path` and v2 `0::/path` lines), each as components.
fn cgroup_paths(text: &str) -> impl Iterator<Item = Vec<&str>> {
    text.lines()
        .filter_map(|l| l.splitn(3, ':').nth(2))
        .map(|path| path.split('/').filter(|c| !c.is_empty()).collect())
}

/// Runtimes whose systemd scopes are `<runtime>-<id>.scope`.
const SCOPE_RUNTIMES: [&str; 5] = ["docker", "cri-containerd", "crio", "libpod", "nerdctl"];

/// The short container id (12 hex digits) of the innermost container the
/// cgroup path names: `/docker/<id>`, a bare `<id>` (cgroupfs drivers),
/// `docker-<id>.scope`, `cri-containerd-<id>.scope`, `crio-<id>.scope`,
/// `libpod-<id>.scope`, `…:cri-containerd:<id>`.
fn container_id(cgroup: &str) -> Option<String> {
    cgroup_paths(cgroup)
        .find_map(|path| path.iter().rev().find_map(|c| component_id(c)))
        .map(|id| id[..12].to_string())
}

fn component_id(component: &str) -> Option<&str> {
    let full_id = |s: &str| s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit());
    if full_id(component) {
        return Some(component);
    }
    if let Some((_, id)) = component.rsplit_once(':') {
        return full_id(id).then_some(id);
    }
    let (runtime, id) = component.strip_suffix(".scope")?.rsplit_once('-')?;
    (SCOPE_RUNTIMES.contains(&runtime) && full_id(id)).then_some(id)
}

/// The Kubernetes pod uid a cgroup path names: cgroupfs
/// `/kubepods/<qos>/pod<uid>/…`, systemd `kubepods-<qos>-pod<uid_with_underscores>.slice`.
fn pod_uid(cgroup: &str) -> Option<String> {
    cgroup_paths(cgroup).find_map(|path| {
        let kube = path.iter().position(|c| c.starts_with("kubepods"))?;
        path[kube..].iter().find_map(|c| {
            let c = c.split(':').next().unwrap_or(c);
            let uid = match c.strip_suffix(".slice") {
                Some(slice) => slice.rsplit_once("-pod")?.1.replace('_', "-"),
                None => c.strip_prefix("pod")?.to_string(),
            };
            is_uid(&uid).then_some(uid)
        })
    })
}

/// A Kubernetes uid: 8-4-4-4-12 hex digits.
fn is_uid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.iter().map(|g| g.len()).eq([8, 4, 4, 4, 12])
        && groups
            .iter()
            .all(|g| g.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// `<namespace>_<pod>_<uid>` → (uid, `namespace/pod`).
fn parse_pod_dir(name: &str) -> Option<(String, String)> {
    let mut parts = name.split('_');
    let (namespace, pod, uid) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || namespace.is_empty() || pod.is_empty() || !is_uid(uid) {
        return None;
    }
    Some((uid.to_string(), format!("{namespace}/{pod}")))
}

/// The pods under `pods_root`, by uid; none when it does not exist.
fn pod_names(pods_root: &Path) -> HashMap<String, String> {
    let Ok(entries) = std::fs::read_dir(pods_root) else {
        return HashMap::new();
    };
    entries
        .filter_map(|e| parse_pod_dir(e.ok()?.file_name().to_str()?))
        .collect()
}

/// The `ip netns` name of each namespace under `run_netns` (stat inode):
/// the first by name, `cni-…` names after the others.
fn ip_netns_names(run_netns: &Path) -> HashMap<u64, String> {
    let Ok(entries) = std::fs::read_dir(run_netns) else {
        return HashMap::new();
    };
    let mut names: Vec<(u64, String)> = entries
        .filter_map(|e| {
            let e = e.ok()?;
            let inode = std::fs::metadata(e.path()).ok()?.ino();
            Some((inode, e.file_name().into_string().ok()?))
        })
        .collect();
    names.sort_by_key(|(inode, name)| (*inode, name.starts_with("cni-"), name.clone()));
    let mut by_inode = HashMap::new();
    for (inode, name) in names {
        by_inode.entry(inode).or_insert(name);
    }
    by_inode
}

/// The UTS namespaces whose hostnames may name a network namespace (those
/// not named by a pod), each with a link to enter it by.
fn hostnames_wanted(
    proc_root: &Path,
    procs: &BTreeMap<u64, Vec<Proc>>,
    pods: &HashMap<String, String>,
) -> Vec<(u64, PathBuf)> {
    let mut wanted: BTreeMap<u64, PathBuf> = BTreeMap::new();
    for members in procs.values() {
        if members.iter().any(|p| pod_of(p, pods).is_some()) {
            continue;
        }
        for p in members {
            if let Some(uts) = p.uts {
                let link = proc_root.join(p.pid.to_string()).join("ns/uts");
                wanted.entry(uts).or_insert(link);
            }
        }
    }
    wanted.into_iter().collect()
}

/// Enters each UTS namespace on a thread of its own and reads its
/// hostname; skips those that say the same as portsight's own, or nothing.
/// Without `CAP_SYS_ADMIN` there are none.
fn read_hostnames(wanted: &[(u64, PathBuf)]) -> HashMap<u64, String> {
    let own = nix::unistd::gethostname().ok();
    let read = || {
        let mut names = HashMap::new();
        for (uts, link) in wanted {
            let Ok(ns) = File::open(link) else { continue };
            match setns(ns, CloneFlags::CLONE_NEWUTS) {
                Ok(()) => {}
                Err(nix::errno::Errno::EPERM) => break,
                Err(_) => continue,
            }
            if let Ok(name) = nix::unistd::gethostname()
                && !name.is_empty()
                && Some(&name) != own.as_ref()
            {
                names.insert(*uts, name.to_string_lossy().into_owned());
            }
        }
        names
    };
    std::thread::scope(|s| {
        std::thread::Builder::new()
            .name("portsight-uts".into())
            .spawn_scoped(s, read)
            .ok()
            .and_then(|t| t.join().ok())
            .unwrap_or_default()
    })
}

fn pod_of<'a>(p: &Proc, pods: &'a HashMap<String, String>) -> Option<&'a String> {
    pods.get(p.pod_uid.as_deref()?)
}

/// Names every namespace in DESIGN's order, from the lowest pid that gives
/// the best name; names that several namespaces would share get
/// `-<inode>` on all of them.
fn name_all(
    procs: &BTreeMap<u64, Vec<Proc>>,
    pods: &HashMap<String, String>,
    hosts: &HashMap<u64, String>,
    ip_names: &HashMap<u64, String>,
) -> Vec<(Namespace, u32)> {
    let mut named: Vec<(Namespace, u32)> = procs
        .iter()
        .map(|(&inode, members)| name_one(inode, members, pods, hosts, ip_names.get(&inode)))
        .collect();
    let mut uses: HashMap<String, usize> = HashMap::new();
    for (ns, _) in &named {
        *uses.entry(ns.name.clone()).or_default() += 1;
    }
    for (ns, _) in &mut named {
        if uses[&ns.name] > 1 {
            ns.name = format!("{}-{}", ns.name, ns.inode);
        }
        ns.id = NsId::named(&ns.name);
    }
    named
}

/// One namespace's name (not yet interned), from `members` (ascending
/// pids, at least one), and the pid it came from.
fn name_one(
    inode: u64,
    members: &[Proc],
    pods: &HashMap<String, String>,
    hosts: &HashMap<u64, String>,
    ip_name: Option<&String>,
) -> (Namespace, u32) {
    let pod = members.iter().find_map(|p| pod_of(p, pods));
    let by_pod = members.iter().find(|p| pod_of(p, pods).is_some());
    let by_host = || {
        members
            .iter()
            .find_map(|p| Some((p, hosts.get(&p.uts?)?.clone())))
    };
    let by_container = || members.iter().find_map(|p| Some((p, p.container.clone()?)));
    let (from, name) = match (by_pod, pod) {
        (Some(p), Some(pod)) => (Some(p), pod.clone()),
        _ => match by_host().or_else(by_container) {
            Some((p, name)) => (Some(p), name),
            None => (None, ip_name.cloned().unwrap_or(format!("netns-{inode}"))),
        },
    };
    let container = from
        .and_then(|p| p.container.clone())
        .or_else(|| members.iter().find_map(|p| p.container.clone()));
    let pid = from.unwrap_or(&members[0]).pid;
    let ns = Namespace {
        name,
        container,
        pod: pod.cloned(),
        inode,
        id: NsId::OWN,
    };
    (ns, pid)
}

#[cfg(test)]
mod tests;
