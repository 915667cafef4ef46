//! openraft's network over tonic: one lazily connected channel per peer
//! address, shared by Raft replication and by the node's forwarding.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use tonic::transport::{Channel, Endpoint};

use crate::consensus::rpc::proto::cluster_service_client::ClusterServiceClient;
use crate::consensus::rpc::proto::raft_service_client::RaftServiceClient;
use crate::consensus::rpc::proto::Payload;
use crate::consensus::rpc::{decode, encode, MAX_MESSAGE};
use crate::consensus::types::{NodeId, NodeInfo, TypeConfig};

#[derive(Clone, Default)]
pub struct Network {
    channels: Arc<Mutex<HashMap<String, Channel>>>,
    /// Mutual TLS to every peer (`None`: plain HTTP/2, on loopback or
    /// with `--insecure-peers`).
    tls: Option<tcr_tls::PeerConnector>,
}

impl Network {
    /// Calls to peers through `tls` (a connector presenting this node's
    /// certificate), or in plain text when `None`.
    pub fn new(tls: Option<tcr_tls::PeerConnector>) -> Network {
        Network {
            channels: Arc::default(),
            tls,
        }
    }

    /// A channel to `addr` (host:port), connected on first use.
    pub fn channel(&self, addr: &str) -> Option<Channel> {
        let mut map = self.channels.lock().expect("channels lock");
        if let Some(c) = map.get(addr) {
            return Some(c.clone());
        }
        let endpoint = Endpoint::from_shared(format!("http://{addr}"))
            .ok()?
            .connect_timeout(Duration::from_secs(2))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(10))
            // Blob transfers stream 1 MiB chunks: HTTP/2's 64 KiB default
            // window would stall them on every chunk.
            .initial_stream_window_size(Some(8 << 20))
            .initial_connection_window_size(Some(32 << 20))
            // A peer sends us blob chunks in 1 MiB frames instead of 16 KiB
            // ones: 64 times fewer frames for h2 to parse and account for.
            .max_frame_size(Some(MAX_FRAME));
        let channel = match &self.tls {
            Some(tls) => endpoint.connect_with_connector_lazy(tls.clone()),
            None => endpoint.connect_lazy(),
        };
        map.insert(addr.to_string(), channel.clone());
        Some(channel)
    }

    pub fn cluster_client(&self, addr: &str) -> Option<ClusterServiceClient<Channel>> {
        self.channel(addr).map(|c| {
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
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &NodeInfo) -> PeerClient {
        PeerClient {
            target,
            addr: node.rpc_addr.clone(),
            client: self.channel(&node.rpc_addr).map(|c| {
                RaftServiceClient::new(c)
                    .max_decoding_message_size(MAX_MESSAGE)
                    .max_encoding_message_size(MAX_MESSAGE)
            }),
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
        call!(
            self,
            append_entries,
            rpc,
            option,
            AppendEntriesResponse<NodeId>,
            RaftError<NodeId>
        )
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
