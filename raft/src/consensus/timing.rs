//! The timing budget, in one place: Raft's heartbeat and election timeout,
//! and the bounds derived from them (the leader's lease, how fast a dead
//! peer connection is noticed, how long a request looks for a leader).
//! Everything a client waits for ends within `LEADER_WAIT`, the
//! client-facing deadline of a metadata operation (then 503 with
//! Retry-After); when no leader answers at all it ends sooner, within
//! `NO_LEADER_WAIT`.
//!
//! A leader cut off from its quorum, as the budget plays out: its followers
//! stop hearing heartbeats at once, ask each other for a pre-vote after
//! `CAMPAIGN_AFTER` (past the lease), and the winner of the election that
//! follows takes writes; their calls forwarded to the old leader are
//! dropped as soon as they learn of the election (the known leader
//! changes), or when the peer connection misses its pings
//! (`PEER_PING + PEER_PING_TIMEOUT`). The old leader stops serving after
//! `LEASE` without a quorum's acknowledgement.

use std::time::Duration;

/// The leader's heartbeat (and the follower's expectation of one).
pub const HEARTBEAT: Duration = Duration::from_millis(250);
/// openraft's election timeout. Its own election timer is off (elections
/// are `election`'s, with a pre-vote); what remains is the lease its voters
/// hold for a leader: they refuse any candidate until they have not heard
/// from the leader for `ELECTION_MAX`.
pub const ELECTION_MIN: Duration = Duration::from_millis(1000);
pub const ELECTION_MAX: Duration = Duration::from_millis(2000);

/// A leader that has not been acknowledged by a quorum for this long stops
/// taking writes and confirming reads (check-quorum). Seven missed
/// heartbeats, and shorter than openraft's own lease (`election_timeout_max`,
/// before which its followers grant no vote): the old leader turns requests
/// away before another can be elected, and a request that reaches it just
/// after a cut is answered within 2 s.
pub const LEASE: Duration = Duration::from_millis(1800);

/// A voter that has not heard from a leader for a random time in this
/// range asks the others for a pre-vote (see `election`). It starts after
/// the lease, which openraft's voters hold for the old leader, and leaves
/// a leadership transfer's target (which campaigns as the lease runs out)
/// a head start.
pub const CAMPAIGN_AFTER_MIN: Duration = Duration::from_millis(2300);
pub const CAMPAIGN_AFTER_MAX: Duration = Duration::from_millis(2700);
/// After an attempt that did not make it leader (no quorum for the
/// pre-vote, or a split vote), the next after a random time in this range.
pub const CAMPAIGN_RETRY_MIN: Duration = Duration::from_millis(300);
pub const CAMPAIGN_RETRY_MAX: Duration = Duration::from_millis(900);
/// How long a pre-vote waits for the other voters' answers.
pub const PRE_VOTE_ROUND: Duration = Duration::from_millis(500);

/// The longest a request waits for any leader (elections, leader changes,
/// slow commits) before it fails with 503 and Retry-After.
pub const LEADER_WAIT: Duration = Duration::from_secs(10);
/// How long a request keeps looking once no leader has answered it (none
/// known, or unreachable): long enough for the majority to elect one after
/// losing its leader (`CAMPAIGN_AFTER_MAX`, a pre-vote, and two retries
/// after a split vote), or for a leadership transfer. A node that finds it
/// cannot reach a quorum at all refuses sooner (`election::cut_off`), and a
/// leader without its quorum at once.
pub const NO_LEADER_WAIT: Duration = Duration::from_millis(5500);
/// One forwarded call may take this long before the leader is looked up
/// again; a partitioned leader is usually noticed much sooner, by an
/// election here or by the connection's pings.
pub const FORWARD_ATTEMPT: Duration = Duration::from_secs(3);

/// Peer connections for Raft and forwarding ping every heartbeat, and one
/// whose pings go unanswered this long is closed and dialled again: a
/// connection blackholed by a partition would otherwise hang until TCP's
/// retransmission backoff (tens of seconds) gives up.
pub const PEER_PING: Duration = HEARTBEAT;
pub const PEER_PING_TIMEOUT: Duration = Duration::from_secs(1);
/// Dialling a peer: a SYN lost to a partition is retried by a new dial
/// rather than by the kernel's one-second SYN backoff.
pub const PEER_CONNECT: Duration = Duration::from_millis(500);
/// Between retries of a peer that did not answer (openraft's replication).
pub const PEER_RETRY: Duration = HEARTBEAT;
/// The pause before asking again when no leader is known.
pub const RETRY_PAUSE: Duration = Duration::from_millis(100);
/// The longest a leadership check (one read-index round) may take: a
/// leader cut off from its quorum cannot confirm; readers then retry.
pub const READ_ROUND: Duration = Duration::from_secs(5);

