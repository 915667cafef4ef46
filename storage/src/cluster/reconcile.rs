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
//!   corrupt copy is quarantined, and the next pass pulls a good one;
//! - a local file whose blob has no committed record (collected by garbage
//!   collection, or an upload that never committed) is deleted at the next
//!   pass, unless an upload wrote it, found it present or held it within
//!   the orphan grace: that covers a copy counted for a commit still on
//!   its way.
//!
//! Reads keep working throughout: a node without a copy reads from the
//! owners, then from any holder.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::Notify;

use super::replicas::Replicas;
use super::{replication, ClusterView, MembershipVersion, ViewError};
use crate::blob_store::{Scrub, ScrubState};
use crate::{BlobStore, Digest, Uploads};

/// A peer that does not answer a question about its copies in this time
/// (cut off by a partition, say) counts as not holding them.
const PEER_ANSWER: Duration = Duration::from_secs(10);

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
    /// Owned here but no copy could be pulled.
    pub missing: u64,
    /// Blobs with fewer copies than owners (counted by their first owner
    /// that is up and holds one, so the sum over nodes counts each once).
    pub under_replicated: u64,
    /// Held here without being an owner (waiting for every owner).
    pub misplaced: u64,
    /// Totals since the node started: copies pulled and dropped, bytes
    /// scrubbed, corrupt copies found.
    pub pulled: u64,
    /// Copies this node had cached and kept as its own when it became
    /// their owner (no pull needed).
    pub promoted: u64,
    pub dropped: u64,
    pub scrubbed_bytes: u64,
    pub corrupt_found: u64,
    /// Local files without a committed blob deleted, and their bytes
    /// (totals since start).
    pub swept: u64,
    pub swept_bytes: u64,
    pub last_pass_ms: u64,
    /// The cache of blobs streamed from their owners (`--cache-bytes`),
    /// if it is on.
    pub cache: Option<super::CacheReport>,
}

/// How often and how hard the storage loop works.
pub struct Pacing {
    /// Between passes.
    pub interval: Duration,
    /// Local bytes re-hashed per pass.
    pub scrub_bytes_per_pass: u64,
    /// Bandwidth of repair and rebalance pulls (0: no limit), unless the
    /// cluster setting says otherwise.
    pub pull_bytes_per_sec: u64,
    /// How long a local file without a committed record is kept after an
    /// upload last relied on it.
    pub orphan_grace: Duration,
}

#[derive(Clone)]
pub struct Reconciler {
    inner: Arc<Inner>,
}

struct Inner {
    node_id: u64,
    replicas: Replicas,
    view: Arc<dyn ClusterView>,
    store: BlobStore,
    uploads: Uploads,
    pacing: Pacing,
    wake: Notify,
    report: Mutex<Report>,
    /// The last blob scrubbed, and its scrub's state if it is not done.
    scrub_cursor: Mutex<(Option<String>, Option<ScrubState>)>,
}

impl Reconciler {
    pub fn new(replicas: Replicas, store: BlobStore, pacing: Pacing) -> std::io::Result<Self> {
        Ok(Reconciler {
            inner: Arc::new(Inner {
                node_id: replicas.view().node_id(),
                view: replicas.view().clone(),
                replicas,
                uploads: Uploads::open(store.clone())?,
                store,
                pacing,
                wake: Notify::new(),
                report: Mutex::new(Report::default()),
                scrub_cursor: Mutex::new((None, None)),
            }),
        })
    }

    /// Start a pass now (`tcr storage rebalance|scrub`).
    pub fn wake(&self) {
        self.inner.wake.notify_one();
    }

    /// The node's cache of blobs streamed from their owners, if it is on.
    pub fn cache(&self) -> Option<&super::BlobCache> {
        self.inner.replicas.cache()
    }

    pub fn report(&self) -> Report {
        let mut r = self.inner.report.lock().expect("report lock").clone();
        r.cache = self.cache().map(|c| c.report());
        r
    }

