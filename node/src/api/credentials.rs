//! Credentials (robot accounts / API tokens) of an organisation. The secret
//! is returned once, at creation; only its argon2 hash is kept.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::json;
use tcr_raft::{Action, Command, CredentialRecord, Scope};

use super::errors::{parse_json, ApiError, ApiResult};
use super::organisations::check_tenant_name;
use crate::auth::access::require_org_admin;
use crate::auth::{secrets, Caller};
use crate::oci::names::check_namespace;
use crate::oci::now_secs;
use crate::server::AppState;

/// Most scopes one credential carries.
const MAX_SCOPES: usize = 100;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScopeIn {
    /// A namespace of the organisation, or `*` for all it can see.
    pub namespace: String,
    pub actions: Vec<Action>,
}

#[derive(Deserialize)]
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

pub fn view(c: &CredentialRecord) -> serde_json::Value {
    json!({
        "id": c.id,
        "organisation": c.organisation,
        "project": c.project,
        "name": c.name,
        "username": c.name,
        "scopes": c.scopes,
        "expiresAt": c.expires_at,
        "revokedAt": c.revoked_at,
        "createdAt": c.created_at,
    })
}

pub async fn create(
    State(st): State<Arc<AppState>>,
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
    let mut v = view(&rec);
    v["secret"] = json!(secret);
    Ok((StatusCode::CREATED, Json(v)).into_response())
}

pub async fn list(
    State(st): State<Arc<AppState>>,
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
    let items: Vec<_> = state.credentials(&org)?.iter().map(view).collect();
    Ok(Json(json!({ "credentials": items })).into_response())
}

pub async fn revoke(
    State(st): State<Arc<AppState>>,
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
