//! What blob distribution (`tcr_storage::cluster`) sees of the cluster,
//! read from Raft: its membership and metrics, and the replicated state's
//! blob records and settings.

use std::sync::Arc;

use tcr_raft::Network;
use tcr_raft::{Raft, StateReader};
use tcr_storage::cluster::{ClusterView, Membership, MembershipVersion, Peer, ViewError};
use tokio::sync::watch;
use tonic::transport::Channel;

pub struct RaftView {
    node_id: u64,
    raft: Raft,
    reader: StateReader,
    network: Network,
    membership: watch::Receiver<MembershipVersion>,
}

impl RaftView {
    pub fn new(node_id: u64, raft: Raft, reader: StateReader, network: Network) -> Arc<Self> {
        let mut metrics = raft.metrics();
        let version = |m: &openraft::RaftMetrics<tcr_raft::NodeId, tcr_raft::NodeInfo>| {
            m.membership_config
                .log_id()
                .map(|l| (l.leader_id.get_term(), l.index))
        };
        let (tx, rx) = watch::channel(version(&metrics.borrow()));
        // Raft's metrics change with every entry; the watch only with the
        // membership.
        tokio::spawn(async move {
            while metrics.changed().await.is_ok() {
                let now = version(&metrics.borrow());
                tx.send_if_modified(|seen| std::mem::replace(seen, now) != now);
            }
        });
        Arc::new(RaftView {
            node_id,
            raft,
            reader,
            network,
            membership: rx,
        })
    }
}

fn view_error(e: tcr_raft::ReadError) -> ViewError {
    ViewError(e.to_string())
}

impl ClusterView for RaftView {
    fn node_id(&self) -> u64 {
        self.node_id
    }

    fn membership(&self) -> Membership {
        let m = self.raft.metrics().borrow().membership_config.clone();
        let membership = m.membership();
        Membership {
            voters: membership.voter_ids().collect(),
            nodes: membership
                .nodes()
                .map(|(id, n)| {
                    let peer = Peer {
                        rpc_addr: n.rpc_addr.clone(),
                        weight: n.weight,
                    };
                    (*id, peer)
                })
                .collect(),
        }
    }

    fn membership_changes(&self) -> watch::Receiver<MembershipVersion> {
        self.membership.clone()
    }

    fn replication_factor(&self) -> Result<Option<u32>, ViewError> {
        self.reader.replication_factor().map_err(view_error)
    }

    fn pull_bytes_per_sec(&self) -> Option<u64> {
        self.reader.rebalance_bytes_per_sec().ok().flatten()
    }

    fn channel(&self, addr: &str) -> Option<Channel> {
        self.network.channel(addr)
    }

    fn caught_up(&self) -> bool {
        let m = self.raft.metrics().borrow().clone();
        m.current_leader.is_some() && m.last_applied.map(|l| l.index) >= m.last_log_index
    }

    fn committed_size(&self, digest: &str) -> Result<Option<u64>, ViewError> {
        Ok(self
            .reader
            .blob(digest)
            .map_err(view_error)?
            .map(|b| b.size))
    }

    fn committed_digests(
        &self,
        after: Option<&str>,
        n: usize,
    ) -> Result<(Vec<String>, bool), ViewError> {
        let page = self.reader.blob_digests(after, n).map_err(view_error)?;
        Ok((page.items, page.more))
    }
}
