//! Typed label sets. Each visits its labels in alphabetical order of their
//! names (the order the prometheus crate writes them in), and
//! [`write_labels`] is the one place that writes and escapes them.

/// A set of labels.
pub(super) trait Labels {
    /// Calls `f` with each label's name and value, in alphabetical order of
    /// the names.
    fn each(&self, f: &mut impl FnMut(&'static str, &str));

    /// These labels and one more, e.g. a state set's `cause` or `outcome`.
    fn with<'v>(self, name: &'static str, value: &'v str) -> With<'v, Self>
    where
        Self: Sized,
    {
        With {
            inner: self,
            name,
            value,
        }
    }
}

/// No labels: the base of a family with one label, `().with(name, value)`.
impl Labels for () {
    fn each(&self, _: &mut impl FnMut(&'static str, &str)) {}
}

/// A label set and one more label, put in its place among the others.
#[derive(Clone, Copy)]
pub(super) struct With<'v, L> {
    inner: L,
    name: &'static str,
    value: &'v str,
}

impl<L: Labels> Labels for With<'_, L> {
    fn each(&self, f: &mut impl FnMut(&'static str, &str)) {
        let mut pending = true;
        self.inner.each(&mut |name, value| {
            if pending && self.name < name {
                f(self.name, self.value);
                pending = false;
            }
            f(name, value);
        });
        if pending {
            f(self.name, self.value);
        }
    }
}

/// Port labels: the identity of a watched port.
#[derive(Clone, Copy)]
pub(super) struct PortLabels<'a> {
    pub name: &'a str,
    /// The namespace's name; empty (so absent) for the host's own.
    pub netns: &'a str,
    /// The port number, as text.
    pub port: &'a str,
    pub protocol: &'static str,
}

impl Labels for PortLabels<'_> {
    fn each(&self, f: &mut impl FnMut(&'static str, &str)) {
        f("name", self.name);
        if !self.netns.is_empty() {
            f("netns", self.netns);
        }
        f("port", self.port);
        f("protocol", self.protocol);
    }
}

/// Probe labels: port labels and where a probe went from and to.
#[derive(Clone, Copy)]
pub(super) struct ProbeLabels<'a> {
    pub port: PortLabels<'a>,
    /// `local`, or the peer that probed.
    pub source: &'a str,
    /// `IP:PORT`.
    pub target: &'a str,
    pub vantage: &'static str,
}

impl Labels for ProbeLabels<'_> {
    fn each(&self, f: &mut impl FnMut(&'static str, &str)) {
        self.port.each(f);
        f("source", self.source);
        f("target", self.target);
        f("vantage", self.vantage);
    }
}

/// A single label, for families with one (`reason`).
#[derive(Clone, Copy)]
pub(super) struct One<'a> {
    pub name: &'static str,
    pub value: &'a str,
}

impl Labels for One<'_> {
    fn each(&self, f: &mut impl FnMut(&'static str, &str)) {
        f(self.name, self.value);
    }
}

/// Listener labels: one bind address of a port.
#[derive(Clone, Copy)]
pub(super) struct ListenerLabels<'a> {
    pub address: &'a str,
    /// As in [`PortLabels`].
    pub netns: &'a str,
    /// The port number, as text.
    pub port: &'a str,
    pub protocol: &'static str,
}

impl Labels for ListenerLabels<'_> {
    fn each(&self, f: &mut impl FnMut(&'static str, &str)) {
        f("address", self.address);
        if !self.netns.is_empty() {
            f("netns", self.netns);
        }
        f("port", self.port);
        f("protocol", self.protocol);
    }
}

/// Firewall rule labels: port labels and the rule a diagnosis names.
#[derive(Clone, Copy)]
pub(super) struct RuleLabels<'a> {
    pub port: PortLabels<'a>,
    pub chain: &'a str,
    pub family: &'static str,
    /// Empty for a chain's policy.
    pub handle: &'a str,
    pub table: &'a str,
    pub verdict: &'static str,
}

impl Labels for RuleLabels<'_> {
    fn each(&self, f: &mut impl FnMut(&'static str, &str)) {
        f("chain", self.chain);
        f("family", self.family);
        f("handle", self.handle);
        self.port.each(f);
        f("table", self.table);
        f("verdict", self.verdict);
    }
}

/// Writes `{name="value",…}`, values escaped.
pub(super) fn write_labels(out: &mut String, labels: &impl Labels) {
    out.push('{');
    let mut last = "";
    labels.each(&mut |name, value| {
        debug_assert!(last < name, "label {name:?} written after {last:?}");
        if !last.is_empty() {
            out.push(',');
        }
        last = name;
        push_label(out, name, value);
    });
    out.push('}');
}

