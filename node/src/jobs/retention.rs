//! Retention, the node's half: pull times gathered in memory and flushed
//! into Raft in batches (never one write per pull), runs started on demand
//! or on a schedule, and the leader stepping pending runs one repository
//! per Raft command (see `tcr_raft::retention` for why a leader change
//! mid-run neither repeats nor loses work).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tcr_raft::{Command, RetentionRun, Trigger};
use tokio::sync::Notify;

use crate::metadata::MetaError;
use crate::state::JobsState;
use tcr_storage::clock::{now_ms, now_secs};

/// Distinct (repository, tag or digest) pulls held between flushes; past
/// this, new keys wait for the next flush (known keys still update).
const PULLS_HELD_MAX: usize = 100_000;
/// Pull records per `RecordPulls` command.
const PULLS_PER_COMMAND: usize = 5_000;
/// How often the leader looks for runs that are due.
const SCHEDULE_CHECK: Duration = Duration::from_secs(5);

pub struct Retention {
    pulls: Mutex<HashMap<(String, String), u64>>,
    /// Wakes the leader's runner when a run is requested on this node.
    wake: Notify,
    /// The node's default schedule (seconds; 0: none), unless set in Raft.
    interval_secs: u64,
    pause: Duration,
    /// Scheduled runs are due at multiples of the interval; before the
    /// first one is recorded, count from when this node started.
    started_at: u64,
}

impl Retention {
    pub fn new(interval_secs: u64, pause: Duration) -> Self {
        Retention {
            pulls: Mutex::new(HashMap::new()),
            wake: Notify::new(),
            interval_secs,
            pause,
            started_at: now_secs(),
        }
    }

    /// Note a pull of `key` (a tag or a digest) of `repo`.
    pub fn record_pull(&self, repo: &str, key: &str) {
        let at = now_ms();
        let mut pulls = self.pulls.lock().expect("pull log lock");
        let k = (repo.to_string(), key.to_string());
        if let Some(t) = pulls.get_mut(&k) {
            *t = (*t).max(at);
        } else if pulls.len() < PULLS_HELD_MAX {
            pulls.insert(k, at);
        }
    }

    fn take_pulls(&self) -> Vec<(String, String, u64)> {
        let mut pulls = self.pulls.lock().expect("pull log lock");
        pulls.drain().map(|((r, k), at)| (r, k, at)).collect()
    }

    fn put_back(&self, items: &[(String, String, u64)]) {
        let mut pulls = self.pulls.lock().expect("pull log lock");
        for (r, k, at) in items {
            let e = pulls.entry((r.clone(), k.clone())).or_default();
            *e = (*e).max(*at);
        }
    }
}

/// Commit the pulls seen since the last flush; on failure they are kept
/// for the next one.
pub async fn flush_once(st: &JobsState) {
    let pulls = st.retention.take_pulls();
    for (i, chunk) in pulls.chunks(PULLS_PER_COMMAND).enumerate() {
        let cmd = Command::RecordPulls {
            pulls: chunk.to_vec(),
        };
        if let Err(e) = st.meta.write(cmd).await {
            tracing::warn!("recording {} pull time(s): {e}", pulls.len());
            st.retention.put_back(&pulls[i * PULLS_PER_COMMAND..]);
            return;
        }
    }
}

pub async fn flush_pulls(st: Arc<JobsState>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        flush_once(&st).await;
    }
}

/// The schedule: the cluster setting, else this node's flag.
pub fn interval_secs(st: &JobsState) -> Result<u64, tcr_raft::ReadError> {
    Ok(st
        .meta
        .reader()
        .retention_interval_secs()?
        .unwrap_or(st.retention.interval_secs))
}

