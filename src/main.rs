//! The `portsight` command: argument parsing, logging, signals and wiring.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use portsight::config::{self, Config};
use portsight::engine::{self, Engine, Flags, Live, PortKey};
use portsight::metrics::Metrics;
use portsight::web::{Handles, WebConfig};
use tokio::signal::unix::{SignalKind, signal};

#[derive(Parser)]
#[command(
    name = "portsight",
    version,
    about = "Is this port reachable, from where, and if not, why?"
)]
struct Cli {
    /// Log level: error, warn, info, debug, trace (RUST_LOG overrides).
    /// Default: info for serve, warn otherwise.
    #[arg(long = "log.level", global = true)]
    log_level: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the sidecar: scan, probe, and serve /metrics.
    Serve {
        /// Config file (TOML); without it the embedded default applies.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Address to listen on, overriding web.listen_address.
        #[arg(long = "web.listen-address")]
        listen_address: Option<String>,
        /// Serve POST /-/reload, overriding web.enable_lifecycle.
        #[arg(long = "web.enable-lifecycle")]
        enable_lifecycle: bool,
        /// exporter-toolkit web-config.yml (TLS, basic auth), overriding web.config_file.
        #[arg(long = "web.config.file", value_name = "FILE")]
        web_config_file: Option<PathBuf>,
    },
    /// One scan, probe round and diagnosis; exit 0 when every port is ok, 1 when not.
    Check {
        /// Ports to check, as PORT (TCP), PORT/tcp or PORT/udp (default: every
        /// watched port). Ports the config does not list are checked with
        /// expect = "public".
        #[arg(value_name = "PORT[/udp]")]
        ports: Vec<PortKey>,
        /// Config file (TOML); without it the embedded default applies.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Print JSON with the fields of /api/v1/status.
        #[arg(long)]
        json: bool,
        /// A remote portsight (http://HOST:PORT or https://HOST:PORT) to ask
        /// for the outside view; repeatable.
        #[arg(long = "peer", value_name = "URL")]
        peers: Vec<String>,
        /// The peer's bearer token (default: peers.token_file of the config).
        #[arg(long = "peer.token-file", value_name = "FILE")]
        peer_token_file: Option<PathBuf>,
        /// CA certificates (PEM) for https peers (default: the system's bundle).
        #[arg(long = "peer.ca-file", value_name = "FILE")]
        peer_ca_file: Option<PathBuf>,
    },
    /// Check or print configuration.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Validate a config file; exit 2 with the reason when it is bad.
    Check { file: PathBuf },
    /// Print the embedded default configuration.
    Default,
}

/// glibc's defaults suit short programs, not a long-running one whose
/// scrapes build and drop multi-megabyte buffers on several threads: a
/// freed buffer raises the mmap threshold (to 32 MiB), after which such
/// buffers come from per-thread arenas and stay resident, fragmented. One
/// arena (every thread's small allocations share free space: a snapshot is
/// built on whichever thread ran the round) and a fixed 128 KiB threshold
/// (large buffers are mapped and returned to the kernel when freed) halve
/// the resident memory of a steady `serve`; a second arena costs about a
/// third more per target, for no CPU measurably saved (BENCHMARKS section 11). A setting the user made
/// (`MALLOC_ARENA_MAX`, `MALLOC_MMAP_THRESHOLD_`, `MALLOC_TRIM_THRESHOLD_`,
/// or any `glibc.malloc` tunable in `GLIBC_TUNABLES`) is left as glibc
/// applied it.
fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let tunables = std::env::var("GLIBC_TUNABLES").unwrap_or_default();
        let unset =
            |name: &str| !tunables.contains("glibc.malloc.") && std::env::var_os(name).is_none();
        for (name, param, value) in [
            ("MALLOC_ARENA_MAX", libc::M_ARENA_MAX, 1),
            ("MALLOC_MMAP_THRESHOLD_", libc::M_MMAP_THRESHOLD, 128 * 1024),
            ("MALLOC_TRIM_THRESHOLD_", libc::M_TRIM_THRESHOLD, 128 * 1024),
        ] {
            if unset(name) {
                // SAFETY: mallopt only sets an allocator parameter; no
                // other thread exists yet.
                unsafe {
                    libc::mallopt(param, value);
                }
            }
        }
    }
}

fn main() -> ExitCode {
    tune_allocator();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    let default_level = match cli.command {
        Command::Serve { .. } => "info",
        _ => "warn",
    };
    init_logging(cli.log_level.as_deref().unwrap_or(default_level));
    match cli.command {
        Command::Config {
            command: ConfigCommand::Default,
        } => {
            print!("{}", config::DEFAULT_TOML);
            ExitCode::SUCCESS
        }
        Command::Config {
            command: ConfigCommand::Check { file },
        } => config_check(&file),
        Command::Check {
            ports,
            config,
            json,
            peers,
            peer_token_file,
            peer_ca_file,
        } => {
            let cfg = match Config::load(config.as_deref()) {
                Ok(c) => c,
                Err(e) => return bad_config(&e),
            };
            raise_capabilities();
            let peers = PeerFlags {
                urls: peers,
                token_file: peer_token_file,
                ca_file: peer_ca_file,
            };
            match check(cfg, &ports, json, peers) {
                Ok(true) => ExitCode::SUCCESS,
                Ok(false) => ExitCode::from(1),
                Err(e) => {
                    eprintln!("portsight: {e:#}");
                    ExitCode::from(2)
                }
            }
        }
        Command::Serve {
            config,
            listen_address,
            enable_lifecycle,
            web_config_file,
        } => {
            let listen_address = match listen_address
                .map(|a| config::parse_listen_address(&a))
                .transpose()
            {
                Ok(a) => a,
                Err(reason) => {
                    eprintln!("portsight: --web.listen-address: {reason}");
                    return ExitCode::from(2);
                }
            };
            let flags = Flags {
                listen_address,
                enable_lifecycle,
                web_config_file,
            };
            serve_command(config, flags)
        }
    }
}

