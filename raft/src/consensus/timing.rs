//! The timing budget, in one place: Raft's heartbeat and election timeout,
//! and the bounds of the requests that ride on them (forwarded writes,
//! read-index rounds, leadership transfer). Everything a client waits for
//! ends within `LEADER_WAIT`, the client-facing deadline of a metadata
//! operation (then 503 with Retry-After).

use std::time::Duration;

/// The leader's heartbeat (and the follower's expectation of one).
pub const HEARTBEAT: Duration = Duration::from_millis(250);
/// A follower that hears nothing from a leader for a random time in
/// `ELECTION_MIN..ELECTION_MAX` campaigns. The upper bound is also the
/// followers' lease on a leader (see `transfer`).
pub const ELECTION_MIN: Duration = Duration::from_millis(1000);
pub const ELECTION_MAX: Duration = Duration::from_millis(2000);

/// How long a request waits for a leader (elections, leader changes) before
/// it fails with 503 and Retry-After.
pub const LEADER_WAIT: Duration = Duration::from_secs(10);
/// One forwarded call may take this long before the leader is looked up
/// again (a partitioned leader's connection hangs rather than fails).
pub const FORWARD_ATTEMPT: Duration = Duration::from_secs(3);
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
