//! Copies of chunked uploads, written while the chunks arrive.
//!
//! A blob's owners follow from its digest, which a chunked upload (POST,
//! PATCH..., PUT ?digest=) names only at its end: its bytes would reach the
//! owners only after the last chunk, one write after the other. When every
//! voter owns every blob (R at least the number of voters, the usual small
//! cluster), the owners are known at the POST: each PATCH is then teed into
//! a replica session named after the upload on every other owner, and the
//! PUT seals them (each verifies the digest, fsyncs and renames) while the
//! local copy is installed. A peer that misses a chunk leaves the upload's
//! pipeline and gets its copy the usual way after the PUT.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::Stream;
use tcr_storage::replication;
use tcr_storage::{UploadError, Uploads};
use tonic::transport::Channel;

use crate::replicas::Tee;

/// How long a PATCH waits, after its own bytes are written, for the peers
/// to confirm theirs (each has at most a few chunks left to write).
const PEER_ANSWER: Duration = Duration::from_secs(30);

/// A pipelined upload's peers still in step with it.
type Pipe = Arc<tokio::sync::Mutex<Vec<(u64, Channel)>>>;

/// The pipelined uploads of this node.
pub struct UploadReplicas {
    pipes: Mutex<HashMap<String, Pipe>>,
    transfers: prometheus::IntCounterVec,
}

impl UploadReplicas {
    pub fn new(transfers: prometheus::IntCounterVec) -> Self {
        UploadReplicas {
            pipes: Mutex::default(),
            transfers,
        }
    }

    fn count(&self, ok: bool) {
        self.transfers
            .with_label_values(&["pipelined_append", if ok { "ok" } else { "error" }])
            .inc();
    }

    /// Pipeline upload `id` to `peers` (from `Replicas::all_owners_but_me`).
    pub fn open(&self, id: &str, peers: Vec<(u64, Channel)>) {
        self.pipes
            .lock()
            .expect("pipes lock")
            .insert(id.to_string(), Arc::new(tokio::sync::Mutex::new(peers)));
    }

    /// Stop pipelining upload `id`: the peers in step with it, for `seal`.
    pub async fn take(&self, id: &str) -> Vec<(u64, Channel)> {
        let pipe = self.pipes.lock().expect("pipes lock").remove(id);
        match pipe {
            Some(p) => std::mem::take(&mut *p.lock().await),
            None => Vec::new(),
        }
    }

    /// Drop upload `id`'s pipeline and its peers' sessions (a cancelled
    /// upload, or one finished without it).
    pub async fn abandon(&self, id: &str) {
        abandon(id, self.take(id).await);
    }

    /// Drop the pipelines of uploads that ended without a PUT (the janitor
    /// expired them).
    pub async fn prune(&self, uploads: &Uploads) {
        let gone: Vec<String> = self
            .pipes
            .lock()
            .expect("pipes lock")
            .keys()
            .filter(|id| !uploads.contains(id))
            .cloned()
            .collect();
        for id in gone {
            self.abandon(&id).await;
        }
    }

    /// Append `body` to upload `id` at `start` (see `Uploads::append`),
    /// and to its peers' sessions if it is pipelined. A peer that fails or
    /// ends at another size leaves the pipeline; a local failure ends it.
    pub async fn append<S>(
        &self,
        uploads: &Uploads,
        id: &str,
        start: Option<u64>,
        body: S,
        limit: u64,
    ) -> Result<u64, UploadError>
    where
        S: Stream<Item = std::io::Result<Bytes>> + Send + Unpin + 'static,
    {
        let pipe = self.pipes.lock().expect("pipes lock").get(id).cloned();
        let Some(pipe) = pipe else {
            return uploads.append(id, start, body, limit).await;
        };
        // Held for the whole PATCH: the peers see chunks in the upload's order.
        let mut peers = pipe.lock().await;
        let (_, size) = uploads.status(id).await?;
        if peers.is_empty() || start.is_some_and(|s| s != size) {
            return uploads.append(id, start, body, limit).await;
        }
        let session = id.to_string();
        let tee = Tee::start(peers.clone(), move |channel, chunks| {
            let session = session.clone();
            async move { replication::append(channel, &session, size, chunks).await }
        });
        let (body, handles) = tee.wrap(body);
        let local = uploads.append(id, Some(size), body, limit).await;
        let answers = handles.answers(PEER_ANSWER).await;
        let Ok(new_size) = local else {
            // The local copy was cut back to `size`; the peers' may not be.
            abandon(id, std::mem::take(&mut *peers));
            return local;
        };
        let (mut keep, mut out) = (Vec::new(), Vec::new());
        for (peer, answer) in std::mem::take(&mut *peers).into_iter().zip(answers) {
            match answer {
                Ok(n) if n == new_size => {
                    self.count(true);
                    keep.push(peer);
                }
                other => {
                    self.count(false);
                    tracing::warn!(node = peer.0, upload = %id, ?other, "a peer left an upload's pipeline");
                    out.push(peer);
                }
            }
        }
        *peers = keep;
        abandon(id, out);
        Ok(new_size)
    }
}

/// Tell `peers` to drop their sessions of upload `id`, in the background
/// (a peer that misses it leaves the session to its janitor).
fn abandon(id: &str, peers: Vec<(u64, Channel)>) {
    for (_, channel) in peers {
        let id = id.to_string();
        tokio::spawn(async move {
            if let Err(e) = replication::abandon(channel, &id).await {
                tracing::debug!(upload = %id, "dropping a peer's pipelined session: {e}");
            }
        });
    }
}
