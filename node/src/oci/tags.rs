//! Tag listing and the catalog: range scans in key order, `n`/`last`
//! pagination and a `Link` header when more follow.

use axum::extract::Request;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::IntoResponse;
use serde_json::json;

use super::errors::{OciError, OciResult};
use super::{check_name, next_link, page_size, query};
use crate::server::AppState;

/// The most names one response carries when the client sets no `n`.
const MAX_PAGE: usize = 10_000;

pub async fn list(st: &AppState, name: &str, req: Request) -> OciResult {
    check_name(name)?;
    let q = query(&req);
    let n = page_size(&q, MAX_PAGE)?;
    let state = st.meta.read().await?;
    if !state.repository_exists(name)? {
        return Err(OciError::name_unknown(format!(
            "repository '{name}' is not known"
        )));
    }
    let page = state.tags(name, q.get("last").map(String::as_str), n)?;
    let mut h = HeaderMap::new();
    if page.more {
        if let Some(last) = page.items.last() {
            let link = next_link(&format!("/v2/{name}/tags/list"), n, last);
            h.insert(
                header::LINK,
                link.parse()
                    .map_err(|_| OciError::internal("link header"))?,
            );
        }
    }
    Ok((
        StatusCode::OK,
        h,
        axum::Json(json!({"name": name, "tags": page.items})),
    )
        .into_response())
}

pub async fn catalog(st: &AppState, req: Request) -> OciResult {
    let q = query(&req);
    let n = page_size(&q, MAX_PAGE)?;
    let page = st
        .meta
        .read()
        .await?
        .repositories(None, q.get("last").map(String::as_str), n)?;
    let mut h = HeaderMap::new();
    if page.more {
        if let Some(last) = page.items.last() {
            let link = next_link("/v2/_catalog", n, last);
            h.insert(
                header::LINK,
                link.parse()
                    .map_err(|_| OciError::internal("link header"))?,
            );
        }
    }
    Ok((
        StatusCode::OK,
        h,
        axum::Json(json!({"repositories": page.items})),
    )
        .into_response())
}
