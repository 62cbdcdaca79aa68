//! The host firewall in a diagnosis: which rules on the path of the failed
//! probes drop or reject them, and how that is said — the rule by name,
//! what to change, or that no rule on this host is to blame.

use std::net::SocketAddr;

use crate::netfilter::NamedRule;
use crate::probe::{ProbeResult, Vantage};

use super::Input;

/// What the host firewall says about the failed probes of the ports.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Firewall {
    /// The rules named for each failed target (by vantage and address).
    pub rules: Vec<((Vantage, SocketAddr), Vec<NamedRule>)>,
    /// Why the ruleset could not be read, when it could not.
    pub error: Option<String>,
}

impl Firewall {
    fn of(&self, r: &ProbeResult) -> Option<&[NamedRule]> {
        let key = (r.target.vantage, r.target.addr);
        self.rules
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.as_slice())
    }
}

/// The rules named for `failed`, each once, in path order.
pub(super) fn named(input: &Input, failed: &[&ProbeResult]) -> Vec<NamedRule> {
    let mut out: Vec<NamedRule> = Vec::new();
    let Some(fw) = input.firewall else {
        return out;
    };
    for r in failed {
        for rule in fw.of(r).unwrap_or_default() {
            if !out.contains(rule) {
                out.push(rule.clone());
            }
        }
    }
    out
}

/// What to say about the firewall for `failed` (refused or timed out):
/// the words that follow "it was" in the summary, and the fix.
pub(super) struct Blame {
    pub phrase: String,
    pub fix: String,
}

/// `verb` is `rejected` or `dropped`. `None` when there is nothing to name
/// and nothing to rule out (the ruleset was not read, or a local probe
/// failed with no rule on this host's path).
pub(super) fn blame(input: &Input, failed: &[&ProbeResult], verb: &str) -> Option<Blame> {
    let fw = input.firewall?;
    let rules = named(input, failed);
    let sure: Vec<&NamedRule> = rules.iter().filter(|r| r.may_match.is_none()).collect();
    let port = input.port;
    if let Some(first) = sure.first() {
        let names = sure.iter().map(|r| r.to_string()).collect::<Vec<_>>();
        return Some(Blame {
            phrase: format!("{verb} by {}", names.join(" and ")),
            fix: fix(first, port),
        });
    }
    if let Some(first) = rules.first() {
        let why = first.may_match.as_deref().unwrap_or("");
        return Some(Blame {
            phrase: format!("perhaps {verb} by {first} (it may match: {why})"),
            fix: format!("check {}; {}", short(first), fix(first, port)),
        });
    }
    let outside_only = failed.iter().all(|r| r.target.vantage == Vantage::External);
    (fw.error.is_none() && outside_only).then(|| Blame {
        phrase: format!(
            "{verb} on the path, not on this host: no rule of this host's firewall matches the packet"
        ),
        fix: format!(
            "open port {port} where it is blocked between the outside and this host: a cloud security group, a network ACL, or a firewall on the way"
        ),
    })
}

/// `inet fw input handle 7`, or `chain ip t4 c`.
fn short(r: &NamedRule) -> String {
    let f = r.family.as_str();
    match r.handle {
        Some(h) => format!("{f} {} {} handle {h}", r.table, r.chain),
        None => format!("chain {f} {} {}", r.table, r.chain),
    }
}

/// What to change: the rule, or the chain whose policy drops the packet.
fn fix(r: &NamedRule, port: u16) -> String {
    let (f, t, c) = (r.family.as_str(), &r.table, &r.chain);
    let how = if r.iptables {
        " (the table is written by iptables-nft: change it with the tool that wrote it — ufw, firewalld, Docker — or with iptables, not with nft)"
    } else {
        ""
    };
    match r.handle {
        Some(h) => format!(
            "delete or narrow that rule (nft delete rule {f} {t} {c} handle {h}), or accept tcp dport {port} in chain {f} {t} {c} before it{how}"
        ),
        None => format!(
            "chain {f} {t} {c} drops what no rule accepts: add a rule that accepts tcp dport {port} (nft add rule {f} {t} {c} tcp dport {port} accept){how}"
        ),
    }
}

/// The evidence line about the firewall, when it could not be read.
pub(super) fn evidence(input: &Input) -> Option<String> {
    let err = input.firewall?.error.as_ref()?;
    Some(format!("firewall: the ruleset could not be read ({err})"))
}
