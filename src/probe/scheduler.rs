//! Runs many probes at once under one concurrency limit.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::{ProbeResult, Target, tcp};

/// Shares one concurrency limit between every probe round of the process.
#[derive(Debug, Clone)]
pub struct Prober {
    limit: Arc<Semaphore>,
}

impl Prober {
    pub fn new(concurrency: usize) -> Prober {
        Prober {
            limit: Arc::new(Semaphore::new(concurrency.max(1))),
        }
    }

    /// Probes every target, at most `concurrency` at a time across all rounds,
    /// and returns the results in the order of `targets`.
    pub async fn run(&self, targets: Vec<Target>, timeout: Duration) -> Vec<ProbeResult> {
        let mut tasks = JoinSet::new();
        for (i, target) in targets.into_iter().enumerate() {
            let limit = Arc::clone(&self.limit);
            tasks.spawn(async move {
                // The semaphore is never closed, so acquire cannot fail.
                let _permit = limit.acquire_owned().await.ok();
                (i, tcp::connect(target, timeout).await)
            });
        }
        let mut results = Vec::with_capacity(tasks.len());
        while let Some(joined) = tasks.join_next().await {
            match joined {
                Ok(r) => results.push(r),
                Err(e) => tracing::error!(error = %e, "probe task failed"),
            }
        }
        results.sort_by_key(|(i, _)| *i);
        results.into_iter().map(|(_, r)| r).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::{Outcome, Vantage};

    #[tokio::test]
    async fn many_targets_keep_their_order() {
        let listeners: Vec<_> = (0..20)
            .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
            .collect();
        let mut targets = Vec::new();
        for l in &listeners {
            targets.push(Target::local(Vantage::Loopback, l.local_addr().unwrap()));
        }
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
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
}
