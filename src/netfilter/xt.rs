//! Rules written through iptables-nft: in `nft -j` their iptables
//! extensions are `xt` statements without arguments (`{"xt": {"type":
//! "match", "name": "multiport"}}`), while `nft list ruleset` translates
//! the common ones into the nft words (`tcp dport { 8080, 9090 }`,
//! `ct state related,established`, `fib daddr type local`, `reject with tcp
//! reset`). Here each `xt` statement becomes what the rule's text says it
//! is, where the text says it unambiguously; every other one stays `Xt`,
//! which the matcher treats as "may match" and says so.

use super::ruleset::{Chain, Expr, Rule, Ruleset, Stmt, Verdict};

/// iptables targets that neither drop nor accept: the rule goes on.
const GOES_ON: &[&str] = &[
    "LOG",
    "NFLOG",
    "ULOG",
    "MARK",
    "CONNMARK",
    "TCPMSS",
    "CT",
    "NOTRACK",
    "TRACE",
    "CLASSIFY",
    "DSCP",
    "TOS",
    "TTL",
    "HL",
    "CHECKSUM",
    "SECMARK",
    "CONNSECMARK",
    "AUDIT",
    "IDLETIMER",
];

/// Rewrites every rule's `xt` statements from its text.
pub fn interpret(rs: &mut Ruleset) {
    let Ruleset { chains, text, .. } = rs;
    for chain in chains.iter_mut() {
        let key = (chain.family, chain.table.clone(), chain.name.clone());
        let Chain { rules, .. } = chain;
        for rule in rules.iter_mut() {
            if rule.stmts.iter().any(|s| matches!(s, Stmt::Xt { .. })) {
                let t = text.get(&(key.clone(), rule.handle)).map(String::as_str);
                translate(rule, t);
            }
        }
    }
}

/// One rule: its `xt` statements replaced where the text is unambiguous.
pub fn translate(rule: &mut Rule, text: Option<&str>) {
    let words: Vec<&str> = text.unwrap_or("").split_whitespace().collect();
    let native = Native::of(&rule.stmts);
    for s in &mut rule.stmts {
        let Stmt::Xt { kind, name } = s else { continue };
        let meaning = match (kind.as_str(), name.as_str()) {
            ("target", t) => target(t),
            ("match", "comment") => Some(Stmt::Neutral),
            ("match", "multiport") if native.dport == 0 => dport(&words),
            ("match", "conntrack" | "state") if native.ct == 0 => ct_state(&words),
            ("match", "addrtype") if native.fib == 0 => fib_daddr(&words),
            _ => None,
        };
        if let Some(m) = meaning {
            *s = m;
        }
    }
}

fn target(name: &str) -> Option<Stmt> {
    Some(match name {
        "REJECT" => Stmt::Verdict(Verdict::Reject),
        "DROP" => Stmt::Verdict(Verdict::Drop),
        "ACCEPT" => Stmt::Verdict(Verdict::Accept),
        "RETURN" => Stmt::Verdict(Verdict::Return),
        "NFQUEUE" => Stmt::Verdict(Verdict::Queue),
        n if GOES_ON.contains(&n) => Stmt::Neutral,
        _ => return None,
    })
}

/// How many native matches of a kind the rule's JSON has: a clause of the
/// text is the `xt` statement's only when the JSON has none of its kind.
#[derive(Default)]
struct Native {
    dport: usize,
    ct: usize,
    fib: usize,
}

impl Native {
    fn of(stmts: &[Stmt]) -> Native {
        let mut n = Native::default();
        for s in stmts {
            let Stmt::Match { left, .. } = s else {
                continue;
            };
            match left {
                Expr::Payload { field, .. } if field == "dport" => n.dport += 1,
                Expr::Ct(_) => n.ct += 1,
                Expr::Fib { .. } => n.fib += 1,
                _ => {}
            }
        }
        n
    }
}

/// The one place in `words` where `first second` starts a clause, if it
/// occurs exactly once and is not part of a concatenation (`a . b`).
fn only_clause(words: &[&str], first: &[&str], second: &str) -> Option<usize> {
    let at: Vec<usize> = (0..words.len().saturating_sub(1))
        .filter(|&i| first.contains(&words[i]) && words[i + 1] == second)
        .collect();
    let &[i] = at.as_slice() else { return None };
    let joined = i > 0 && words[i - 1] == ".";
    (!joined).then_some(i)
}

/// The operator and values after a clause's words: `!= { a, b }`, `a,b`,
/// `a`. `None` when a concatenation or anything unexpected follows.
fn values<'w>(words: &[&'w str]) -> Option<(&'static str, Vec<&'w str>)> {
    let (op, rest) = match words.first() {
        Some(&"!=" | &"!") => ("!=", &words[1..]),
        _ => ("==", words),
    };
    let (raw, after) = match rest.first() {
        Some(&"{") => {
            let end = rest.iter().position(|w| *w == "}")?;
            (&rest[1..end], rest.get(end + 1))
        }
        Some(_) => (&rest[..1], rest.get(1)),
        None => return None,
    };
    if after == Some(&".") {
        return None;
    }
    let list: Vec<&'w str> = raw
        .iter()
        .flat_map(|w| w.split(','))
        .filter(|w| !w.is_empty())
        .collect();
    (!list.is_empty()).then_some((op, list))
}

