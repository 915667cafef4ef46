//! Request rate limits (operator only): the cluster's defaults and one
//! organisation's override, kept in Raft so every node applies the same.

use crate::api::errors::ErrorResponses;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use serde_json::json;
use tcr_raft::{Command, RateLimits};

use super::errors::{parse_json, ApiError, ApiResult};
use crate::state::ApiState;

/// Most requests per minute a limit may name (one a millisecond).
const MAX_PER_MINUTE: u32 = 60_000;

fn parse(body: &Bytes) -> Result<RateLimits, ApiError> {
    let l: RateLimits = parse_json(body)?;
    for (name, v) in [
        ("pullsPerMinute", l.pulls_per_minute),
        ("pushesPerMinute", l.pushes_per_minute),
        ("managementPerMinute", l.management_per_minute),
    ] {
        if v > MAX_PER_MINUTE {
            return Err(ApiError::invalid(format!(
                "{name}: at most {MAX_PER_MINUTE} (0: no limit)"
            )));
        }
    }
    Ok(l)
}

/// `limits`: what is set at this level; `effective`: what applies.
fn view(
    organisation: Option<&str>,
    set: Option<RateLimits>,
    applied: Option<RateLimits>,
) -> ApiResult {
    Ok(Json(json!({
        "organisation": organisation,
        "limits": set,
        "effective": applied,
    }))
    .into_response())
}

#[utoipa::path(get, path = "/v1/container-registries/cluster/rate-limits", tag = "operator",
    description = "the cluster's default request rate limits per credential (per client address for anonymous callers); null: none (operator only)",
    responses((status = 200, description = "a JSON document", body = Object), ErrorResponses))]
pub async fn show_cluster(State(st): State<Arc<ApiState>>) -> ApiResult {
    let state = st.meta.read().await?;
    let l = state.rate_limits(None)?;
    view(None, l, l)
}

#[utoipa::path(put, path = "/v1/container-registries/cluster/rate-limits", tag = "operator",
    description = "set the cluster's default request rate limits: pullsPerMinute, pushesPerMinute, managementPerMinute (0: no limit) (operator only)",
    request_body = RateLimits,
    responses((status = 200, description = "a JSON document", body = Object), ErrorResponses))]
pub async fn set_cluster(State(st): State<Arc<ApiState>>, body: Bytes) -> ApiResult {
    let limits = parse(&body)?;
    st.meta
        .write(Command::SetRateLimits {
            organisation: None,
            limits: Some(limits),
        })
        .await?;
    view(None, Some(limits), Some(limits))
}

async fn require_organisation(st: &ApiState, org: &str) -> Result<(), ApiError> {
    let state = st.meta.read().await?;
    if state.organisation(org)?.is_none() {
        return Err(ApiError::not_found(format!(
            "organisation '{org}' does not exist"
        )));
    }
    Ok(())
}

#[utoipa::path(get, path = "/v1/container-registries/organisations/{org}/rate-limits", tag = "operator",
    params(("org" = String, Path)),
    description = "an organisation's rate limit override and the limits in effect for it (operator only)",
    responses((status = 200, description = "a JSON document", body = Object), ErrorResponses))]
pub async fn show_organisation(
    State(st): State<Arc<ApiState>>,
    Path(org): Path<String>,
) -> ApiResult {
    require_organisation(&st, &org).await?;
    let state = st.meta.read().await?;
    let set = state.rate_limits(Some(&org))?;
    let effective = match set {
        Some(l) => Some(l),
        None => state.rate_limits(None)?,
    };
    view(Some(&org), set, effective)
}

#[utoipa::path(put, path = "/v1/container-registries/organisations/{org}/rate-limits", tag = "operator",
    params(("org" = String, Path)),
    description = "override the cluster's rate limits for one organisation's credentials (operator only)",
    request_body = RateLimits,
    responses((status = 200, description = "a JSON document", body = Object), ErrorResponses))]
pub async fn set_organisation(
    State(st): State<Arc<ApiState>>,
    Path(org): Path<String>,
    body: Bytes,
) -> ApiResult {
    let limits = parse(&body)?;
    require_organisation(&st, &org).await?;
    st.meta
        .write(Command::SetRateLimits {
            organisation: Some(org.clone()),
            limits: Some(limits),
        })
        .await?;
    view(Some(&org), Some(limits), Some(limits))
}

#[utoipa::path(delete, path = "/v1/container-registries/organisations/{org}/rate-limits", tag = "operator",
    params(("org" = String, Path)),
    description = "remove an organisation's override: the cluster's limits apply again (operator only)",
    responses((status = 204, description = "removed"), ErrorResponses))]
pub async fn clear_organisation(
    State(st): State<Arc<ApiState>>,
    Path(org): Path<String>,
) -> ApiResult {
    require_organisation(&st, &org).await?;
    st.meta
        .write(Command::SetRateLimits {
            organisation: Some(org),
            limits: None,
        })
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
