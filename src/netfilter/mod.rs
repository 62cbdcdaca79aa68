//! The firewall: the nftables ruleset (rules written through iptables-nft
//! appear there too), read-only, and the rules that match a probe's packet
//! on its path. Reading ([`read`]) is apart from parsing ([`ruleset`],
//! [`text`]) and from matching ([`eval`]), which are pure.

pub mod eval;
pub mod forwards;
pub mod packet;
pub mod read;
pub mod ruleset;
pub mod text;
pub mod xt;

use std::fmt;

use serde::Serialize;

pub use packet::{Packet, TCP, UDP};
pub use read::Reader;
pub use ruleset::{Family, Ruleset, Verdict};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("cannot run nft: {0}")]
    Spawn(String),
    #[error("nft failed: {0}")]
    Nft(String),
    #[error("nft printed no ruleset portsight understands: {0}")]
    Json(String),
}

/// What a named rule does to the packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RuleVerdict {
    Drop,
    Reject,
    Queue,
}

impl RuleVerdict {
    pub fn as_str(self) -> &'static str {
        match self {
            RuleVerdict::Drop => "drop",
            RuleVerdict::Reject => "reject",
            RuleVerdict::Queue => "queue",
        }
    }
}

/// A rule (or a chain's policy) on the packet's path that drops or rejects
/// it: what a person would have to change.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct NamedRule {
    pub family: Family,
    pub table: String,
    pub chain: String,
    /// `None` for the chain's policy.
    pub handle: Option<u64>,
    pub verdict: RuleVerdict,
    pub comment: Option<String>,
    /// The rule as `nft` prints it; `policy drop` for the policy.
    pub rule: String,
    /// Why the rule only may match the packet; `None` when it does.
    pub may_match: Option<String>,
    /// Written by iptables-nft (ufw, firewalld, Docker).
    #[serde(skip)]
    pub iptables: bool,
}

impl fmt::Display for NamedRule {
    /// `rule 'block-web' (inet fw input, handle 7: tcp dport 8080 reject)`,
    /// or `the policy of chain ip t4 c (policy drop)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let where_ = format!("{} {} {}", self.family.as_str(), self.table, self.chain);
        match self.handle {
            None => write!(f, "the policy of chain {where_} (policy drop)"),
            Some(h) => {
                f.write_str("rule ")?;
                if let Some(c) = &self.comment {
                    write!(f, "'{c}' ")?;
                }
                write!(f, "({where_}, handle {h}: {})", self.rule)
            }
        }
    }
}

/// The rules on `packet`'s path through `rs` that drop or reject it: those
/// that may, then the one that does (if one surely does).
pub fn name(rs: &Ruleset, packet: &Packet) -> Vec<NamedRule> {
    let mut out: Vec<NamedRule> = Vec::new();
    for hit in eval::evaluate(rs, packet) {
        let verdict = match hit.verdict {
            Verdict::Drop => RuleVerdict::Drop,
            Verdict::Reject => RuleVerdict::Reject,
            Verdict::Queue => RuleVerdict::Queue,
            _ => continue,
        };
        let c = hit.chain;
        let rule = match hit.rule {
            None => "policy drop".to_string(),
            Some(r) => rs
                .rule_text(c, r.handle)
                .map_or_else(|| format!("{verdict:?}").to_lowercase(), str::to_string),
        };
        let named = NamedRule {
            family: c.family,
            table: c.table.clone(),
            chain: c.name.clone(),
            handle: hit.rule.map(|r| r.handle),
            verdict,
            comment: hit.rule.and_then(|r| r.comment.clone()),
            rule,
            may_match: hit.maybe,
            iptables: rs.managed_by_iptables(c.family, &c.table),
        };
        if !out.iter().any(|n| {
            n.handle == named.handle
                && n.chain == named.chain
                && n.table == named.table
                && n.family == named.family
        }) {
            out.push(named);
        }
    }
    out
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod proptests;
