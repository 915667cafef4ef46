//! Prometheus metrics: request counts and latencies per route class, Raft
//! progress, served at `/metrics`.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry, TextEncoder,
};

use crate::oci::route::{self, Route};
use crate::state::AppState;

pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    latency: HistogramVec,
    raft_term: IntGauge,
    raft_last_log: IntGauge,
    raft_applied: IntGauge,
    raft_is_leader: IntGauge,
    /// The storage loop's last pass (see `tcr_storage::cluster::Report`), by field.
    storage: prometheus::IntGaugeVec,
    /// Blob transfers between nodes by kind and outcome.
    pub transfers: IntCounterVec,
    /// Retention runs finished and what they removed, counted by the
    /// leader that finished them.
    pub retention: IntCounterVec,
    /// Per namespace, from the replicated state (the same on every node).
    namespace_bytes: prometheus::IntGaugeVec,
    namespace_gb_hours: prometheus::GaugeVec,
    /// Registry-port connections by outcome: accepted, refused (past
    /// `--max-connections`), idle_closed (no request in time).
    pub connections: IntCounterVec,
    pub open_connections: IntGauge,
    /// Presented credentials not accepted, by reason; counted per node.
    pub auth_failures: IntCounterVec,
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "tcr_http_requests_total",
                "HTTP requests by route and status",
            ),
            &["method", "route", "status"],
        )
        .expect("metric");
        let latency = HistogramVec::new(
            HistogramOpts::new("tcr_http_request_duration_seconds", "HTTP request latency")
                .buckets(vec![
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0, 30.0,
                ]),
            &["method", "route"],
        )
        .expect("metric");
        let gauge = |name: &str, help: &str| IntGauge::new(name, help).expect("metric");
        let m = Metrics {
            requests,
            latency,
            raft_term: gauge("tcr_raft_term", "current Raft term"),
            raft_last_log: gauge("tcr_raft_last_log_index", "last Raft log index"),
            raft_applied: gauge("tcr_raft_applied_index", "last applied Raft log index"),
            raft_is_leader: gauge("tcr_raft_is_leader", "1 when this node is the leader"),
            storage: prometheus::IntGaugeVec::new(
                Opts::new(
                    "tcr_storage",
                    "blob storage on this node: owned, held, held_bytes, missing (owned, no copy: under-replicated), \
                     misplaced (held, not owned), under_replicated (fewer copies than owners, counted once in the cluster), and since start: pulled, dropped, scrubbed_bytes, corrupt_found, passes",
                ),
                &["what"],
            )
            .expect("metric"),
            transfers: IntCounterVec::new(
                Opts::new(
                    "tcr_blob_transfers_total",
                    "blob transfers between nodes: push (to an owner after an upload), \
                     pipelined_append (a chunked upload copied to an owner while its \
                     chunks arrive; one per owner and upload), remote_read (a read served from another node), remote_read_grpc \
                     (one served over gRPC by a peer without HTTP reads), served_read (a \
                     copy this node sent to a reading peer), cache_fill (a blob streamed \
                     from a peer into this node's cache), cache_hit (a read served from \
                     the cache); result ok|error",
                ),
                &["kind", "result"],
            )
            .expect("metric"),
            retention: IntCounterVec::new(
                Opts::new(
                    "tcr_retention_total",
                    "retention runs finished (runs) and what they removed (tags, manifests), \
                     counted on the leader that finished each run",
                ),
                &["what"],
            )
            .expect("metric"),
            namespace_bytes: prometheus::IntGaugeVec::new(
                Opts::new(
                    "tcr_namespace_stored_bytes",
                    "bytes stored per namespace: each unique blob and manifest counted once",
                ),
                &["namespace"],
            )
            .expect("metric"),
            namespace_gb_hours: prometheus::GaugeVec::new(
                Opts::new(
                    "tcr_namespace_gigabyte_hours",
                    "stored gigabyte-hours per namespace, accumulated by the leader's metering ticks",
                ),
                &["namespace"],
            )
            .expect("metric"),
            connections: IntCounterVec::new(
                Opts::new(
                    "tcr_http_connections_total",
                    "registry-port connections: accepted, refused (past --max-connections: \
                     answered 503), idle_closed (no request within the header timeout)",
                ),
                &["outcome"],
            )
            .expect("metric"),
            open_connections: gauge(
                "tcr_http_connections_open",
                "registry-port connections open now",
            ),
            auth_failures: IntCounterVec::new(
                Opts::new(
                    "tcr_auth_failures_total",
                    "presented credentials not accepted on this node: bad_credentials, \
                     unusable (revoked or expired), throttled (429 after repeated failures), \
                     busy (503: too many secret checks waiting), bad_token",
                ),
                &["reason"],
            )
            .expect("metric"),
            registry,
        };
        m.registry
            .register(Box::new(m.namespace_bytes.clone()))
            .expect("register");
        m.registry
            .register(Box::new(m.namespace_gb_hours.clone()))
            .expect("register");
        m.registry
            .register(Box::new(m.requests.clone()))
            .expect("register");
        m.registry
            .register(Box::new(m.latency.clone()))
            .expect("register");
        m.registry
            .register(Box::new(m.storage.clone()))
            .expect("register");
        m.registry
            .register(Box::new(m.transfers.clone()))
            .expect("register");
        m.registry
            .register(Box::new(m.retention.clone()))
            .expect("register");
        m.registry
            .register(Box::new(m.connections.clone()))
            .expect("register");
        m.registry
            .register(Box::new(m.auth_failures.clone()))
            .expect("register");
        for g in [
            &m.raft_term,
            &m.raft_last_log,
            &m.raft_applied,
            &m.raft_is_leader,
            &m.open_connections,
        ] {
            m.registry.register(Box::new(g.clone())).expect("register");
        }
        m
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

