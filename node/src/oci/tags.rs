//! Tag listing and the catalog: range scans in key order, `n`/`last`
//! pagination and a `Link` header when more follow.

use axum::extract::Request;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::IntoResponse;
use serde_json::json;

use std::collections::HashMap;

use tcr_raft::Page;

use super::errors::{OciError, OciResult};
use super::{check_name, page_size, query};
use crate::auth::access::may_pull;
use crate::auth::Caller;
use crate::listing::{filtered_page, Step};
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
    let state = st.meta.read().await?;
    let last = q.get("last").cloned();
    let caller = req.extensions().get::<Caller>();
    let page = match caller.filter(|c| !c.is_admin()) {
        None => state.repositories(None, last.as_deref(), n)?,
        // Only repositories of namespaces the caller may pull from.
        Some(caller) => {
            let mut seen: HashMap<String, bool> = HashMap::new();
            let (items, more) = filtered_page(
                last,
                n,
                |after| {
                    let page = state.repositories(None, after, MAX_PAGE)?;
                    Ok::<_, tcr_raft::ReadError>((page.items, page.more))
                },
                |repo| repo.clone(),
                |repo| {
                    let ns = tcr_raft::namespace_of(&repo).to_string();
                    let visible = match seen.get(&ns) {
                        Some(v) => *v,
                        None => {
                            let v = state
                                .namespace(&ns)?
                                .is_some_and(|rec| may_pull(state, caller, &rec));
                            seen.insert(ns, v);
                            v
                        }
                    };
                    Ok(if visible {
                        Step::Keep(repo)
                    } else {
                        Step::Skip
                    })
                },
            )?;
            Page { items, more }
        }
    };
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
