//! Upload sessions nobody finished: expired once idle, with their replica
//! sessions on other nodes.

use std::sync::Arc;
use std::time::Duration;

use crate::state::OciState;

pub async fn run(st: Arc<OciState>, idle: Duration) {
    let mut tick =
        tokio::time::interval(idle.clamp(Duration::from_secs(1), Duration::from_secs(600)));
    loop {
        tick.tick().await;
        match st.uploads.expire(idle).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(removed = n, "expired idle upload sessions"),
            Err(e) => tracing::warn!("expiring upload sessions: {e}"),
        }
        st.writer.prune().await;
    }
}
