//! Namespaces: create, list, show, change visibility, delete, list
//! repositories. Each belongs to an organisation (optionally to one of its
//! projects), or, when created by the operator without one, to no tenant.

use crate::api::errors::ErrorResponses;
use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use tcr_raft::{Action, Command, NamespaceRecord, Visibility};

use super::errors::{parse_json, ApiError, ApiResult};
use crate::auth::access::{may_pull, require_admin, require_gate, require_on_namespace};
use crate::auth::{Caller, Subject};
use crate::listing::{filtered_page, Step};
use crate::oci::names::check_namespace;
use crate::state::ApiState;
use tcr_storage::clock::now_secs;

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateNamespace {
    pub name: String,
    #[serde(default)]
    pub visibility: Option<Visibility>,
    /// Defaults to the calling credential's organisation.
    #[serde(default)]
    pub organisation: Option<String>,
    /// Defaults to the calling credential's project, if it has one.
    #[serde(default)]
    pub project: Option<String>,
}

/// Fields left out are unchanged.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct UpdateNamespace {
    #[serde(default)]
    pub visibility: Option<Visibility>,
    /// Tag patterns (`*`, `?`) that may not be moved or deleted once set,
    /// e.g. `["v*"]`; `[]` removes them.
    #[serde(default)]
    pub immutable_tags: Option<Vec<String>>,
    /// Storage quota in bytes; 0 removes it. Only the operator may change it.
    #[serde(default)]
    pub quota_bytes: Option<u64>,
}

/// Most immutable tag patterns per namespace.
const MAX_PATTERNS: usize = 32;

#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct NamespaceView {
    pub name: String,
    pub visibility: Visibility,
    pub created_at: u64,
    pub organisation: Option<String>,
    pub project: Option<String>,
    pub immutable_tags: Vec<String>,
    pub quota_bytes: Option<u64>,
    /// Set with `PUT .../retention-policy`.
    pub retention_policy: Option<tcr_raft::RetentionPolicy>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct NamespaceList {
    pub namespaces: Vec<NamespaceView>,
    /// More follow: ask again with `last` = the last name.
    pub more: bool,
}

#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RepositoryView {
    pub name: String,
    pub created_at: u64,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct RepositoryList {
    pub repositories: Vec<RepositoryView>,
    pub more: bool,
}

impl From<NamespaceRecord> for NamespaceView {
    fn from(r: NamespaceRecord) -> Self {
        NamespaceView {
            name: r.name,
            visibility: r.visibility,
            created_at: r.created_at,
            organisation: r.organisation,
            project: r.project,
            immutable_tags: r.immutable_tags,
            quota_bytes: r.quota_bytes,
            retention_policy: r.retention,
        }
    }
}

pub const MAX_PAGE: usize = 1000;

pub fn page_params(q: &HashMap<String, String>) -> ApiResult<(Option<String>, usize)> {
    let n = match q.get("n") {
        None => MAX_PAGE,
        Some(n) => n
            .parse::<usize>()
            .map_err(|_| ApiError::invalid(format!("n={n} is not a non-negative integer")))?
            .min(MAX_PAGE),
    };
    Ok((q.get("last").cloned(), n))
}

/// Where a new namespace goes, given who asks: the operator names any
/// organisation (or none); a credential creates in its own organisation
/// (and its own project, if it has one) and needs the `admin` action.
fn placement(
    st: &ApiState,
    caller: &Caller,
    req: &CreateNamespace,
) -> ApiResult<(Option<String>, Option<String>)> {
    match &caller.subject {
        Subject::Admin => Ok((req.organisation.clone(), req.project.clone())),
        Subject::Anonymous => Err(ApiError::unauthenticated()),
        Subject::Credential(c) => {
            let org = req.organisation.clone().unwrap_or(c.organisation.clone());
            if org != c.organisation {
                return Err(ApiError::denied(format!(
                    "the credential belongs to organisation '{}', not '{org}'",
                    c.organisation
                )));
            }
            require_gate(st.meta.reader(), &org)?;
            let project = match (&c.project, &req.project) {
                (Some(mine), Some(p)) if mine != p => {
                    return Err(ApiError::denied(format!(
                        "the credential is confined to project '{mine}'"
                    )))
                }
                (Some(mine), _) => Some(mine.clone()),
                (None, p) => p.clone(),
            };
            let admin = c
                .scopes
                .iter()
                .any(|s| s.namespace == "*" && s.actions.contains(&Action::Admin));
            if !admin {
                return Err(ApiError::denied(
                    "creating namespaces needs a credential with scope *:admin",
                ));
            }
            Ok((Some(org), project))
        }
    }
}

