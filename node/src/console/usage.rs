//! Stored bytes and gigabyte-hours per namespace and organisation, with a
//! bar chart drawn as inline SVG (no chart library to download).

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::response::Response;
use axum::Extension;
use minijinja::context;
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use super::client::{seg, API};
use super::render::ser;
use super::{Console, Viewer};

/// Bars in a chart; the rest are summed in the table only.
const BARS: usize = 20;
/// Width of the longest bar, in SVG units.
const BAR_WIDTH: f64 = 420.0;
const ROW: u32 = 22;

#[derive(Deserialize)]
pub struct OrgQuery {
    org: Option<String>,
}

#[derive(Serialize, Debug, PartialEq)]
pub struct Bar {
    label: String,
    value: String,
    width: u32,
    y: u32,
}

/// Bars for the largest `BARS` values, longest first, scaled to the largest.
fn bars(items: &[(String, u64)]) -> Vec<Bar> {
    let mut sorted: Vec<&(String, u64)> = items.iter().collect();
    sorted.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let max = sorted.first().map_or(0, |x| x.1).max(1) as f64;
    sorted
        .into_iter()
        .take(BARS)
        .enumerate()
        .map(|(i, (label, v))| Bar {
            label: label.clone(),
            value: super::render::bytes(minijinja::Value::from(*v)),
            width: ((*v as f64 / max) * BAR_WIDTH)
                .round()
                .max(if *v > 0 { 1.0 } else { 0.0 }) as u32,
            y: i as u32 * ROW,
        })
        .collect()
}

pub async fn show(
    State(c): State<Arc<Console>>,
    Extension(v): Extension<Viewer>,
    Query(q): Query<OrgQuery>,
) -> Response {
    let orgs: Vec<String> = super::credentials::organisations(&v)
        .await
        .into_iter()
        .filter(|o| q.org.as_ref().is_none_or(|want| want == o))
        .collect();
    let mut usages: Vec<Json> = v
        .client
        .get_each(
            orgs.iter()
                .map(|o| format!("{API}/organisations/{}/usage", seg(o))),
        )
        .await
        .into_iter()
        .flatten()
        .collect();
    if v.organisation().is_none() && q.org.is_none() {
        usages.extend(without_organisation(&v).await);
    }
    let by_org: Vec<(String, u64)> = usages
        .iter()
        .map(|u| {
            (
                u["organisation"].as_str().unwrap_or_default().to_string(),
                u["bytes"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    let by_namespace: Vec<(String, u64)> = usages
        .iter()
        .flat_map(|u| u["namespaces"].as_array().cloned().unwrap_or_default())
        .map(|n| {
            (
                n["namespace"].as_str().unwrap_or_default().to_string(),
                n["bytes"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    let org_bars = bars(&by_org);
    let ns_bars = bars(&by_namespace);
    c.pages.page(
        &v,
        "usage.html",
        context! {
            title => "Usage",
            nav => "usage",
            usages => ser(&usages),
            org_chart => ser(&org_bars),
            org_chart_height => org_bars.len() as u32 * ROW,
            ns_chart => ser(&ns_bars),
            ns_chart_height => ns_bars.len() as u32 * ROW,
        },
    )
}

/// The operator's namespaces of no organisation (the first
/// `UNOWNED_SHOWN`), as one group shaped like an organisation's usage.
async fn without_organisation(v: &Viewer) -> Option<Json> {
    let list = v
        .client
        .get::<Json>(&format!("{API}/namespaces?n=1000"))
        .await
        .ok()?;
    let names: Vec<String> = list["namespaces"]
        .as_array()?
        .iter()
        .filter(|n| n["organisation"].is_null())
        .filter_map(|n| n["name"].as_str().map(str::to_string))
        .take(UNOWNED_SHOWN)
        .collect();
    let namespaces: Vec<Json> = v
        .client
        .get_each(
            names
                .iter()
                .map(|n| format!("{API}/namespaces/{}/usage", seg(n))),
        )
        .await
        .into_iter()
        .flatten()
        .collect();
    if namespaces.is_empty() {
        return None;
    }
    Some(serde_json::json!({
        "organisation": "(no organisation)",
        "bytes": namespaces.iter().filter_map(|n| n["bytes"].as_u64()).sum::<u64>(),
        "gigabyteHours": namespaces.iter().filter_map(|n| n["gigabyteHours"].as_f64()).sum::<f64>(),
        "namespaces": namespaces,
    }))
}

/// Namespaces of no organisation shown on the operator's usage page.
const UNOWNED_SHOWN: usize = 200;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_are_scaled_to_the_largest_and_sorted() {
        let b = bars(&[("a".into(), 10), ("b".into(), 40), ("c".into(), 0)]);
        assert_eq!(b[0].label, "b");
        assert_eq!(b[0].width, BAR_WIDTH as u32);
        assert_eq!(b[1].width, (BAR_WIDTH / 4.0) as u32);
        assert_eq!(b[2].width, 0);
        assert_eq!(b[2].y, 2 * ROW);
        assert!(bars(&[]).is_empty());
    }
}
