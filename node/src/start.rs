//! Starting a node, in steps: check the configuration's safety, settle
//! the node's id, open the metadata store and start Raft, open the blob
//! store, serve the RPC port, join or initialise the cluster, build the
//! shared state, then serve the registry port until SIGTERM/SIGINT.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use tcr_raft::{Consensus, Network, NodeInfo, StateReader};
use tcr_storage::{BlobStore, Uploads};

use crate::auth::Auth;
use crate::config::Config;
use crate::metadata::Metadata;
use crate::metrics::Metrics;
use crate::state::{ApiState, AppState, AuthState, JobsState, OciState};
use crate::{lifecycle, router, rpc_port};

pub async fn run(mut cfg: Config) -> anyhow::Result<()> {
    let auth = open_auth(&cfg)?;
    let tls = load_tls(&cfg)?;
    crate::connections::raise_descriptor_limit(cfg.max_connections as usize);
    tcr_storage::cluster::peer_http::configure(tls.peer_http1.clone());
    std::fs::create_dir_all(&cfg.data_dir)
        .with_context(|| format!("creating data dir {}", cfg.data_dir.display()))?;
    let network = Network::new(tls.peer_h2.clone().map(tcr_tls::PeerConnector::new));
    settle_node_id(&mut cfg, &network).await?;
    let (consensus, reader) = start_consensus(&cfg, network.clone()).await?;
    let (blobs, uploads) = open_blobs(&cfg)?;
    let metrics = Arc::new(Metrics::new());
    let served = metrics.transfers.clone();
    // The storage loop answers peers' `Report` calls once it runs.
    let reports = Arc::new(std::sync::OnceLock::new());
    let proxied = serve_rpc_port(
        &cfg,
        &consensus,
        (&blobs, &uploads),
        &tls,
        served,
        reports.clone(),
    )
    .await?;
    consensus
        .init_or_join(advertised(&cfg), cfg.join.clone(), !cfg.no_init)
        .await?;
    let parts = Parts {
        auth,
        consensus,
        reader,
        network,
        blobs,
        uploads,
        metrics,
        https: tls.registry.is_some(),
    };
    let state = build_state(&cfg, parts)?;
    let app = router::router(state.clone());
    let _ = proxied.set(app.clone());
    let _ = reports.set(state.jobs.reconciler.clone());
    serve(&cfg, &state, app, &tls).await?;
    state.ready.store(false, Ordering::Relaxed);
    // Pulls seen since the last flush are not lost on a clean stop.
    crate::jobs::retention::flush_once(&state.jobs).await;
    state.meta.raft().shutdown().await.ok();
    tracing::info!("tcr-node stopped");
    Ok(())
}

