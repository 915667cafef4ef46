//! What each part of the node is given: the OCI handlers, the management
//! API, the access decisions and the background jobs each get a state of
//! their own holding what they use, so a handler's reach is visible in its
//! type. `AppState` is the node itself (health, metrics, lifecycle); the
//! router gives each façade its own state.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use tcr_storage::cluster::{BlobWriter, Reconciler, Replicas};
use tcr_storage::{BlobStore, SessionCaps, Uploads};

use crate::auth::Auth;
use crate::jobs::retention::Retention;
use crate::metadata::Metadata;
use crate::metrics::Metrics;
use crate::rate_limits::RateLimitsGate;

/// The OCI distribution façade (`/v2/`).
pub struct OciState {
    pub node_id: u64,
    pub meta: Metadata,
    pub blobs: BlobStore,
    pub uploads: Arc<Uploads>,
    /// Reads of blobs wherever they are.
    pub replicas: Replicas,
    /// Writes of uploads into replicated blobs.
    pub writer: BlobWriter,
    pub max_manifest_bytes: usize,
    pub max_blob_bytes: u64,
    /// Open upload sessions per namespace and per credential on this node.
    pub upload_caps: SessionCaps,
    pub body_idle_timeout: Duration,
    /// Set on SIGTERM: no new uploads.
    pub draining: Arc<AtomicBool>,
    /// Where manifest pulls are counted until the next flush.
    pub retention: Arc<Retention>,
}

/// The management API (`/v1/container-registries/`).
pub struct ApiState {
    pub node_id: u64,
    pub meta: Metadata,
    pub blobs: BlobStore,
    /// Reads of blobs wherever they are, and their placement.
    pub replicas: Replicas,
    pub reconciler: Reconciler,
    /// Signing keys (listing and rotation).
    pub auth: Arc<Auth>,
    /// `https` when the registry port serves TLS (every node's does, or
    /// none's): the scheme of redirects to another node.
    pub http_scheme: &'static str,
    /// GC and retention runs started on demand.
    pub jobs: Arc<JobsState>,
}

/// Authentication and access decisions, and the token endpoint.
pub struct AuthState {
    pub meta: Metadata,
    pub metrics: Arc<Metrics>,
    pub auth: Arc<Auth>,
    pub rate_limits: Arc<RateLimitsGate>,
}

/// Garbage collection, retention, metering and the audit trail's pruning
/// (each acts only while this node leads).
pub struct JobsState {
    pub meta: Metadata,
    pub reconciler: Reconciler,
    pub metrics: Arc<Metrics>,
    /// Default grace period of garbage collection.
    pub gc_grace_secs: u64,
    pub retention: Arc<Retention>,
}

/// The node: its parts' states, and what health, metrics and shutdown use.
pub struct AppState {
    pub node_id: u64,
    pub meta: Metadata,
    pub metrics: Arc<Metrics>,
    pub ready: AtomicBool,
    /// Set on SIGTERM: not ready, no new uploads, leadership handed over.
    pub draining: Arc<AtomicBool>,
    pub oci: Arc<OciState>,
    pub api: Arc<ApiState>,
    pub access: Arc<AuthState>,
    pub jobs: Arc<JobsState>,
}
