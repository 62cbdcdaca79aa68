//! The packet a probe sends, as the ruleset sees it at each hook on its
//! path, and what is known of each field a rule can look at.

use std::net::IpAddr;

/// The hooks a packet passes, in path order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Hook {
    Output,
    Prerouting,
    Input,
    Forward,
}

impl Hook {
    pub fn as_str(self) -> &'static str {
        match self {
            Hook::Output => "output",
            Hook::Prerouting => "prerouting",
            Hook::Input => "input",
            Hook::Forward => "forward",
        }
    }
}

/// What is known of a network interface of the packet at a hook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Iface {
    Named(String),
    /// Some interface, not `lo` (a packet from another host).
    NotLoopback,
    /// The hook has none (no input interface at `output`): every
    /// expression on it fails, as in the kernel.
    Absent,
}

/// A probe's first packet (a TCP SYN, `ct state new`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    /// `None`: not known (a peer's address as it reaches this host).
    pub saddr: Option<IpAddr>,
    pub daddr: IpAddr,
    /// The source port is ephemeral: never known.
    pub dport: u16,
    /// IP protocol number (6 for TCP).
    pub l4proto: u8,
    /// Whether the destination is an address of this host (`fib daddr type
    /// local`). `None`: not known — a public address NATed to this host,
    /// which reaches it under another destination address, not known either.
    pub daddr_local: Option<bool>,
    /// Where it comes from: this host, or another.
    pub local: bool,
}

pub const TCP: u8 = 6;
pub const UDP: u8 = 17;

impl Packet {
    /// A probe from this host to one of its own addresses: it leaves
    /// through `output` and comes back in through `lo`, with the
    /// destination as its source.
    pub fn local(daddr: IpAddr, dport: u16) -> Packet {
        Packet {
            saddr: Some(daddr),
            daddr,
            dport,
            l4proto: TCP,
            daddr_local: Some(true),
            local: true,
        }
    }

    /// A probe from another host (a peer), from an address not known here.
    pub fn from_outside(daddr: IpAddr, dport: u16, daddr_local: Option<bool>) -> Packet {
        Packet {
            saddr: None,
            daddr,
            dport,
            l4proto: TCP,
            daddr_local,
            local: false,
        }
    }

    /// The hooks it passes, in order: `output`, `prerouting`, `input` for a
    /// local probe; `prerouting`, `input` from outside.
    pub fn path(&self) -> &'static [Hook] {
        if self.local {
            &[Hook::Output, Hook::Prerouting, Hook::Input]
        } else {
            &[Hook::Prerouting, Hook::Input]
        }
    }

    pub fn is_v4(&self) -> bool {
        self.daddr.is_ipv4()
    }

    /// The input interface at `hook`.
    pub fn iif(&self, hook: Hook) -> Iface {
        match (hook, self.local) {
            (Hook::Output, _) => Iface::Absent,
            (_, true) => Iface::Named("lo".into()),
            (_, false) => Iface::NotLoopback,
        }
    }

    /// The output interface at `hook`: known only at `output`, and only
    /// for a local probe (`lo`).
    pub fn oif(&self, hook: Hook) -> Iface {
        match (hook, self.local) {
            (Hook::Output, true) => Iface::Named("lo".into()),
            _ => Iface::Absent,
        }
    }
}
