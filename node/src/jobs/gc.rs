//! Garbage collection, the leader's half: find committed blobs that no
//! manifest references and that are older than the grace period, and
//! commit their removal in batches through Raft (see `tcr_raft::gc` for
//! why this is safe against concurrent pushes). Every node then deletes
//! its files in its next storage pass (`tcr_storage::cluster::reconcile`, sweep). Pushes and
//! pulls go on throughout: nothing is locked or made read-only.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tcr_raft::Command;

use crate::metadata::MetaError;
use crate::state::JobsState;
use tcr_storage::clock::now_secs;

/// Digests per `CollectBlobs` command (bounded log entries).
const BATCH: usize = 500;
/// Digests listed in a dry run's answer.
const LIST_MAX: usize = 1000;

#[derive(Debug, Default, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct GcOutcome {
    pub dry_run: bool,
    pub grace_period_secs: u64,
    pub candidates: u64,
    pub candidate_bytes: u64,
    pub collected: u64,
    pub collected_bytes: u64,
    /// The candidates (at most 1000), for a dry run.
    pub digests: Vec<String>,
}

#[tracing::instrument(level = "info", skip(st))]
pub async fn run(st: &JobsState, dry_run: bool, grace_secs: u64) -> Result<GcOutcome, GcError> {
    let at = now_secs();
    let grace_before = at.saturating_sub(grace_secs);
    let mut out = GcOutcome {
        dry_run,
        grace_period_secs: grace_secs,
        ..GcOutcome::default()
    };
    let mut candidates = Vec::new();
    let state = st.meta.read().await?;
    let mut after: Option<String> = None;
    loop {
        let page = state.blob_digests(after.as_deref(), 1000)?;
        for d in &page.items {
            let Some(b) = state.blob(d)? else { continue };
            if b.created_at <= grace_before && !state.blob_referenced(d)? {
                out.candidate_bytes += b.size;
                candidates.push((d.clone(), b.size));
            }
        }
        match page.items.last() {
            Some(last) if page.more => after = Some(last.clone()),
            _ => break,
        }
    }
    out.candidates = candidates.len() as u64;
    if dry_run {
        out.digests = candidates
            .iter()
            .take(LIST_MAX)
            .map(|(d, _)| d.clone())
            .collect();
        return Ok(out);
    }
    for batch in candidates.chunks(BATCH) {
        st.meta
            .write(Command::CollectBlobs {
                digests: batch.iter().map(|(d, _)| d.clone()).collect(),
                at,
                grace_before,
            })
            .await?;
    }
    // What went: the candidates whose record is gone (a push may have
    // referenced some in between; those stay).
    let state = st.meta.read().await?;
    for (d, size) in &candidates {
        if state.blob(d)?.is_none() {
            out.collected += 1;
            out.collected_bytes += size;
        }
    }
    st.reconciler.wake();
    tracing::info!(
        candidates = out.candidates,
        collected = out.collected,
        bytes = out.collected_bytes,
        "garbage collection committed"
    );
    Ok(out)
}

#[derive(Debug, thiserror::Error)]
pub enum GcError {
    #[error(transparent)]
    Meta(#[from] MetaError),
    #[error(transparent)]
    Read(#[from] tcr_raft::ReadError),
}

/// The grace period: the cluster setting, else this node's flag.
pub fn grace_secs(st: &JobsState) -> Result<u64, tcr_raft::ReadError> {
    Ok(st
        .meta
        .reader()
        .gc_grace_secs()?
        .unwrap_or(st.gc_grace_secs))
}

/// Scheduled runs on whichever node leads, with the configured grace.
pub async fn schedule(st: Arc<JobsState>, interval: Duration) {
    crate::audit::within(crate::audit::Origin::system("gc"), scheduled(st, interval)).await
}

async fn scheduled(st: Arc<JobsState>, interval: Duration) {
    let mut tick = tokio::time::interval(interval);
    tick.tick().await; // not at start
    loop {
        tick.tick().await;
        if !st.meta.consensus().is_leader() {
            continue;
        }
        let grace = match grace_secs(&st) {
            Ok(g) => g,
            Err(e) => {
                tracing::warn!("scheduled garbage collection: {e}");
                continue;
            }
        };
        if let Err(e) = run(&st, false, grace).await {
            tracing::warn!("scheduled garbage collection failed: {e}");
        }
    }
}
