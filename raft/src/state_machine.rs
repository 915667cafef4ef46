//! The metadata state machine: one `apply` with an exhaustive match over
//! `Command`, each arm a small function that reads the current state and
//! stages its writes in one RocksDB batch per log entry.

use std::path::PathBuf;
use std::sync::Arc;

use openraft::storage::RaftStateMachine;
use openraft::{EntryPayload, RaftSnapshotBuilder, StorageIOError};
use rocksdb::{WriteBatch, WriteOptions, DB};

use crate::command::{Command, CommandResult, ManifestPut, Refusal, Visibility};
use crate::read::StateReader;
use crate::snapshot;
use crate::store::{
    cf, encode, key2, key3, BlobRecord, ManifestRecord, NamespaceRecord, RepositoryRecord,
    CF_BLOBS, CF_MANIFESTS, CF_MANIFEST_BYTES, CF_NAMESPACES, CF_REFERRERS, CF_REPOS,
    CF_REPO_BLOBS, CF_SM_META, CF_TAGS, CF_TAGS_BY_DIGEST,
};
use crate::types::{
    Entry, LogId, Snapshot, SnapshotMeta, StorageError, StoredMembership, TypeConfig,
};

pub(crate) const KEY_LAST_APPLIED: &[u8] = b"last_applied";
pub(crate) const KEY_MEMBERSHIP: &[u8] = b"membership";

pub struct StateMachineStore {
    db: Arc<DB>,
    reader: StateReader,
    snapshot_dir: PathBuf,
}

impl StateMachineStore {
    pub(crate) fn new(db: Arc<DB>, snapshot_dir: PathBuf) -> Self {
        StateMachineStore {
            reader: StateReader::new(db.clone()),
            db,
            snapshot_dir,
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
                CommandResult::Ok
            }
            EntryPayload::Normal(cmd) => {
                let staged = Staged {
                    db: &self.db,
                    reader: &self.reader,
                    batch: &mut batch,
                };
                match staged.apply(cmd) {
                    Ok(r) => r,
                    Err(e) => return Err(StorageIOError::apply(entry.log_id, &e).into()),
                }
            }
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

/// Errors while applying are storage faults (a refusal is a `CommandResult`).
#[derive(Debug, thiserror::Error)]
pub(crate) enum ApplyError {
    #[error(transparent)]
    Read(#[from] crate::read::ReadError),
}

struct Staged<'a> {
    db: &'a DB,
    reader: &'a StateReader,
    batch: &'a mut WriteBatch,
}

fn namespace_of(repo: &str) -> &str {
    repo.split('/').next().unwrap_or(repo)
}

impl Staged<'_> {
    fn apply(mut self, cmd: &Command) -> Result<CommandResult, ApplyError> {
        let refused = |r: Refusal| Ok(CommandResult::Refused(r));
        match cmd {
            Command::CreateNamespace {
                name,
                visibility,
                created_at,
            } => {
                if self.reader.namespace(name)?.is_some() {
                    return refused(Refusal::NamespaceExists(name.clone()));
                }
                self.put_namespace(name, *visibility, *created_at);
            }
            Command::SetNamespaceVisibility { name, visibility } => {
                let Some(ns) = self.reader.namespace(name)? else {
                    return refused(Refusal::NamespaceUnknown(name.clone()));
                };
                self.put_namespace(name, *visibility, ns.created_at);
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
                if self.reader.blob(digest)?.is_none() {
                    let rec = BlobRecord {
                        size: *size,
                        created_at: *created_at,
                    };
                    self.batch
                        .put_cf(cf(self.db, CF_BLOBS), digest, encode(&rec));
                }
                self.link_blob(repo, digest, *created_at)?;
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
                if self.reader.linked_blob(from, digest)?.is_none() {
                    return refused(Refusal::BlobUnknown {
                        repo: from.clone(),
                        digest: digest.clone(),
                    });
                }
                self.link_blob(repo, digest, *created_at)?;
            }
            Command::UnlinkBlob { repo, digest } => {
                if self.reader.linked_blob(repo, digest)?.is_none() {
                    return refused(Refusal::BlobUnknown {
                        repo: repo.clone(),
                        digest: digest.clone(),
                    });
                }
                self.batch
                    .delete_cf(cf(self.db, CF_REPO_BLOBS), key2(repo, digest));
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
                self.delete_manifest(repo, &rec)?;
            }
            Command::DeleteTag { repo, tag } => {
                let Some(digest) = self.reader.tag(repo, tag)? else {
                    return refused(Refusal::TagUnknown {
                        repo: repo.clone(),
                        tag: tag.clone(),
                    });
                };
                self.batch.delete_cf(cf(self.db, CF_TAGS), key2(repo, tag));
                self.batch
                    .delete_cf(cf(self.db, CF_TAGS_BY_DIGEST), key3(repo, &digest, tag));
            }
        }
        Ok(CommandResult::Ok)
    }

    fn put_namespace(&mut self, name: &str, visibility: Visibility, created_at: u64) {
        let rec = NamespaceRecord {
            name: name.to_string(),
            visibility,
            created_at,
        };
        self.batch
            .put_cf(cf(self.db, CF_NAMESPACES), name, encode(&rec));
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

    fn link_blob(&mut self, repo: &str, digest: &str, now: u64) -> Result<(), ApplyError> {
        self.ensure_repository(repo, now)?;
        self.batch
            .put_cf(cf(self.db, CF_REPO_BLOBS), key2(repo, digest), b"");
        Ok(())
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
        self.ensure_repository(&put.repo, put.pushed_at)?;
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
            self.batch.put_cf(
                cf(self.db, CF_TAGS_BY_DIGEST),
                key3(&put.repo, &put.digest, tag),
                b"",
            );
        }
        Ok(None)
    }

    fn delete_manifest(&mut self, repo: &str, rec: &ManifestRecord) -> Result<(), ApplyError> {
        let key = key2(repo, &rec.digest);
        self.batch.delete_cf(cf(self.db, CF_MANIFESTS), &key);
        self.batch.delete_cf(cf(self.db, CF_MANIFEST_BYTES), &key);
        if let Some(subject) = &rec.subject {
            self.batch
                .delete_cf(cf(self.db, CF_REFERRERS), key3(repo, subject, &rec.digest));
        }
        // Tags pointing at a deleted manifest go with it, as in Distribution.
        for tag in self.reader.tags_of_digest(repo, &rec.digest)? {
            self.batch.delete_cf(cf(self.db, CF_TAGS), key2(repo, &tag));
            self.batch.delete_cf(
                cf(self.db, CF_TAGS_BY_DIGEST),
                key3(repo, &rec.digest, &tag),
            );
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
        snapshot::Builder::new(self.db.clone(), self.snapshot_dir.clone())
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<std::io::Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(std::io::Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<std::io::Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let data = snapshot.into_inner();
        snapshot::install(&self.db, &data)
            .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &e))?;
        snapshot::save(&self.snapshot_dir, meta, &data)
            .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &e))?;
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, StorageError> {
        snapshot::load(&self.snapshot_dir)
            .map_err(|e| StorageIOError::read_snapshot(None, &e).into())
    }
}

impl RaftSnapshotBuilder<TypeConfig> for snapshot::Builder {
    async fn build_snapshot(&mut self) -> Result<Snapshot, StorageError> {
        self.build()
            .map_err(|e| StorageIOError::write_snapshot(None, &e).into())
    }
}
