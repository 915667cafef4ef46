//! When to take a snapshot. A snapshot costs the whole state (every table
//! is written out), so openraft's `LogsSinceLast(n)` rewrites a state of a
//! million manifests every n entries: work quadratic in the state, a core
//! busy with it, and a snapshot file per few seconds on disk. Here a
//! snapshot is due once at least `min_logs` entries *and* log bytes worth
//! half the last snapshot have been written since it: the cost of a
//! snapshot is spread over writes proportional to it, and the log kept
//! behind it stays below half its size.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::consensus::types::Raft;

/// Log bytes written, and the sizes of the last snapshot, shared by the
/// log store (which counts appends), the snapshot builder and installer
/// (which set the mark) and the trigger task.
#[derive(Debug, Default)]
pub struct LogVolume {
    appended: AtomicU64,
    at_snapshot: AtomicU64,
    snapshot_bytes: AtomicU64,
}

impl LogVolume {
    pub(crate) fn appended(&self, bytes: u64) {
        self.appended.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Bytes appended so far, for `snapshot_taken`.
    pub(crate) fn mark(&self) -> u64 {
        self.appended.load(Ordering::Relaxed)
    }

    /// A snapshot of `bytes` stands for what was appended up to `mark`.
    pub(crate) fn snapshot_taken(&self, mark: u64, bytes: u64) {
        self.at_snapshot.store(mark, Ordering::Relaxed);
        self.snapshot_bytes.store(bytes, Ordering::Relaxed);
    }

    /// The size of the current snapshot, found on disk when the store opens.
    pub(crate) fn set_snapshot_bytes(&self, bytes: u64) {
        self.snapshot_bytes.store(bytes, Ordering::Relaxed);
    }

    /// Log bytes appended since the last snapshot (since start-up, after
    /// a restart: a later snapshot, never an earlier one).
    pub fn since_snapshot(&self) -> u64 {
        self.appended
            .load(Ordering::Relaxed)
            .saturating_sub(self.at_snapshot.load(Ordering::Relaxed))
    }

    pub fn snapshot_bytes(&self) -> u64 {
        self.snapshot_bytes.load(Ordering::Relaxed)
    }

    /// Whether a snapshot is due after `entries` log entries since the last.
    pub fn due(&self, entries: u64, min_logs: u64) -> bool {
        due(
            entries,
            self.since_snapshot(),
            self.snapshot_bytes(),
            min_logs,
        )
    }
}

/// The rule itself (see the module comment).
pub fn due(entries: u64, log_bytes: u64, snapshot_bytes: u64, min_logs: u64) -> bool {
    entries >= min_logs.max(1) && log_bytes >= snapshot_bytes / 2
}

/// Trigger snapshots by the rule, for as long as `raft` runs (configure
/// openraft with `SnapshotPolicy::Never`).
pub async fn run(raft: Raft, volume: Arc<LogVolume>, min_logs: u64) {
    let mut metrics = raft.metrics();
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let (applied, snapshot) = {
            let m = metrics.borrow_and_update();
            (
                m.last_applied.map_or(0, |l| l.index),
                m.snapshot.map_or(0, |l| l.index),
            )
        };
        if !volume.due(applied.saturating_sub(snapshot), min_logs) {
            continue;
        }
        if raft.trigger().snapshot().await.is_err() {
            return; // Raft has shut down.
        }
        // One build at a time: wait until it lands (or give up on it).
        let built = tokio::time::timeout(Duration::from_secs(600), async {
            loop {
                if metrics.changed().await.is_err() {
                    return;
                }
                if metrics.borrow().snapshot.map_or(0, |l| l.index) > snapshot {
                    return;
                }
            }
        })
        .await;
        if built.is_err() {
            tracing::warn!("a snapshot triggered 10 minutes ago has not landed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Never before `min_logs` entries, never with less log than half
        /// the snapshot (so the log kept behind a snapshot stays below
        /// half of it), and more log never makes a due snapshot not due.
        #[test]
        fn snapshots_wait_for_entries_and_half_their_size(
            entries in 0u64..100_000, log in 0u64..1 << 40, snap in 0u64..1 << 40,
            min in 0u64..50_000, more in 0u64..1 << 20, more_log in 0u64..1 << 30,
        ) {
            let d = due(entries, log, snap, min);
            if entries < min || 2 * log < snap.saturating_sub(1) {
                prop_assert!(!d);
            }
            if d {
                prop_assert!(due(entries + more, log + more_log, snap, min));
            }
        }
    }

    #[test]
    fn the_volume_counts_from_the_last_snapshot() {
        let v = LogVolume::default();
        v.appended(1000);
        assert!(v.due(10, 10), "no snapshot yet: entries decide");
        v.snapshot_taken(v.mark(), 4000);
        assert_eq!(v.since_snapshot(), 0);
        v.appended(1999);
        assert!(
            !v.due(1_000_000, 10),
            "1999 bytes of log behind a 4000-byte snapshot"
        );
        v.appended(1);
        assert!(v.due(10, 10));
        assert!(!v.due(9, 10));
    }
}
