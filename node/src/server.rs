//! Starting a node: open the stores, start Raft (initialising a one-node
//! cluster on an empty data dir), then serve HTTP until SIGTERM/SIGINT.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use axum::extract::State;
use axum::http::StatusCode;
use axum::middleware;
use axum::response::IntoResponse;
use axum::routing::{any, get};
use axum::Router;
use futures::StreamExt;
use tcr_raft::consensus::network::Network;
use tcr_raft::consensus::rpc::{
    decode, encode, AssignReply, AssignRequest, JoinReply, JoinRequest,
};
use tcr_raft::consensus::transfer::TransferGate;
use tcr_raft::{NodeInfo, Raft};
use tcr_storage::{BlobStore, Uploads};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

use crate::auth::Auth;
use crate::config::Config;
use crate::metadata::Metadata;
use crate::metrics::Metrics;
use crate::{api, auth, metrics, oci};

pub struct AppState {
    pub node_id: u64,
    pub meta: Metadata,
    pub blobs: BlobStore,
    pub uploads: Arc<Uploads>,
    /// Reads of blobs wherever they are, and their placement.
    pub replicas: tcr_storage::cluster::Replicas,
    /// Writes of uploads into replicated blobs.
    pub writer: tcr_storage::cluster::BlobWriter,
    pub reconciler: tcr_storage::cluster::Reconciler,
    pub max_manifest_bytes: usize,
    pub max_blob_bytes: u64,
    /// Open upload sessions per namespace and per credential on this node.
    pub upload_caps: tcr_storage::SessionCaps,
    pub body_idle_timeout: Duration,
    pub metrics: Metrics,
    pub auth: Auth,
    pub ready: AtomicBool,
    /// Set on SIGTERM: not ready, no new uploads, leadership handed over.
    pub draining: AtomicBool,
    /// Default grace period of garbage collection.
    pub gc_grace_secs: u64,
    pub retention: crate::jobs::retention::Retention,
    pub rate_limits: crate::rate_limits::RateLimitsGate,
    /// `https` when the registry port serves TLS (every node's does, or
    /// none's): the scheme of redirects to another node.
    pub http_scheme: &'static str,
}

/// The TLS configuration of a node's listeners and outgoing peer calls.
struct Tls {
    registry: Option<Arc<tcr_tls::ServerConfig>>,
    peer_server: Option<Arc<tcr_tls::ServerConfig>>,
    /// gRPC channels (h2) and HTTP/1.1 blob reads and upload proxying.
    peer_h2: Option<Arc<tcr_tls::ClientConfig>>,
    peer_http1: Option<Arc<tcr_tls::ClientConfig>>,
}

