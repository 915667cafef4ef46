//! Namespaces: create, list, show, change visibility, list repositories.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tcr_raft::{Command, NamespaceRecord, Visibility};

use super::errors::{parse_json, ApiError, ApiResult};
use crate::oci::names::check_namespace;
use crate::oci::now_secs;
use crate::server::AppState;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateNamespace {
    pub name: String,
    #[serde(default)]
    pub visibility: Option<Visibility>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateNamespace {
    pub visibility: Visibility,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NamespaceView {
    pub name: String,
    pub visibility: Visibility,
    pub created_at: u64,
}

impl From<NamespaceRecord> for NamespaceView {
    fn from(r: NamespaceRecord) -> Self {
        NamespaceView {
            name: r.name,
            visibility: r.visibility,
            created_at: r.created_at,
        }
    }
}

const MAX_PAGE: usize = 1000;

fn page_params(q: &HashMap<String, String>) -> ApiResult<(Option<String>, usize)> {
    let n = match q.get("n") {
        None => MAX_PAGE,
        Some(n) => n
            .parse::<usize>()
            .map_err(|_| ApiError::invalid(format!("n={n} is not a non-negative integer")))?
            .min(MAX_PAGE),
    };
    Ok((q.get("last").cloned(), n))
}

pub async fn create(State(st): State<Arc<AppState>>, body: Bytes) -> ApiResult {
    let req: CreateNamespace = parse_json(&body)?;
    check_namespace(&req.name).map_err(ApiError::invalid)?;
    let visibility = req.visibility.unwrap_or(Visibility::Private);
    let created_at = now_secs();
    st.meta
        .write(Command::CreateNamespace {
            name: req.name.clone(),
            visibility,
            created_at,
        })
        .await?;
    let view = NamespaceView {
        name: req.name,
        visibility,
        created_at,
    };
    Ok((StatusCode::CREATED, Json(view)).into_response())
}

pub async fn list(
    State(st): State<Arc<AppState>>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult {
    let (last, n) = page_params(&q)?;
    let items: Vec<NamespaceView> = st
        .meta
        .read()
        .await?
        .namespaces(last.as_deref(), n)?
        .into_iter()
        .map(Into::into)
        .collect();
    Ok(Json(json!({ "namespaces": items })).into_response())
}

async fn find(st: &AppState, ns: &str) -> ApiResult<NamespaceRecord> {
    st.meta
        .read()
        .await?
        .namespace(ns)?
        .ok_or_else(|| ApiError::not_found(format!("namespace '{ns}' does not exist")))
}

pub async fn show(State(st): State<Arc<AppState>>, Path(ns): Path<String>) -> ApiResult {
    let rec = find(&st, &ns).await?;
    Ok(Json(NamespaceView::from(rec)).into_response())
}

pub async fn update(
    State(st): State<Arc<AppState>>,
    Path(ns): Path<String>,
    body: Bytes,
) -> ApiResult {
    let req: UpdateNamespace = parse_json(&body)?;
    st.meta
        .write(Command::SetNamespaceVisibility {
            name: ns.clone(),
            visibility: req.visibility,
        })
        .await?;
    let rec = find(&st, &ns).await?;
    Ok(Json(NamespaceView::from(rec)).into_response())
}

pub async fn repositories(
    State(st): State<Arc<AppState>>,
    Path(ns): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let (last, n) = page_params(&q)?;
    find(&st, &ns).await?;
    let state = st.meta.read().await?;
    let page = state.repositories(Some(&ns), last.as_deref(), n)?;
    let mut repos = Vec::new();
    for name in page.items {
        if let Some(r) = state.repository(&name)? {
            repos.push(json!({"name": r.name, "createdAt": r.created_at}));
        }
    }
    Ok(Json(json!({ "repositories": repos, "more": page.more })).into_response())
}
