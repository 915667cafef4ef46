//! The node's view of the replicated metadata: writes are Raft commands
//! (forwarded to the leader from followers), reads are served from the
//! local state machine after a read-index check (asked of the leader when
//! this node follows).

use std::cell::Cell;
use std::future::Future;
use std::time::{Duration, Instant};

use openraft::error::{ClientWriteError, RaftError};
use tcr_raft::consensus::network::Network;
use tcr_raft::consensus::read_index::{Coalescer, ReadIndex};
use tcr_raft::consensus::rpc::{decode, encode, Leader, ReadIndexReply, WriteReply};
use tcr_raft::consensus::transfer::{transfer_leadership, TransferGate, TransferReply};
use tcr_raft::{Command, CommandResult, Proposal, Raft, Refusal, StateReader};

use crate::config::ReadConsistency;

tokio::task_local! {
    /// Whether the request running in this task has done a linearizable
    /// read since its last write.
    static FRESH: Cell<bool>;
}

/// Run `request` so that its reads share one read-index round: the first
/// read's round started after the request did, so the state it waited for
/// already holds every write acknowledged before the request; later reads
/// (the handler's, after the access decision's) reuse it, until the
/// request writes.
pub async fn one_read_per_request<F: Future>(request: F) -> F::Output {
    FRESH.scope(Cell::new(false), request).await
}

fn forget_fresh_read() {
    let _ = FRESH.try_with(|f| f.set(false));
}

#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    #[error("{0}")]
    Refused(Refusal),
    #[error("metadata is unavailable: {0}")]
    Unavailable(String),
}

#[derive(Clone)]
pub struct Metadata {
    pub raft: Raft,
    reader: StateReader,
    consistency: ReadConsistency,
    network: Network,
    gate: TransferGate,
    read_index: ReadIndex,
    read_rounds: Coalescer<Result<u64, String>>,
}

/// How long a request waits for a leader (elections, leader changes) before
/// it fails with 503 and Retry-After.
const LEADER_WAIT: Duration = Duration::from_secs(10);
const RETRY_PAUSE: Duration = Duration::from_millis(100);
/// One forwarded call may take this long before the leader is looked up
/// again (a partitioned leader's connection hangs rather than fails).
const FORWARD_ATTEMPT: Duration = Duration::from_secs(3);

/// What one attempt at a leader-only operation came to.
enum Attempt<T> {
    Done(T),
    /// Not the leader here: try at this one (or wait for one).
    Elsewhere(Leader),
    Failed(String),
}

impl Metadata {
    pub fn new(
        raft: Raft,
        reader: StateReader,
        consistency: ReadConsistency,
        network: Network,
        gate: TransferGate,
        read_index: ReadIndex,
    ) -> Self {
        Metadata {
            raft,
            reader,
            consistency,
            network,
            gate,
            read_index,
            read_rounds: Coalescer::default(),
        }
    }

    /// Hand leadership to voter `to` (see `tcr_raft::transfer`).
    pub async fn transfer_leadership(&self, to: u64) -> TransferReply {
        transfer_leadership(&self.raft, &self.network, &self.gate, to).await
    }

    /// Run `local` here if this node leads, else `remote` at the leader,
    /// following leader changes until `LEADER_WAIT` has passed.
    async fn at_leader<T, L, LF, R, RF>(
        &self,
        what: &str,
        local: L,
        remote: R,
    ) -> Result<T, MetaError>
    where
        L: Fn() -> LF,
        LF: std::future::Future<Output = Attempt<T>>,
        R: Fn(String) -> RF,
        RF: std::future::Future<Output = Attempt<T>>,
    {
        let deadline = Instant::now() + LEADER_WAIT;
        let mut last = String::from("no leader is known");
        // Start at the leader this node knows of: asking the local Raft
        // first only to be told to forward costs a round trip through it.
        let mut target: Leader = tcr_raft::consensus::server::known_leader(&self.raft)
            .filter(|(l, _)| *l != self.raft_id());
        loop {
            // Every attempt is bounded: a leader cut off by a partition
            // never commits, and a forwarded call can hang on a dead peer.
            let left = deadline.saturating_duration_since(Instant::now());
            let attempt = match &target {
                Some((id, node)) if *id != self.raft_id() => {
                    tokio::time::timeout(left.min(FORWARD_ATTEMPT), remote(node.rpc_addr.clone()))
                        .await
                }
                _ => tokio::time::timeout(left, local()).await,
            }
            .unwrap_or_else(|_| Attempt::Failed("no answer in time".to_string()));
            match attempt {
                Attempt::Done(v) => return Ok(v),
                Attempt::Elsewhere(l) => {
                    if l.is_none() {
                        last = "no leader is known".into();
                    }
                    target = l;
                }
                Attempt::Failed(e) => {
                    last = e;
                    target = None;
                }
            }
            if Instant::now() >= deadline {
                return Err(MetaError::Unavailable(format!("{what}: {last}")));
            }
            if target.is_none() {
                tokio::time::sleep(RETRY_PAUSE).await;
            }
        }
    }

    fn raft_id(&self) -> u64 {
        self.raft.metrics().borrow().id
    }

