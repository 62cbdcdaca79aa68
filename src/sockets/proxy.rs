//! Userland proxies: processes that listen on a host port and connect each
//! client on to a backend, found by their command line under `proc_root`:
//! docker-proxy (`-proto tcp -host-ip 0.0.0.0 -host-port 8080
//! -container-ip 172.17.0.2 -container-port 80`, also `--flag` and
//! `-flag=value`) and socat (`socat TCP-LISTEN:8080,fork,reuseaddr
//! TCP:10.77.50.2:80`, with the TCP4/TCP6/UDP variants). [`parse`] reads
//! one command line (NUL-separated, as `/proc/<pid>/cmdline` holds it);
//! [`scan`] reads every process's.
//!
//! Not here: rootlesskit's port drivers, which take their ports over an
//! API socket and show none on the command line.

use std::fs;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;

use ipnet::IpNet;

use crate::config::Protocol;
use crate::forward::{Daddr, Forward, HostPort, Via};
use crate::netfilter::Family;

/// The proxies among the processes under `proc_root`, each with its pid
/// and program name. Processes that vanish or cannot be read are skipped.
pub fn scan(proc_root: &Path) -> Vec<Forward> {
    let mut out: Vec<Forward> = pids(proc_root)
        .into_iter()
        .filter_map(|pid| of(proc_root, pid))
        .collect();
    out.sort_by_key(|f| f.pid);
    out
}

/// The pids under `proc_root` (empty where it cannot be listed).
pub fn pids(proc_root: &Path) -> Vec<u32> {
    let Ok(entries) = fs::read_dir(proc_root) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect()
}

/// The forward process `pid` makes, with its pid, if it is a proxy
/// portsight knows; `None` too when it vanished or cannot be read.
pub fn of(proc_root: &Path, pid: u32) -> Option<Forward> {
    let cmdline = fs::read(proc_root.join(pid.to_string()).join("cmdline")).ok()?;
    let mut f = parse(&cmdline)?;
    f.pid = Some(pid);
    Some(f)
}

/// The forward of one command line, if it is a proxy portsight knows.
pub fn parse(cmdline: &[u8]) -> Option<Forward> {
    let args: Vec<&str> = cmdline
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(std::str::from_utf8)
        .collect::<Result<_, _>>()
        .ok()?;
    let (program, rest) = args.split_first()?;
    let name = program.rsplit('/').next().unwrap_or(program);
    let mut f = match name {
        "docker-proxy" => docker_proxy(rest)?,
        "socat" => socat(rest)?,
        _ => return None,
    };
    f.process = Some(name.to_string());
    Some(f)
}

/// A proxy's forward from what it listens on and where it connects to.
fn forward(
    protocol: Protocol,
    listen: (Option<IpAddr>, Family, u16),
    backend: (Option<IpAddr>, Option<u16>),
) -> Forward {
    let (bind, family, port) = listen;
    let daddr = match bind {
        Some(a) if !a.is_unspecified() => vec![Daddr::In(vec![IpNet::from(a)])],
        _ => Vec::new(),
    };
    Forward {
        protocol,
        port: HostPort::One(port),
        via: Via::Proxy,
        family,
        backend_addr: backend.0,
        backend_port: backend.1,
        daddr,
        conditions: Vec::new(),
        hooks: Vec::new(),
        chains: Vec::new(),
        rule: None,
        comment: None,
        pid: None,
        process: None,
    }
}

fn family_of(a: IpAddr) -> Family {
    if a.is_ipv4() { Family::Ip } else { Family::Ip6 }
}

/// docker-proxy's flags, Go style: `-name value`, `--name value`,
/// `-name=value`.
fn docker_proxy(args: &[&str]) -> Option<Forward> {
    let flag = |name: &str| -> Option<&str> {
        let mut it = args.iter();
        while let Some(a) = it.next() {
            let Some(bare) = a.strip_prefix("--").or_else(|| a.strip_prefix('-')) else {
                continue;
            };
            if bare == name {
                return it.next().copied();
            }
            if let Some(v) = bare.strip_prefix(name).and_then(|r| r.strip_prefix('=')) {
                return Some(v);
            }
        }
        None
    };
    let protocol: Protocol = flag("proto").unwrap_or("tcp").parse().ok()?;
    let host_ip: IpAddr = flag("host-ip").unwrap_or("0.0.0.0").parse().ok()?;
    let host_port: u16 = flag("host-port")?.parse().ok()?;
    let backend = flag("container-ip").and_then(|a| a.parse().ok());
    let backend_port = flag("container-port").and_then(|p| p.parse().ok());
    let listen = (Some(host_ip), family_of(host_ip), host_port);
    Some(forward(protocol, listen, (backend, backend_port)))
}