/// Makes the capabilities portsight was permitted effective (see
/// `privileges`), and says which it has. Called once everything is loaded
/// and before any thread starts: threads inherit the calling thread's set.
fn raise_capabilities() {
    match portsight::privileges::raise() {
        Ok(have) => portsight::privileges::report(&have),
        Err(e) => tracing::warn!("{e}"),
    }
}

fn bad_config(e: &config::Error) -> ExitCode {
    eprintln!("portsight: bad config: {e}");
    ExitCode::from(2)
}

/// `portsight config check FILE`: the config, and the web config it names.
fn config_check(file: &std::path::Path) -> ExitCode {
    match Config::load(Some(file)) {
        Ok(cfg) => {
            if !cfg.web.config_file.as_os_str().is_empty()
                && let Err(e) = WebConfig::load(&cfg.web.config_file)
            {
                eprintln!("portsight: bad web config: {e}");
                return ExitCode::from(2);
            }
            println!("{}: OK", file.display());
            ExitCode::SUCCESS
        }
        Err(e) => bad_config(&e),
    }
}

/// `portsight serve`: loads everything it needs (exit 2 when any of it is
/// bad), then serves until SIGINT or SIGTERM.
fn serve_command(file: Option<PathBuf>, flags: Flags) -> ExitCode {
    match portsight::descriptors::raise_to_hard_limit() {
        Ok((before, after)) if before != after => {
            tracing::info!(
                before,
                after,
                "raised the soft descriptor limit to the hard limit"
            );
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "cannot raise the descriptor limit"),
    }
    let live = match Live::load(file, flags) {
        Ok(l) => Arc::new(l),
        Err(e) => return bad_config(&e),
    };
    let web_file = live.current().config.web.config_file.clone();
    let web_config = if web_file.as_os_str().is_empty() {
        WebConfig::default()
    } else {
        match WebConfig::load(&web_file) {
            Ok(w) => w,
            Err(e) => {
                eprintln!("portsight: bad web config: {e}");
                return ExitCode::from(2);
            }
        }
    };
    let metrics = match Metrics::new() {
        Ok(m) => Arc::new(m),
        Err(e) => {
            eprintln!("portsight: {e}");
            return ExitCode::FAILURE;
        }
    };
    metrics.set_reload(true, std::time::SystemTime::now());
    raise_capabilities();
    match serve(live, metrics, web_config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("portsight: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `check`'s `--peer`, `--peer.token-file` and `--peer.ca-file`.
struct PeerFlags {
    urls: Vec<String>,
    token_file: Option<PathBuf>,
    ca_file: Option<PathBuf>,
}

#[tokio::main]
async fn check(
    cfg: Config,
    ports: &[PortKey],
    json: bool,
    peers: PeerFlags,
) -> anyhow::Result<bool> {
    let snapshot =
        portsight::check::run(cfg, ports, &peers.urls, peers.token_file, peers.ca_file).await?;
    let selected = portsight::check::selected(&snapshot, ports);
    if json {
        let shown: Vec<PortKey> = selected.iter().map(|p| p.key()).collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&snapshot.status(Some(&shown)))?
        );
    } else {
        let color = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
        print!("{}", portsight::check::table(&selected, color));
    }
    Ok(portsight::check::all_ok(&selected))
}

fn init_logging(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(|| portsight::escape::LogWriter(std::io::stderr()))
        .init();
}

#[tokio::main]
async fn serve(
    live: Arc<Live>,
    metrics: Arc<Metrics>,
    web_config: WebConfig,
) -> anyhow::Result<()> {
    let listen = live.current().config.web.listen_address;
    let listener =
        portsight::web::bind(listen).with_context(|| format!("listening on {listen}"))?;
    tracing::info!(
        address = %listener.local_addr()?,
        tls = web_config.tls().is_some(),
        basic_auth = web_config.basic_auth().is_some(),
        version = env!("CARGO_PKG_VERSION"),
        "portsight listening"
    );

    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sighup = signal(SignalKind::hangup())?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let engine = Arc::new(Engine::new(Arc::clone(&live)));
    let handles = Handles {
        snapshot: engine.subscribe(),
        metrics: Arc::clone(&metrics),
        live,
    };
    let engine_task = tokio::spawn(engine::run::run(engine, metrics, stopped(stop_rx.clone())));
    let reloader = {
        let handles = handles.clone();
        tokio::spawn(async move {
            while sighup.recv().await.is_some() {
                tracing::info!("SIGHUP: reloading configuration");
                let _ = handles.reload();
            }
        })
    };
    let web = tokio::spawn(portsight::web::serve(
        listener,
        handles,
        web_config,
        stopped(stop_rx),
    ));
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: shutting down"),
        _ = sigterm.recv() => tracing::info!("SIGTERM: shutting down"),
    }
    let _ = stop_tx.send(true);
    reloader.abort();
    let _ = engine_task.await;
    let _ = web.await;
    tracing::info!("stopped");
    Ok(())
}
