//! Elections with a pre-vote, on openraft 0.9 (which has none).
//!
//! openraft's own election timer is off (`enable_elect: false`); this one
//! runs instead. A voter that has not heard from a leader for a random
//! time in `CAMPAIGN_AFTER` first asks the other voters whether they would
//! vote for it, without changing any term, and campaigns (openraft's
//! `trigger().elect()`) only if a majority of every voter set would. A
//! voter would not while it hears from a leader (it holds that leader's
//! lease), nor while it leads and holds its own lease, nor for a candidate
//! whose log is behind its own. So a node cut off by a partition, or one
//! whose replication stream is slow to resume after a heal, cannot raise
//! the term and depose the healthy leader when it comes back: the heal
//! costs no election.
//!
//! The timer starts after the lease (`ELECTION_MAX`), since openraft's
//! voters refuse any candidate before it runs out. A leadership transfer
//! asks its target to campaign as soon as the lease has run out, ahead of
//! the other voters' timers (`CAMPAIGN_AFTER` starts later by a margin).

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use openraft::storage::RaftLogStorage;
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::consensus::lease::QuorumAcks;
use crate::consensus::log_store::LogStore;
use crate::consensus::network::Network;
use crate::consensus::rpc::proto::cluster_service_client::ClusterServiceClient;
use crate::consensus::timing::{
    CAMPAIGN_AFTER_MAX, CAMPAIGN_AFTER_MIN, CAMPAIGN_RETRY_MAX, CAMPAIGN_RETRY_MIN, LEASE,
    PRE_VOTE_ROUND, RETRY_PAUSE,
};
use crate::consensus::transfer::TransferGate;
use crate::consensus::types::{Metrics, NodeId, Raft};

/// A would-you-vote-for-me question: who asks, and its last log entry as
/// (term, index).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct PreVoteRequest {
    pub candidate: NodeId,
    pub last_log: Option<(u64, u64)>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub enum PreVoteReply {
    Granted,
    Refused(String),
}

/// When this node last heard from a leader, and what it needs to answer
/// and ask pre-votes.
#[derive(Clone)]
pub struct Elections {
    heard: Arc<Mutex<Instant>>,
    /// Set when this node's last pre-vote, since it last heard a leader,
    /// was not answered by a quorum at all: it is cut off.
    cut_off: Arc<std::sync::atomic::AtomicBool>,
    log: LogStore,
}

impl Elections {
    /// A node that just started waits a full lease to hear from a leader.
    pub(crate) fn new(log: LogStore) -> Elections {
        Elections {
            heard: Arc::new(Mutex::new(Instant::now())),
            cut_off: Arc::default(),
            log,
        }
    }

    /// A leader's AppendEntries or snapshot was accepted.
    pub(crate) fn heard_leader(&self) {
        *self.heard.lock().expect("heard lock") = Instant::now();
        self.cut_off
            .store(false, std::sync::atomic::Ordering::Relaxed);
    }

    /// Whether this node, without a leader, found it cannot reach a quorum
    /// (its last pre-vote went unanswered by one): a partition's minority.
    /// Requests through it are refused at once rather than waiting for a
    /// leader it cannot have.
    pub(crate) fn cut_off(&self) -> bool {
        self.cut_off.load(std::sync::atomic::Ordering::Relaxed) && self.quiet_for() >= LEASE
    }

    fn quiet_for(&self) -> Duration {
        self.heard.lock().expect("heard lock").elapsed()
    }

    async fn last_log(&self) -> Result<Option<(u64, u64)>, String> {
        let state = self
            .log
            .clone()
            .get_log_state()
            .await
            .map_err(|e| e.to_string())?;
        Ok(state.last_log_id.map(|l| (l.leader_id.get_term(), l.index)))
    }

    /// This voter's answer to `req`.
    pub(crate) async fn answer(
        &self,
        raft: &Raft,
        acks: &QuorumAcks,
        gate: &TransferGate,
        req: &PreVoteRequest,
    ) -> PreVoteReply {
        let leads = {
            let m = raft.metrics();
            let m = m.borrow();
            m.current_leader == Some(m.id)
        };
        if leads {
            if gate.closed() {
                return PreVoteReply::Refused("handing leadership to another node".into());
            }
            if acks.lapsed(raft, gate).is_none() {
                return PreVoteReply::Refused("this node leads with a quorum".into());
            }
        } else if self.quiet_for() < LEASE {
            return PreVoteReply::Refused(format!(
                "heard from the leader {} ms ago",
                self.quiet_for().as_millis()
            ));
        }
        match self.last_log().await {
            Ok(mine) if req.last_log >= mine => PreVoteReply::Granted,
            Ok(mine) => PreVoteReply::Refused(format!(
                "the candidate's log {:?} is behind this node's {mine:?}",
                req.last_log
            )),
            Err(e) => PreVoteReply::Refused(format!("reading the log: {e}")),
        }
    }
}

