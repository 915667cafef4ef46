//! Blob transfer between nodes over tonic: `push` streams a local blob to
//! a peer in chunks of about 1 MiB (a bounded channel gives backpressure);
//! the peer stages it as an internal upload, so it is hashed while written,
//! verified, fsynced and renamed into place before it acknowledges. `fetch`
//! streams a blob (or a range) from a peer that holds it. `append` and
//! `seal` copy a chunked upload to a peer as its chunks arrive, before its
//! digest is known: the peer stages them in a session named after the
//! upload, and verifies and installs it when sealed with the digest.

use bytes::Bytes;
use futures::{Stream, StreamExt, TryStreamExt};
use tonic::transport::Channel;
use tonic::{Request, Response, Status, Streaming};

use crate::blob_store::{BlobStore, Mapped};
use crate::digest::Digest;
use crate::integrity::ChunkIndex;
use crate::upload::{UploadError, Uploads};

pub mod proto {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("tcr.blobs.v1");
}

use proto::blob_service_client::BlobServiceClient;
use proto::blob_service_server::{BlobService, BlobServiceServer};
use proto::{
    AbandonReply, AppendChunk, AppendReply, Chunk, GetRequest, HasManyReply, HasManyRequest,
    HasReply, PutChunk, PutReply, ReportReply, ReportRequest, SealRequest, SessionRequest,
};

/// Chunks in flight per transfer: the sender waits when the peer is slower.
const IN_FLIGHT: usize = 4;
/// Largest gRPC message: a chunk (1 MiB) with room to spare.
const MAX_MESSAGE: usize = 4 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ReplicationError {
    #[error("reading the local copy: {0}")]
    Io(#[from] std::io::Error),
    #[error("peer refused or failed: {0}")]
    Peer(String),
}

impl From<Status> for ReplicationError {
    fn from(s: Status) -> Self {
        ReplicationError::Peer(format!("{:?}: {}", s.code(), s.message()))
    }
}

fn client(channel: Channel) -> BlobServiceClient<Channel> {
    BlobServiceClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE)
}

/// Stream `blob` (mapped bytes of `d`) to the peer behind `channel`, with
/// this node's integrity `index` of it if it has one. Returns whether the
/// peer wrote it (false: it already held it).
pub async fn push(
    channel: Channel,
    d: &Digest,
    blob: &Mapped,
    index: Option<&ChunkIndex>,
) -> Result<bool, ReplicationError> {
    let sent = index.map(|index| {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let _ = tx.send(index.to_bytes().into());
        rx
    });
    push_stream(channel, d, blob.len(), blob.stream(), sent).await
}

/// The sender's integrity index of the bytes it pushes (encoded), known
/// only once they have all passed and matched their digest here: the peer
/// then computes only the SHA-256. A dropped sender sends none (the peer
/// indexes its copy at its first read).
pub type IndexLater = tokio::sync::oneshot::Receiver<Bytes>;

/// Stream `size` bytes that should hash to `d` to the peer behind
/// `channel` (from a local copy, or as an upload arrives), followed by the
/// `index` this node made of them, if any. The peer refuses them unless
/// they are exactly `size` bytes hashing to `d`.
pub async fn push_stream<S>(
    channel: Channel,
    d: &Digest,
    size: u64,
    chunks: S,
    index: Option<IndexLater>,
) -> Result<bool, ReplicationError>
where
    S: Stream<Item = std::io::Result<Bytes>> + Send + 'static,
{
    let name = d.to_string();
    let sender_index = index.is_some();
    let trailer = async move {
        let index = index?.await.ok()?;
        // Too large to send (a blob over 32 GiB): the peer indexes its copy.
        (index.len() <= MAX_SENT_INDEX).then(|| PutChunk {
            index,
            ..Default::default()
        })
    };
    let (messages, feeder) = feed(
        chunks,
        move |first, data| PutChunk {
            digest: if first { name.clone() } else { String::new() },
            size,
            data,
            sender_index: first && sender_index,
            index: Bytes::new(),
        },
        trailer,
    );
    let reply = client(channel).put(messages).await;
    fed(feeder).await?;
    Ok(reply?.into_inner().written)
}

