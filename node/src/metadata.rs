//! The node's view of the replicated metadata: writes are Raft commands,
//! reads are served from the local state machine after a read-index check.

use std::time::Duration;

use openraft::error::{ClientWriteError, RaftError};
use tcr_raft::{Command, Raft, Refusal, StateReader};

use crate::config::ReadConsistency;

#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    #[error("{0}")]
    Refused(Refusal),
    #[error("metadata is unavailable: {0}")]
    Unavailable(String),
    #[error("metadata storage failed: {0}")]
    Storage(String),
}

#[derive(Clone)]
pub struct Metadata {
    pub raft: Raft,
    reader: StateReader,
    consistency: ReadConsistency,
}

const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

impl Metadata {
    pub fn new(raft: Raft, reader: StateReader, consistency: ReadConsistency) -> Self {
        Metadata {
            raft,
            reader,
            consistency,
        }
    }

    /// Propose a command and wait until it is committed and applied.
    #[tracing::instrument(level = "debug", skip_all, fields(command = cmd.kind()))]
    pub async fn write(&self, cmd: Command) -> Result<(), MetaError> {
        let res = tokio::time::timeout(WRITE_TIMEOUT, self.raft.client_write(cmd))
            .await
            .map_err(|_| MetaError::Unavailable("timed out waiting for the Raft commit".into()))?;
        match res {
            Ok(resp) => resp.data.into_result().map_err(MetaError::Refused),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                Err(MetaError::Unavailable(match f.leader_id {
                    Some(id) => format!("this node is not the leader (node {id} is)"),
                    None => "no leader is elected".into(),
                }))
            }
            Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(e))) => {
                Err(MetaError::Unavailable(e.to_string()))
            }
            Err(RaftError::Fatal(f)) => Err(MetaError::Storage(f.to_string())),
        }
    }

    /// The local state, once it reflects every write acknowledged before this
    /// call (read index), or at once in stale mode.
    pub async fn read(&self) -> Result<&StateReader, MetaError> {
        if self.consistency == ReadConsistency::Linearizable {
            tokio::time::timeout(WRITE_TIMEOUT, self.raft.ensure_linearizable())
                .await
                .map_err(|_| MetaError::Unavailable("timed out confirming leadership".into()))?
                .map_err(|e| MetaError::Unavailable(e.to_string()))?;
        }
        Ok(&self.reader)
    }
}
