//! Leadership transfer on openraft 0.9, which has no API for it (0.10 has
//! `trigger().transfer_leader`, still an alpha).
//!
//! The leader stops everything that would renew its followers' lease: it
//! refuses new writes and read-index requests (callers retry, as during an
//! election) and disables its heartbeat. It waits until the target holds
//! every log entry, then for the lease (`election_timeout_max`) to run out
//! on the followers, and asks the target to campaign. The target's log is
//! the longest, so it wins the vote before any other follower's election
//! timer (`CAMPAIGN_AFTER`, later than the lease by a margin) fires, and
//! the leader refuses their pre-votes meanwhile; its higher term deposes
//! the old leader. Whatever happens, the leader resumes heartbeats and
//! stops refusing afterwards, so a failed transfer costs one pause.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::consensus::members::{known_leader, voters};
use crate::consensus::network::Network;
use crate::consensus::rpc::Leader;
use crate::consensus::timing::{TRANSFER_CATCH_UP, TRANSFER_ELECTION};
use crate::consensus::types::{NodeId, Raft};

/// Set on the leader while it hands over leadership.
#[derive(Clone, Default)]
pub struct TransferGate(Arc<AtomicBool>);

impl TransferGate {
    /// True while this node is handing leadership over: it must not accept
    /// writes or confirm reads, which would renew the followers' lease.
    pub fn closed(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }

    fn close(&self) -> bool {
        !self.0.swap(true, Ordering::AcqRel)
    }

    fn open(&self) {
        self.0.store(false, Ordering::Release)
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub enum TransferReply {
    /// `to` leads now (or already did).
    Transferred {
        leader: NodeId,
        term: u64,
    },
    NotLeader(Leader),
    Failed(String),
}

/// Reopens the gate and resumes heartbeats however the transfer ends.
struct Resume<'a> {
    raft: &'a Raft,
    gate: &'a TransferGate,
}

impl Drop for Resume<'_> {
    fn drop(&mut self) {
        self.raft.runtime_config().heartbeat(true);
        self.gate.open();
    }
}

/// Make `to` the leader. Runs on the leader; elsewhere answers `NotLeader`.
#[tracing::instrument(level = "info", skip(raft, network, gate))]
pub async fn transfer_leadership(
    raft: &Raft,
    network: &Network,
    gate: &TransferGate,
    to: NodeId,
) -> TransferReply {
    let m = raft.metrics().borrow().clone();
    if m.current_leader != Some(m.id) {
        return TransferReply::NotLeader(known_leader(raft));
    }
    if to == m.id {
        return TransferReply::Transferred {
            leader: to,
            term: m.current_term,
        };
    }
    if !voters(raft).contains(&to) {
        return TransferReply::Failed(format!("node {to} is not a voter"));
    }
    let Some(target) = m.membership_config.membership().get_node(&to).cloned() else {
        return TransferReply::Failed(format!("node {to} has no address"));
    };
    if !gate.close() {
        return TransferReply::Failed("a leadership transfer is already in progress".into());
    }
    let _resume = Resume { raft, gate };

    // Nothing new is accepted now, so the last log index stays put.
    let last = raft.metrics().borrow().last_log_index;
    let caught_up = raft
        .wait(Some(TRANSFER_CATCH_UP))
        .metrics(
            |m| {
                let matched = m.replication.as_ref().and_then(|r| r.get(&to).cloned());
                matched.flatten().map(|l| l.index) >= last
            },
            "target caught up",
        )
        .await;
    if let Err(e) = caught_up {
        return TransferReply::Failed(format!("node {to} did not catch up: {e}"));
    }

    raft.runtime_config().heartbeat(false);
    let lease = Duration::from_millis(raft.config().election_timeout_max);
    tokio::time::sleep(lease + Duration::from_millis(150)).await;

    let campaign: Result<Result<(), String>, String> = network
        .call(
            &target.rpc_addr,
            &(),
            |mut c, p| async move { c.elect(p).await },
        )
        .await;
    match campaign {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return TransferReply::Failed(format!("node {to} cannot campaign: {e}")),
        Err(e) => return TransferReply::Failed(format!("asking node {to} to campaign: {e}")),
    }

    let elected = raft
        .wait(Some(TRANSFER_ELECTION))
        .metrics(
            |m| m.current_leader.is_some_and(|l| l != m.id),
            "a new leader",
        )
        .await;
    match elected {
        Ok(m) if m.current_leader == Some(to) => TransferReply::Transferred {
            leader: to,
            term: m.current_term,
        },
        Ok(m) => TransferReply::Failed(format!(
            "node {:?} won the election instead of node {to}",
            m.current_leader
        )),
        Err(e) => TransferReply::Failed(format!("node {to} was not elected: {e}")),
    }
}
