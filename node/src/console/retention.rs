//! A namespace's retention policy as a form, a preview of what a run would
//! remove now, and its past runs with what went and why.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::Method;
use axum::response::Response;
use axum::{Extension, Form};
use minijinja::context;
use serde::Deserialize;
use serde_json::{json, Value as Json};
use tcr_raft::Action;

use super::client::{seg, Refused, API};
use super::namespaces::done_message;
use super::render::ser;
use super::{after, may, namespace_crumbs, Console, Viewer};

/// Keep-rule rows the form offers (policies rarely need more; the API
/// takes any number).
const RULE_ROWS: usize = 3;
/// Past runs shown with their removals.
const RUNS_IN_DETAIL: usize = 5;
const DAY: u64 = 86_400;

#[derive(Deserialize)]
pub struct Done {
    done: Option<String>,
}

/// A policy as the form's rows: durations in days, patterns comma-joined.
fn form_rows(policy: &Json) -> Vec<Json> {
    let rules = policy["rules"].as_array().cloned().unwrap_or_default();
    (0..RULE_ROWS.max(rules.len()))
        .map(|i| {
            let r = rules.get(i).cloned().unwrap_or(Json::Null);
            let join = |v: &Json| {
                v.as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|x| x.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    })
                    .unwrap_or_default()
            };
            json!({
                "keep": r["keep"].as_str().unwrap_or(""),
                "count": r["count"],
                "withinDays": r["withinSecs"].as_u64().map(|s| s as f64 / DAY as f64),
                "tags": join(&r["tags"]),
                "exclude": join(&r["excludeTags"]),
            })
        })
        .collect()
}

pub async fn show(
    State(c): State<Arc<Console>>,
    Extension(v): Extension<Viewer>,
    Path(ns): Path<String>,
    Query(q): Query<Done>,
) -> Response {
    let base = format!("{API}/namespaces/{}", seg(&ns));
    let record: Json = match v.client.get(&base).await {
        Ok(r) => r,
        Err(r) => return c.pages.refused(&v, &r),
    };
    let policy = record["retentionPolicy"].clone();
    let runs_path = format!("{base}/retention-runs?n=20");
    let (preview, runs) = futures::join!(
        async {
            if policy.is_null() {
                None
            } else {
                Some(
                    v.client
                        .get::<Json>(&format!("{base}/retention-policy/preview"))
                        .await,
                )
            }
        },
        v.client.get::<Json>(&runs_path)
    );
    let runs = runs
        .ok()
        .and_then(|r| r["runs"].as_array().cloned())
        .unwrap_or_default();
    let detailed = v
        .client
        .get_each::<Json>(runs.iter().take(RUNS_IN_DETAIL).map(|r| {
            let id = r["id"].as_str().unwrap_or_default();
            format!("{base}/retention-runs/{}", seg(id))
        }))
        .await;
    let runs: Vec<Json> = runs
        .into_iter()
        .enumerate()
        .map(|(i, r)| match detailed.get(i) {
            Some(Ok(d)) => d.clone(),
            _ => r,
        })
        .collect();
    let (preview, preview_error) = match preview {
        Some(Ok(p)) => (Some(p), None),
        Some(Err(e)) => (None, Some(e.message)),
        None => (None, None),
    };
    c.pages.page(
        &v,
        "retention.html",
        context! {
            title => format!("Retention of {ns}"),
            nav => "namespaces",
            crumbs => ser(namespace_crumbs(&ns)),
            ns => ns.clone(),
            policy => ser(&policy),
            rows => ser(form_rows(&policy)),
            protect => policy["protect"].as_array().map(|a| a.iter().filter_map(|x| x.as_str()).collect::<Vec<_>>().join(", ")).unwrap_or_default(),
            untagged_days => policy["untaggedOlderThanSecs"].as_u64().map(|s| s as f64 / DAY as f64),
            remove_referrers => policy["removeReferrers"].as_bool().unwrap_or(false),
            preview => preview.map(|p| ser(&p)),
            preview_error => preview_error,
            runs => ser(&runs),
            may_admin => may(&c, &v, &ns, Action::Admin),
            flash => done_message(q.done.as_deref()),
        },
    )
}

fn patterns(s: Option<&String>) -> Vec<String> {
    s.map(|s| {
        s.split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(str::to_string)
            .collect()
    })
    .unwrap_or_default()
}

