//! openraft's state machine over the RocksDB store: each log entry is
//! applied in one write batch (the model's `Staged::apply`, in
//! `model/apply.rs`, stages the command's writes), with the request window
//! that makes retried proposals idempotent, the audit trail's clock and
//! context, and snapshots.

use std::path::PathBuf;
use std::sync::Arc;

use openraft::storage::RaftStateMachine;
use openraft::{EntryPayload, RaftSnapshotBuilder, StorageIOError};
use rocksdb::{WriteBatch, WriteOptions, DB};
use std::os::unix::fs::MetadataExt;

use tokio::io::{AsyncSeekExt, AsyncWriteExt};

use crate::consensus::snapshot;
use crate::consensus::types::{
    Entry, LogId, Snapshot, SnapshotMeta, StorageError, StoredMembership, TypeConfig,
};
use crate::model::apply::{ApplyError, Staged};
use crate::model::audit::{Actor, AuditContext, AuditEvent, Described};
use crate::model::command::{Command, CommandResult, Proposal, Refusal};
use crate::model::queries::StateReader;
use crate::store::{cf, decode, encode, CF_AUDIT, CF_REQUESTS, CF_REQUESTS_BY_INDEX, CF_SM_META};

pub(crate) const KEY_LAST_APPLIED: &[u8] = b"last_applied";
pub(crate) const KEY_MEMBERSHIP: &[u8] = b"membership";
/// Every `requests_by_index` key below this log index has been forgotten:
/// pruning seeks here instead of walking the tombstones it left before.
const KEY_REQUESTS_PRUNED: &[u8] = b"requests_pruned_below";
/// The cluster's clock (ms): the latest time any applied command carried.
/// No audit event after it may be older, and events without a time of
/// their own (membership changes) take it.
const KEY_AUDIT_LAST: &[u8] = b"audit_last_ms";
/// Membership events waiting for a command with a time to date them.
const KEY_AUDIT_DEFERRED: &[u8] = b"audit_deferred";
/// Audit events before this time (ms) are forgotten; listings start here.
pub(crate) const KEY_AUDIT_PRUNED: &[u8] = b"audit_pruned_before_ms";

/// How many log entries a request id is remembered for. A node retries a
/// proposal for at most a few seconds (its leader wait), far fewer entries
/// than this at any write rate the log sustains; the bound keeps the table
/// small. Forgetting is by log index, so every replica forgets alike.
pub const REQUEST_WINDOW: u64 = 200_000;
/// Old request ids forgotten per applied entry (amortised pruning: each
/// entry adds at most one, so a backlog shrinks).
const PRUNE_PER_APPLY: usize = 4;

pub struct StateMachineStore {
    db: Arc<DB>,
    reader: StateReader,
    snapshot_dir: PathBuf,
    /// The file the snapshot being received is written into.
    receiving: Option<PathBuf>,
    /// How many log entries a request id is remembered for.
    request_window: u64,
    /// Logs the audit events this node proposed (0: all of them).
    node_id: u64,
    volume: Arc<crate::consensus::snapshot_policy::LogVolume>,
}

impl StateMachineStore {
    pub(crate) fn new(
        db: Arc<DB>,
        snapshot_dir: PathBuf,
        request_window: u64,
        node_id: u64,
        volume: Arc<crate::consensus::snapshot_policy::LogVolume>,
    ) -> Self {
        StateMachineStore {
            node_id,
            volume,
            reader: StateReader::new(db.clone()),
            db,
            snapshot_dir,
            receiving: None,
            request_window: request_window.max(1),
        }
    }