/// The operator's credential, and the rule that a node without one only
/// listens on loopback.
fn open_auth(cfg: &Config) -> anyhow::Result<Auth> {
    let auth = Auth::new(
        admin_token(cfg)?,
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
    Ok(auth)
}

/// `TCR_ADMIN_TOKEN`, else `--admin-token-file`; blank means none.
fn admin_token(cfg: &Config) -> anyhow::Result<Option<String>> {
    let token = match (std::env::var("TCR_ADMIN_TOKEN"), &cfg.admin_token_file) {
        (Ok(t), _) => t,
        (Err(_), None) => return Ok(None),
        (Err(_), Some(p)) => std::fs::read_to_string(p)
            .with_context(|| format!("reading admin token file {}", p.display()))?,
    };
    Ok(Some(token.trim().to_string()).filter(|t| !t.is_empty()))
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

/// This node as the cluster sees it.
fn advertised(cfg: &Config) -> NodeInfo {
    NodeInfo {
        rpc_addr: cfg.advertise_rpc(),
        http_addr: cfg.advertise_http(),
        weight: cfg.weight,
    }
}

/// Open the metadata store and start Raft over it.
async fn start_consensus(
    cfg: &Config,
    network: Network,
) -> anyhow::Result<(Consensus, StateReader)> {
    let stores = tcr_raft::open_with(
        &cfg.data_dir.join("raft"),
        &tcr_raft::StoreOptions {
            memory_bytes: usize::try_from(cfg.rocksdb_memory).unwrap_or(usize::MAX),
            node_id: cfg.node_id,
            ..Default::default()
        },
    )?;
    let reader = stores.reader.clone();
    let consensus = Consensus::start(cfg.node_id, cfg.snapshot_logs, network, stores).await?;
    Ok((consensus, reader))
}

/// The local blob store and its upload sessions, kept within the disk reserve.
fn open_blobs(cfg: &Config) -> anyhow::Result<(BlobStore, Arc<Uploads>)> {
    let blobs = BlobStore::open(&cfg.data_dir)?;
    let uploads = Arc::new(Uploads::open(blobs.clone())?.with_reserve(
        tcr_storage::DiskReserve::new(&cfg.data_dir, cfg.min_free_disk),
    ));
    Ok((blobs, uploads))
}

/// The cache of blobs streamed from their owners, unless `--cache-bytes`
/// is 0. It stops filling, and gives its disk back, while free space is
/// under twice the node's reserve: before uploads are refused.
fn open_cache(cfg: &Config) -> anyhow::Result<Option<tcr_storage::cluster::BlobCache>> {
    let limit = cfg
        .cache_bytes
        .resolve(&cfg.data_dir)
        .context("sizing the blob cache (--cache-bytes)")?;
    if limit == 0 {
        return Ok(None);
    }
    let cache = tcr_storage::cluster::BlobCache::open(
        &cfg.data_dir.join("cache"),
        limit,
        Some(cfg.min_free_disk.times(2)),
    )
    .context("opening the blob cache")?;
    tracing::info!(limit, "blob cache on");
    Ok(Some(cache))
}

/// Serve the RPC port; the returned cell takes the registry router that
/// proxied upload requests run through, once it exists.
async fn serve_rpc_port(
    cfg: &Config,
    consensus: &Consensus,
    (blobs, uploads): (&BlobStore, &Arc<Uploads>),
    tls: &Tls,
    served: prometheus::IntCounterVec,
    reports: Arc<std::sync::OnceLock<tcr_storage::cluster::Reconciler>>,
) -> anyhow::Result<Arc<std::sync::OnceLock<axum::Router>>> {
    let listener = tokio::net::TcpListener::bind(cfg.rpc_addr)
        .await
        .with_context(|| format!("binding {}", cfg.rpc_addr))?;
    let blob_svc = tcr_storage::cluster::replication::BlobRpc::server_with_reports(
        blobs.clone(),
        uploads.clone(),
        cfg.max_blob_bytes,
        reports,
    );
    let (http, proxied) = rpc_port::http_routes(blobs, served);
    let routes = consensus
        .with_services(tonic::service::Routes::from(http))
        .add_service(blob_svc);
    rpc_port::spawn(routes, listener, tls.peer_server.clone())?;
    Ok(proxied)
}

/// What `build_state` assembles.
struct Parts {
    auth: Auth,
    consensus: Consensus,
    reader: StateReader,
    network: Network,
    blobs: BlobStore,
    uploads: Arc<Uploads>,
    metrics: Arc<Metrics>,
    https: bool,
}

/// Blob distribution over the cluster's view, and the state every handler
/// and job shares; starts the storage reconciler.
fn build_state(cfg: &Config, p: Parts) -> anyhow::Result<Arc<AppState>> {
    let metrics = p.metrics;
    let view = crate::cluster_view::RaftView::new(
        cfg.node_id,
        p.consensus.raft().clone(),
        p.reader.clone(),
        p.network,
    );
    let replicas = tcr_storage::cluster::Replicas::new(
        view,
        p.blobs.clone(),
        metrics.transfers.clone(),
        cfg.verify_reads == crate::config::VerifyReads::All,
    );
    let replicas = match open_cache(cfg)? {
        Some(cache) => replicas.with_cache(cache),
        None => replicas,
    };
    let reconciler = tcr_storage::cluster::Reconciler::new(
        replicas.clone(),
        p.blobs.clone(),
        tcr_storage::cluster::Pacing {
            interval: Duration::from_secs_f64(cfg.storage_interval_secs),
            scrub_bytes_per_pass: cfg.scrub_bytes_per_pass,
            pull_bytes_per_sec: cfg.rebalance_bytes_per_sec,
            orphan_grace: Duration::from_secs_f64(cfg.orphan_grace_secs.max(0.0)),
        },
    )?;
    tokio::spawn(reconciler.clone().run());
    let meta = Metadata::new(p.consensus, p.reader, cfg.read_consistency);
    let auth = Arc::new(p.auth);
    let rate_limits = Arc::new(crate::rate_limits::RateLimitsGate::default());
    let draining = Arc::new(AtomicBool::new(false));
    let retention = Arc::new(crate::jobs::retention::Retention::new(
        cfg.retention_interval_secs,
        Duration::from_millis(cfg.retention_pause_ms),
    ));
    let jobs = Arc::new(JobsState {
        meta: meta.clone(),
        reconciler: reconciler.clone(),
        metrics: metrics.clone(),
        gc_grace_secs: cfg.gc_grace_secs,
        retention: retention.clone(),
    });
    let oci = Arc::new(OciState {
        node_id: cfg.node_id,
        meta: meta.clone(),
        blobs: p.blobs.clone(),
        writer: tcr_storage::cluster::BlobWriter::new(
            p.uploads.clone(),
            replicas.clone(),
            tcr_storage::cluster::UploadReplicas::new(metrics.transfers.clone()),
        ),
        uploads: p.uploads,
        replicas: replicas.clone(),
        max_manifest_bytes: cfg.max_manifest_bytes,
        max_blob_bytes: cfg.max_blob_bytes,
        upload_caps: tcr_storage::SessionCaps {
            per_namespace: cfg.max_uploads_per_namespace,
            per_owner: cfg.max_uploads_per_credential,
        },
        body_idle_timeout: Duration::from_secs_f64(cfg.body_idle_timeout_secs),
        draining: draining.clone(),
        retention,
    });
    let api = Arc::new(ApiState {
        node_id: cfg.node_id,
        meta: meta.clone(),
        blobs: p.blobs,
        replicas,
        reconciler,
        auth: auth.clone(),
        http_scheme: if p.https { "https" } else { "http" },
        jobs: jobs.clone(),
    });
    let access = Arc::new(AuthState {
        meta: meta.clone(),
        metrics: metrics.clone(),
        auth,
        rate_limits,
    });
    Ok(Arc::new(AppState {
        node_id: cfg.node_id,
        meta,
        metrics,
        ready: AtomicBool::new(false),
        draining,
        oci,
        api,
        access,
        jobs,
    }))
}

/// Serve the registry port (and `--metrics-addr`) and run the background
/// jobs until SIGTERM/SIGINT; then drain, stop accepting connections, and
/// let requests in flight finish for at most the grace period.
async fn serve(
    cfg: &Config,
    state: &Arc<AppState>,
    app: axum::Router,
    tls: &Tls,
) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(cfg.http_addr)
        .await
        .with_context(|| format!("binding {}", cfg.http_addr))?;
    tracing::info!(
        http = %cfg.http_addr,
        tls = tls.registry.is_some(),
        peer_tls = tls.peer_server.is_some(),
        data_dir = %cfg.data_dir.display(),
        open = state.access.auth.is_open(),
        "tcr-node listening"
    );
    crate::jobs::start(state, cfg);
    tokio::spawn(lifecycle::ready_once_leader_known(state.clone()));
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let draining = state.clone();
    let delay = Duration::from_secs_f64(cfg.shutdown_delay_secs.max(0.0));
    tokio::spawn(async move {
        lifecycle::shutdown_signal().await;
        lifecycle::drain(&draining, delay).await;
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
        router::serve_metrics_port(addr, state, limits, stop_rx.clone()).await?;
    }
    let metrics = state.metrics.clone();
    let serve: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> =
        match tls.registry.clone() {
            Some(config) => {
                let listener = tcr_tls::TlsListener::new(listener, config)?;
                Box::pin(async move {
                    crate::connections::serve(listener, app, limits, &metrics, stop).await
                })
            }
            None => {
                // Nagle off here too: a response written in pieces must not
                // wait for the client's delayed ACK.
                let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
                    let _ = tcp.set_nodelay(true);
                });
                Box::pin(async move {
                    crate::connections::serve(listener, app, limits, &metrics, stop).await
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
    let node = advertised(cfg);
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
        (true, _, Some(seed)) => {
            cfg.node_id = tcr_raft::ask_for_id(network, &seed, cfg.node_id, node).await
        }
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
    let found = tcr_raft::find_member(network, &peers, Duration::from_secs(5)).await?;
    let id = tcr_raft::ask_for_id(network, &found, 1, node.clone()).await;
    Some((found, id))
}
