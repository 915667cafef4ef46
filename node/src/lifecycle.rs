//! A node's life after start: ready once a leader is known, and on
//! SIGTERM/SIGINT, drain (not ready, no new uploads, leadership handed
//! over) before the listeners stop.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use crate::state::AppState;

/// SIGTERM: stop being ready and refuse new uploads, hand leadership to
/// the most caught-up other voter, give load balancers `delay` to notice.
pub async fn drain(st: &AppState, delay: Duration) {
    st.draining.store(true, Ordering::Relaxed);
    tracing::info!("draining: not ready, new uploads refused");
    let m = st.meta.raft().metrics().borrow().clone();
    if m.current_leader == Some(st.node_id) {
        let to = m.replication.as_ref().and_then(|r| {
            r.iter()
                .filter(|(id, _)| **id != st.node_id)
                .filter(|(id, _)| {
                    m.membership_config
                        .membership()
                        .voter_ids()
                        .any(|v| v == **id)
                })
                .max_by_key(|(_, l)| l.map(|l| l.index))
                .map(|(id, _)| *id)
        });
        if let Some(to) = to {
            let reply = st.meta.transfer_leadership(to).await;
            tracing::info!(to, ?reply, "handed leadership over before stopping");
        }
    }
    tokio::time::sleep(delay).await;
}

/// Ready once a leader is known (at once on a restarted single node after
/// one election timeout).
pub async fn ready_once_leader_known(state: Arc<AppState>) {
    let waited = state
        .meta
        .raft()
        .wait(Some(Duration::from_secs(3600)))
        .metrics(|m| m.current_leader.is_some(), "leader known")
        .await;
    if waited.is_ok() {
        state.ready.store(true, Ordering::Relaxed);
    }
}

pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutting down");
}
