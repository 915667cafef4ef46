//! The storage loop of each node: repair, rebalance and scrub in one pass
//! over the committed blobs.
//!
//! Each node looks after its own disk against the placement it computes:
//! - a blob it owns but does not hold is pulled from another holder (owners
//!   first, then any member) and verified before it appears: that repairs
//!   lost copies and, after a membership or R change, moves blobs onto
//!   their new owners;
//! - a blob it holds but no longer owns is deleted only once every owner
//!   confirms a copy, so a move never leaves fewer copies than before;
//! - a bounded number of bytes of its own copies are re-hashed per pass; a
//!   corrupt copy is quarantined, and the next pass pulls a good one.
//!
//! Reads keep working throughout: a node without a copy reads from the
//! owners, then from any holder.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tcr_raft::StateReader;
use tcr_storage::replication;
use tcr_storage::{BlobStore, Digest, Uploads};
use tokio::sync::Notify;

use crate::replicas::Replicas;

/// What the last pass found and did on this node.
#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub passes: u64,
    pub running: bool,
    pub committed_blobs: u64,
    /// Blobs this node owns.
    pub owned: u64,
    /// Owned blobs with a local copy, and their bytes.
    pub held: u64,
    pub held_bytes: u64,
    /// Owned here but no copy could be pulled (under-replicated).
    pub missing: u64,
    /// Held here without being an owner (waiting for every owner).
    pub misplaced: u64,
    /// Totals since the node started: copies pulled and dropped, bytes
    /// scrubbed, corrupt copies found.
    pub pulled: u64,
    pub dropped: u64,
    pub scrubbed_bytes: u64,
    pub corrupt_found: u64,
    pub last_pass_ms: u64,
}

#[derive(Clone)]
pub struct Reconciler {
    inner: Arc<Inner>,
}

struct Inner {
    node_id: u64,
    replicas: Replicas,
    reader: StateReader,
    store: BlobStore,
    uploads: Uploads,
    interval: Duration,
    scrub_bytes_per_pass: u64,
    pull_bytes_per_sec: u64,
    wake: Notify,
    report: Mutex<Report>,
    scrub_cursor: Mutex<Option<String>>,
}

impl Reconciler {
    pub fn new(
        node_id: u64,
        replicas: Replicas,
        reader: StateReader,
        store: BlobStore,
        interval: Duration,
        scrub_bytes_per_pass: u64,
        pull_bytes_per_sec: u64,
    ) -> std::io::Result<Self> {
        Ok(Reconciler {
            inner: Arc::new(Inner {
                node_id,
                replicas,
                reader,
                uploads: Uploads::open(store.clone())?,
                store,
                interval,
                scrub_bytes_per_pass,
                pull_bytes_per_sec,
                wake: Notify::new(),
                report: Mutex::new(Report::default()),
                scrub_cursor: Mutex::new(None),
            }),
        })
    }

    /// Start a pass now (`tcr storage rebalance|scrub`).
    pub fn wake(&self) {
        self.inner.wake.notify_one();
    }

    pub fn report(&self) -> Report {
        self.inner.report.lock().expect("report lock").clone()
    }

