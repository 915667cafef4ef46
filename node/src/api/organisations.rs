//! Organisations (operator only), their feature gates, and their projects.

use crate::api::errors::ErrorResponses;
use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use tcr_raft::{Command, OrganisationRecord, ProjectRecord};

use super::errors::{parse_json, ApiError, ApiResult};
use crate::auth::access::{require_admin, require_org_admin, require_org_member};
use crate::auth::{Caller, Subject};
use crate::oci::names::check_namespace;
use crate::state::ApiState;
use tcr_storage::clock::now_secs;

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateOrganisation {
    pub name: String,
    /// Feature gates, e.g. `{"containerRegistry": true}`; all off if absent.
    #[serde(default)]
    pub features: BTreeMap<String, bool>,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetFeature {
    pub enabled: bool,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateProject {
    pub name: String,
}

#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OrganisationView {
    pub name: String,
    pub features: BTreeMap<String, bool>,
    pub created_at: u64,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct OrganisationList {
    pub organisations: Vec<OrganisationView>,
}

#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProjectView {
    pub organisation: String,
    pub name: String,
    pub created_at: u64,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ProjectList {
    pub projects: Vec<ProjectView>,
}

/// Organisation, project and credential names: the namespace rules
/// (lowercase letters, digits, separators; at most 64 characters).
pub fn check_tenant_name(what: &str, name: &str) -> ApiResult<()> {
    check_namespace(name).map_err(|e| ApiError::invalid(format!("{what} name: {e}")))
}

fn org_view(o: &OrganisationRecord) -> OrganisationView {
    OrganisationView {
        name: o.name.clone(),
        features: o.features.clone(),
        created_at: o.created_at,
    }
}

fn project_view(p: &ProjectRecord) -> ProjectView {
    ProjectView {
        organisation: p.organisation.clone(),
        name: p.name.clone(),
        created_at: p.created_at,
    }
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

#[utoipa::path(post, path = "/v1/container-registries/organisations", tag = "organisations",
    request_body = CreateOrganisation,
    responses(
        (status = 201, body = OrganisationView),
        ErrorResponses,
    ))]
pub async fn create(
    State(st): State<Arc<ApiState>>,
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
#[utoipa::path(get, path = "/v1/container-registries/organisations", tag = "organisations",
    responses(
        (status = 200, description = "all (operator) or the credential's own", body = OrganisationList),
        ErrorResponses,
    ))]
pub async fn list(
    State(st): State<Arc<ApiState>>,
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
    Ok(Json(OrganisationList {
        organisations: orgs.iter().map(org_view).collect(),
    })
    .into_response())
}

pub(super) fn find(state: &tcr_raft::StateReader, org: &str) -> ApiResult<OrganisationRecord> {
    state
        .organisation(org)?
        .ok_or_else(|| ApiError::not_found(format!("organisation '{org}' does not exist")))
}

#[utoipa::path(get, path = "/v1/container-registries/organisations/{org}", tag = "organisations",
    params(("org" = String, Path)),
    responses(
        (status = 200, body = OrganisationView),
        ErrorResponses,
    ))]
pub async fn show(
    State(st): State<Arc<ApiState>>,
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

#[utoipa::path(delete, path = "/v1/container-registries/organisations/{org}", tag = "organisations",
    params(("org" = String, Path)),
    responses(
        (status = 204, description = "deleted with its projects and credentials"),
        ErrorResponses,
    ))]
pub async fn delete(
    State(st): State<Arc<ApiState>>,
    Extension(caller): Extension<Caller>,
    Path(org): Path<String>,
) -> ApiResult {
    require_admin(&caller)?;
    st.meta
        .write(Command::DeleteOrganisation { name: org })
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[utoipa::path(put, path = "/v1/container-registries/organisations/{org}/features/{feature}", tag = "organisations",
    params(("org" = String, Path), ("feature" = String, Path, description = "e.g. containerRegistry")),
    request_body = SetFeature,
    responses(
        (status = 200, body = OrganisationView),
        ErrorResponses,
    ))]
pub async fn set_feature(
    State(st): State<Arc<ApiState>>,
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

#[utoipa::path(post, path = "/v1/container-registries/organisations/{org}/projects", tag = "projects",
    params(("org" = String, Path)),
    request_body = CreateProject,
    responses(
        (status = 201, body = ProjectView),
        ErrorResponses,
    ))]
pub async fn create_project(
    State(st): State<Arc<ApiState>>,
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

#[utoipa::path(get, path = "/v1/container-registries/organisations/{org}/projects", tag = "projects",
    params(("org" = String, Path)),
    responses(
        (status = 200, body = ProjectList),
        ErrorResponses,
    ))]
pub async fn list_projects(
    State(st): State<Arc<ApiState>>,
    Extension(caller): Extension<Caller>,
    Path(org): Path<String>,
) -> ApiResult {
    let state = st.meta.read().await?;
    require_org_member(state, &caller, &org)?;
    find(state, &org)?;
    let projects = state.projects(&org)?.iter().map(project_view).collect();
    Ok(Json(ProjectList { projects }).into_response())
}

#[utoipa::path(delete, path = "/v1/container-registries/organisations/{org}/projects/{project}", tag = "projects",
    params(("org" = String, Path), ("project" = String, Path)),
    responses(
        (status = 204, description = "deleted with its credentials"),
        ErrorResponses,
    ))]
pub async fn delete_project(
    State(st): State<Arc<ApiState>>,
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