fn load_tls(cfg: &Config) -> anyhow::Result<Tls> {
    let registry = match cfg.registry_tls()? {
        Some((cert, key)) => {
            let id = tcr_tls::Identity::load(&cert, &key, None)
                .context("loading the registry port's certificate (--tls-cert-file)")?;
            Some(tcr_tls::registry_server_config(&id)?)
        }
        None => None,
    };
    let Some((ca, cert, key)) = cfg.peer_tls()? else {
        if !cfg.rpc_addr.ip().is_loopback() {
            if !cfg.insecure_peers {
                bail!(
                    "refusing to serve node-to-node RPC on {} in plain text: anyone who reaches \
                     that port could read private blobs and change the cluster. Give \
                     --peer-ca-file, --peer-cert-file and --peer-key-file (`tcr certs init` \
                     makes them), listen on loopback, or pass --insecure-peers on a \
                     throw-away network",
                    cfg.rpc_addr
                );
            }
            tracing::warn!(
                rpc = %cfg.rpc_addr,
                "--insecure-peers: node-to-node traffic is plain text and unauthenticated; \
                 anyone who reaches the RPC port can read blobs and change the cluster"
            );
        }
        return Ok(Tls {
            registry,
            peer_server: None,
            peer_h2: None,
            peer_http1: None,
        });
    };
    let id = tcr_tls::Identity::load(&cert, &key, Some(&ca))
        .context("loading the peer certificate (--peer-cert-file, --peer-ca-file)")?;
    let advertised = cfg.advertise_rpc();
    let host = tcr_tls::host_of(&advertised);
    if !tcr_tls::certificate_names(&id.certificate(), host) {
        bail!(
            "the peer certificate {} does not name {host}, the host of this node's RPC \
             address ({advertised}): other nodes would refuse it",
            cert.display()
        );
    }
    Ok(Tls {
        registry,
        peer_server: Some(tcr_tls::peer_server_config(&id)?),
        peer_h2: Some(tcr_tls::peer_client_config(&id, b"h2")?),
        peer_http1: Some(tcr_tls::peer_client_config(&id, b"http/1.1")?),
    })
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
        .max_frame_size(Some(tcr_raft::consensus::network::MAX_FRAME))
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

fn admin_token(cfg: &Config) -> anyhow::Result<Option<String>> {
    if let Ok(t) = std::env::var("TCR_ADMIN_TOKEN") {
        return Ok(Some(t.trim().to_string()).filter(|t| !t.is_empty()));
    }
    match &cfg.admin_token_file {
        None => Ok(None),
        Some(p) => {
            let t = std::fs::read_to_string(p)
                .with_context(|| format!("reading admin token file {}", p.display()))?;
            Ok(Some(t.trim().to_string()).filter(|t| !t.is_empty()))
        }
    }
}

/// Deadline of the token endpoint, metrics, health and the API document.
const PUBLIC_ROUTE_DEADLINE: Duration = Duration::from_secs(30);

pub fn router(state: Arc<AppState>) -> Router {
    let registry = Router::new()
        .route("/v2", any(oci::dispatch))
        .route("/v2/", any(oci::dispatch))
        .route("/v2/{*rest}", any(oci::dispatch))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            oci::authorise,
        ));
    let management = api::router().route_layer(middleware::from_fn_with_state(
        state.clone(),
        api::authorise,
    ));
    let protected = registry.merge(management);
    let public = Router::new()
        .route(
            "/v2/token",
            get(auth::token_endpoint::get).post(auth::token_endpoint::post),
        )
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
    protected
        .merge(public)
        .fallback(|| async { api::errors::ApiError::not_found("no such endpoint").into_response() })
        .layer(middleware::from_fn_with_state(
            state.clone(),
            metrics::track,
        ))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

