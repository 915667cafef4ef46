//! The Raft machinery: nothing here knows what a registry is.

pub mod log_store;
pub mod network;
pub mod read_index;
pub mod rpc;
pub mod server;
pub mod snapshot;
pub mod snapshot_policy;
pub mod transfer;
pub mod types;