/// Days (a decimal) as whole seconds.
fn days(s: Option<&String>) -> Result<Option<u64>, String> {
    match s.map(|s| s.trim()).filter(|s| !s.is_empty()) {
        None => Ok(None),
        Some(d) => d
            .parse::<f64>()
            .ok()
            .filter(|d| d.is_finite() && *d >= 0.0 && *d < 1e6)
            .map(|d| Some((d * DAY as f64).round() as u64))
            .ok_or_else(|| format!("'{d}' is not a number of days")),
    }
}

/// The policy the form describes (the API checks it further).
fn policy_of(f: &HashMap<String, String>) -> Result<Json, String> {
    let mut rules = Vec::new();
    for i in 0..RULE_ROWS * 4 {
        let get = |k: &str| f.get(&format!("rule{i}_{k}"));
        let Some(keep) = get("keep").map(|k| k.trim()).filter(|k| !k.is_empty()) else {
            continue;
        };
        let mut rule = json!({ "keep": keep });
        if let Some(n) = get("count").map(|n| n.trim()).filter(|n| !n.is_empty()) {
            rule["count"] = json!(n
                .parse::<u32>()
                .map_err(|_| format!("rule {}: '{n}' is not a count", i + 1))?);
        }
        if let Some(s) = days(get("within_days")).map_err(|e| format!("rule {}: {e}", i + 1))? {
            rule["withinSecs"] = json!(s);
        }
        rule["tags"] = json!(patterns(get("tags")));
        rule["excludeTags"] = json!(patterns(get("exclude")));
        rules.push(rule);
    }
    let mut policy = json!({
        "rules": rules,
        "protect": patterns(f.get("protect")),
        "removeReferrers": f.get("remove_referrers").is_some(),
    });
    if let Some(s) = days(f.get("untagged_days"))? {
        policy["untaggedOlderThanSecs"] = json!(s);
    }
    Ok(policy)
}

pub async fn set(
    State(c): State<Arc<Console>>,
    Extension(v): Extension<Viewer>,
    Path(ns): Path<String>,
    Form(f): Form<HashMap<String, String>>,
) -> Response {
    let path = format!("{API}/namespaces/{}/retention-policy", seg(&ns));
    let back = |done: &str| format!("/console/namespaces/{}/retention?done={done}", seg(&ns));
    if f.get("action").map(String::as_str) == Some("clear") {
        let sent = v.client.send(Method::DELETE, &path, None).await;
        return after(&c, &v, sent, &back("policy-cleared"));
    }
    let policy = match policy_of(&f) {
        Ok(p) => p,
        Err(message) => return c.pages.refused(&v, &Refused::bad_request(message)),
    };
    let sent = v.client.send(Method::PUT, &path, Some(policy)).await;
    after(&c, &v, sent, &back("policy"))
}

pub async fn start_run(
    State(c): State<Arc<Console>>,
    Extension(v): Extension<Viewer>,
    Path(ns): Path<String>,
) -> Response {
    let path = format!("{API}/namespaces/{}/retention-runs", seg(&ns));
    let sent = v.client.send(Method::POST, &path, None).await;
    let to = format!("/console/namespaces/{}/retention?done=run", seg(&ns));
    after(&c, &v, sent, &to)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_form_reads_as_the_policy_it_shows() {
        let f: HashMap<String, String> = [
            ("rule0_keep", "lastPushed"),
            ("rule0_count", "3"),
            ("rule0_tags", "v*, release-*"),
            ("rule1_keep", ""),
            ("rule2_keep", "pushedWithin"),
            ("rule2_within_days", "1.5"),
            ("protect", "latest"),
            ("untagged_days", "7"),
            ("remove_referrers", "on"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let p = policy_of(&f).unwrap();
        assert_eq!(p["rules"].as_array().unwrap().len(), 2);
        assert_eq!(p["rules"][0]["tags"], json!(["v*", "release-*"]));
        assert_eq!(p["rules"][1]["withinSecs"], 129_600);
        assert_eq!(p["untaggedOlderThanSecs"], 7 * DAY);
        assert_eq!(p["removeReferrers"], true);
        let back = form_rows(&p);
        assert_eq!(back[0]["tags"], "v*, release-*");
        assert_eq!(back[1]["withinDays"], 1.5);
        let mut bad = f.clone();
        bad.insert("rule0_count".into(), "-1".into());
        assert!(policy_of(&bad).is_err());
        bad.insert("rule0_count".into(), "1".into());
        bad.insert("untagged_days".into(), "NaN".into());
        assert!(policy_of(&bad).is_err());
    }
}
