//! Network namespace names, interned, so that per-port keys stay `Copy`.
//!
//! Ids live as long as the process; each distinct name costs a few bytes
//! once (a host that churns through many containers keeps their names).

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, LazyLock, RwLock};

/// A network namespace by its name; [`NsId::OWN`] is portsight's own
/// (the empty name, so the `netns` label is absent for a host port).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct NsId(u32);

#[derive(Default)]
struct Names {
    by_id: Vec<Arc<str>>,
    by_name: HashMap<Arc<str>, u32>,
}

static NAMES: LazyLock<RwLock<Names>> = LazyLock::new(|| {
    let own: Arc<str> = Arc::from("");
    RwLock::new(Names {
        by_id: vec![own.clone()],
        by_name: HashMap::from([(own, 0)]),
    })
});

impl NsId {
    pub const OWN: NsId = NsId(0);

    /// The id of `name` (`""` is [`NsId::OWN`]).
    pub fn named(name: &str) -> NsId {
        if let Some(&i) = NAMES
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .by_name
            .get(name)
        {
            return NsId(i);
        }
        let mut names = NAMES.write().unwrap_or_else(|e| e.into_inner());
        if let Some(&i) = names.by_name.get(name) {
            return NsId(i);
        }
        let i = u32::try_from(names.by_id.len()).expect("fewer than 2^32 namespace names");
        let name: Arc<str> = Arc::from(name);
        names.by_id.push(name.clone());
        names.by_name.insert(name, i);
        NsId(i)
    }

    /// The name: empty for portsight's own namespace.
    pub fn name(self) -> Arc<str> {
        NAMES.read().unwrap_or_else(|e| e.into_inner()).by_id[self.0 as usize].clone()
    }

    pub fn is_own(self) -> bool {
        self == NsId::OWN
    }
}

impl fmt::Debug for NsId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NsId({:?})", &*self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_id_per_name_and_the_empty_name_is_own() {
        assert_eq!(NsId::named(""), NsId::OWN);
        let a = NsId::named("web-1");
        assert_eq!(NsId::named("web-1"), a);
        assert_ne!(NsId::named("web-2"), a);
        assert_eq!(&*a.name(), "web-1");
        assert!(!a.is_own() && NsId::OWN.is_own());
    }
}
