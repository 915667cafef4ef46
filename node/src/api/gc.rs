//! Garbage collection (operator only): run now, or see the last run.

use crate::api::errors::ErrorResponses;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{OriginalUri, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use serde::{Deserialize, Serialize};

use super::cluster::redirect_to_leader;
use super::errors::{parse_json, ApiError, ApiResult};
use crate::jobs::gc::{GcError, GcOutcome};
use crate::state::ApiState;

#[derive(Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RunGc {
    /// List what would be removed, remove nothing.
    #[serde(default)]
    pub dry_run: bool,
    /// Overrides the node's grace period (`--gc-grace-secs`) for this run.
    #[serde(default)]
    pub grace_period_secs: Option<u64>,
}

#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LastRun {
    pub at: u64,
    pub grace_before: u64,
    pub candidates: u64,
    pub collected: u64,
    pub collected_bytes: u64,
}

#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct GcStatus {
    pub node_id: u64,
    /// The last collection committed in the cluster.
    pub last: Option<LastRun>,
    /// Files this node deleted after their blobs were collected (or never
    /// committed), since it started.
    pub swept_blobs: u64,
    pub swept_bytes: u64,
}

impl From<GcError> for ApiError {
    fn from(e: GcError) -> Self {
        match e {
            GcError::Meta(m) => m.into(),
            GcError::Read(r) => r.into(),
        }
    }
}

#[utoipa::path(post, path = "/v1/container-registries/gc/runs", tag = "operator",
    description = "collect unreferenced blobs now (runs on the leader; a follower answers 307)",
    request_body = RunGc,
    responses(
        (status = 200, body = GcOutcome),
        (status = 307, description = "ask the leader"),
        ErrorResponses,
    ))]
pub async fn run(
    State(st): State<Arc<ApiState>>,
    OriginalUri(uri): OriginalUri,
    body: Bytes,
) -> ApiResult {
    let req: RunGc = if body.is_empty() {
        RunGc::default()
    } else {
        parse_json(&body)?
    };
    if let Some(r) = redirect_to_leader(&st, &uri) {
        return Ok(r);
    }
    let grace = match req.grace_period_secs {
        Some(g) => g,
        None => crate::jobs::gc::grace_secs(&st.jobs)?,
    };
    let out = crate::jobs::gc::run(&st.jobs, req.dry_run, grace).await?;
    Ok((StatusCode::OK, Json(out)).into_response())
}

#[utoipa::path(get, path = "/v1/container-registries/gc", tag = "operator",
    responses(
        (status = 200, body = GcStatus),
        ErrorResponses,
    ))]
pub async fn status(State(st): State<Arc<ApiState>>) -> ApiResult {
    let last = st.meta.read().await?.gc_last()?.map(|r| LastRun {
        at: r.at,
        grace_before: r.grace_before,
        candidates: r.candidates,
        collected: r.collected,
        collected_bytes: r.collected_bytes,
    });
    let report = st.reconciler.report();
    Ok(Json(GcStatus {
        node_id: st.node_id,
        last,
        swept_blobs: report.swept,
        swept_bytes: report.swept_bytes,
    })
    .into_response())
}
