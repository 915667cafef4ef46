//! Blob transfer between nodes over tonic: `push` streams a local blob to
//! a peer in chunks of about 1 MiB (a bounded channel gives backpressure);
//! the peer stages it as an internal upload, so it is hashed while written,
//! verified, fsynced and renamed into place before it acknowledges. `fetch`
//! streams a blob (or a range) from a peer that holds it.

use bytes::Bytes;
use futures::{Stream, StreamExt, TryStreamExt};
use tonic::transport::Channel;
use tonic::{Request, Response, Status, Streaming};

use crate::blob_store::{BlobStore, Mapped};
use crate::digest::Digest;
use crate::upload::{UploadError, Uploads};

pub mod proto {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("tcr.blobs.v1");
}

use proto::blob_service_client::BlobServiceClient;
use proto::blob_service_server::{BlobService, BlobServiceServer};
use proto::{Chunk, GetRequest, HasManyReply, HasManyRequest, HasReply, PutChunk, PutReply};

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

/// Stream `blob` (mapped bytes of `d`) to the peer behind `channel`.
/// Returns whether the peer wrote it (false: it already held it).
pub async fn push(channel: Channel, d: &Digest, blob: &Mapped) -> Result<bool, ReplicationError> {
    push_stream(channel, d, blob.len(), blob.stream()).await
}

/// Stream `size` bytes that should hash to `d` to the peer behind
/// `channel` (from a local copy, or as an upload arrives). The peer refuses
/// them unless they are exactly `size` bytes hashing to `d`.
pub async fn push_stream<S>(
    channel: Channel,
    d: &Digest,
    size: u64,
    chunks: S,
) -> Result<bool, ReplicationError>
where
    S: Stream<Item = std::io::Result<Bytes>> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel::<PutChunk>(IN_FLIGHT);
    let name = d.to_string();
    let feeder = tokio::spawn(async move {
        let mut chunks = std::pin::pin!(chunks);
        let mut first = true;
        while let Some(data) = chunks.next().await {
            let data = data?;
            let msg = PutChunk {
                digest: if first { name.clone() } else { String::new() },
                size,
                data,
            };
            first = false;
            if tx.send(msg).await.is_err() {
                return Ok(()); // the call ended; its status says why
            }
        }
        if first {
            // An empty blob: one message that names it.
            let _ = tx
                .send(PutChunk {
                    digest: name,
                    size,
                    data: Bytes::new(),
                })
                .await;
        }
        Ok::<(), std::io::Error>(())
    });
    let reply = client(channel)
        .put(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await;
    let fed = feeder.await.map_err(std::io::Error::other)?;
    let reply = reply?;
    fed?;
    Ok(reply.into_inner().written)
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
}

impl BlobRpc {
    /// Replicas are staged as upload sessions named `replica-*`, in the
    /// same directory as client uploads (so the janitor expires leftovers).
    pub fn server(
        store: BlobStore,
        max_blob_bytes: u64,
    ) -> std::io::Result<BlobServiceServer<Self>> {
        let uploads = std::sync::Arc::new(Uploads::open(store.clone())?);
        Ok(BlobServiceServer::new(BlobRpc {
            store,
            uploads,
            max_blob_bytes,
        })
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE))
    }
}

fn upload_status(e: UploadError) -> Status {
    match e {
        UploadError::DigestMismatch { .. } => Status::data_loss(e.to_string()),
        UploadError::TooLarge { .. } => Status::resource_exhausted(e.to_string()),
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
        if self.store.stat(&d).await?.is_some() {
            return Ok(Response::new(PutReply { written: false }));
        }
        let id = format!("replica-{}", uuid::Uuid::new_v4().simple());
        let body = futures::stream::once(async move { Ok::<_, Status>(first.data) })
            .chain(stream.map_ok(|c| c.data));
        match self
            .uploads
            .receive(&id, Box::pin(body), first.size, &d)
            .await
        {
            Ok(_) => Ok(Response::new(PutReply { written: true })),
            Err(e) => {
                tracing::warn!(digest = %d, "refused a replica: {e}");
                Err(upload_status(e))
            }
        }
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
        let Some(size) = self.store.stat(&d).await? else {
            return Err(Status::not_found(format!("this node holds no copy of {d}")));
        };
        if req.offset > size {
            return Err(Status::out_of_range("offset beyond the blob"));
        }
        let len = if req.length == 0 {
            size - req.offset
        } else {
            req.length.min(size - req.offset)
        };
        let chunks = self.store.read_stream(&d, req.offset, len).await?;
        Ok(Response::new(Box::pin(chunks.map(|c| {
            c.map(|data| Chunk { data }).map_err(Status::from)
        }))))
    }
}
