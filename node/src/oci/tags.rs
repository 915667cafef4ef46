//! Tag listing and the catalog: range scans in key order, `n`/`last`
//! pagination and a `Link` header when more follow.

use axum::extract::Request;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::IntoResponse;
use serde_json::json;

use super::errors::{OciError, OciResult};
use super::{check_name, page_size, query};
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
    let h = next_page_headers(&format!("/v2/{name}/tags/list"), n, &page);
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
    let h = next_page_headers("/v2/_catalog", n, &page);
    Ok((
        StatusCode::OK,
        h,
        axum::Json(json!({"repositories": page.items})),
    )
        .into_response())
}

/// A `Link: <path?n=..&last=..>; rel="next"` header when more names follow.
fn next_page_headers(path: &str, n: usize, page: &tcr_raft::Page) -> HeaderMap {
    let mut h = HeaderMap::new();
    if let (true, Some(last)) = (page.more, page.items.last()) {
        let q = serde_urlencoded::to_string([("n", n.to_string()), ("last", last.clone())])
            .unwrap_or_default();
        // Names and tags are validated ASCII, so the value always parses.
        if let Ok(v) = HeaderValue::from_str(&format!("<{path}?{q}>; rel=\"next\"")) {
            h.insert(header::LINK, v);
        }
    }
    h
}
