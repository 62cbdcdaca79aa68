//! Runs many probes at once under one concurrency limit, TCP and UDP alike.

use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::{ProbeResult, Protocol, Target, tcp, udp};

/// Shares one concurrency limit between every probe round of the process,
/// and between TCP and UDP probes.
#[derive(Debug, Clone)]
pub struct Prober {
    limit: Arc<Semaphore>,
    /// The limit: how many probes one round runs at once at most.
    concurrency: usize,
}

impl Prober {
    pub fn new(concurrency: usize) -> Prober {
        Prober {
            limit: Arc::new(Semaphore::new(concurrency.max(1))),
            concurrency: concurrency.max(1),
        }
    }

    /// Probes every target, at most `concurrency` at a time across all rounds,
    /// and returns the results in the order of `targets`. A UDP target is
    /// sent an empty datagram.
    pub async fn run(&self, targets: Vec<Target>, timeout: Duration) -> Vec<ProbeResult> {
        self.run_with(with_empty(targets), timeout).await
    }

    /// As [`Prober::run`], each UDP target sent its payload (TCP targets
    /// ignore theirs).
    pub async fn run_with(
        &self,
        targets: Vec<(Target, Arc<[u8]>)>,
        timeout: Duration,
    ) -> Vec<ProbeResult> {
        self.run_by(targets, timeout, None)
            .await
            .into_iter()
            .flatten()
            .collect()
    }

    /// As [`Prober::run_with`], all of it — waiting for a connect slot
    /// included — over by `deadline` when one is given: a probe gets what
    /// is left of `timeout` before it, and a target whose slot did not come
    /// in time is `None` (not probed, so no evidence either way).
    pub async fn run_by(
        &self,
        targets: Vec<(Target, Arc<[u8]>)>,
        timeout: Duration,
        deadline: Option<Instant>,
    ) -> Vec<Option<ProbeResult>> {
        let jobs = targets
            .into_iter()
            .map(|(target, payload)| Job {
                target,
                payload,
                socket: None,
            })
            .collect();
        self.run_jobs(jobs, timeout, deadline).await
    }

    /// As [`Prober::run_by`], each job on its own socket where it has one
    /// (made inside another network namespace), else on a new one.
    pub async fn run_jobs(
        &self,
        jobs: Vec<Job>,
        timeout: Duration,
        deadline: Option<Instant>,
    ) -> Vec<Option<ProbeResult>> {
        // As many workers as may connect at once, each taking the next job:
        // a round of 20,000 targets holds 256 tasks, not 20,000 waiting
        // ones (their memory, and waking each).
        let count = jobs.len();
        let workers = count.min(self.concurrency);
        let queue = Arc::new(std::sync::Mutex::new(jobs.into_iter().enumerate()));
        let mut tasks = JoinSet::new();
        for _ in 0..workers {
            let (limit, queue) = (Arc::clone(&self.limit), Arc::clone(&queue));
            tasks.spawn(async move {
                let mut done = Vec::new();
                loop {
                    let next = queue.lock().unwrap_or_else(|e| e.into_inner()).next();
                    let Some((i, job)) = next else { break };
                    done.push((i, probe(&limit, job, timeout, deadline).await));
                }
                done
            });
        }
        let mut results: Vec<Option<ProbeResult>> = (0..count).map(|_| None).collect();
        while let Some(joined) = tasks.join_next().await {
            match joined {
                Ok(done) => {
                    for (i, r) in done {
                        results[i] = r;
                    }
                }
                Err(e) => tracing::error!(error = %e, "probe task failed"),
            }
        }
        results
    }
}

/// Runs one job once a connect slot is free; `None` when none came by
/// `deadline`.
async fn probe(
    limit: &Arc<Semaphore>,
    job: Job,
    timeout: Duration,
    deadline: Option<Instant>,
) -> Option<ProbeResult> {
    let Job {
        target,
        payload,
        socket,
    } = job;
    let permit = match deadline {
        None => limit.acquire().await.ok(),
        Some(d) => match tokio::time::timeout_at(d, limit.acquire()).await {
            Ok(permit) => permit.ok(),
            Err(_) => return None,
        },
    };
    let timeout = deadline.map_or(timeout, |d| {
        timeout.min(d.saturating_duration_since(Instant::now()))
    });
    let result = match target.protocol {
        Protocol::Tcp => tcp::connect_on(socket, target, timeout).await,
        Protocol::Udp => udp::exchange_on(socket, target, &payload, timeout).await,
    };
    drop(permit);
    Some(result)
}

/// One probe to run: its target, what a UDP probe sends, and the socket
/// to send it on when it must be a particular one (made inside the
/// namespace it is probed from).
#[derive(Debug)]
pub struct Job {
    pub target: Target,
    pub payload: Arc<[u8]>,
    pub socket: Option<OwnedFd>,
}

