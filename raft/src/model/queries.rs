//! Queries over the applied state. Reads go straight to RocksDB; callers
//! decide how fresh they must be (see `tcr-node`'s read-index path).

use std::sync::Arc;

use rocksdb::{Direction, IteratorMode, DB};
use sha2::{Digest, Sha256};

use crate::consensus::types::{LogId, StoredMembership};
use crate::model::tenancy::{
    CredentialRecord, OrganisationRecord, ProjectRecord, SigningKeyRecord,
};
use crate::state_machine::{KEY_LAST_APPLIED, KEY_MEMBERSHIP};
use crate::store::{
    cf, decode, key2, BlobRecord, ManifestRecord, NamespaceRecord, RepositoryRecord, CF_BLOBS,
    CF_CREDENTIALS, CF_CREDENTIALS_BY_ORG, CF_MANIFESTS, CF_MANIFEST_BYTES, CF_NAMESPACES, CF_ORGS,
    CF_PROJECTS, CF_REFERRERS, CF_REPOS, CF_REPO_BLOBS, CF_REQUESTS, CF_REQUESTS_BY_INDEX,
    CF_SETTINGS, CF_SIGNING_KEYS, CF_SM_META, CF_TAGS, CF_TAGS_BY_DIGEST, SM_CFS,
};

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("rocksdb: {0}")]
    RocksDb(#[from] rocksdb::Error),
    #[error("corrupt record: {0}")]
    Decode(#[from] serde_json::Error),
}

/// A page of names in key order, and whether more follow.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Page {
    pub items: Vec<String>,
    pub more: bool,
}

/// The smallest key after every key that starts with `prefix` (None: no
/// such key, the prefix is empty or all 0xff).
pub(crate) fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

#[derive(Clone)]
pub struct StateReader {
    db: Arc<DB>,
}

impl StateReader {
    pub(crate) fn db(&self) -> &DB {
        &self.db
    }

    pub(crate) fn new(db: Arc<DB>) -> Self {
        StateReader { db }
    }

    pub(crate) fn get<T: for<'de> serde::Deserialize<'de>>(
        &self,
        table: &str,
        key: impl AsRef<[u8]>,
    ) -> Result<Option<T>, ReadError> {
        match self.db.get_pinned_cf(cf(&self.db, table), key)? {
            Some(b) => Ok(Some(decode(&b)?)),
            None => Ok(None),
        }
    }

    pub fn last_applied(&self) -> Result<Option<LogId>, ReadError> {
        Ok(self
            .get::<Option<LogId>>(CF_SM_META, KEY_LAST_APPLIED)?
            .flatten())
    }

    pub fn membership(&self) -> Result<StoredMembership, ReadError> {
        Ok(self.get(CF_SM_META, KEY_MEMBERSHIP)?.unwrap_or_default())
    }

    /// The replication factor set with `tcr cluster set`, if any (else the
    /// default for the membership applies).
    pub fn replication_factor(&self) -> Result<Option<u32>, ReadError> {
        self.get(CF_SETTINGS, crate::store::KEY_REPLICATION_FACTOR)
    }

    /// Repair and rebalance bandwidth set with `tcr cluster set`, if any.
    pub fn rebalance_bytes_per_sec(&self) -> Result<Option<u64>, ReadError> {
        self.get(CF_SETTINGS, crate::store::KEY_REBALANCE_BYTES_PER_SEC)
    }

    /// Garbage collection grace period set with `tcr cluster set`, if any.
    pub fn retention_interval_secs(&self) -> Result<Option<u64>, ReadError> {
        self.get(CF_SETTINGS, crate::store::KEY_RETENTION_INTERVAL_SECS)
    }

    pub fn retention_last_scheduled(&self) -> Result<Option<u64>, ReadError> {
        self.get(CF_SETTINGS, crate::store::KEY_RETENTION_LAST_SCHEDULED)
    }

    /// Rate limits set for `organisation`, or the cluster's (None).
    pub fn rate_limits(
        &self,
        organisation: Option<&str>,
    ) -> Result<Option<crate::model::command::RateLimits>, ReadError> {
        self.get(CF_SETTINGS, crate::store::rate_limits_key(organisation))
    }

    pub fn gc_grace_secs(&self) -> Result<Option<u64>, ReadError> {
        self.get(CF_SETTINGS, crate::store::KEY_GC_GRACE_SECS)
    }

    pub fn namespace(&self, name: &str) -> Result<Option<NamespaceRecord>, ReadError> {
        self.get(CF_NAMESPACES, name)
    }