    pub async fn run(self) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(self.inner.interval) => {}
                _ = self.inner.wake.notified() => {}
            }
            self.inner.report.lock().expect("report lock").running = true;
            let started = std::time::Instant::now();
            let mut r = match self.pass().await {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!("storage pass failed: {e}");
                    Report::default()
                }
            };
            r.last_pass_ms = started.elapsed().as_millis() as u64;
            let mut report = self.inner.report.lock().expect("report lock");
            r.passes = report.passes + 1;
            // Counts of work done are totals since the node started.
            r.pulled += report.pulled;
            r.dropped += report.dropped;
            r.scrubbed_bytes += report.scrubbed_bytes;
            r.corrupt_found += report.corrupt_found;
            *report = r;
        }
    }

    #[tracing::instrument(level = "debug", skip_all, fields(node = self.inner.node_id))]
    async fn pass(&self) -> Result<Report, tcr_raft::ReadError> {
        let me = &self.inner;
        let mut r = Report::default();
        let mut after: Option<String> = None;
        loop {
            let page = me.reader.blob_digests(after.as_deref(), 1000)?;
            for name in &page.items {
                let Ok(d) = name.parse::<Digest>() else {
                    continue;
                };
                r.committed_blobs += 1;
                let size = me.reader.blob(name)?.map(|b| b.size).unwrap_or(0);
                self.reconcile_one(&d, size, &mut r).await;
            }
            match page.items.last() {
                Some(last) if page.more => after = Some(last.clone()),
                _ => break,
            }
        }
        self.scrub(&mut r).await?;
        Ok(r)
    }

    async fn reconcile_one(&self, d: &Digest, size: u64, r: &mut Report) {
        let me = &self.inner;
        let p = me.replicas.placement(&me.reader, d);
        if p.owners.is_empty() {
            return; // no membership known yet: nothing to decide
        }
        let mine = p.owners.iter().any(|(id, _)| *id == me.node_id);
        let local = me.store.stat(d).await.ok().flatten();
        if mine {
            r.owned += 1;
            if let Some(bytes) = local {
                r.held += 1;
                r.held_bytes += bytes;
                return;
            }
            for (id, node) in p.owners.iter().chain(&p.others) {
                if *id == me.node_id {
                    continue;
                }
                let Some(channel) = me.replicas.channel(&node.rpc_addr) else {
                    continue;
                };
                let started = std::time::Instant::now();
                let pulled = replication::pull(channel, &me.uploads, d, size).await;
                if me.pull_bytes_per_sec > 0 {
                    // Throttle: this pull may not have taken less than its
                    // share of the bandwidth allows.
                    let share = Duration::from_secs_f64(size as f64 / me.pull_bytes_per_sec as f64);
                    tokio::time::sleep(share.saturating_sub(started.elapsed())).await;
                }
                match pulled {
                    Ok(()) => {
                        tracing::info!(digest = %d, from = id, "pulled a copy this node owns");
                        r.pulled += 1;
                        r.held += 1;
                        r.held_bytes += size;
                        return;
                    }
                    Err(e) => {
                        tracing::debug!(digest = %d, from = id, "no copy from this node: {e}")
                    }
                }
            }
            r.missing += 1;
        } else if local.is_some() {
            // Drop the copy only when every owner has its own.
            for (id, node) in &p.owners {
                let Some(channel) = me.replicas.channel(&node.rpc_addr) else {
                    r.misplaced += 1;
                    return;
                };
                if !matches!(replication::has(channel, d).await, Ok(true)) {
                    tracing::debug!(digest = %d, owner = id, "owner lacks a copy; keeping ours");
                    r.misplaced += 1;
                    return;
                }
            }
            match me.store.remove(d).await {
                Ok(_) => r.dropped += 1,
                Err(e) => {
                    tracing::warn!(digest = %d, "dropping a moved copy: {e}");
                    r.misplaced += 1;
                }
            }
        }
    }

    /// Re-hash up to the per-pass budget of local copies, continuing where
    /// the last pass stopped (from the start again after the last blob).
    async fn scrub(&self, r: &mut Report) -> Result<(), tcr_raft::ReadError> {
        let me = &self.inner;
        let mut cursor = me.scrub_cursor.lock().expect("cursor lock").clone();
        let mut budget = me.scrub_bytes_per_pass;
        'pages: loop {
            let page = me.reader.blob_digests(cursor.as_deref(), 100)?;
            for name in &page.items {
                if budget == 0 {
                    break 'pages;
                }
                cursor = Some(name.clone());
                let Ok(d) = name.parse::<Digest>() else {
                    continue;
                };
                match me.store.verify(&d).await {
                    Ok(Some(true)) => {
                        let size = me.store.stat(&d).await.ok().flatten().unwrap_or(0);
                        r.scrubbed_bytes += size;
                        budget = budget.saturating_sub(size.max(1));
                    }
                    Ok(Some(false)) => {
                        tracing::error!(digest = %d, "scrub found a corrupt copy; quarantined");
                        r.corrupt_found += 1;
                        let _ = me.store.quarantine(&d).await;
                    }
                    Ok(None) => {}
                    Err(e) => tracing::warn!(digest = %d, "scrub: {e}"),
                }
            }
            if !page.more {
                cursor = None;
                break;
            }
        }
        *me.scrub_cursor.lock().expect("cursor lock") = cursor;
        Ok(())
    }
}
