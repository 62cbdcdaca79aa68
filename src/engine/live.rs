//! The running configuration and everything built from it — token files'
//! contents, the probers with their concurrency limits — swapped as one on
//! reload, or not at all (blackbox_exporter's `SafeConfig`).

use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use crate::config::{self, Config, ListenAddress};
use crate::peer::PeerSet;
use crate::probe::scheduler::Prober;

/// What the command line sets over the config file. Applied after every
/// load, so a reload never loses a flag.
#[derive(Debug, Clone, Default)]
pub struct Flags {
    /// `--web.listen-address`.
    pub listen_address: Option<ListenAddress>,
    /// `--web.enable-lifecycle`.
    pub enable_lifecycle: bool,
    /// `--web.config.file`.
    pub web_config_file: Option<PathBuf>,
}

impl Flags {
    fn apply(&self, config: &mut Config) {
        if let Some(addr) = self.listen_address {
            config.web.listen_address = addr;
        }
        config.web.enable_lifecycle |= self.enable_lifecycle;
        if let Some(file) = &self.web_config_file {
            config.web.config_file.clone_from(file);
        }
    }
}

/// One loaded configuration and what was built from it.
#[derive(Debug)]
pub struct Loaded {
    pub config: Config,
    /// The peers, with their tokens read.
    pub peers: PeerSet,
    /// The probe server's bearer token, when the probe server is on.
    pub server_token: Option<String>,
    /// The engine's probes, under `probe.concurrency`.
    pub prober: Prober,
    /// Batches served to others (`/api/v1/probe`), under
    /// `probe_server.concurrency`.
    pub server_prober: Prober,
    /// Single probes served to others (`/probe`), with slots of their own
    /// (as many), so that batches never make them wait.
    pub single_prober: Prober,
}

impl Loaded {
    /// Reads every token file `config` names; errors name the key.
    pub fn new(config: Config) -> Result<Loaded, config::Error> {
        let server_token = if config.probe_server.enabled {
            Some(config::read_secret(
                &config.probe_server.token_file,
                "probe_server.token_file",
            )?)
        } else {
            None
        };
        Ok(Loaded {
            peers: PeerSet::load(&config)?,
            server_token,
            prober: Prober::new(config.probe.concurrency),
            server_prober: Prober::new(config.probe_server.concurrency),
            single_prober: Prober::new(config.probe_server.concurrency),
            config,
        })
    }

    /// As [`Loaded::new`], keeping `old`'s probers where their limit is the
    /// same, so rounds in flight and new ones share one limit.
    fn replacing(config: Config, old: &Loaded) -> Result<Loaded, config::Error> {
        let mut new = Loaded::new(config)?;
        if new.config.probe.concurrency == old.config.probe.concurrency {
            new.prober = old.prober.clone();
        }
        if new.config.probe_server.concurrency == old.config.probe_server.concurrency {
            new.server_prober = old.server_prober.clone();
            new.single_prober = old.single_prober.clone();
        }
        Ok(new)
    }
}

/// Warns, loudly, of every bearer token `config` sends in clear text over
/// the network, unless `before` (the running config's) said the same.
fn warn_clear_text(before: &[String], config: &Config) {
    let now = crate::peer::clear_text_tokens(config);
    if now == before {
        return;
    }
    for warning in &now {
        tracing::warn!("INSECURE: {warning}");
    }
    if now.is_empty() {
        tracing::info!("no bearer token goes over plain http any more");
    }
}

/// The current [`Loaded`], and where to load it from again.
#[derive(Debug)]
pub struct Live {
    current: RwLock<Arc<Loaded>>,
    /// The config file, read again on reload (the embedded default when `None`).
    file: Option<PathBuf>,
    flags: Flags,
}

impl Live {
    /// Loads `file` (and the environment), applies `flags` and reads the
    /// token files.
    pub fn load(file: Option<PathBuf>, flags: Flags) -> Result<Live, config::Error> {
        let loaded = Loaded::new(Self::read(Config::load(file.as_deref())?, &flags))?;
        warn_clear_text(&[], &loaded.config);
        Ok(Live::with(loaded, file, flags))
    }

    /// A `Live` around an already loaded config (`check`, tests).
    pub fn with(loaded: Loaded, file: Option<PathBuf>, flags: Flags) -> Live {
        Live {
            current: RwLock::new(Arc::new(loaded)),
            file,
            flags,
        }
    }

    fn read(mut config: Config, flags: &Flags) -> Config {
        flags.apply(&mut config);
        config
    }

    pub fn current(&self) -> Arc<Loaded> {
        Arc::clone(&self.current.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Loads the config again; the next scan and probe round use it. A bad
    /// config, an empty file ([`Config::reload`]) or an unreadable token
    /// file is reported and the running one kept. The listen address is not
    /// changed by a reload.
    pub fn reload(&self) -> Result<(), config::Error> {
        let old = self.current();
        let loaded = Config::reload(self.file.as_deref())
            .and_then(|c| Loaded::replacing(Self::read(c, &self.flags), &old));
        match loaded {
            Ok(new) => {
                warn_clear_text(&crate::peer::clear_text_tokens(&old.config), &new.config);
                *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(new);
                tracing::info!(file = ?self.file, "configuration reloaded");
                Ok(())
            }
            Err(e) => {
                tracing::error!(error = %e, "reload failed; keeping the running configuration");
                Err(e)
            }
        }
    }
}