    pub fn namespaces(
        &self,
        after: Option<&str>,
        n: usize,
    ) -> Result<Vec<NamespaceRecord>, ReadError> {
        let names = self.scan_names(CF_NAMESPACES, b"", after.unwrap_or(""), n)?;
        names
            .items
            .iter()
            .filter_map(|name| self.namespace(name).transpose())
            .collect()
    }

    /// Every namespace (tenancy checks scan them; namespaces number in the
    /// thousands at most, one per team).
    pub fn all_namespaces(&self) -> Result<Vec<NamespaceRecord>, ReadError> {
        self.values(CF_NAMESPACES, b"")
    }

    /// Whether any manifest references blob `digest`.
    pub fn blob_referenced(&self, digest: &str) -> Result<bool, ReadError> {
        let prefix = key2(digest, "");
        Ok(!self
            .scan_names(crate::store::CF_BLOB_REFS, &prefix, "", 1)?
            .items
            .is_empty())
    }

    /// Repositories blob `digest` is linked to.
    pub fn blob_links(&self, digest: &str) -> Result<Vec<String>, ReadError> {
        Ok(self
            .scan_names(
                crate::store::CF_BLOB_LINKS,
                &key2(digest, ""),
                "",
                usize::MAX,
            )?
            .items)
    }

    /// The last garbage collection, if any ran.
    pub fn gc_last(&self) -> Result<Option<crate::model::gc::GcRun>, ReadError> {
        self.get(crate::store::CF_SETTINGS, crate::model::gc::KEY_GC_LAST)
    }

    pub fn namespace_usage(
        &self,
        ns: &str,
    ) -> Result<Option<crate::model::usage::NamespaceUsage>, ReadError> {
        self.get(crate::store::CF_NS_USAGE, ns)
    }

    /// Whether console session `id` was signed out (and could still verify).
    pub fn session_ended(&self, id: &str) -> Result<bool, ReadError> {
        Ok(self
            .db
            .get_pinned_cf(cf(&self.db, crate::store::CF_ENDED_SESSIONS), id)?
            .is_some())
    }

    /// A namespace's daily usage samples from day `from` (days since the
    /// epoch) on, oldest first.
    pub fn namespace_usage_days(
        &self,
        ns: &str,
        from: u64,
    ) -> Result<Vec<crate::model::usage::UsageSample>, ReadError> {
        let prefix = key2(ns, "");
        let start = crate::model::usage::day_key(ns, from);
        let mut out = Vec::new();
        for item in self.prefix_iter(crate::store::CF_NS_USAGE_DAYS, &prefix, &start) {
            let (_, v) = item?;
            out.push(decode(&v)?);
        }
        Ok(out)
    }

    pub fn organisation(&self, name: &str) -> Result<Option<OrganisationRecord>, ReadError> {
        self.get(CF_ORGS, name)
    }

    pub fn organisations(&self) -> Result<Vec<OrganisationRecord>, ReadError> {
        self.values(CF_ORGS, b"")
    }

    pub fn project(&self, org: &str, name: &str) -> Result<Option<ProjectRecord>, ReadError> {
        self.get(CF_PROJECTS, key2(org, name))
    }

    pub fn projects(&self, org: &str) -> Result<Vec<ProjectRecord>, ReadError> {
        self.values(CF_PROJECTS, &key2(org, ""))
    }

    pub fn credential(&self, id: &str) -> Result<Option<CredentialRecord>, ReadError> {
        self.get(CF_CREDENTIALS, id)
    }

    /// The credentials of one organisation, by name.
    pub fn credentials(&self, org: &str) -> Result<Vec<CredentialRecord>, ReadError> {
        let ids = self.scan_names(CF_CREDENTIALS_BY_ORG, &key2(org, ""), "", usize::MAX)?;
        let mut out = Vec::with_capacity(ids.items.len());
        for name in ids.items {
            let id = self
                .db
                .get_pinned_cf(cf(&self.db, CF_CREDENTIALS_BY_ORG), key2(org, &name))?;
            if let Some(id) = id {
                if let Some(c) = self.credential(&String::from_utf8_lossy(&id))? {
                    out.push(c);
                }
            }
        }
        Ok(out)
    }

    pub fn signing_keys(&self) -> Result<Vec<SigningKeyRecord>, ReadError> {
        self.values(CF_SIGNING_KEYS, b"")
    }

