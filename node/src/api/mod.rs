//! The management API under `/v1/container-registries`.

pub mod audit;
pub mod cluster;
pub mod credentials;
pub mod errors;
pub mod gc;
pub mod keys;
pub mod namespaces;
pub mod openapi;
pub mod organisations;
pub mod rate_limits;
pub mod repositories;
pub mod retention;
pub mod storage;
pub mod usage;

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, patch, post, put};
use axum::Router;
use tower_http::timeout::TimeoutLayer;

use crate::auth::Caller;
use crate::state::ApiState;

const BASE: &str = "/v1/container-registries";

fn at(path: &str) -> String {
    format!("{BASE}{path}")
}

/// The management API's door: auth decides, refusals in this API's words.
pub async fn authorise(
    State(st): State<Arc<crate::state::AuthState>>,
    req: Request,
    next: Next,
) -> Response {
    crate::auth::require(st, req, next)
        .await
        .unwrap_or_else(errors::refused)
}

/// Cluster, storage and key management: the operator only.
async fn operator_only(req: Request, next: Next) -> Response {
    let allowed = req
        .extensions()
        .get::<Caller>()
        .map(crate::auth::access::require_admin);
    match allowed {
        Some(Ok(())) => next.run(req).await,
        Some(Err(e)) => errors::refused(e),
        None => errors::ApiError::unauthenticated().into_response(),
    }
}

pub fn router() -> Router<Arc<ApiState>> {
    let operator = Router::new()
        .route(&at("/cluster"), get(cluster::status))
        .route(&at("/storage/blobs/{digest}"), get(storage::blob))
        .route(&at("/storage"), get(storage::status))
        .route(&at("/storage/members"), get(storage::members))
        .route(&at("/storage/passes"), post(storage::run_pass))
        .route(&at("/cluster/members"), post(cluster::add_member))
        .route(&at("/cluster/settings"), patch(cluster::update_settings))
        .route(
            &at("/cluster/leader/transfer"),
            post(cluster::transfer_leader),
        )
        .route(
            &at("/cluster/members/{id}"),
            delete(cluster::remove_member).patch(cluster::update_member),
        )
        .route(&at("/keys"), get(keys::list))
        .route(&at("/keys/rotate"), post(keys::rotate))
        .route(&at("/gc"), get(gc::status))
        .route(&at("/gc/runs"), post(gc::run))
        // Rate limits, quotas and feature gates are the operator's.
        .route(
            &at("/cluster/rate-limits"),
            get(rate_limits::show_cluster).put(rate_limits::set_cluster),
        )
        .route(
            &at("/organisations/{org}/rate-limits"),
            get(rate_limits::show_organisation)
                .put(rate_limits::set_organisation)
                .delete(rate_limits::clear_organisation),
        )
        .route_layer(middleware::from_fn(operator_only));
    Router::new()
        .route(
            &at("/namespaces"),
            get(namespaces::list).post(namespaces::create),
        )
        .route(
            &at("/namespaces/{ns}"),
            get(namespaces::show)
                .patch(namespaces::update)
                .delete(namespaces::delete),
        )
        .route(
            &at("/namespaces/{ns}/repositories"),
            get(namespaces::repositories),
        )
        .route(&at("/namespaces/{ns}/usage"), get(usage::namespace))
        .route(&at("/namespaces/{ns}/usage/days"), get(usage::days))
        .route(
            &at("/namespaces/{ns}/retention-policy"),
            get(retention::show)
                .put(retention::set)
                .delete(retention::clear),
        )
        .route(
            &at("/namespaces/{ns}/retention-policy/preview"),
            get(retention::preview),
        )
        .route(
            &at("/namespaces/{ns}/retention-runs"),
            get(retention::runs).post(retention::start),
        )
        .route(
            &at("/namespaces/{ns}/retention-runs/{id}"),
            get(retention::run),
        )
        .route(
            &at("/repositories/{repo}"),
            get(repositories::show).delete(repositories::delete),
        )
        .route(&at("/repositories/{repo}/tags"), get(repositories::tags))
        .route(
            &at("/repositories/{repo}/artifacts"),
            get(repositories::artifacts),
        )
        .route(
            &at("/organisations"),
            get(organisations::list).post(organisations::create),
        )
        .route(
            &at("/organisations/{org}"),
            get(organisations::show).delete(organisations::delete),
        )
        .route(
            &at("/organisations/{org}/features/{feature}"),
            put(organisations::set_feature),
        )
        .route(&at("/organisations/{org}/usage"), get(usage::organisation))
        .route(
            &at("/organisations/{org}/usage/days"),
            get(usage::organisation_days),
        )
        .route(
            &at("/organisations/{org}/projects"),
            get(organisations::list_projects).post(organisations::create_project),
        )
        .route(
            &at("/organisations/{org}/projects/{project}"),
            delete(organisations::delete_project),
        )
        .route(
            &at("/organisations/{org}/credentials"),
            get(credentials::list).post(credentials::create),
        )
        .route(
            &at("/organisations/{org}/credentials/{id}"),
            delete(credentials::revoke),
        )
        .route(&at("/audit-events"), get(audit::list))
        .merge(operator)
        // Adding a member waits for it to catch up, which can take a while
        // on a large state; everything else must be quick.
        .layer(TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            crate::oci::REQUEST_TIMEOUT * 10,
        ))
}
