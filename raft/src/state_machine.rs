//! The metadata state machine: one `apply` with an exhaustive match over
//! `Command`, each arm a small function that reads the current state and
//! stages its writes in one RocksDB batch per log entry.

use std::path::PathBuf;
use std::sync::Arc;

use openraft::storage::RaftStateMachine;
use openraft::{EntryPayload, RaftSnapshotBuilder, StorageIOError};
use rocksdb::{WriteBatch, WriteOptions, DB};
use std::os::unix::fs::MetadataExt;

use tokio::io::{AsyncSeekExt, AsyncWriteExt};

use crate::audit::{Actor, AuditContext, AuditEvent, Described};
use crate::command::{namespace_of, Command, CommandResult, ManifestPut, Proposal, Refusal};
use crate::read::StateReader;
use crate::snapshot;
use crate::store::{
    cf, decode, encode, key2, key3, BlobRecord, ManifestRecord, NamespaceRecord, RepositoryRecord,
    CF_AUDIT, CF_BLOBS, CF_MANIFESTS, CF_MANIFEST_BYTES, CF_NAMESPACES, CF_REFERRERS, CF_REPOS,
    CF_REPO_BLOBS, CF_REQUESTS, CF_REQUESTS_BY_INDEX, CF_SETTINGS, CF_SM_META, CF_TAGS,
    CF_TAGS_BY_DIGEST,
};
use crate::types::{
    Entry, LogId, Snapshot, SnapshotMeta, StorageError, StoredMembership, TypeConfig,
};
use crate::usage::Kind;

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
    volume: Arc<crate::snapshot_policy::LogVolume>,
}

