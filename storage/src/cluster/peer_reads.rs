//! Blob reads between nodes over HTTP/1.1 on the RPC port (under mutual
//! TLS when peer certificates are configured). A node
//! asked for a blob it does not hold streams it from a holder; here the
//! holder writes its mapped copy straight to the socket and the reader
//! takes the bytes as the socket hands them over, where the gRPC `Get`
//! copies every byte once into a message and once out of one, and frames
//! it for HTTP/2 on the way. The gRPC `Get` stays: it serves peers of an
//! older version, and is what a reader falls back to.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use super::ClusterView;
use super::{checked_stream, replication};
use crate::integrity::{ChunkIndex, CHUNK};
use crate::{BlobStore, Digest};
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{Stream, StreamExt, TryStreamExt};
use serde::Deserialize;

/// A peer that does not start answering a read in this time is skipped.
const FETCH_START: Duration = Duration::from_secs(5);

/// The route, on the RPC port beside the gRPC services.
const ROUTE: &str = "/tcr.blobs.v1/blobs/{digest}";

/// A copy's integrity index, for a reader that checks what it streams.
const INDEX_ROUTE: &str = "/tcr.blobs.v1/blobs/{digest}/index";

/// A peer that stops sending for this long is given up on (the reader's
/// client then sees an error and cuts its own response).
const IDLE: Duration = Duration::from_secs(30);

#[derive(Deserialize)]
struct Span {
    #[serde(default)]
    offset: u64,
    /// 0: to the end.
    #[serde(default)]
    length: u64,
}

/// The route serving this node's copies to its peers; `served` counts the
/// reads it answers (`kind="served_read"`: an owner's egress to readers).
pub fn routes(store: BlobStore, served: prometheus::IntCounterVec) -> axum::Router {
    axum::Router::new()
        .route(ROUTE, axum::routing::get(read))
        .route(INDEX_ROUTE, axum::routing::get(index))
        // A span per read, as on the HTTP port.
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .with_state((store, served))
}

