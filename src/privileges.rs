//! The process's own capabilities: which of those portsight uses it has,
//! made effective, and passed on to the `nft` it runs.
//!
//! portsight needs no capability for its own namespace's socket table, its
//! probes and its HTTP server. `CAP_DAC_READ_SEARCH` and `CAP_SYS_PTRACE`
//! together let it see the owners of other users' sockets
//! (`/proc/<pid>/fd`) and open other users' `/proc/<pid>/ns/net`;
//! `CAP_SYS_ADMIN` lets it `setns` into other network namespaces
//! (containers, pods); `CAP_NET_ADMIN` lets `nft list ruleset` read the
//! firewall. The systemd unit grants them as ambient capabilities, which
//! are effective already and reach `nft`. The container image's binary
//! carries them as file capabilities in the *permitted* set only: the
//! kernel refuses to run a binary whose effective file capabilities are not
//! all available (a container that does not add them), while a permitted
//! one it cannot grant is just left out. [`raise`] makes what was permitted
//! effective, and ambient so that `nft` (no file capabilities) gets it too.

use caps::{CapSet, Capability};

/// The capabilities portsight has a use for, and what each gives.
pub const USED: [(Capability, &str); 4] = [
    (
        Capability::CAP_DAC_READ_SEARCH,
        "list other users' /proc/<pid>/fd",
    ),
    (Capability::CAP_NET_ADMIN, "read the nftables ruleset"),
    (
        Capability::CAP_SYS_ADMIN,
        "enter other network namespaces (setns) to read their sockets",
    ),
    (
        Capability::CAP_SYS_PTRACE,
        "read other users' /proc/<pid>/fd links and /proc/<pid>/ns/net",
    ),
];

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("capabilities: {0}")]
    Caps(#[from] caps::errors::CapsError),
}

/// Makes every permitted capability effective, and each permitted one of
/// [`USED`] inheritable and ambient; returns which of [`USED`] are
/// effective now, in that order. Call it before any thread starts: the
/// sets are per thread, and threads inherit them.
pub fn raise() -> Result<Vec<Capability>, Error> {
    let permitted = caps::read(None, CapSet::Permitted)?;
    let effective = caps::read(None, CapSet::Effective)?;
    if !permitted.is_subset(&effective) {
        caps::set(None, CapSet::Effective, &permitted)?;
    }
    let ambient = caps::read(None, CapSet::Ambient)?;
    for (cap, _) in USED {
        if permitted.contains(&cap) && !ambient.contains(&cap) {
            caps::raise(None, CapSet::Inheritable, cap)?;
            caps::raise(None, CapSet::Ambient, cap)?;
        }
    }
    let effective = caps::read(None, CapSet::Effective)?;
    Ok(USED
        .iter()
        .map(|(cap, _)| *cap)
        .filter(|cap| effective.contains(cap))
        .collect())
}

/// Logs what portsight can and cannot see with the capabilities it has.
pub fn report(have: &[Capability]) {
    let missing: Vec<String> = USED
        .iter()
        .filter(|(cap, _)| !have.contains(cap))
        .map(|(cap, why)| format!("{cap} ({why})"))
        .collect();
    if missing.is_empty() {
        tracing::info!(capabilities = ?have, "capabilities");
    } else {
        tracing::warn!(
            capabilities = ?have,
            missing = %missing.join(", "),
            "without these capabilities some evidence stays unknown (portsight_source_up)"
        );
    }
}
