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
use crate::state::AppState;

/// Start every job for the life of the process.
pub fn start(state: &Arc<AppState>, cfg: &Config) {
    let jobs = &state.jobs;
    if cfg.gc_interval_secs > 0.0 {
        tokio::spawn(gc::schedule(
            jobs.clone(),
            Duration::from_secs_f64(cfg.gc_interval_secs.max(1.0)),
        ));
    }
    tokio::spawn(retention::flush_pulls(
        jobs.clone(),
        Duration::from_secs_f64(cfg.pull_flush_secs.max(0.1)),
    ));
    tokio::spawn(retention::run_pending(jobs.clone()));
    tokio::spawn(crate::audit::prune(
        jobs.clone(),
        cfg.audit_retention.into(),
    ));
    tokio::spawn(metering::run(
        jobs.clone(),
        Duration::from_secs_f64(cfg.metering_interval_secs.max(0.1)),
    ));
    tokio::spawn(janitor::run(
        state.oci.clone(),
        Duration::from_secs(cfg.upload_idle_secs),
    ));
}