/// `multiport --dports`: `tcp dport { 8080, 9090 }`, `tcp dport 7000-7010`.
fn dport(words: &[&str]) -> Option<Stmt> {
    let l4 = ["tcp", "udp", "sctp", "dccp", "udplite"];
    let i = only_clause(words, &l4, "dport")?;
    let (op, items) = values(&words[i + 2..])?;
    let port = |s: &str| s.parse::<u16>().ok().map(|p| Expr::Num(p.into()));
    let mut set = Vec::new();
    for item in items {
        set.push(match item.split_once('-') {
            Some((lo, hi)) => Expr::Range(Box::new(port(lo)?), Box::new(port(hi)?)),
            None => port(item)?,
        });
    }
    Some(Stmt::Match {
        op: op.into(),
        left: Expr::Payload {
            protocol: words[i].to_string(),
            field: "dport".into(),
        },
        right: Expr::Set(set),
    })
}

/// `conntrack --ctstate` / `state --state`: `ct state related,established`,
/// `ct state ! invalid`. Only when the rule looks at no other `ct` key.
fn ct_state(words: &[&str]) -> Option<Stmt> {
    if words.iter().filter(|w| **w == "ct").count() != 1 {
        return None;
    }
    let i = only_clause(words, &["ct"], "state")?;
    let (op, items) = values(&words[i + 2..])?;
    let known = ["new", "established", "related", "invalid", "untracked"];
    if !items.iter().all(|s| known.contains(s)) {
        return None;
    }
    Some(Stmt::Match {
        op: op.into(),
        left: Expr::Ct("state".into()),
        right: Expr::List(items.iter().map(|s| Expr::Str((*s).to_string())).collect()),
    })
}

/// `addrtype --dst-type`: `fib daddr type local`.
fn fib_daddr(words: &[&str]) -> Option<Stmt> {
    if words.iter().filter(|w| **w == "fib").count() != 1 {
        return None;
    }
    let i = only_clause(words, &["fib"], "daddr")?;
    if words.get(i + 2) != Some(&"type") {
        return None;
    }
    let (op, items) = values(&words[i + 3..])?;
    Some(Stmt::Match {
        op: op.into(),
        left: Expr::Fib {
            result: "type".into(),
            flags: vec!["daddr".into()],
        },
        right: Expr::Set(items.iter().map(|s| Expr::Str((*s).to_string())).collect()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn xt(kind: &str, name: &str) -> Stmt {
        Stmt::Xt {
            kind: kind.into(),
            name: name.into(),
        }
    }

    fn rule(stmts: Vec<Stmt>, text: &str) -> Vec<Stmt> {
        let mut r = Rule {
            handle: 1,
            comment: None,
            stmts,
        };
        translate(&mut r, Some(text));
        r.stmts
    }

    #[test]
    fn multiport_becomes_a_set_of_ports_and_ranges() {
        let s = rule(
            vec![xt("match", "multiport"), xt("target", "REJECT")],
            "meta l4proto tcp tcp dport { 1-5, 80 } counter reject",
        );
        let want = Stmt::Match {
            op: "==".into(),
            left: Expr::Payload {
                protocol: "tcp".into(),
                field: "dport".into(),
            },
            right: Expr::Set(vec![
                Expr::Range(Box::new(Expr::Num(1)), Box::new(Expr::Num(5))),
                Expr::Num(80),
            ]),
        };
        assert_eq!(s, [want, Stmt::Verdict(Verdict::Reject)]);
    }

    #[test]
    fn ct_state_with_and_without_negation() {
        let s = rule(
            vec![xt("match", "conntrack")],
            "ct state related,established counter accept",
        );
        assert!(matches!(&s[0], Stmt::Match { op, right: Expr::List(l), .. }
            if op == "==" && l.len() == 2));
        let s = rule(
            vec![xt("match", "conntrack")],
            "tcp dport { 1-5, 80 } ct state ! invalid counter reject",
        );
        assert!(matches!(&s[0], Stmt::Match { op, .. } if op == "!="));
    }

    #[test]
    fn ambiguous_or_unknown_text_stays_xt() {
        let both =
            "meta l4proto tcp tcp sport . tcp dport { 0-65535 . 99, 99 . 0-65535 } counter drop";
        assert_eq!(
            rule(vec![xt("match", "multiport")], both)[0],
            xt("match", "multiport")
        );
        let ctdir = "ct state new ct direction original accept";
        assert_eq!(
            rule(vec![xt("match", "conntrack")], ctdir)[0],
            xt("match", "conntrack")
        );
        assert_eq!(
            rule(vec![xt("match", "owner")], "skuid 0 drop")[0],
            xt("match", "owner")
        );
        assert_eq!(
            rule(vec![xt("target", "TARPIT")], "")[0],
            xt("target", "TARPIT")
        );
        assert_eq!(rule(vec![xt("target", "LOG")], "log")[0], Stmt::Neutral);
    }

    #[test]
    fn a_native_dport_next_to_multiport_is_ambiguous() {
        let native = Stmt::Match {
            op: "==".into(),
            left: Expr::Payload {
                protocol: "tcp".into(),
                field: "dport".into(),
            },
            right: Expr::Num(22),
        };
        let s = rule(
            vec![native, xt("match", "multiport")],
            "tcp dport 22 tcp dport { 1, 2 } drop",
        );
        assert_eq!(s[1], xt("match", "multiport"));
    }
}
