//! The management API under `/v1/container-registries`.

pub mod cluster;
pub mod errors;
pub mod namespaces;
pub mod openapi;
pub mod storage;

use std::sync::Arc;

use axum::http::StatusCode;
use axum::routing::{delete, get, post};
use axum::Router;
use tower_http::timeout::TimeoutLayer;

use crate::server::AppState;

pub fn router() -> Router<Arc<AppState>> {
    const BASE: &str = "/v1/container-registries";
    Router::new()
        .route(
            &format!("{BASE}/namespaces"),
            get(namespaces::list).post(namespaces::create),
        )
        .route(
            &format!("{BASE}/namespaces/{{ns}}"),
            get(namespaces::show).patch(namespaces::update),
        )
        .route(
            &format!("{BASE}/namespaces/{{ns}}/repositories"),
            get(namespaces::repositories),
        )
        .route(&format!("{BASE}/openapi.json"), get(openapi::document))
        .route(&format!("{BASE}/cluster"), get(cluster::status))
        .route(
            &format!("{BASE}/storage/blobs/{{digest}}"),
            get(storage::blob),
        )
        .route(&format!("{BASE}/storage"), get(storage::status))
        .route(&format!("{BASE}/storage/passes"), post(storage::run_pass))
        .route(
            &format!("{BASE}/cluster/members"),
            post(cluster::add_member),
        )
        .route(
            &format!("{BASE}/cluster/settings"),
            axum::routing::patch(cluster::update_settings),
        )
        .route(
            &format!("{BASE}/cluster/leader/transfer"),
            post(cluster::transfer_leader),
        )
        .route(
            &format!("{BASE}/cluster/members/{{id}}"),
            delete(cluster::remove_member),
        )
        // Adding a member waits for it to catch up, which can take a while
        // on a large state; everything else must be quick.
        .layer(TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            crate::oci::REQUEST_TIMEOUT * 10,
        ))
}
