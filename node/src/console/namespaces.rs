//! Namespaces: the list (visibility, tenant, stored bytes, quota use,
//! repository count), create, change visibility, delete with confirmation,
//! and one namespace's repositories.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::Method;
use axum::response::Response;
use axum::{Extension, Form};
use futures::future::join_all;
use minijinja::context;
use serde::Deserialize;
use serde_json::{json, Value as Json};
use tcr_raft::Action;

use super::client::{query, seg, Client, Refused, API};
use super::render::ser;
use super::{after, may, namespace_crumbs, Console, Viewer};

/// Namespaces per page of the list.
const PAGE: usize = 50;
/// Repositories counted per namespace on the list ("1000+" past it).
const COUNT_UP_TO: usize = 1000;

#[derive(Deserialize)]
pub struct Cursor {
    last: Option<String>,
    done: Option<String>,
}

/// Names of the first `limit` namespaces (of the first 1000 the viewer
/// sees, in name order) whose API view passes `keep`; none if the list
/// cannot be read.
pub async fn names_where(
    client: &Client,
    keep: impl Fn(&Json) -> bool,
    limit: usize,
) -> Vec<String> {
    let Ok(list) = client
        .get::<Json>(&format!("{API}/namespaces?n=1000"))
        .await
    else {
        return Vec::new();
    };
    list["namespaces"]
        .as_array()
        .map(|a| a.as_slice())
        .unwrap_or_default()
        .iter()
        .filter(|n| keep(n))
        .filter_map(|n| n["name"].as_str().map(str::to_string))
        .take(limit)
        .collect()
}

/// What a redirect after a form says, from a fixed list (a link cannot put
/// words of its own on the page).
pub fn done_message(done: Option<&str>) -> Option<&'static str> {
    Some(match done? {
        "created" => "Namespace created.",
        "visibility" => "Visibility changed.",
        "deleted" => "Namespace deleted.",
        "policy" => "Retention policy saved.",
        "policy-cleared" => "Retention policy removed.",
        "run" => "Retention run started.",
        "revoked" => "Credential revoked.",
        _ => return None,
    })
}

pub async fn list(
    State(c): State<Arc<Console>>,
    Extension(v): Extension<Viewer>,
    Query(q): Query<Cursor>,
) -> Response {
    let n = PAGE.to_string();
    let path = format!(
        "{API}/namespaces{}",
        query(&[("n", Some(&n)), ("last", q.last.as_deref())])
    );
    let page: Json = match v.client.get(&path).await {
        Ok(p) => p,
        Err(r) => return c.pages.refused(&v, &r),
    };
    let namespaces = page["namespaces"].as_array().cloned().unwrap_or_default();
    let client = &v.client;
    let rows = join_all(namespaces.iter().map(|ns| async move {
        let name = ns["name"].as_str().unwrap_or_default();
        let usage: Option<Json> = client
            .get(&format!("{API}/namespaces/{}/usage", seg(name)))
            .await
            .ok();
        let repos: Option<Json> = client
            .get(&format!(
                "{API}/namespaces/{}/repositories?n={COUNT_UP_TO}",
                seg(name)
            ))
            .await
            .ok();
        let count = repos.as_ref().map(|r| {
            let n = r["repositories"].as_array().map_or(0, Vec::len);
            if r["more"].as_bool() == Some(true) {
                format!("{n}+")
            } else {
                n.to_string()
            }
        });
        let bytes = usage.as_ref().and_then(|u| u["bytes"].as_u64());
        let quota = ns["quotaBytes"].as_u64();
        json!({
            "ns": ns,
            "bytes": bytes,
            "repositories": count,
            "quotaPercent": bytes.zip(quota).filter(|(_, q)| *q > 0).map(|(b, q)| (b * 100 / q).min(999)),
        })
    }))
    .await;
    let next = (page["more"].as_bool() == Some(true))
        .then(|| {
            namespaces
                .last()
                .and_then(|n| n["name"].as_str())
                .map(str::to_string)
        })
        .flatten();
    c.pages.page(
        &v,
        "namespaces.html",
        context! {
            title => "Namespaces",
            nav => "namespaces",
            rows => ser(&rows),
            next => next,
            first => q.last.is_some(),
            flash => done_message(q.done.as_deref()),
            organisation => v.organisation(),
        },
    )
}

#[derive(Deserialize)]
pub struct CreateForm {
    name: String,
    visibility: String,
    #[serde(default)]
    organisation: String,
    #[serde(default)]
    project: String,
}

fn nonempty(s: &str) -> Option<&str> {
    Some(s.trim()).filter(|s| !s.is_empty())
}