    fn apply_one(&self, entry: &Entry) -> Result<CommandResult, StorageError> {
        let mut batch = WriteBatch::default();
        let meta = cf(&self.db, CF_SM_META);
        let result = match &entry.payload {
            EntryPayload::Blank => CommandResult::Ok,
            EntryPayload::Membership(m) => {
                let stored = StoredMembership::new(Some(entry.log_id), m.clone());
                batch.put_cf(meta, KEY_MEMBERSHIP, encode(&stored));
                let ids =
                    |ids: Vec<u64>| ids.iter().map(u64::to_string).collect::<Vec<_>>().join(",");
                let event = Described::new("cluster.membership", "cluster").detail(format!(
                    "voters [{}], learners [{}]",
                    ids(m.voter_ids().collect()),
                    ids(m.learner_ids().collect())
                ));
                // Membership entries carry no time: the event waits for the
                // next command that does (a metering tick at the latest),
                // so every replica dates it alike.
                self.defer_audit(&mut batch, entry.log_id.index, event)
                    .map_err(|e| StorageIOError::apply(entry.log_id, &e))?;
                CommandResult::Ok
            }
            EntryPayload::Normal(p) => self
                .apply_proposal(p, entry.log_id.index, &mut batch)
                .map_err(|e| StorageIOError::apply(entry.log_id, &e))?,
        };
        batch.put_cf(meta, KEY_LAST_APPLIED, encode(&Some(entry.log_id)));
        // No fsync here: the log is durable, and a state machine that loses its
        // tail on power loss re-applies it from the log (last_applied is in
        // the same batch, so the two never disagree).
        self.db
            .write_opt(batch, &WriteOptions::default())
            .map_err(|e| StorageIOError::apply(entry.log_id, &e))?;
        Ok(result)
    }
}

impl StateMachineStore {
    /// Apply a proposal once: a repeated request id gets the first result.
    fn apply_proposal(
        &self,
        p: &Proposal,
        index: u64,
        batch: &mut WriteBatch,
    ) -> Result<CommandResult, ApplyError> {
        let requests = cf(&self.db, CF_REQUESTS);
        let id = p.request.to_be_bytes();
        if p.request != 0 {
            if let Some(v) = self.db.get_cf(requests, id).map_err(ApplyError::Db)? {
                let (first, result): (u64, CommandResult) =
                    decode(&v).map_err(ApplyError::Record)?;
                tracing::debug!(first, index, "repeated request, applied once");
                return Ok(result);
            }
        }
        let (command, context) = p.command.unwrap_audited();
        let described = crate::model::audit::describe(&self.reader, command)?;
        let mut staged = Staged {
            db: &self.db,
            reader: &self.reader,
            batch,
            events: Vec::new(),
        };
        let result = staged.apply(command)?;
        let Staged { events, batch, .. } = staged;
        let refused = match &result {
            CommandResult::Refused(r) => Some(r),
            CommandResult::Ok => None,
        };
        let events: Vec<Described> = described.into_iter().chain(events).collect();
        if events.is_empty() {
            // Timed bookkeeping (metering ticks, pull times) moves the
            // clock on and dates the membership changes waiting for it.
            let at_ms = command_time_ms(command);
            if at_ms > 0 && (at_ms > self.clock()? || self.deferred()?.is_some()) {
                let tick = AuditContext {
                    at_ms,
                    actor: Actor::System("raft".into()),
                    address: None,
                    node: 0,
                };
                self.record_audit(batch, index, &tick, Vec::new(), None)?;
            }
        } else {
            // A command proposed without its context (by an older node, or
            // a test) is recorded as the cluster's own act at its own time.
            let unattributed = AuditContext {
                at_ms: command_time_ms(command),
                actor: Actor::System("unattributed".into()),
                address: None,
                node: 0,
            };
            self.record_audit(
                batch,
                index,
                context.unwrap_or(&unattributed),
                events,
                refused,
            )?;
        }
        if p.request != 0 {
            batch.put_cf(requests, id, encode(&(index, &result)));
            let mut key = index.to_be_bytes().to_vec();
            key.extend_from_slice(&id);
            batch.put_cf(cf(&self.db, CF_REQUESTS_BY_INDEX), key, b"");
        }
        self.forget_old_requests(index, batch)?;
        Ok(result)
    }