/// `chunks` as a stream of messages (`make(first, bytes)`), then the
/// message `trailer` yields, if any; fed by a task through a bounded
/// channel: the sender waits when the peer is slower. An empty `chunks`
/// still makes one message, which names the transfer.
fn feed<S, M>(
    chunks: S,
    mut make: impl FnMut(bool, Bytes) -> M + Send + 'static,
    trailer: impl std::future::Future<Output = Option<M>> + Send + 'static,
) -> (
    tokio_stream::wrappers::ReceiverStream<M>,
    tokio::task::JoinHandle<std::io::Result<()>>,
)
where
    S: Stream<Item = std::io::Result<Bytes>> + Send + 'static,
    M: Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel::<M>(IN_FLIGHT);
    let feeder = tokio::spawn(async move {
        let mut chunks = std::pin::pin!(chunks);
        let mut first = true;
        while let Some(data) = chunks.next().await {
            let msg = make(first, data?);
            first = false;
            if tx.send(msg).await.is_err() {
                return Ok(()); // the call ended; its status says why
            }
        }
        if first {
            let _ = tx.send(make(true, Bytes::new())).await;
        }
        if let Some(last) = trailer.await {
            let _ = tx.send(last).await;
        }
        Ok(())
    });
    (tokio_stream::wrappers::ReceiverStream::new(rx), feeder)
}

/// Whether the feeder read its source to the end (a local read error
/// fails the transfer even if the peer answered).
async fn fed(feeder: tokio::task::JoinHandle<std::io::Result<()>>) -> Result<(), ReplicationError> {
    Ok(feeder.await.map_err(std::io::Error::other)??)
}

/// Append `chunks` to the peer's replica session for upload `session`,
/// at `offset` (0 opens the session). Returns the session's new size.
pub async fn append<S>(
    channel: Channel,
    session: &str,
    offset: u64,
    chunks: S,
) -> Result<u64, ReplicationError>
where
    S: Stream<Item = std::io::Result<Bytes>> + Send + 'static,
{
    let session = session.to_string();
    let (messages, feeder) = feed(
        chunks,
        move |first, data| AppendChunk {
            session: if first {
                session.clone()
            } else {
                String::new()
            },
            offset,
            data,
            // The index comes with `seal`.
            sender_index: first,
        },
        async { None },
    );
    let reply = client(channel).append(messages).await;
    fed(feeder).await?;
    Ok(reply?.into_inner().size)
}

/// An index larger than this is not sent with `seal` (a blob over 32 GiB):
/// the replica then indexes its copy at its first read.
const MAX_SENT_INDEX: usize = 1 << 20;

/// Install the peer's replica session for upload `session` as blob `d`
/// (verified, fsynced, renamed) with this node's integrity `index` of the
/// same bytes; the session ends either way.
pub async fn seal(
    channel: Channel,
    session: &str,
    d: &Digest,
    index: Option<&ChunkIndex>,
) -> Result<bool, ReplicationError> {
    let index = index
        .map(ChunkIndex::to_bytes)
        .filter(|b| b.len() <= MAX_SENT_INDEX)
        .unwrap_or_default();
    let reply = client(channel)
        .seal(SealRequest {
            session: session.to_string(),
            digest: d.to_string(),
            index: index.into(),
        })
        .await?;
    Ok(reply.into_inner().written)
}

/// Drop the peer's replica session for upload `session`, if it has one.
pub async fn abandon(channel: Channel, session: &str) -> Result<(), ReplicationError> {
    client(channel)
        .abandon(SessionRequest {
            session: session.to_string(),
        })
        .await?;
    Ok(())
}

/// Stream `len` bytes of `d` from `start` out of the peer behind `channel`.
pub async fn fetch(
    channel: Channel,
    d: &Digest,
    start: u64,
    len: u64,
) -> Result<impl Stream<Item = Result<Bytes, ReplicationError>> + Send + 'static, ReplicationError>
{
    let stream = client(channel)
        .get(GetRequest {
            digest: d.to_string(),
            offset: start,
            length: len,
        })
        .await?
        .into_inner();
    Ok(stream.map_ok(|c| c.data).map_err(ReplicationError::from))
}

/// Whether the peer behind `channel` holds a copy of `d`.
pub async fn has(channel: Channel, d: &Digest) -> Result<bool, ReplicationError> {
    let reply = client(channel)
        .has(GetRequest {
            digest: d.to_string(),
            offset: 0,
            length: 0,
        })
        .await?;
    Ok(reply.into_inner().present)
}