    pub async fn run(self) {
        // A membership, weight or placement change starts a pass at once
        // on every node, not at the next interval.
        let mut membership = self.inner.view.membership_changes();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(self.inner.pacing.interval) => {}
                _ = self.inner.wake.notified() => {}
                _ = membership_changed(&mut membership) => {}
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
            r.promoted += report.promoted;
            r.dropped += report.dropped;
            r.scrubbed_bytes += report.scrubbed_bytes;
            r.corrupt_found += report.corrupt_found;
            r.swept += report.swept;
            r.swept_bytes += report.swept_bytes;
            *report = r;
        }
    }

    #[tracing::instrument(level = "debug", skip_all, fields(node = self.inner.node_id))]
    async fn pass(&self) -> Result<Report, ViewError> {
        let me = &self.inner;
        let mut r = Report::default();
        let mut after: Option<String> = None;
        loop {
            let (items, more) = me.view.committed_digests(after.as_deref(), 1000)?;
            let mut mine_held = Vec::new();
            for name in &items {
                let Ok(d) = name.parse::<Digest>() else {
                    continue;
                };
                r.committed_blobs += 1;
                let size = me.view.committed_size(name)?.unwrap_or(0);
                if let Some(owners) = self.reconcile_one(&d, size, &mut r).await {
                    mine_held.push((d, owners));
                }
            }
            r.under_replicated += self.count_under_replicated(&mine_held).await;
            match items.last() {
                Some(last) if more => after = Some(last.clone()),
                _ => break,
            }
        }
        self.scrub(&mut r).await?;
        self.sweep(&mut r).await?;
        if let Some(cache) = me.replicas.cache() {
            // Like the sweep, only with a current view of what is committed.
            if me.view.caught_up() {
                cache.sweep(&*me.view).await?;
            }
        }
        Ok(r)
    }

    /// Delete local blob files that have no committed record, unless an
    /// upload claimed them within the orphan grace (see
    /// `BlobStore::remove_unclaimed`): collected blobs go at the next pass.
    async fn sweep(&self, r: &mut Report) -> Result<(), ViewError> {
        let me = &self.inner;
        me.store.forget_claims(me.pacing.orphan_grace);
        if !me.view.caught_up() {
            return Ok(());
        }
        for (d, size) in me.store.list().await.unwrap_or_default() {
            if me.view.committed_size(&d.to_string())?.is_some() {
                continue;
            }
            match me.store.remove_unclaimed(&d, me.pacing.orphan_grace).await {
                Ok(true) => {
                    tracing::info!(digest = %d, size, "swept a blob with no committed record");
                    r.swept += 1;
                    r.swept_bytes += size;
                }
                Ok(false) => {}
                Err(e) => tracing::warn!(digest = %d, "sweep: {e}"),
            }
        }
        Ok(())
    }

    /// Bring this node's copy of `d` in line with placement. Returns the
    /// owners when this node owns and holds it afterwards.
    async fn reconcile_one(
        &self,
        d: &Digest,
        size: u64,
        r: &mut Report,
    ) -> Option<Vec<(u64, String)>> {
        let me = &self.inner;
        let p = me.replicas.placement(d);
        if p.owners.is_empty() {
            return None; // no membership known yet: nothing to decide
        }
        let owners: Vec<(u64, String)> = p
            .owners
            .iter()
            .map(|(id, n)| (*id, n.rpc_addr.clone()))
            .collect();
        let mine = p.owners.iter().any(|(id, _)| *id == me.node_id);
        let local = me.store.stat(d).await.ok().flatten();
        if mine {
            r.owned += 1;
            if let Some(bytes) = local {
                r.held += 1;
                r.held_bytes += bytes;
                return Some(owners);
            }
            // A non-owner's cached copy of a blob it now owns (a member
            // left, a weight changed): no transfer needed.
            if let Some(cache) = me.replicas.cache() {
                if cache.promote(d, size, &me.uploads).await {
                    tracing::info!(digest = %d, "kept this node's cached copy as the copy it owns");
                    r.promoted += 1;
                    r.held += 1;
                    r.held_bytes += size;
                    return Some(owners);
                }
            }
            for (id, node) in p.owners.iter().chain(&p.others) {
                if *id == me.node_id {
                    continue;
                }
                let Some(channel) = me.replicas.channel(&node.rpc_addr) else {
                    continue;
                };
                let started = std::time::Instant::now();
                // Bounded, so a peer cut off mid-transfer cannot stall the
                // loop: at least 10 MB/s, or the pull is abandoned.
                let bound = PEER_ANSWER + Duration::from_secs(size / 10_000_000);
                let pulled =
                    tokio::time::timeout(bound, replication::pull(channel, &me.uploads, d, size))
                        .await
                        .unwrap_or_else(|_| {
                            Err(replication::ReplicationError::Peer("pull timed out".into()))
                        });
                // The cluster setting, else this node's flag.
                let limit = me
                    .view
                    .pull_bytes_per_sec()
                    .unwrap_or(me.pacing.pull_bytes_per_sec);
                if limit > 0 {
                    // Throttle: this pull may not have taken less than its
                    // share of the bandwidth allows.
                    let share = Duration::from_secs_f64(size as f64 / limit as f64);
                    tokio::time::sleep(share.saturating_sub(started.elapsed())).await;
                }
                match pulled {
                    Ok(()) => {
                        tracing::info!(digest = %d, from = id, "pulled a copy this node owns");
                        r.pulled += 1;
                        r.held += 1;
                        r.held_bytes += size;
                        return Some(owners);
                    }
                    Err(e) => {
                        tracing::debug!(digest = %d, from = id, "no copy from this node: {e}")
                    }
                }
            }
            r.missing += 1;
            None
        } else if local.is_some() {
            // Drop the copy only when every owner has its own.
            for (id, node) in &p.owners {
                let Some(channel) = me.replicas.channel(&node.rpc_addr) else {
                    r.misplaced += 1;
                    return None;
                };
                let asked = tokio::time::timeout(PEER_ANSWER, replication::has(channel, d));
                if !matches!(asked.await, Ok(Ok(true))) {
                    tracing::debug!(digest = %d, owner = id, "owner lacks a copy; keeping ours");
                    r.misplaced += 1;
                    return None;
                }
            }
            match me.store.remove(d).await {
                Ok(_) => r.dropped += 1,
                Err(e) => {
                    tracing::warn!(digest = %d, "dropping a moved copy: {e}");
                    r.misplaced += 1;
                }
            }
            None
        } else {
            None
        }
    }

    /// Of the blobs this node owns and holds, how many have fewer copies
    /// than owners. Each is counted by one node only: the first of its
    /// owners that is up and holds a copy.
    async fn count_under_replicated(&self, held: &[(Digest, Vec<(u64, String)>)]) -> u64 {
        let me = &self.inner;
        // Ask each other owner, once per page, which of these it holds.
        let mut asks: std::collections::BTreeMap<(u64, String), Vec<usize>> = Default::default();
        for (i, (_, owners)) in held.iter().enumerate() {
            for (id, addr) in owners {
                if *id != me.node_id {
                    asks.entry((*id, addr.clone())).or_default().push(i);
                }
            }
        }
        // (peer, blob index) -> holds it; peers that did not answer are absent.
        let mut answers: std::collections::HashMap<(u64, usize), bool> = Default::default();
        for ((id, addr), idx) in asks {
            let Some(channel) = me.replicas.channel(&addr) else {
                continue;
            };
            let digests: Vec<Digest> = idx.iter().map(|i| held[*i].0.clone()).collect();
            let asked = tokio::time::timeout(PEER_ANSWER, replication::has_many(channel, &digests));
            if let Ok(Ok(present)) = asked.await {
                for (i, p) in idx.iter().zip(present) {
                    answers.insert((id, *i), p);
                }
            }
        }
        let mut under = 0;
        for (i, (_, owners)) in held.iter().enumerate() {
            // An earlier owner that is up and holds a copy counts it.
            let counted_earlier = owners
                .iter()
                .take_while(|(id, _)| *id != me.node_id)
                .any(|(id, _)| answers.get(&(*id, i)) == Some(&true));
            if counted_earlier {
                continue;
            }
            let copies = 1 + owners
                .iter()
                .filter(|(id, _)| answers.get(&(*id, i)) == Some(&true))
                .count();
            if copies < owners.len() {
                under += 1;
            }
        }
        under
    }

    /// Re-hash up to the per-pass budget of local copies, continuing where
    /// the last pass stopped (from the start again after the last blob),
    /// inside a blob too: a blob larger than the budget is hashed over
    /// several passes, so no pass re-hashes gigabytes at once beside the
    /// node's traffic.
    async fn scrub(&self, r: &mut Report) -> Result<(), ViewError> {
        let me = &self.inner;
        let mut budget = me.pacing.scrub_bytes_per_pass;
        if budget == 0 {
            return Ok(());
        }
        let (mut cursor, mut partial) =
            std::mem::take(&mut *me.scrub_cursor.lock().expect("cursor lock"));
        if let (Some(name), Some(state)) = (&cursor, partial.take()) {
            if let Ok(d) = name.parse::<Digest>() {
                partial = self.scrub_one(&d, Some(state), &mut budget, r).await;
            }
        }
        'pages: while partial.is_none() {
            let (items, more) = me.view.committed_digests(cursor.as_deref(), 100)?;
            for name in &items {
                if budget == 0 {
                    break 'pages;
                }
                cursor = Some(name.clone());
                let Ok(d) = name.parse::<Digest>() else {
                    continue;
                };
                partial = self.scrub_one(&d, None, &mut budget, r).await;
                if partial.is_some() {
                    break 'pages;
                }
            }
            if !more {
                cursor = None;
                break;
            }
        }
        *me.scrub_cursor.lock().expect("cursor lock") = (cursor, partial);
        Ok(())
    }

    /// Hash up to `budget` bytes of `d` from `from`; the state to go on
    /// from if the copy is not done.
    async fn scrub_one(
        &self,
        d: &Digest,
        from: Option<ScrubState>,
        budget: &mut u64,
        r: &mut Report,
    ) -> Option<ScrubState> {
        let me = &self.inner;
        let before = from.as_ref().map_or(0, ScrubState::offset);
        match me.store.verify_part(d, from, *budget).await {
            Ok(Scrub::Partial(state)) => {
                let n = state.offset() - before;
                r.scrubbed_bytes += n;
                *budget = budget.saturating_sub(n);
                Some(state)
            }
            Ok(Scrub::Done(true)) => {
                let size = me.store.stat(d).await.ok().flatten().unwrap_or(0);
                let n = size.saturating_sub(before);
                r.scrubbed_bytes += n;
                *budget = budget.saturating_sub(n.max(1));
                None
            }
            Ok(Scrub::Done(false)) => {
                tracing::error!(digest = %d, "scrub found a corrupt copy; quarantined");
                r.corrupt_found += 1;
                let _ = me.store.quarantine(d).await;
                None
            }
            Ok(Scrub::Missing) => None,
            Err(e) => {
                tracing::warn!(digest = %d, "scrub: {e}");
                None
            }
        }
    }
}

/// Resolves when the membership changes; never, if the watch closes.
async fn membership_changed(membership: &mut tokio::sync::watch::Receiver<MembershipVersion>) {
    if membership.changed().await.is_err() {
        std::future::pending::<()>().await;
    }
}
