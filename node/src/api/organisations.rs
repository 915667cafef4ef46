//! Organisations (operator only), their feature gates, and their projects.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::json;
use tcr_raft::{Command, OrganisationRecord, ProjectRecord};

use super::errors::{parse_json, ApiError, ApiResult};
use crate::auth::access::{require_admin, require_org_admin, require_org_member};
use crate::auth::{Caller, Subject};
use crate::oci::names::check_namespace;
use crate::oci::now_secs;
use crate::server::AppState;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateOrganisation {
    pub name: String,
    /// Feature gates, e.g. `{"containerRegistry": true}`; all off if absent.
    #[serde(default)]
    pub features: BTreeMap<String, bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetFeature {
    pub enabled: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateProject {
    pub name: String,
}

/// Organisation, project and credential names: the namespace rules
/// (lowercase letters, digits, separators; at most 64 characters).
pub fn check_tenant_name(what: &str, name: &str) -> ApiResult<()> {
    check_namespace(name).map_err(|e| ApiError::invalid(format!("{what} name: {e}")))
}

fn org_view(o: &OrganisationRecord) -> serde_json::Value {
    json!({"name": o.name, "features": o.features, "createdAt": o.created_at})
}

fn project_view(p: &ProjectRecord) -> serde_json::Value {
    json!({"organisation": p.organisation, "name": p.name, "createdAt": p.created_at})
}

fn check_feature(name: &str) -> ApiResult<()> {
    if name.is_empty()
        || name.len() > 64
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(ApiError::invalid(format!(
            "feature name '{}' must be 1-64 letters, digits, '-' or '_'",
            name.chars().take(80).collect::<String>()
        )));
    }
    Ok(())
}

pub async fn create(
    State(st): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    body: Bytes,
) -> ApiResult {
    require_admin(&caller)?;
    let req: CreateOrganisation = parse_json(&body)?;
    check_tenant_name("organisation", &req.name)?;
    for f in req.features.keys() {
        check_feature(f)?;
    }
    let created_at = now_secs();
    st.meta
        .write(Command::CreateOrganisation {
            name: req.name.clone(),
            features: req.features.clone(),
            created_at,
        })
        .await?;
    let rec = OrganisationRecord {
        name: req.name,
        features: req.features,
        created_at,
    };
    Ok((StatusCode::CREATED, Json(org_view(&rec))).into_response())
}

/// The operator sees every organisation; a credential its own.
pub async fn list(
    State(st): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
) -> ApiResult {
    let state = st.meta.read().await?;
    let orgs: Vec<_> = match &caller.subject {
        Subject::Admin => state.organisations()?,
        Subject::Credential(c) if caller.token.is_none() => {
            state.organisation(&c.organisation)?.into_iter().collect()
        }
        _ => return Err(ApiError::unauthenticated()),
    };
    Ok(
        Json(json!({"organisations": orgs.iter().map(org_view).collect::<Vec<_>>()}))
            .into_response(),
    )
}

fn find(state: &tcr_raft::StateReader, org: &str) -> ApiResult<OrganisationRecord> {
    state
        .organisation(org)?
        .ok_or_else(|| ApiError::not_found(format!("organisation '{org}' does not exist")))
}

pub async fn show(
    State(st): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(org): Path<String>,
) -> ApiResult {
    let state = st.meta.read().await?;
    if !caller.is_admin() {
        // A member of a gated-off organisation may still see that it is off.
        match caller.credential() {
            Some(c) if c.organisation == org && caller.token.is_none() => {}
            _ => require_org_member(state, &caller, &org)?,
        }
    }
    Ok(Json(org_view(&find(state, &org)?)).into_response())
}

pub async fn delete(
    State(st): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(org): Path<String>,
) -> ApiResult {
    require_admin(&caller)?;
    st.meta
        .write(Command::DeleteOrganisation { name: org })
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub async fn set_feature(
    State(st): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path((org, feature)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult {
    require_admin(&caller)?;
    check_feature(&feature)?;
    let req: SetFeature = parse_json(&body)?;
    st.meta
        .write(Command::SetFeature {
            organisation: org.clone(),
            feature,
            enabled: req.enabled,
        })
        .await?;
    Ok(Json(org_view(&find(st.meta.read().await?, &org)?)).into_response())
}

pub async fn create_project(
    State(st): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(org): Path<String>,
    body: Bytes,
) -> ApiResult {
    require_org_admin(st.meta.read().await?, &caller, &org)?;
    let req: CreateProject = parse_json(&body)?;
    check_tenant_name("project", &req.name)?;
    let created_at = now_secs();
    st.meta
        .write(Command::CreateProject {
            organisation: org.clone(),
            name: req.name.clone(),
            created_at,
        })
        .await?;
    let rec = ProjectRecord {
        organisation: org,
        name: req.name,
        created_at,
    };
    Ok((StatusCode::CREATED, Json(project_view(&rec))).into_response())
}

pub async fn list_projects(
    State(st): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(org): Path<String>,
) -> ApiResult {
    let state = st.meta.read().await?;
    require_org_member(state, &caller, &org)?;
    find(state, &org)?;
    let projects: Vec<_> = state.projects(&org)?.iter().map(project_view).collect();
    Ok(Json(json!({ "projects": projects })).into_response())
}

pub async fn delete_project(
    State(st): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path((org, project)): Path<(String, String)>,
) -> ApiResult {
    require_org_admin(st.meta.read().await?, &caller, &org)?;
    st.meta
        .write(Command::DeleteProject {
            organisation: org,
            name: project,
        })
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