    /// Store a command's audit events in its batch, stamped with a time no
    /// earlier than the last event's (so time order is log order), and log
    /// those this node proposed. A refused command records only its first
    /// event, with the reason.
    fn record_audit(
        &self,
        batch: &mut WriteBatch,
        index: u64,
        context: &AuditContext,
        events: Vec<Described>,
        refused: Option<&Refusal>,
    ) -> Result<(), ApplyError> {
        let at_ms = context.at_ms.max(self.clock()?);
        batch.put_cf(cf(&self.db, CF_SM_META), KEY_AUDIT_LAST, encode(&at_ms));
        // Membership changes waiting for a time take this one: their log
        // indexes are lower, so key order stays log order.
        if let Some(waiting) = self.deferred()? {
            batch.delete_cf(cf(&self.db, CF_SM_META), KEY_AUDIT_DEFERRED);
            let raft = Actor::System("raft".into());
            for (at_index, d) in waiting {
                let event = AuditEvent {
                    at_ms,
                    index: at_index,
                    actor: raft.clone(),
                    organisation: None,
                    namespace: None,
                    action: d.action,
                    resource: d.resource,
                    detail: d.detail,
                    refused: None,
                    address: None,
                    node: None,
                };
                crate::model::audit::log(&event);
                batch.put_cf(
                    cf(&self.db, CF_AUDIT),
                    crate::model::audit::key(at_ms, at_index, 0),
                    encode(&event),
                );
            }
        }
        let log = self.node_id == 0 || context.node == 0 || context.node == self.node_id;
        let keep = if refused.is_some() { 1 } else { events.len() };
        for (seq, d) in events.into_iter().take(keep).enumerate() {
            let event = AuditEvent {
                at_ms,
                index,
                actor: context.actor.clone(),
                organisation: d.organisation,
                namespace: d.namespace,
                action: d.action.to_string(),
                resource: d.resource,
                detail: d.detail,
                refused: refused.map(|r| r.to_string()),
                address: context.address.clone(),
                node: (context.node != 0).then_some(context.node),
            };
            if log {
                crate::model::audit::log(&event);
            }
            let seq = u32::try_from(seq).unwrap_or(u32::MAX);
            batch.put_cf(
                cf(&self.db, CF_AUDIT),
                crate::model::audit::key(at_ms, index, seq),
                encode(&event),
            );
        }
        Ok(())
    }

    /// Keep an event until a command with a time dates it.
    fn defer_audit(
        &self,
        batch: &mut WriteBatch,
        index: u64,
        d: Described,
    ) -> Result<(), ApplyError> {
        let mut waiting = self.deferred()?.unwrap_or_default();
        waiting.push((
            index,
            crate::model::audit::Undated {
                action: d.action.to_string(),
                resource: d.resource,
                detail: d.detail,
            },
        ));
        batch.put_cf(
            cf(&self.db, CF_SM_META),
            KEY_AUDIT_DEFERRED,
            encode(&waiting),
        );
        Ok(())
    }

    fn deferred(&self) -> Result<Option<Vec<(u64, crate::model::audit::Undated)>>, ApplyError> {
        match self
            .db
            .get_pinned_cf(cf(&self.db, CF_SM_META), KEY_AUDIT_DEFERRED)
            .map_err(ApplyError::Db)?
        {
            Some(b) => decode(&b).map(Some).map_err(ApplyError::Record),
            None => Ok(None),
        }
    }

    /// The cluster's clock (0: no command with a time applied yet).
    fn clock(&self) -> Result<u64, ApplyError> {
        match self
            .db
            .get_pinned_cf(cf(&self.db, CF_SM_META), KEY_AUDIT_LAST)
            .map_err(ApplyError::Db)?
        {
            Some(b) => decode(&b).map_err(ApplyError::Record),
            None => Ok(0),
        }
    }

    /// Forget up to `PRUNE_PER_APPLY` request ids older than the window.
    /// The scan starts where the last one stopped (a key in `sm_meta`, so
    /// replicas and restarts agree) and ends at the horizon: its cost does
    /// not grow with the tombstones earlier prunes left behind.
    fn forget_old_requests(&self, index: u64, batch: &mut WriteBatch) -> Result<(), ApplyError> {
        let Some(horizon) = index.checked_sub(self.request_window) else {
            return Ok(());
        };
        let meta = cf(&self.db, CF_SM_META);
        let pruned: u64 = match self
            .db
            .get_pinned_cf(meta, KEY_REQUESTS_PRUNED)
            .map_err(ApplyError::Db)?
        {
            Some(b) => decode(&b).map_err(ApplyError::Record)?,
            None => 0,
        };
        if pruned >= horizon {
            return Ok(());
        }
        let by_index = cf(&self.db, CF_REQUESTS_BY_INDEX);
        let mut bounds = rocksdb::ReadOptions::default();
        bounds.set_iterate_upper_bound(horizon.to_be_bytes());
        let from = pruned.to_be_bytes();
        let iter = self.db.iterator_cf_opt(
            by_index,
            bounds,
            rocksdb::IteratorMode::From(&from, rocksdb::Direction::Forward),
        );
        // With fewer than a full batch below the horizon, all of it is gone.
        let mut reached = horizon;
        for (n, item) in iter.enumerate() {
            let (k, _) = item.map_err(ApplyError::Db)?;
            let Some(at) = k
                .get(..8)
                .map(|b| u64::from_be_bytes(b.try_into().expect("8 bytes")))
            else {
                continue;
            };
            if n == PRUNE_PER_APPLY {
                reached = at;
                break;
            }
            batch.delete_cf(cf(&self.db, CF_REQUESTS), &k[8..]);
            batch.delete_cf(by_index, &k);
        }
        batch.put_cf(meta, KEY_REQUESTS_PRUNED, encode(&reached));
        Ok(())
    }
}

