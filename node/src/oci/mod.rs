//! The OCI Distribution API (`/v2/`), one module per resource.

pub mod blobs;
pub mod errors;
pub mod manifest_format;
pub mod manifests;
pub mod names;
pub mod referrers;
pub mod route;
pub mod tags;
pub mod upload_proxy;
pub mod uploads;

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, Method, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::state::OciState;
use errors::{OciError, OciResult};
use route::Route;

pub const API_VERSION_HEADER: &str = "docker-distribution-api-version";

pub(crate) fn query(req: &Request) -> HashMap<String, String> {
    req.uri()
        .query()
        .and_then(|q| serde_urlencoded::from_str(q).ok())
        .unwrap_or_default()
}

pub(crate) fn check_name(name: &str) -> OciResult<()> {
    names::check_repository(name).map_err(OciError::name_invalid)
}

/// A push needs its namespace to exist; say which one is missing.
pub(crate) async fn require_namespace(st: &OciState, name: &str) -> OciResult<()> {
    let ns = tcr_raft::namespace_of(name);
    if st.meta.read().await?.namespace(ns)?.is_none() {
        return Err(OciError::name_unknown(format!(
            "namespace '{ns}' does not exist; create it first (POST /v1/container-registries/namespaces)"
        )));
    }
    Ok(())
}

/// The registry API's door: auth decides, refusals in the registry's words
/// (with the challenge docker follows to the token endpoint).
pub async fn authorise(
    State(st): State<Arc<crate::state::AuthState>>,
    req: Request,
    next: axum::middleware::Next,
) -> Response {
    crate::auth::require(st, req, next)
        .await
        .unwrap_or_else(|e| OciError::from(e).into_response())
}

/// Everything under `/v2`: parse the path, then hand over to the resource.
pub async fn dispatch(State(st): State<Arc<OciState>>, mut req: Request) -> Response {
    let method = req.method().clone();
    // The access decision parsed it already, unless the caller is admin.
    let route = req
        .extensions_mut()
        .remove::<Route>()
        .or_else(|| route::parse(req.uri().path()));
    let result = match route {
        None => Err(OciError::not_found(format!(
            "no OCI resource at {}",
            req.uri().path().chars().take(200).collect::<String>()
        ))),
        Some(route) if streams(&route, &method) => handle(&st, route, &method, req).await,
        Some(route) => tokio::time::timeout(REQUEST_TIMEOUT, handle(&st, route, &method, req))
            .await
            .unwrap_or_else(|_| {
                Err(OciError::unavailable(format!(
                    "request did not complete within {}s",
                    REQUEST_TIMEOUT.as_secs()
                )))
            }),
    };
    let mut resp = result.unwrap_or_else(|e| e.into_response());
    resp.headers_mut().insert(
        API_VERSION_HEADER,
        header::HeaderValue::from_static("registry/2.0"),
    );
    resp
}

/// Deadline of every request that does not stream a blob.
pub const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// Blob bodies may take as long as the bytes take (uploads have an idle
/// timeout instead, `--body-idle-timeout-secs`).
fn streams(route: &Route, method: &Method) -> bool {
    matches!(
        (route, method),
        (Route::Blob { .. }, &Method::GET)
            | (Route::UploadStart { .. }, &Method::POST)
            | (Route::Upload { .. }, &Method::PATCH | &Method::PUT)
    )
}

async fn handle(st: &OciState, route: Route, method: &Method, req: Request) -> OciResult {
    if let Route::Upload { id, .. } = &route {
        match upload_proxy::session_node(id) {
            Some(owner) if owner != st.node_id => {
                return upload_proxy::forward(st, owner, method.clone(), req).await;
            }
            _ => {}
        }
    }
    match (route, method.clone()) {
        (Route::Base, Method::GET | Method::HEAD) => Ok(base()),
        (Route::Catalog, Method::GET) => tags::catalog(st, req).await,
        (Route::Tags { name }, Method::GET) => tags::list(st, &name, req).await,
        (Route::Manifest { name, reference }, Method::GET) => {
            manifests::get(st, &name, &reference, req, false).await
        }
        (Route::Manifest { name, reference }, Method::HEAD) => {
            manifests::get(st, &name, &reference, req, true).await
        }
        (Route::Manifest { name, reference }, Method::PUT) => {
            manifests::put(st, &name, &reference, req).await
        }
        (Route::Manifest { name, reference }, Method::DELETE) => {
            manifests::delete(st, &name, &reference).await
        }
        (Route::Blob { name, digest }, Method::GET) => {
            blobs::get(st, &name, &digest, req, false).await
        }
        (Route::Blob { name, digest }, Method::HEAD) => {
            blobs::get(st, &name, &digest, req, true).await
        }
        (Route::Blob { name, digest }, Method::DELETE) => blobs::delete(st, &name, &digest).await,
        (Route::UploadStart { name }, Method::POST) => uploads::start(st, &name, req).await,
        (Route::Upload { name, id }, Method::PATCH) => uploads::patch(st, &name, &id, req).await,
        (Route::Upload { name, id }, Method::PUT) => uploads::put(st, &name, &id, req).await,
        (Route::Upload { name, id }, Method::GET) => uploads::status(st, &name, &id).await,
        (Route::Upload { name, id }, Method::DELETE) => uploads::cancel(st, &name, &id).await,
        (Route::Referrers { name, digest }, Method::GET) => {
            referrers::list(st, &name, &digest, req).await
        }
        (_, m) => Err(OciError::unsupported(format!(
            "method {m} is not supported on this resource"
        ))),
    }
}

fn base() -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        Body::from("{}"),
    )
        .into_response()
}

/// `n` from a listing query: absent means "all" (bounded by `cap`).
pub(crate) fn page_size(q: &HashMap<String, String>, cap: usize) -> OciResult<usize> {
    match q.get("n") {
        None => Ok(cap),
        Some(n) => n.parse::<usize>().map(|n| n.min(cap)).map_err(|_| {
            OciError::pagination_invalid(format!("n={n} is not a non-negative integer"))
        }),
    }
}
