//! The OpenAPI 3 document of the management API, generated from the
//! handlers' annotations and the request/response types (utoipa).

use axum::response::IntoResponse;
use axum::Json;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::{
    audit, cluster, credentials, gc, keys, namespaces, organisations, rate_limits, repositories,
    retention, storage, usage,
};

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "the admin token, or a credential secret (tcr_<id>_<random>)",
                    ))
                    .build(),
            ),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "tcr management API",
        description = "Organisations, projects, namespaces, credentials, repositories and \
                       the cluster of a tcr registry. Errors are \
                       {\"error\":{\"code\",\"message\"}}."
    ),
    paths(
        namespaces::create,
        namespaces::list,
        namespaces::show,
        namespaces::update,
        namespaces::delete,
        namespaces::repositories,
        usage::namespace,
        usage::days,
        retention::show,
        retention::set,
        retention::clear,
        retention::preview,
        retention::start,
        retention::runs,
        retention::run,
        usage::organisation,
        usage::organisation_days,
        repositories::show,
        repositories::delete,
        repositories::tags,
        repositories::artifacts,
        organisations::create,
        organisations::list,
        organisations::show,
        organisations::delete,
        organisations::set_feature,
        organisations::create_project,
        organisations::list_projects,
        organisations::delete_project,
        credentials::create,
        credentials::list,
        credentials::revoke,
        keys::list,
        keys::rotate,
        gc::run,
        gc::status,
        cluster::status,
        cluster::add_member,
        cluster::remove_member,
        cluster::update_member,
        cluster::transfer_leader,
        cluster::update_settings,
        storage::status,
        storage::members,
        storage::run_pass,
        storage::blob,
        rate_limits::show_cluster,
        rate_limits::set_cluster,
        rate_limits::show_organisation,
        rate_limits::set_organisation,
        rate_limits::clear_organisation,
        audit::list,
    ),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
)]
pub struct ApiDoc;

pub fn spec() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

pub async fn document() -> impl IntoResponse {
    Json(spec())
}
