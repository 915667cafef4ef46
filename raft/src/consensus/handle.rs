//! What the rest of a node sees of Raft: one handle that starts it, mounts
//! its RPC services, proposes commands and confirms reads (at the leader,
//! forwarded from followers), and changes membership.

use std::sync::Arc;
use std::time::Instant;

use openraft::error::{ClientWriteError, RaftError};

use crate::consensus::election::{self, Elections};
use crate::consensus::lease::{lapsed_message, QuorumAcks};
use crate::consensus::members;
use crate::consensus::network::Network;
use crate::consensus::read_index::{Coalescer, ReadIndex};
use crate::consensus::rpc::proto::cluster_service_client::ClusterServiceClient;
use crate::consensus::rpc::{JoinReply, Leader, ReadIndexReply, WriteReply};
use crate::consensus::timing::{self, FORWARD_ATTEMPT, LEADER_WAIT, NO_LEADER_WAIT, RETRY_PAUSE};
use crate::consensus::transfer::{self, TransferGate, TransferReply};
use crate::consensus::types::{NodeId, NodeInfo, Raft};
use crate::model::command::{CommandResult, Proposal};
use crate::Stores;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("raft configuration: {0}")]
    Config(#[from] openraft::ConfigError),
    #[error("starting raft: {0}")]
    Raft(String),
}

/// No leader answered in time (elections, a partition, shutting down).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Unavailable(pub String);

type Client = ClusterServiceClient<tonic::transport::Channel>;

/// The Raft core of one node and the ways to reach its leader.
#[derive(Clone)]
pub struct Consensus {
    raft: Raft,
    network: Network,
    gate: TransferGate,
    read_index: ReadIndex,
    elections: Elections,
    /// Followers' read-index requests to the leader, shared by readers.
    read_rounds: Coalescer<Result<u64, String>>,
}

/// What one attempt at a leader-only operation came to.
enum Attempt<T> {
    Done(T),
    /// Not the leader here: try at this one (or wait for one).
    Elsewhere(Leader),
    /// Leadership is being handed over: wait for the successor.
    Handover,
    /// This node leads without a quorum: give up now.
    Lapsed(std::time::Duration),
    Failed(String),
}

impl Consensus {
    /// Start Raft over `stores`' log and state machine (the caller keeps a
    /// clone of its reader), and the snapshot policy beside it.
    pub async fn start(
        id: NodeId,
        snapshot_logs: u64,
        network: Network,
        stores: Stores,
    ) -> Result<Consensus, StartError> {
        let config = timing::openraft_config(snapshot_logs)?;
        let elections = Elections::new(stores.log.clone());
        let raft = Raft::new(
            id,
            Arc::new(config),
            network.clone(),
            stores.log,
            stores.state_machine,
        )
        .await
        .map_err(|e| StartError::Raft(e.to_string()))?;
        network.acks().watch(&raft);
        tokio::spawn(election::run(
            raft.clone(),
            network.clone(),
            elections.clone(),
        ));
        tokio::spawn(crate::consensus::snapshot_policy::run(
            raft.clone(),
            stores.log_volume,
            snapshot_logs,
        ));
        Ok(Consensus {
            read_index: ReadIndex::new(raft.clone()),
            elections,
            raft,
            network,
            gate: TransferGate::default(),
            read_rounds: Coalescer::default(),
        })
    }

    /// openraft's handle: metrics, waiting on them, membership changes.
    pub fn raft(&self) -> &Raft {
        &self.raft
    }

    /// `routes` with Raft's and the cluster's RPC services added.
    pub fn with_services(&self, routes: tonic::service::Routes) -> tonic::service::Routes {
        let (raft, cluster) = crate::consensus::server::services(
            self.raft.clone(),
            self.gate.clone(),
            self.read_index.clone(),
            self.acks().clone(),
            self.elections.clone(),
        );
        routes.add_service(raft).add_service(cluster)
    }

    /// A new data dir: join the cluster at `join`, or start a one-node
    /// cluster if `init`; a node with Raft state carries on.
    pub async fn init_or_join(
        &self,
        me: NodeInfo,
        join: Option<String>,
        init: bool,
    ) -> Result<(), StartError> {
        let id = self.id();
        members::init_or_join(&self.raft, &self.network, id, me, join, init)
            .await
            .map_err(StartError::Raft)
    }

