//! tcr's blob storage: the local content-addressed store, upload sessions,
//! and placement of blobs on nodes.

pub mod blob_store;
pub mod digest;
pub mod placement;
pub mod replication;
pub mod upload;

pub use blob_store::{BlobStore, Hold, Mapped};
pub use digest::{Digest, DigestError};
pub use upload::{SessionInfo, UploadError, Uploads};