#[utoipa::path(post, path = "/v1/container-registries/namespaces", tag = "namespaces",
    request_body = CreateNamespace,
    responses(
        (status = 201, description = "created", body = NamespaceView),
        ErrorResponses,
    ))]
pub async fn create(
    State(st): State<Arc<ApiState>>,
    Extension(caller): Extension<Caller>,
    body: Bytes,
) -> ApiResult {
    let req: CreateNamespace = parse_json(&body)?;
    check_namespace(&req.name).map_err(ApiError::invalid)?;
    let (organisation, project) = placement(&st, &caller, &req)?;
    if project.is_some() && organisation.is_none() {
        return Err(ApiError::invalid(
            "a project-scoped namespace needs an organisation",
        ));
    }
    let visibility = req.visibility.unwrap_or(Visibility::Private);
    let created_at = now_secs();
    st.meta
        .write(Command::CreateNamespace {
            name: req.name.clone(),
            visibility,
            created_at,
            organisation: organisation.clone(),
            project: project.clone(),
        })
        .await?;
    let view = NamespaceView::from(NamespaceRecord {
        name: req.name,
        visibility,
        created_at,
        organisation,
        project,
        immutable_tags: Vec::new(),
        quota_bytes: None,
        retention: None,
    });
    Ok((StatusCode::CREATED, Json(view)).into_response())
}

/// Namespaces the caller may pull from, in name order. `organisation`
/// filters.
#[utoipa::path(get, path = "/v1/container-registries/namespaces", tag = "namespaces",
    params(
        ("n" = Option<usize>, Query, description = "page size (at most 1000)"),
        ("last" = Option<String>, Query, description = "the last name of the previous page"),
        ("organisation" = Option<String>, Query, description = "only this organisation's"),
    ),
    responses(
        (status = 200, description = "namespaces the caller may pull from, in name order", body = NamespaceList),
        ErrorResponses,
    ))]
pub async fn list(
    State(st): State<Arc<ApiState>>,
    Extension(caller): Extension<Caller>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult {
    let (last, n) = page_params(&q)?;
    if matches!(caller.subject, Subject::Anonymous) {
        return Err(ApiError::unauthenticated());
    }
    let state = st.meta.read().await?;
    let org = q.get("organisation");
    let (items, more) = filtered_page(
        last,
        n,
        |after| {
            let page = state.namespaces(after, MAX_PAGE)?;
            let more = page.len() == MAX_PAGE;
            Ok::<_, tcr_raft::ReadError>((page, more))
        },
        |ns| ns.name.clone(),
        |ns| {
            Ok(
                if org.is_some_and(|o| ns.organisation.as_ref() != Some(o))
                    || !may_pull(state, &caller, &ns)
                {
                    Step::Skip
                } else {
                    Step::Keep(NamespaceView::from(ns))
                },
            )
        },
    )?;
    Ok(Json(NamespaceList {
        namespaces: items,
        more,
    })
    .into_response())
}

#[utoipa::path(get, path = "/v1/container-registries/namespaces/{ns}", tag = "namespaces",
    params(("ns" = String, Path)),
    responses(
        (status = 200, body = NamespaceView),
        ErrorResponses,
    ))]
