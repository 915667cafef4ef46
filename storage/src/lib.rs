//! tcr's blob storage: the local content-addressed store, upload sessions,
//! placement of blobs on nodes, and their distribution over the cluster
//! (`cluster`: replication, peer reads, repair, rebalance, scrub, sweep).

pub mod blob_store;
pub mod clock;
pub mod cluster;
pub mod digest;
pub mod disk_space;
mod hashing;
pub mod integrity;
pub mod placement;
pub mod upload;

pub use blob_store::{BlobStore, Hold, Mapped};
pub use digest::{Digest, DigestError};
pub use disk_space::{parse_size, DiskReserve, NoSpace, Reserve};
pub use upload::{Layout, SessionCaps, SessionInfo, UploadError, Uploads};
