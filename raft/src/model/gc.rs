//! Online garbage collection of blobs, the state machine's half.
//!
//! Two indexes make "is this blob still needed" a prefix lookup:
//! `blob_refs` (digest, repository, manifest) for every manifest that
//! references a blob, and `blob_links` (digest, repository) for every
//! repository it is linked to.
//!
//! Why collection is safe against a concurrent push (invariant 4): the
//! leader proposes `CollectBlobs` for blobs that, in the state it read,
//! no manifest referenced and that were older than the grace period. The
//! state machine checks both again when it applies the command, in log
//! order with every `PutManifest`:
//! - a manifest committed before the collection references the blob, so
//!   the blob is kept (the leader's earlier reading does not matter);
//! - a manifest proposed after it finds the blob record gone and is refused
//!   with MANIFEST_BLOB_UNKNOWN; the client uploads the blob again. No
//!   committed manifest ever points at a collected blob.
//!
//! Uploads in progress are protected by the grace period: a blob committed
//! less than the grace period ago is never collected. A node deletes a
//! local file without a record at its next sweep, unless an upload wrote
//! it, found it already there (a re-upload after a collection) or held it
//! within its own grace (`--orphan-grace-secs`; see
//! `tcr_storage::BlobStore::remove_unclaimed`), so a copy counted for a
//! commit that has not applied yet is never swept.

use serde::{Deserialize, Serialize};

use crate::model::apply::{ApplyError, Staged};
use crate::model::command::namespace_of;
use crate::model::usage::Kind;
use crate::store::{
    cf, encode, key2, key3, CF_BLOBS, CF_BLOB_LINKS, CF_BLOB_REFS, CF_REPO_BLOBS, CF_SETTINGS,
};

pub(crate) const KEY_GC_LAST: &str = "gc_last";

/// What the last collection removed (kept in the replicated settings).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GcRun {
    /// When the leader decided the run (seconds).
    pub at: u64,
    /// Blobs committed at or before this time could be collected.
    pub grace_before: u64,
    pub candidates: u64,
    pub collected: u64,
    pub collected_bytes: u64,
}

impl Staged<'_> {
    pub(crate) fn index_link(&mut self, repo: &str, digest: &str, linked: bool) {
        let k = key2(digest, repo);
        let t = cf(self.db, CF_BLOB_LINKS);
        if linked {
            self.batch.put_cf(t, k, b"");
        } else {
            self.batch.delete_cf(t, k);
        }
    }

    pub(crate) fn index_refs(
        &mut self,
        repo: &str,
        manifest: &str,
        blobs: &[String],
        present: bool,
    ) {
        let t = cf(self.db, CF_BLOB_REFS);
        for b in blobs {
            let k = key3(b, repo, manifest);
            if present {
                self.batch.put_cf(t, k, b"");
            } else {
                self.batch.delete_cf(t, k);
            }
        }
    }

    /// Remove each of `digests` that still qualifies: committed at or before
    /// `grace_before` and referenced by no manifest.
    pub(crate) fn collect_blobs(
        &mut self,
        digests: &[String],
        at: u64,
        grace_before: u64,
    ) -> Result<(), ApplyError> {
        // One run commits its candidates in batches: they add up.
        let mut run = match self.reader.gc_last()? {
            Some(last) if last.at == at => last,
            _ => GcRun {
                at,
                grace_before,
                ..GcRun::default()
            },
        };
        run.candidates += digests.len() as u64;
        let mut usages = std::collections::BTreeMap::new();
        // Reads see the state before this command, not the batch: handle
        // each digest once, and each namespace's references in one step.
        let unique: std::collections::BTreeSet<&String> = digests.iter().collect();
        for d in unique {
            let Some(blob) = self.reader.blob(d)? else {
                continue;
            };
            if blob.created_at > grace_before || self.reader.blob_referenced(d)? {
                continue;
            }
            let mut links_per_ns = std::collections::BTreeMap::<String, i64>::new();
            for repo in self.reader.blob_links(d)? {
                *links_per_ns
                    .entry(namespace_of(&repo).to_string())
                    .or_default() += 1;
                self.batch
                    .delete_cf(cf(self.db, CF_REPO_BLOBS), key2(&repo, d));
                self.index_link(&repo, d, false);
            }
            for (ns, links) in links_per_ns {
                let mut u = match usages.remove(&ns) {
                    Some(u) => u,
                    None => self.usage(&ns)?,
                };
                self.count(&mut u, &ns, Kind::Blob, d, blob.size, -links)?;
                usages.insert(ns, u);
            }
            self.batch.delete_cf(cf(self.db, CF_BLOBS), d);
            self.events.push(
                crate::model::audit::Described::new("gc.collect", d.clone())
                    .detail(format!("{} bytes", blob.size)),
            );
            run.collected += 1;
            run.collected_bytes += blob.size;
        }
        for (ns, u) in usages {
            self.put_usage(&ns, &u);
        }
        self.batch
            .put_cf(cf(self.db, CF_SETTINGS), KEY_GC_LAST, encode(&run));
        Ok(())
    }
}