    /// Propose a command and wait until it is committed and applied. Every
    /// attempt carries the same request id, so a proposal whose first
    /// attempt was in fact committed is applied once (see `Proposal`).
    #[tracing::instrument(level = "debug", skip_all, fields(command = cmd.kind()))]
    pub async fn write(&self, cmd: Command) -> Result<(), MetaError> {
        // A read after this write must see it: it takes a round of its own.
        forget_fresh_read();
        let written = self.write_now(cmd).await;
        forget_fresh_read();
        written
    }

    async fn write_now(&self, cmd: Command) -> Result<(), MetaError> {
        // Who asked goes into the same log entry (the audit trail).
        let cmd = if cmd.is_audited() {
            Command::Audited {
                context: crate::audit::context(self.raft_id()),
                command: Box::new(cmd),
            }
        } else {
            cmd
        };
        let proposal = Proposal {
            request: uuid::Uuid::new_v4().as_u128(),
            command: cmd,
        };
        let cmd = &proposal;
        let local = || async {
            if self.gate.closed() {
                // Handing leadership over: wait for the successor.
                return Attempt::Elsewhere(None);
            }
            match self.raft.client_write(cmd.clone()).await {
                Ok(resp) => Attempt::Done(resp.data),
                Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                    Attempt::Elsewhere(f.leader_id.zip(f.leader_node))
                }
                Err(e) => Attempt::Failed(e.to_string()),
            }
        };
        let remote = |addr: String| async move {
            let Some(mut client) = self.network.cluster_client(&addr) else {
                return Attempt::Failed(format!("leader address '{addr}' is invalid"));
            };
            let payload = match encode(cmd) {
                Ok(p) => p,
                Err(e) => return Attempt::Failed(e.to_string()),
            };
            match client
                .write(payload)
                .await
                .map(|r| decode::<WriteReply>(r.get_ref()))
            {
                Ok(Ok(WriteReply::Applied(r))) => Attempt::Done(r),
                Ok(Ok(WriteReply::NotLeader(l))) => Attempt::Elsewhere(l),
                Ok(Ok(WriteReply::Failed(e))) => Attempt::Failed(e),
                Ok(Err(e)) => Attempt::Failed(e.to_string()),
                Err(s) => Attempt::Failed(format!(
                    "forwarding to the leader at {addr}: {}",
                    s.message()
                )),
            }
        };
        match self.at_leader("write", local, remote).await? {
            CommandResult::Ok => Ok(()),
            CommandResult::Refused(r) => Err(MetaError::Refused(r)),
        }
    }

    /// The local state, once it reflects every write acknowledged before this
    /// call (read index), or at once in stale mode.
    pub async fn read(&self) -> Result<&StateReader, MetaError> {
        if self.consistency == ReadConsistency::Stale || FRESH.try_with(Cell::get).unwrap_or(false)
        {
            return Ok(&self.reader);
        }
        // Concurrent readers share one read-index request to the leader (a
        // round that starts after they joined, so each index is fresh).
        let this = self.clone();
        let round = move || {
            let this = this.clone();
            async move { this.read_index().await.map_err(|e| e.to_string()) }
        };
        let index = match self.read_rounds.run(round).await {
            Some(Ok(i)) => i,
            Some(Err(e)) => return Err(MetaError::Unavailable(e)),
            None => return Err(MetaError::Unavailable("shutting down".into())),
        };
        // A follower serves the read once it has applied up to the leader's
        // read index: then it reflects every write acknowledged before.
        self.raft
            .wait(Some(LEADER_WAIT))
            .applied_index_at_least(Some(index), "read index")
            .await
            .map_err(|e| MetaError::Unavailable(format!("catching up to the read index: {e}")))?;
        let _ = FRESH.try_with(|f| f.set(true));
        Ok(&self.reader)
    }

    /// The read index, from this node if it leads or else from the leader.
    async fn read_index(&self) -> Result<u64, MetaError> {
        let local = || async {
            if self.gate.closed() {
                return Attempt::Elsewhere(None);
            }
            // Shared with concurrent readers (one leadership check per round).
            match self.read_index.get().await {
                ReadIndexReply::Index(i) => Attempt::Done(i),
                ReadIndexReply::NotLeader(l) => Attempt::Elsewhere(l),
                ReadIndexReply::Failed(e) => Attempt::Failed(e),
            }
        };
        let remote = |addr: String| async move {
            let Some(mut client) = self.network.cluster_client(&addr) else {
                return Attempt::Failed(format!("leader address '{addr}' is invalid"));
            };
            let payload = encode(&()).expect("unit encodes");
            match client
                .read_index(payload)
                .await
                .map(|r| decode::<ReadIndexReply>(r.get_ref()))
            {
                Ok(Ok(ReadIndexReply::Index(i))) => Attempt::Done(i),
                Ok(Ok(ReadIndexReply::NotLeader(l))) => Attempt::Elsewhere(l),
                Ok(Ok(ReadIndexReply::Failed(e))) => Attempt::Failed(e),
                Ok(Err(e)) => Attempt::Failed(e.to_string()),
                Err(s) => Attempt::Failed(format!(
                    "read index from the leader at {addr}: {}",
                    s.message()
                )),
            }
        };
        self.at_leader("read", local, remote).await
    }

    pub fn reader(&self) -> &StateReader {
        &self.reader
    }
}
