//! The batch probe protocol between peers: `POST /api/v1/probe`.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::probe::{Attempt, Outcome, ProbeResult};

/// Most targets one batch may hold.
pub const MAX_TARGETS: usize = 10_000;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchRequest {
    /// `IP:PORT` each.
    pub targets: Vec<String>,
    /// Per-target connect timeout, like `"2s"`; default: the server's `probe.timeout`.
    #[serde(
        default,
        with = "humantime_serde::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub timeout: Option<Duration>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BatchResponse {
    pub results: Vec<TargetResult>,
}

/// One probe's result, as `/probe?format=json` and the batch answer it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TargetResult {
    pub success: bool,
    #[serde(flatten)]
    pub attempt: Attempt,
}

impl From<&ProbeResult> for TargetResult {
    fn from(r: &ProbeResult) -> Self {
        TargetResult {
            success: r.outcome == Outcome::Success,
            attempt: Attempt::from(r),
        }
    }
}
