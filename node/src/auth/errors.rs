//! Why auth turned a request away, in neither façade's words: the registry
//! API words it as `errors[]` with a challenge (`oci::errors`), the
//! management API as its `error` body (`api::errors`).

use axum::http::StatusCode;

use crate::metadata::MetaError;

#[derive(Debug)]
pub enum AccessError {
    /// Status 401; `challenge` is the `WWW-Authenticate` value the
    /// registry API answers with, which docker and containerd follow to the
    /// token endpoint.
    Unauthenticated {
        message: String,
        challenge: Option<String>,
    },
    /// Status 403.
    Denied(String),
    /// Status 404: what the caller may not see is reported as missing.
    NotFound(String),
    /// Status 429 (too many requests or failed attempts) or 503 (too many checks
    /// waiting), with `Retry-After`.
    RetryLater {
        status: StatusCode,
        message: String,
        after_secs: u64,
    },
    /// Status 503: the metadata store could not check the credentials.
    Unavailable(String),
    /// The access decision could not read the metadata.
    Meta(MetaError),
    Read(tcr_raft::ReadError),
}

impl AccessError {
    /// The error code both façades use for a `RetryLater`.
    pub fn retry_code(status: StatusCode) -> &'static str {
        if status == StatusCode::TOO_MANY_REQUESTS {
            "TOOMANYREQUESTS"
        } else {
            "UNAVAILABLE"
        }
    }
}

impl From<MetaError> for AccessError {
    fn from(e: MetaError) -> Self {
        AccessError::Meta(e)
    }
}

impl From<tcr_raft::ReadError> for AccessError {
    fn from(e: tcr_raft::ReadError) -> Self {
        AccessError::Read(e)
    }
}
