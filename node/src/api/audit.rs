//! The audit trail: every committed change, who made it, from where, and
//! how it ended. The operator sees all of it; an organisation's admins see
//! their organisation's events.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use axum::extract::{Query, State};
use axum::response::IntoResponse;
use axum::{Extension, Json};
use serde::Serialize;
use tcr_raft::{Actor, AuditEvent, AuditFilter};

use super::errors::{ApiError, ApiResult, ErrorResponses};
use crate::auth::access::require_org_admin;
use crate::auth::{Caller, Subject};
use crate::state::ApiState;

/// Events per page when `n` is not given, and at most.
const DEFAULT_PAGE: usize = 100;
const MAX_PAGE: usize = 1000;
/// Events one request looks at, matching or not: a filter that matches
/// little answers a short page with `next` rather than scanning on.
const SCAN_BUDGET: usize = 10_000;

#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ActorView {
    /// `operator`, `anonymous`, `credential` or `system`.
    pub kind: &'static str,
    /// The credential's id, or the system job (`gc`, `retention`, ...).
    pub id: Option<String>,
    pub name: Option<String>,
    pub organisation: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuditEventView {
    /// Pass as `last` to list the events after this one.
    pub id: String,
    /// RFC 3339, UTC, milliseconds.
    pub time: String,
    pub at_ms: u64,
    /// The Raft log entry that made the change.
    pub index: u64,
    pub actor: ActorView,
    pub organisation: Option<String>,
    pub namespace: Option<String>,
    /// `namespace.create`, `manifest.push`, `tag.set`, `credential.revoke`,
    /// `retention.remove-tag`, `gc.collect`, `cluster.membership`, ...
    pub action: String,
    pub resource: String,
    pub detail: Option<String>,
    /// `ok`, or `refused` (the change was not made; `reason` says why).
    pub result: &'static str,
    pub reason: Option<String>,
    /// The client's address.
    pub address: Option<String>,
    /// The node that took the request.
    pub node: Option<u64>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct AuditEventList {
    pub events: Vec<AuditEventView>,
    /// More may follow: ask again with `last` = this. Absent at the end of
    /// the trail (for now: new events keep coming).
    pub next: Option<String>,
}

fn view(id: String, e: AuditEvent) -> AuditEventView {
    let actor = match e.actor {
        Actor::Operator => ActorView {
            kind: "operator",
            id: None,
            name: None,
            organisation: None,
        },
        Actor::Anonymous => ActorView {
            kind: "anonymous",
            id: None,
            name: None,
            organisation: None,
        },
        Actor::Credential {
            id,
            name,
            organisation,
        } => ActorView {
            kind: "credential",
            id: Some(id),
            name: Some(name),
            organisation: Some(organisation),
        },
        Actor::System(job) => ActorView {
            kind: "system",
            id: Some(job),
            name: None,
            organisation: None,
        },
    };
    AuditEventView {
        id,
        time: humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(e.at_ms))
            .to_string(),
        at_ms: e.at_ms,
        index: e.index,
        actor,
        organisation: e.organisation,
        namespace: e.namespace,
        action: e.action,
        resource: e.resource,
        detail: e.detail,
        result: if e.refused.is_some() { "refused" } else { "ok" },
        reason: e.refused,
        address: e.address,
        node: e.node,
    }
}

/// Seconds since the epoch, or an RFC 3339 time, as milliseconds.
fn time_param(name: &str, v: &str) -> ApiResult<u64> {
    if let Ok(secs) = v.parse::<u64>() {
        return Ok(secs.saturating_mul(1000));
    }
    let t = humantime::parse_rfc3339_weak(v).map_err(|_| {
        ApiError::invalid(format!(
            "{name}={v} is neither seconds since the epoch nor an RFC 3339 time"
        ))
    })?;
    let since = t
        .duration_since(UNIX_EPOCH)
        .map_err(|_| ApiError::invalid(format!("{name}={v} is before 1970")))?;
    Ok(u64::try_from(since.as_millis()).unwrap_or(u64::MAX))
}

/// Audit events, oldest first. The operator sees every event; a credential
/// with `*:admin` sees its organisation's.
#[utoipa::path(get, path = "/v1/container-registries/audit-events", tag = "audit",
    params(
        ("organisation" = Option<String>, Query, description = "only this organisation's (a credential always sees only its own)"),
        ("namespace" = Option<String>, Query),
        ("actor" = Option<String>, Query, description = "operator, anonymous, a credential id or name, credential:<id>, system or system:<job>"),
        ("action" = Option<String>, Query, description = "an action, or a prefix ending in '.' (tag., retention.)"),
        ("since" = Option<String>, Query, description = "from this time on (seconds since the epoch or RFC 3339)"),
        ("until" = Option<String>, Query, description = "before this time"),
        ("n" = Option<usize>, Query, description = "page size (at most 1000, default 100)"),
        ("last" = Option<String>, Query, description = "the `next` of the previous page"),
    ),
    responses(
        (status = 200, description = "events in commit order", body = AuditEventList),
        ErrorResponses,
    ))]
pub async fn list(
    State(st): State<Arc<ApiState>>,
    Extension(caller): Extension<Caller>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult {
    let mut filter = AuditFilter {
        organisation: q.get("organisation").cloned(),
        namespace: q.get("namespace").cloned(),
        actor: q.get("actor").cloned(),
        action: q.get("action").cloned(),
        since_ms: q.get("since").map(|v| time_param("since", v)).transpose()?,
        until_ms: q.get("until").map(|v| time_param("until", v)).transpose()?,
    };
    let n = match q.get("n") {
        None => DEFAULT_PAGE,
        Some(n) => n
            .parse::<usize>()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| ApiError::invalid(format!("n={n} is not a positive integer")))?
            .min(MAX_PAGE),
    };
    let last = q.get("last");
    if last.is_some_and(|l| tcr_raft::audit_cursor(l).is_none()) {
        return Err(ApiError::invalid(
            "last must be the `next` (or an event id) of an earlier page",
        ));
    }
    let state = st.meta.read().await?;
    match &caller.subject {
        Subject::Admin => {}
        Subject::Anonymous => return Err(ApiError::unauthenticated()),
        Subject::Credential(c) => {
            let org = filter.organisation.get_or_insert(c.organisation.clone());
            require_org_admin(state, &caller, org)?;
        }
    }
    let page = state.audit_events(&filter, last.map(String::as_str), n, SCAN_BUDGET)?;
    let events = page.events.into_iter().map(|(id, e)| view(id, e)).collect();
    Ok(Json(AuditEventList {
        events,
        next: page.next,
    })
    .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_seconds_or_rfc3339() {
        assert_eq!(
            time_param("since", "1700000000").unwrap(),
            1_700_000_000_000
        );
        assert_eq!(
            time_param("since", "2023-11-14T22:13:20Z").unwrap(),
            1_700_000_000_000
        );
        assert_eq!(
            time_param("since", "yesterday").unwrap_err().status,
            axum::http::StatusCode::BAD_REQUEST
        );
    }
}
