//! The node's view of the replicated metadata: writes are Raft commands
//! (forwarded to the leader from followers), reads are served from the
//! local state machine after a read-index check (asked of the leader when
//! this node follows).

use std::cell::Cell;
use std::future::Future;

use tcr_raft::{
    Command, CommandResult, Consensus, Proposal, Raft, Refusal, StateReader, TransferReply,
};

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
    consensus: Consensus,
    reader: StateReader,
    consistency: ReadConsistency,
}

impl Metadata {
    pub fn new(consensus: Consensus, reader: StateReader, consistency: ReadConsistency) -> Self {
        Metadata {
            consensus,
            reader,
            consistency,
        }
    }

    pub fn consensus(&self) -> &Consensus {
        &self.consensus
    }

    /// openraft's handle (metrics and membership).
    pub fn raft(&self) -> &Raft {
        self.consensus.raft()
    }

    /// Hand leadership to voter `to`.
    pub async fn transfer_leadership(&self, to: u64) -> TransferReply {
        self.consensus.transfer_leadership(to).await
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
                context: crate::audit::context(self.consensus.id()),
                command: Box::new(cmd),
            }
        } else {
            cmd
        };
        let proposal = Proposal {
            request: uuid::Uuid::new_v4().as_u128(),
            command: cmd,
        };
        match self.consensus.write(&proposal).await {
            Ok(CommandResult::Ok) => Ok(()),
            Ok(CommandResult::Refused(r)) => Err(MetaError::Refused(r)),
            Err(e) => Err(MetaError::Unavailable(e.0)),
        }
    }

    /// The local state, once it reflects every write acknowledged before this
    /// call (read index), or at once in stale mode.
    pub async fn read(&self) -> Result<&StateReader, MetaError> {
        if self.consistency == ReadConsistency::Stale || FRESH.try_with(Cell::get).unwrap_or(false)
        {
            return Ok(&self.reader);
        }
        self.consensus
            .read_barrier()
            .await
            .map_err(|e| MetaError::Unavailable(e.0))?;
        let _ = FRESH.try_with(|f| f.set(true));
        Ok(&self.reader)
    }

    pub fn reader(&self) -> &StateReader {
        &self.reader
    }
}