pub async fn create(
    State(c): State<Arc<Console>>,
    Extension(v): Extension<Viewer>,
    Form(f): Form<CreateForm>,
) -> Response {
    let mut body = json!({ "name": f.name.trim(), "visibility": f.visibility });
    if let Some(o) = nonempty(&f.organisation) {
        body["organisation"] = json!(o);
    }
    if let Some(p) = nonempty(&f.project) {
        body["project"] = json!(p);
    }
    let sent = v
        .client
        .send(Method::POST, &format!("{API}/namespaces"), Some(body))
        .await;
    let to = format!("/console/namespaces/{}?done=created", seg(f.name.trim()));
    after(&c, &v, sent, &to)
}

#[derive(Deserialize)]
pub struct RepoCursor {
    last: Option<String>,
    done: Option<String>,
}

pub async fn show(
    State(c): State<Arc<Console>>,
    Extension(v): Extension<Viewer>,
    Path(ns): Path<String>,
    Query(q): Query<RepoCursor>,
) -> Response {
    let base = format!("{API}/namespaces/{}", seg(&ns));
    let record: Json = match v.client.get(&base).await {
        Ok(r) => r,
        Err(r) => return c.pages.refused(&v, &r),
    };
    let repos_path = format!(
        "{base}/repositories{}",
        query(&[("n", Some("100")), ("last", q.last.as_deref())])
    );
    let usage_path = format!("{base}/usage");
    let (repos, usage) = futures::join!(
        v.client.get::<Json>(&repos_path),
        v.client.get::<Json>(&usage_path)
    );
    let repos = match repos {
        Ok(r) => r,
        Err(r) => return c.pages.refused(&v, &r),
    };
    let list = repos["repositories"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let next = (repos["more"].as_bool() == Some(true))
        .then(|| {
            list.last()
                .and_then(|r| r["name"].as_str())
                .map(str::to_string)
        })
        .flatten();
    c.pages.page(
        &v,
        "namespace.html",
        context! {
            title => ns.clone(),
            nav => "namespaces",
            crumbs => ser(vec![("Namespaces", "/console/namespaces".to_string())]),
            ns => ser(&record),
            usage => usage.ok().map(|u| ser(&u)),
            repositories => ser(&list),
            next => next,
            may_admin => may(&c, &v, &ns, Action::Admin),
            flash => done_message(q.done.as_deref()),
        },
    )
}

#[derive(Deserialize)]
pub struct VisibilityForm {
    visibility: String,
}

pub async fn set_visibility(
    State(c): State<Arc<Console>>,
    Extension(v): Extension<Viewer>,
    Path(ns): Path<String>,
    Form(f): Form<VisibilityForm>,
) -> Response {
    let body = json!({ "visibility": f.visibility });
    let sent = v
        .client
        .send(
            Method::PATCH,
            &format!("{API}/namespaces/{}", seg(&ns)),
            Some(body),
        )
        .await;
    let to = format!("/console/namespaces/{}?done=visibility", seg(&ns));
    after(&c, &v, sent, &to)
}

pub async fn confirm_delete(
    State(c): State<Arc<Console>>,
    Extension(v): Extension<Viewer>,
    Path(ns): Path<String>,
) -> Response {
    let base = format!("{API}/namespaces/{}", seg(&ns));
    let repos_path = format!("{base}/repositories?n={COUNT_UP_TO}");
    let usage_path = format!("{base}/usage");
    let (repos, usage) = futures::join!(
        v.client.get::<Json>(&repos_path),
        v.client.get::<Json>(&usage_path)
    );
    let repos = match repos {
        Ok(r) => r,
        Err(r) => return c.pages.refused(&v, &r),
    };
    c.pages.page(
        &v,
        "namespace_delete.html",
        context! {
            title => format!("Delete {ns}"),
            nav => "namespaces",
            crumbs => ser(namespace_crumbs(&ns)),
            name => ns.clone(),
            repositories => ser(&repos["repositories"]),
            more => repos["more"].as_bool() == Some(true),
            usage => usage.ok().map(|u| ser(&u)),
        },
    )
}

#[derive(Deserialize)]
pub struct DeleteForm {
    confirm: String,
}

pub async fn delete(
    State(c): State<Arc<Console>>,
    Extension(v): Extension<Viewer>,
    Path(ns): Path<String>,
    Form(f): Form<DeleteForm>,
) -> Response {
    if f.confirm.trim() != ns {
        return c.pages.refused(
            &v,
            &Refused::bad_request(format!("type the namespace's name, '{ns}', to delete it")),
        );
    }
    let sent = v
        .client
        .send(
            Method::DELETE,
            &format!("{API}/namespaces/{}", seg(&ns)),
            None,
        )
        .await;
    after(&c, &v, sent, "/console/namespaces?done=deleted")
}
