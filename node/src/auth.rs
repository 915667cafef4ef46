//! Authentication, first cut: the bootstrap admin token (Bearer, or Basic
//! with the token as password, which is what `docker login` sends). Without
//! a token the node is open and only listens on loopback (checked at start).

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use subtle::ConstantTimeEq;

use crate::server::AppState;

#[derive(Clone)]
pub struct Auth {
    admin_token: Option<String>,
}

impl Auth {
    pub fn new(admin_token: Option<String>) -> Self {
        Auth {
            admin_token: admin_token.filter(|t| !t.is_empty()),
        }
    }

    pub fn is_open(&self) -> bool {
        self.admin_token.is_none()
    }

    fn token_matches(&self, presented: &str) -> bool {
        match &self.admin_token {
            None => true,
            Some(t) => t.as_bytes().ct_eq(presented.as_bytes()).into(),
        }
    }

    /// Whether the request carries the admin credential.
    pub fn admits(&self, req: &Request) -> bool {
        if self.is_open() {
            return true;
        }
        let Some(value) = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
        else {
            return false;
        };
        if let Some(token) = value.strip_prefix("Bearer ") {
            return self.token_matches(token.trim());
        }
        if let Some(b64) = value.strip_prefix("Basic ") {
            let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(b64.trim()) else {
                return false;
            };
            let Ok(pair) = String::from_utf8(decoded) else {
                return false;
            };
            return pair
                .split_once(':')
                .is_some_and(|(_, password)| self.token_matches(password));
        }
        false
    }
}

/// Middleware for `/v2` and `/v1`: refuse requests without the credential,
/// in the error shape of the API they addressed.
pub async fn require(State(st): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    if st.auth.admits(&req) {
        return next.run(req).await;
    }
    let oci = req.uri().path().starts_with("/v2");
    let mut resp = if oci {
        crate::oci::errors::OciError::unauthorized("authentication required").into_response()
    } else {
        crate::api::errors::ApiError::new(
            StatusCode::UNAUTHORIZED,
            "UNAUTHENTICATED",
            "authentication required: send the admin token as a Bearer token",
        )
        .into_response()
    };
    resp.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Basic realm=\"tcr\""),
    );
    if oci {
        resp.headers_mut().insert(
            crate::oci::API_VERSION_HEADER,
            HeaderValue::from_static("registry/2.0"),
        );
    }
    resp
}
