//! Token signing keys (operator only): list, rotate.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use serde::Serialize;

use super::errors::{ApiError, ApiResult, ErrorResponses};

#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct KeyView {
    pub kid: String,
    pub created_at: u64,
    pub retire_at: Option<u64>,
    /// New tokens are signed with it.
    pub signing: bool,
    /// Tokens it signed are accepted.
    pub verifying: bool,
    /// SPKI PEM.
    pub public_key: String,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct KeyList {
    pub keys: Vec<KeyView>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct RotatedKey {
    pub kid: String,
}
use crate::state::ApiState;
use tcr_storage::clock::now_secs;

/// Public facts only: never the private half.
#[utoipa::path(get, path = "/v1/container-registries/keys", tag = "operator",
    responses((status = 200, body = KeyList), ErrorResponses))]
pub async fn list(State(st): State<Arc<ApiState>>) -> ApiResult {
    let now = now_secs();
    let keys = st
        .meta
        .read()
        .await?
        .signing_keys()?
        .into_iter()
        .map(|k| KeyView {
            kid: k.kid,
            created_at: k.created_at,
            retire_at: k.retire_at,
            signing: k.retire_at.is_none(),
            verifying: k.retire_at.is_none_or(|r| now < r),
            public_key: k.public_pem,
        })
        .collect();
    Ok(Json(KeyList { keys }).into_response())
}

/// A new signing key; the previous ones keep verifying until the tokens
/// they signed have expired.
#[utoipa::path(post, path = "/v1/container-registries/keys/rotate", tag = "operator",
    responses((status = 201, body = RotatedKey), ErrorResponses))]
pub async fn rotate(State(st): State<Arc<ApiState>>) -> ApiResult {
    let kid = st
        .auth
        .tokens
        .add_key(&st.meta, now_secs())
        .await
        .map_err(|e| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "UNAVAILABLE",
                e.to_string(),
            )
        })?;
    Ok((StatusCode::CREATED, Json(RotatedKey { kid })).into_response())
}
