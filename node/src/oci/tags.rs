//! Tag listing and the catalog: range scans in key order, `n`/`last`
//! pagination and a `Link` header when more follow.

use axum::extract::Request;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::IntoResponse;
use serde_json::json;

use tcr_raft::Page;

use super::errors::{OciError, OciResult};
use super::{check_name, page_size, query};
use crate::auth::access::may_pull;
use crate::auth::Caller;
use crate::state::OciState;

/// The most names one response carries when the client sets no `n`.
const MAX_PAGE: usize = 10_000;

pub async fn list(st: &OciState, name: &str, req: Request) -> OciResult {
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

pub async fn catalog(st: &OciState, req: Request) -> OciResult {
    let q = query(&req);
    let n = page_size(&q, MAX_PAGE)?;
    let state = st.meta.read().await?;
    let last = q.get("last").cloned();
    let caller = req.extensions().get::<Caller>();
    let page = match caller.filter(|c| !c.is_admin()) {
        None => state.repositories(None, last.as_deref(), n)?,
        // Only repositories of namespaces the caller may pull from: walk
        // those namespaces' key ranges ("ns/" prefixes, which never
        // interleave, so the result is in lexical order like the whole
        // catalog), never the repositories of namespaces it cannot see.
        Some(caller) => {
            let mut visible: Vec<String> = state
                .all_namespaces()?
                .into_iter()
                .filter(|ns| may_pull(state, caller, ns))
                .map(|ns| format!("{}/", ns.name))
                .collect();
            visible.sort();
            let mut items = Vec::new();
            let mut more = false;
            for prefix in visible {
                let ns = &prefix[..prefix.len() - 1];
                // Skip namespaces wholly before the cursor.
                let after = match last.as_deref() {
                    Some(l) if l.starts_with(&prefix) => Some(l),
                    Some(l) if l > prefix.as_str() => continue,
                    _ => None,
                };
                if items.len() == n {
                    // One more repository in any later namespace means
                    // another page.
                    more = !state.repositories(Some(ns), None, 1)?.items.is_empty();
                    if more {
                        break;
                    }
                    continue;
                }
                let page = state.repositories(Some(ns), after, n - items.len())?;
                items.extend(page.items);
                if page.more {
                    more = true;
                    break;
                }
            }
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
