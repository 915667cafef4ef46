//! An organisation's credentials: list, create (the secret shown once, with
//! a `docker login` line and a Kubernetes pull-secret command), revoke.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::Method;
use axum::response::Response;
use axum::{Extension, Form};
use minijinja::context;
use serde::Deserialize;
use serde_json::{json, Value as Json};

use super::client::{seg, Refused, API};
use super::namespaces::done_message;
use super::render::ser;
use super::{after, Console, Viewer};

const ACTIONS: [&str; 4] = ["pull", "push", "delete", "admin"];

#[derive(Deserialize)]
pub struct OrgQuery {
    org: Option<String>,
    done: Option<String>,
}

/// The organisations the viewer may pick: its own, or (the operator) all.
pub(super) async fn organisations(v: &Viewer) -> Vec<String> {
    if let Some(o) = v.organisation() {
        return vec![o];
    }
    v.client
        .get::<Json>(&format!("{API}/organisations"))
        .await
        .ok()
        .and_then(|j| j["organisations"].as_array().cloned())
        .unwrap_or_default()
        .iter()
        .filter_map(|o| o["name"].as_str().map(str::to_string))
        .collect()
}

pub async fn list(
    State(c): State<Arc<Console>>,
    Extension(v): Extension<Viewer>,
    Query(q): Query<OrgQuery>,
) -> Response {
    let orgs = organisations(&v).await;
    let org = v.organisation().or(q.org).or_else(|| orgs.first().cloned());
    let (credentials, refusal) = match &org {
        None => (vec![], None),
        Some(o) => match v
            .client
            .get::<Json>(&format!("{API}/organisations/{}/credentials", seg(o)))
            .await
        {
            Ok(j) => (
                j["credentials"].as_array().cloned().unwrap_or_default(),
                None,
            ),
            Err(r) => (vec![], Some(r.message)),
        },
    };
    c.pages.page(
        &v,
        "credentials.html",
        context! {
            title => "Credentials",
            nav => "credentials",
            org => org,
            orgs => orgs,
            credentials => ser(&credentials),
            refusal => refusal,
            actions => ACTIONS,
            flash => done_message(q.done.as_deref()),
        },
    )
}

/// The API's request from the form: one scope (a namespace or `*`) with
/// the ticked actions, and an optional lifetime in days.
fn request_of(f: &HashMap<String, String>) -> Result<(String, Json), String> {
    let org = f
        .get("org")
        .map(|o| o.trim().to_string())
        .filter(|o| !o.is_empty())
        .ok_or("choose an organisation")?;
    let name = f.get("name").map(|n| n.trim()).unwrap_or_default();
    let namespace = f
        .get("namespace")
        .map(|n| n.trim())
        .filter(|n| !n.is_empty())
        .unwrap_or("*");
    let actions: Vec<&str> = ACTIONS
        .iter()
        .copied()
        .filter(|a| f.contains_key(&format!("action_{a}")))
        .collect();
    if actions.is_empty() {
        return Err("tick at least one action".into());
    }
    let mut body = json!({
        "name": name,
        "scopes": [{ "namespace": namespace, "actions": actions }],
    });
    if let Some(p) = f.get("project").map(|p| p.trim()).filter(|p| !p.is_empty()) {
        body["project"] = json!(p);
    }
    if let Some(d) = f
        .get("expires_days")
        .map(|d| d.trim())
        .filter(|d| !d.is_empty())
    {
        let days: u64 = d
            .parse()
            .ok()
            .filter(|d| (1..=36_500).contains(d))
            .ok_or_else(|| format!("'{d}' is not a number of days (1 to 36500)"))?;
        body["expiresInSecs"] = json!(days * 86_400);
    }
    Ok((org, body))
}

pub async fn create(
    State(c): State<Arc<Console>>,
    Extension(v): Extension<Viewer>,
    Form(f): Form<HashMap<String, String>>,
) -> Response {
    let (org, body) = match request_of(&f) {
        Ok(x) => x,
        Err(e) => return c.pages.refused(&v, &Refused::bad_request(e)),
    };
    let created: Json = match v
        .client
        .json(
            Method::POST,
            &format!("{API}/organisations/{}/credentials", seg(&org)),
            Some(body),
        )
        .await
    {
        Ok(j) => j,
        Err(r) => return c.pages.refused(&v, &r),
    };
    c.pages.page(
        &v,
        "credential_created.html",
        context! {
            title => "Credential created",
            nav => "credentials",
            crumbs => ser(vec![("Credentials", format!("/console/credentials?org={}", seg(&org)))]),
            created => ser(&created),
            org => org,
            registry_host => c.registry_host.clone(),
        },
    )
}

#[derive(Deserialize)]
pub struct RevokeForm {
    org: String,
}

pub async fn revoke(
    State(c): State<Arc<Console>>,
    Extension(v): Extension<Viewer>,
    Path(id): Path<String>,
    Form(f): Form<RevokeForm>,
) -> Response {
    let path = format!(
        "{API}/organisations/{}/credentials/{}",
        seg(&f.org),
        seg(&id)
    );
    let sent = v.client.send(Method::DELETE, &path, None).await;
    let to = format!("/console/credentials?org={}&done=revoked", seg(&f.org));
    after(&c, &v, sent, &to)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_form_becomes_one_scope_with_the_ticked_actions() {
        let f: HashMap<String, String> = [
            ("org", "acme"),
            ("name", "ci"),
            ("namespace", ""),
            ("action_pull", "on"),
            ("action_push", "on"),
            ("expires_days", "30"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let (org, body) = request_of(&f).unwrap();
        assert_eq!(org, "acme");
        assert_eq!(
            body["scopes"],
            json!([{"namespace": "*", "actions": ["pull", "push"]}])
        );
        assert_eq!(body["expiresInSecs"], 30 * 86_400);
        let mut none = f.clone();
        none.remove("action_pull");
        none.remove("action_push");
        assert!(request_of(&none).is_err());
        let mut forever = f;
        forever.insert("expires_days".into(), "0".into());
        assert!(request_of(&forever).is_err());
    }
}
