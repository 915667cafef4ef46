//! A namespace's retention policy, its preview, its runs and their audit
//! records.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::{Extension, Json};
use serde::Serialize;
use tcr_raft::{Action, AuditItem, Command, RetentionPolicy, RetentionRun, Trigger};

use super::errors::{parse_json, ApiError, ApiResult, ErrorResponses};
use crate::auth::access::require_on_namespace;
use crate::auth::Caller;
use crate::state::ApiState;
use tcr_storage::clock::now_secs;

#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Preview {
    pub namespace: String,
    /// The clock the policy's durations were counted back from.
    pub evaluated_at: u64,
    pub tags: u64,
    pub manifests: u64,
    /// Everything the next run would remove, if nothing changes meanwhile.
    pub removals: Vec<AuditItem>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct RunList {
    /// Newest first, without their lists of removals (ask for one run).
    pub runs: Vec<RetentionRun>,
}

#[utoipa::path(get, path = "/v1/container-registries/namespaces/{ns}/retention-policy", tag = "retention",
    params(("ns" = String, Path)),
    responses((status = 200, body = RetentionPolicy), ErrorResponses))]
pub async fn show(
    State(st): State<Arc<ApiState>>,
    Extension(caller): Extension<Caller>,
    Path(ns): Path<String>,
) -> ApiResult {
    let rec = require_on_namespace(st.meta.read().await?, &caller, &ns, Action::Pull)?;
    let policy = rec.retention.ok_or_else(|| no_policy(&ns))?;
    Ok(Json(policy).into_response())
}

/// Set (replace) the policy. It takes effect at the next run; nothing is
/// removed now.
#[utoipa::path(put, path = "/v1/container-registries/namespaces/{ns}/retention-policy", tag = "retention",
    params(("ns" = String, Path)),
    request_body = RetentionPolicy,
    responses((status = 200, body = RetentionPolicy), ErrorResponses))]
pub async fn set(
    State(st): State<Arc<ApiState>>,
    Extension(caller): Extension<Caller>,
    Path(ns): Path<String>,
    body: Bytes,
) -> ApiResult {
    require_on_namespace(st.meta.read().await?, &caller, &ns, Action::Admin)?;
    let policy: RetentionPolicy = parse_json(&body)?;
    policy.validate().map_err(ApiError::invalid)?;
    st.meta
        .write(Command::SetRetentionPolicy {
            namespace: ns,
            policy: Some(policy.clone()),
        })
        .await?;
    Ok(Json(policy).into_response())
}

#[utoipa::path(delete, path = "/v1/container-registries/namespaces/{ns}/retention-policy", tag = "retention",
    params(("ns" = String, Path)),
    responses((status = 204, description = "removed; runs still pending finish without removing anything"), ErrorResponses))]
pub async fn clear(
    State(st): State<Arc<ApiState>>,
    Extension(caller): Extension<Caller>,
    Path(ns): Path<String>,
) -> ApiResult {
    require_on_namespace(st.meta.read().await?, &caller, &ns, Action::Admin)?;
    st.meta
        .write(Command::SetRetentionPolicy {
            namespace: ns,
            policy: None,
        })
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Exactly what a run started now would remove, computed by the same
/// function the state machine applies, without removing anything.
#[utoipa::path(get, path = "/v1/container-registries/namespaces/{ns}/retention-policy/preview", tag = "retention",
    params(("ns" = String, Path)),
    responses((status = 200, body = Preview), ErrorResponses))]
pub async fn preview(
    State(st): State<Arc<ApiState>>,
    Extension(caller): Extension<Caller>,
    Path(ns): Path<String>,
) -> ApiResult {
    let state = st.meta.read().await?;
    let rec = require_on_namespace(state, &caller, &ns, Action::Pull)?;
    if rec.retention.is_none() {
        return Err(no_policy(&ns));
    }
    let at = now_secs();
    let removals = state.retention_preview(&ns, at)?;
    let tags = removals.iter().filter(|r| r.tag.is_some()).count() as u64;
    Ok(Json(Preview {
        namespace: ns,
        evaluated_at: at,
        tags,
        manifests: removals.len() as u64 - tags,
        removals,
    })
    .into_response())
}

/// Start a run now. It goes on in the background on the leader; follow it
/// with `GET .../retention-runs/{id}`.
#[utoipa::path(post, path = "/v1/container-registries/namespaces/{ns}/retention-runs", tag = "retention",
    params(("ns" = String, Path)),
    responses((status = 202, description = "started", body = RetentionRun), ErrorResponses))]
pub async fn start(
    State(st): State<Arc<ApiState>>,
    Extension(caller): Extension<Caller>,
    Path(ns): Path<String>,
) -> ApiResult {
    require_on_namespace(st.meta.read().await?, &caller, &ns, Action::Admin)?;
    let run = crate::jobs::retention::start(&st.jobs, &ns, Trigger::Manual).await?;
    Ok((StatusCode::ACCEPTED, Json(run)).into_response())
}

#[utoipa::path(get, path = "/v1/container-registries/namespaces/{ns}/retention-runs", tag = "retention",
    params(("ns" = String, Path), ("n" = Option<usize>, Query, description = "at most this many (100)")),
    responses((status = 200, body = RunList), ErrorResponses))]
pub async fn runs(
    State(st): State<Arc<ApiState>>,
    Extension(caller): Extension<Caller>,
    Path(ns): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult {
    let (_, n) = super::namespaces::page_params(&q)?;
    let state = st.meta.read().await?;
    require_on_namespace(state, &caller, &ns, Action::Pull)?;
    let mut runs = state.retention_runs(&ns, n.min(tcr_raft::RUNS_KEPT))?;
    for r in &mut runs {
        r.removed.clear();
    }
    Ok(Json(RunList { runs }).into_response())
}

#[utoipa::path(get, path = "/v1/container-registries/namespaces/{ns}/retention-runs/{id}", tag = "retention",
    params(("ns" = String, Path), ("id" = String, Path)),
    responses((status = 200, description = "the run and its audit record", body = RetentionRun), ErrorResponses))]
pub async fn run(
    State(st): State<Arc<ApiState>>,
    Extension(caller): Extension<Caller>,
    Path((ns, id)): Path<(String, String)>,
) -> ApiResult {
    let state = st.meta.read().await?;
    require_on_namespace(state, &caller, &ns, Action::Pull)?;
    let run = state.retention_run(&ns, &id)?.ok_or_else(|| {
        ApiError::not_found(format!("no retention run '{id}' in namespace '{ns}'"))
    })?;
    Ok(Json(run).into_response())
}

fn no_policy(ns: &str) -> ApiError {
    ApiError::not_found(format!("namespace '{ns}' has no retention policy"))
}
