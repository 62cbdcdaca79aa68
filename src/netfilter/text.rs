//! The text of `nft -a list ruleset`: each rule as `nft` prints it, by its
//! chain and handle (the JSON has no text, and iptables-nft's `xt`
//! statements come without their arguments there, while the text
//! translates them), and which tables iptables-nft wrote.

use std::collections::HashMap;

use super::ruleset::{ChainKey, Family};

/// What the text form adds to the JSON.
#[derive(Debug, Default)]
pub struct Text {
    pub rules: HashMap<(ChainKey, u64), String>,
    pub iptables: Vec<(Family, String)>,
}

/// A block of the text being read.
enum Block {
    Table(Family, String),
    Chain(String),
    /// A set, map, flowtable, …
    Other,
}

/// Parses `nft -a list ruleset`. Lines it does not recognise are ignored.
pub fn parse(text: &str) -> Text {
    let mut out = Text::default();
    let mut stack: Vec<Block> = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        let (body, handle) = match line.rsplit_once(" # handle ") {
            Some((body, h)) => (body, h.trim().parse::<u64>().ok()),
            None => (line, None),
        };
        if body.ends_with('{') {
            let mut words = body.split_whitespace();
            stack.push(match (words.next(), words.next(), words.next()) {
                (Some("table"), Some(f), Some(name)) => match Family::parse(f) {
                    Some(f) => Block::Table(f, name.to_string()),
                    None => Block::Other,
                },
                (Some("chain"), Some(name), _) => Block::Chain(name.to_string()),
                _ => Block::Other,
            });
        } else if body == "}" {
            stack.pop();
        } else if let Some(table) = managed_by_iptables(line) {
            if !out.iptables.contains(&table) {
                out.iptables.push(table);
            }
        } else if let ([.., Block::Table(f, t), Block::Chain(c)], Some(h)) =
            (stack.as_slice(), handle)
        {
            let key = (*f, t.clone(), c.clone());
            out.rules.insert((key, h), tidy(body));
        }
    }
    out
}

/// `# Warning: table ip filter is managed by iptables-nft, do not touch!`
/// (nft 1.0.6 prints it on stderr, once per such table): the table.
fn managed_by_iptables(line: &str) -> Option<(Family, String)> {
    let rest = line.strip_prefix("# Warning: table ")?;
    let (table, _) = rest.split_once(" is managed by iptables-nft")?;
    let (f, name) = table.split_once(' ')?;
    Some((Family::parse(f)?, name.to_string()))
}

/// The rule without its counter's values (they change with every packet)
/// and without its comment (named apart).
fn tidy(rule: &str) -> String {
    let mut words: Vec<&str> = Vec::new();
    let mut it = rule.split(' ').peekable();
    while let Some(w) = it.next() {
        if (w == "packets" || w == "bytes")
            && words
                .last()
                .is_some_and(|l| *l == "counter" || l.chars().all(|c| c.is_ascii_digit()))
        {
            it.next();
            continue;
        }
        words.push(w);
    }
    let text = words.join(" ");
    match text.find(" comment \"") {
        Some(i) if text.ends_with('"') => text[..i].to_string(),
        _ => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIXTURE: &str = include_str!("testdata/ruleset.txt");

    fn key(chain: &str) -> ChainKey {
        (Family::Inet, "fw".into(), chain.into())
    }

    #[test]
    fn rules_by_handle_without_counters_or_comments() {
        let t = parse(FIXTURE);
        assert_eq!(
            t.rules[&(key("input"), 10)],
            "fib daddr type local tcp dport @web reject with tcp reset"
        );
        assert_eq!(
            t.rules[&(key("input"), 14)],
            "tcp dport 8085 counter jump web_in"
        );
        assert_eq!(t.rules[&(key("web_in"), 7)], "return");
        let policy = parse(include_str!("testdata/policy.txt"));
        assert_eq!(
            policy.rules[&((Family::Ip, "t4".into(), "c".into()), 2)],
            "tcp dport 22 accept"
        );
        assert!(
            !t.rules.keys().any(|(_, h)| *h == 3),
            "set headers are not rules"
        );
    }

    #[test]
    fn iptables_nft_tables_are_known_by_their_warning() {
        let t = parse(
            "table ip filter { # handle 5\n\
             \t# Warning: table ip filter is managed by iptables-nft, do not touch!\n\
             \tchain INPUT { # handle 1\n\
             \t\ttype filter hook input priority filter; policy accept;\n\
             \t\tmeta l4proto tcp tcp dport 8080 counter packets 3 bytes 180 reject with tcp reset # handle 4\n\
             \t}\n}\n",
        );
        assert_eq!(t.iptables, [(Family::Ip, "filter".to_string())]);
        // As nft 1.0.6 prints it: on stderr, read before the ruleset.
        let warned = parse(
            "# Warning: table ip6 filter is managed by iptables-nft, do not touch!\n\n\
             table ip6 filter { # handle 2\n}\ntable inet fw { # handle 3\n}\n",
        );
        assert_eq!(warned.iptables, [(Family::Ip6, "filter".to_string())]);
        let k = (Family::Ip, "filter".to_string(), "INPUT".to_string());
        assert_eq!(
            t.rules[&(k, 4)],
            "meta l4proto tcp tcp dport 8080 counter reject with tcp reset"
        );
    }
}
