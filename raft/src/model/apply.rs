//! How a command changes the registry's state: one exhaustive match over
//! `Command` that hands each command to one small function. Each reads the
//! current state and stages its writes in the entry's RocksDB batch; a
//! refusal writes nothing and is the command's answer, not a fault.

use rocksdb::{WriteBatch, DB};

use crate::model::audit::Described;
use crate::model::command::{Command, CommandResult, Refusal, Visibility};
use crate::model::queries::StateReader;
use crate::model::retention::RetentionPolicy;
use crate::state_machine::KEY_AUDIT_PRUNED;
use crate::store::{cf, decode, encode, NamespaceRecord, CF_AUDIT, CF_SETTINGS, CF_SM_META};

/// Errors while applying are storage faults (a refusal is a `CommandResult`).
#[derive(Debug, thiserror::Error)]
pub(crate) enum ApplyError {
    #[error(transparent)]
    Read(#[from] crate::model::queries::ReadError),
    #[error("rocksdb: {0}")]
    Db(rocksdb::Error),
    #[error("request record: {0}")]
    Record(serde_json::Error),
}

/// One command's view of the state and its pending writes.
pub(crate) struct Staged<'a> {
    pub(crate) db: &'a DB,
    pub(crate) reader: &'a StateReader,
    pub(crate) batch: &'a mut WriteBatch,
    /// Audit events of what the command removed as it ran (retention, GC).
    pub(crate) events: Vec<Described>,
}

/// Applied, or refused with the reason.
pub(crate) type Outcome = Result<(), Refusal>;

