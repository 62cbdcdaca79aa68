//! The batch probe protocol between peers: `POST /api/v1/probe`.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::probe::{Outcome, ProbeResult};

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
    pub target: String,
    pub success: bool,
    pub outcome: Outcome,
    pub duration_seconds: f64,
    pub error: Option<String>,
}

impl From<&ProbeResult> for TargetResult {
    fn from(r: &ProbeResult) -> Self {
        TargetResult {
            target: r.target.addr.to_string(),
            success: r.outcome == Outcome::Success,
            outcome: r.outcome,
            duration_seconds: r.duration.as_secs_f64(),
            error: r.error.clone(),
        }
    }
}