/// A label set escaped and written once, for the many samples that carry
/// it (each outcome of a target, each cause of a port): a sample then
/// copies the text instead of visiting and escaping every value again.
#[derive(Debug, Default)]
pub(super) struct Written {
    /// `name="value",…`, without the braces.
    text: String,
    /// Where each label starts in `text`, and its name.
    starts: Vec<(&'static str, usize)>,
}

impl Written {
    /// `labels`, written over what this held (its buffers are kept).
    pub fn set(&mut self, labels: &impl Labels) -> &Written {
        self.text.clear();
        self.starts.clear();
        labels.each(&mut |name, value| {
            if !self.text.is_empty() {
                self.text.push(',');
            }
            self.starts.push((name, self.text.len()));
            push_label(&mut self.text, name, value);
        });
        self
    }

    pub fn of(labels: &impl Labels) -> Written {
        let mut w = Written::default();
        w.set(labels);
        w
    }

    /// Writes `{…}`: these labels, with `extra` in its place among them
    /// when given. The same text as [`write_labels`] of the labels
    /// `.with(extra)`.
    pub fn write(&self, out: &mut String, extra: Option<(&'static str, &str)>) {
        out.push('{');
        match extra {
            None => out.push_str(&self.text),
            Some((name, value)) => {
                let at = self.starts.iter().find(|(n, _)| name < *n).map(|(_, i)| *i);
                match at {
                    // Before the label at `i`: the text up to it ends in a comma.
                    Some(i) => {
                        out.push_str(&self.text[..i]);
                        push_label(out, name, value);
                        out.push(',');
                        out.push_str(&self.text[i..]);
                    }
                    None => {
                        out.push_str(&self.text);
                        if !self.text.is_empty() {
                            out.push(',');
                        }
                        push_label(out, name, value);
                    }
                }
            }
        }
        out.push('}');
    }
}

/// `name="value"`, the value escaped.
fn push_label(out: &mut String, name: &str, value: &str) {
    out.push_str(name);
    out.push_str("=\"");
    escape(out, value);
    out.push('"');
}

/// A label value as the text format wants it: `\`, `"` and newline escaped.
fn escape(out: &mut String, value: &str) {
    let mut rest = value;
    while let Some(i) = memchr::memchr3(b'\\', b'"', b'\n', rest.as_bytes()) {
        out.push_str(&rest[..i]);
        out.push_str(match rest.as_bytes()[i] {
            b'\\' => "\\\\",
            b'"' => "\\\"",
            _ => "\\n",
        });
        rest = &rest[i + 1..];
    }
    out.push_str(rest);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(labels: &impl Labels) -> String {
        let mut out = String::new();
        write_labels(&mut out, labels);
        out
    }

    const PORT: PortLabels<'static> = PortLabels {
        name: "web",
        netns: "",
        port: "80",
        protocol: "tcp",
    };

    #[test]
    fn extra_labels_take_their_place_in_the_order() {
        assert_eq!(
            text(&PORT.with("cause", "ok")),
            r#"{cause="ok",name="web",port="80",protocol="tcp"}"#
        );
        assert_eq!(
            text(&PORT.with("expect", "public").with("origin", "config")),
            r#"{expect="public",name="web",origin="config",port="80",protocol="tcp"}"#
        );
        assert_eq!(
            text(&PORT.with("zone", "z")),
            r#"{name="web",port="80",protocol="tcp",zone="z"}"#
        );
    }

    #[test]
    fn the_netns_label_is_absent_for_the_own_namespace_and_in_its_place_otherwise() {
        let web1 = PortLabels {
            netns: "web-1",
            ..PORT
        };
        assert_eq!(
            text(&web1.with("cause", "ok")),
            r#"{cause="ok",name="web",netns="web-1",port="80",protocol="tcp"}"#
        );
        assert!(!text(&PORT).contains("netns"));
    }

    /// Every place an extra label can take among 0 to 3 labels (values
    /// that need escaping included) gives what `write_labels` writes.
    #[test]
    fn written_labels_are_the_text_write_labels_gives() {
        let ports = [
            PORT,
            PortLabels {
                name: "we\"ird\\\n",
                netns: "web-1",
                ..PORT
            },
        ];
        let extras = ["a", "cause", "netns0", "outcome", "zzz"];
        for port in ports {
            for extra in extras {
                let mut out = String::new();
                Written::of(&port).write(&mut out, Some((extra, "x\"y")));
                assert_eq!(out, text(&port.with(extra, "x\"y")), "{extra}");
            }
            let mut out = String::new();
            Written::of(&port).write(&mut out, None);
            assert_eq!(out, text(&port));
        }
        for extra in extras {
            let one = One {
                name: "m",
                value: "v",
            };
            let mut out = String::new();
            Written::of(&one).write(&mut out, Some((extra, "1")));
            assert_eq!(out, text(&one.with(extra, "1")));
            let mut out = String::new();
            Written::of(&()).write(&mut out, Some((extra, "1")));
            assert_eq!(out, text(&().with(extra, "1")));
        }
        let mut out = String::new();
        Written::of(&()).write(&mut out, None);
        assert_eq!(out, "{}");
    }

    #[test]
    fn values_are_escaped() {
        let mut out = String::new();
        escape(&mut out, "a\\b\"c\nd\u{e9}");
        assert_eq!(out, r#"a\\b\"c\nd"#.to_string() + "\u{e9}");
    }
}
