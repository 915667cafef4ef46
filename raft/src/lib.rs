//! tcr's metadata replication: openraft with its log and state machine in
//! one RocksDB instance (column families per table), and tonic RPC between
//! nodes (`network` client side, `rpc_server` server side).
//!
//! Why openraft 0.9 (`=0.9.25`, `storage-v2`): it is the stable line, its
//! storage traits let the log store acknowledge appends from a group-commit
//! fsync thread, and `Raft::ensure_linearizable` gives read-index reads on
//! the leader. 0.10's follower read-index is attractive, but it is an alpha;
//! revisit when it is released.

// openraft's storage traits fix `StorageError` (224 bytes) as the error
// type; our helpers return it unchanged rather than box and unbox it.
#![allow(clippy::result_large_err)]

pub mod audit;
pub mod command;
pub mod gc;
pub mod log_store;
pub mod network;
pub mod read;
pub mod read_index;
pub mod retention;
pub mod rpc;
pub mod rpc_server;
pub mod snapshot;
pub mod snapshot_policy;
pub mod state_machine;
pub mod store;
pub mod tenancy;
pub mod transfer;
pub mod types;
pub mod usage;

use std::path::Path;

pub use audit::{Actor, AuditContext, AuditEvent, AuditFilter, AuditPage};
pub use command::{
    namespace_of, Command, CommandResult, ManifestPut, Proposal, RateLimits, Refusal, Visibility,
};
pub use gc::GcRun;
pub use log_store::LogStore;
pub use read::{Page, ReadError, StateReader};
pub use retention::{AuditItem, RetentionPolicy, RetentionRun, Trigger};
pub use state_machine::StateMachineStore;
pub use store::{
    BlobRecord, ManifestRecord, NamespaceRecord, OpenError, RepositoryRecord, StoreOptions,
};
pub use tenancy::{
    Action, CredentialRecord, OrganisationRecord, ProjectRecord, Scope, SigningKeyRecord,
    FEATURE_CONTAINER_REGISTRY,
};
pub use types::{NodeId, NodeInfo, Raft, TypeConfig};
pub use usage::NamespaceUsage;

/// The three handles onto one node's metadata store.
pub struct Stores {
    pub log: LogStore,
    /// Log bytes since the last snapshot, for `snapshot_policy::run`.
    pub log_volume: std::sync::Arc<snapshot_policy::LogVolume>,
    pub state_machine: StateMachineStore,
    pub reader: StateReader,
}

/// Open (or create) the metadata store under `dir`, sized by the defaults.
pub fn open(dir: &Path) -> Result<Stores, OpenError> {
    open_with(dir, &StoreOptions::default())
}

/// Open (or create) the metadata store under `dir`.
pub fn open_with(dir: &Path, options: &StoreOptions) -> Result<Stores, OpenError> {
    let db = store::open_db(&dir.join("db"), options)?;
    let snapshots = dir.join("snapshots");
    snapshot::resume_install(&db, &snapshots)?;
    let volume = std::sync::Arc::new(snapshot_policy::LogVolume::default());
    volume.set_snapshot_bytes(snapshot::current_bytes(&snapshots)?);
    Ok(Stores {
        log: LogStore::new(db.clone(), volume.clone()),
        log_volume: volume.clone(),
        state_machine: StateMachineStore::new(
            db.clone(),
            snapshots,
            options.request_window,
            options.node_id,
            volume,
        ),
        reader: StateReader::new(db),
    })
}
