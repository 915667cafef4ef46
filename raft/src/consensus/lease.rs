//! Check-quorum: a leader knows when it has lost its quorum.
//!
//! openraft 0.9 keeps a leader cut off from every follower in office until
//! it hears of a higher term, and its writes and read-index rounds wait for
//! acknowledgements that never come. Here the leader's network records
//! when each follower last acknowledged an AppendEntries of the current
//! term (the time the request was sent, so the estimate errs towards
//! lapsing early); a leader whose quorum has been silent for `LEASE`
//! answers at once that it cannot serve, so callers move on to the
//! majority's new leader instead of waiting out their deadline.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::consensus::timing::{LEASE, RETRY_PAUSE};
use crate::consensus::transfer::TransferGate;
use crate::consensus::types::{NodeId, Raft};

#[derive(Default)]
struct Heard {
    /// Per follower: the term and send time of its latest acknowledged
    /// AppendEntries (heartbeats included).
    acks: HashMap<NodeId, (u64, Instant)>,
    /// The term in which this node last took office, and when.
    in_office: Option<(u64, Instant)>,
}

#[derive(Clone, Default)]
pub struct QuorumAcks {
    heard: Arc<Mutex<Heard>>,
}

impl QuorumAcks {
    /// `from` acknowledged an AppendEntries of `term` sent at `sent`.
    pub(crate) fn heard(&self, from: NodeId, term: u64, sent: Instant) {
        let mut h = self.heard.lock().expect("acks lock");
        let e = h.acks.entry(from).or_insert((term, sent));
        if (term, sent) > *e {
            *e = (term, sent);
        }
    }

    /// Follow this node's Raft role: the lease of a new leader starts when
    /// it takes office (its followers have not acknowledged it yet).
    pub(crate) fn watch(&self, raft: &Raft) {
        let mut rx = raft.metrics();
        let heard = self.heard.clone();
        tokio::spawn(async move {
            loop {
                {
                    let m = rx.borrow_and_update();
                    if m.current_leader == Some(m.id) {
                        let mut h = heard.lock().expect("acks lock");
                        if h.in_office.is_none_or(|(t, _)| t != m.current_term) {
                            h.in_office = Some((m.current_term, Instant::now()));
                        }
                    }
                }
                if rx.changed().await.is_err() {
                    return;
                }
            }
        });
    }

    /// If this node leads and some voter set of its membership has not
    /// acknowledged it (a majority of the set) for longer than `LEASE`:
    /// how long that has been. `None` when it is not the leader, holds its
    /// lease, or is handing leadership over (its heartbeats are off on
    /// purpose, and requests wait for the successor).
    pub fn lapsed(&self, raft: &Raft, gate: &TransferGate) -> Option<Duration> {
        self.quorum_silent_for(raft, gate)
            .filter(|age| *age > LEASE)
    }

    /// As a leader (and not handing over): the time within which a majority
    /// of every voter set acknowledged it.
    fn quorum_silent_for(&self, raft: &Raft, gate: &TransferGate) -> Option<Duration> {
        if gate.closed() {
            return None;
        }
        let m = raft.metrics();
        let m = m.borrow();
        if m.current_leader != Some(m.id) {
            return None;
        }
        let now = Instant::now();
        let h = self.heard.lock().expect("acks lock");
        // Before the watcher has seen this term: it took office just now.
        let since = match h.in_office {
            Some((t, at)) if t == m.current_term => at,
            _ => now,
        };
        let mut worst = Duration::ZERO;
        for voters in m.membership_config.membership().get_joint_config() {
            let mut ages: Vec<Duration> = voters
                .iter()
                .map(|id| {
                    if *id == m.id {
                        return Duration::ZERO;
                    }
                    let last = match h.acks.get(id) {
                        Some((t, at)) if *t == m.current_term => (*at).max(since),
                        _ => since,
                    };
                    now.saturating_duration_since(last)
                })
                .collect();
            ages.sort();
            // The age within which a majority of this set was heard from.
            if let Some(age) = ages.get(voters.len() / 2) {
                worst = worst.max(*age);
            }
        }
        Some(worst)
    }

    /// Resolves once this node leads without a quorum (never while it
    /// holds its lease or follows). A leader wakes at the moment its lease
    /// would run out, so requests waiting on it are answered then, not up
    /// to a poll interval later.
    pub async fn until_lapsed(&self, raft: &Raft, gate: &TransferGate) -> Duration {
        loop {
            let pause = match self.quorum_silent_for(raft, gate) {
                Some(age) if age > LEASE => return age,
                Some(age) => (LEASE - age + Duration::from_millis(1)).min(RETRY_PAUSE),
                None => RETRY_PAUSE,
            };
            tokio::time::sleep(pause).await;
        }
    }
}

/// What a leader without a quorum answers, in words a client log can use.
pub fn lapsed_message(age: Duration) -> String {
    format!(
        "this node leads but has not heard from a quorum for {} ms (cut off by a partition?); \
         the other nodes may have elected a new leader: retry at another node",
        age.as_millis()
    )
}
