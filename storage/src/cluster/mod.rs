//! Blob distribution over the cluster: which nodes own a blob (placement),
//! the replication protocol (whole pushes, pipelined appends, tees), reads
//! from peers, and each node's storage loop (repair, rebalance, scrub,
//! sweep).
//!
//! Everything here learns about the cluster through `ClusterView`, which
//! the node implements over Raft: storage never sees a log, a term or a
//! state machine, only members, the replication factor and which blobs are
//! committed.

pub mod cache;
pub mod checked_stream;
pub mod peer_http;
pub mod peer_reads;
pub mod pipeline;
pub mod reconcile;
pub mod replicas;
pub mod replication;
pub mod writer;

use std::collections::BTreeMap;

use tonic::transport::Channel;

pub use cache::{BlobCache, CacheReport};
pub use pipeline::UploadReplicas;
pub use reconcile::{Pacing, Reconciler, Report};
pub use replicas::{Placement, ReplicaError, Replicas, Tee};
pub use writer::{BlobWriter, Whole};

/// A member as blob distribution sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Peer {
    /// host:port of its RPC listener (blob transfers, peer reads).
    pub rpc_addr: String,
    /// Its share of blobs relative to the others (placement weight).
    pub weight: u32,
}

/// The membership as this node last learned it.
#[derive(Clone, Debug, Default)]
pub struct Membership {
    /// Voters: the nodes that own blobs.
    pub voters: Vec<u64>,
    /// Every member (voters and learners) by id.
    pub nodes: BTreeMap<u64, Peer>,
}

/// Changes whenever the membership does (any value that differs).
pub type MembershipVersion = Option<(u64, u64)>;

/// The cluster's state could not be read.
#[derive(Debug, thiserror::Error)]
#[error("reading the cluster state: {0}")]
pub struct ViewError(pub String);

/// What blob distribution needs from the cluster; the node implements it
/// over Raft's membership and the replicated state.
pub trait ClusterView: Send + Sync + 'static {
    /// This node's id.
    fn node_id(&self) -> u64;
    /// The current membership.
    fn membership(&self) -> Membership;
    /// A watch that changes with the membership (the storage loop starts a
    /// pass at once on every node when it does).
    fn membership_changes(&self) -> tokio::sync::watch::Receiver<MembershipVersion>;
    /// The replication factor the operator set, if any.
    fn replication_factor(&self) -> Result<Option<u32>, ViewError>;
    /// The operator's cluster-wide bandwidth for repair and rebalance
    /// pulls, if set (bytes per second; 0: no limit).
    fn pull_bytes_per_sec(&self) -> Option<u64>;
    /// A channel to a peer's RPC address (shared, connected on first use).
    fn channel(&self, addr: &str) -> Option<Channel>;
    /// Whether this node has applied every entry of its log and knows a
    /// leader: its view of the committed blobs is current enough to delete
    /// a file for lack of a record (not while replaying after a restart).
    fn caught_up(&self) -> bool;
    /// The size of a committed blob, `None` if it has no record.
    fn committed_size(&self, digest: &str) -> Result<Option<u64>, ViewError>;
    /// Committed digests in order after `after`, at most `n`, and whether
    /// there are more.
    fn committed_digests(
        &self,
        after: Option<&str>,
        n: usize,
    ) -> Result<(Vec<String>, bool), ViewError>;
}

/// For tests of the transfers alone: plain channels to any address, no
/// members, and every blob committed with `committed_size` (or none).
#[cfg(test)]
#[derive(Default)]
pub(crate) struct PlainChannels {
    pub committed_size: Option<u64>,
}

#[cfg(test)]
impl ClusterView for PlainChannels {
    fn node_id(&self) -> u64 {
        1
    }
    fn membership(&self) -> Membership {
        Membership::default()
    }
    fn membership_changes(&self) -> tokio::sync::watch::Receiver<MembershipVersion> {
        tokio::sync::watch::channel(None).1
    }
    fn replication_factor(&self) -> Result<Option<u32>, ViewError> {
        Ok(None)
    }
    fn pull_bytes_per_sec(&self) -> Option<u64> {
        None
    }
    fn channel(&self, addr: &str) -> Option<Channel> {
        let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{addr}")).ok()?;
        Some(endpoint.connect_lazy())
    }
    fn caught_up(&self) -> bool {
        true
    }
    fn committed_size(&self, _: &str) -> Result<Option<u64>, ViewError> {
        Ok(self.committed_size)
    }
    fn committed_digests(
        &self,
        _: Option<&str>,
        _: usize,
    ) -> Result<(Vec<String>, bool), ViewError> {
        Ok((Vec::new(), false))
    }
}
