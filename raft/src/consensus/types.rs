//! The openraft type configuration for tcr's metadata group.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::model::command::{CommandResult, Proposal};

pub type NodeId = u64;

/// What every member knows about another: where to reach it, and its
/// relative storage capacity (blob placement weight).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    pub rpc_addr: String,
    pub http_addr: String,
    #[serde(default = "default_weight")]
    pub weight: u32,
}

/// The weight of a member that did not say (all equal by default).
pub const DEFAULT_WEIGHT: u32 = 100;

fn default_weight() -> u32 {
    DEFAULT_WEIGHT
}

impl Default for NodeInfo {
    fn default() -> Self {
        NodeInfo {
            rpc_addr: String::new(),
            http_addr: String::new(),
            weight: DEFAULT_WEIGHT,
        }
    }
}

impl fmt::Display for NodeInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "rpc={} http={} weight={}",
            self.rpc_addr, self.http_addr, self.weight
        )
    }
}

openraft::declare_raft_types!(
    /// Type configuration of the metadata Raft group.
    pub TypeConfig:
        D = Proposal,
        R = CommandResult,
        NodeId = NodeId,
        Node = NodeInfo,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = tokio::fs::File,
        AsyncRuntime = openraft::TokioRuntime,
);

pub type Raft = openraft::Raft<TypeConfig>;
pub type LogId = openraft::LogId<NodeId>;
pub type Vote = openraft::Vote<NodeId>;
pub type Entry = openraft::Entry<TypeConfig>;
pub type StoredMembership = openraft::StoredMembership<NodeId, NodeInfo>;
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, NodeInfo>;
pub type Snapshot = openraft::Snapshot<TypeConfig>;
pub type StorageError = openraft::StorageError<NodeId>;
pub type Metrics = openraft::RaftMetrics<NodeId, NodeInfo>;