impl StateMachineStore {
    pub(crate) fn new(
        db: Arc<DB>,
        snapshot_dir: PathBuf,
        request_window: u64,
        node_id: u64,
        volume: Arc<crate::snapshot_policy::LogVolume>,
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
        let described = crate::audit::describe(&self.reader, command)?;
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
                crate::audit::log(&event);
                batch.put_cf(
                    cf(&self.db, CF_AUDIT),
                    crate::audit::key(at_ms, at_index, 0),
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
                crate::audit::log(&event);
            }
            let seq = u32::try_from(seq).unwrap_or(u32::MAX);
            batch.put_cf(
                cf(&self.db, CF_AUDIT),
                crate::audit::key(at_ms, index, seq),
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
            crate::audit::Undated {
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

    fn deferred(&self) -> Result<Option<Vec<(u64, crate::audit::Undated)>>, ApplyError> {
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

/// Errors while applying are storage faults (a refusal is a `CommandResult`).
#[derive(Debug, thiserror::Error)]
pub(crate) enum ApplyError {
    #[error(transparent)]
    Read(#[from] crate::read::ReadError),
    #[error("rocksdb: {0}")]
    Db(rocksdb::Error),
    #[error("request record: {0}")]
    Record(serde_json::Error),
}

pub(crate) struct Staged<'a> {
    pub(crate) db: &'a DB,
    pub(crate) reader: &'a StateReader,
    pub(crate) batch: &'a mut WriteBatch,
    /// Audit events of what the command removed as it ran (retention, GC).
    pub(crate) events: Vec<Described>,
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

impl Staged<'_> {
    fn apply(&mut self, cmd: &Command) -> Result<CommandResult, ApplyError> {
        let refused = |r: Refusal| Ok(CommandResult::Refused(r));
        match cmd {
            Command::CreateOrganisation { .. }
            | Command::DeleteOrganisation { .. }
            | Command::SetFeature { .. }
            | Command::CreateProject { .. }
            | Command::DeleteProject { .. }
            | Command::CreateCredential(_)
            | Command::RevokeCredential { .. }
            | Command::AddSigningKey { .. } => {
                if let Err(r) = self.apply_tenancy(cmd)? {
                    return refused(r);
                }
            }
            Command::CreateNamespace {
                name,
                visibility,
                created_at,
                organisation,
                project,
            } => {
                if self.reader.namespace(name)?.is_some() {
                    return refused(Refusal::NamespaceExists(name.clone()));
                }
                if let Some(org) = organisation {
                    if self.reader.organisation(org)?.is_none() {
                        return refused(Refusal::OrganisationUnknown(org.clone()));
                    }
                    if let Some(p) = project {
                        if self.reader.project(org, p)?.is_none() {
                            return refused(Refusal::ProjectUnknown {
                                organisation: org.clone(),
                                project: p.clone(),
                            });
                        }
                    }
                }
                self.put_namespace(NamespaceRecord {
                    name: name.clone(),
                    visibility: *visibility,
                    created_at: *created_at,
                    organisation: organisation.clone(),
                    // A project only means something inside an organisation.
                    project: organisation.as_ref().and(project.clone()),
                    immutable_tags: Vec::new(),
                    quota_bytes: None,
                    retention: None,
                });
            }
            Command::SetNamespaceVisibility { name, visibility } => {
                let Some(mut ns) = self.reader.namespace(name)? else {
                    return refused(Refusal::NamespaceUnknown(name.clone()));
                };
                ns.visibility = *visibility;
                self.put_namespace(ns);
            }
            Command::SetNamespaceLimits {
                name,
                immutable_tags,
                quota_bytes,
            } => {
                let Some(mut ns) = self.reader.namespace(name)? else {
                    return refused(Refusal::NamespaceUnknown(name.clone()));
                };
                ns.immutable_tags = immutable_tags.clone();
                ns.quota_bytes = *quota_bytes;
                self.put_namespace(ns);
            }
            Command::MeterTick { at } => self.meter(*at)?,
            Command::SetRetentionPolicy { namespace, policy } => {
                let Some(mut ns) = self.reader.namespace(namespace)? else {
                    return refused(Refusal::NamespaceUnknown(namespace.clone()));
                };
                ns.retention = policy.clone();
                self.put_namespace(ns);
            }
            Command::StartRetentionRun(run) => {
                if let Err(r) = self.start_retention_run((**run).clone())? {
                    return refused(r);
                }
            }
            Command::RetentionStep {
                namespace,
                id,
                reached,
                at,
            } => self.retention_step(namespace, id, reached, *at)?,
            Command::RecordPulls { pulls } => self.record_pulls(pulls)?,
            Command::SetStorageSettings {
                rebalance_bytes_per_sec,
                gc_grace_secs,
                retention_interval_secs,
            } => {
                let settings = cf(self.db, CF_SETTINGS);
                if let Some(v) = rebalance_bytes_per_sec {
                    self.batch.put_cf(
                        settings,
                        crate::store::KEY_REBALANCE_BYTES_PER_SEC,
                        encode(v),
                    );
                }
                if let Some(v) = gc_grace_secs {
                    self.batch
                        .put_cf(settings, crate::store::KEY_GC_GRACE_SECS, encode(v));
                }
                if let Some(v) = retention_interval_secs {
                    self.batch.put_cf(
                        settings,
                        crate::store::KEY_RETENTION_INTERVAL_SECS,
                        encode(v),
                    );
                }
            }
            Command::SetRateLimits {
                organisation,
                limits,
            } => {
                let settings = cf(self.db, CF_SETTINGS);
                let key = crate::store::rate_limits_key(organisation.as_deref());
                match limits {
                    Some(l) => self.batch.put_cf(settings, key, encode(l)),
                    None => self.batch.delete_cf(settings, key),
                }
            }
            Command::CollectBlobs {
                digests,
                at,
                grace_before,
            } => self.collect_blobs(digests, *at, *grace_before)?,
            // One range delete, whatever the trail holds: listings seek
            // past it from the horizon kept here.
            Command::PruneAudit { before_ms } => {
                let meta = cf(self.db, CF_SM_META);
                let pruned: u64 = match self
                    .db
                    .get_pinned_cf(meta, KEY_AUDIT_PRUNED)
                    .map_err(ApplyError::Db)?
                {
                    Some(b) => decode(&b).map_err(ApplyError::Record)?,
                    None => 0,
                };
                if *before_ms > pruned {
                    self.batch.delete_range_cf(
                        cf(self.db, CF_AUDIT),
                        0u64.to_be_bytes(),
                        before_ms.to_be_bytes(),
                    );
                    self.batch.put_cf(meta, KEY_AUDIT_PRUNED, encode(before_ms));
                }
            }
            // Unwrapped before apply; a wrapper inside a wrapper applies its
            // command like the outer one.
            Command::Audited { command, .. } => return self.apply(command),
            Command::DeleteNamespace { name } => {
                if let Err(r) = self.delete_namespace(name)? {
                    return refused(r);
                }
                self.forget_retention(name)?;
            }
            Command::DeleteRepository { repo } => {
                if !self.reader.repository_exists(repo)? {
                    return refused(Refusal::RepositoryUnknown(repo.clone()));
                }
                for tag in self.reader.tags(repo, None, usize::MAX)?.items {
                    if let Some(r) = self.immutable(repo, &tag)? {
                        return refused(r);
                    }
                }
                self.delete_repository(repo)?;
            }
            Command::CommitBlob {
                repo,
                digest,
                size,
                created_at,
            } => {
                if let Some(r) = self.require_namespace(repo)? {
                    return refused(r);
                }
                let known = self.reader.blob(digest)?;
                let size = known.as_ref().map_or(*size, |b| b.size);
                if let Some(r) = self.link_blob(repo, digest, size, *created_at)? {
                    return refused(r);
                }
                if known.is_none() {
                    let rec = BlobRecord {
                        size,
                        created_at: *created_at,
                    };
                    self.batch
                        .put_cf(cf(self.db, CF_BLOBS), digest, encode(&rec));
                }
            }
            Command::MountBlob {
                repo,
                from,
                digest,
                created_at,
            } => {
                if let Some(r) = self.require_namespace(repo)? {
                    return refused(r);
                }
                let Some(blob) = self.reader.linked_blob(from, digest)? else {
                    return refused(Refusal::BlobUnknown {
                        repo: from.clone(),
                        digest: digest.clone(),
                    });
                };
                if let Some(r) = self.link_blob(repo, digest, blob.size, *created_at)? {
                    return refused(r);
                }
            }
            Command::UnlinkBlob { repo, digest } => {
                let Some(blob) = self.reader.linked_blob(repo, digest)? else {
                    return refused(Refusal::BlobUnknown {
                        repo: repo.clone(),
                        digest: digest.clone(),
                    });
                };
                self.batch
                    .delete_cf(cf(self.db, CF_REPO_BLOBS), key2(repo, digest));
                self.index_link(repo, digest, false);
                let ns = namespace_of(repo);
                let mut u = self.usage(ns)?;
                self.count(&mut u, ns, Kind::Blob, digest, blob.size, -1)?;
                self.put_usage(ns, &u);
            }
            Command::PutManifest(put) => {
                if let Some(r) = self.put_manifest(put)? {
                    return refused(r);
                }
            }
            Command::DeleteManifest { repo, digest } => {
                let Some(rec) = self.reader.manifest_record(repo, digest)? else {
                    return refused(Refusal::ManifestUnknown {
                        repo: repo.clone(),
                        digest: digest.clone(),
                    });
                };
                for tag in self.reader.tags_of_digest(repo, digest)? {
                    if let Some(r) = self.immutable(repo, &tag)? {
                        return refused(r);
                    }
                }
                self.delete_manifest(repo, &rec)?;
            }
            Command::SetReplicationFactor { factor } => {
                self.batch.put_cf(
                    cf(self.db, CF_SETTINGS),
                    crate::store::KEY_REPLICATION_FACTOR,
                    encode(factor),
                );
            }
            Command::DeleteTag { repo, tag } => {
                let Some(digest) = self.reader.tag(repo, tag)? else {
                    return refused(Refusal::TagUnknown {
                        repo: repo.clone(),
                        tag: tag.clone(),
                    });
                };
                if let Some(r) = self.immutable(repo, tag)? {
                    return refused(r);
                }
                self.drop_tag(repo, tag, &digest);
            }
        }
        Ok(CommandResult::Ok)
    }

    fn put_namespace(&mut self, rec: NamespaceRecord) {
        self.batch
            .put_cf(cf(self.db, CF_NAMESPACES), &rec.name, encode(&rec));
    }

    /// The refusal when `tag` of `repo` matches an immutable pattern.
    fn immutable(&self, repo: &str, tag: &str) -> Result<Option<Refusal>, ApplyError> {
        let Some(ns) = self.reader.namespace(namespace_of(repo))? else {
            return Ok(None);
        };
        Ok(ns
            .immutable_tags
            .iter()
            .find(|p| wildmatch::WildMatch::new(p).matches(tag))
            .map(|p| Refusal::TagImmutable {
                repo: repo.to_string(),
                tag: tag.to_string(),
                pattern: p.clone(),
            }))
    }

    /// Everything keyed `repo \0 ...` goes in one range delete per table;
    /// the namespace's usage loses what only this repository held.
    fn delete_repository(&mut self, repo: &str) -> Result<(), ApplyError> {
        let ns = namespace_of(repo);
        let mut u = self.usage(ns)?;
        for digest in self.reader.linked_blobs(repo)? {
            let size = self.reader.blob(&digest)?.map_or(0, |b| b.size);
            self.count(&mut u, ns, Kind::Blob, &digest, size, -1)?;
            self.index_link(repo, &digest, false);
        }
        let mut after: Option<String> = None;
        loop {
            let (page, more) = self.reader.manifests(repo, after.as_deref(), 1000)?;
            for m in &page {
                self.count(&mut u, ns, Kind::Manifest, &m.digest, m.size, -1)?;
                self.index_refs(repo, &m.digest, &m.blobs, false);
            }
            after = page.last().map(|m| m.digest.clone());
            if !more {
                break;
            }
        }
        self.put_usage(ns, &u);
        let from = key2(repo, "");
        let mut to = repo.as_bytes().to_vec();
        to.push(1);
        for table in [
            CF_TAGS,
            CF_TAGS_BY_DIGEST,
            CF_MANIFESTS,
            CF_MANIFEST_BYTES,
            CF_REFERRERS,
            CF_REPO_BLOBS,
            crate::store::CF_TAG_ACTIVITY,
            crate::store::CF_PULLS,
        ] {
            self.batch.delete_range_cf(cf(self.db, table), &from, &to);
        }
        self.batch.delete_cf(cf(self.db, CF_REPOS), repo);
        Ok(())
    }

    fn require_namespace(&self, repo: &str) -> Result<Option<Refusal>, ApplyError> {
        let ns = namespace_of(repo);
        Ok(match self.reader.namespace(ns)? {
            Some(_) => None,
            None => Some(Refusal::NamespaceUnknown(ns.to_string())),
        })
    }

    fn ensure_repository(&mut self, repo: &str, now: u64) -> Result<(), ApplyError> {
        if !self.reader.repository_exists(repo)? {
            let rec = RepositoryRecord {
                name: repo.to_string(),
                created_at: now,
            };
            self.batch.put_cf(cf(self.db, CF_REPOS), repo, encode(&rec));
        }
        Ok(())
    }

    /// Link a committed blob to `repo`, counting it for the namespace; a
    /// refusal (quota) comes before any write.
    fn link_blob(
        &mut self,
        repo: &str,
        digest: &str,
        size: u64,
        now: u64,
    ) -> Result<Option<Refusal>, ApplyError> {
        if self.reader.linked_blob(repo, digest)?.is_some() {
            return Ok(None);
        }
        let ns = namespace_of(repo);
        let mut u = self.usage(ns)?;
        if self.is_new_to(ns, Kind::Blob, digest)? {
            if let Some(r) = self.over_quota(ns, &u, size)? {
                return Ok(Some(r));
            }
        }
        self.ensure_repository(repo, now)?;
        self.batch
            .put_cf(cf(self.db, CF_REPO_BLOBS), key2(repo, digest), b"");
        self.index_link(repo, digest, true);
        self.count(&mut u, ns, Kind::Blob, digest, size, 1)?;
        self.put_usage(ns, &u);
        Ok(None)
    }

    fn put_manifest(&mut self, put: &ManifestPut) -> Result<Option<Refusal>, ApplyError> {
        if let Some(r) = self.require_namespace(&put.repo)? {
            return Ok(Some(r));
        }
        for b in &put.blobs {
            if self.reader.linked_blob(&put.repo, b)?.is_none() {
                return Ok(Some(Refusal::BlobUnknown {
                    repo: put.repo.clone(),
                    digest: b.clone(),
                }));
            }
        }
        for m in &put.manifests {
            if self.reader.manifest_record(&put.repo, m)?.is_none() {
                return Ok(Some(Refusal::ManifestUnknown {
                    repo: put.repo.clone(),
                    digest: m.clone(),
                }));
            }
        }
        if let Some(tag) = &put.tag {
            if self
                .reader
                .tag(&put.repo, tag)?
                .is_some_and(|old| old != put.digest)
            {
                if let Some(r) = self.immutable(&put.repo, tag)? {
                    return Ok(Some(r));
                }
            }
        }
        let ns = namespace_of(&put.repo);
        let size = put.bytes.len() as u64;
        if self
            .reader
            .manifest_record(&put.repo, &put.digest)?
            .is_none()
        {
            let mut u = self.usage(ns)?;
            if self.is_new_to(ns, Kind::Manifest, &put.digest)? {
                if let Some(r) = self.over_quota(ns, &u, size)? {
                    return Ok(Some(r));
                }
            }
            self.count(&mut u, ns, Kind::Manifest, &put.digest, size, 1)?;
            self.put_usage(ns, &u);
        }
        self.ensure_repository(&put.repo, put.pushed_at)?;
        self.index_refs(&put.repo, &put.digest, &put.blobs, true);
        let rec = ManifestRecord {
            digest: put.digest.clone(),
            media_type: put.media_type.clone(),
            size: put.bytes.len() as u64,
            pushed_at: put.pushed_at,
            blobs: put.blobs.clone(),
            manifests: put.manifests.clone(),
            subject: put.subject.clone(),
            artifact_type: put.artifact_type.clone(),
            annotations: put.annotations.clone(),
        };
        let key = key2(&put.repo, &put.digest);
        self.batch
            .put_cf(cf(self.db, CF_MANIFESTS), &key, encode(&rec));
        self.batch
            .put_cf(cf(self.db, CF_MANIFEST_BYTES), &key, &put.bytes);
        if let Some(subject) = &put.subject {
            self.batch.put_cf(
                cf(self.db, CF_REFERRERS),
                key3(&put.repo, subject, &put.digest),
                b"",
            );
        }
        if let Some(tag) = &put.tag {
            if let Some(old) = self.reader.tag(&put.repo, tag)? {
                self.batch
                    .delete_cf(cf(self.db, CF_TAGS_BY_DIGEST), key3(&put.repo, &old, tag));
            }
            self.batch
                .put_cf(cf(self.db, CF_TAGS), key2(&put.repo, tag), &put.digest);
            self.record_tag_push(&put.repo, tag, put.pushed_at)?;
            self.batch.put_cf(
                cf(self.db, CF_TAGS_BY_DIGEST),
                key3(&put.repo, &put.digest, tag),
                b"",
            );
        }
        Ok(None)
    }

    fn delete_manifest(&mut self, repo: &str, rec: &ManifestRecord) -> Result<(), ApplyError> {
        let ns = namespace_of(repo);
        let mut u = self.usage(ns)?;
        self.drop_manifest(repo, rec, &mut u)?;
        self.put_usage(ns, &u);
        Ok(())
    }

    /// Remove a manifest, its referrer entry, its tags and its pull times,
    /// counting it out of `u` (the caller stores `u`).
    pub(crate) fn drop_manifest(
        &mut self,
        repo: &str,
        rec: &ManifestRecord,
        u: &mut crate::usage::NamespaceUsage,
    ) -> Result<(), ApplyError> {
        let ns = namespace_of(repo);
        self.count(u, ns, Kind::Manifest, &rec.digest, rec.size, -1)?;
        self.batch
            .delete_cf(cf(self.db, crate::store::CF_PULLS), key2(repo, &rec.digest));
        self.index_refs(repo, &rec.digest, &rec.blobs, false);
        let key = key2(repo, &rec.digest);
        self.batch.delete_cf(cf(self.db, CF_MANIFESTS), &key);
        self.batch.delete_cf(cf(self.db, CF_MANIFEST_BYTES), &key);
        if let Some(subject) = &rec.subject {
            self.batch
                .delete_cf(cf(self.db, CF_REFERRERS), key3(repo, subject, &rec.digest));
        }
        // Tags pointing at a deleted manifest go with it, as in Distribution.
        for tag in self.reader.tags_of_digest(repo, &rec.digest)? {
            self.drop_tag(repo, &tag, &rec.digest);
        }
        Ok(())
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