    pub fn id(&self) -> NodeId {
        self.raft.metrics().borrow().id
    }

    fn acks(&self) -> &QuorumAcks {
        self.network.acks()
    }

    /// If this node leads but its quorum has not acknowledged it for
    /// longer than its lease: for how long (see `lease`).
    pub fn leadership_lapsed(&self) -> Option<std::time::Duration> {
        self.acks().lapsed(&self.raft, &self.gate)
    }

    /// Whether this node leads, as it last saw, and holds its lease (the
    /// leader-only jobs: a leader cut off from its quorum runs none).
    pub fn is_leader(&self) -> bool {
        let leads = {
            let m = self.raft.metrics();
            let m = m.borrow();
            m.current_leader == Some(m.id)
        };
        leads && self.leadership_lapsed().is_none()
    }

    /// The voters, as this node last saw the membership.
    pub fn voters(&self) -> std::collections::BTreeSet<NodeId> {
        members::voters(&self.raft)
    }

    /// The leader this node knows of, with its address.
    pub fn known_leader(&self) -> Leader {
        members::known_leader(&self.raft)
    }

    /// On the leader: add `id` as a learner, then as a voter once caught up.
    pub async fn add_voter(&self, id: NodeId, node: NodeInfo) -> JoinReply {
        members::add_voter(&self.raft, id, node).await
    }

    /// Hand leadership to voter `to` (see `transfer`).
    pub async fn transfer_leadership(&self, to: NodeId) -> TransferReply {
        transfer::transfer_leadership(&self.raft, &self.network, &self.gate, to).await
    }

