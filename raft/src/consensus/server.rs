//! The server side of node-to-node RPC: openraft's protocol, and what
//! followers ask of the leader (writes, read index, joining).

use openraft::error::{ClientWriteError, RaftError};
use tonic::{Request, Response, Status};
use tracing::Instrument;

use openraft::raft::AppendEntriesResponse;

use crate::consensus::election::{Elections, PreVoteRequest};
use crate::consensus::lease::{lapsed_message, QuorumAcks};
use crate::consensus::members::{add_voter, assign_id, leader_of};
use crate::consensus::read_index::ReadIndex;
use crate::consensus::rpc::proto::cluster_service_server::{ClusterService, ClusterServiceServer};
use crate::consensus::rpc::proto::raft_service_server::{RaftService, RaftServiceServer};
use crate::consensus::rpc::proto::Payload;
use crate::consensus::rpc::{
    decode, decode_limited, encode, AssignRequest, JoinRequest, ReadIndexReply, WriteReply,
    MAX_MESSAGE, SMALL_MESSAGE, WRITE_MESSAGE,
};
use crate::consensus::transfer::TransferGate;
use crate::consensus::types::{NodeId, Raft};
use crate::model::command::Proposal;

fn bad_request(e: impl std::fmt::Display) -> Status {
    Status::invalid_argument(e.to_string())
}

fn reply<T: serde::Serialize>(v: &T) -> Result<Response<Payload>, Status> {
    encode(v)
        .map(Response::new)
        .map_err(|e| Status::internal(e.to_string()))
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
    elections: Elections,
}

/// Whether openraft accepted the sender as its leader.
fn from_leader<T>(r: &Result<AppendEntriesResponse<NodeId>, T>) -> bool {
    matches!(
        r,
        Ok(AppendEntriesResponse::Success | AppendEntriesResponse::PartialSuccess(_))
            | Ok(AppendEntriesResponse::Conflict)
    )
}

#[tonic::async_trait]
impl RaftService for RaftRpc {
    async fn append_entries(&self, req: Request<Payload>) -> Result<Response<Payload>, Status> {
        let rpc = decode(req.get_ref()).map_err(bad_request)?;
        let r = self.raft.append_entries(rpc).await;
        if from_leader(&r) {
            self.elections.heard_leader();
        }
        reply(&r)
    }

    async fn vote(&self, req: Request<Payload>) -> Result<Response<Payload>, Status> {
        let rpc = decode_limited::<_, SMALL_MESSAGE>(req.get_ref()).map_err(bad_request)?;
        let r = self.raft.vote(rpc).await;
        // Granting a vote restarts the election timer, as in Raft: the
        // candidate is about to lead.
        if r.as_ref().is_ok_and(|v| v.vote_granted) {
            self.elections.heard_leader();
        }
        reply(&r)
    }

    async fn install_snapshot(&self, req: Request<Payload>) -> Result<Response<Payload>, Status> {
        let rpc = decode(req.get_ref()).map_err(bad_request)?;
        let r = self.raft.install_snapshot(rpc).await;
        if r.is_ok() {
            self.elections.heard_leader();
        }
        reply(&r)
    }
}

#[derive(Clone)]
pub struct ClusterRpc {
    raft: Raft,
    gate: TransferGate,
    read_index: ReadIndex,
    acks: QuorumAcks,
    elections: Elections,
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
        if let Some(age) = self.acks.lapsed(&self.raft, &self.gate) {
            return reply(&WriteReply::Failed(lapsed_message(age)));
        }
        let span = tracing::debug_span!("forwarded_write", command = proposal.command.kind());
        let write = self.raft.client_write(proposal).instrument(span);
        let r = tokio::select! {
            r = write => match r {
                Ok(resp) => WriteReply::Applied(resp.data),
                Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                    WriteReply::NotLeader(leader_of(&f))
                }
                Err(e) => WriteReply::Failed(e.to_string()),
            },
            // Cut off from the quorum: the caller moves on (the entry may
            // still commit if this node keeps its office: indeterminate).
            age = self.acks.until_lapsed(&self.raft, &self.gate) => WriteReply::Failed(lapsed_message(age)),
        };
        reply(&r)
    }

    async fn read_index(&self, req: Request<Payload>) -> Result<Response<Payload>, Status> {
        decode_limited::<(), SMALL_MESSAGE>(req.get_ref()).map_err(bad_request)?;
        if self.gate.closed() {
            return reply(&ReadIndexReply::NotLeader(None));
        }
        if let Some(age) = self.acks.lapsed(&self.raft, &self.gate) {
            return reply(&ReadIndexReply::Failed(lapsed_message(age)));
        }
        let r = tokio::select! {
            r = self.read_index.get() => r,
            age = self.acks.until_lapsed(&self.raft, &self.gate) => ReadIndexReply::Failed(lapsed_message(age)),
        };
        reply(&r)
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

    async fn pre_vote(&self, req: Request<Payload>) -> Result<Response<Payload>, Status> {
        let pv: PreVoteRequest =
            decode_limited::<_, SMALL_MESSAGE>(req.get_ref()).map_err(bad_request)?;
        let r = self
            .elections
            .answer(&self.raft, &self.acks, &self.gate, &pv)
            .await;
        tracing::debug!(candidate = pv.candidate, reply = ?r, "pre-vote");
        reply(&r)
    }

    async fn elect(&self, req: Request<Payload>) -> Result<Response<Payload>, Status> {
        decode_limited::<(), SMALL_MESSAGE>(req.get_ref()).map_err(bad_request)?;
        tracing::info!("campaigning at the leader's request (leadership transfer)");
        let r: Result<(), String> = self.raft.trigger().elect().await.map_err(|e| e.to_string());
        reply(&r)
    }
}

/// The two services, ready to mount on a tonic server.
pub fn services(
    raft: Raft,
    gate: TransferGate,
    read_index: ReadIndex,
    acks: QuorumAcks,
    elections: Elections,
) -> (RaftServiceServer<RaftRpc>, ClusterServiceServer<ClusterRpc>) {
    (
        RaftServiceServer::new(RaftRpc {
            raft: raft.clone(),
            elections: elections.clone(),
        })
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE),
        ClusterServiceServer::new(ClusterRpc {
            raft,
            gate,
            read_index,
            acks,
            elections,
        })
        .max_decoding_message_size(WRITE_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE),
    )
}
