//! Management API errors: `{"error":{"code":"...","message":"..."}}`.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::auth::AccessError;
use crate::metadata::MetaError;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

pub type ApiResult<T = Response> = Result<T, ApiError>;

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, "INVALID_ARGUMENT", message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::NOT_FOUND, "NOT_FOUND", message)
    }

    pub fn unauthenticated() -> Self {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "UNAUTHENTICATED",
            crate::auth::access::MANAGEMENT_CREDENTIALS,
        )
    }

    pub fn denied(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::FORBIDDEN, "PERMISSION_DENIED", message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::error!(code = self.code, message = %self.message, "management request failed");
        }
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.to_string(),
                message: self.message,
            },
        };
        (self.status, axum::Json(body)).into_response()
    }
}

impl From<AccessError> for ApiError {
    fn from(e: AccessError) -> Self {
        match e {
            AccessError::Unauthenticated { message, .. } => {
                ApiError::new(StatusCode::UNAUTHORIZED, "UNAUTHENTICATED", message)
            }
            AccessError::Denied(m) => ApiError::denied(m),
            AccessError::NotFound(m) => ApiError::not_found(m),
            AccessError::RetryLater {
                status, message, ..
            } => ApiError::new(status, AccessError::retry_code(status), message),
            AccessError::Unavailable(m) => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE", m)
            }
            AccessError::Meta(e) => e.into(),
            AccessError::Read(e) => e.into(),
        }
    }
}

/// The management API's answer to a refusal, with `Retry-After` when the
/// refusal says when to come back.
pub fn refused(e: AccessError) -> Response {
    let retry = match &e {
        AccessError::RetryLater { after_secs, .. } => Some(*after_secs),
        _ => None,
    };
    let mut resp = ApiError::from(e).into_response();
    if let Some(secs) = retry {
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    resp
}

impl From<MetaError> for ApiError {
    fn from(e: MetaError) -> Self {
        use tcr_raft::Refusal;
        match e {
            MetaError::Refused(
                r @ (Refusal::NamespaceExists(_)
                | Refusal::OrganisationExists(_)
                | Refusal::ProjectExists { .. }
                | Refusal::CredentialExists { .. }),
            ) => ApiError::new(StatusCode::CONFLICT, "ALREADY_EXISTS", r.to_string()),
            MetaError::Refused(
                r @ (Refusal::QuotaExceeded { .. } | Refusal::TagImmutable { .. }),
            ) => ApiError::new(StatusCode::CONFLICT, "FAILED_PRECONDITION", r.to_string()),
            MetaError::Refused(
                r @ (Refusal::NamespaceNotEmpty(_)
                | Refusal::OrganisationNotEmpty(_)
                | Refusal::ProjectNotEmpty { .. }),
            ) => ApiError::new(StatusCode::CONFLICT, "FAILED_PRECONDITION", r.to_string()),
            MetaError::Refused(r) => ApiError::not_found(r.to_string()),
            MetaError::Unavailable(m) => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE", m)
            }
        }
    }
}

impl From<tcr_raft::ReadError> for ApiError {
    fn from(e: tcr_raft::ReadError) -> Self {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL", e.to_string())
    }
}

/// Parse a JSON body ourselves, so malformed input gets our error shape.
pub fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> ApiResult<T> {
    serde_json::from_slice(body).map_err(|e| ApiError::invalid(format!("request body: {e}")))
}

/// The body of every management API error (for the OpenAPI document).
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// A stable code: INVALID_ARGUMENT, NOT_FOUND, ALREADY_EXISTS,
    /// FAILED_PRECONDITION, UNAUTHENTICATED, PERMISSION_DENIED, UNAVAILABLE.
    pub code: String,
    pub message: String,
}

/// The error answers of management calls, documented once for all of
/// them (a call gives the ones that apply to it).
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)] // only documents the answers
pub enum ErrorResponses {
    #[response(status = 400, description = "invalid input: INVALID_ARGUMENT")]
    Invalid(ErrorBody),
    #[response(status = 401, description = "no valid credential: UNAUTHENTICATED")]
    Unauthenticated(ErrorBody),
    #[response(
        status = 403,
        description = "not allowed, or the organisation's feature gate is off: PERMISSION_DENIED"
    )]
    Denied(ErrorBody),
    #[response(
        status = 404,
        description = "no such resource (or not visible to the caller): NOT_FOUND"
    )]
    NotFound(ErrorBody),
    #[response(
        status = 409,
        description = "exists already, or not empty: ALREADY_EXISTS, FAILED_PRECONDITION"
    )]
    Conflict(ErrorBody),
    #[response(
        status = 503,
        description = "no leader yet, or the leader is unreachable: UNAVAILABLE"
    )]
    Unavailable(ErrorBody),
}
