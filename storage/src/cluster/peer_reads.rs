//! Blob reads between nodes over HTTP/1.1 on the RPC port (under mutual
//! TLS when peer certificates are configured). A node
//! asked for a blob it does not hold streams it from a holder; here the
//! holder writes its mapped copy straight to the socket and the reader
//! takes the bytes as the socket hands them over, where the gRPC `Get`
//! copies every byte once into a message and once out of one, and frames
//! it for HTTP/2 on the way. The gRPC `Get` stays: it serves peers of an
//! older version, and is what a reader falls back to.

use std::sync::OnceLock;
use std::time::Duration;

use super::replication;
use super::ClusterView;
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
        Ok(Err(FetchError::Failed(why))) => why,
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
    let resp = client()
        .get(url)
        .send()
        .await
        .map_err(|e| FetchError::Failed(e.to_string()))?;
    let status = resp.status();
    if status != StatusCode::OK {
        let held = !resp.headers().contains_key(NOT_HELD);
        let why = format!("{status}: {}", resp.text().await.unwrap_or_default());
        return Err(if held {
            FetchError::Failed(why)
        } else {
            FetchError::NotHeld(why)
        });
    }
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