/// Each target with an empty payload: what TCP targets and payload-less
/// UDP ones are sent.
pub fn with_empty(targets: Vec<Target>) -> Vec<(Target, Arc<[u8]>)> {
    let empty: Arc<[u8]> = Arc::from(Vec::new());
    targets
        .into_iter()
        .map(|t| (t, Arc::clone(&empty)))
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::net::SocketAddr;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use socket2::{Domain, Socket, Type};

    use super::*;
    use crate::probe::{Outcome, Vantage};

    /// A port nothing listens on while the socket lives: bound, never
    /// listening (a SYN to it gets RST), so no other test can take it.
    fn closed() -> (Socket, SocketAddr) {
        let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        s.bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into())
            .unwrap();
        let addr = s.local_addr().unwrap().as_socket().unwrap();
        (s, addr)
    }

    #[tokio::test]
    async fn many_targets_keep_their_order() {
        let listeners: Vec<_> = (0..20)
            .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
            .collect();
        let mut targets = Vec::new();
        for l in &listeners {
            targets.push(Target::local(Vantage::Loopback, l.local_addr().unwrap()));
        }
        let (_closed, closed) = closed();
        targets.push(Target::local(Vantage::Loopback, closed));
        let results = Prober::new(4)
            .run(targets.clone(), Duration::from_secs(2))
            .await;
        assert_eq!(results.len(), 21);
        for (r, t) in results.iter().zip(&targets) {
            assert_eq!(&r.target, t);
        }
        assert!(results[..20].iter().all(|r| r.outcome == Outcome::Success));
        assert_eq!(results[20].outcome, Outcome::Refused);
    }

    /// Connects to `port` that the kernel shows in SYN_SENT (state `02` of
    /// /proc/net/tcp).
    fn pending_connects(port: u16) -> usize {
        sockets_to("/proc/net/tcp", port, "02")
    }

    /// The sockets of `table` (a /proc/net file) whose peer is `port`, in
    /// `state`, counted by their own address: a row the kernel repeats
    /// while sockets come and go is one socket.
    fn sockets_to(table: &str, port: u16, state: &str) -> usize {
        let text = std::fs::read_to_string(table).unwrap();
        let remote = format!(":{port:04X}");
        text.lines()
            .skip(1)
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            .filter(|f| f.len() > 3 && f[2].ends_with(&remote) && f[3] == state)
            .map(|f| f[1].to_string())
            .collect::<HashSet<_>>()
            .len()
    }

    /// The limit holds for real connects: a loopback listener whose accept
    /// queue is full drops every SYN, so each probe of it stays pending in
    /// SYN_SENT until its timeout, where the kernel shows it. Without the
    /// limit all six would be pending at once.
    #[tokio::test]
    async fn no_more_than_concurrency_connects_at_once() {
        let listener = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        listener
            .bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into())
            .unwrap();
        // Backlog 0: one connection fills the queue; the listener never accepts.
        listener.listen(0).unwrap();
        let addr = listener.local_addr().unwrap().as_socket().unwrap();
        let _queued = std::net::TcpStream::connect(addr).unwrap();
        assert!(
            std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(300)).is_err(),
            "the accept queue is full: connects hang"
        );
        assert_eq!(pending_connects(addr.port()), 0);

        let done = Arc::new(AtomicBool::new(false));
        let most = {
            let done = Arc::clone(&done);
            std::thread::spawn(move || {
                let mut most = 0;
                while !done.load(Ordering::Acquire) {
                    // /proc/net/tcp is read in pieces: a read that spans a
                    // timed-out probe's close and the next one's connect
                    // sees both (with the sockets of tests running beside
                    // it, it is more than one read). Two reads in a row
                    // both torn by that moment do not happen.
                    let pending = pending_connects(addr.port()).min(pending_connects(addr.port()));
                    most = most.max(pending);
                    std::thread::sleep(Duration::from_millis(5));
                }
                most
            })
        };
        let targets = vec![Target::local(Vantage::Loopback, addr); 6];
        // Shorter than the first SYN retransmission (1 s).
        let results = Prober::new(2)
            .run(targets, Duration::from_millis(700))
            .await;
        done.store(true, Ordering::Release);
        let most = most.join().unwrap();
        assert!(
            results.iter().all(|r| r.outcome == Outcome::Timeout),
            "{results:?}"
        );
        assert!(most <= 2, "{most} connects at once, with concurrency 2");
        assert_eq!(most, 2, "the probes were seen pending, two at a time");
    }

    /// Connected UDP sockets of this process whose peer is `port` on
    /// loopback (state `01` of /proc/net/udp), counted by local address.
    fn pending_udp(port: u16) -> usize {
        sockets_to("/proc/net/udp", port, "01")
    }

    /// TCP and UDP probes share one limit: with concurrency 2, two silent UDP
    /// probes hold both permits, and a TCP probe of a full accept queue
    /// queued behind them never shows in SYN_SENT while they are pending.
    /// Every UDP socket is gone once the round returns.
    #[tokio::test]
    async fn udp_and_tcp_share_the_limit_and_udp_leaves_no_socket() {
        let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = silent.local_addr().unwrap();
        let done = Arc::new(AtomicBool::new(false));
        let most = {
            let done = Arc::clone(&done);
            std::thread::spawn(move || {
                let mut most = 0;
                while !done.load(Ordering::Acquire) {
                    most = most.max(pending_udp(addr.port()));
                    std::thread::sleep(Duration::from_millis(5));
                }
                most
            })
        };
        let targets = vec![Target::new(Vantage::Loopback, Protocol::Udp, addr); 5];
        let results = Prober::new(2)
            .run(targets, Duration::from_millis(300))
            .await;
        done.store(true, Ordering::Release);
        let most = most.join().unwrap();
        assert!(
            results.iter().all(|r| r.outcome == Outcome::Timeout),
            "{results:?}"
        );
        assert_eq!(most, 2, "two UDP probes at a time, with concurrency 2");
        assert_eq!(pending_udp(addr.port()), 0, "no socket left behind");
    }
}
