//! The leader's metering ticks: every interval the leader commits
//! `MeterTick { at: now }`, and the state machine adds each namespace's
//! stored bytes times the time since its last tick. Followers only apply,
//! so every node reports the same gigabyte-hours; a new leader's first tick
//! covers the gap since the last committed one, never more.

use std::sync::Arc;
use std::time::Duration;

use tcr_raft::Command;

use crate::state::JobsState;
use tcr_storage::clock::now_secs;

pub async fn run(st: Arc<JobsState>, interval: Duration) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if !st.meta.consensus().is_leader() {
            continue;
        }
        let at = now_secs();
        if let Err(e) = st.meta.write(Command::MeterTick { at }).await {
            tracing::debug!("metering tick at {at} not committed: {e}");
        }
    }
}
