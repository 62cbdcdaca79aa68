//! The forwards of the host's ports, for every scan: the nat table's DNAT
//! and redirect rules (computed once per ruleset generation: the reader
//! hands out the same ruleset until it changes) and the userland proxies
//! among the processes.

use std::path::Path;
use std::sync::Arc;

use crate::forward::{self, HostPort};
use crate::netfilter::{self, Ruleset};
use crate::sockets::proxy;

use super::state::Forward;
use super::watch::PortKey;

/// The ruleset's reader and the forwards of the ruleset it read last.
#[derive(Default)]
pub struct Forwards {
    reader: netfilter::Reader,
    last: Option<(Arc<Ruleset>, Vec<Forward>)>,
}

impl Forwards {
    /// The forwards now, and whether the ruleset could be read (without
    /// it, only the proxies'). Blocking.
    pub fn read(&mut self, proc_root: &Path) -> (Vec<Forward>, bool) {
        let (mut out, up) = match self.reader.current() {
            Ok(rs) => {
                if !self.last.as_ref().is_some_and(|(r, _)| Arc::ptr_eq(r, &rs)) {
                    let found = netfilter::forwards::forwards(&rs);
                    let mapped = found.iter().filter_map(mapped).collect();
                    self.last = Some((rs, mapped));
                }
                (
                    self.last.as_ref().map_or_else(Vec::new, |(_, f)| f.clone()),
                    true,
                )
            }
            Err(e) => {
                tracing::debug!(error = %e, "no forwards from the nat table");
                self.last = None;
                (Vec::new(), false)
            }
        };
        out.extend(proxy::scan(proc_root).iter().filter_map(mapped));
        (out, up)
    }
}

/// A forward of one host port to one known backend, as the state keeps it.
/// Ranges forwarded port for port, and targets portsight could not read,
/// are left out: they name no backend to look at.
fn mapped(f: &forward::Forward) -> Option<Forward> {
    let HostPort::One(port) = f.port else {
        return None;
    };
    let rule = match (&f.rule, &f.process, f.pid) {
        (Some(rule), _, _) => Some(rule.clone()),
        (None, Some(process), Some(pid)) => Some(format!("{process} (pid {pid})")),
        _ => None,
    };
    Some(Forward {
        key: PortKey {
            protocol: f.protocol,
            ..PortKey::tcp(port)
        },
        via: f.via.as_str(),
        backend: f.backend()?,
        rule,
    })
}
