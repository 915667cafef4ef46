//! The registry port's routes: the OCI façade and the management API
//! behind their access decisions, the public endpoints (token, health,
//! metrics, the API document), and the console.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::extract::State;
use axum::http::StatusCode;
use axum::middleware;
use axum::response::IntoResponse;
use axum::routing::{any, get};
use axum::Router;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

use crate::state::AppState;
use crate::{api, auth, metrics, oci};

/// Deadline of the token endpoint, metrics, health and the API document.
const PUBLIC_ROUTE_DEADLINE: Duration = Duration::from_secs(30);

pub fn router(state: Arc<AppState>) -> Router {
    let console = Arc::new(crate::console::Console::new(
        facades(&state),
        state.access.clone(),
        state.api.http_scheme == "https",
    ));
    let token = Router::new()
        .route(
            "/v2/token",
            get(auth::token_endpoint::get).post(auth::token_endpoint::post),
        )
        .with_state(state.access.clone());
    let public = Router::new()
        .merge(token)
        .route(
            "/v1/container-registries/openapi.json",
            get(api::openapi::document),
        )
        .route("/metrics", get(metrics::render_for_operator))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        // Nothing here streams: a request that takes longer is stuck.
        .layer(TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            PUBLIC_ROUTE_DEADLINE,
        ));
    facades(&state)
        .merge(public)
        .merge(crate::console::router(console))
        .fallback(|| async { api::errors::ApiError::not_found("no such endpoint").into_response() })
        .layer(middleware::from_fn_with_state(
            state.clone(),
            metrics::track,
        ))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

/// The registry and management façades, each on its own state behind its
/// door (the access decision, on the auth state). The network reaches them
/// through `router`; the console in-process, for its signed-in caller.
fn facades<S: Clone + Send + Sync + 'static>(state: &Arc<AppState>) -> Router<S> {
    let registry = Router::new()
        .route("/v2", any(oci::dispatch))
        .route("/v2/", any(oci::dispatch))
        .route("/v2/{*rest}", any(oci::dispatch))
        .route_layer(middleware::from_fn_with_state(
            state.access.clone(),
            oci::authorise,
        ))
        .with_state(state.oci.clone());
    let management = api::router()
        .route_layer(middleware::from_fn_with_state(
            state.access.clone(),
            api::authorise,
        ))
        .with_state(state.api.clone());
    registry.merge(management)
}

/// Live: the process answers and its Raft core still runs. A storage
/// error (a full disk under RocksDB, an I/O error) stops openraft for good;
/// failing here makes Kubernetes restart the pod, which recovers everything
/// acknowledged from the log once there is space again.
async fn healthz(State(st): State<Arc<AppState>>) -> impl IntoResponse {
    let failed = st
        .meta
        .raft()
        .metrics()
        .borrow()
        .running_state
        .as_ref()
        .err()
        .map(|e| e.to_string());
    match failed {
        None => (StatusCode::OK, "ok".to_string()),
        Some(e) => {
            tracing::error!("liveness: the Raft core has stopped: {e}");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("not live: the Raft core has stopped: {e}"),
            )
        }
    }
}

/// Ready: a leader is known, this node has caught up (a read-index read
/// succeeds: it applied everything committed when it asked), and it is not
/// draining.
async fn readyz(State(st): State<Arc<AppState>>) -> impl IntoResponse {
    let not = |why: &str| (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {why}"));
    if st.draining.load(Ordering::Relaxed) {
        return not("shutting down");
    }
    if !st.ready.load(Ordering::Relaxed) {
        return not("no leader known yet");
    }
    match tokio::time::timeout(Duration::from_secs(2), st.meta.read()).await {
        Ok(Ok(_)) => (StatusCode::OK, "ready".to_string()),
        Ok(Err(e)) => not(&format!("not caught up: {e}")),
        Err(_) => not("not caught up: no read index within 2 s"),
    }
}

/// `--metrics-addr`: a second listener serving only `/metrics`.
pub async fn serve_metrics_port(
    addr: std::net::SocketAddr,
    state: &Arc<AppState>,
    limits: crate::connections::Limits,
    stop_rx: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding the metrics listener {addr}"))?;
    tracing::info!(%addr, "serving /metrics without authentication (--metrics-addr)");
    let only_metrics = Router::new()
        .route("/metrics", get(metrics::render))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            PUBLIC_ROUTE_DEADLINE,
        ))
        .with_state(state.clone());
    let (st, mut stopped) = (state.clone(), stop_rx);
    tokio::spawn(async move {
        let stop = async move {
            let _ = stopped.wait_for(|s| *s).await;
        };
        crate::connections::serve(listener, only_metrics, limits, &st.metrics, stop).await;
    });
    Ok(())
}