/// Live: the process answers and its Raft core still runs. A storage
/// error (a full disk under RocksDB, an I/O error) stops openraft for good;
/// failing here makes Kubernetes restart the pod, which recovers everything
/// acknowledged from the log once there is space again.
async fn healthz(State(st): State<Arc<AppState>>) -> impl IntoResponse {
    let failed = st
        .meta
        .raft
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

/// SIGTERM: stop being ready and refuse new uploads, hand leadership to
/// the most caught-up other voter, give load balancers `delay` to notice.
async fn drain(st: &AppState, delay: Duration) {
    st.draining.store(true, Ordering::Relaxed);
    tracing::info!("draining: not ready, new uploads refused");
    let m = st.meta.raft.metrics().borrow().clone();
    if m.current_leader == Some(st.node_id) {
        let to = m.replication.as_ref().and_then(|r| {
            r.iter()
                .filter(|(id, _)| **id != st.node_id)
                .filter(|(id, _)| {
                    m.membership_config
                        .membership()
                        .voter_ids()
                        .any(|v| v == **id)
                })
                .max_by_key(|(_, l)| l.map(|l| l.index))
                .map(|(id, _)| *id)
        });
        if let Some(to) = to {
            let reply = st.meta.transfer_leadership(to).await;
            tracing::info!(to, ?reply, "handed leadership over before stopping");
        }
    }
    tokio::time::sleep(delay).await;
}

/// Ready once a leader is known (at once on a restarted single node after
/// one election timeout).
async fn ready_once_leader_known(state: Arc<AppState>) {
    let waited = state
        .meta
        .raft
        .wait(Some(Duration::from_secs(3600)))
        .metrics(|m| m.current_leader.is_some(), "leader known")
        .await;
    if waited.is_ok() {
        state.ready.store(true, Ordering::Relaxed);
    }
}

/// `--metrics-addr`: a second listener serving only `/metrics`.
async fn serve_metrics_port(
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

/// Serve the RPC port: Raft, cluster calls, blob transfers and peer reads,
/// under mutual TLS when configured.
fn spawn_rpc_port(
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

/// Raft's timing and batching for a registry's metadata.
fn raft_config(cfg: &Config) -> anyhow::Result<openraft::Config> {
    Ok(openraft::Config {
        cluster_name: "tcr".into(),
        heartbeat_interval: 250,
        election_timeout_min: 1000,
        election_timeout_max: 2000,
        // Triggered by tcr_raft::snapshot_policy (entries and log bytes).
        snapshot_policy: openraft::SnapshotPolicy::Never,
        max_in_snapshot_log_to_keep: 1000,
        // Bounded batches: entries can carry manifests of up to 4 MiB.
        max_payload_entries: 64,
        // The last snapshot chunk's RPC includes installing the whole state
        // on the receiver; openraft's 200 ms default never completes for a
        // large state, and the learner then retries forever.
        install_snapshot_timeout: 60_000,
        // openraft: must exceed the snapshot interval, or a snapshot may not
        // cure a lagging follower.
        replication_lag_threshold: cfg.snapshot_logs.saturating_mul(2).max(5000),
        ..Default::default()
    }
    .validate()?)
}

/// A new data dir: join the cluster at `--join`, or start a one-node
/// cluster (unless `--no-init`). A node with Raft state carries on.
async fn start_or_join(cfg: &Config, raft: &Raft, network: &Network) -> anyhow::Result<()> {
    let me = NodeInfo {
        rpc_addr: cfg.advertise_rpc(),
        http_addr: cfg.advertise_http(),
        weight: cfg.weight,
    };
    if !raft.is_initialized().await? {
        if let Some(seed) = &cfg.join {
            let (raft, network, seed, me, id) = (
                raft.clone(),
                network.clone(),
                seed.clone(),
                me.clone(),
                cfg.node_id,
            );
            tokio::spawn(async move { join(&network, &raft, id, me, &seed).await });
        } else if !cfg.no_init {
            raft.initialize(BTreeMap::from([(cfg.node_id, me)]))
                .await
                .context("initialising a one-node cluster")?;
            tracing::info!(node_id = cfg.node_id, "initialised a new one-node cluster");
        }
    }
    Ok(())
}

pub async fn run(mut cfg: Config) -> anyhow::Result<()> {
    let auth = Auth::new(
        admin_token(&cfg)?,
        cfg.token_service.clone(),
        cfg.token_lifetime_secs,
        &cfg.public_base()?,
    );
    if auth.is_open() && !(cfg.http_addr.ip().is_loopback() && cfg.rpc_addr.ip().is_loopback()) {
        bail!(
            "refusing to run without authentication on a non-loopback address ({}, {}): \
             set TCR_ADMIN_TOKEN or --admin-token-file, or listen on 127.0.0.1",
            cfg.http_addr,
            cfg.rpc_addr
        );
    }
    let tls = load_tls(&cfg)?;
    crate::connections::raise_descriptor_limit(cfg.max_connections as usize);
    tcr_storage::cluster::peer_http::configure(tls.peer_http1.clone());
    std::fs::create_dir_all(&cfg.data_dir)
        .with_context(|| format!("creating data dir {}", cfg.data_dir.display()))?;
    let network = Network::new(tls.peer_h2.clone().map(tcr_tls::PeerConnector::new));
    settle_node_id(&mut cfg, &network).await?;
    let stores = tcr_raft::open_with(
        &cfg.data_dir.join("raft"),
        &tcr_raft::StoreOptions {
            memory_bytes: usize::try_from(cfg.rocksdb_memory).unwrap_or(usize::MAX),
            node_id: cfg.node_id,
            ..Default::default()
        },
    )?;
    let raft_config = raft_config(&cfg)?;
    let raft = Raft::new(
        cfg.node_id,
        Arc::new(raft_config),
        network.clone(),
        stores.log,
        stores.state_machine,
    )
    .await?;
    tokio::spawn(tcr_raft::consensus::snapshot_policy::run(
        raft.clone(),
        stores.log_volume.clone(),
        cfg.snapshot_logs,
    ));
    let rpc_listener = tokio::net::TcpListener::bind(cfg.rpc_addr)
        .await
        .with_context(|| format!("binding {}", cfg.rpc_addr))?;
    let gate = TransferGate::default();
    let read_index = tcr_raft::consensus::read_index::ReadIndex::new(raft.clone());
    let (raft_svc, cluster_svc) =
        tcr_raft::consensus::server::services(raft.clone(), gate.clone(), read_index.clone());
    let blobs = BlobStore::open(&cfg.data_dir)?;
    let uploads = Arc::new(Uploads::open(blobs.clone())?.with_reserve(
        tcr_storage::DiskReserve::new(&cfg.data_dir, cfg.min_free_disk),
    ));
    let blob_svc = tcr_storage::cluster::replication::BlobRpc::server(
        blobs.clone(),
        uploads.clone(),
        cfg.max_blob_bytes,
    );
    // Upload requests proxied from other nodes run through this node's
    // router once it exists (see `oci::upload_proxy`).
    let proxied: Arc<std::sync::OnceLock<Router>> = Arc::default();
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
    let routes = tonic::service::Routes::from(
        tcr_storage::cluster::peer_reads::routes(blobs.clone()).merge(proxy_route),
    )
    .add_service(raft_svc)
    .add_service(cluster_svc)
    .add_service(blob_svc);
    spawn_rpc_port(routes, rpc_listener, tls.peer_server.clone())?;
    start_or_join(&cfg, &raft, &network).await?;
    let metrics = Metrics::new();
    let view = crate::cluster_view::RaftView::new(
        cfg.node_id,
        raft.clone(),
        stores.reader.clone(),
        network.clone(),
    );
    let replicas = tcr_storage::cluster::Replicas::new(
        view,
        blobs.clone(),
        metrics.transfers.clone(),
        cfg.verify_reads == crate::config::VerifyReads::All,
    );
    let reconciler = tcr_storage::cluster::Reconciler::new(
        replicas.clone(),
        blobs.clone(),
        tcr_storage::cluster::Pacing {
            interval: Duration::from_secs_f64(cfg.storage_interval_secs),
            scrub_bytes_per_pass: cfg.scrub_bytes_per_pass,
            pull_bytes_per_sec: cfg.rebalance_bytes_per_sec,
            orphan_grace: Duration::from_secs_f64(cfg.orphan_grace_secs.max(0.0)),
        },
    )?;
    tokio::spawn(reconciler.clone().run());
    let state = Arc::new(AppState {
        node_id: cfg.node_id,
        writer: tcr_storage::cluster::BlobWriter::new(
            uploads.clone(),
            replicas.clone(),
            tcr_storage::cluster::UploadReplicas::new(metrics.transfers.clone()),
        ),
        replicas,
        reconciler,
        meta: Metadata::new(
            raft.clone(),
            stores.reader,
            cfg.read_consistency,
            network,
            gate,
            read_index,
        ),
        blobs,
        uploads,
        max_manifest_bytes: cfg.max_manifest_bytes,
        max_blob_bytes: cfg.max_blob_bytes,
        upload_caps: tcr_storage::SessionCaps {
            per_namespace: cfg.max_uploads_per_namespace,
            per_owner: cfg.max_uploads_per_credential,
        },
        body_idle_timeout: Duration::from_secs_f64(cfg.body_idle_timeout_secs),
        metrics,
        auth,
        ready: AtomicBool::new(false),
        draining: AtomicBool::new(false),
        gc_grace_secs: cfg.gc_grace_secs,
        retention: crate::jobs::retention::Retention::new(
            cfg.retention_interval_secs,
            Duration::from_millis(cfg.retention_pause_ms),
        ),
        rate_limits: Default::default(),
        http_scheme: if tls.registry.is_some() {
            "https"
        } else {
            "http"
        },
    });
    let app = router(state.clone());
    let _ = proxied.set(app.clone());
    let listener = tokio::net::TcpListener::bind(cfg.http_addr)
        .await
        .with_context(|| format!("binding {}", cfg.http_addr))?;
    tracing::info!(
        http = %cfg.http_addr,
        tls = tls.registry.is_some(),
        peer_tls = tls.peer_server.is_some(),
        data_dir = %cfg.data_dir.display(),
        open = state.auth.is_open(),
        "tcr-node listening"
    );
    crate::jobs::start(&state, &cfg);
    tokio::spawn(ready_once_leader_known(state.clone()));
    // On SIGTERM: drain, then stop accepting connections and let requests
    // in flight finish, for at most the grace period.
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let draining = state.clone();
    let delay = Duration::from_secs_f64(cfg.shutdown_delay_secs.max(0.0));
    tokio::spawn(async move {
        shutdown_signal().await;
        drain(&draining, delay).await;
        let _ = stop_tx.send(true);
    });
    let mut stopped = stop_rx.clone();
    let stop = async move {
        let _ = stopped.wait_for(|s| *s).await;
    };
    let limits = crate::connections::Limits {
        header_read_timeout: Duration::from_secs_f64(cfg.header_read_timeout_secs.max(0.1)),
        max_connections: cfg.max_connections as usize,
    };
    if let Some(addr) = cfg.metrics_addr {
        serve_metrics_port(addr, &state, limits, stop_rx.clone()).await?;
    }
    let serve: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> =
        match tls.registry.clone() {
            Some(config) => {
                let listener = tcr_tls::TlsListener::new(listener, config)?;
                let st = state.clone();
                Box::pin(async move {
                    crate::connections::serve(listener, app, limits, &st.metrics, stop).await
                })
            }
            None => {
                // Nagle off here too: a response written in pieces must not
                // wait for the client's delayed ACK.
                let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
                    let _ = tcp.set_nodelay(true);
                });
                let st = state.clone();
                Box::pin(async move {
                    crate::connections::serve(listener, app, limits, &st.metrics, stop).await
                })
            }
        };
    let grace = Duration::from_secs_f64(cfg.shutdown_grace_secs.max(0.0));
    tokio::select! {
        () = serve => {},
        _ = async {
            let _ = stop_rx.wait_for(|s| *s).await;
            tokio::time::sleep(grace).await;
        } => tracing::warn!("requests still in flight after {grace:?}; stopping anyway"),
    }
    state.ready.store(false, Ordering::Relaxed);
    // Pulls seen since the last flush are not lost on a clean stop.
    crate::jobs::retention::flush_once(&state).await;
    raft.shutdown().await.ok();
    tracing::info!("tcr-node stopped");
    Ok(())
}

/// Under a StatefulSet (`--id-from-hostname`): the id this data dir was
/// given, kept in `<data-dir>/node-id`. A data dir without Raft state (a
/// new pod, or one whose volume was lost) asks the cluster through --join
/// for an id: its ordinal's if free, else a new one, and the cluster first
/// removes a member still registered at this address (the lost incarnation).
async fn settle_node_id(cfg: &mut Config, network: &Network) -> anyhow::Result<()> {
    if !cfg.id_from_hostname {
        return Ok(());
    }
    let file = cfg.data_dir.join("node-id");
    if let Ok(s) = std::fs::read_to_string(&file) {
        cfg.node_id = s
            .trim()
            .parse()
            .with_context(|| format!("{} does not hold a node id", file.display()))?;
        return Ok(());
    }
    let fresh = !cfg.data_dir.join("raft").exists();
    let node = NodeInfo {
        rpc_addr: cfg.advertise_rpc(),
        http_addr: cfg.advertise_http(),
        weight: cfg.weight,
    };
    match (fresh, cfg.ordinal, cfg.join.clone()) {
        // The first pod on an empty volume: a new cluster, unless its peers
        // are running one (its volume was lost): then it rejoins that.
        (true, Some(0), Some(seed)) => match find_running_cluster(network, &seed, &node).await {
            Some((peer, id)) => {
                tracing::info!(id, %peer, "a cluster is running: joining it instead of initialising");
                cfg.node_id = id;
                cfg.no_init = true;
                cfg.join = Some(peer);
            }
            None => cfg.join = None,
        },
        (true, _, Some(seed)) => cfg.node_id = assign_id(network, &seed, cfg.node_id, node).await,
        (false, Some(0), _) => cfg.join = None,
        _ => {}
    }
    let tmp = file.with_extension("tmp");
    std::fs::write(&tmp, format!("{}\n", cfg.node_id))?;
    std::fs::rename(&tmp, &file)?;
    tracing::info!(node_id = cfg.node_id, "node id of this data dir");
    Ok(())
}

/// Pod 0 on an empty volume: ask its peers (`tcr-1`.. `tcr-6` beside the
/// `tcr-0` in `seed`) for an id, for up to 5 s. None when no peer has a
/// cluster to offer (the first start: the other pods do not exist yet).
async fn find_running_cluster(
    network: &Network,
    seed: &str,
    node: &NodeInfo,
) -> Option<(String, u64)> {
    let peers: Vec<String> = (1..=6)
        .map(|k| seed.replacen("-0.", &format!("-{k}."), 1))
        .filter(|p| p != seed)
        .collect();
    // Probe all peers at once (any answer to a read-index request means a
    // member of a cluster answers there), then ask the first for an id.
    let probes = peers.iter().map(|peer| {
        Box::pin(async move {
            loop {
                if let (Some(mut c), Ok(p)) = (network.cluster_client(peer), encode(&())) {
                    if c.read_index(p).await.is_ok() {
                        return peer.clone();
                    }
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        })
    });
    let found = tokio::time::timeout(Duration::from_secs(5), futures::future::select_all(probes))
        .await
        .ok()?
        .0;
    let id = assign_id(network, &found, 1, node.clone()).await;
    Some((found, id))
}

/// Ask the leader (found through `seed`) for an id; retries until it answers.
async fn assign_id(network: &Network, seed: &str, preferred: u64, node: NodeInfo) -> u64 {
    let mut target = seed.to_string();
    loop {
        let req = AssignRequest {
            preferred,
            node: node.clone(),
        };
        let reply = match (network.cluster_client(&target), encode(&req)) {
            (Some(mut c), Ok(p)) => c
                .assign(p)
                .await
                .map_err(|s| s.message().to_string())
                .and_then(|r| decode::<AssignReply>(r.get_ref()).map_err(|e| e.to_string())),
            _ => Err(format!("invalid join address '{target}'")),
        };
        match reply {
            Ok(AssignReply::Assigned(id)) => {
                tracing::info!(id, preferred, "the cluster assigned this node's id");
                return id;
            }
            Ok(AssignReply::NotLeader(Some((_, leader)))) => {
                target = leader.rpc_addr;
                continue;
            }
            Ok(AssignReply::NotLeader(None)) => target = seed.to_string(),
            Ok(AssignReply::Failed(e)) | Err(e) => {
                tracing::warn!(%target, "asking the cluster for a node id: {e}");
                target = seed.to_string();
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Ask the cluster (through `seed`, any member's RPC address) to add this
/// node: as a learner first, then as a voter once it has caught up. Retries
/// until it is a member, following redirects to the leader.
async fn join(network: &Network, raft: &Raft, id: u64, me: NodeInfo, seed: &str) {
    let mut target = seed.to_string();
    loop {
        if tcr_raft::consensus::server::voters(raft).contains(&id) {
            tracing::info!(id, "joined the cluster as a voter");
            return;
        }
        let req = JoinRequest {
            id,
            node: me.clone(),
        };
        let reply = match (network.cluster_client(&target), encode(&req)) {
            (Some(mut c), Ok(p)) => c
                .join(p)
                .await
                .map_err(|s| s.message().to_string())
                .and_then(|r| decode::<JoinReply>(r.get_ref()).map_err(|e| e.to_string())),
            _ => Err(format!("invalid join address '{target}'")),
        };
        match reply {
            Ok(JoinReply::Joined) => {}
            Ok(JoinReply::NotLeader(Some((_, leader)))) => {
                target = leader.rpc_addr;
                continue;
            }
            Ok(JoinReply::NotLeader(None)) => target = seed.to_string(),
            Ok(JoinReply::Failed(e)) | Err(e) => {
                tracing::warn!(%target, "joining the cluster: {e}");
                target = seed.to_string();
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutting down");
}
