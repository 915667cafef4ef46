//! The console: server-rendered pages at `/console` on the registry port
//! for namespaces, repositories, tags, artifacts, retention, credentials,
//! usage and the cluster. Every node serves it; it is one more client of
//! the management and registry APIs (see `client`), signed in with a
//! session cookie (see `session`). Pages read without JavaScript; the one
//! small script only copies pull commands.

mod client;
mod cluster;
mod credentials;
mod namespaces;
mod render;
mod repositories;
mod retention;
mod session;
mod usage;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::middleware;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use tower_http::timeout::TimeoutLayer;

use crate::state::AuthState;
pub use render::Pages;
pub use session::Viewer;

/// A page that takes longer than this is stuck (every page reads a bounded
/// amount of state).
const PAGE_DEADLINE: Duration = Duration::from_secs(30);

/// What the console's handlers share.
pub struct Console {
    /// The registry's own routes (registry and management façades), with
    /// their access decisions: what every page goes through.
    pub routes: Router,
    pub access: Arc<AuthState>,
    pub pages: Pages,
    /// Cookies are marked `Secure` when the port serves HTTPS.
    pub https: bool,
    /// `host[:port]` of pull commands (from `--public-url`, or the node's
    /// advertised address; never the request's Host header).
    pub registry_host: String,
}

impl Console {
    pub fn new(routes: Router, access: Arc<AuthState>, https: bool) -> Console {
        let registry_host = access
            .auth
            .realm
            .trim_end_matches("/v2/token")
            .split_once("://")
            .map_or_else(|| access.auth.realm.clone(), |(_, h)| h.to_string());
        Console {
            routes,
            access,
            pages: Pages::new(&registry_host),
            https,
            registry_host,
        }
    }
}

pub fn router<S: Clone + Send + Sync + 'static>(console: Arc<Console>) -> Router<S> {
    let signed_in = Router::new()
        .route(
            "/console",
            get(|| async { Redirect::to("/console/namespaces") }),
        )
        .route(
            "/console/",
            get(|| async { Redirect::to("/console/namespaces") }),
        )
        .route("/console/sign-out", post(session::sign_out))
        .route(
            "/console/namespaces",
            get(namespaces::list).post(namespaces::create),
        )
        .route("/console/namespaces/{ns}", get(namespaces::show))
        .route(
            "/console/namespaces/{ns}/visibility",
            post(namespaces::set_visibility),
        )
        .route(
            "/console/namespaces/{ns}/delete",
            get(namespaces::confirm_delete).post(namespaces::delete),
        )
        .route(
            "/console/namespaces/{ns}/retention",
            get(retention::show).post(retention::set),
        )
        .route(
            "/console/namespaces/{ns}/retention/runs",
            post(retention::start_run),
        )
        .route("/console/repository", get(repositories::tags))
        .route("/console/artifact", get(repositories::artifact))
        .route(
            "/console/credentials",
            get(credentials::list).post(credentials::create),
        )
        .route(
            "/console/credentials/{id}/revoke",
            post(credentials::revoke),
        )
        .route("/console/usage", get(usage::show))
        .route("/console/cluster", get(cluster::show))
        .route_layer(middleware::from_fn_with_state(
            console.clone(),
            session::require,
        ));
    Router::new()
        .merge(signed_in)
        .route(
            "/console/sign-in",
            get(session::sign_in_page).post(session::sign_in),
        )
        .route("/console/assets/{name}", get(asset))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            PAGE_DEADLINE,
        ))
        .with_state(console)
}

/// The stylesheet and the script, under names that carry their content's
/// hash: cached for a year, and a new binary's assets get new names.
async fn asset(State(c): State<Arc<Console>>, Path(name): Path<String>) -> Response {
    match c.pages.asset(&name) {
        Some((body, kind)) => (
            [
                (header::CONTENT_TYPE, kind),
                (header::CACHE_CONTROL, "public, max-age=31536000, immutable"),
            ],
            body,
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "no such asset").into_response(),
    }
}

/// What a form's request to the API ends in: the page `to` (redirect after
/// post), or the API's refusal in its words.
fn after(c: &Console, v: &Viewer, sent: Result<(), client::Refused>, to: &str) -> Response {
    match sent {
        Ok(()) => Redirect::to(to).into_response(),
        Err(r) => c.pages.refused(v, &r),
    }
}

/// The breadcrumb of a page inside namespace `ns`.
fn namespace_crumbs(ns: &str) -> Vec<(String, String)> {
    vec![
        ("Namespaces".into(), "/console/namespaces".into()),
        (
            ns.into(),
            format!("/console/namespaces/{}", client::seg(ns)),
        ),
    ]
}

/// Whether the viewer may take `action` in namespace `ns`: the decision the
/// API makes (`auth::access::decide`), asked only to offer the forms it
/// would accept. The API still decides when the form is sent.
fn may(c: &Console, v: &Viewer, ns: &str, action: tcr_raft::Action) -> bool {
    let reader = c.access.meta.reader();
    let Ok(Some(rec)) = reader.namespace(ns) else {
        return false;
    };
    crate::auth::access::decide(reader, &v.caller.subject, Some(&rec), action)
        .is_ok_and(|d| d == crate::auth::access::Decision::Allow)
}
