//! The Raft machinery: nothing here knows what a registry is. The rest of
//! the node reaches it through `Consensus` (`handle`), the `Network` it
//! starts with, and the membership calls a new node makes before it has
//! any Raft state (`members`).

mod election;
mod handle;
mod lease;
pub(crate) mod log_store;
pub(crate) mod members;
pub(crate) mod network;
mod read_index;
pub(crate) mod rpc;
mod server;
pub(crate) mod snapshot;
pub(crate) mod snapshot_policy;
pub(crate) mod timing;
mod transfer;
pub(crate) mod types;

pub use handle::{Consensus, StartError, Unavailable};
pub use members::{ask_for_id, find_member};
pub use network::{Network, MAX_FRAME};
pub use rpc::{JoinReply, Leader};
pub use transfer::TransferReply;