/// socat's two addresses: one `*-LISTEN` (or `*-L`), the other a connect.
fn socat(args: &[&str]) -> Option<Forward> {
    let addresses: Vec<Address> = args.iter().filter_map(|a| Address::parse(a)).collect();
    let listen = addresses.iter().find(|a| a.listen)?;
    let to = addresses.iter().find(|a| !a.listen)?;
    if listen.protocol != to.protocol {
        return None;
    }
    let port: u16 = listen.params.parse().ok()?;
    let bind = listen.option("bind").and_then(parse_host);
    let v6 = listen.v6 || listen.option("pf") == Some("ip6") || bind.is_some_and(|b| b.is_ipv6());
    let family = if v6 { Family::Ip6 } else { Family::Ip };
    let (host, backend_port) = split_host_port(to.params)?;
    let backend = parse_host(host);
    Some(forward(
        listen.protocol,
        (bind, family, port),
        (backend, Some(backend_port)),
    ))
}

/// One socat address: `TCP4-LISTEN:8080,fork,bind=10.77.0.1`.
struct Address<'a> {
    protocol: Protocol,
    listen: bool,
    v6: bool,
    params: &'a str,
    options: Vec<&'a str>,
}

impl<'a> Address<'a> {
    fn parse(arg: &'a str) -> Option<Address<'a>> {
        let (kind, rest) = arg.split_once(':')?;
        let kind = kind.to_ascii_uppercase();
        let (base, listen) = match kind.rsplit_once('-') {
            Some((b, "LISTEN" | "L")) => (b.to_string(), true),
            Some((b, "CONNECT" | "SENDTO")) => (b.to_string(), false),
            None => (kind, false),
            Some(_) => return None,
        };
        let (protocol, v6) = match base.as_str() {
            "TCP" | "TCP4" => (Protocol::Tcp, false),
            "TCP6" => (Protocol::Tcp, true),
            "UDP" | "UDP4" => (Protocol::Udp, false),
            "UDP6" => (Protocol::Udp, true),
            _ => return None,
        };
        // Options follow the first comma outside brackets: `[fd77::1]:80,fork`.
        let close = if rest.starts_with('[') {
            rest.find(']').unwrap_or(0)
        } else {
            0
        };
        let (params, options) = match rest[close..].find(',') {
            Some(i) => (
                &rest[..close + i],
                rest[close + i + 1..].split(',').collect(),
            ),
            None => (rest, Vec::new()),
        };
        Some(Address {
            protocol,
            listen,
            v6,
            params,
            options,
        })
    }

    fn option(&self, name: &str) -> Option<&'a str> {
        self.options
            .iter()
            .find_map(|o| o.strip_prefix(name).and_then(|v| v.strip_prefix('=')))
    }
}

/// `10.77.50.2:80`, `[fd77::2]:80`, `backend.local:80`.
fn split_host_port(s: &str) -> Option<(&str, u16)> {
    let (host, port) = s.rsplit_once(':')?;
    Some((host, port.parse().ok()?))
}