impl Staged<'_> {
    pub(crate) fn apply(&mut self, cmd: &Command) -> Result<CommandResult, ApplyError> {
        let outcome = match cmd {
            Command::CreateOrganisation { .. }
            | Command::DeleteOrganisation { .. }
            | Command::SetFeature { .. }
            | Command::CreateProject { .. }
            | Command::DeleteProject { .. }
            | Command::CreateCredential(_)
            | Command::RevokeCredential { .. }
            | Command::AddSigningKey { .. } => self.apply_tenancy(cmd)?,
            Command::CreateNamespace {
                name,
                visibility,
                created_at,
                organisation,
                project,
            } => self.create_namespace(
                name,
                *visibility,
                *created_at,
                organisation.as_deref(),
                project.as_deref(),
            )?,
            Command::SetNamespaceVisibility { name, visibility } => {
                self.update_namespace(name, |ns| ns.visibility = *visibility)?
            }
            Command::SetNamespaceLimits {
                name,
                immutable_tags,
                quota_bytes,
            } => self.update_namespace(name, |ns| {
                ns.immutable_tags = immutable_tags.clone();
                ns.quota_bytes = *quota_bytes;
            })?,
            Command::SetRetentionPolicy { namespace, policy } => {
                self.set_retention_policy(namespace, policy)?
            }
            Command::DeleteNamespace { name } => self.delete_namespace_and_policy(name)?,
            Command::DeleteRepository { repo } => self.delete_repository_unless_immutable(repo)?,
            Command::CommitBlob {
                repo,
                digest,
                size,
                created_at,
            } => self.commit_blob(repo, digest, *size, *created_at)?,
            Command::MountBlob {
                repo,
                from,
                digest,
                created_at,
            } => self.mount_blob(repo, from, digest, *created_at)?,
            Command::UnlinkBlob { repo, digest } => self.unlink_blob(repo, digest)?,
            Command::PutManifest(put) => self.put_manifest(put)?.map_or(Ok(()), Err),
            Command::DeleteManifest { repo, digest } => {
                self.delete_manifest_unless_immutable(repo, digest)?
            }
            Command::DeleteTag { repo, tag } => self.delete_tag(repo, tag)?,
            Command::MeterTick { at } => self.meter(*at).map(Ok)?,
            Command::StartRetentionRun(run) => self.start_retention_run((**run).clone())?,
            Command::RetentionStep {
                namespace,
                id,
                reached,
                at,
            } => self.retention_step(namespace, id, reached, *at).map(Ok)?,
            Command::RecordPulls { pulls } => self.record_pulls(pulls).map(Ok)?,
            Command::CollectBlobs {
                digests,
                at,
                grace_before,
            } => self.collect_blobs(digests, *at, *grace_before).map(Ok)?,
            Command::SetStorageSettings {
                rebalance_bytes_per_sec,
                gc_grace_secs,
                retention_interval_secs,
            } => {
                self.set_storage_settings(
                    *rebalance_bytes_per_sec,
                    *gc_grace_secs,
                    *retention_interval_secs,
                );
                Ok(())
            }
            Command::SetRateLimits {
                organisation,
                limits,
            } => {
                let key = crate::store::rate_limits_key(organisation.as_deref());
                self.put_setting(&key, limits.as_ref());
                Ok(())
            }
            Command::SetReplicationFactor { factor } => {
                self.put_setting(
                    crate::store::KEY_REPLICATION_FACTOR.as_bytes(),
                    Some(factor),
                );
                Ok(())
            }
            Command::PruneAudit { before_ms } => self.prune_audit(*before_ms).map(Ok)?,
            Command::EndSession { id, at, until } => self.end_session(id, *at, *until).map(Ok)?,
            // Unwrapped before apply; a wrapper inside a wrapper applies its
            // command like the outer one.
            Command::Audited { command, .. } => return self.apply(command),
        };
        Ok(match outcome {
            Ok(()) => CommandResult::Ok,
            Err(r) => CommandResult::Refused(r),
        })
    }

    fn create_namespace(
        &mut self,
        name: &str,
        visibility: Visibility,
        created_at: u64,
        organisation: Option<&str>,
        project: Option<&str>,
    ) -> Result<Outcome, ApplyError> {
        if self.reader.namespace(name)?.is_some() {
            return Ok(Err(Refusal::NamespaceExists(name.to_string())));
        }
        if let Some(org) = organisation {
            if self.reader.organisation(org)?.is_none() {
                return Ok(Err(Refusal::OrganisationUnknown(org.to_string())));
            }
            if let Some(p) = project {
                if self.reader.project(org, p)?.is_none() {
                    return Ok(Err(Refusal::ProjectUnknown {
                        organisation: org.to_string(),
                        project: p.to_string(),
                    }));
                }
            }
        }
        self.put_namespace(NamespaceRecord {
            name: name.to_string(),
            visibility,
            created_at,
            organisation: organisation.map(str::to_string),
            // A project only means something inside an organisation.
            project: organisation.and(project).map(str::to_string),
            immutable_tags: Vec::new(),
            quota_bytes: None,
            retention: None,
        });
        Ok(Ok(()))
    }

    /// Change an existing namespace's record.
    fn update_namespace(
        &mut self,
        name: &str,
        change: impl FnOnce(&mut NamespaceRecord),
    ) -> Result<Outcome, ApplyError> {
        let Some(mut ns) = self.reader.namespace(name)? else {
            return Ok(Err(Refusal::NamespaceUnknown(name.to_string())));
        };
        change(&mut ns);
        self.put_namespace(ns);
        Ok(Ok(()))
    }

    fn set_retention_policy(
        &mut self,
        namespace: &str,
        policy: &Option<RetentionPolicy>,
    ) -> Result<Outcome, ApplyError> {
        self.update_namespace(namespace, |ns| ns.retention = policy.clone())
    }

    fn delete_namespace_and_policy(&mut self, name: &str) -> Result<Outcome, ApplyError> {
        if let Err(r) = self.delete_namespace(name)? {
            return Ok(Err(r));
        }
        self.forget_retention(name)?;
        Ok(Ok(()))
    }

    fn set_storage_settings(
        &mut self,
        rebalance_bytes_per_sec: Option<u64>,
        gc_grace_secs: Option<u64>,
        retention_interval_secs: Option<u64>,
    ) {
        let keys = [
            (
                crate::store::KEY_REBALANCE_BYTES_PER_SEC,
                rebalance_bytes_per_sec,
            ),
            (crate::store::KEY_GC_GRACE_SECS, gc_grace_secs),
            (
                crate::store::KEY_RETENTION_INTERVAL_SECS,
                retention_interval_secs,
            ),
        ];
        // A setting left out of the command stays as it is.
        for (key, value) in keys {
            if let Some(v) = value {
                self.batch.put_cf(cf(self.db, CF_SETTINGS), key, encode(&v));
            }
        }
    }

    /// Set (`Some`) or clear (`None`) one replicated setting.
    fn put_setting<T: serde::Serialize>(&mut self, key: &[u8], value: Option<&T>) {
        let settings = cf(self.db, CF_SETTINGS);
        match value {
            Some(v) => self.batch.put_cf(settings, key, encode(v)),
            None => self.batch.delete_cf(settings, key),
        }
    }

    /// One range delete, whatever the trail holds: listings seek past it
    /// from the horizon kept here.
    fn prune_audit(&mut self, before_ms: u64) -> Result<(), ApplyError> {
        let meta = cf(self.db, CF_SM_META);
        let pruned: u64 = match self
            .db
            .get_pinned_cf(meta, KEY_AUDIT_PRUNED)
            .map_err(ApplyError::Db)?
        {
            Some(b) => decode(&b).map_err(ApplyError::Record)?,
            None => 0,
        };
        if before_ms > pruned {
            self.batch.delete_range_cf(
                cf(self.db, CF_AUDIT),
                0u64.to_be_bytes(),
                before_ms.to_be_bytes(),
            );
            self.batch
                .put_cf(meta, KEY_AUDIT_PRUNED, encode(&before_ms));
        }
        Ok(())
    }
}
