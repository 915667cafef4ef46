//! The node's background jobs: garbage collection and retention (on the
//! leader), pull-time flushes, metering, the audit trail's pruning and the
//! upload janitor. The storage loop is `tcr_storage::cluster::Reconciler`.

pub mod gc;
pub mod janitor;
pub mod metering;
pub mod retention;

use std::sync::Arc;
use std::time::Duration;

use crate::config::Config;
use crate::server::AppState;

/// Start every job for the life of the process.
pub fn start(state: &Arc<AppState>, cfg: &Config) {
    if cfg.gc_interval_secs > 0.0 {
        tokio::spawn(gc::schedule(
            state.clone(),
            Duration::from_secs_f64(cfg.gc_interval_secs.max(1.0)),
        ));
    }
    tokio::spawn(retention::flush_pulls(
        state.clone(),
        Duration::from_secs_f64(cfg.pull_flush_secs.max(0.1)),
    ));
    tokio::spawn(retention::run_pending(state.clone()));
    tokio::spawn(crate::audit::prune(
        state.clone(),
        cfg.audit_retention.into(),
    ));
    tokio::spawn(metering::run(
        state.clone(),
        Duration::from_secs_f64(cfg.metering_interval_secs.max(0.1)),
    ));
    tokio::spawn(janitor::run(
        state.clone(),
        Duration::from_secs(cfg.upload_idle_secs),
    ));
}
