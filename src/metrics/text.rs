//! The text exposition format, written by hand for the per-port families: a
//! family's `# HELP` and `# TYPE` lines, then its samples.

use std::fmt::Write as _;

use super::labels::{Labels, Written, write_labels};

/// One metric family: its name, help text and type.
pub(super) struct Family {
    pub name: &'static str,
    pub help: &'static str,
    pub kind: &'static str,
}

impl Family {
    /// The `# HELP` and `# TYPE` lines.
    pub fn header(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "# HELP {} {}\n# TYPE {} {}",
            self.name, self.help, self.name, self.kind
        );
    }

    /// One sample, written as the prometheus crate writes it.
    pub fn sample(&self, out: &mut String, labels: &impl Labels, value: f64) {
        out.push_str(self.name);
        write_labels(out, labels);
        out.push(' ');
        write_value(out, value);
        out.push('\n');
    }
}

impl Family {
    /// One sample with labels written beforehand, and `extra` among them.
    pub fn sample_written(
        &self,
        out: &mut String,
        labels: &Written,
        extra: Option<(&'static str, &str)>,
        value: f64,
    ) {
        out.push_str(self.name);
        labels.write(out, extra);
        out.push(' ');
        write_value(out, value);
        out.push('\n');
    }
}

/// `0`, `1`, `0.0025`, `+Inf`: as the prometheus crate formats an f64.
fn write_value(out: &mut String, value: f64) {
    if value == 0.0 && value.is_sign_positive() {
        out.push('0');
    } else if value == 1.0 {
        out.push('1');
    } else if value.is_infinite() {
        out.push_str(if value > 0.0 { "+Inf" } else { "-Inf" });
    } else {
        let _ = write!(out, "{value}");
    }
}

pub(super) fn bool_value(b: bool) -> f64 {
    if b { 1.0 } else { 0.0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_formatted_as_the_prometheus_crate_does() {
        for (v, text) in [
            (0.0, "0"),
            (-0.0, "-0"),
            (1.0, "1"),
            (42.0, "42"),
            (0.0025, "0.0025"),
            (f64::INFINITY, "+Inf"),
            (f64::NEG_INFINITY, "-Inf"),
            (f64::NAN, "NaN"),
        ] {
            let mut out = String::new();
            write_value(&mut out, v);
            assert_eq!(out, text, "{v}");
        }
    }
}
