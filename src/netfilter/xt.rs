//! Rules written through iptables-nft: in `nft -j` their iptables
//! extensions are `xt` statements without arguments (`{"xt": {"type":
//! "match", "name": "multiport"}}`), while `nft list ruleset` translates
//! the common ones into the nft words (`tcp dport { 8080, 9090 }`,
//! `ct state related,established`, `fib daddr type local`, `reject with tcp
//! reset`). Here each `xt` statement becomes what the rule's text says it
//! is, where the text says it unambiguously; every other one stays `Xt`,
//! which the matcher treats as "may match" and says so.

use super::ruleset::{Chain, Expr, Family, Nat, NatKind, Rule, Ruleset, Stmt, Verdict};

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
            ("target", "DNAT" | "REDIRECT") => nat(&words),
            ("target", t) => target(t),
            ("match", "comment") => Some(Stmt::Neutral),
            // `-p tcp -m tcp` with no option of its own: nothing but the
            // protocol, which the rule matches already.
            ("match", p @ ("tcp" | "udp")) if !has_clause(&words, p) => Some(Stmt::Neutral),
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

/// Whether `proto` starts a clause of the text (`tcp dport 80`), other
/// than as the value of `meta l4proto tcp`.
fn has_clause(words: &[&str], proto: &str) -> bool {
    (0..words.len()).any(|i| words[i] == proto && (i == 0 || words[i - 1] != "l4proto"))
}

/// `dnat to 10.77.60.2:8080`, `dnat ip to 10.77.50.3`, `dnat to
/// [fd77::2]:80`, `redirect to :22`, `redirect`: the one nat clause of
/// the text. `None` when there is not exactly one, or it says more than an
/// address and port (a map, a range of addresses).
pub fn nat(words: &[&str]) -> Option<Stmt> {
    let at: Vec<usize> = (0..words.len())
        .filter(|&i| matches!(words[i], "dnat" | "redirect"))
        .collect();
    let &[i] = at.as_slice() else { return None };
    let kind = if words[i] == "dnat" {
        NatKind::Dnat
    } else {
        NatKind::Redirect
    };
    let mut rest = &words[i + 1..];
    let family = match rest.first() {
        Some(&"ip") => Some(Family::Ip),
        Some(&"ip6") => Some(Family::Ip6),
        _ => None,
    };
    if family.is_some() {
        rest = &rest[1..];
    }
    let spec = match rest {
        ["to", spec, ..] => Some(*spec),
        _ => None,
    };
    let (addr, port) = match (kind, spec) {
        (NatKind::Redirect, None) => (None, None),
        (NatKind::Redirect, Some(s)) => (None, Some(port_expr(s.strip_prefix(':')?)?)),
        (NatKind::Dnat, Some(s)) => address_and_port(s)?,
        (NatKind::Dnat, None) => return None,
    };
    Some(Stmt::Nat(Nat {
        kind,
        family,
        addr,
        port,
    }))
}

/// `10.77.50.2:80`, `10.77.50.2`, `[fd77::2]:80`, `fd77::2`, `10.77.50.2:80-90`.
fn address_and_port(spec: &str) -> Option<(Option<Expr>, Option<Expr>)> {
    let (addr, port) = if let Some(rest) = spec.strip_prefix('[') {
        let (a, after) = rest.split_once(']')?;
        (a, after.strip_prefix(':'))
    } else if spec.matches(':').count() == 1 {
        let (a, p) = spec.split_once(':')?;
        (a, Some(p))
    } else {
        (spec, None)
    };
    let addr: std::net::IpAddr = addr.parse().ok()?;
    let port = match port {
        Some(p) => Some(port_expr(p)?),
        None => None,
    };
    Some((Some(Expr::Str(addr.to_string())), port))
}

/// `80` or `80-90`.
fn port_expr(s: &str) -> Option<Expr> {
    let num = |s: &str| s.parse::<u16>().ok().map(|p| Expr::Num(p.into()));
    match s.split_once('-') {
        Some((lo, hi)) => Some(Expr::Range(Box::new(num(lo)?), Box::new(num(hi)?))),
        None => num(s),
    }
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

    fn nat_of(kind: NatKind, addr: Option<&str>, port: Option<Expr>) -> Stmt {
        Stmt::Nat(Nat {
            kind,
            family: None,
            addr: addr.map(|a| Expr::Str(a.into())),
            port,
        })
    }

    #[test]
    fn dnat_and_redirect_targets_from_their_text() {
        let dnat = || vec![xt("match", "tcp"), xt("target", "DNAT")];
        let s = rule(dnat(), "meta l4proto tcp counter dnat to 10.77.60.2:8080");
        let want = nat_of(NatKind::Dnat, Some("10.77.60.2"), Some(Expr::Num(8080)));
        assert_eq!(s, [Stmt::Neutral, want]);
        let s = rule(
            dnat(),
            "iifname != \"docker0\" tcp dport 8443 dnat to 10.77.50.3",
        );
        assert_eq!(
            s[0],
            xt("match", "tcp"),
            "a tcp clause: not only the protocol"
        );
        assert_eq!(s[1], nat_of(NatKind::Dnat, Some("10.77.50.3"), None));
        let s = rule(vec![xt("target", "DNAT")], "dnat to [fd77:50::2]:80-90");
        let range = Expr::Range(Box::new(Expr::Num(80)), Box::new(Expr::Num(90)));
        assert_eq!(s[0], nat_of(NatKind::Dnat, Some("fd77:50::2"), Some(range)));
        let s = rule(
            vec![xt("target", "REDIRECT")],
            "tcp dport 80 redirect to :3128",
        );
        assert_eq!(s[0], nat_of(NatKind::Redirect, None, Some(Expr::Num(3128))));
        let s = rule(vec![xt("target", "REDIRECT")], "redirect");
        assert_eq!(s[0], nat_of(NatKind::Redirect, None, None));
    }

    #[test]
    fn a_dnat_whose_text_nft_could_not_translate_stays_xt() {
        // ip6tables' DNAT as nft 1.0.6 prints it: "XT target DNAT not found".
        let s = rule(
            vec![xt("target", "DNAT")],
            "iifname != \"docker0\" tcp dport 8080 counter",
        );
        assert_eq!(s[0], xt("target", "DNAT"));
        let s = rule(vec![xt("target", "DNAT")], "dnat to somewhere");
        assert_eq!(s[0], xt("target", "DNAT"));
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
