//! Storage usage: per namespace and per organisation, now and as daily
//! samples (the state machine keeps each namespace's usage at the first
//! metering tick of every UTC day, for `tcr_raft::DAYS_KEPT` days).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::{Path, Query, State};
use axum::response::IntoResponse;
use axum::{Extension, Json};
use serde::Serialize;
use tcr_raft::{Action, StateReader, UsageSample, DAYS_KEPT, DAY_SECS};

use super::errors::{ApiError, ApiResult, ErrorResponses};
use crate::auth::access::require_on_namespace;
use crate::auth::Caller;
use crate::state::ApiState;

/// Storage of a namespace. Stored bytes: each unique blob linked to one of
/// its repositories, and each unique manifest, counted once however many of
/// its repositories hold it (a blob shared with another namespace counts in
/// both). Gigabyte-hours (10^9 bytes for an hour) accumulate from the
/// leader's metering ticks, committed through Raft: every node reports the
/// same figure, and a leader change neither repeats nor skips an interval.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Usage {
    pub namespace: String,
    pub bytes: u64,
    pub blob_bytes: u64,
    pub manifest_bytes: u64,
    pub blobs: u64,
    pub manifests: u64,
    pub quota_bytes: Option<u64>,
    pub gigabyte_hours: f64,
    /// Stored bytes integrated over time up to `meteredAt`.
    #[schema(value_type = u64)]
    pub byte_seconds: u128,
    /// The last metering tick that counted this namespace (seconds).
    pub metered_at: u64,
}

impl Usage {
    fn of(ns: &tcr_raft::NamespaceRecord, u: tcr_raft::NamespaceUsage) -> Usage {
        Usage {
            namespace: ns.name.clone(),
            bytes: u.bytes(),
            blob_bytes: u.blob_bytes,
            manifest_bytes: u.manifest_bytes,
            blobs: u.blobs,
            manifests: u.manifests,
            quota_bytes: ns.quota_bytes,
            gigabyte_hours: u.gb_hours(),
            byte_seconds: u.byte_seconds,
            metered_at: u.metered_at,
        }
    }
}

#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OrganisationUsage {
    pub organisation: String,
    pub bytes: u64,
    pub gigabyte_hours: f64,
    pub namespaces: Vec<Usage>,
}

#[utoipa::path(get, path = "/v1/container-registries/namespaces/{ns}/usage", tag = "namespaces",
    params(("ns" = String, Path)),
    responses((status = 200, body = Usage),
        ErrorResponses,
    ))]
pub async fn namespace(
    State(st): State<Arc<ApiState>>,
    Extension(caller): Extension<Caller>,
    Path(ns): Path<String>,
) -> ApiResult {
    let state = st.meta.read().await?;
    let rec = require_on_namespace(state, &caller, &ns, Action::Pull)?;
    let u = state.namespace_usage(&ns)?.unwrap_or_default();
    Ok(Json(Usage::of(&rec, u)).into_response())
}

#[utoipa::path(get, path = "/v1/container-registries/organisations/{org}/usage", tag = "organisations",
    params(("org" = String, Path)),
    responses((status = 200, body = OrganisationUsage),
        ErrorResponses,
    ))]
pub async fn organisation(
    State(st): State<Arc<ApiState>>,
    Extension(caller): Extension<Caller>,
    Path(org): Path<String>,
) -> ApiResult {
    let state = st.meta.read().await?;
    let mut namespaces = Vec::new();
    for ns in namespaces_of(state, &caller, &org)? {
        let u = state.namespace_usage(&ns.name)?.unwrap_or_default();
        namespaces.push(Usage::of(&ns, u));
    }
    Ok(Json(OrganisationUsage {
        organisation: org,
        bytes: namespaces.iter().map(|u| u.bytes).sum(),
        gigabyte_hours: namespaces.iter().map(|u| u.gigabyte_hours).sum(),
        namespaces,
    })
    .into_response())
}

