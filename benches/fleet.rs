//! Issue 15, item 6: a simulated fleet of hosts, each asking `fanout` peers
//! for the outside view chosen by rendezvous hashing (`peer::choose`, as
//! `serve` does): how many requests the busiest host serves per round
//! against the mean (`fanout`), and what changes when 10 % of the hosts go
//! away (which choices move, and the load after). Pure computation: no
//! sockets, no namespaces. `cargo bench --bench fleet`; `PSF_HOSTS` (1000)
//! and `PSF_FANOUT` (3) set the size.

mod support;

use std::collections::HashMap;

use portsight::peer::{Peer, choose};
use support::{env, table};

/// Host `i` as a peer: the name and URL a DNS peer of address 10.77.x.y gets.
fn host(i: usize) -> Peer {
    let addr = format!("10.77.{}.{}", i / 250, i % 250 + 1);
    Peer {
        name: addr.clone(),
        url: format!("http://{addr}:10917").parse().unwrap(),
        token: String::new(),
        tls: None,
    }
}

/// Who each host asks this round, over the hosts `up`: every host but itself.
fn choices(up: &[Peer], fanout: usize) -> HashMap<String, Vec<String>> {
    up.iter()
        .map(|me| {
            let others: Vec<Peer> = up.iter().filter(|p| p.name != me.name).cloned().collect();
            let asked = choose(&me.name, &others, fanout)
                .into_iter()
                .map(|p| p.name.clone())
                .collect();
            (me.name.clone(), asked)
        })
        .collect()
}

/// The most, the 99th percentile and the mean of the requests a host serves.
fn load(choices: &HashMap<String, Vec<String>>, up: &[Peer]) -> (usize, usize, f64) {
    let mut served: HashMap<&str, usize> = up.iter().map(|p| (p.name.as_str(), 0)).collect();
    for asked in choices.values() {
        for a in asked {
            *served.get_mut(a.as_str()).unwrap() += 1;
        }
    }
    let mut counts: Vec<usize> = served.into_values().collect();
    counts.sort_unstable();
    let mean = counts.iter().sum::<usize>() as f64 / counts.len() as f64;
    (
        counts[counts.len() - 1],
        counts[counts.len() * 99 / 100],
        mean,
    )
}

fn main() {
    if !support::bench_mode("fleet") {
        return;
    }
    let (n, fanout) = (env("PSF_HOSTS", 1000), env("PSF_FANOUT", 3));
    let all: Vec<Peer> = (0..n).map(host).collect();
    let before = choices(&all, fanout);
    // Every tenth host goes away.
    let up: Vec<Peer> = all
        .iter()
        .enumerate()
        .filter(|(i, _)| i % 10 != 3)
        .map(|(_, p)| p.clone())
        .collect();
    let after = choices(&up, fanout);
    let gone: std::collections::HashSet<&str> = all
        .iter()
        .filter(|p| !up.iter().any(|u| u.name == p.name))
        .map(|p| p.name.as_str())
        .collect();
    // Of the hosts still up, the choices that changed, and those that had to
    // (they had chosen a host that went).
    let (mut moved, mut had_to) = (0, 0);
    for (me, asked) in &after {
        let old = &before[me];
        moved += asked.iter().filter(|a| !old.contains(a)).count();
        had_to += old.iter().filter(|a| gone.contains(a.as_str())).count();
    }
    let (max0, p99_0, mean0) = load(&before, &all);
    let (max1, p99_1, mean1) = load(&after, &up);
    let rows = vec![
        vec![
            format!("{n} hosts, fanout {fanout}"),
            max0.to_string(),
            p99_0.to_string(),
            format!("{mean0:.2}"),
            format!("{:.2}", max0 as f64 / mean0),
        ],
        vec![
            format!("{} hosts after 10 % went away", up.len()),
            max1.to_string(),
            p99_1.to_string(),
            format!("{mean1:.2}"),
            format!("{:.2}", max1 as f64 / mean1),
        ],
    ];
    table(
        "Fleet: requests each host serves per probe round (rendezvous hashing)",
        &["fleet", "most", "p99", "mean", "most / mean"],
        &rows,
    );
    println!(
        "choices that moved when 10 % went away: {moved} of {} ({had_to} had chosen a host that went: \
         the minimum that must move)",
        after.len() * fanout
    );
}