/// Open a run of `ns`'s policy; the leader steps it.
#[tracing::instrument(level = "info", skip(st))]
pub async fn start(st: &JobsState, ns: &str, trigger: Trigger) -> Result<RetentionRun, MetaError> {
    let run = RetentionRun {
        // Sortable by time, unique by the random part.
        id: format!("{:013}-{:08x}", now_ms(), rand::random::<u32>()),
        namespace: ns.to_string(),
        trigger,
        requested_at: now_secs(),
        finished_at: None,
        reached: None,
        repositories_done: 0,
        tags_removed: 0,
        manifests_removed: 0,
        removed: Vec::new(),
    };
    st.meta
        .write(Command::StartRetentionRun(Box::new(run.clone())))
        .await?;
    st.retention.wake.notify_one();
    Ok(run)
}

fn leads(st: &JobsState) -> bool {
    st.meta.consensus().is_leader()
}

/// On whichever node leads: start scheduled runs when due, and take every
/// pending run to its end.
pub async fn run_pending(st: Arc<JobsState>) {
    let system = crate::audit::Origin::system("retention");
    crate::audit::within(system, pending_runs(st)).await
}

async fn pending_runs(st: Arc<JobsState>) {
    let mut last_check: Option<Instant> = None;
    loop {
        tokio::select! {
            _ = st.retention.wake.notified() => {}
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
        if !leads(&st) {
            continue;
        }
        if last_check.is_none_or(|t| t.elapsed() >= SCHEDULE_CHECK) {
            last_check = Some(Instant::now());
            if let Err(e) = schedule(&st).await {
                tracing::warn!("scheduling retention runs: {e}");
            }
        }
        let pending = match st.meta.reader().pending_retention_runs() {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!("listing retention runs: {e}");
                continue;
            }
        };
        for (id, ns) in pending {
            if let Err(e) = step_to_end(&st, &ns, &id).await {
                tracing::warn!(run = %id, namespace = %ns, "retention run not finished yet: {e}");
                break;
            }
        }
    }
}

async fn schedule(st: &JobsState) -> Result<(), RunError> {
    let interval = interval_secs(st)?;
    if interval == 0 {
        return Ok(());
    }
    let now = now_secs();
    let due_at = now - now % interval;
    let since = st
        .meta
        .reader()
        .retention_last_scheduled()?
        .unwrap_or(st.retention.started_at);
    if since >= due_at {
        return Ok(());
    }
    let state = st.meta.read().await?;
    for ns in state.all_namespaces()? {
        if ns.retention.is_some() {
            start(st, &ns.name, Trigger::Schedule).await?;
        }
    }
    Ok(())
}

/// Step one run repository by repository until it is finished or this
/// node stops leading. Each step names where the run stood, so a step
/// retried after a lost answer applies once.
#[tracing::instrument(level = "info", skip(st))]
async fn step_to_end(st: &JobsState, ns: &str, id: &str) -> Result<(), RunError> {
    // Only the node whose step finished the run counts it in its metrics.
    let mut stepped = false;
    loop {
        if !leads(st) {
            return Ok(());
        }
        let state = st.meta.read().await?;
        let Some(run) = state.retention_run(ns, id)? else {
            return Ok(());
        };
        if run.finished_at.is_some() {
            if !stepped {
                return Ok(());
            }
            let m = &st.metrics.retention;
            m.with_label_values(&["runs"]).inc();
            m.with_label_values(&["tags"]).inc_by(run.tags_removed);
            m.with_label_values(&["manifests"])
                .inc_by(run.manifests_removed);
            tracing::info!(
                run = %id,
                namespace = %ns,
                repositories = run.repositories_done,
                tags = run.tags_removed,
                manifests = run.manifests_removed,
                "retention run finished"
            );
            st.reconciler.wake();
            return Ok(());
        }
        st.meta
            .write(Command::RetentionStep {
                namespace: ns.to_string(),
                id: id.to_string(),
                reached: run.reached.clone(),
                at: now_secs(),
            })
            .await?;
        stepped = true;
        if !st.retention.pause.is_zero() {
            tokio::time::sleep(st.retention.pause).await;
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Meta(#[from] MetaError),
    #[error(transparent)]
    Read(#[from] tcr_raft::ReadError),
}