    fn values<T: for<'de> serde::Deserialize<'de>>(
        &self,
        table: &str,
        prefix: &[u8],
    ) -> Result<Vec<T>, ReadError> {
        let it = self.prefix_iter(table, prefix, prefix);
        let mut out = Vec::new();
        for item in it {
            let (k, v) = item?;
            if !k.starts_with(prefix) {
                break;
            }
            out.push(decode(&v)?);
        }
        Ok(out)
    }

    pub fn repository(&self, repo: &str) -> Result<Option<RepositoryRecord>, ReadError> {
        self.get(CF_REPOS, repo)
    }

    pub fn repository_exists(&self, repo: &str) -> Result<bool, ReadError> {
        Ok(self
            .db
            .get_pinned_cf(cf(&self.db, CF_REPOS), repo)?
            .is_some())
    }

    pub fn blob(&self, digest: &str) -> Result<Option<BlobRecord>, ReadError> {
        self.get(CF_BLOBS, digest)
    }

    /// Committed blob digests in order, `n` at a time after `after`.
    pub fn blob_digests(&self, after: Option<&str>, n: usize) -> Result<Page, ReadError> {
        self.scan_names(CF_BLOBS, b"", after.unwrap_or(""), n)
    }

    /// The blob's record if it is committed and linked to `repo`.
    pub fn linked_blob(&self, repo: &str, digest: &str) -> Result<Option<BlobRecord>, ReadError> {
        if self
            .db
            .get_pinned_cf(cf(&self.db, CF_REPO_BLOBS), key2(repo, digest))?
            .is_none()
        {
            return Ok(None);
        }
        self.blob(digest)
    }

