//! The one door from an upload handler to a replicated blob, as
//! Distribution's `BlobWriter` is: open, append, commit with the expected
//! digest, cancel. Which replication strategy runs stays in here:
//! - a whole blob of known size in one request is teed to its owners as it
//!   arrives (`Replicas::tee`);
//! - a chunked upload whose owners are known at its start (every voter owns
//!   every blob) is pipelined: each chunk goes on to the other owners'
//!   replica sessions, and the commit seals them (`pipeline`);
//! - otherwise the verified upload is pushed to its owners after staging,
//!   while the local copy is made durable (`Replicas::replicate_staged`).
//!
//! In each case the commit returns once the local copy is installed and a
//! write quorum of owners holds the blob; the caller then records it in
//! Raft.

use std::sync::Arc;

use bytes::Bytes;
use futures::Stream;

use super::pipeline::UploadReplicas;
use super::replicas::{ReplicaError, Replicas, Tee};
use crate::{Digest, UploadError, Uploads};

pub struct BlobWriter {
    uploads: Arc<Uploads>,
    replicas: Replicas,
    pipelines: UploadReplicas,
}

/// A whole blob in one request, with its copies on their way to the owners
/// as it arrives (see `BlobWriter::whole`).
pub struct Whole {
    tee: Tee,
}

impl BlobWriter {
    pub fn new(uploads: Arc<Uploads>, replicas: Replicas, pipelines: UploadReplicas) -> Self {
        BlobWriter {
            uploads,
            replicas,
            pipelines,
        }
    }

    /// Session `id` was opened for chunks: if the owners of any digest are
    /// known now, its chunks go on to them as they arrive.
    pub fn begin(&self, id: &str) {
        if let Some(peers) = self.replicas.all_owners_but_me() {
            self.pipelines.open(id, peers);
        }
    }

    /// Append `body` to session `id` at `start` (see `Uploads::append`).
    pub async fn append<S>(
        &self,
        id: &str,
        start: Option<u64>,
        body: S,
        limit: u64,
    ) -> Result<u64, UploadError>
    where
        S: Stream<Item = std::io::Result<Bytes>> + Send + Unpin + 'static,
    {
        self.pipelines
            .append(&self.uploads, id, start, body, limit)
            .await
    }

    /// A whole blob `d` of `size` bytes is about to arrive in one request:
    /// `Some` when its copies can travel to the owners alongside it (hand
    /// it to `write_whole`), `None` to append and commit as usual.
    pub fn whole(&self, d: &Digest, size: u64) -> Option<Whole> {
        self.replicas.tee(d, size).map(|tee| Whole { tee })
    }

    /// Write `body`, the whole blob `d`, into session `id` at `start` while
    /// the owners receive their copies, then verify and install it here.
    /// Returns its size once a write quorum of owners holds it.
    pub async fn write_whole<S>(
        &self,
        id: &str,
        start: Option<u64>,
        body: S,
        d: &Digest,
        whole: Whole,
        limit: u64,
    ) -> Result<u64, ReplicaError>
    where
        S: Stream<Item = std::io::Result<Bytes>> + Send + Unpin + 'static,
    {
        // Replica sessions opened at the start are not needed.
        self.pipelines.abandon(id).await;
        let (body, mut handles) = whole.tee.wrap(body);
        self.uploads.append(id, start, body, limit).await?;
        let hold = self.replicas.hold(d);
        // Checked here first, so the owners get the index of bytes known
        // to match and are spared making their own (a mismatch sends none,
        // and they refuse the bytes too).
        let index = self.uploads.index_of(id, d).await?;
        handles.send_index(index.as_ref());
        let size = self.uploads.finish(id, d).await?;
        self.replicas.finish_tee(d, handles, hold).await?;
        Ok(size)
    }

    /// Verify session `id` against `d`, install it here and copy it to its
    /// owners. Returns its size once a write quorum of owners holds it.
    pub async fn commit(&self, id: &str, d: &Digest) -> Result<u64, ReplicaError> {
        let (_, size) = self.uploads.status(id).await?;
        let pipelined = self.pipelines.take(id, size).await;
        if !pipelined.is_empty() {
            // The owners hold the bytes already: they verify and install
            // their copies while this node installs its own.
            let hold = self.replicas.hold(d);
            // Checked here first, so the owners are sealed with the index
            // of bytes known to match and spared making their own.
            let index = match self.uploads.index_of(id, d).await {
                Ok(index) => index,
                Err(e) => {
                    self.replicas.abandon(id, pipelined);
                    return Err(e.into());
                }
            };
            let seals = self.replicas.seal(d, id, pipelined, index);
            let size = self.uploads.finish(id, d).await?;
            self.replicas.finish_tee(d, seals, hold).await?;
            return Ok(size);
        }
        let hold = self.replicas.hold(d);
        let blob = self.uploads.verified(id, d).await?;
        let index = self.uploads.index_of(id, d).await?;
        self.replicas
            .replicate_staged(d, blob, index, self.uploads.finish(id, d), hold)
            .await
    }

    /// End session `id` and its replica sessions.
    pub async fn cancel(&self, id: &str) -> Result<(), UploadError> {
        let cancelled = self.uploads.cancel(id).await;
        self.pipelines.abandon(id).await;
        cancelled
    }

    /// Drop the replica sessions of uploads that ended without a commit.
    pub async fn prune(&self) {
        self.pipelines.prune(&self.uploads).await;
    }
}