/// An address literal, with or without brackets; `None` for a name.
fn parse_host(s: &str) -> Option<IpAddr> {
    let s = s
        .strip_prefix('[')
        .and_then(|s| s.strip_suffix(']'))
        .unwrap_or(s);
    match s {
        "localhost" => Some(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        "ip6-localhost" => Some(IpAddr::V6(Ipv6Addr::LOCALHOST)),
        _ => s.parse().ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(args: &[&str]) -> Vec<u8> {
        let mut b = Vec::new();
        for a in args {
            b.extend_from_slice(a.as_bytes());
            b.push(0);
        }
        b
    }

    fn brief(f: &Forward) -> String {
        format!("{f} {:?} {:?}", f.family, f.daddr)
    }

    #[test]
    fn docker_proxy_in_both_flag_styles() {
        let f = parse(&cmd(&[
            "/usr/bin/docker-proxy",
            "-proto",
            "tcp",
            "-host-ip",
            "0.0.0.0",
            "-host-port",
            "8080",
            "-container-ip",
            "172.17.0.2",
            "-container-port",
            "80",
        ]))
        .unwrap();
        assert_eq!(brief(&f), "8080/tcp → 172.17.0.2:80 (proxy) Ip []");
        assert_eq!(f.process.as_deref(), Some("docker-proxy"));
        let f = parse(&cmd(&[
            "docker-proxy",
            "--proto=udp",
            "--host-ip=fd77::1",
            "--host-port=5353",
            "--container-ip",
            "fd77:50::3",
            "--container-port=53",
        ]))
        .unwrap();
        let host = Daddr::In(vec!["fd77::1/128".parse().unwrap()]);
        assert_eq!(
            brief(&f),
            format!("5353/udp → [fd77:50::3]:53 (proxy) Ip6 [{host:?}]")
        );
    }

    #[test]
    fn socat_listen_and_connect_addresses() {
        let f = parse(&cmd(&[
            "socat",
            "-d",
            "-d",
            "TCP-LISTEN:8080,fork,reuseaddr",
            "TCP:10.77.50.2:80",
        ]))
        .unwrap();
        assert_eq!(brief(&f), "8080/tcp → 10.77.50.2:80 (proxy) Ip []");
        let f = parse(&cmd(&[
            "/usr/bin/socat",
            "udp6-connect:[fd77:50::4]:53",
            "UDP6-LISTEN:5300,bind=[fd77::1]",
        ]))
        .unwrap();
        let host = Daddr::In(vec!["fd77::1/128".parse().unwrap()]);
        assert_eq!(
            brief(&f),
            format!("5300/udp → [fd77:50::4]:53 (proxy) Ip6 [{host:?}]")
        );
        let f = parse(&cmd(&["socat", "TCP4-L:8082,fork", "TCP:backend.local:80"])).unwrap();
        assert_eq!(
            brief(&f),
            "8082/tcp → ?:80 (proxy) Ip []",
            "a name is not resolved"
        );
    }

    #[test]
    fn what_is_not_a_proxy() {
        for args in [
            &["python3", "-m", "http.server", "8080"][..],
            &["socat", "STDIO", "TCP:10.77.50.2:80"],
            &["socat", "TCP-LISTEN:8080", "EXEC:/bin/cat"],
            &["socat", "TCP-LISTEN:8080", "UDP:10.77.50.2:53"],
            &["docker-proxy", "-proto", "sctp", "-host-port", "1"],
            &["docker-proxy", "-container-ip", "10.77.50.2"],
        ] {
            assert_eq!(parse(&cmd(args)), None, "{args:?}");
        }
        assert_eq!(parse(b""), None);
        assert_eq!(parse(b"socat\0\xff\0"), None);
    }

    #[test]
    fn a_proc_tree_gives_each_proxy_with_its_pid() {
        let root = tempfile::tempdir().unwrap();
        for (pid, args) in [
            (
                "2001",
                &[
                    "docker-proxy",
                    "-host-port",
                    "8080",
                    "-container-ip",
                    "10.77.50.2",
                    "-container-port",
                    "80",
                ][..],
            ),
            (
                "2002",
                &["socat", "TCP6-LISTEN:8443,fork", "TCP6:[fd77:50::2]:443"],
            ),
            ("2003", &["sleep", "60"]),
        ] {
            let dir = root.path().join(pid);
            fs::create_dir(&dir).unwrap();
            fs::write(dir.join("cmdline"), cmd(args)).unwrap();
        }
        fs::create_dir(root.path().join("net")).unwrap();
        fs::create_dir(root.path().join("2004")).unwrap(); // gone: no cmdline
        let found: Vec<(Option<u32>, String)> = scan(root.path())
            .iter()
            .map(|f| (f.pid, f.to_string()))
            .collect();
        assert_eq!(
            found,
            [
                (Some(2001), "8080/tcp → 10.77.50.2:80 (proxy)".to_string()),
                (
                    Some(2002),
                    "8443/tcp → [fd77:50::2]:443 (proxy)".to_string()
                ),
            ]
        );
        assert!(scan(&root.path().join("missing")).is_empty());
    }
}
