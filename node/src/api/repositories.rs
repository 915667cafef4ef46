//! Repositories, their tags and artifacts.
//! A repository name contains `/`: clients send it as one path segment
//! with `/` encoded as `%2F` (`acme%2Fapp`).

use crate::api::errors::ErrorResponses;
use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::{Extension, Json};
use serde::Serialize;
use tcr_raft::{namespace_of, Action, Command};

use super::errors::{ApiError, ApiResult};
use super::namespaces::{page_params, RepositoryView};
use crate::auth::access::require_on_namespace;
use crate::auth::Caller;
use crate::listing::{filtered_page, Step};
use crate::oci::names::check_repository;
use crate::state::ApiState;

#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TagView {
    pub name: String,
    pub digest: String,
    /// When the tag was last pushed (seconds since the epoch).
    pub pushed_at: Option<u64>,
    /// When the tag, or the manifest it points to, was last pulled
    /// (milliseconds since the epoch); pulls are flushed in batches, so
    /// this lags by up to the nodes' flush interval.
    pub last_pulled_at_ms: Option<u64>,
    /// Size and media type of the manifest the tag points to.
    pub size: Option<u64>,
    pub media_type: Option<String>,
    /// The tag matches one of the namespace's immutable patterns: it can
    /// be neither moved nor deleted.
    pub immutable: bool,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct TagList {
    pub repository: String,
    pub tags: Vec<TagView>,
    pub more: bool,
}

#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ArtifactView {
    pub digest: String,
    pub media_type: String,
    pub artifact_type: Option<String>,
    pub size: u64,
    pub pushed_at: u64,
    pub tags: Vec<String>,
    pub subject: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ArtifactList {
    pub repository: String,
    pub artifacts: Vec<ArtifactView>,
    pub more: bool,
}

/// Check the name and the caller's right to `action` in its namespace.
async fn authorise<'a>(
    st: &'a ApiState,
    caller: &Caller,
    repo: &str,
    action: Action,
) -> ApiResult<&'a tcr_raft::StateReader> {
    check_repository(repo).map_err(ApiError::invalid)?;
    let state = st.meta.read().await?;
    require_on_namespace(state, caller, namespace_of(repo), action)?;
    if !state.repository_exists(repo)? {
        return Err(ApiError::not_found(format!(
            "repository '{repo}' does not exist"
        )));
    }
    Ok(state)
}

#[utoipa::path(get, path = "/v1/container-registries/repositories/{repo}", tag = "repositories",
    params(("repo" = String, Path, description = "repository name, `/` sent as `%2F`")),
    responses((status = 200, body = RepositoryView),
        ErrorResponses,
    ))]
pub async fn show(
    State(st): State<Arc<ApiState>>,
    Extension(caller): Extension<Caller>,
    Path(repo): Path<String>,
) -> ApiResult {
    let state = authorise(&st, &caller, &repo, Action::Pull).await?;
    let r = state
        .repository(&repo)?
        .ok_or_else(|| ApiError::not_found(format!("repository '{repo}' does not exist")))?;
    Ok(Json(RepositoryView {
        name: r.name,
        created_at: r.created_at,
    })
    .into_response())
}

/// Every tag and manifest of the repository. Blob bytes are reclaimed by
/// garbage collection once nothing references them.
#[utoipa::path(delete, path = "/v1/container-registries/repositories/{repo}", tag = "repositories",
    params(("repo" = String, Path, description = "repository name, `/` sent as `%2F`")),
    responses((status = 204, description = "deleted: every tag and manifest"),
        ErrorResponses,
    ))]
pub async fn delete(
    State(st): State<Arc<ApiState>>,
    Extension(caller): Extension<Caller>,
    Path(repo): Path<String>,
) -> ApiResult {
    authorise(&st, &caller, &repo, Action::Delete).await?;
    st.meta.write(Command::DeleteRepository { repo }).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Tags in name order: `n`, `last`; `prefix` filters.
#[utoipa::path(get, path = "/v1/container-registries/repositories/{repo}/tags", tag = "repositories",
    params(("repo" = String, Path, description = "repository name, `/` sent as `%2F`"),
        ("n" = Option<usize>, Query), ("last" = Option<String>, Query),
        ("prefix" = Option<String>, Query, description = "only tags starting with this")),
    responses((status = 200, body = TagList),
        ErrorResponses,
    ))]
