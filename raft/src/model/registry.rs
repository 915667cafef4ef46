//! Namespaces, repositories, blobs, manifests and tags: the registry's own
//! records, their indexes and the namespace's usage, kept in step in one
//! batch.

use crate::model::apply::{ApplyError, Outcome, Staged};
use crate::model::command::{namespace_of, ManifestPut, Refusal};
use crate::model::usage::Kind;
use crate::store::{
    cf, encode, key2, key3, BlobRecord, ManifestRecord, NamespaceRecord, RepositoryRecord,
    CF_BLOBS, CF_MANIFESTS, CF_MANIFEST_BYTES, CF_NAMESPACES, CF_REFERRERS, CF_REPOS,
    CF_REPO_BLOBS, CF_TAGS, CF_TAGS_BY_DIGEST,
};

impl Staged<'_> {
    pub(crate) fn delete_repository_unless_immutable(
        &mut self,
        repo: &str,
    ) -> Result<Outcome, ApplyError> {
        if !self.reader.repository_exists(repo)? {
            return Ok(Err(Refusal::RepositoryUnknown(repo.to_string())));
        }
        for tag in self.reader.tags(repo, None, usize::MAX)?.items {
            if let Some(r) = self.immutable(repo, &tag)? {
                return Ok(Err(r));
            }
        }
        self.delete_repository(repo)?;
        Ok(Ok(()))
    }

    pub(crate) fn commit_blob(
        &mut self,
        repo: &str,
        digest: &str,
        size: u64,
        created_at: u64,
    ) -> Result<Outcome, ApplyError> {
        if let Some(r) = self.require_namespace(repo)? {
            return Ok(Err(r));
        }
        let known = self.reader.blob(digest)?;
        let size = known.as_ref().map_or(size, |b| b.size);
        if let Some(r) = self.link_blob(repo, digest, size, created_at)? {
            return Ok(Err(r));
        }
        if known.is_none() {
            let rec = BlobRecord { size, created_at };
            self.batch
                .put_cf(cf(self.db, CF_BLOBS), digest, encode(&rec));
        }
        Ok(Ok(()))
    }

    pub(crate) fn mount_blob(
        &mut self,
        repo: &str,
        from: &str,
        digest: &str,
        created_at: u64,
    ) -> Result<Outcome, ApplyError> {
        if let Some(r) = self.require_namespace(repo)? {
            return Ok(Err(r));
        }
        let Some(blob) = self.reader.linked_blob(from, digest)? else {
            return Ok(Err(Refusal::BlobUnknown {
                repo: from.to_string(),
                digest: digest.to_string(),
            }));
        };
        if let Some(r) = self.link_blob(repo, digest, blob.size, created_at)? {
            return Ok(Err(r));
        }
        Ok(Ok(()))
    }

    pub(crate) fn unlink_blob(&mut self, repo: &str, digest: &str) -> Result<Outcome, ApplyError> {
        let Some(blob) = self.reader.linked_blob(repo, digest)? else {
            return Ok(Err(Refusal::BlobUnknown {
                repo: repo.to_string(),
                digest: digest.to_string(),
            }));
        };
        self.batch
            .delete_cf(cf(self.db, CF_REPO_BLOBS), key2(repo, digest));
        self.index_link(repo, digest, false);
        let ns = namespace_of(repo);
        let mut u = self.usage(ns)?;
        self.count(&mut u, ns, Kind::Blob, digest, blob.size, -1)?;
        self.put_usage(ns, &u);
        Ok(Ok(()))
    }

    pub(crate) fn delete_manifest_unless_immutable(
        &mut self,
        repo: &str,
        digest: &str,
    ) -> Result<Outcome, ApplyError> {
        let Some(rec) = self.reader.manifest_record(repo, digest)? else {
            return Ok(Err(Refusal::ManifestUnknown {
                repo: repo.to_string(),
                digest: digest.to_string(),
            }));
        };
        for tag in self.reader.tags_of_digest(repo, digest)? {
            if let Some(r) = self.immutable(repo, &tag)? {
                return Ok(Err(r));
            }
        }
        self.delete_manifest(repo, &rec)?;
        Ok(Ok(()))
    }

    pub(crate) fn delete_tag(&mut self, repo: &str, tag: &str) -> Result<Outcome, ApplyError> {
        let Some(digest) = self.reader.tag(repo, tag)? else {
            return Ok(Err(Refusal::TagUnknown {
                repo: repo.to_string(),
                tag: tag.to_string(),
            }));
        };
        if let Some(r) = self.immutable(repo, tag)? {
            return Ok(Err(r));
        }
        self.drop_tag(repo, tag, &digest);
        Ok(Ok(()))
    }

    pub(crate) fn put_namespace(&mut self, rec: NamespaceRecord) {
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

    pub(crate) fn put_manifest(
        &mut self,
        put: &ManifestPut,
    ) -> Result<Option<Refusal>, ApplyError> {
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
        u: &mut crate::model::usage::NamespaceUsage,
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
