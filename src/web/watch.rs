//! The web config followed on disk, as exporter-toolkit does: a rotated
//! certificate (cert-manager, a renewed key pair) or an edited web config
//! is served from the next connection on, without a restart or a signal.
//!
//! At most once every [`CHECK_EVERY`], when a connection is accepted, the
//! web config file and the files it names are looked at (`stat`: device,
//! inode, size, modification time — a Kubernetes secret volume swaps a
//! symlink, which changes the inode). When any of them changed, everything
//! is loaded again; a config that does not load is logged and the running
//! one kept, until the files change again.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use super::WebConfig;

/// How often, at most, the files are looked at.
pub const CHECK_EVERY: Duration = Duration::from_secs(1);

/// What a file looked like: absent, or (device, inode, size, mtime).
type Stamp = Option<(u64, u64, u64, SystemTime)>;

/// The running web config, reloaded when its files change.
pub struct Watched {
    current: RwLock<Arc<WebConfig>>,
    /// The web config file; `None`: nothing to follow (the default).
    path: Option<PathBuf>,
    /// When the files were last looked at, and what they looked like.
    seen: Mutex<(Instant, Vec<(PathBuf, Stamp)>)>,
}

impl Watched {
    /// Follows the file `web` was loaded from, if any.
    pub fn new(web: WebConfig) -> Watched {
        let path = web.source().map(PathBuf::from);
        let seen = stamps(&web.files());
        Watched {
            current: RwLock::new(Arc::new(web)),
            path,
            seen: Mutex::new((Instant::now(), seen)),
        }
    }

    /// The web config to serve a new connection with: reloaded first when
    /// its files changed (looked at most every [`CHECK_EVERY`]).
    pub fn current(&self) -> Arc<WebConfig> {
        if let Some(path) = &self.path {
            self.check(path);
        }
        self.get()
    }

    fn get(&self) -> Arc<WebConfig> {
        Arc::clone(&self.current.read().unwrap_or_else(|e| e.into_inner()))
    }

    fn check(&self, path: &Path) {
        let Ok(mut seen) = self.seen.try_lock() else {
            // Another connection is looking right now.
            return;
        };
        if seen.0.elapsed() < CHECK_EVERY {
            return;
        }
        seen.0 = Instant::now();
        let files: Vec<PathBuf> = seen.1.iter().map(|(p, _)| p.clone()).collect();
        let now = stamps(&files);
        if now == seen.1 {
            return;
        }
        match WebConfig::load(path) {
            Ok(web) => {
                tracing::info!(
                    file = %path.display(),
                    tls = web.tls().is_some(),
                    basic_auth = web.basic_auth().is_some(),
                    "web config changed on disk: reloaded; new connections use it"
                );
                seen.1 = stamps(&web.files());
                *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(web);
            }
            Err(e) => {
                tracing::error!(
                    error = %e,
                    "web config changed on disk but does not load; keeping the running one"
                );
                seen.1 = now;
            }
        }
    }
}

fn stamps(files: &[PathBuf]) -> Vec<(PathBuf, Stamp)> {
    use std::os::unix::fs::MetadataExt;
    files
        .iter()
        .map(|p| {
            let stamp = std::fs::metadata(p).ok().map(|m| {
                (
                    m.dev(),
                    m.ino(),
                    m.size(),
                    m.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                )
            });
            (p.clone(), stamp)
        })
        .collect()
}