/// A namespace's (or an organisation's) usage at the first metering tick of
/// one day: the same figures as its usage then. The gigabyte-hours of a day
/// are the difference between its sample and the next one's (or `now`'s).
#[derive(Clone, Debug, Default, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DayUsage {
    /// The day (UTC), `YYYY-MM-DD`.
    pub date: String,
    /// The sampling tick's time (seconds since the epoch).
    pub at: u64,
    pub bytes: u64,
    /// Gigabyte-hours accrued up to `at`, since metering began.
    pub gigabyte_hours: f64,
    #[schema(value_type = u64)]
    pub byte_seconds: u128,
    /// Gigabyte-hours accrued from this sample to the next one (or to
    /// `now`): the day's consumption. Absent on `now`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub day_gigabyte_hours: Option<f64>,
}

impl DayUsage {
    fn of(s: &UsageSample) -> DayUsage {
        DayUsage {
            date: date(s.day),
            at: s.at,
            bytes: s.bytes,
            gigabyte_hours: s.gb_hours(),
            byte_seconds: s.byte_seconds,
            day_gigabyte_hours: None,
        }
    }

    fn now(u: &tcr_raft::NamespaceUsage) -> DayUsage {
        DayUsage {
            date: date(today()),
            at: u.metered_at,
            bytes: u.bytes(),
            gigabyte_hours: u.gb_hours(),
            byte_seconds: u.byte_seconds,
            day_gigabyte_hours: None,
        }
    }

    /// Adds another namespace's figures at the same day.
    fn add(&mut self, other: &DayUsage) {
        if self.date.is_empty() {
            self.date = other.date.clone();
        }
        self.at = self.at.max(other.at);
        self.bytes += other.bytes;
        self.byte_seconds += other.byte_seconds;
        self.gigabyte_hours = tcr_raft::gb_hours(self.byte_seconds);
    }
}

/// Daily samples of a namespace, or of an organisation's namespaces summed
/// day by day (a namespace contributes from its first sample on; a deleted
/// namespace's samples go with it).
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UsageDays {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub organisation: Option<String>,
    /// Oldest first, one per day that had a metering tick.
    pub days: Vec<DayUsage>,
    /// The usage now (bytes) and as of the last metering tick
    /// (gigabyte-hours, `at`); its date is today by the answering node's clock.
    pub now: DayUsage,
}

/// Each day's consumption: the byte-seconds from its sample to the next.
fn with_day_totals(mut days: Vec<DayUsage>, now: &DayUsage) -> Vec<DayUsage> {
    let next: Vec<u128> = days
        .iter()
        .skip(1)
        .map(|d| d.byte_seconds)
        .chain([now.byte_seconds])
        .collect();
    for (d, n) in days.iter_mut().zip(next) {
        d.day_gigabyte_hours = Some(tcr_raft::gb_hours(n.saturating_sub(d.byte_seconds)));
    }
    days
}

/// The namespaces of `org`, once the caller is found to belong to it (or
/// to be the operator) and it exists.
fn namespaces_of(
    state: &StateReader,
    caller: &Caller,
    org: &str,
) -> ApiResult<Vec<tcr_raft::NamespaceRecord>> {
    crate::auth::access::require_org_member(state, caller, org)?;
    super::organisations::find(state, org)?;
    let mut all = state.all_namespaces()?;
    all.retain(|ns| ns.organisation.as_deref() == Some(org));
    Ok(all)
}

/// Today (days since the epoch) by this node's clock.
fn today() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
        / DAY_SECS
}

/// `YYYY-MM-DD` of a day since the epoch.
fn date(day: u64) -> String {
    let t = UNIX_EPOCH + std::time::Duration::from_secs(day.saturating_mul(DAY_SECS));
    humantime::format_rfc3339_seconds(t).to_string()[..10].to_string()
}