/// Leadership transfer: how long the target may take to receive the
/// leader's last entries, and the election once it campaigns.
pub const TRANSFER_CATCH_UP: Duration = Duration::from_secs(10);
pub const TRANSFER_ELECTION: Duration = Duration::from_secs(5);

/// The last snapshot chunk's RPC includes installing the whole state on
/// the receiver; openraft's 200 ms default never completes for a large
/// state, and the learner then retries forever.
pub const INSTALL_SNAPSHOT: Duration = Duration::from_secs(60);

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// openraft's configuration for a registry's metadata; `snapshot_logs` is
/// the number of entries between snapshots (`--snapshot-logs`).
pub fn openraft_config(snapshot_logs: u64) -> Result<openraft::Config, openraft::ConfigError> {
    openraft::Config {
        cluster_name: "tcr".into(),
        heartbeat_interval: millis(HEARTBEAT),
        election_timeout_min: millis(ELECTION_MIN),
        election_timeout_max: millis(ELECTION_MAX),
        // Triggered by `snapshot_policy` (entries and log bytes).
        snapshot_policy: openraft::SnapshotPolicy::Never,
        max_in_snapshot_log_to_keep: 1000,
        // Bounded batches: entries can carry manifests of up to 4 MiB.
        max_payload_entries: 64,
        install_snapshot_timeout: millis(INSTALL_SNAPSHOT),
        // Elections are ours, with a pre-vote (`election`).
        enable_elect: false,
        // openraft: must exceed the snapshot interval, or a snapshot may not
        // cure a lagging follower.
        replication_lag_threshold: snapshot_logs.saturating_mul(2).max(5000),
        ..Default::default()
    }
    .validate()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_wait_fits_in_the_client_deadline() {
        // A forwarded attempt and a read round each leave room for a retry
        // at the new leader before the client gives up.
        assert!(FORWARD_ATTEMPT * 2 < LEADER_WAIT);
        assert!(READ_ROUND * 2 <= LEADER_WAIT);
        // A request through a node without a leader ends after about one
        // election, long before the overall deadline.
        assert!(NO_LEADER_WAIT > CAMPAIGN_AFTER_MAX + PRE_VOTE_ROUND + CAMPAIGN_RETRY_MAX * 2);
        // A transfer pauses writes for one lease, then an election.
        assert!(NO_LEADER_WAIT > LEASE * 2);
        assert!(NO_LEADER_WAIT < LEADER_WAIT);
        // A dead peer connection is noticed well within an election: the
        // majority's new leader is found by the time it is elected.
        assert!(PEER_PING + PEER_PING_TIMEOUT < ELECTION_MAX);
        assert!(PEER_CONNECT < ELECTION_MIN);
        // Campaigns start once openraft's voters would listen, with room
        // for a transfer's target to go first.
        assert!(CAMPAIGN_AFTER_MIN >= LEASE + Duration::from_millis(200));
        assert!(CAMPAIGN_AFTER_MIN < CAMPAIGN_AFTER_MAX);
        assert!(CAMPAIGN_RETRY_MIN < CAMPAIGN_RETRY_MAX && PRE_VOTE_ROUND < CAMPAIGN_RETRY_MAX);
        // openraft's voters refuse other candidates for `ELECTION_MAX`
        // after they last heard from the leader, so a leader within its
        // lease has not been replaced.
        assert!(LEASE < ELECTION_MAX && LEASE >= HEARTBEAT * 7);
        // A leader must be heard from several times per election timeout.
        assert!(HEARTBEAT * 3 < ELECTION_MIN);
        assert!(ELECTION_MIN < ELECTION_MAX);
        // A follower that lags by a snapshot interval is cured by a snapshot.
        let c = openraft_config(10_000).expect("valid");
        assert!(c.replication_lag_threshold > 10_000);
        assert_eq!(Duration::from_millis(c.heartbeat_interval), HEARTBEAT);
        assert_eq!(Duration::from_millis(c.election_timeout_max), ELECTION_MAX);
    }
}