/// A command's own clock (ms), for its audit events when it came without
/// a context (0: none; the last event's time is used).
fn command_time_ms(cmd: &Command) -> u64 {
    match cmd {
        Command::CollectBlobs { at, .. } | Command::RetentionStep { at, .. } => {
            at.saturating_mul(1000)
        }
        Command::CreateNamespace { created_at, .. }
        | Command::CreateOrganisation { created_at, .. }
        | Command::CreateProject { created_at, .. } => created_at.saturating_mul(1000),
        Command::RevokeCredential { revoked_at, .. } => revoked_at.saturating_mul(1000),
        Command::PutManifest(put) => put.pushed_at.saturating_mul(1000),
        Command::MeterTick { at } => at.saturating_mul(1000),
        Command::RecordPulls { pulls } => pulls.iter().map(|(_, _, ms)| *ms).max().unwrap_or(0),
        _ => 0,
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = snapshot::Builder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        let last = self
            .reader
            .last_applied()
            .map_err(|e| StorageIOError::read_state_machine(&e))?;
        let membership = self
            .reader
            .membership()
            .map_err(|e| StorageIOError::read_state_machine(&e))?;
        Ok((last, membership))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<CommandResult>, StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let mut out = Vec::new();
        for e in entries {
            let span = tracing::debug_span!("raft_apply", index = e.log_id.index);
            let _g = span.enter();
            out.push(self.apply_one(&e)?);
        }
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        snapshot::Builder::new(
            self.db.clone(),
            self.snapshot_dir.clone(),
            self.volume.clone(),
        )
    }

    /// Chunks from the leader go straight to a file, never to memory.
    async fn begin_receiving_snapshot(&mut self) -> Result<Box<tokio::fs::File>, StorageError> {
        let (path, file) = snapshot::incoming(&self.snapshot_dir)
            .await
            .map_err(|e| StorageIOError::write_snapshot(None, &e))?;
        self.receiving = Some(path);
        Ok(Box::new(file))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        mut snapshot: Box<tokio::fs::File>,
    ) -> Result<(), StorageError> {
        let failed =
            |e: snapshot::SnapshotError| StorageIOError::write_snapshot(Some(meta.signature()), &e);
        // tokio's File completes writes in the background: wait for them.
        snapshot.flush().await.map_err(|e| failed(e.into()))?;
        // Usually the data is in the file `begin_receiving_snapshot` made;
        // otherwise (a snapshot handed over in this process) copy it to one.
        let same_file = match (&self.receiving, snapshot.metadata().await) {
            (Some(p), Ok(m)) => {
                std::fs::metadata(p).is_ok_and(|r| (r.dev(), r.ino()) == (m.dev(), m.ino()))
            }
            _ => false,
        };
        let path = match self.receiving.take().filter(|_| same_file) {
            Some(p) => p,
            None => {
                let (path, mut file) = snapshot::incoming(&self.snapshot_dir)
                    .await
                    .map_err(&failed)?;
                snapshot
                    .seek(std::io::SeekFrom::Start(0))
                    .await
                    .map_err(|e| failed(e.into()))?;
                tokio::io::copy(&mut snapshot, &mut file)
                    .await
                    .map_err(|e| failed(e.into()))?;
                file.flush().await.map_err(|e| failed(e.into()))?;
                path
            }
        };
        drop(snapshot);
        let bytes = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        snapshot::install(&self.db, &self.snapshot_dir, meta, &path).map_err(&failed)?;
        self.volume.snapshot_taken(self.volume.mark(), bytes);
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, StorageError> {
        snapshot::load(&self.snapshot_dir)
            .await
            .map_err(|e| StorageIOError::read_snapshot(None, &e).into())
    }
}

impl RaftSnapshotBuilder<TypeConfig> for snapshot::Builder {
    async fn build_snapshot(&mut self) -> Result<Snapshot, StorageError> {
        self.build()
            .await
            .map_err(|e| StorageIOError::write_snapshot(None, &e).into())
    }
}