/// The first day of the last `days` (query `days`, 1 to `DAYS_KEPT`,
/// default 30) ending today by this node's clock.
fn first_day(q: &HashMap<String, String>) -> ApiResult<u64> {
    let days = match q.get("days") {
        None => 30,
        Some(d) => match d.parse::<u64>() {
            Ok(n) if (1..=DAYS_KEPT).contains(&n) => n,
            _ => {
                return Err(ApiError::invalid(format!(
                    "days={d} is not a number of days from 1 to {DAYS_KEPT}"
                )))
            }
        },
    };
    Ok((today() + 1).saturating_sub(days))
}

fn namespace_days(
    state: &StateReader,
    ns: &str,
    from: u64,
) -> ApiResult<(Vec<DayUsage>, DayUsage)> {
    let days = state.namespace_usage_days(ns, from)?;
    let now = state.namespace_usage(ns)?.unwrap_or_default();
    Ok((days.iter().map(DayUsage::of).collect(), DayUsage::now(&now)))
}

#[utoipa::path(get, path = "/v1/container-registries/namespaces/{ns}/usage/days", tag = "namespaces",
    params(("ns" = String, Path),
        ("days" = Option<u64>, Query, description = "how many days back, today included (1 to 400, default 30)")),
    responses((status = 200, body = UsageDays),
        ErrorResponses,
    ))]
pub async fn days(
    State(st): State<Arc<ApiState>>,
    Extension(caller): Extension<Caller>,
    Path(ns): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult {
    let from = first_day(&q)?;
    let state = st.meta.read().await?;
    require_on_namespace(state, &caller, &ns, Action::Pull)?;
    let (days, now) = namespace_days(state, &ns, from)?;
    Ok(Json(UsageDays {
        namespace: Some(ns),
        organisation: None,
        days: with_day_totals(days, &now),
        now,
    })
    .into_response())
}

#[utoipa::path(get, path = "/v1/container-registries/organisations/{org}/usage/days", tag = "organisations",
    params(("org" = String, Path),
        ("days" = Option<u64>, Query, description = "how many days back, today included (1 to 400, default 30)")),
    responses((status = 200, body = UsageDays),
        ErrorResponses,
    ))]
pub async fn organisation_days(
    State(st): State<Arc<ApiState>>,
    Extension(caller): Extension<Caller>,
    Path(org): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult {
    let from = first_day(&q)?;
    let state = st.meta.read().await?;
    let mut by_day: BTreeMap<String, DayUsage> = BTreeMap::new();
    let mut now = DayUsage::default();
    for ns in namespaces_of(state, &caller, &org)? {
        let (days, current) = namespace_days(state, &ns.name, from)?;
        for d in &days {
            by_day.entry(d.date.clone()).or_default().add(d);
        }
        now.add(&current);
    }
    Ok(Json(UsageDays {
        namespace: None,
        organisation: Some(org),
        days: with_day_totals(by_day.into_values().collect(), &now),
        now,
    })
    .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_are_utc_dates() {
        assert_eq!(date(0), "1970-01-01");
        // 2026-12-04 is 20,791 days after the epoch.
        assert_eq!(date(20_791), "2026-12-04");
    }

    #[test]
    fn a_day_consumes_up_to_the_next_sample() {
        let at = |bs: u128| DayUsage {
            byte_seconds: bs,
            ..Default::default()
        };
        let hour_of_a_gb = 3600 * 1_000_000_000u128;
        let days = with_day_totals(vec![at(0), at(24 * hour_of_a_gb)], &at(30 * hour_of_a_gb));
        let got: Vec<Option<f64>> = days.iter().map(|d| d.day_gigabyte_hours).collect();
        assert_eq!(got, vec![Some(24.0), Some(6.0)]);
        assert!(with_day_totals(vec![], &at(5)).is_empty());
    }

    #[test]
    fn the_window_is_bounded() {
        let q = |d: &str| HashMap::from([("days".to_string(), d.to_string())]);
        for bad in ["0", "401", "-1", "x", ""] {
            assert!(first_day(&q(bad)).is_err(), "days={bad}");
        }
        let one = first_day(&q("1")).unwrap();
        assert_eq!(first_day(&q("400")).unwrap(), one - 399);
        assert_eq!(first_day(&HashMap::new()).unwrap(), one - 29);
    }
}