pub async fn show(
    State(st): State<Arc<ApiState>>,
    Extension(caller): Extension<Caller>,
    Path(ns): Path<String>,
) -> ApiResult {
    let state = st.meta.read().await?;
    let rec = require_on_namespace(state, &caller, &ns, Action::Pull)?;
    Ok(Json(NamespaceView::from(rec)).into_response())
}

#[utoipa::path(patch, path = "/v1/container-registries/namespaces/{ns}", tag = "namespaces",
    params(("ns" = String, Path)),
    request_body = UpdateNamespace,
    responses(
        (status = 200, description = "updated; effective on every node at once", body = NamespaceView),
        ErrorResponses,
    ))]
pub async fn update(
    State(st): State<Arc<ApiState>>,
    Extension(caller): Extension<Caller>,
    Path(ns): Path<String>,
    body: Bytes,
) -> ApiResult {
    let req: UpdateNamespace = parse_json(&body)?;
    let current = require_on_namespace(st.meta.read().await?, &caller, &ns, Action::Admin)?;
    // The quota is the operator's limit on a tenant: a namespace's own
    // administrators may not raise or remove it.
    let quota = req.quota_bytes.map(|q| Some(q).filter(|q| *q > 0));
    if quota.is_some_and(|q| q != current.quota_bytes) {
        require_admin(&caller)?;
    }
    if let Some(patterns) = &req.immutable_tags {
        if patterns.len() > MAX_PATTERNS
            || patterns
                .iter()
                .any(|p| p.is_empty() || p.len() > 128 || p.chars().any(|c| c.is_control()))
        {
            return Err(ApiError::invalid(format!(
                "immutableTags: at most {MAX_PATTERNS} patterns of 1-128 printable characters"
            )));
        }
    }
    if let Some(visibility) = req.visibility {
        st.meta
            .write(Command::SetNamespaceVisibility {
                name: ns.clone(),
                visibility,
            })
            .await?;
    }
    if req.immutable_tags.is_some() || req.quota_bytes.is_some() {
        st.meta
            .write(Command::SetNamespaceLimits {
                name: ns.clone(),
                immutable_tags: req.immutable_tags.unwrap_or(current.immutable_tags),
                quota_bytes: quota.unwrap_or(current.quota_bytes),
            })
            .await?;
    }
    let rec = require_on_namespace(st.meta.read().await?, &caller, &ns, Action::Pull)?;
    Ok(Json(NamespaceView::from(rec)).into_response())
}

#[utoipa::path(delete, path = "/v1/container-registries/namespaces/{ns}", tag = "namespaces",
    params(("ns" = String, Path)),
    responses(
        (status = 204, description = "deleted"),
        ErrorResponses,
    ))]
pub async fn delete(
    State(st): State<Arc<ApiState>>,
    Extension(caller): Extension<Caller>,
    Path(ns): Path<String>,
) -> ApiResult {
    require_on_namespace(st.meta.read().await?, &caller, &ns, Action::Admin)?;
    st.meta.write(Command::DeleteNamespace { name: ns }).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[utoipa::path(get, path = "/v1/container-registries/namespaces/{ns}/repositories", tag = "repositories",
    params(
        ("ns" = String, Path),
        ("n" = Option<usize>, Query),
        ("last" = Option<String>, Query),
    ),
    responses(
        (status = 200, body = RepositoryList),
        ErrorResponses,
    ))]
pub async fn repositories(
    State(st): State<Arc<ApiState>>,
    Extension(caller): Extension<Caller>,
    Path(ns): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let (last, n) = page_params(&q)?;
    let state = st.meta.read().await?;
    require_on_namespace(state, &caller, &ns, Action::Pull)?;
    let page = state.repositories(Some(&ns), last.as_deref(), n)?;
    let mut repos = Vec::new();
    for name in page.items {
        if let Some(r) = state.repository(&name)? {
            repos.push(RepositoryView {
                name: r.name,
                created_at: r.created_at,
            });
        }
    }
    Ok(Json(RepositoryList {
        repositories: repos,
        more: page.more,
    })
    .into_response())
}