pub async fn tags(
    State(st): State<Arc<ApiState>>,
    Extension(caller): Extension<Caller>,
    Path(repo): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult {
    let (last, n) = page_params(&q)?;
    let state = authorise(&st, &caller, &repo, Action::Pull).await?;
    let prefix = q.get("prefix").map(String::as_str).unwrap_or("");
    let immutable: Vec<wildmatch::WildMatch> = state
        .namespace(namespace_of(&repo))?
        .map(|ns| {
            ns.immutable_tags
                .iter()
                .map(|p| wildmatch::WildMatch::new(p))
                .collect()
        })
        .unwrap_or_default();
    let (items, more) = filtered_page(
        last,
        n,
        // Only the prefix's key range is read, however many tags sort
        // before it.
        |after| {
            let page = state.tags_with_prefix(&repo, prefix, after, 1000)?;
            Ok::<_, tcr_raft::ReadError>((page.items, page.more))
        },
        |tag| tag.clone(),
        |tag| {
            let digest = state.tag(&repo, &tag)?.unwrap_or_default();
            let activity = state.tag_activity(&repo, &tag, &digest)?;
            let manifest = state.manifest_record(&repo, &digest)?;
            let pushed_at = activity
                .pushed_at
                .or_else(|| manifest.as_ref().map(|m| m.pushed_at));
            Ok(Step::Keep(TagView {
                immutable: immutable.iter().any(|p| p.matches(&tag)),
                name: tag,
                digest,
                pushed_at,
                last_pulled_at_ms: activity.pulled_at_ms,
                size: manifest.as_ref().map(|m| m.size),
                media_type: manifest.map(|m| m.media_type),
            }))
        },
    )?;
    Ok(Json(TagList {
        repository: repo,
        tags: items,
        more,
    })
    .into_response())
}

/// Artifacts (manifests) in digest order: `n`, `last`; `tagged=true|false`
/// and `mediaType` filter.
#[utoipa::path(get, path = "/v1/container-registries/repositories/{repo}/artifacts", tag = "repositories",
    params(("repo" = String, Path, description = "repository name, `/` sent as `%2F`"),
        ("n" = Option<usize>, Query), ("last" = Option<String>, Query),
        ("tagged" = Option<bool>, Query, description = "only tagged (true) or untagged (false)"),
        ("mediaType" = Option<String>, Query, description = "only this manifest media type")),
    responses((status = 200, body = ArtifactList),
        ErrorResponses,
    ))]
pub async fn artifacts(
    State(st): State<Arc<ApiState>>,
    Extension(caller): Extension<Caller>,
    Path(repo): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult {
    let (last, n) = page_params(&q)?;
    let tagged = match q.get("tagged").map(String::as_str) {
        None => None,
        Some("true") => Some(true),
        Some("false") => Some(false),
        Some(other) => {
            return Err(ApiError::invalid(format!(
                "tagged={other}: use true or false"
            )))
        }
    };
    let media_type = q.get("mediaType");
    let state = authorise(&st, &caller, &repo, Action::Pull).await?;
    let (items, more) = filtered_page(
        last,
        n,
        |after| state.manifests(&repo, after, 1000),
        |m| m.digest.clone(),
        |m| {
            let tags = state.tags_of_digest(&repo, &m.digest)?;
            if tagged.is_some_and(|t| t == tags.is_empty())
                || media_type.is_some_and(|mt| *mt != m.media_type)
            {
                return Ok(Step::Skip);
            }
            Ok(Step::Keep(ArtifactView {
                digest: m.digest,
                media_type: m.media_type,
                artifact_type: m.artifact_type,
                size: m.size,
                pushed_at: m.pushed_at,
                tags,
                subject: m.subject,
            }))
        },
    )?;
    Ok(Json(ArtifactList {
        repository: repo,
        artifacts: items,
        more,
    })
    .into_response())
}
