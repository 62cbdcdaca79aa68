//! A dedicated OS thread that runs work inside other network namespaces
//! (`setns(CLONE_NEWNET)`) and returns to portsight's own afterwards.
//!
//! Namespace handles are kept open between scans ([`Worker::sync`]): a
//! handle keeps its namespace alive, so one that is gone from the scan is
//! closed at once. If the thread ever fails to return to its own namespace
//! it poisons itself: every later piece of work fails with
//! [`Error::Poisoned`] rather than run in the wrong namespace.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::fs::MetadataExt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::sync::{Arc, Mutex, mpsc};

use nix::errno::Errno;
use nix::sched::{CloneFlags, setns};

use super::{Error, Seen};

/// One closure of a batch, told whether its namespace was entered.
type Work = Box<dyn FnOnce(Result<(), Error>) + Send>;

struct Step {
    inode: u64,
    /// `None`: portsight's own namespace.
    ns: Option<Arc<File>>,
    work: Work,
}

/// A boxed closure for [`Worker::run_all`].
pub type Job<T> = Box<dyn FnOnce() -> T + Send>;

/// The thread and the namespace handles it enters by.
pub struct Worker {
    own: u64,
    steps: mpsc::Sender<Vec<Step>>,
    handles: Mutex<HashMap<u64, Arc<File>>>,
}

impl Worker {
    /// Opens portsight's own namespace (`/proc/self/ns/net`) and starts the
    /// thread `portsight-netns`.
    pub fn start() -> Result<Worker, Error> {
        let path = Path::new("/proc/self/ns/net");
        let read = |source| Error::Read {
            path: path.to_path_buf(),
            source,
        };
        let own_ns = File::open(path).map_err(read)?;
        let own = own_ns.metadata().map_err(read)?.ino();
        let (steps, receive) = mpsc::channel();
        std::thread::Builder::new()
            .name("portsight-netns".into())
            .spawn(move || serve(own_ns, receive))
            .map_err(read)?;
        Ok(Worker {
            own,
            steps,
            handles: Mutex::new(HashMap::new()),
        })
    }

    /// portsight's own namespace's inode.
    pub fn own(&self) -> u64 {
        self.own
    }

    /// Keeps handles for exactly the namespaces in `seen`: opens those not
    /// held yet (checking the inode, since a pid may have been reused) and
    /// closes those no longer seen. Returns the namespaces that could not
    /// be opened ([`Error::Gone`] when their process exited).
    pub fn sync(&self, seen: &[Seen]) -> Vec<(u64, Error)> {
        let mut handles = self.handles.lock().unwrap_or_else(|e| e.into_inner());
        let wanted: HashSet<u64> = seen.iter().map(|s| s.ns.inode).collect();
        handles.retain(|inode, _| wanted.contains(inode));
        let mut failed = Vec::new();
        for s in seen {
            let inode = s.ns.inode;
            if inode == self.own || handles.contains_key(&inode) {
                continue;
            }
            match open_ns(&s.handle, inode) {
                Ok(file) => {
                    handles.insert(inode, Arc::new(file));
                }
                Err(e) => failed.push((inode, e)),
            }
        }
        failed
    }

    /// The inodes of the handles held, ascending.
    pub fn held(&self) -> Vec<u64> {
        let handles = self.handles.lock().unwrap_or_else(|e| e.into_inner());
        let mut inodes: Vec<u64> = handles.keys().copied().collect();
        inodes.sort_unstable();
        inodes
    }

    /// Runs `f` inside namespace `inode` (portsight's own: without
    /// entering any) and waits for it. Blocking: call from
    /// `spawn_blocking`, never from work running on the worker (it would
    /// wait for itself).
    pub fn run<T: Send + 'static>(
        &self,
        inode: u64,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, Error> {
        let job: Job<T> = Box::new(f);
        self.run_all(vec![(inode, job)])
            .pop()
            .unwrap_or(Err(Error::Stopped))
    }

