//! Membership: who the voters and the leader are, what the leader does
//! when a node joins or asks for an id, and the joining node's side of
//! both (retried until the cluster answers, following the leader).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use openraft::error::{ClientWriteError, RaftError};

use crate::consensus::network::Network;
use crate::consensus::rpc::{
    AssignReply, AssignRequest, JoinReply, JoinRequest, Leader, ReadIndexReply,
};
use crate::consensus::types::{NodeId, NodeInfo, Raft};

pub(crate) fn leader_of(f: &openraft::error::ForwardToLeader<NodeId, NodeInfo>) -> Leader {
    f.leader_id.zip(f.leader_node.clone())
}

/// The current voters, as this node last saw the membership.
pub fn voters(raft: &Raft) -> BTreeSet<NodeId> {
    raft.metrics()
        .borrow()
        .membership_config
        .membership()
        .voter_ids()
        .collect()
}

/// The leader this node knows of, with its address (`None` if unknown).
pub fn known_leader(raft: &Raft) -> Leader {
    let m = raft.metrics();
    let m = m.borrow();
    let l = m.current_leader?;
    let node = m.membership_config.membership().get_node(&l).cloned()?;
    Some((l, node))
}

/// Ids a replacement takes: the preferred one plus a multiple of this, so
/// `tcr-2`'s incarnations are 3, 1003, 2003, ...
pub const ID_STRIDE: NodeId = 1000;

/// On the leader: an id for a node starting afresh at `node`'s address.
/// A member already at that address is a lost incarnation of it (its data
/// is gone, so it must not come back under its old id, whose votes it no
/// longer remembers): it is removed first, and the new node gets an id
/// no member has.
pub async fn assign_id(raft: &Raft, preferred: NodeId, node: &NodeInfo) -> AssignReply {
    let m = raft.metrics().borrow().clone();
    if m.current_leader != Some(m.id) {
        return AssignReply::NotLeader(known_leader(raft));
    }
    let membership = m.membership_config.membership().clone();
    let stale: Option<NodeId> = membership
        .nodes()
        .find(|(_, n)| n.rpc_addr == node.rpc_addr)
        .map(|(id, _)| *id);
    if let Some(old) = stale {
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        let change = if voters.contains(&old) {
            if voters.len() == 1 {
                return AssignReply::Failed(format!(
                    "node {old} at {} is the only voter; it cannot be replaced",
                    node.rpc_addr
                ));
            }
            openraft::ChangeMembers::RemoveVoters(BTreeSet::from([old]))
        } else {
            openraft::ChangeMembers::RemoveNodes(BTreeSet::from([old]))
        };
        tracing::info!(old, addr = %node.rpc_addr, "removing a lost incarnation before its replacement joins");
        match raft.change_membership(change, false).await {
            Ok(_) => {}
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                return AssignReply::NotLeader(leader_of(&f))
            }
            Err(e) => return AssignReply::Failed(e.to_string()),
        }
    }
    let taken = |id: NodeId| membership.get_node(&id).is_some() || Some(id) == stale;
    let id = (0..)
        .map(|k| preferred + k * ID_STRIDE)
        .find(|id| !taken(*id))
        .expect("an unbounded range has a free id");
    AssignReply::Assigned(id)
}

/// Add `id` as a learner, wait until it has caught up, then make it a voter.
/// Only the leader can; others answer with who the leader is.
pub async fn add_voter(raft: &Raft, id: NodeId, node: NodeInfo) -> JoinReply {
    tracing::info!(id, %node, "adding member");
    if !voters(raft).contains(&id) {
        match raft.add_learner(id, node, true).await {
            Ok(_) => {}
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                return JoinReply::NotLeader(leader_of(&f))
            }
            Err(e) => return JoinReply::Failed(e.to_string()),
        }
    }
    // Read again: the membership may have changed while the learner caught up.
    let mut voters = voters(raft);
    voters.insert(id);
    match raft.change_membership(voters, false).await {
        Ok(_) => JoinReply::Joined,
        Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
            JoinReply::NotLeader(leader_of(&f))
        }
        Err(e) => JoinReply::Failed(e.to_string()),
    }
}

