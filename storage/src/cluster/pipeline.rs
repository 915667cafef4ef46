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
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tonic::transport::Channel;

use super::replicas::Tee;
use super::replication::{self, ReplicationError};
use crate::{UploadError, Uploads};

/// How long the PUT waits for a peer to write the bytes it was sent (it
/// is at most a few chunks behind).
const PEER_ANSWER: Duration = Duration::from_secs(30);

/// A peer's Append call: the session size it reached.
type AppendCall = JoinHandle<Result<u64, ReplicationError>>;

/// One peer of a pipelined upload.
struct Peer {
    id: u64,
    channel: Channel,
    /// The upload's bytes on their way to the peer: one Append call for
    /// the whole upload, opened at its first byte, so the peer writes one
    /// PATCH while the client sends the next instead of between them.
    stream: Option<(mpsc::Sender<std::io::Result<Bytes>>, AppendCall)>,
}

impl Peer {
    /// Whether the peer's call ended early (it failed or went away).
    fn lost(&self) -> bool {
        self.stream.as_ref().is_some_and(|(tx, _)| tx.is_closed())
    }

    /// End the stream; the peer's session size once it wrote everything,
    /// within `PEER_ANSWER`.
    async fn close(&mut self) -> Result<u64, String> {
        let Some((tx, call)) = self.stream.take() else {
            return Ok(0);
        };
        drop(tx);
        let abort = call.abort_handle();
        match tokio::time::timeout(PEER_ANSWER, call).await {
            Ok(Ok(r)) => r.map_err(|e| e.to_string()),
            Ok(Err(e)) => Err(format!("append task: {e}")),
            Err(_) => {
                abort.abort();
                Err(format!("no answer in {}s", PEER_ANSWER.as_secs()))
            }
        }
    }
}

/// A pipelined upload's peers still in step with it.
type Pipe = Arc<tokio::sync::Mutex<Vec<Peer>>>;

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

    /// Pipeline upload `id` to `peers` (from `Replicas::all_owners_but_me`);
    /// nothing is sent until its first byte.
    pub fn open(&self, id: &str, peers: Vec<(u64, Channel)>) {
        let peers = peers
            .into_iter()
            .map(|(id, channel)| Peer {
                id,
                channel,
                stream: None,
            })
            .collect();
        self.pipes
            .lock()
            .expect("pipes lock")
            .insert(id.to_string(), Arc::new(tokio::sync::Mutex::new(peers)));
    }

    fn remove(&self, id: &str) -> Option<Pipe> {
        self.pipes.lock().expect("pipes lock").remove(id)
    }

    /// Stop pipelining upload `id`, which holds `size` bytes here: the
    /// peers that wrote exactly those bytes, for `Replicas::seal`. The
    /// others drop their sessions.
    pub async fn take(&self, id: &str, size: u64) -> Vec<(u64, Channel)> {
        let Some(pipe) = self.remove(id) else {
            return Vec::new();
        };
        let mut peers = std::mem::take(&mut *pipe.lock().await);
        let (mut ready, mut out) = (Vec::new(), Vec::new());
        for mut peer in peers.drain(..) {
            match peer.close().await {
                Ok(n) if n == size && size > 0 => {
                    self.count(true);
                    ready.push((peer.id, peer.channel));
                }
                // Nothing was sent (an empty upload): the usual push.
                Ok(0) if size == 0 => out.push(peer),
                other => {
                    self.count(false);
                    tracing::warn!(node = peer.id, upload = %id, ?other, "a peer left an upload's pipeline");
                    out.push(peer);
                }
            }
        }
        abandon(id, out);
        ready
    }

    /// Drop upload `id`'s pipeline and its peers' sessions (a cancelled
    /// upload, or one finished without it).
    pub async fn abandon(&self, id: &str) {
        if let Some(pipe) = self.remove(id) {
            abandon(id, std::mem::take(&mut *pipe.lock().await));
        }
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
    /// and send it on to its peers if it is pipelined. A peer whose call
    /// failed leaves the pipeline; a local failure ends it (the local copy
    /// is cut back to its last good size, the peers' might not be).
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
        // Held for the whole PATCH: the peers get chunks in the upload's order.
        let mut peers = pipe.lock().await;
        let (_, size) = uploads.status(id).await?;
        if start.is_some_and(|s| s != size) {
            return uploads.append(id, start, body, limit).await;
        }
        let (kept, lost): (Vec<_>, Vec<_>) = std::mem::take(&mut *peers)
            .into_iter()
            .partition(|p| !p.lost() && (p.stream.is_some() || size == 0));
        *peers = kept;
        for p in &lost {
            self.count(false);
            tracing::warn!(node = p.id, upload = %id, "a peer left an upload's pipeline");
        }
        abandon(id, lost);
        if peers.is_empty() {
            return uploads.append(id, start, body, limit).await;
        }
        for p in peers.iter_mut().filter(|p| p.stream.is_none()) {
            let (tx, rx) = mpsc::channel(4);
            let (channel, session) = (p.channel.clone(), id.to_string());
            let call = tokio::spawn(async move {
                let chunks = tokio_stream::wrappers::ReceiverStream::new(rx);
                replication::append(channel, &session, 0, chunks).await
            });
            p.stream = Some((tx, call));
        }
        let senders = peers
            .iter()
            .filter_map(|p| p.stream.as_ref().map(|(tx, _)| tx.clone()))
            .collect();
        let (body, _) = Tee::<()>::feeding(senders).wrap(body);
        let local = uploads.append(id, Some(size), body, limit).await;
        if local.is_err() {
            abandon(id, std::mem::take(&mut *peers));
        }
        local
    }
}

/// Close `peers`' streams and tell them to drop their sessions of upload
/// `id`, in the background (a peer that misses it leaves the session to
/// its janitor).
fn abandon(id: &str, peers: Vec<Peer>) {
    for mut peer in peers {
        let id = id.to_string();
        tokio::spawn(async move {
            let opened = peer.stream.is_some();
            let _ = peer.close().await;
            if !opened {
                return;
            }
            if let Err(e) = replication::abandon(peer.channel, &id).await {
                tracing::debug!(upload = %id, "dropping a peer's pipelined session: {e}");
            }
        });
    }
}
