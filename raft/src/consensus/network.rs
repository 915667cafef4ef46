//! openraft's network over tonic. Two lazily connected channels per peer
//! address: a control channel for Raft and the cluster service (forwarded
//! writes, read-index requests, membership), which pings every heartbeat so
//! a partitioned peer is noticed in about a second; and a data channel for
//! blob transfers, whose large streams must neither delay a heartbeat nor
//! be cut by a ping that waits behind them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use tonic::transport::{Channel, Endpoint};

use crate::consensus::lease::QuorumAcks;
use crate::consensus::rpc::proto::cluster_service_client::ClusterServiceClient;
use crate::consensus::rpc::proto::raft_service_client::RaftServiceClient;
use crate::consensus::rpc::proto::Payload;
use crate::consensus::rpc::{decode, encode, MAX_MESSAGE};
use crate::consensus::timing::{PEER_CONNECT, PEER_PING, PEER_PING_TIMEOUT, PEER_RETRY};
use crate::consensus::types::{NodeId, NodeInfo, TypeConfig};

#[derive(Clone, Default)]
pub struct Network {
    /// Blob transfers, by peer address.
    data: Arc<Mutex<HashMap<String, Channel>>>,
    /// Raft and the cluster service, by peer address.
    control: Arc<Mutex<HashMap<String, Channel>>>,
    /// Mutual TLS to every peer (`None`: plain HTTP/2, on loopback or
    /// with `--insecure-peers`).
    tls: Option<tcr_tls::PeerConnector>,
    /// When followers last acknowledged this node as leader.
    acks: QuorumAcks,
}

#[derive(Clone, Copy)]
enum Purpose {
    Data,
    Control,
}

impl Network {
    /// Calls to peers through `tls` (a connector presenting this node's
    /// certificate), or in plain text when `None`.
    pub fn new(tls: Option<tcr_tls::PeerConnector>) -> Network {
        Network {
            tls,
            ..Network::default()
        }
    }

    pub(crate) fn acks(&self) -> &QuorumAcks {
        &self.acks
    }

    /// A channel for blob transfers to `addr` (host:port), connected on
    /// first use.
    pub fn channel(&self, addr: &str) -> Option<Channel> {
        self.channel_for(addr, Purpose::Data)
    }

    fn channel_for(&self, addr: &str, purpose: Purpose) -> Option<Channel> {
        let pool = match purpose {
            Purpose::Data => &self.data,
            Purpose::Control => &self.control,
        };
        let mut map = pool.lock().expect("channels lock");
        if let Some(c) = map.get(addr) {
            return Some(c.clone());
        }
        let endpoint = Endpoint::from_shared(format!("http://{addr}"))
            .ok()?
            .tcp_nodelay(true)
            // Blob transfers stream 1 MiB chunks: HTTP/2's 64 KiB default
            // window would stall them on every chunk.
            .initial_stream_window_size(Some(8 << 20))
            .initial_connection_window_size(Some(32 << 20))
            // A peer sends us blob chunks in 1 MiB frames instead of 16 KiB
            // ones: 64 times fewer frames for h2 to parse and account for.
            .max_frame_size(Some(MAX_FRAME));
        let endpoint = match purpose {
            Purpose::Data => endpoint
                .connect_timeout(Duration::from_secs(2))
                .http2_keep_alive_interval(Duration::from_secs(10)),
            // A dead connection is closed after a missed ping, and the next
            // call dials again (see `timing`).
            Purpose::Control => endpoint
                .connect_timeout(PEER_CONNECT)
                .http2_keep_alive_interval(PEER_PING)
                .keep_alive_timeout(PEER_PING_TIMEOUT)
                .keep_alive_while_idle(true),
        };
        let channel = match &self.tls {
            Some(tls) => endpoint.connect_with_connector_lazy(tls.clone()),
            None => endpoint.connect_lazy(),
        };
        map.insert(addr.to_string(), channel.clone());
        Some(channel)
    }

    pub fn cluster_client(&self, addr: &str) -> Option<ClusterServiceClient<Channel>> {
        self.channel_for(addr, Purpose::Control).map(|c| {
            ClusterServiceClient::new(c)
                .max_decoding_message_size(MAX_MESSAGE)
                .max_encoding_message_size(MAX_MESSAGE)
        })
    }

