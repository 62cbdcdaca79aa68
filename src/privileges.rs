//! The process's own capabilities: which of those portsight uses it has,
//! made effective.
//!
//! portsight needs no capability for its own namespace's socket table, its
//! probes and its HTTP server; `CAP_DAC_READ_SEARCH` and `CAP_SYS_PTRACE`
//! together let it see the owners of other users' sockets
//! (`/proc/<pid>/fd`). The systemd unit grants them as ambient
//! capabilities, which are effective already. The container image's binary
//! carries them as file capabilities in the *permitted* set only: the
//! kernel refuses to run a binary whose effective file capabilities are not
//! all available (a container that does not add them), while a permitted
//! one it cannot grant is just left out. [`raise`] makes what was permitted
//! effective.

use caps::{CapSet, Capability};

/// The capabilities portsight has a use for, and what each gives.
pub const USED: [(Capability, &str); 2] = [
    (
        Capability::CAP_DAC_READ_SEARCH,
        "list other users' /proc/<pid>/fd",
    ),
    (
        Capability::CAP_SYS_PTRACE,
        "read other users' /proc/<pid>/fd links",
    ),
];

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("capabilities: {0}")]
    Caps(#[from] caps::errors::CapsError),
}

/// Makes every permitted capability effective and returns which of
/// [`USED`] are effective now, in that order.
pub fn raise() -> Result<Vec<Capability>, Error> {
    let permitted = caps::read(None, CapSet::Permitted)?;
    let effective = caps::read(None, CapSet::Effective)?;
    if !permitted.is_subset(&effective) {
        caps::set(None, CapSet::Effective, &permitted)?;
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
            "without these capabilities the owners of other users' sockets stay unknown"
        );
    }
}