    pub fn tag(&self, repo: &str, tag: &str) -> Result<Option<String>, ReadError> {
        Ok(self
            .db
            .get_pinned_cf(cf(&self.db, CF_TAGS), key2(repo, tag))?
            .map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    pub fn manifest_record(
        &self,
        repo: &str,
        digest: &str,
    ) -> Result<Option<ManifestRecord>, ReadError> {
        self.get(CF_MANIFESTS, key2(repo, digest))
    }

    pub fn manifest_bytes(&self, repo: &str, digest: &str) -> Result<Option<Vec<u8>>, ReadError> {
        Ok(self
            .db
            .get_cf(cf(&self.db, CF_MANIFEST_BYTES), key2(repo, digest))?)
    }

    /// Tags of `repo` in lexical order after `last`: a range scan, so a page
    /// costs the same however many tags the repository has.
    pub fn tags(&self, repo: &str, last: Option<&str>, n: usize) -> Result<Page, ReadError> {
        let mut prefix = repo.as_bytes().to_vec();
        prefix.push(0);
        self.scan_names(CF_TAGS, &prefix, last.unwrap_or(""), n)
    }

    /// Up to `n` tags of `repo` that start with `name_prefix`, in order
    /// after `last`: the scan covers that key range only, however many
    /// tags sort before or after it.
    pub fn tags_with_prefix(
        &self,
        repo: &str,
        name_prefix: &str,
        last: Option<&str>,
        n: usize,
    ) -> Result<Page, ReadError> {
        let after = match last {
            None => "",
            Some(l) => match l.strip_prefix(name_prefix) {
                Some(rest) => rest,
                // Before the range: start at its beginning.
                None if l < name_prefix => "",
                // Past it: nothing more.
                None => {
                    return Ok(Page {
                        items: Vec::new(),
                        more: false,
                    })
                }
            },
        };
        let mut prefix = repo.as_bytes().to_vec();
        prefix.push(0);
        prefix.extend_from_slice(name_prefix.as_bytes());
        let mut page = self.scan_names(CF_TAGS, &prefix, after, n)?;
        for t in &mut page.items {
            t.insert_str(0, name_prefix);
        }
        Ok(page)
    }

    pub fn tags_of_digest(&self, repo: &str, digest: &str) -> Result<Vec<String>, ReadError> {
        let mut prefix = key2(repo, digest);
        prefix.push(0);
        Ok(self
            .scan_names(CF_TAGS_BY_DIGEST, &prefix, "", usize::MAX)?
            .items)
    }

    /// Repositories in lexical order after `last`, optionally only those
    /// under `namespace/`.
    pub fn repositories(
        &self,
        namespace: Option<&str>,
        last: Option<&str>,
        n: usize,
    ) -> Result<Page, ReadError> {
        match namespace {
            None => self.scan_names(CF_REPOS, b"", last.unwrap_or(""), n),
            Some(ns) => {
                let prefix = format!("{ns}/");
                let mut page = self.scan_names(
                    CF_REPOS,
                    prefix.as_bytes(),
                    last.and_then(|l| l.strip_prefix(&prefix)).unwrap_or(""),
                    n,
                )?;
                for item in &mut page.items {
                    item.insert_str(0, &prefix);
                }
                Ok(page)
            }
        }
    }

    /// Manifest records of `repo` in digest order after `after`.
    pub fn manifests(
        &self,
        repo: &str,
        after: Option<&str>,
        n: usize,
    ) -> Result<(Vec<ManifestRecord>, bool), ReadError> {
        let page = self.scan_names(CF_MANIFESTS, &key2(repo, ""), after.unwrap_or(""), n)?;
        let mut out = Vec::with_capacity(page.items.len());
        for d in &page.items {
            if let Some(m) = self.manifest_record(repo, d)? {
                out.push(m);
            }
        }
        Ok((out, page.more))
    }

    /// Digests of the blobs linked to `repo`.
    pub fn linked_blobs(&self, repo: &str) -> Result<Vec<String>, ReadError> {
        Ok(self
            .scan_names(CF_REPO_BLOBS, &key2(repo, ""), "", usize::MAX)?
            .items)
    }

    /// Up to `n` digests of the manifests in `repo` whose subject is
    /// `subject`, in digest order after `after`.
    pub fn referrers(
        &self,
        repo: &str,
        subject: &str,
        after: Option<&str>,
        n: usize,
    ) -> Result<Page, ReadError> {
        let mut prefix = key2(repo, subject);
        prefix.push(0);
        self.scan_names(CF_REFERRERS, &prefix, after.unwrap_or(""), n)
    }

    /// Up to `n` key suffixes (after `prefix`) strictly greater than `after`.
    fn scan_names(
        &self,
        table: &str,
        prefix: &[u8],
        after: &str,
        n: usize,
    ) -> Result<Page, ReadError> {
        let mut start = prefix.to_vec();
        start.extend_from_slice(after.as_bytes());
        if !after.is_empty() {
            // The smallest key strictly after `prefix+after`.
            start.push(0);
        }
        let it = self.prefix_iter(table, prefix, &start);
        let mut items = Vec::new();
        for item in it {
            let (k, _) = item?;
            let Some(rest) = k.strip_prefix(prefix) else {
                break;
            };
            if items.len() >= n {
                return Ok(Page { items, more: true });
            }
            items.push(String::from_utf8_lossy(rest).into_owned());
        }
        Ok(Page { items, more: false })
    }

    /// Keys of `table` from `start` on, ending where `prefix` ends: an
    /// iterator with no upper bound would step over every deleted key
    /// after the prefix, up to the next live one, before it could stop.
    pub(crate) fn prefix_iter(
        &self,
        table: &str,
        prefix: &[u8],
        start: &[u8],
    ) -> rocksdb::DBIteratorWithThreadMode<'_, DB> {
        let mut opts = rocksdb::ReadOptions::default();
        if let Some(end) = prefix_end(prefix) {
            opts.set_iterate_upper_bound(end);
        }
        self.db.iterator_cf_opt(
            cf(&self.db, table),
            opts,
            IteratorMode::From(start, Direction::Forward),
        )
    }

    /// SHA-256 over every data table in key order (Raft bookkeeping excluded):
    /// two replicas that applied the same commands have the same digest.
    pub fn state_digest(&self) -> Result<String, ReadError> {
        self.digest_of(|t| t != CF_SM_META)
    }

    /// The digest of what users see: the state without the request ids the
    /// state machine remembers to apply retried proposals once, and without
    /// the audit trail (which names log positions).
    pub fn content_digest(&self) -> Result<String, ReadError> {
        self.digest_of(|t| {
            ![
                CF_SM_META,
                CF_REQUESTS,
                CF_REQUESTS_BY_INDEX,
                crate::store::CF_AUDIT,
            ]
            .contains(&t)
        })
    }

    fn digest_of(&self, include: impl Fn(&str) -> bool) -> Result<String, ReadError> {
        let mut h = Sha256::new();
        for table in SM_CFS.iter().filter(|t| include(t)) {
            h.update(table.as_bytes());
            for item in self
                .db
                .iterator_cf(cf(&self.db, table), IteratorMode::Start)
            {
                let (k, v) = item?;
                h.update((k.len() as u64).to_be_bytes());
                h.update(&k);
                h.update((v.len() as u64).to_be_bytes());
                h.update(&v);
            }
        }
        Ok(hex::encode(h.finalize()))
    }
}
