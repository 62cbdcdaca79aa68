//! Control characters in text shown to people: a process name (anyone can
//! name a process), a client's target or a peer's answer can hold a
//! terminal escape (window title, clear screen) or a newline that forges a
//! line. Everything portsight prints — `check`'s table and the logs — goes
//! through here.

use std::borrow::Cow;
use std::io;

/// `text` with every control character written as its Rust escape
/// (`\n`, `\t`, `\u{1b}`); the same text when it holds none.
pub fn control(text: &str) -> Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if c.is_control() {
            out.extend(c.escape_debug());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// The log's writer. tracing-subscriber writes one event per `write` and
/// escapes ESC, BEL and C1 characters in the values it prints, but not
/// newlines or carriage returns; this escapes every control character but
/// the colours' ESC (the formatter's own; values' ESCs are escaped by then)
/// and the event's final newline.
pub struct LogWriter<W>(pub W);

impl<W: io::Write> io::Write for LogWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        let (body, end) = match text.strip_suffix('\n') {
            Some(body) => (body, "\n"),
            None => (text.as_ref(), ""),
        };
        let mut out = String::with_capacity(buf.len() + 8);
        for c in body.chars() {
            if c.is_control() && c != '\x1b' {
                out.extend(c.escape_debug());
            } else {
                out.push(c);
            }
        }
        out.push_str(end);
        self.0.write_all(out.as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    #[test]
    fn control_characters_are_escaped() {
        assert!(matches!(control("nginx"), Cow::Borrowed("nginx")));
        assert_eq!(
            control("a\x1b]0;pwned\x07\nFIX: rm\r\t\u{9b}"),
            "a\\u{1b}]0;pwned\\u{7}\\nFIX: rm\\r\\t\\u{9b}"
        );
        assert_eq!(control("café ✓"), "café ✓");
    }

    #[test]
    fn a_log_event_stays_one_line() {
        let mut w = LogWriter(Vec::new());
        let event = "\x1b[2mINFO\x1b[0m probe name=evil\nFAKE: line\r\n";
        assert_eq!(w.write(event.as_bytes()).unwrap(), event.len());
        let out = String::from_utf8(w.0).unwrap();
        assert_eq!(out, "\x1b[2mINFO\x1b[0m probe name=evil\\nFAKE: line\\r\n");
        assert_eq!(out.lines().count(), 1);
    }
}