/// The storage report of the peer behind `channel`, as it sent it.
pub async fn report(channel: Channel) -> Result<serde_json::Value, ReplicationError> {
    let reply = client(channel).report(ReportRequest {}).await?.into_inner();
    serde_json::from_slice(&reply.json).map_err(|e| ReplicationError::Peer(format!("report: {e}")))
}

/// Which of `digests` the peer behind `channel` holds (at most 10,000).
pub async fn has_many(channel: Channel, digests: &[Digest]) -> Result<Vec<bool>, ReplicationError> {
    let reply = client(channel)
        .has_many(HasManyRequest {
            digests: digests.iter().map(|d| d.to_string()).collect(),
        })
        .await?
        .into_inner();
    if reply.present.len() != digests.len() {
        return Err(ReplicationError::Peer(
            "has_many: answer of the wrong length".into(),
        ));
    }
    Ok(reply.present)
}

/// Copy `d` from the peer behind `channel` into the local store: staged as
/// an upload session, so it is verified and fsynced before it appears.
pub async fn pull(
    channel: Channel,
    uploads: &Uploads,
    d: &Digest,
    size: u64,
) -> Result<(), ReplicationError> {
    let stream = fetch(channel, d, 0, 0).await?;
    let id = format!("repair-{}", uuid::Uuid::new_v4().simple());
    uploads
        .receive(&id, Box::pin(stream), size, d)
        .await
        .map(|_| ())
        .map_err(|e| ReplicationError::Peer(e.to_string()))
}

/// The receiving side, mounted on the node's RPC server.
#[derive(Clone)]
pub struct BlobRpc {
    store: BlobStore,
    uploads: std::sync::Arc<Uploads>,
    max_blob_bytes: u64,
    /// The node's storage loop, once it is started (after this server).
    reports: std::sync::Arc<std::sync::OnceLock<super::Reconciler>>,
}

impl BlobRpc {
    /// Replicas are staged as upload sessions named `replica-*` (a whole
    /// blob) or `pipe-<upload id>` (a chunked upload's copy), among the
    /// node's client uploads: `uploads` is the node's own, so the janitor
    /// expires leftovers and sees which sessions are busy.
    pub fn server(
        store: BlobStore,
        uploads: std::sync::Arc<Uploads>,
        max_blob_bytes: u64,
    ) -> BlobServiceServer<Self> {
        Self::server_with_reports(store, uploads, max_blob_bytes, Default::default())
    }

    /// As `server`, answering `Report` from the reconciler set in `reports`.
    pub fn server_with_reports(
        store: BlobStore,
        uploads: std::sync::Arc<Uploads>,
        max_blob_bytes: u64,
        reports: std::sync::Arc<std::sync::OnceLock<super::Reconciler>>,
    ) -> BlobServiceServer<Self> {
        BlobServiceServer::new(BlobRpc {
            store,
            uploads,
            max_blob_bytes,
            reports,
        })
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE)
    }

    /// This node's cache of blobs streamed from their owners, once the
    /// storage loop has started (if the cache is on).
    fn cache(&self) -> Option<super::BlobCache> {
        self.reports.get().and_then(|r| r.cache().cloned())
    }
}

/// The local session that holds replicas of upload `upload`.
fn pipe_session(upload: &str) -> Result<String, Status> {
    let id = format!("pipe-{upload}");
    if upload.is_empty()
        || id.len() > 64
        || !upload
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
    {
        return Err(Status::invalid_argument(format!(
            "'{upload}' is not an upload id"
        )));
    }
    Ok(id)
}

fn upload_status(e: UploadError) -> Status {
    match e {
        UploadError::DigestMismatch { .. } => Status::data_loss(e.to_string()),
        UploadError::TooLarge { .. } => Status::resource_exhausted(e.to_string()),
        UploadError::Unknown(_) => Status::not_found(e.to_string()),
        UploadError::OutOfOrder { .. } => Status::failed_precondition(e.to_string()),
        UploadError::NoSpace(_) | UploadError::TooManySessions { .. } => {
            Status::resource_exhausted(e.to_string())
        }
        UploadError::Io(ref io) if io.kind() == std::io::ErrorKind::StorageFull => {
            Status::resource_exhausted(e.to_string())
        }
        e => Status::internal(e.to_string()),
    }
}

