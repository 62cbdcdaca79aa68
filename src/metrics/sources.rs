//! `portsight_source_up`: which sources of evidence worked at their last use.

use super::labels::Labels;
use super::text::{Family, bool_value};
use crate::snapshot::Sources;

const SOURCE_UP: Family = Family {
    name: "portsight_source_up",
    help: "1 if the source of evidence worked at its last use; 0 says which evidence is missing.",
    kind: "gauge",
};

/// One sample per source used; nothing before the first scan.
pub(super) fn write(out: &mut String, sources: &Sources) {
    let mut used = sources.each().peekable();
    if used.peek().is_none() {
        return;
    }
    SOURCE_UP.header(out);
    for (source, up) in used {
        SOURCE_UP.sample(out, &().with("source", source), bool_value(up));
    }
}
