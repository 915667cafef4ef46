//! The wire between nodes: generated tonic code, payload encoding, and the
//! replies of the cluster service.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::consensus::types::{NodeId, NodeInfo};
use crate::model::command::CommandResult;

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
    #[error("a payload of {size} bytes is over the limit of {limit}")]
    TooLarge { size: usize, limit: usize },
    #[error("{0} bytes after the end of the payload")]
    Trailing(usize),
}

pub fn encode<T: Serialize>(v: &T) -> Result<proto::Payload, WireError> {
    Ok(proto::Payload {
        data: bincode::serde::encode_to_vec(v, bincode::config::standard())?,
    })
}

/// Decode a payload that a well-behaved peer never makes larger than the
/// message cap. A claimed length beyond what the bytes can hold fails
/// before anything is allocated for it.
pub fn decode<T: DeserializeOwned>(p: &proto::Payload) -> Result<T, WireError> {
    decode_limited::<T, MAX_MESSAGE>(p)
}

/// Decode with an explicit byte limit: bincode checks every claimed
/// length against it before allocating (without a limit, 11 bytes that
/// claim a string of 2^62 bytes abort the process).
pub fn decode_limited<T: DeserializeOwned, const LIMIT: usize>(
    p: &proto::Payload,
) -> Result<T, WireError> {
    // Nothing decoded can be larger than the bytes received.
    if p.data.len() > LIMIT {
        return Err(WireError::TooLarge {
            size: p.data.len(),
            limit: LIMIT,
        });
    }
    let config = bincode::config::standard().with_limit::<LIMIT>();
    let (v, used) = bincode::serde::decode_from_slice(&p.data, config)?;
    if used != p.data.len() {
        return Err(WireError::Trailing(p.data.len() - used));
    }
    Ok(v)
}

/// Requests with no bulk (votes, joins, id assignments, leadership calls).
pub const SMALL_MESSAGE: usize = 64 << 10;

/// A forwarded write: one command, whose largest part is a manifest (at
/// most `--max-manifest-bytes`, 4 MiB by default) or a batch of pull
/// times; room for a manifest limit raised to 16 MiB.
pub const WRITE_MESSAGE: usize = 24 << 20;

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
