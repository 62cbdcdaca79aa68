//! Forwards read for real: nat rules written with `iptables` (the nft
//! backend) as Docker writes them and with `nft` as kube-proxy's nftables
//! mode writes them, inside a test namespace, read through
//! `netfilter::Reader` there; and a real socat proxy found by its command
//! line. Needs root, nftables, iptables and socat; fails in CI without.

mod support;

use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use portsight::config::Protocol;
use portsight::forward::{Daddr, Forward, HostPort, Via};
use portsight::netfilter::{self, forwards::forwards};
use portsight::sockets::proxy;
use support::netns::{self, Host};
use support::{needs, wait_for};

fn tool_missing(tool: &str, arg: &str) -> Option<String> {
    Command::new(tool)
        .arg(arg)
        .output()
        .is_err()
        .then(|| format!("`{tool}` is not installed"))
}

/// The forwards of the host's ruleset, read in the host.
fn read(host: &Host) -> Vec<Forward> {
    host.run(|| {
        let rs = netfilter::Reader::default()
            .current()
            .expect("read the ruleset");
        forwards(&rs)
    })
}

fn to(fs: &[Forward], port: u16) -> Vec<String> {
    fs.iter()
        .filter(|f| f.port == HostPort::One(port))
        .map(|f| {
            let hooks: Vec<&str> = f.hooks.iter().map(|h| h.as_str()).collect();
            format!("{f} {}", hooks.join(","))
        })
        .collect()
}

#[test]
fn docker_published_port_written_with_iptables() {
    needs!(netns::nft_unavailable().or_else(|| tool_missing("iptables", "--version")));
    let host = Host::new("fwdd");
    for rule in [
        "-t nat -N DOCKER",
        "-t nat -A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER",
        "-t nat -A OUTPUT ! -d 127.0.0.0/8 -m addrtype --dst-type LOCAL -j DOCKER",
        "-t nat -A DOCKER -i docker0 -j RETURN",
        "-t nat -A DOCKER ! -i docker0 -p tcp -m tcp --dport 8080 -j DNAT --to-destination 10.77.50.2:80",
    ] {
        let mut args = vec!["iptables"];
        args.extend(rule.split(' '));
        host.exec(&args);
    }
    let fs = read(&host);
    assert_eq!(
        to(&fs, 8080),
        [
            "8080/tcp → 10.77.50.2:80 (dnat) output",
            "8080/tcp → 10.77.50.2:80 (dnat) prerouting"
        ],
        "{fs:#?}"
    );
    let pre = &fs[1];
    assert_eq!(pre.daddr, [Daddr::Local]);
    assert_eq!(pre.conditions, ["meta iifname != \"docker0\""]);
    let rule = pre.rule.as_deref().unwrap();
    assert!(rule.starts_with("ip nat DOCKER, handle "), "{rule}");
    assert!(rule.ends_with("dnat to 10.77.50.2:80"), "{rule}");
    assert!(!fs[0].applies_to("127.0.0.1".parse().unwrap(), true));
}

#[test]
fn a_nodeport_through_nft_maps_and_numgen_to_two_endpoints() {
    needs!(netns::nft_unavailable());
    let host = Host::new("fwdk");
    host.nft(
        "table ip kube-proxy {\n\
         chain endpoint-a { meta l4proto tcp dnat to 10.77.60.2:8080; }\n\
         chain endpoint-b { meta l4proto tcp dnat to 10.77.60.3:8080; }\n\
         chain service-api { numgen random mod 2 vmap { 0 : goto endpoint-a, 1 : goto endpoint-b }; }\n\
         map service-nodeports { type inet_proto . inet_service : verdict; \
           elements = { tcp . 30080 : goto service-api } }\n\
         chain services { fib daddr type local ip daddr != 127.0.0.0/8 \
           meta l4proto . th dport vmap @service-nodeports; }\n\
         chain nat-prerouting { type nat hook prerouting priority dstnat; policy accept; jump services; }\n\
         chain nat-output { type nat hook output priority -100; policy accept; jump services; }\n\
         }\n",
    );
    let fs = read(&host);
    assert_eq!(
        to(&fs, 30080),
        [
            "30080/tcp → 10.77.60.2:8080 (dnat) output,prerouting",
            "30080/tcp → 10.77.60.3:8080 (dnat) output,prerouting"
        ],
        "{fs:#?}"
    );
    assert_eq!(fs[1].conditions, ["numgen random == 1"]);
    assert_eq!(fs[1].chains, ["services", "service-api", "endpoint-b"]);
    assert!(
        fs.iter()
            .all(|f| f.protocol == Protocol::Tcp && f.via == Via::Dnat)
    );
}

#[test]
fn a_socat_proxy_is_found_with_its_pid() {
    needs!(netns::unavailable().or_else(|| tool_missing("socat", "-V")));
    let host = Host::new("fwdp");
    let socat = std::path::Path::new("socat");
    let args: Vec<String> = [
        "TCP-LISTEN:8080,fork,reuseaddr,bind=127.0.0.1",
        "TCP:10.77.50.2:80",
    ]
    .map(String::from)
    .to_vec();
    let process = host.spawn(socat, &args);
    let pid = u32::try_from(process.pid().as_raw()).unwrap();
    // Listening: it accepts on loopback inside the namespace.
    wait_for(Duration::from_secs(10), "socat to listen", || {
        host.run(|| TcpStream::connect("127.0.0.1:8080"))
            .map(drop)
            .map_err(|e| e.to_string())
    });
    let found = proxy::scan(std::path::Path::new("/proc"));
    let mine: Vec<&Forward> = found.iter().filter(|f| f.pid == Some(pid)).collect();
    assert_eq!(mine.len(), 1, "{found:#?}");
    let f = mine[0];
    assert_eq!(f.to_string(), "8080/tcp → 10.77.50.2:80 (proxy)");
    assert_eq!(f.process.as_deref(), Some("socat"));
    assert!(f.applies_to("127.0.0.1".parse().unwrap(), true));
    assert!(
        !f.applies_to("10.77.0.1".parse().unwrap(), true),
        "bound to loopback"
    );
}
