//! The management API under `/v1/container-registries`.

pub mod errors;
pub mod namespaces;
pub mod openapi;

use std::sync::Arc;

use axum::routing::get;
use axum::Router;

use crate::server::AppState;

pub fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route(
            "/v1/container-registries/namespaces",
            get(namespaces::list).post(namespaces::create),
        )
        .route(
            "/v1/container-registries/namespaces/{ns}",
            get(namespaces::show).patch(namespaces::update),
        )
        .route(
            "/v1/container-registries/namespaces/{ns}/repositories",
            get(namespaces::repositories),
        )
        .route(
            "/v1/container-registries/openapi.json",
            get(openapi::document),
        )
}