#[tonic::async_trait]
impl BlobService for BlobRpc {
    async fn put(&self, req: Request<Streaming<PutChunk>>) -> Result<Response<PutReply>, Status> {
        let mut stream = req.into_inner();
        let first = stream
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("empty blob stream"))?;
        let d: Digest = first
            .digest
            .parse()
            .map_err(|e| Status::invalid_argument(format!("{e}")))?;
        if first.size > self.max_blob_bytes {
            return Err(Status::resource_exhausted(format!(
                "blob of {} bytes exceeds the limit of {}",
                first.size, self.max_blob_bytes
            )));
        }
        // The sender counts a copy found here as a replica of a commit that
        // may not have applied yet: claim it, so no sweep takes it meanwhile.
        self.store.claim(&d);
        if self.store.stat(&d).await?.is_some() {
            return Ok(Response::new(PutReply { written: false }));
        }
        let id = format!("replica-{}", uuid::Uuid::new_v4().simple());
        let given = first.sender_index;
        // The sender's index, from a message after the last byte.
        let sent = std::sync::Arc::new(std::sync::Mutex::new(None::<Bytes>));
        let slot = sent.clone();
        let body = futures::stream::once(async move { Ok::<_, Status>(first.data) }).chain(
            stream.map_ok(move |c| {
                if !c.index.is_empty() {
                    *slot.lock().expect("index slot") = Some(c.index);
                }
                c.data
            }),
        );
        let (size, body) = (first.size, Box::pin(body));
        let received = match given {
            true => {
                let index = move || sent.lock().expect("index slot").take();
                self.uploads
                    .receive_indexed(&id, body, size, &d, index)
                    .await
            }
            false => self.uploads.receive(&id, body, size, &d).await,
        };
        match received {
            Ok(_) => Ok(Response::new(PutReply { written: true })),
            Err(e) => {
                tracing::warn!(digest = %d, "refused a replica: {e}");
                Err(upload_status(e))
            }
        }
    }

    async fn append(
        &self,
        req: Request<Streaming<AppendChunk>>,
    ) -> Result<Response<AppendReply>, Status> {
        let mut stream = req.into_inner();
        let first = stream
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("empty append stream"))?;
        let id = pipe_session(&first.session)?;
        if first.offset == 0
            && matches!(self.uploads.status(&id).await, Err(UploadError::Unknown(_)))
        {
            let created = match first.sender_index {
                true => self.uploads.create_with_given_index(&id).await,
                false => self.uploads.create(&id, "").await,
            };
            created.map_err(upload_status)?;
        }
        let body = futures::stream::once(async move { Ok::<_, Status>(first.data) })
            .chain(stream.map_ok(|c| c.data));
        match self
            .uploads
            .append(&id, Some(first.offset), Box::pin(body), self.max_blob_bytes)
            .await
        {
            Ok(size) => Ok(Response::new(AppendReply { size })),
            Err(e) => {
                // The sender stops using a session that failed once; its
                // bytes would only wait for the janitor.
                let _ = self.uploads.cancel(&id).await;
                Err(upload_status(e))
            }
        }
    }

    async fn seal(&self, req: Request<SealRequest>) -> Result<Response<PutReply>, Status> {
        let req = req.into_inner();
        let id = pipe_session(&req.session)?;
        let d: Digest = req
            .digest
            .parse()
            .map_err(|e| Status::invalid_argument(format!("{e}")))?;
        match self.uploads.finish_with(&id, &d, Some(&req.index)).await {
            Ok(_) => Ok(Response::new(PutReply { written: true })),
            Err(e) => {
                tracing::warn!(digest = %d, session = %id, "refused to seal a replica: {e}");
                if !matches!(e, UploadError::Unknown(_)) {
                    let _ = self.uploads.cancel(&id).await;
                }
                Err(upload_status(e))
            }
        }
    }

    async fn abandon(
        &self,
        req: Request<SessionRequest>,
    ) -> Result<Response<AbandonReply>, Status> {
        let id = pipe_session(&req.into_inner().session)?;
        match self.uploads.cancel(&id).await {
            Ok(()) | Err(UploadError::Unknown(_)) => Ok(Response::new(AbandonReply {})),
            Err(e) => Err(upload_status(e)),
        }
    }

    async fn report(&self, _req: Request<ReportRequest>) -> Result<Response<ReportReply>, Status> {
        let reconciler = self
            .reports
            .get()
            .ok_or_else(|| Status::unavailable("the storage loop has not started"))?;
        let json = serde_json::to_vec(&reconciler.report())
            .map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(ReportReply { json: json.into() }))
    }

    async fn has(&self, req: Request<GetRequest>) -> Result<Response<HasReply>, Status> {
        let d: Digest = req
            .into_inner()
            .digest
            .parse()
            .map_err(|e| Status::invalid_argument(format!("{e}")))?;
        let size = self.store.stat(&d).await?;
        Ok(Response::new(HasReply {
            present: size.is_some(),
            size: size.unwrap_or(0),
        }))
    }

    async fn has_many(
        &self,
        req: Request<HasManyRequest>,
    ) -> Result<Response<HasManyReply>, Status> {
        let digests = req.into_inner().digests;
        if digests.len() > 10_000 {
            return Err(Status::invalid_argument("at most 10,000 digests per call"));
        }
        let mut present = Vec::with_capacity(digests.len());
        for d in digests {
            let d: Digest = d
                .parse()
                .map_err(|e| Status::invalid_argument(format!("{e}")))?;
            present.push(self.store.stat(&d).await?.is_some());
        }
        Ok(Response::new(HasManyReply { present }))
    }

    type GetStream = std::pin::Pin<Box<dyn Stream<Item = Result<Chunk, Status>> + Send>>;

    async fn get(&self, req: Request<GetRequest>) -> Result<Response<Self::GetStream>, Status> {
        let req = req.into_inner();
        let d: Digest = req
            .digest
            .parse()
            .map_err(|e| Status::invalid_argument(format!("{e}")))?;
        // A cached copy is never counted as one (`has` does not see it),
        // but it is a source of last resort for an owner whose copies are
        // all gone: repair asks the owners first, then everyone.
        let no_copy = || Status::not_found(format!("this node holds no copy of {d}"));
        let (size, cache) = match self.store.stat(&d).await? {
            Some(size) => (size, None),
            None => {
                let cache = self.cache().ok_or_else(no_copy)?;
                (cache.size_of(&d).ok_or_else(no_copy)?, Some(cache))
            }
        };
        if req.offset > size {
            return Err(Status::out_of_range("offset beyond the blob"));
        }
        let len = if req.length == 0 {
            size - req.offset
        } else {
            req.length.min(size - req.offset)
        };
        // Checked like the HTTP route: a peer cannot verify a range itself.
        let chunks = match cache {
            None => self
                .store
                .read_stream_checked(&d, req.offset, len)
                .await?
                .boxed(),
            Some(c) => c.read(&d, req.offset, len).await.ok_or_else(no_copy)?,
        };
        Ok(Response::new(Box::pin(chunks.map(|c| {
            c.map(|data| Chunk { data }).map_err(Status::from)
        }))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    /// A real tonic server with the blob service over a fresh store,
    /// taking blobs of up to 1 MiB.
    async fn serve() -> (tempfile::TempDir, Channel, BlobStore) {
        serve_up_to(1 << 20).await
    }

    async fn serve_up_to(limit: u64) -> (tempfile::TempDir, Channel, BlobStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let uploads = Arc::new(Uploads::open(store.clone()).unwrap());
        let svc = BlobRpc::server(store.clone(), uploads, limit);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(svc)
                .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
        );
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect_lazy();
        (dir, channel, store)
    }

    fn chunks(parts: &[&'static [u8]]) -> impl Stream<Item = std::io::Result<Bytes>> + Send {
        let parts: Vec<_> = parts.iter().map(|p| Ok(Bytes::from_static(p))).collect();
        futures::stream::iter(parts)
    }

    /// Staging sessions left on the peer.
    fn staged(dir: &tempfile::TempDir) -> Vec<String> {
        std::fs::read_dir(dir.path().join("uploads"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    }

    #[tokio::test]
    async fn a_replica_session_takes_chunks_in_order_and_seals_into_the_named_blob() {
        let (dir, ch, store) = serve().await;
        let d = Digest::of(b"hello world");
        assert_eq!(
            append(ch.clone(), "1-a", 0, chunks(&[b"hel", b"lo "]))
                .await
                .unwrap(),
            6
        );
        assert_eq!(
            append(ch.clone(), "1-a", 6, chunks(&[b"world"]))
                .await
                .unwrap(),
            11
        );
        // Not visible as a blob until sealed.
        assert!(store.stat(&d).await.unwrap().is_none());
        assert!(seal(ch.clone(), "1-a", &d, None).await.unwrap());
        assert_eq!(std::fs::read(store.path(&d)).unwrap(), b"hello world");
        assert!(staged(&dir).is_empty(), "{:?}", staged(&dir));
        // An empty append opens an empty session: the empty blob.
        assert_eq!(append(ch.clone(), "1-e", 0, chunks(&[])).await.unwrap(), 0);
        assert!(seal(ch.clone(), "1-e", &Digest::of(b""), None)
            .await
            .unwrap());
        assert_eq!(store.stat(&Digest::of(b"")).await.unwrap(), Some(0));
    }

    /// A replica of a chunked upload is sealed with the sender's index of
    /// the same bytes and reads checked by it; without one (too large to
    /// send, or a sender of an older version leaves it out) the copy is
    /// installed and indexed at its first read.
    #[tokio::test]
    async fn a_replica_is_sealed_with_the_senders_index() {
        let (_dir, ch, store) = serve_up_to(8 << 20).await;
        let blob: Vec<u8> = (0..(3 << 20) + 123).map(|i| (i % 251) as u8).collect();
        let d = Digest::of(&blob);
        let mut sender = crate::integrity::ChunkHasher::new();
        sender.update(&blob);
        let index = sender.finish();
        let (a, b) = blob.split_at(1 << 20);
        let pieces = |x: &[u8]| {
            let x = Bytes::copy_from_slice(x);
            futures::stream::iter([Ok::<_, std::io::Error>(x)])
        };
        append(ch.clone(), "1-i", 0, pieces(a)).await.unwrap();
        append(ch.clone(), "1-i", a.len() as u64, pieces(b))
            .await
            .unwrap();
        assert!(seal(ch.clone(), "1-i", &d, Some(&index)).await.unwrap());
        assert!(store.has_index(&d).await, "the sender's index is kept");
        let read = |store: BlobStore, d: Digest| async move {
            let s = store
                .read_stream_checked(&d, 0, blob_len(&store, &d).await)
                .await?;
            let parts: Vec<std::io::Result<Bytes>> = s.collect().await;
            parts
                .into_iter()
                .collect::<std::io::Result<Vec<_>>>()
                .map(|p| p.concat())
        };
        assert_eq!(read(store.clone(), d.clone()).await.unwrap(), blob);

        let other: Vec<u8> = blob.iter().map(|b| b ^ 1).collect();
        let od = Digest::of(&other);
        append(ch.clone(), "1-n", 0, pieces(&other)).await.unwrap();
        assert!(seal(ch.clone(), "1-n", &od, None).await.unwrap());
        assert!(!store.has_index(&od).await);
        assert_eq!(read(store.clone(), od.clone()).await.unwrap(), other);
        assert!(store.has_index(&od).await, "indexed by its first read");

        // A hostile index (a lying length, garbage, another size's) is
        // dropped: the copy is installed, indexed at its first read, and
        // the service goes on.
        let third: Vec<u8> = blob.iter().map(|b| b ^ 2).collect();
        let td = Digest::of(&third);
        let mut lying = index.to_bytes();
        lying[20..28].copy_from_slice(&u64::MAX.to_le_bytes());
        for (i, bad) in [lying, vec![0xff; 77], ChunkIndex::of(b"short").to_bytes()]
            .into_iter()
            .enumerate()
        {
            let session = format!("1-h{i}");
            append(ch.clone(), &session, 0, pieces(&third))
                .await
                .unwrap();
            let reply = client(ch.clone())
                .seal(SealRequest {
                    session,
                    digest: td.to_string(),
                    index: bad.into(),
                })
                .await
                .unwrap();
            assert!(reply.into_inner().written);
            assert!(!store.has_index(&td).await);
            assert_eq!(read(store.clone(), td.clone()).await.unwrap(), third);
            store.remove(&td).await.unwrap();
        }
    }

    /// Every byte of the local copy of `d`, read checked.
    async fn read_checked(store: &BlobStore, d: &Digest) -> std::io::Result<Vec<u8>> {
        let len = blob_len(store, d).await;
        let parts: Vec<std::io::Result<Bytes>> =
            store.read_stream_checked(d, 0, len).await?.collect().await;
        Ok(parts
            .into_iter()
            .collect::<std::io::Result<Vec<_>>>()?
            .concat())
    }

    /// A pushed whole blob is installed with the index its sender sends
    /// after the bytes (the receiver computes only the SHA-256); a sender
    /// that sends none leaves the copy to be indexed at its first read, a
    /// sender of an older version (no `sender_index`) has the receiver
    /// index it, and a hostile index is dropped, never trusted.
    #[tokio::test]
    async fn a_pushed_replica_is_installed_with_the_senders_index() {
        let (_dir, ch, store) = serve_up_to(8 << 20).await;
        let blob: Vec<u8> = (0..(3 << 20) + 77).map(|i| (i % 253) as u8).collect();
        let variant = |k: u8| -> (Vec<u8>, Digest) {
            let b: Vec<u8> = blob.iter().map(|x| x ^ k).collect();
            let d = Digest::of(&b);
            (b, d)
        };
        let pieces = |b: &[u8]| {
            let parts: Vec<_> = b
                .chunks(1 << 20)
                .map(|c| Ok(Bytes::copy_from_slice(c)))
                .collect();
            futures::stream::iter(parts)
        };

        // The index arrives once the bytes have passed (as a teed push sends it).
        let (b, d) = variant(0);
        let (tx, rx) = tokio::sync::oneshot::channel();
        let push = tokio::spawn({
            let (ch, d, body, len) = (ch.clone(), d.clone(), pieces(&b), b.len() as u64);
            async move { push_stream(ch, &d, len, body, Some(rx)).await }
        });
        tx.send(ChunkIndex::of(&blob).to_bytes().into()).unwrap();
        assert!(push.await.unwrap().unwrap());
        assert!(store.has_index(&d).await, "the sender's index is kept");
        assert_eq!(read_checked(&store, &d).await.unwrap(), b);

        // The sender's own check failed: it sends no index; the copy is
        // installed (its SHA-256 matched here) and indexed at its first read.
        let (b, d) = variant(1);
        let (tx, rx) = tokio::sync::oneshot::channel::<Bytes>();
        drop(tx);
        let len = b.len() as u64;
        assert!(push_stream(ch.clone(), &d, len, pieces(&b), Some(rx))
            .await
            .unwrap());
        assert!(!store.has_index(&d).await, "not indexed by the receiver");
        assert_eq!(read_checked(&store, &d).await.unwrap(), b);
        assert!(store.has_index(&d).await, "indexed by its first read");

        // A sender of an older version: the receiver indexes the bytes.
        let (b, d) = variant(2);
        let len = b.len() as u64;
        assert!(push_stream(ch.clone(), &d, len, pieces(&b), None)
            .await
            .unwrap());
        assert!(store.has_index(&d).await, "indexed by the receiver");
        assert_eq!(read_checked(&store, &d).await.unwrap(), b);

        // Hostile indexes (another blob's, of another size, a lying
        // length, garbage) are dropped: installed, indexed at first read.
        let (b, d) = variant(3);
        let mut lying = ChunkIndex::of(&b).to_bytes();
        lying[20..28].copy_from_slice(&u64::MAX.to_le_bytes());
        let hostile = [
            ChunkIndex::of(&blob).to_bytes(),
            ChunkIndex::of(b"short").to_bytes(),
            lying,
            vec![0xff; 77],
        ];
        for (i, bad) in hostile.into_iter().enumerate() {
            let (tx, rx) = tokio::sync::oneshot::channel();
            tx.send(bad.into()).unwrap();
            let len = b.len() as u64;
            assert!(push_stream(ch.clone(), &d, len, pieces(&b), Some(rx))
                .await
                .unwrap());
            let read = read_checked(&store, &d).await;
            if i == 0 {
                // Another blob's index of the same size decodes: the read
                // finds the mismatch and refuses the copy, as it must.
                assert!(read.is_err(), "a wrong index never lets bad bytes out");
                let _ = store.remove(&d).await;
                continue;
            }
            assert_eq!(read.unwrap(), b, "hostile index {i}");
            store.remove(&d).await.unwrap();
        }

        // Bytes that do not hash to the digest are refused, index or not.
        let (b, _) = variant(4);
        let (tx, rx) = tokio::sync::oneshot::channel();
        tx.send(ChunkIndex::of(&b).to_bytes().into()).unwrap();
        let wrong = Digest::of(b"something else");
        let e = err(push_stream(ch.clone(), &wrong, b.len() as u64, pieces(&b), Some(rx)).await);
        assert!(e.contains("DataLoss"), "{e}");
        assert!(store.stat(&wrong).await.unwrap().is_none());
    }

    async fn blob_len(store: &BlobStore, d: &Digest) -> u64 {
        store.stat(d).await.unwrap().unwrap()
    }

    fn err<T>(r: Result<T, ReplicationError>) -> String {
        r.err().map(|e| e.to_string()).unwrap_or_default()
    }

    #[tokio::test]
    async fn a_replica_session_refuses_gaps_wrong_digests_and_unknown_sessions_and_leaves_nothing()
    {
        let (dir, ch, store) = serve().await;

        // A chunk that does not start at the session's end ends the session.
        append(ch.clone(), "1-gap", 0, chunks(&[b"abc"]))
            .await
            .unwrap();
        let e = err(append(ch.clone(), "1-gap", 10, chunks(&[b"x"])).await);
        assert!(e.contains("FailedPrecondition"), "{e}");
        let e = err(seal(ch.clone(), "1-gap", &Digest::of(b"abc"), None).await);
        assert!(e.contains("NotFound"), "{e}");

        // A wrong digest installs nothing and ends the session.
        append(ch.clone(), "1-bad", 0, chunks(&[b"abc"]))
            .await
            .unwrap();
        let wrong = Digest::of(b"abd");
        let e = err(seal(ch.clone(), "1-bad", &wrong, None).await);
        assert!(e.contains("DataLoss"), "{e}");
        assert!(store.stat(&wrong).await.unwrap().is_none());
        assert!(store.stat(&Digest::of(b"abc")).await.unwrap().is_none());

        // Only offset 0 opens a session; ids cannot leave the uploads dir.
        let e = err(append(ch.clone(), "1-none", 5, chunks(&[b"x"])).await);
        assert!(e.contains("NotFound"), "{e}");
        let e = err(append(ch.clone(), "../x", 0, chunks(&[b"x"])).await);
        assert!(e.contains("InvalidArgument"), "{e}");

        // Past the size limit (1 MiB here).
        let big: &'static [u8] = Box::leak(vec![7u8; (1 << 20) + 1].into_boxed_slice());
        let e = err(append(ch.clone(), "1-big", 0, chunks(&[big])).await);
        assert!(e.contains("ResourceExhausted"), "{e}");

        // Abandon drops a session, and is fine with one that is gone.
        append(ch.clone(), "1-left", 0, chunks(&[b"abc"]))
            .await
            .unwrap();
        abandon(ch.clone(), "1-left").await.unwrap();
        abandon(ch.clone(), "1-left").await.unwrap();
        assert!(staged(&dir).is_empty(), "{:?}", staged(&dir));
    }

    /// A re-upload after a collection: the peer still has the file (the
    /// sweep has not run) and answers "already held"; the sender counts it
    /// toward the commit's write quorum. The next sweep must keep it.
    #[tokio::test]
    async fn a_copy_a_push_found_already_here_is_not_swept_before_its_grace() {
        let (_dir, ch, store) = serve().await;
        let grace = Duration::from_millis(300);
        let d = Digest::of(b"collected layer");
        let blob = d.clone();
        let put = |store: &BlobStore| {
            std::fs::create_dir_all(store.path(&blob).parent().unwrap()).unwrap();
            std::fs::write(store.path(&blob), b"collected layer").unwrap();
        };
        put(&store);
        // Past the node's start-up grace, an unclaimed copy goes at once.
        tokio::time::sleep(grace).await;
        assert!(store.remove_unclaimed(&d, grace).await.unwrap());
        put(&store);
        let staged_bytes = stage(b"collected layer").await;
        assert!(
            !push(ch.clone(), &d, &staged_bytes, None).await.unwrap(),
            "already held"
        );
        assert!(!store.remove_unclaimed(&d, grace).await.unwrap());
        assert!(store.path(&d).exists());
        // Once the grace has passed with no new claim, the sweep takes it.
        tokio::time::sleep(grace).await;
        assert!(store.remove_unclaimed(&d, grace).await.unwrap());
        assert!(!store.path(&d).exists());
    }

    /// `bytes` mapped from a file of their own (a sender's staged copy).
    async fn stage(bytes: &[u8]) -> Mapped {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), bytes).unwrap();
        let m = Mapped::open(f.path().to_path_buf()).await.unwrap();
        drop(f);
        m
    }
}
