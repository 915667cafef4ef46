//! The cluster (operator only): members, roles, leader, lag, every
//! member's storage report and garbage collection.

use std::sync::Arc;

use axum::extract::State;
use axum::response::Response;
use axum::Extension;
use minijinja::context;
use serde_json::Value as Json;

use super::client::API;
use super::render::ser;
use super::{Console, Viewer};

pub async fn show(State(c): State<Arc<Console>>, Extension(v): Extension<Viewer>) -> Response {
    let paths = [
        format!("{API}/cluster"),
        format!("{API}/storage/members"),
        format!("{API}/gc"),
    ];
    let (cluster, storage, gc) = futures::join!(
        v.client.get::<Json>(&paths[0]),
        v.client.get::<Json>(&paths[1]),
        v.client.get::<Json>(&paths[2]),
    );
    let cluster = match cluster {
        Ok(j) => j,
        Err(r) => return c.pages.refused(&v, &r),
    };
    c.pages.page(
        &v,
        "cluster.html",
        context! {
            title => "Cluster",
            nav => "cluster",
            cluster => ser(&cluster),
            storage => storage.ok().map(|s| ser(&s)),
            gc => gc.ok().map(|g| ser(&g)),
        },
    )
}
