//! OCI error responses: `{"errors":[{"code","message","detail"}]}` with the
//! status the distribution spec gives each code.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

#[derive(Debug)]
pub struct OciError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub headers: Vec<(&'static str, String)>,
}

pub type OciResult<T = Response> = Result<T, OciError>;

macro_rules! oci_codes {
    ($($fn:ident => $status:ident, $code:literal;)*) => {
        impl OciError {
            $(pub fn $fn(message: impl Into<String>) -> OciError {
                OciError::new(StatusCode::$status, $code, message)
            })*
        }
    };
}

oci_codes! {
    blob_unknown => NOT_FOUND, "BLOB_UNKNOWN";
    blob_upload_invalid => BAD_REQUEST, "BLOB_UPLOAD_INVALID";
    blob_upload_unknown => NOT_FOUND, "BLOB_UPLOAD_UNKNOWN";
    digest_invalid => BAD_REQUEST, "DIGEST_INVALID";
    manifest_blob_unknown => BAD_REQUEST, "MANIFEST_BLOB_UNKNOWN";
    manifest_invalid => BAD_REQUEST, "MANIFEST_INVALID";
    manifest_unknown => NOT_FOUND, "MANIFEST_UNKNOWN";
    tag_invalid => BAD_REQUEST, "TAG_INVALID";
    name_invalid => BAD_REQUEST, "NAME_INVALID";
    name_unknown => NOT_FOUND, "NAME_UNKNOWN";
    too_large => PAYLOAD_TOO_LARGE, "SIZE_INVALID";
    unauthorized => UNAUTHORIZED, "UNAUTHORIZED";
    denied => FORBIDDEN, "DENIED";
    unsupported => METHOD_NOT_ALLOWED, "UNSUPPORTED";
    range_invalid => RANGE_NOT_SATISFIABLE, "RANGE_INVALID";
    pagination_invalid => BAD_REQUEST, "PAGINATION_NUMBER_INVALID";
    not_found => NOT_FOUND, "NOT_FOUND";
    unavailable => SERVICE_UNAVAILABLE, "UNAVAILABLE";
    internal => INTERNAL_SERVER_ERROR, "UNKNOWN";
}

impl OciError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> OciError {
        OciError {
            status,
            code,
            message: message.into(),
            headers: Vec::new(),
        }
    }

    /// 507: this node cannot take more bytes now (its disk is at its
    /// reserve); the message names the free space. Not a spec code, but
    /// clients print the message.
    pub fn insufficient_storage(message: impl Into<String>) -> OciError {
        OciError::new(
            StatusCode::INSUFFICIENT_STORAGE,
            "INSUFFICIENT_STORAGE",
            message,
        )
    }

    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> OciError {
        self.headers.push((name, value.into()));
        self
    }
}

impl IntoResponse for OciError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::error!(code = self.code, message = %self.message, "request failed");
        }
        let body =
            json!({"errors": [{"code": self.code, "message": self.message, "detail": null}]});
        let mut resp = (self.status, axum::Json(body)).into_response();
        for (name, value) in self.headers {
            if let Ok(v) = HeaderValue::from_str(&value) {
                resp.headers_mut().insert(name, v);
            }
        }
        resp
    }
}

impl From<crate::auth::AccessError> for OciError {
    fn from(e: crate::auth::AccessError) -> Self {
        use crate::auth::AccessError;
        // Retry-later and store refusals are not the registry's access
        // answers: they carry no API version header.
        let versioned = !matches!(
            e,
            AccessError::RetryLater { .. } | AccessError::Unavailable(_)
        );
        let err = match e {
            AccessError::Unauthenticated { message, challenge } => {
                let err = OciError::unauthorized(message);
                match challenge {
                    Some(c) => err.with_header("www-authenticate", c),
                    None => err,
                }
            }
            AccessError::Denied(m) => OciError::denied(m),
            AccessError::NotFound(m) => OciError::name_unknown(m),
            AccessError::RetryLater {
                status,
                message,
                after_secs,
            } => OciError::new(status, AccessError::retry_code(status), message)
                .with_header("retry-after", after_secs.to_string()),
            AccessError::Unavailable(m) => OciError::unavailable(m).with_header("retry-after", "1"),
            AccessError::Meta(e) => e.into(),
            AccessError::Read(e) => e.into(),
        };
        if versioned {
            err.with_header(super::API_VERSION_HEADER, "registry/2.0")
        } else {
            err
        }
    }
}

impl From<crate::metadata::MetaError> for OciError {
    fn from(e: crate::metadata::MetaError) -> Self {
        use crate::metadata::MetaError;
        use tcr_raft::Refusal;
        match e {
            MetaError::Refused(r) => match r {
                Refusal::NamespaceUnknown(_) | Refusal::RepositoryUnknown(_) => {
                    OciError::name_unknown(r.to_string())
                }
                Refusal::TagUnknown { .. } => OciError::manifest_unknown(r.to_string()),
                Refusal::BlobUnknown { .. } => OciError::blob_unknown(r.to_string()),
                Refusal::ManifestUnknown { .. } => OciError::manifest_unknown(r.to_string()),
                // Quota and immutable tags: DENIED, which docker prints as
                // "denied: <message>".
                // Tenancy refusals come from management commands, never from
                // an OCI route; map them anyway, as denials.
                _ => OciError::denied(r.to_string()),
            },
            MetaError::Unavailable(m) => OciError::unavailable(m).with_header("retry-after", "1"),
        }
    }
}

impl From<tcr_raft::ReadError> for OciError {
    fn from(e: tcr_raft::ReadError) -> Self {
        OciError::internal(format!("metadata read failed: {e}"))
    }
}

impl From<std::io::Error> for OciError {
    fn from(e: std::io::Error) -> Self {
        if e.kind() == std::io::ErrorKind::StorageFull {
            return OciError::insufficient_storage(format!("the disk of this node is full: {e}"));
        }
        OciError::internal(format!("storage: {e}"))
    }
}

impl From<tcr_storage::DigestError> for OciError {
    fn from(e: tcr_storage::DigestError) -> Self {
        match e {
            tcr_storage::DigestError::Malformed(_) => OciError::digest_invalid(e.to_string()),
            tcr_storage::DigestError::Unsupported(_) => {
                OciError::new(StatusCode::BAD_REQUEST, "UNSUPPORTED", e.to_string())
            }
        }
    }
}
