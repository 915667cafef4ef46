//! tcr's blob storage: the local content-addressed store, upload sessions,
//! and placement of blobs on nodes.

pub mod blob_store;
pub mod digest;
pub mod disk_space;
pub mod placement;
pub mod replication;
pub mod upload;

pub use blob_store::{BlobStore, Hold, Mapped};
pub use digest::{Digest, DigestError};
pub use disk_space::{parse_size, DiskReserve, NoSpace, Reserve};
pub use upload::{SessionCaps, SessionInfo, UploadError, Uploads};
