//! The cluster (operator only): members, roles, leader, lag, every
//! member's storage report, garbage collection, and the latest retention
//! run of each namespace with a policy.

use std::sync::Arc;

use axum::extract::State;
use axum::response::Response;
use axum::Extension;
use minijinja::context;
use serde_json::Value as Json;

use super::client::{seg, Client, API};
use super::namespaces::names_where;
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
            retention => ser(latest_runs(&v.client).await),
        },
    )
}

/// Namespaces with a retention policy shown with their latest run (the
/// first this many, in name order).
const RETENTION_SHOWN: usize = 50;

/// The latest retention run of each namespace that has a policy: the
/// namespace's name and its run (none yet: null).
async fn latest_runs(client: &Client) -> Vec<(String, Option<Json>)> {
    let names = names_where(client, |n| !n["retentionPolicy"].is_null(), RETENTION_SHOWN).await;
    let runs = client
        .get_each(
            names
                .iter()
                .map(|n| format!("{API}/namespaces/{}/retention-runs?n=1", seg(n))),
        )
        .await;
    names
        .into_iter()
        .zip(runs)
        .map(|(name, r): (String, Result<Json, _>)| {
            let last = r.ok().and_then(|j| j["runs"].get(0).cloned());
            (name, last)
        })
        .collect()
}