async fn read(
    State((store, served)): State<(BlobStore, prometheus::IntCounterVec)>,
    Path(digest): Path<String>,
    Query(span): Query<Span>,
) -> Response {
    let d: Digest = match digest.parse() {
        Ok(d) => d,
        Err(e) => return (StatusCode::BAD_REQUEST, format!("{e}")).into_response(),
    };
    let size = match store.stat(&d).await {
        Ok(Some(size)) => size,
        Ok(None) => return not_held(&d),
        Err(e) => return (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    };
    if span.offset > size {
        return (StatusCode::RANGE_NOT_SATISFIABLE, "offset beyond the blob").into_response();
    }
    let len = match span.length {
        0 => size - span.offset,
        n => n.min(size - span.offset),
    };
    // Checked against the copy's integrity index, so a range a peer asks
    // for (which it cannot verify itself) is never rotten bytes.
    let r = store.read_stream_checked(&d, span.offset, len).await;
    let ok = r.is_ok();
    served
        .with_label_values(&["served_read", if ok { "ok" } else { "error" }])
        .inc();
    match r {
        Ok(chunks) => (
            [(header::CONTENT_LENGTH, len.to_string())],
            axum::body::Body::from_stream(chunks),
        )
            .into_response(),
        // Dropped between the stat and the open (a rebalance moved it).
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => not_held(&d),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// The integrity index of this node's copy (made now, from a full
/// SHA-256 check, if the copy has none or a damaged one).
async fn index(
    State((store, _)): State<(BlobStore, prometheus::IntCounterVec)>,
    Path(digest): Path<String>,
) -> Response {
    let d: Digest = match digest.parse() {
        Ok(d) => d,
        Err(e) => return (StatusCode::BAD_REQUEST, format!("{e}")).into_response(),
    };
    match store.integrity_index(&d).await {
        Ok(index) => (
            [(header::CONTENT_TYPE, "application/octet-stream")],
            index.to_bytes(),
        )
            .into_response(),
        // No copy, or a corrupt one (quarantined just now).
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => not_held(&d),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// Marks a 404 that means "no copy here", not "no such route" (a proxy,
/// a peer of another version): only the former is not worth a retry.
const NOT_HELD: &str = "tcr-not-held";

fn not_held(d: &Digest) -> Response {
    (
        StatusCode::NOT_FOUND,
        [(NOT_HELD, "1")],
        format!("this node holds no copy of {d}"),
    )
        .into_response()
}

fn client() -> &'static reqwest::Client {
    static CLIENT: OnceLock<reqwest::Client> = OnceLock::new();
    CLIENT.get_or_init(|| super::peer_http::client(Duration::from_secs(2), Some(IDLE)))
}

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The peer answered: it holds no copy.
    #[error("{0}")]
    NotHeld(String),
    /// Anything else: no answer, another status, a peer without this route.
    #[error("{0}")]
    Failed(String),
    /// A peer that has no such route (an older version).
    #[error("{0}")]
    Unsupported(String),
}

/// How a peer served a read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    Http,
    Grpc,
}

/// `len` bytes of `d` from `start` (`len` 0: to the end) from the peer at
/// `rpc_addr`: over HTTP/1.1, else (a peer of an older version, a failed
/// connection) over the gRPC `Get`. A peer that answers that it holds no
/// copy is not asked twice.
pub async fn fetch_from(
    view: &dyn ClusterView,
    rpc_addr: &str,
    d: &Digest,
    start: u64,
    len: u64,
) -> Result<(BoxStream<'static, std::io::Result<Bytes>>, Via), String> {
    let http = tokio::time::timeout(FETCH_START, fetch(rpc_addr, d, start, len));
    let http_error = match http.await {
        Ok(Ok(stream)) => return Ok((stream.boxed(), Via::Http)),
        Ok(Err(FetchError::NotHeld(why))) => return Err(why),
        Ok(Err(FetchError::Failed(why) | FetchError::Unsupported(why))) => why,
        Err(_) => format!("no answer in {FETCH_START:?}"),
    };
    let Some(channel) = view.channel(rpc_addr) else {
        return Err(http_error);
    };
    match tokio::time::timeout(FETCH_START, replication::fetch(channel, d, start, len)).await {
        Ok(Ok(stream)) => Ok((stream.map_err(std::io::Error::other).boxed(), Via::Grpc)),
        Ok(Err(e)) => Err(format!("{http_error}; over gRPC: {e}")),
        Err(_) => Err(format!(
            "{http_error}; over gRPC: no answer in {FETCH_START:?}"
        )),
    }
}

/// A read from a peer whose bytes were checked here, and the integrity
/// index they were checked against (`None`: checked against the digest,
/// or by the peer only).
pub type Checked = (
    BoxStream<'static, std::io::Result<Bytes>>,
    Via,
    Option<Arc<ChunkIndex>>,
);

/// Bytes `start..start + len` of `d` (a blob of `size` bytes) from the
/// peer at `rpc_addr`, checked here before any of them are passed on: a
/// blob of one chunk is fetched whole and checked against its digest;
/// from a larger one the peer sends the whole chunks the bytes touch,
/// each checked against the peer's integrity index. A peer of an older
/// version, which serves no index, is read as by `fetch_from` (its own
/// reads are checked there; a whole read is checked against the digest
/// by the caller).
pub async fn fetch_checked(
    view: &dyn ClusterView,
    rpc_addr: &str,
    d: &Digest,
    start: u64,
    len: u64,
    size: u64,
) -> Result<Checked, String> {
    if size <= CHUNK {
        let (body, via) = fetch_from(view, rpc_addr, d, 0, size).await?;
        let whole = checked_whole(body, d.clone(), size);
        let (from, to) = (start as usize, start.saturating_add(len).min(size) as usize);
        let part = whole.map_ok(move |b| b.slice(from.min(b.len())..to.min(b.len())));
        return Ok((part.boxed(), via, None));
    }
    let index = match tokio::time::timeout(FETCH_START, fetch_index(rpc_addr, d, size)).await {
        Ok(Ok(index)) => Arc::new(index),
        Ok(Err(FetchError::NotHeld(why) | FetchError::Failed(why))) => return Err(why),
        Ok(Err(FetchError::Unsupported(why))) => {
            tracing::debug!(peer = rpc_addr, digest = %d, "no index from the peer ({why}); its read is checked there");
            let (body, via) = fetch_from(view, rpc_addr, d, start, len).await?;
            return Ok((body, via, None));
        }
        Err(_) => return Err(format!("no index in {FETCH_START:?}")),
    };
    let span = checked_stream::aligned(&index, start, len);
    if span.is_empty() {
        return Ok((futures::stream::empty().boxed(), Via::Http, Some(index)));
    }
    let (body, via) = fetch_from(view, rpc_addr, d, span.start, span.end - span.start).await?;
    let checked = checked_stream::checked_range(body, index.clone(), start, len);
    Ok((checked.boxed(), via, Some(index)))
}

/// A small blob's `size` bytes from `body`, passed on in one piece once
/// they hash to `d` (nothing of a copy that does not).
fn checked_whole(
    mut body: BoxStream<'static, std::io::Result<Bytes>>,
    d: Digest,
    size: u64,
) -> impl Stream<Item = std::io::Result<Bytes>> + Send + 'static {
    futures::stream::once(async move {
        let mut all = bytes::BytesMut::with_capacity(size as usize);
        while let Some(piece) = body.next().await {
            all.extend_from_slice(&piece?);
            if all.len() as u64 > size {
                return Err(std::io::Error::other("the peer sent more than the blob"));
            }
        }
        if all.len() as u64 != size || Digest::of(&all) != d {
            return Err(std::io::Error::other(format!(
                "the peer's copy of {d} failed verification"
            )));
        }
        Ok(all.freeze())
    })
}

/// The integrity index of the peer's copy of `d` (a blob of `size` bytes),
/// its length checked before it is read.
async fn fetch_index(rpc_addr: &str, d: &Digest, size: u64) -> Result<ChunkIndex, FetchError> {
    let url = format!(
        "{}://{rpc_addr}/tcr.blobs.v1/blobs/{d}/index",
        super::peer_http::scheme()
    );
    let resp = get(url).await.map_err(|(e, status)| match (e, status) {
        // No HTTP at all (a peer of the oldest versions, gRPC only), or no
        // such route (an older version).
        (FetchError::Failed(why), None | Some(StatusCode::NOT_FOUND)) => {
            FetchError::Unsupported(why)
        }
        (e, _) => e,
    })?;
    let want = ChunkIndex::encoded_len(size);
    if want.is_none() || resp.content_length() != want.map(|n| n as u64) {
        return Err(FetchError::Failed(format!(
            "the peer offered an index of {:?} bytes for a blob of {size}",
            resp.content_length()
        )));
    }
    // hyper ends the body at the announced length.
    let bytes = resp
        .bytes()
        .await
        .map_err(|e| FetchError::Failed(e.to_string()))?;
    ChunkIndex::from_bytes(&bytes, size)
        .map_err(|e| FetchError::Failed(format!("the peer's index of {d}: {e}")))
}

/// A GET to a peer, answered 200; else `NotHeld` (the peer says it has no
/// copy) or `Failed`, with the status if there was an answer.
async fn get(url: String) -> Result<reqwest::Response, (FetchError, Option<StatusCode>)> {
    let resp = client()
        .get(url)
        .send()
        .await
        .map_err(|e| (FetchError::Failed(e.to_string()), None))?;
    let status = resp.status();
    if status == StatusCode::OK {
        return Ok(resp);
    }
    let held = !resp.headers().contains_key(NOT_HELD);
    let why = format!("{status}: {}", resp.text().await.unwrap_or_default());
    Err(match held {
        true => (FetchError::Failed(why), Some(status)),
        false => (FetchError::NotHeld(why), Some(status)),
    })
}

/// `len` bytes of `d` from `start` (`len` 0: to the end) from the node whose
/// RPC port is `rpc_addr`, over HTTP/1.1. The stream ends with an error if
/// the peer sends fewer bytes than it announced.
async fn fetch(
    rpc_addr: &str,
    d: &Digest,
    start: u64,
    len: u64,
) -> Result<impl Stream<Item = std::io::Result<Bytes>> + Send + 'static, FetchError> {
    let url = format!(
        "{}://{rpc_addr}/tcr.blobs.v1/blobs/{d}?offset={start}&length={len}",
        super::peer_http::scheme()
    );
    let resp = get(url).await.map_err(|(e, _)| e)?;
    // A length past the end of the blob is cut to it, as by the gRPC `Get`;
    // hyper ends the body with an error if fewer bytes come than announced.
    let offered = resp.content_length();
    if offered.is_none() || (len > 0 && offered > Some(len)) {
        return Err(FetchError::Failed(format!(
            "the peer offered {offered:?} bytes where {len} were asked for"
        )));
    }
    Ok(resp.bytes_stream().map_err(std::io::Error::other))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    /// A store holding one blob of `data`.
    fn store_with(dir: &std::path::Path, data: &[u8]) -> (BlobStore, Digest) {
        let store = BlobStore::open(dir).unwrap();
        let d = Digest::of(data);
        let path = store.path(&d);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, data).unwrap();
        (store, d)
    }

    /// A node's RPC port: the gRPC blob service, and the HTTP route unless
    /// it plays a peer of an older version.
    async fn serve(store: BlobStore, with_http: bool) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let uploads = std::sync::Arc::new(crate::Uploads::open(store.clone()).unwrap());
        let grpc = replication::BlobRpc::server(store.clone(), uploads, 1 << 30);
        let routes = if with_http {
            let served = prometheus::IntCounterVec::new(
                prometheus::Opts::new("served", "reads served"),
                &["kind", "result"],
            )
            .unwrap();
            tonic::service::Routes::from(routes(store, served)).add_service(grpc)
        } else {
            tonic::service::Routes::new(grpc)
        };
        let incoming = tonic::transport::server::TcpIncoming::from(listener);
        tokio::spawn(
            tonic::transport::Server::builder()
                .accept_http1(with_http)
                .add_routes(routes)
                .serve_with_incoming(incoming),
        );
        addr
    }

    async fn read_all(
        network: &dyn ClusterView,
        addr: &str,
        d: &Digest,
        start: u64,
        len: u64,
    ) -> Result<(Vec<u8>, Via), String> {
        let (stream, via) = fetch_from(network, addr, d, start, len).await?;
        let chunks: Vec<Bytes> = stream.try_collect().await.map_err(|e| e.to_string())?;
        Ok((chunks.concat(), via))
    }

    #[tokio::test]
    async fn a_peer_serves_whole_and_partial_reads_over_http_and_an_older_one_over_grpc() {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..(3u32 << 20) + 17).map(|i| (i % 251) as u8).collect();
        let (store, d) = store_with(dir.path(), &data);
        let network = super::super::PlainChannels::default();

        let new = serve(store.clone(), true).await;
        let (whole, via) = read_all(&network, &new, &d, 0, 0).await.unwrap();
        assert_eq!((whole == data, via), (true, Via::Http));
        let (part, via) = read_all(&network, &new, &d, 1000, 5000).await.unwrap();
        assert_eq!((&part[..], via), (&data[1000..6000], Via::Http));
        // A length past the end is cut to the blob.
        let (tail, via) = read_all(&network, &new, &d, data.len() as u64 - 10, 100)
            .await
            .unwrap();
        assert_eq!((&tail[..], via), (&data[data.len() - 10..], Via::Http));

        let missing = Digest::of(b"not stored");
        let err = read_all(&network, &new, &missing, 0, 0).await.unwrap_err();
        assert!(err.contains("holds no copy"), "{err}");
        assert!(!err.contains("gRPC"), "asked twice: {err}");

        let old = serve(store, false).await;
        let (whole, via) = read_all(&network, &old, &d, 0, 0).await.unwrap();
        assert_eq!((whole == data, via), (true, Via::Grpc));
        let (part, via) = read_all(&network, &old, &d, 1000, 5000).await.unwrap();
        assert_eq!((&part[..], via), (&data[1000..6000], Via::Grpc));
    }

    /// `fetch_checked`, read to its end.
    async fn checked(
        network: &dyn ClusterView,
        addr: &str,
        d: &Digest,
        start: u64,
        len: u64,
        size: u64,
    ) -> Result<(Vec<u8>, Via, Option<Arc<ChunkIndex>>), String> {
        let (stream, via, index) = fetch_checked(network, addr, d, start, len, size).await?;
        let chunks: Vec<Bytes> = stream.try_collect().await.map_err(|e| e.to_string())?;
        Ok((chunks.concat(), via, index))
    }

    #[tokio::test]
    async fn a_range_through_a_reader_is_checked_against_the_holders_index() {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..(3u32 << 20) + 17).map(|i| (i % 251) as u8).collect();
        let (store, d) = store_with(dir.path(), &data);
        let network = super::super::PlainChannels::default();
        let size = data.len() as u64;
        let addr = serve(store.clone(), true).await;
        // The holder's index is the one its bytes make, indexed on demand
        // for a copy that had none.
        assert_eq!(
            fetch_index(&addr, &d, size).await.unwrap(),
            ChunkIndex::of(&data)
        );
        assert!(store.has_index(&d).await);
        let ranges = [
            (0, 10),
            (1000, 5000),
            ((1 << 20) - 3, 7),
            (5, size - 9),
            (size - 1, 1),
        ];
        for (start, len) in ranges {
            let (got, via, index) = checked(&network, &addr, &d, start, len, size)
                .await
                .unwrap();
            let want = &data[start as usize..(start + len) as usize];
            assert!(got == want, "range {start}+{len} via {via:?}");
            assert_eq!(index.as_deref(), Some(&ChunkIndex::of(&data)));
        }
        // A blob of one chunk is fetched whole and checked against its digest.
        let (small_store, small) = store_with(&dir.path().join("small"), b"a small blob");
        let small_addr = serve(small_store, true).await;
        let (got, _, index) = checked(&network, &small_addr, &small, 2, 5, 12)
            .await
            .unwrap();
        assert_eq!((&got[..], index), (&b"small"[..], None));

        // A peer of an older version (gRPC only) serves the range unchecked
        // here: its own reads are checked there.
        let old = serve(store, false).await;
        let (got, via, index) = checked(&network, &old, &d, 1000, 5000, size).await.unwrap();
        assert_eq!((got == data[1000..6000], via), (true, Via::Grpc));
        assert!(index.is_none());

        let missing = Digest::of(b"not stored");
        for size in [10, 10 << 20] {
            let err = checked(&network, &addr, &missing, 0, 1, size)
                .await
                .unwrap_err();
            assert!(err.contains("holds no copy"), "{err}");
        }
        // An index of another length is refused before it is read, one
        // for another size once decoded.
        let err = checked(&network, &addr, &d, 0, 1, size + (1 << 20))
            .await
            .unwrap_err();
        assert!(err.contains("offered an index"), "{err}");
        let err = checked(&network, &addr, &d, 0, 1, size + 1)
            .await
            .unwrap_err();
        assert!(err.contains("describes"), "{err}");
    }

    #[tokio::test]
    async fn the_index_route_refuses_what_is_not_a_digest() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = store_with(dir.path(), b"x");
        let addr = serve(store, true).await;
        for bad in [
            "sha256:zz",
            "..%2F..%2Fetc%2Fpasswd",
            "sha256:00",
            "md5:0123",
        ] {
            let r = reqwest::get(format!("http://{addr}/tcr.blobs.v1/blobs/{bad}/index"))
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{bad}");
        }
    }

    /// A holder that sends a sound index and, for every read, `sent`
    /// instead of its copy (keep-alive: one connection serves both).
    async fn lying_peer(index: Vec<u8>, sent: Vec<u8>) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            loop {
                let Ok((mut socket, _)) = listener.accept().await else {
                    return;
                };
                let (index, sent) = (index.clone(), sent.clone());
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut byte = [0u8; 1];
                    loop {
                        while !head.ends_with(b"\r\n\r\n") {
                            if tokio::io::AsyncReadExt::read(&mut socket, &mut byte)
                                .await
                                .unwrap_or(0)
                                == 0
                            {
                                return;
                            }
                            head.push(byte[0]);
                        }
                        let line = String::from_utf8_lossy(&head).to_string();
                        let body = if line.contains("/index ") {
                            &index
                        } else {
                            &sent
                        };
                        let reply =
                            format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", body.len());
                        socket.write_all(reply.as_bytes()).await.unwrap();
                        socket.write_all(body).await.unwrap();
                        head.clear();
                    }
                });
            }
        });
        addr
    }

    #[tokio::test]
    async fn a_range_whose_bytes_do_not_match_the_index_is_cut_before_them() {
        let data: Vec<u8> = (0..(3u32 << 20)).map(|i| (i % 253) as u8).collect();
        let d = Digest::of(&data);
        let size = data.len() as u64;
        let index = ChunkIndex::of(&data);
        // The range 1 MiB - 10 .. 2 MiB + 10 spans chunks 0 to 2; the peer
        // sends them with a byte of chunk 1 flipped.
        let (start, len) = ((1u64 << 20) - 10, (1u64 << 20) + 20);
        let mut sent = data[..3 << 20].to_vec();
        sent[(1 << 20) + 77] ^= 1;
        let addr = lying_peer(index.to_bytes(), sent).await;
        let network = super::super::PlainChannels::default();
        let (mut s, _, _) = fetch_checked(&network, &addr, &d, start, len, size)
            .await
            .unwrap();
        let mut got = Vec::new();
        let err = loop {
            match s.next().await {
                Some(Ok(b)) => got.extend_from_slice(&b),
                Some(Err(e)) => break e.to_string(),
                None => panic!("a range with a flipped byte passed"),
            }
        };
        assert!(err.contains("chunk 1"), "{err}");
        // Only the sound bytes of chunk 0 went on.
        assert!(
            got == data[start as usize..1 << 20],
            "{} bytes passed",
            got.len()
        );
    }

    #[tokio::test]
    async fn a_small_blob_that_does_not_match_its_digest_passes_nothing() {
        let data = b"a small blob".to_vec();
        let d = Digest::of(&data);
        let mut sent = data.clone();
        sent[3] ^= 1;
        let addr = lying_peer(Vec::new(), sent).await;
        let network = super::super::PlainChannels::default();
        let (s, _, _) = fetch_checked(&network, &addr, &d, 0, 12, 12).await.unwrap();
        let items: Vec<_> = s.collect().await;
        assert_eq!(items.len(), 1, "bytes passed before the error");
        let err = items[0].as_ref().unwrap_err().to_string();
        assert!(err.contains("failed verification"), "{err}");
    }

    #[tokio::test]
    async fn a_peer_that_sends_less_than_it_announced_ends_the_stream_with_an_error() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut request = [0u8; 4096];
            let _ = tokio::io::AsyncReadExt::read(&mut socket, &mut request).await;
            socket
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n")
                .await
                .unwrap();
            socket.write_all(&[7u8; 50]).await.unwrap();
            // Closed here, 50 bytes short.
        });
        let d = Digest::of(&[7u8; 100]);
        let (stream, via) = fetch_from(&super::super::PlainChannels::default(), &addr, &d, 0, 0)
            .await
            .unwrap();
        assert_eq!(via, Via::Http);
        let read: Result<Vec<Bytes>, _> = stream.try_collect().await;
        assert!(read.is_err(), "a short body read as complete");
    }
}