fn random(min: Duration, max: Duration) -> Duration {
    rand::rng().random_range(min..=max)
}

/// The election timer: runs for the life of the node.
pub(crate) async fn run(raft: Raft, network: Network, elections: Elections) {
    let mut after = random(CAMPAIGN_AFTER_MIN, CAMPAIGN_AFTER_MAX);
    let mut retry = random(CAMPAIGN_RETRY_MIN, CAMPAIGN_RETRY_MAX);
    let mut last_attempt: Option<Instant> = None;
    let mut last_quiet = Duration::ZERO;
    loop {
        tokio::time::sleep(RETRY_PAUSE).await;
        let m = raft.metrics().borrow().clone();
        if m.running_state.is_err() {
            return;
        }
        let membership = m.membership_config.membership().clone();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        if m.current_leader == Some(m.id) {
            // A leader hears itself: should it step down, its timer starts
            // from then.
            elections.heard_leader();
            continue;
        }
        if !voters.contains(&m.id) {
            continue;
        }
        let alone = voters.len() == 1;
        let quiet = elections.quiet_for();
        if quiet < last_quiet {
            // A leader was heard from: the next silence has a new timer.
            last_attempt = None;
            after = random(CAMPAIGN_AFTER_MIN, CAMPAIGN_AFTER_MAX);
        }
        last_quiet = quiet;
        if !alone && quiet < after {
            continue;
        }
        if last_attempt.is_some_and(|t| t.elapsed() < retry) {
            continue;
        }
        last_attempt = Some(Instant::now());
        retry = random(CAMPAIGN_RETRY_MIN, CAMPAIGN_RETRY_MAX);
        let granted = if alone {
            true
        } else {
            pre_vote(&m, &network, &elections).await
        };
        // While the others answered, this node may have voted for another
        // candidate or heard from a new leader: then it must not campaign.
        let still_quiet = {
            let now = raft.metrics().borrow().vote;
            now == m.vote && (alone || elections.quiet_for() >= LEASE)
        };
        if granted && still_quiet {
            tracing::info!(
                term = m.current_term,
                "a quorum would vote for this node: campaigning"
            );
            if let Err(e) = raft.trigger().elect().await {
                tracing::warn!("campaigning: {e}");
            }
        }
    }
}

/// Ask every other voter; true if a majority of every voter set (this
/// node included) would vote for this node.
async fn pre_vote(m: &Metrics, network: &Network, el: &Elections) -> bool {
    let last_log = match el.last_log().await {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!("pre-vote: reading the log: {e}");
            return false;
        }
    };
    let req = PreVoteRequest {
        candidate: m.id,
        last_log,
    };
    let membership = m.membership_config.membership();
    let quorum = |granted: &BTreeSet<NodeId>| {
        membership
            .get_joint_config()
            .iter()
            .all(|set| set.iter().filter(|v| granted.contains(v)).count() * 2 > set.len())
    };
    let mut asks = futures::stream::FuturesUnordered::new();
    for (id, node) in membership.nodes() {
        if *id == m.id || !membership.voter_ids().any(|v| v == *id) {
            continue;
        }
        let (id, addr, req) = (*id, node.rpc_addr.clone(), req.clone());
        asks.push(async move {
            let call = |mut c: ClusterServiceClient<_>, p| async move { c.pre_vote(p).await };
            let reply: Result<Result<PreVoteReply, String>, _> =
                tokio::time::timeout(PRE_VOTE_ROUND, network.call(&addr, &req, call)).await;
            match reply {
                Ok(Ok(r)) => (id, Some(r == PreVoteReply::Granted)),
                _ => (id, None),
            }
        });
    }
    let mut granted = BTreeSet::from([m.id]);
    let mut answered = granted.clone();
    let mut quorum_granted = quorum(&granted);
    // Done as soon as a quorum would vote: the sooner the election
    // follows, the less can change in between.
    while !quorum_granted {
        let Some((id, reply)) = asks.next().await else {
            break;
        };
        if let Some(yes) = reply {
            answered.insert(id);
            if yes {
                granted.insert(id);
                quorum_granted = quorum(&granted);
            }
        }
    }
    let cut_off = !quorum(&answered);
    el.cut_off
        .store(cut_off, std::sync::atomic::Ordering::Relaxed);
    if !quorum_granted {
        tracing::info!(
            ?granted,
            ?answered,
            "pre-vote: no quorum would vote for this node yet"
        );
    }
    quorum_granted
}
