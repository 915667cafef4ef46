//! The registry port's connections: HTTP/1.1 and HTTP/2 served by hyper
//! with a timer (so a client that trickles its headers, or never sends a
//! request, is cut off), HTTP/2 limits, a cap on open connections that
//! answers the ones past it with 503 instead of failing the ones already
//! served, and a graceful stop.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{header, HeaderValue, Request, Response};
use axum::response::IntoResponse;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::sync::Semaphore;

use crate::metrics::Metrics;
use crate::oci::errors::OciError;

/// How the registry port treats its connections (`--header-read-timeout-secs`,
/// `--max-connections`).
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Time to send a request's headers; also how long an HTTP/1.1
    /// connection may sit idle between requests, and how long any
    /// connection may go before its first request.
    pub header_read_timeout: Duration,
    pub max_connections: usize,
}

/// Connections past the cap that are still answered (a 503, then closed);
/// past this many as well they are closed at once.
const OVERFLOW: usize = 256;
/// How long an over-the-cap connection is given to be told so.
const OVERFLOW_DEADLINE: Duration = Duration::from_secs(5);
/// Concurrent requests on one HTTP/2 connection.
const H2_MAX_STREAMS: u32 = 256;
/// Decoded header bytes of one HTTP/2 request (HTTP/1.1 is bounded by
/// hyper's 100 headers and read buffer).
const H2_MAX_HEADER_LIST: u32 = 64 << 10;

fn builder(limits: Limits) -> auto::Builder<TokioExecutor> {
    let mut b = auto::Builder::new(TokioExecutor::new());
    b.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(true);
    b.http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(H2_MAX_STREAMS)
        .max_header_list_size(H2_MAX_HEADER_LIST)
        // A peer that vanished (no FIN) is found by pings, not by waiting.
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(Duration::from_secs(20));
    b
}

/// Serve `app` on the connections `listener` yields until `stop` completes,
/// then let the requests in flight finish (the caller bounds how long).
pub async fn serve<L>(
    mut listener: L,
    app: Router,
    limits: Limits,
    metrics: &Metrics,
    stop: impl Future<Output = ()>,
) where
    L: axum::serve::Listener<Addr = SocketAddr>,
{
    let (counts, open) = (
        metrics.connections.clone(),
        metrics.open_connections.clone(),
    );
    let builder = builder(limits);
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let overflow = Arc::new(Semaphore::new(OVERFLOW));
    let graceful = GracefulShutdown::new();
    tokio::pin!(stop);
    loop {
        let (io, peer) = tokio::select! {
            c = listener.accept() => c,
            () = &mut stop => break,
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            counts.with_label_values(&["refused"]).inc();
            match overflow.clone().try_acquire_owned() {
                Ok(permit) => {
                    tokio::spawn(async move {
                        refuse(io).await;
                        drop(permit);
                    });
                }
                Err(_) => drop(io),
            }
            continue;
        };
        counts.with_label_values(&["accepted"]).inc();
        let started = Arc::new(AtomicBool::new(false));
        let service = service(app.clone(), peer, started.clone());
        let conn = builder
            .serve_connection(TokioIo::new(io), service)
            .into_owned();
        let conn = graceful.watcher().watch(conn);
        let (first, counts, open) = (limits.header_read_timeout, counts.clone(), open.clone());
        tokio::spawn(async move {
            let _slot = slot;
            open.inc();
            tokio::pin!(conn);
            // hyper times out headers once it knows the protocol; before
            // that (no byte at all, or an HTTP/2 preface and nothing after)
            // only this deadline does.
            let ended = match tokio::time::timeout(first, &mut conn).await {
                Ok(r) => Some(r),
                Err(_) if !started.load(Ordering::Relaxed) => {
                    counts.with_label_values(&["idle_closed"]).inc();
                    tracing::debug!(%peer, "no request within {first:?}: closing");
                    None
                }
                Err(_) => Some(conn.await),
            };
            if let Some(Err(e)) = ended {
                tracing::debug!(%peer, "connection ended: {e}");
            }
            open.dec();
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// The router as a hyper service that knows the client's address (for
/// `ConnectInfo`) and notes that a request arrived.
fn service(
    app: Router,
    peer: SocketAddr,
    started: Arc<AtomicBool>,
) -> impl hyper::service::Service<
    Request<Incoming>,
    Response = Response<Body>,
    Error = Infallible,
    Future = impl Future<Output = Result<Response<Body>, Infallible>> + Send + 'static,
> + Clone {
    hyper::service::service_fn(move |mut req: Request<Incoming>| {
        started.store(true, Ordering::Relaxed);
        req.extensions_mut().insert(ConnectInfo(peer));
        tower::ServiceExt::oneshot(app.clone(), req.map(Body::new))
    })
}

/// One answer on a connection past the cap: 503 with `Retry-After`, then
/// the connection is closed.
async fn refuse<IO>(io: IO)
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let mut b = auto::Builder::new(TokioExecutor::new());
    b.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(2))
        .keep_alive(false);
    let busy = hyper::service::service_fn(|_req: Request<Incoming>| async {
        let mut resp = OciError::unavailable(
            "this node has as many open connections as it serves (--max-connections); \
             retry, or use another node",
        )
        .into_response();
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        Ok::<_, Infallible>(resp)
    });
    let _ = tokio::time::timeout(
        OVERFLOW_DEADLINE,
        b.serve_connection(TokioIo::new(io), busy),
    )
    .await;
}

/// Raise this process's open-file limit to its hard limit (the soft default
/// is often 1024, below `--max-connections`), and warn when even that
/// leaves too few descriptors for the connections plus RocksDB and blobs.
pub fn raise_descriptor_limit(max_connections: usize) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct given.
    let got = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
    if got != 0 {
        return;
    }
    if lim.rlim_cur < lim.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: as above.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            lim = raised;
        }
    }
    // Headroom for RocksDB's files, blobs being read, peers and uploads.
    let needed = max_connections as u64 + 1024;
    let limit: u64 = lim.rlim_cur;
    if limit < needed {
        tracing::warn!(
            limit,
            max_connections,
            "the open-file limit is below --max-connections + 1024: under load, accepting \
             connections or opening files may fail; raise `ulimit -n` or lower --max-connections"
        );
    }
}
