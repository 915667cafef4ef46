//! The wire between nodes: generated tonic code, payload encoding, and the
//! replies of the cluster service.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::command::CommandResult;
use crate::types::{NodeId, NodeInfo};

pub mod proto {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("tcr.raft.v1");
}

/// Largest message between nodes (append-entries batches carry manifests
/// of up to 4 MiB each; snapshot chunks are smaller).
pub const MAX_MESSAGE: usize = 256 << 20;

#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("encoding: {0}")]
    Encode(#[from] bincode::error::EncodeError),
    #[error("decoding: {0}")]
    Decode(#[from] bincode::error::DecodeError),
}

pub fn encode<T: Serialize>(v: &T) -> Result<proto::Payload, WireError> {
    Ok(proto::Payload {
        data: bincode::serde::encode_to_vec(v, bincode::config::standard())?,
    })
}

pub fn decode<T: DeserializeOwned>(p: &proto::Payload) -> Result<T, WireError> {
    Ok(bincode::serde::decode_from_slice(&p.data, bincode::config::standard())?.0)
}

/// The current leader as a follower knows it.
pub type Leader = Option<(NodeId, NodeInfo)>;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum WriteReply {
    Applied(CommandResult),
    NotLeader(Leader),
    Failed(String),
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum ReadIndexReply {
    /// Apply up to this log index, then read.
    Index(u64),
    NotLeader(Leader),
    Failed(String),
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct JoinRequest {
    pub id: NodeId,
    pub node: NodeInfo,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AssignRequest {
    pub preferred: NodeId,
    pub node: NodeInfo,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum AssignReply {
    Assigned(NodeId),
    NotLeader(Leader),
    Failed(String),
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum JoinReply {
    Joined,
    NotLeader(Leader),
    Failed(String),
}