/// A low-cardinality name for the route (never the repository name).
fn route_class(path: &str) -> &'static str {
    if path.starts_with("/v1/") {
        return "management";
    }
    if path.starts_with("/console") {
        return "console";
    }
    match route::parse(path) {
        Some(Route::Base) => "base",
        Some(Route::Catalog) => "catalog",
        Some(Route::Tags { .. }) => "tags",
        Some(Route::Manifest { .. }) => "manifest",
        Some(Route::Blob { .. }) => "blob",
        Some(Route::UploadStart { .. }) | Some(Route::Upload { .. }) => "upload",
        Some(Route::Referrers { .. }) => "referrers",
        None => "other",
    }
}

pub async fn track(State(st): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let class = route_class(req.uri().path());
    let method = req.method().as_str().to_string();
    let started = Instant::now();
    let resp = next.run(req).await;
    st.metrics
        .latency
        .with_label_values(&[method.as_str(), class])
        .observe(started.elapsed().as_secs_f64());
    st.metrics
        .requests
        .with_label_values(&[method.as_str(), class, resp.status().as_str()])
        .inc();
    resp
}

/// `/metrics` on the registry port: it names every namespace of every
/// organisation, so only the operator may read it (an open node, which
/// listens on loopback only, answers anyone). `--metrics-addr` serves it
/// without a credential on a listener of its own.
pub async fn render_for_operator(State(st): State<Arc<AppState>>, req: Request) -> Response {
    use crate::api::errors::ApiError;
    let peer = crate::auth::peer_ip(&req);
    match st.access.auth.caller(&st.access, req.headers(), peer).await {
        Ok(c) if c.is_admin() => render(State(st)).await,
        Ok(c) if c.credential().is_some() => {
            ApiError::denied("only the registry operator may read /metrics").into_response()
        }
        Ok(_) => ApiError::new(
            axum::http::StatusCode::UNAUTHORIZED,
            "UNAUTHENTICATED",
            "/metrics needs the operator's credential (or use --metrics-addr)",
        )
        .into_response(),
        Err(e) => crate::api::errors::refused(crate::auth::refusal(&st.access, e)),
    }
}

pub async fn render(State(st): State<Arc<AppState>>) -> Response {
    let m = &st.metrics;
    {
        let rm = st.meta.raft().metrics();
        let rm = rm.borrow();
        m.raft_term.set(rm.current_term as i64);
        m.raft_last_log.set(rm.last_log_index.unwrap_or(0) as i64);
        m.raft_applied
            .set(rm.last_applied.map(|l| l.index).unwrap_or(0) as i64);
        m.raft_is_leader
            .set(i64::from(rm.current_leader == Some(st.node_id)));
    }
    let r = st.jobs.reconciler.report();
    for (what, v) in [
        ("owned", r.owned),
        ("held", r.held),
        ("held_bytes", r.held_bytes),
        ("missing", r.missing),
        ("misplaced", r.misplaced),
        ("under_replicated", r.under_replicated),
        ("pulled", r.pulled),
        ("dropped", r.dropped),
        ("scrubbed_bytes", r.scrubbed_bytes),
        ("corrupt_found", r.corrupt_found),
        ("passes", r.passes),
    ] {
        m.storage.with_label_values(&[what]).set(v as i64);
    }
    // Local state: a scrape must not wait on the leader.
    m.namespace_bytes.reset();
    m.namespace_gb_hours.reset();
    let reader = st.meta.reader();
    if let Ok(all) = reader.all_namespaces() {
        for ns in all {
            let u = reader
                .namespace_usage(&ns.name)
                .ok()
                .flatten()
                .unwrap_or_default();
            m.namespace_bytes
                .with_label_values(&[ns.name.as_str()])
                .set(u.bytes() as i64);
            m.namespace_gb_hours
                .with_label_values(&[ns.name.as_str()])
                .set(u.gb_hours());
        }
    }
    let mut buf = Vec::new();
    if let Err(e) = TextEncoder::new().encode(&m.registry.gather(), &mut buf) {
        return (axum::http::StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response();
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], buf).into_response()
}
