//! Token signing keys (operator only): list, rotate.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use serde_json::json;

use super::errors::{ApiError, ApiResult};
use crate::oci::now_secs;
use crate::server::AppState;

/// Public facts only: never the private half.
pub async fn list(State(st): State<Arc<AppState>>) -> ApiResult {
    let now = now_secs();
    let keys: Vec<_> = st
        .meta
        .read()
        .await?
        .signing_keys()?
        .into_iter()
        .map(|k| {
            json!({
                "kid": k.kid,
                "createdAt": k.created_at,
                "retireAt": k.retire_at,
                "signing": k.retire_at.is_none(),
                "verifying": k.retire_at.is_none_or(|r| now < r),
                "publicKey": k.public_pem,
            })
        })
        .collect();
    Ok(Json(json!({ "keys": keys })).into_response())
}

/// A new signing key; the previous ones keep verifying until the tokens
/// they signed have expired.
pub async fn rotate(State(st): State<Arc<AppState>>) -> ApiResult {
    let kid = st.auth.tokens.add_key(&st, now_secs()).await.map_err(|e| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "UNAVAILABLE",
            e.to_string(),
        )
    })?;
    Ok((StatusCode::CREATED, Json(json!({ "kid": kid }))).into_response())
}
