//! Where a blob's copies belong and whether this node holds one.

use crate::api::errors::ErrorResponses;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::response::IntoResponse;
use axum::Json;
use serde_json::json;
use tcr_storage::Digest;

use super::errors::{ApiError, ApiResult};
use crate::state::ApiState;

#[utoipa::path(get, path = "/v1/container-registries/storage/blobs/{digest}", tag = "operator", description = "where a blob is stored (operator only)",
    params(("digest" = String, Path)),
    responses(
        (status = 200, description = "a JSON document", body = Object),
        ErrorResponses,
    ))]
pub async fn blob(State(st): State<Arc<ApiState>>, Path(digest): Path<String>) -> ApiResult {
    let d: Digest = digest
        .parse()
        .map_err(|e| ApiError::invalid(format!("{e}")))?;
    let reader = st.meta.reader();
    let record = reader.blob(&d.to_string())?;
    let placement = st.replicas.placement(&d);
    let local = st.blobs.stat(&d).await.ok().flatten().is_some();
    Ok(Json(json!({
        "digest": d.to_string(),
        "committed": record.is_some(),
        "size": record.map(|r| r.size),
        "owners": placement.owners.iter().map(|(id, _)| id).collect::<Vec<_>>(),
        "heldHere": local,
    }))
    .into_response())
}

/// This node's storage loop: what its last pass found and did.
#[utoipa::path(get, path = "/v1/container-registries/storage", tag = "operator", description = "this node's storage report (operator only)",
    responses(
        (status = 200, description = "a JSON document", body = Object),
        ErrorResponses,
    ))]
pub async fn status(State(st): State<Arc<ApiState>>) -> ApiResult {
    let report = st.reconciler.report();
    Ok(Json(json!({"nodeId": st.node_id, "storage": report})).into_response())
}

/// Start a storage pass (repair, rebalance, scrub) on this node now.
#[utoipa::path(post, path = "/v1/container-registries/storage/passes", tag = "operator", description = "start a storage pass now (operator only)",
    responses(
        (status = 200, description = "a JSON document", body = Object),
        ErrorResponses,
    ))]
pub async fn run_pass(State(st): State<Arc<ApiState>>) -> ApiResult {
    st.reconciler.wake();
    Ok((
        axum::http::StatusCode::ACCEPTED,
        Json(json!({"nodeId": st.node_id, "started": true})),
    )
        .into_response())
}
