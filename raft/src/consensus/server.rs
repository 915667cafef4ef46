//! The server side of node-to-node RPC: openraft's protocol, and what
//! followers ask of the leader (writes, read index, joining).

use std::collections::BTreeSet;

use openraft::error::{ClientWriteError, RaftError};
use tonic::{Request, Response, Status};
use tracing::Instrument;

use crate::consensus::read_index::ReadIndex;
use crate::consensus::rpc::proto::cluster_service_server::{ClusterService, ClusterServiceServer};
use crate::consensus::rpc::proto::raft_service_server::{RaftService, RaftServiceServer};
use crate::consensus::rpc::proto::Payload;
use crate::consensus::rpc::{
    decode, decode_limited, encode, AssignReply, AssignRequest, JoinReply, JoinRequest, Leader,
    ReadIndexReply, WriteReply, MAX_MESSAGE, SMALL_MESSAGE, WRITE_MESSAGE,
};
use crate::consensus::transfer::TransferGate;
use crate::consensus::types::{NodeId, NodeInfo, Raft};
use crate::model::command::Proposal;

fn bad_request(e: impl std::fmt::Display) -> Status {
    Status::invalid_argument(e.to_string())
}

fn reply<T: serde::Serialize>(v: &T) -> Result<Response<Payload>, Status> {
    encode(v)
        .map(Response::new)
        .map_err(|e| Status::internal(e.to_string()))
}

fn leader_of(f: &openraft::error::ForwardToLeader<NodeId, NodeInfo>) -> Leader {
    f.leader_id.zip(f.leader_node.clone())
}

/// Under mutual TLS, a node may only join or take an id for the address
/// its own certificate names: one member cannot remove another by
/// claiming its address. (Without peer TLS, on loopback or with
/// `--insecure-peers`, there is no certificate to check.)
fn caller_is(req: &Request<Payload>, rpc_addr: &str) -> Result<(), Status> {
    let Some(certs) = req.peer_certs() else {
        return Ok(());
    };
    let host = tcr_tls::host_of(rpc_addr);
    match certs.first() {
        Some(leaf) if tcr_tls::certificate_names(leaf, host) => Ok(()),
        _ => Err(Status::permission_denied(format!(
            "the caller's certificate does not name {host}, the address it claims"
        ))),
    }
}

#[derive(Clone)]
pub struct RaftRpc {
    raft: Raft,
}

#[tonic::async_trait]
impl RaftService for RaftRpc {
    async fn append_entries(&self, req: Request<Payload>) -> Result<Response<Payload>, Status> {
        let rpc = decode(req.get_ref()).map_err(bad_request)?;
        reply(&self.raft.append_entries(rpc).await)
    }

    async fn vote(&self, req: Request<Payload>) -> Result<Response<Payload>, Status> {
        let rpc = decode_limited::<_, SMALL_MESSAGE>(req.get_ref()).map_err(bad_request)?;
        reply(&self.raft.vote(rpc).await)
    }

    async fn install_snapshot(&self, req: Request<Payload>) -> Result<Response<Payload>, Status> {
        let rpc = decode(req.get_ref()).map_err(bad_request)?;
        reply(&self.raft.install_snapshot(rpc).await)
    }
}

#[derive(Clone)]
pub struct ClusterRpc {
    raft: Raft,
    gate: TransferGate,
    read_index: ReadIndex,
}

#[tonic::async_trait]
impl ClusterService for ClusterRpc {
    async fn write(&self, req: Request<Payload>) -> Result<Response<Payload>, Status> {
        let proposal: Proposal =
            decode_limited::<_, WRITE_MESSAGE>(req.get_ref()).map_err(bad_request)?;
        if self.gate.closed() {
            // Handing leadership over: the caller retries at the successor.
            return reply(&WriteReply::NotLeader(None));
        }
        let span = tracing::debug_span!("forwarded_write", command = proposal.command.kind());
        let r = match self.raft.client_write(proposal).instrument(span).await {
            Ok(resp) => WriteReply::Applied(resp.data),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                WriteReply::NotLeader(leader_of(&f))
            }
            Err(e) => WriteReply::Failed(e.to_string()),
        };
        reply(&r)
    }

    async fn read_index(&self, req: Request<Payload>) -> Result<Response<Payload>, Status> {
        decode_limited::<(), SMALL_MESSAGE>(req.get_ref()).map_err(bad_request)?;
        if self.gate.closed() {
            return reply(&ReadIndexReply::NotLeader(None));
        }
        reply(&self.read_index.get().await)
    }

    async fn join(&self, req: Request<Payload>) -> Result<Response<Payload>, Status> {
        let join: JoinRequest =
            decode_limited::<_, SMALL_MESSAGE>(req.get_ref()).map_err(bad_request)?;
        caller_is(&req, &join.node.rpc_addr)?;
        reply(&add_voter(&self.raft, join.id, join.node).await)
    }

    async fn assign(&self, req: Request<Payload>) -> Result<Response<Payload>, Status> {
        let a: AssignRequest =
            decode_limited::<_, SMALL_MESSAGE>(req.get_ref()).map_err(bad_request)?;
        caller_is(&req, &a.node.rpc_addr)?;
        reply(&assign_id(&self.raft, a.preferred, &a.node).await)
    }

    async fn elect(&self, req: Request<Payload>) -> Result<Response<Payload>, Status> {
        decode_limited::<(), SMALL_MESSAGE>(req.get_ref()).map_err(bad_request)?;
        tracing::info!("campaigning at the leader's request (leadership transfer)");
        let r: Result<(), String> = self.raft.trigger().elect().await.map_err(|e| e.to_string());
        reply(&r)
    }
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
    let m = raft.metrics().borrow().clone();
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

/// The two services, ready to mount on a tonic server.
pub fn services(
    raft: Raft,
    gate: TransferGate,
    read_index: ReadIndex,
) -> (RaftServiceServer<RaftRpc>, ClusterServiceServer<ClusterRpc>) {
    (
        RaftServiceServer::new(RaftRpc { raft: raft.clone() })
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE),
        ClusterServiceServer::new(ClusterRpc {
            raft,
            gate,
            read_index,
        })
        .max_decoding_message_size(WRITE_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE),
    )
}