    /// One call to the cluster service at `addr` (`method` picks which):
    /// `req` encoded, the reply decoded, every failure in words.
    pub(crate) async fn call<Req, Reply, F, Fut>(
        &self,
        addr: &str,
        req: &Req,
        method: F,
    ) -> Result<Reply, String>
    where
        Req: serde::Serialize,
        Reply: serde::de::DeserializeOwned,
        F: FnOnce(ClusterServiceClient<Channel>, Payload) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<Payload>, tonic::Status>>,
    {
        let client = self
            .cluster_client(addr)
            .ok_or_else(|| format!("invalid address '{addr}'"))?;
        let payload = encode(req).map_err(|e| e.to_string())?;
        let reply = method(client, payload)
            .await
            .map_err(|s| s.message().to_string())?;
        decode(reply.get_ref()).map_err(|e| e.to_string())
    }
}

/// The largest HTTP/2 frame a node accepts from a peer (both directions:
/// the channel's SETTINGS and the RPC server's).
pub const MAX_FRAME: u32 = 1 << 20;

pub struct PeerClient {
    target: NodeId,
    addr: String,
    client: Option<RaftServiceClient<Channel>>,
    acks: QuorumAcks,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &NodeInfo) -> PeerClient {
        PeerClient {
            target,
            addr: node.rpc_addr.clone(),
            client: self.channel_for(&node.rpc_addr, Purpose::Control).map(|c| {
                RaftServiceClient::new(c)
                    .max_decoding_message_size(MAX_MESSAGE)
                    .max_encoding_message_size(MAX_MESSAGE)
            }),
            acks: self.acks.clone(),
        }
    }
}

fn unreachable<E: std::error::Error>(msg: String) -> RPCError<NodeId, NodeInfo, E> {
    RPCError::Unreachable(Unreachable::new(&std::io::Error::other(msg)))
}

fn network<E: std::error::Error>(
    e: &(impl std::error::Error + 'static),
) -> RPCError<NodeId, NodeInfo, E> {
    RPCError::Network(NetworkError::new(e))
}

/// Send one RPC: encode, call with the deadline openraft gave, decode the
/// remote `Result`, and sort failures into openraft's error kinds (an
/// unreachable peer is retried with backoff, a remote error is returned).
macro_rules! call {
    ($self:ident, $method:ident, $rpc:expr, $option:expr, $resp:ty, $err:ty) => {{
        let Some(mut client) = $self.client.clone() else {
            return Err(unreachable::<$err>(format!(
                "node {} has an invalid address '{}'",
                $self.target, $self.addr
            )));
        };
        let payload = encode(&$rpc).map_err(|e| network::<$err>(&e))?;
        let reply = tokio::time::timeout($option.hard_ttl(), client.$method(payload))
            .await
            .map_err(|_| {
                unreachable::<$err>(format!("node {} at {} timed out", $self.target, $self.addr))
            })?
            .map_err(|s| {
                unreachable::<$err>(format!(
                    "node {} at {}: {}",
                    $self.target,
                    $self.addr,
                    s.message()
                ))
            })?;
        let res: Result<$resp, $err> = decode(reply.get_ref()).map_err(|e| network::<$err>(&e))?;
        res.map_err(|e| RPCError::RemoteError(RemoteError::new($self.target, e)))
    }};
}

impl RaftNetwork<TypeConfig> for PeerClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, NodeInfo, RaftError<NodeId>>> {
        let (sent, term) = (Instant::now(), rpc.vote.leader_id.term);
        let resp: Result<AppendEntriesResponse<NodeId>, _> = call!(
            self,
            append_entries,
            rpc,
            option,
            AppendEntriesResponse<NodeId>,
            RaftError<NodeId>
        );
        // Any answer but a higher vote acknowledges this node as leader.
        if let Ok(r) = &resp {
            if !matches!(r, AppendEntriesResponse::HigherVote(_)) {
                self.acks.heard(self.target, term, sent);
            }
        }
        resp
    }

    /// Retry an unreachable peer every heartbeat (openraft's default is
    /// 500 ms): a follower back from a partition hears its leader before
    /// its own election timer fires.
    fn backoff(&self) -> openraft::network::Backoff {
        openraft::network::Backoff::new(std::iter::repeat(PEER_RETRY))
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, NodeInfo, RaftError<NodeId, InstallSnapshotError>>,
    > {
        call!(
            self,
            install_snapshot,
            rpc,
            option,
            InstallSnapshotResponse<NodeId>,
            RaftError<NodeId, InstallSnapshotError>
        )
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, NodeInfo, RaftError<NodeId>>> {
        call!(
            self,
            vote,
            rpc,
            option,
            VoteResponse<NodeId>,
            RaftError<NodeId>
        )
    }
}