    /// Runs each closure inside its namespace, in order, in one hop to the
    /// thread (which goes from one namespace straight to the next and
    /// returns to its own at the end). One result per closure, in order.
    pub fn run_all<T: Send + 'static>(&self, jobs: Vec<(u64, Job<T>)>) -> Vec<Result<T, Error>> {
        let (done, results) = mpsc::channel();
        let mut out: Vec<Option<Result<T, Error>>> = Vec::new();
        let mut steps = Vec::new();
        {
            let handles = self.handles.lock().unwrap_or_else(|e| e.into_inner());
            for (i, (inode, f)) in jobs.into_iter().enumerate() {
                out.push(None);
                let ns = match handles.get(&inode) {
                    _ if inode == self.own => None,
                    Some(file) => Some(Arc::clone(file)),
                    None => {
                        out[i] = Some(Err(Error::Gone { inode }));
                        continue;
                    }
                };
                let done = done.clone();
                let work: Work = Box::new(move |entered| {
                    let result = entered.and_then(|()| {
                        catch_unwind(AssertUnwindSafe(f)).map_err(|_| Error::Panicked { inode })
                    });
                    let _ = done.send((i, result));
                });
                steps.push(Step { inode, ns, work });
            }
        }
        drop(done);
        if !steps.is_empty() {
            // When the thread is gone the steps come back and are dropped:
            // their results are missing, hence `Stopped` below.
            let _ = self.steps.send(steps);
        }
        for (i, result) in results {
            out[i] = Some(result);
        }
        out.into_iter()
            .map(|r| r.unwrap_or(Err(Error::Stopped)))
            .collect()
    }

    /// A socket made inside namespace `inode`: it stays in that namespace
    /// for life, so connecting it can happen on any thread.
    pub fn socket(
        &self,
        inode: u64,
        domain: socket2::Domain,
        ty: socket2::Type,
    ) -> Result<OwnedFd, Error> {
        self.run(inode, move || socket2::Socket::new(domain, ty, None))?
            .map(OwnedFd::from)
            .map_err(|source| Error::Socket { inode, source })
    }
}

/// Opens a namespace handle and checks that it is namespace `inode`.
fn open_ns(path: &Path, inode: u64) -> Result<File, Error> {
    let open = |source: io::Error| {
        if source.kind() == io::ErrorKind::NotFound || source.raw_os_error() == Some(libc::ESRCH) {
            Error::Gone { inode }
        } else {
            Error::Open {
                inode,
                path: path.to_path_buf(),
                source,
            }
        }
    };
    let file = File::open(path).map_err(open)?;
    if file.metadata().map_err(open)?.ino() != inode {
        // The pid now belongs to a process of another namespace.
        return Err(Error::Gone { inode });
    }
    Ok(file)
}

/// The thread: each batch of steps, then back home.
fn serve(own_ns: File, batches: mpsc::Receiver<Vec<Step>>) {
    let mut poisoned: Option<Errno> = None;
    for steps in batches {
        let mut away = false;
        for step in steps {
            if let Some(errno) = poisoned {
                (step.work)(Err(Error::Poisoned { errno }));
                continue;
            }
            let entered = match &step.ns {
                Some(ns) => enter(ns, step.inode).inspect(|()| away = true),
                None if away => {
                    away = false;
                    go_home(&own_ns, &mut poisoned)
                }
                None => Ok(()),
            };
            (step.work)(entered);
        }
        if away && poisoned.is_none() {
            let _ = go_home(&own_ns, &mut poisoned);
        }
    }
}

/// Back to portsight's own namespace, or poisoned for good.
fn go_home(own_ns: &File, poisoned: &mut Option<Errno>) -> Result<(), Error> {
    setns(own_ns, CloneFlags::CLONE_NEWNET).map_err(|errno| {
        tracing::error!(%errno, "the namespace worker cannot return to portsight's own network namespace; it does no more work");
        *poisoned = Some(errno);
        Error::Poisoned { errno }
    })
}

fn enter(ns: &File, inode: u64) -> Result<(), Error> {
    setns(ns, CloneFlags::CLONE_NEWNET).map_err(|errno| match errno {
        Errno::EPERM => Error::Permission { inode, errno },
        errno => Error::Enter { inode, errno },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_namespace_work_runs_on_the_thread_and_unknown_ones_are_gone() {
        let worker = Worker::start().unwrap();
        let on = worker.run(worker.own(), || {
            std::thread::current().name().map(String::from)
        });
        assert_eq!(on.unwrap().as_deref(), Some("portsight-netns"));
        assert!(matches!(
            worker.run(1, || ()),
            Err(Error::Gone { inode: 1 })
        ));
        assert!(matches!(
            worker.run(worker.own(), || panic!("work panics")),
            Err(Error::Panicked { .. })
        ));
        assert_eq!(worker.run(worker.own(), || 7).unwrap(), 7, "still working");
        let jobs: Vec<(u64, Job<u32>)> = vec![
            (worker.own(), Box::new(|| 1)),
            (2, Box::new(|| 2)),
            (worker.own(), Box::new(|| 3)),
        ];
        let results = worker.run_all(jobs);
        assert!(matches!(
            results[..],
            [Ok(1), Err(Error::Gone { inode: 2 }), Ok(3)]
        ));
    }
}
