//! tcr's blob storage: the local content-addressed store and upload sessions.

pub mod blob_store;
pub mod digest;
pub mod upload;

pub use blob_store::BlobStore;
pub use digest::{Digest, DigestError};
pub use upload::{SessionInfo, UploadError, Uploads};
