//! Credentials (robot accounts / API tokens) of an organisation. The secret
//! is returned once, at creation; only its argon2 hash is kept.

use crate::api::errors::ErrorResponses;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use tcr_raft::{Action, Command, CredentialRecord, Scope};

use super::errors::{parse_json, ApiError, ApiResult};
use super::organisations::check_tenant_name;
use crate::auth::access::require_org_admin;
use crate::auth::{secrets, Caller};
use crate::oci::names::check_namespace;
use crate::state::ApiState;
use tcr_storage::clock::now_secs;

/// Most scopes one credential carries.
const MAX_SCOPES: usize = 100;

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScopeIn {
    /// A namespace of the organisation, or `*` for all it can see.
    pub namespace: String,
    pub actions: Vec<Action>,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CreateCredential {
    pub name: String,
    #[serde(default)]
    pub project: Option<String>,
    pub scopes: Vec<ScopeIn>,
    /// Seconds from now until the credential stops working.
    #[serde(default)]
    pub expires_in_secs: Option<u64>,
}

#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CredentialView {
    pub id: String,
    pub organisation: String,
    pub project: Option<String>,
    pub name: String,
    /// What to give `docker login -u` (any user name is accepted).
    pub username: String,
    pub scopes: Vec<Scope>,
    pub expires_at: Option<u64>,
    pub revoked_at: Option<u64>,
    pub created_at: u64,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct CreatedCredential {
    #[serde(flatten)]
    pub credential: CredentialView,
    /// Shown once; only its hash is kept.
    pub secret: String,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct CredentialList {
    pub credentials: Vec<CredentialView>,
}

pub fn view(c: &CredentialRecord) -> CredentialView {
    CredentialView {
        id: c.id.clone(),
        organisation: c.organisation.clone(),
        project: c.project.clone(),
        name: c.name.clone(),
        username: c.name.clone(),
        scopes: c.scopes.clone(),
        expires_at: c.expires_at,
        revoked_at: c.revoked_at,
        created_at: c.created_at,
    }
}

#[utoipa::path(post, path = "/v1/container-registries/organisations/{org}/credentials", tag = "credentials",
    params(("org" = String, Path)),
    request_body = CreateCredential,
    responses(
        (status = 201, description = "created; the secret is in this answer only", body = CreatedCredential),
        ErrorResponses,
    ))]
pub async fn create(
    State(st): State<Arc<ApiState>>,
    Extension(caller): Extension<Caller>,
    Path(org): Path<String>,
    body: Bytes,
) -> ApiResult {
    require_org_admin(st.meta.read().await?, &caller, &org)?;
    let req: CreateCredential = parse_json(&body)?;
    check_tenant_name("credential", &req.name)?;
    if req.scopes.is_empty() || req.scopes.len() > MAX_SCOPES {
        return Err(ApiError::invalid(format!(
            "a credential needs 1 to {MAX_SCOPES} scopes"
        )));
    }
    let mut scopes = Vec::new();
    for s in req.scopes {
        if s.namespace != "*" {
            check_namespace(&s.namespace)
                .map_err(|e| ApiError::invalid(format!("scope namespace: {e}")))?;
        }
        if s.actions.is_empty() {
            return Err(ApiError::invalid(format!(
                "scope '{}' grants no action (use pull, push, delete, admin)",
                s.namespace
            )));
        }
        let mut actions = s.actions;
        actions.sort();
        actions.dedup();
        scopes.push(Scope {
            namespace: s.namespace,
            actions,
        });
    }
    let now = now_secs();
    let expires_at = match req.expires_in_secs {
        Some(0) => return Err(ApiError::invalid("expiresInSecs must be positive")),
        Some(s) => Some(now.saturating_add(s)),
        None => None,
    };
    let (id, secret) = secrets::generate();
    let to_hash = secret.clone();
    let secret_hash = tokio::task::spawn_blocking(move || secrets::hash(&to_hash))
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL", e.to_string()))?;
    let rec = CredentialRecord {
        id,
        organisation: org,
        project: req.project,
        name: req.name,
        secret_hash,
        scopes,
        expires_at,
        revoked_at: None,
        created_at: now,
    };
    st.meta
        .write(Command::CreateCredential(Box::new(rec.clone())))
        .await?;
    let created = CreatedCredential {
        credential: view(&rec),
        secret,
    };
    Ok((StatusCode::CREATED, Json(created)).into_response())
}

#[utoipa::path(get, path = "/v1/container-registries/organisations/{org}/credentials", tag = "credentials",
    params(("org" = String, Path)),
    responses(
        (status = 200, description = "never the secrets", body = CredentialList),
        ErrorResponses,
    ))]
pub async fn list(
    State(st): State<Arc<ApiState>>,
    Extension(caller): Extension<Caller>,
    Path(org): Path<String>,
) -> ApiResult {
    let state = st.meta.read().await?;
    require_org_admin(state, &caller, &org)?;
    if state.organisation(&org)?.is_none() {
        return Err(ApiError::not_found(format!(
            "organisation '{org}' does not exist"
        )));
    }
    let credentials = state.credentials(&org)?.iter().map(view).collect();
    Ok(Json(CredentialList { credentials }).into_response())
}

#[utoipa::path(delete, path = "/v1/container-registries/organisations/{org}/credentials/{id}", tag = "credentials",
    params(("org" = String, Path), ("id" = String, Path)),
    responses(
        (status = 204, description = "revoked on every node at once"),
        ErrorResponses,
    ))]
pub async fn revoke(
    State(st): State<Arc<ApiState>>,
    Extension(caller): Extension<Caller>,
    Path((org, id)): Path<(String, String)>,
) -> ApiResult {
    let state = st.meta.read().await?;
    require_org_admin(state, &caller, &org)?;
    if state.credential(&id)?.is_none_or(|c| c.organisation != org) {
        return Err(ApiError::not_found(format!(
            "credential '{id}' does not exist in organisation '{org}'"
        )));
    }
    st.meta
        .write(Command::RevokeCredential {
            id,
            revoked_at: now_secs(),
        })
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
