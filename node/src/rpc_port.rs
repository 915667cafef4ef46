//! The RPC port: Raft and cluster calls, blob transfers, peer blob reads
//! and proxied upload requests, under mutual TLS when configured.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::any;
use axum::Router;
use futures::StreamExt;

/// The HTTP routes the RPC port serves beside gRPC: peer blob reads, and
/// upload requests proxied from other nodes, which run through this node's
/// registry router once it exists (see `oci::upload_proxy`).
pub fn http_routes(
    blobs: &tcr_storage::BlobStore,
    served: prometheus::IntCounterVec,
) -> (Router, Arc<OnceLock<Router>>) {
    let proxied: Arc<OnceLock<Router>> = Arc::default();
    let late = proxied.clone();
    let proxy_route = Router::new().route(
        "/v2/{*rest}",
        any(move |mut req: axum::extract::Request| {
            let late = late.clone();
            crate::oci::upload_proxy::forwarded_client(&mut req);
            async move {
                match late.get() {
                    Some(app) => tower::ServiceExt::oneshot(app.clone(), req)
                        .await
                        .into_response(),
                    None => (StatusCode::SERVICE_UNAVAILABLE, "starting").into_response(),
                }
            }
        }),
    );
    let routes = tcr_storage::cluster::peer_reads::routes(blobs.clone(), served).merge(proxy_route);
    (routes, proxied)
}

/// The RPC server on whatever `incoming` yields (TCP or TLS connections).
async fn serve_rpc<I, IO, IE>(routes: tonic::service::Routes, incoming: I)
where
    I: futures::Stream<Item = Result<IO, IE>>,
    IO: tokio::io::AsyncRead
        + tokio::io::AsyncWrite
        + tonic::transport::server::Connected
        + Unpin
        + Send
        + 'static,
    IE: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    if let Err(e) = tonic::transport::Server::builder()
        // A peer that vanished without closing its connection (a
        // partition, a dead host) must not hold a call open forever:
        // a pipelined upload's Append stream lasts the whole upload.
        .http2_keepalive_interval(Some(Duration::from_secs(10)))
        .http2_keepalive_timeout(Some(Duration::from_secs(20)))
        .initial_stream_window_size(Some(8 << 20))
        .initial_connection_window_size(Some(32 << 20))
        .max_frame_size(Some(tcr_raft::MAX_FRAME))
        // HTTP/1.1 too, for blob reads between nodes (peer_reads) and
        // proxied upload requests.
        .accept_http1(true)
        .add_routes(routes)
        .serve_with_incoming(incoming)
        .await
    {
        tracing::error!("RPC server failed: {e}");
    }
}

/// Serve the RPC port: Raft, cluster calls, blob transfers and peer reads,
/// under mutual TLS when configured.
pub fn spawn(
    routes: tonic::service::Routes,
    rpc_listener: tokio::net::TcpListener,
    peer_tls: Option<Arc<tcr_tls::ServerConfig>>,
) -> anyhow::Result<()> {
    match peer_tls {
        Some(config) => {
            let listener = tcr_tls::TlsListener::new(rpc_listener, config)?;
            let incoming = futures::stream::unfold(listener, |mut l| async move {
                let (stream, _) = l.next().await?;
                Some((Ok::<_, std::io::Error>(stream), l))
            })
            .fuse();
            tokio::spawn(serve_rpc(routes, incoming));
        }
        None => {
            // Nagle off: small replies (append-entries acks, forwarded-write
            // results) otherwise wait for the peer's delayed ACK, about 40 ms.
            let incoming =
                tonic::transport::server::TcpIncoming::from(rpc_listener).with_nodelay(Some(true));
            tokio::spawn(serve_rpc(routes, incoming));
        }
    }
    Ok(())
}