    /// Propose `proposal` and wait until it is committed and applied, here
    /// if this node leads, else at the leader.
    pub async fn write(&self, proposal: &Proposal) -> Result<CommandResult, Unavailable> {
        let local = || async {
            if self.gate.closed() {
                return Attempt::Handover;
            }
            match self.raft.client_write(proposal.clone()).await {
                Ok(resp) => Attempt::Done(resp.data),
                Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                    Attempt::Elsewhere(f.leader_id.zip(f.leader_node))
                }
                Err(e) => Attempt::Failed(e.to_string()),
            }
        };
        let remote = |addr: String| async move {
            let call = |mut c: Client, p| async move { c.write(p).await };
            match self.network.call(&addr, proposal, call).await {
                Ok(WriteReply::Applied(r)) => Attempt::Done(r),
                Ok(WriteReply::NotLeader(l)) => Attempt::Elsewhere(l),
                Ok(WriteReply::Failed(e)) => Attempt::Failed(e),
                Err(e) => Attempt::Failed(format!("forwarding to the leader at {addr}: {e}")),
            }
        };
        self.at_leader("write", local, remote).await
    }

    /// Wait until this node has applied every write acknowledged before the
    /// call (a read index from the leader, shared by concurrent callers in
    /// a round that starts after they joined, so each index is fresh).
    pub async fn read_barrier(&self) -> Result<(), Unavailable> {
        let this = self.clone();
        let round = move || {
            let this = this.clone();
            async move { this.read_index().await.map_err(|e| e.0) }
        };
        let index = match self.read_rounds.run(round).await {
            Some(Ok(i)) => i,
            Some(Err(e)) => return Err(Unavailable(e)),
            None => return Err(Unavailable("shutting down".into())),
        };
        self.raft
            .wait(Some(LEADER_WAIT))
            .applied_index_at_least(Some(index), "read index")
            .await
            .map(|_| ())
            .map_err(|e| Unavailable(format!("catching up to the read index: {e}")))
    }

    /// The read index, from this node if it leads or else from the leader.
    async fn read_index(&self) -> Result<u64, Unavailable> {
        let local = || async {
            if self.gate.closed() {
                return Attempt::Handover;
            }
            // Shared with concurrent readers (one leadership check per round).
            match self.read_index.get().await {
                ReadIndexReply::Index(i) => Attempt::Done(i),
                ReadIndexReply::NotLeader(l) => Attempt::Elsewhere(l),
                ReadIndexReply::Failed(e) => Attempt::Failed(e),
            }
        };
        let remote = |addr: String| async move {
            let call = |mut c: Client, p| async move { c.read_index(p).await };
            match self.network.call(&addr, &(), call).await {
                Ok(ReadIndexReply::Index(i)) => Attempt::Done(i),
                Ok(ReadIndexReply::NotLeader(l)) => Attempt::Elsewhere(l),
                Ok(ReadIndexReply::Failed(e)) => Attempt::Failed(e),
                Err(e) => Attempt::Failed(format!("read index from the leader at {addr}: {e}")),
            }
        };
        self.at_leader("read", local, remote).await
    }

    /// Run `local` here if this node leads, else `remote` at the leader,
    /// following leader changes. Gives up after `LEADER_WAIT` in all, after
    /// `NO_LEADER_WAIT` once no leader answers, and at once if this node
    /// leads without a quorum.
    async fn at_leader<T, L, LF, R, RF>(
        &self,
        what: &str,
        local: L,
        remote: R,
    ) -> Result<T, Unavailable>
    where
        L: Fn() -> LF,
        LF: std::future::Future<Output = Attempt<T>>,
        R: Fn(String) -> RF,
        RF: std::future::Future<Output = Attempt<T>>,
    {
        let deadline = Instant::now() + LEADER_WAIT;
        let me = self.id();
        let mut last = String::from("no leader is known");
        let mut leaderless_since: Option<Instant> = None;
        // Start at the leader this node knows of: asking the local Raft
        // first only to be told to forward costs a round trip through it.
        let mut target: Leader = self.known_leader().filter(|(l, _)| *l != me);
        loop {
            // Every attempt is bounded: a leader cut off by a partition
            // never commits, and a forwarded call can hang on a dead peer.
            let left = deadline.saturating_duration_since(Instant::now());
            let attempt = match &target {
                Some((id, node)) if *id != me => {
                    // Dropped as soon as this node hears of another leader
                    // (an election while the call hangs on the old one).
                    let call = tokio::time::timeout(
                        left.min(FORWARD_ATTEMPT),
                        remote(node.rpc_addr.clone()),
                    );
                    tokio::select! {
                        a = call => a,
                        () = self.leader_changes_from(*id) => {
                            Ok(Attempt::Elsewhere(self.known_leader()))
                        }
                    }
                }
                _ => {
                    let (acks, gate) = (self.acks(), &self.gate);
                    if gate.closed() {
                        Ok(Attempt::Handover)
                    } else if let Some(age) = acks.lapsed(&self.raft, gate) {
                        Ok(Attempt::Lapsed(age))
                    } else {
                        tokio::select! {
                            a = tokio::time::timeout(left, local()) => a,
                            age = acks.until_lapsed(&self.raft, gate) => Ok(Attempt::Lapsed(age)),
                        }
                    }
                }
            }
            .unwrap_or_else(|_| Attempt::Failed("no answer in time".to_string()));
            let now = Instant::now();
            if !matches!(attempt, Attempt::Done(_)) && self.elections.cut_off() {
                return Err(Unavailable(format!(
                    "{what}: this node cannot reach a quorum of the cluster (cut off by a \
                     partition?): retry at another node"
                )));
            }
            match attempt {
                Attempt::Done(v) => return Ok(v),
                Attempt::Lapsed(age) => {
                    return Err(Unavailable(format!("{what}: {}", lapsed_message(age))))
                }
                Attempt::Handover => target = None,
                Attempt::Elsewhere(l) => {
                    if l.is_none() {
                        last = "no leader is known".into();
                        leaderless_since.get_or_insert(now);
                    }
                    target = l;
                }
                Attempt::Failed(e) => {
                    last = e;
                    leaderless_since.get_or_insert(now);
                    target = None;
                }
            }
            let no_leader = leaderless_since.is_some_and(|t| now - t >= NO_LEADER_WAIT);
            if now >= deadline || no_leader {
                return Err(Unavailable(format!("{what}: {last}")));
            }
            if target.is_none() {
                tokio::time::sleep(RETRY_PAUSE).await;
            }
        }
    }

    /// Resolves when this node's Raft no longer names `leader` as leader
    /// (an election started or ended elsewhere); never if it did not name
    /// it to begin with (a leader learnt from another node's answer).
    async fn leader_changes_from(&self, leader: NodeId) {
        let mut rx = self.raft.metrics();
        if rx.borrow_and_update().current_leader != Some(leader) {
            return std::future::pending().await;
        }
        loop {
            if rx.borrow_and_update().current_leader != Some(leader) {
                return;
            }
            if rx.changed().await.is_err() {
                return std::future::pending().await;
            }
        }
    }
}
