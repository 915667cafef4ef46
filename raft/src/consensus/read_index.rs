//! Read index for linearizable reads, shared by concurrent readers.
//!
//! openraft confirms leadership for every `ensure_linearizable` call with a
//! heartbeat round to a quorum. Concurrent reads can share one round: a
//! reader joins the next round, which starts only after it joined, so the
//! index it gets was read after its request arrived (what read-index needs
//! for linearizability). One round runs at a time; the readers that arrive
//! meanwhile form the next batch. `Coalescer` is that scheme for any
//! operation (followers use it for the read index they ask the leader for).

use std::future::Future;
use std::sync::{Arc, Mutex};

use openraft::error::{CheckIsLeaderError, RaftError};
use tokio::sync::oneshot;

use crate::consensus::rpc::ReadIndexReply;
use crate::consensus::timing::READ_ROUND;
use crate::consensus::types::Raft;

struct Batch<T> {
    running: bool,
    waiting: Vec<oneshot::Sender<T>>,
}

/// Runs an operation once for every caller that joined before the run
/// started. Callers that join during a run share the next one.
pub struct Coalescer<T> {
    batch: Arc<Mutex<Batch<T>>>,
}

impl<T> Clone for Coalescer<T> {
    fn clone(&self) -> Self {
        Coalescer {
            batch: self.batch.clone(),
        }
    }
}

impl<T> Default for Coalescer<T> {
    fn default() -> Self {
        Coalescer {
            batch: Arc::new(Mutex::new(Batch {
                running: false,
                waiting: Vec::new(),
            })),
        }
    }
}

impl<T: Clone + Send + 'static> Coalescer<T> {
    /// The result of a run of `op` that started after this call; `None`
    /// only if the run was dropped (runtime shutting down). Every caller's
    /// `op` must be equivalent: whichever starts the runs is used.
    pub async fn run<F, Fut>(&self, op: F) -> Option<T>
    where
        F: Fn() -> Fut + Send + 'static,
        Fut: Future<Output = T> + Send,
    {
        let (tx, rx) = oneshot::channel();
        let start = {
            let mut b = self.batch.lock().expect("coalescer lock");
            b.waiting.push(tx);
            !std::mem::replace(&mut b.running, true)
        };
        if start {
            // A task of its own: the caller that starts the runs must not
            // wait for later batches.
            let batch = self.batch.clone();
            tokio::spawn(async move {
                loop {
                    let waiting = {
                        let mut b = batch.lock().expect("coalescer lock");
                        if b.waiting.is_empty() {
                            b.running = false;
                            return;
                        }
                        std::mem::take(&mut b.waiting)
                    };
                    let result = op().await;
                    for w in waiting {
                        let _ = w.send(result.clone());
                    }
                }
            });
        }
        rx.await.ok()
    }
}

/// The leader's read index, one leadership check per batch of readers.
#[derive(Clone)]
pub struct ReadIndex {
    raft: Raft,
    rounds: Coalescer<ReadIndexReply>,
}

impl ReadIndex {
    pub fn new(raft: Raft) -> Self {
        ReadIndex {
            raft,
            rounds: Coalescer::default(),
        }
    }

    /// The log index to apply up to before reading (on the leader), or who
    /// the leader is.
    pub async fn get(&self) -> ReadIndexReply {
        let raft = self.raft.clone();
        let round = move || {
            let raft = raft.clone();
            async move {
                // Bounded: a stuck round would hold up every later reader.
                match tokio::time::timeout(READ_ROUND, raft.ensure_linearizable()).await {
                    Ok(Ok(log_id)) => ReadIndexReply::Index(log_id.map(|l| l.index).unwrap_or(0)),
                    Ok(Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f)))) => {
                        ReadIndexReply::NotLeader(f.leader_id.zip(f.leader_node))
                    }
                    Ok(Err(e)) => ReadIndexReply::Failed(e.to_string()),
                    Err(_) => ReadIndexReply::Failed("leadership not confirmed in time".into()),
                }
            }
        };
        self.rounds
            .run(round)
            .await
            .unwrap_or_else(|| ReadIndexReply::Failed("read index round was dropped".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    /// 100 concurrent callers share few runs, and each gets a result from
    /// a run that started after it joined (the run's sequence number is at
    /// least the count of runs started before the caller joined).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_callers_share_runs_that_start_after_they_join() {
        let c = Coalescer::<usize>::default();
        let started = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..100 {
            let (c, started) = (c.clone(), started.clone());
            tasks.push(tokio::spawn(async move {
                let before = started.load(Ordering::SeqCst);
                let op_started = started.clone();
                let got = c
                    .run(move || {
                        let s = op_started.clone();
                        async move {
                            let n = s.fetch_add(1, Ordering::SeqCst) + 1;
                            tokio::time::sleep(Duration::from_millis(5)).await;
                            n
                        }
                    })
                    .await
                    .unwrap();
                assert!(
                    got > before,
                    "result of run {got}, joined after run {before} started"
                );
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let runs = started.load(Ordering::SeqCst);
        assert!(runs < 100, "{runs} runs for 100 concurrent callers");
    }
}
