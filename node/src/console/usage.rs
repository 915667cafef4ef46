//! Stored bytes and gigabyte-hours per namespace and organisation, with
//! charts drawn as inline SVG (no chart library to download): bars for the
//! largest organisations and namespaces now, and columns for each
//! organisation's last 30 days (from the state machine's daily samples).

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::response::Response;
use axum::Extension;
use minijinja::context;
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use super::client::{seg, API};
use super::namespaces::names_where;
use super::render::ser;
use super::{Console, Viewer};

/// Bars in a chart; the rest are summed in the table only.
const BARS: usize = 20;
/// Width of the longest bar, in SVG units.
const BAR_WIDTH: f64 = 420.0;
const ROW: u32 = 22;

/// Days in an organisation's chart over time (today included).
const DAYS_SHOWN: u64 = 30;
/// Column pitch and the tallest column, in SVG units.
const COLUMN: u32 = 22;
const COLUMN_HEIGHT: f64 = 100.0;

#[derive(Serialize, Debug, PartialEq)]
pub struct Column {
    x: u32,
    y: u32,
    height: u32,
    /// The day (`MM-DD`), or "now".
    label: String,
    /// The column's figures, for its tooltip and the table beside it.
    bytes: String,
    gb_hours: Option<String>,
}

/// Columns for the daily samples (stored bytes at each day's start, and
/// the gigabyte-hours of the day) and `now`, scaled to the largest.
fn columns(days: &Json) -> Vec<Column> {
    let mut points: Vec<(String, u64, Option<f64>)> = days["days"]
        .as_array()
        .map(|a| a.as_slice())
        .unwrap_or_default()
        .iter()
        .map(|d| {
            (
                d["date"]
                    .as_str()
                    .unwrap_or_default()
                    .get(5..)
                    .unwrap_or_default()
                    .to_string(),
                d["bytes"].as_u64().unwrap_or(0),
                d["dayGigabyteHours"].as_f64(),
            )
        })
        .collect();
    points.push((
        "now".into(),
        days["now"]["bytes"].as_u64().unwrap_or(0),
        None,
    ));
    let max = points.iter().map(|p| p.1).max().unwrap_or(0).max(1) as f64;
    points
        .into_iter()
        .enumerate()
        .map(|(i, (label, bytes, gb))| {
            let height = ((bytes as f64 / max) * COLUMN_HEIGHT)
                .round()
                .max(if bytes > 0 { 1.0 } else { 0.0 }) as u32;
            Column {
                x: i as u32 * COLUMN,
                y: COLUMN_HEIGHT as u32 - height,
                height,
                label,
                bytes: super::render::bytes(minijinja::Value::from(bytes)),
                gb_hours: gb.map(|g| format!("{g:.3}")),
            }
        })
        .collect()
}

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
    // Each organisation's last days, in the same order.
    let histories: Vec<Option<Json>> = v
        .client
        .get_each(usages.iter().map(|u| {
            format!(
                "{API}/organisations/{}/usage/days?days={DAYS_SHOWN}",
                seg(u["organisation"].as_str().unwrap_or_default())
            )
        }))
        .await
        .into_iter()
        .map(Result::ok)
        .collect();
    for (u, h) in usages.iter_mut().zip(histories) {
        if let Some(h) = h {
            let cols = columns(&h);
            u["history"] = serde_json::json!({
                "width": cols.len() as u32 * COLUMN,
                "columns": cols,
            });
        }
    }
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
    let names = names_where(&v.client, |n| n["organisation"].is_null(), UNOWNED_SHOWN).await;
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
    fn columns_run_from_the_oldest_day_to_now_scaled_to_the_largest() {
        let days = serde_json::json!({
            "days": [
                {"date": "2026-12-02", "bytes": 2_000, "dayGigabyteHours": 0.5},
                {"date": "2026-12-03", "bytes": 4_000, "dayGigabyteHours": 1.25},
            ],
            "now": {"bytes": 1_000},
        });
        let c = columns(&days);
        let labels: Vec<&str> = c.iter().map(|c| c.label.as_str()).collect();
        assert_eq!(labels, ["12-02", "12-03", "now"]);
        assert_eq!(c[1].height, COLUMN_HEIGHT as u32);
        assert_eq!(c[0].height, COLUMN_HEIGHT as u32 / 2);
        assert_eq!(c[2].height, COLUMN_HEIGHT as u32 / 4);
        assert_eq!(
            c[2].y + c[2].height,
            COLUMN_HEIGHT as u32,
            "columns stand on one line"
        );
        assert_eq!(c[2].x, 2 * COLUMN);
        assert_eq!(c[1].gb_hours.as_deref(), Some("1.250"));
        assert_eq!(c[2].gb_hours, None);
        // No samples yet: one column, now's.
        let only = columns(&serde_json::json!({"days": [], "now": {"bytes": 0}}));
        assert_eq!(only.len(), 1);
        assert_eq!(only[0].height, 0);
    }

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