/// Ask the leader (found through `seed`) for an id for a node starting
/// afresh at `node`'s address; retries until it answers.
pub async fn ask_for_id(network: &Network, seed: &str, preferred: u64, node: NodeInfo) -> u64 {
    let mut target = seed.to_string();
    loop {
        let req = AssignRequest {
            preferred,
            node: node.clone(),
        };
        let reply = network
            .call(&target, &req, |mut c, p| async move { c.assign(p).await })
            .await;
        match reply {
            Ok(AssignReply::Assigned(id)) => {
                tracing::info!(id, preferred, "the cluster assigned this node's id");
                return id;
            }
            Ok(AssignReply::NotLeader(Some((_, leader)))) => {
                target = leader.rpc_addr;
                continue;
            }
            Ok(AssignReply::NotLeader(None)) => target = seed.to_string(),
            Ok(AssignReply::Failed(e)) | Err(e) => {
                tracing::warn!(%target, "asking the cluster for a node id: {e}");
                target = seed.to_string();
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The first of `peers` where a member of a running cluster answers, asked
/// of all at once for up to `wait`; `None` when none has a cluster to offer.
pub async fn find_member(network: &Network, peers: &[String], wait: Duration) -> Option<String> {
    if peers.is_empty() {
        return None;
    }
    // Any answer to a read-index request means a member answers there.
    let probes = peers.iter().map(|peer| {
        Box::pin(async move {
            loop {
                let probe = network
                    .call::<_, ReadIndexReply, _, _>(peer, &(), |mut c, p| async move {
                        c.read_index(p).await
                    })
                    .await;
                if probe.is_ok() {
                    return peer.clone();
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        })
    });
    tokio::time::timeout(wait, futures::future::select_all(probes))
        .await
        .ok()
        .map(|found| found.0)
}

/// A new data dir: join the cluster at `join` (in the background: it waits
/// until this node has caught up), or else start a one-node cluster if
/// `init`. A node with Raft state carries on as it was.
pub async fn init_or_join(
    raft: &Raft,
    network: &Network,
    id: NodeId,
    me: NodeInfo,
    join: Option<String>,
    init: bool,
) -> Result<(), String> {
    if raft.is_initialized().await.map_err(|e| e.to_string())? {
        return Ok(());
    }
    if let Some(seed) = join {
        let (raft, network) = (raft.clone(), network.clone());
        tokio::spawn(async move { join_at(&network, &raft, id, me, &seed).await });
    } else if init {
        raft.initialize(BTreeMap::from([(id, me)]))
            .await
            .map_err(|e| format!("initialising a one-node cluster: {e}"))?;
        tracing::info!(node_id = id, "initialised a new one-node cluster");
    }
    Ok(())
}

/// Ask the cluster (through `seed`, any member's RPC address) to add this
/// node: as a learner first, then as a voter once it has caught up. Retries
/// until it is a member, following redirects to the leader.
async fn join_at(network: &Network, raft: &Raft, id: NodeId, me: NodeInfo, seed: &str) {
    let mut target = seed.to_string();
    loop {
        if voters(raft).contains(&id) {
            tracing::info!(id, "joined the cluster as a voter");
            return;
        }
        let req = JoinRequest {
            id,
            node: me.clone(),
        };
        let reply = network
            .call(&target, &req, |mut c, p| async move { c.join(p).await })
            .await;
        match reply {
            Ok(JoinReply::Joined) => {}
            Ok(JoinReply::NotLeader(Some((_, leader)))) => {
                target = leader.rpc_addr;
                continue;
            }
            Ok(JoinReply::NotLeader(None)) => target = seed.to_string(),
            Ok(JoinReply::Failed(e)) | Err(e) => {
                tracing::warn!(%target, "joining the cluster: {e}");
                target = seed.to_string();
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
