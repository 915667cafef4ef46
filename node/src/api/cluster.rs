//! Cluster status and membership. Membership changes run on the leader; a
//! follower answers 307 with the leader's address (clients follow it).

use crate::api::errors::ErrorResponses;
use std::collections::BTreeSet;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{OriginalUri, Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use openraft::ChangeMembers;
use serde::Deserialize;
use serde_json::json;
use tcr_raft::JoinReply;
use tcr_raft::NodeInfo;
use tcr_raft::TransferReply;

use super::errors::{parse_json, ApiError, ApiResult};
use crate::state::ApiState;

#[utoipa::path(get, path = "/v1/container-registries/cluster", tag = "operator", description = "cluster status, members, replication (operator only)",
    responses(
        (status = 200, description = "a JSON document", body = Object),
        ErrorResponses,
    ))]
pub async fn status(State(st): State<Arc<ApiState>>) -> ApiResult {
    let m = st.meta.raft().metrics().borrow().clone();
    let membership = m.membership_config.membership();
    let voters: BTreeSet<u64> = membership.voter_ids().collect();
    let last = m.last_log_index.unwrap_or(0);
    let members: Vec<_> = membership
        .nodes()
        .map(|(id, node)| {
            let matched = m
                .replication
                .as_ref()
                .and_then(|r| r.get(id).cloned())
                .map(|l| l.map(|l| l.index).unwrap_or(0));
            json!({
                "id": id,
                "role": if voters.contains(id) { "voter" } else { "learner" },
                "rpcAddr": node.rpc_addr,
                "httpAddr": node.http_addr,
                "weight": node.weight,
                "matchedIndex": matched,
                "lag": matched.map(|i| last.saturating_sub(i)),
            })
        })
        .collect();
    let digest = st.meta.reader().state_digest()?;
    let (factor, set) = replication(st.meta.reader(), voters.len())?;
    Ok(Json(json!({
        "nodeId": m.id,
        "state": format!("{:?}", m.state),
        "leader": m.current_leader,
        // Set while this node leads without a quorum's acknowledgement
        // (cut off by a partition): it serves nothing until it hears from
        // a quorum again or learns of its successor.
        "leaderLeaseLapsedMs": st.meta.consensus().leadership_lapsed().map(|d| d.as_millis() as u64),
        "term": m.current_term,
        "lastLogIndex": m.last_log_index,
        "appliedIndex": m.last_applied.map(|l| l.index),
        "snapshotIndex": m.snapshot.map(|l| l.index),
        "stateDigest": digest,
        "replicationFactor": factor,
        "replicationFactorSet": set,
        "writeQuorum": tcr_storage::placement::write_quorum(factor),
        "members": members,
    }))
    .into_response())
}

/// `None` when this node leads; otherwise a 307 to the leader (or 503).
pub(crate) fn redirect_to_leader(st: &ApiState, uri: &axum::http::Uri) -> Option<Response> {
    let m = st.meta.raft().metrics().borrow().clone();
    match m.current_leader {
        Some(l) if l == st.node_id => None,
        Some(l) => {
            let node = m.membership_config.membership().get_node(&l).cloned();
            Some(match node {
                Some(n) => {
                    // Path and query only: over HTTP/2 the request's URI
                    // is absolute (scheme and authority of this node).
                    let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
                    let to = format!("{}://{}{path}", st.http_scheme, n.http_addr);
                    (StatusCode::TEMPORARY_REDIRECT, [(header::LOCATION, to)]).into_response()
                }
                None => ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "UNAVAILABLE",
                    "the leader's address is unknown",
                )
                .into_response(),
            })
        }
        None => Some(
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "UNAVAILABLE",
                "no leader is elected",
            )
            .into_response(),
        ),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AddMember {
    pub id: u64,
    pub rpc_addr: String,
    pub http_addr: String,
    /// Blob placement weight (relative capacity); 100 when absent.
    pub weight: Option<u32>,
}

#[utoipa::path(post, path = "/v1/container-registries/cluster/members", tag = "operator", description = "add a member (learner, caught up, voter) (operator only)",
    request_body = Object,
    responses(
        (status = 200, description = "a JSON document", body = Object),
        ErrorResponses,
    ))]
pub async fn add_member(
    State(st): State<Arc<ApiState>>,
    OriginalUri(uri): OriginalUri,
    body: Bytes,
) -> ApiResult {
    let req: AddMember = parse_json(&body)?;
    if req.id == 0 {
        return Err(ApiError::invalid("member id must be a positive integer"));
    }
    if let Some(r) = redirect_to_leader(&st, &uri) {
        return Ok(r);
    }
    let node = NodeInfo {
        rpc_addr: req.rpc_addr,
        http_addr: req.http_addr,
        weight: req.weight.unwrap_or(tcr_raft::DEFAULT_WEIGHT),
    };
    match st.meta.consensus().add_voter(req.id, node).await {
        JoinReply::Joined => {
            Ok((StatusCode::OK, Json(json!({"id": req.id, "role": "voter"}))).into_response())
        }
        JoinReply::NotLeader(_) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "UNAVAILABLE",
            "leadership changed; retry",
        )),
        JoinReply::Failed(e) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "MEMBERSHIP_CHANGE_FAILED",
            e,
        )),
    }
}

#[utoipa::path(delete, path = "/v1/container-registries/cluster/members/{id}", tag = "operator", description = "remove a member (operator only)",
    params(("id" = u64, Path)),
    responses(
        (status = 200, description = "a JSON document", body = Object),
        ErrorResponses,
    ))]
pub async fn remove_member(
    State(st): State<Arc<ApiState>>,
    OriginalUri(uri): OriginalUri,
    Path(id): Path<u64>,
) -> ApiResult {
    if let Some(r) = redirect_to_leader(&st, &uri) {
        return Ok(r);
    }
    let membership = committed_membership(&st);
    let voters: BTreeSet<u64> = membership.voter_ids().collect();
    let change = if voters.contains(&id) {
        if voters.len() == 1 {
            return Err(ApiError::invalid(format!(
                "node {id} is the last voter; a cluster cannot remove its last voter"
            )));
        }
        ChangeMembers::RemoveVoters(BTreeSet::from([id]))
    } else if membership.get_node(&id).is_some() {
        ChangeMembers::RemoveNodes(BTreeSet::from([id]))
    } else {
        return Err(ApiError::not_found(format!("node {id} is not a member")));
    };
    let remaining = voters.len() - usize::from(voters.contains(&id));
    // A replication factor the operator set cannot exceed the voters:
    // there would be fewer owners than copies asked for.
    if let Some(factor) = st.meta.reader().replication_factor()? {
        if voters.contains(&id) && (factor as usize) > remaining {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "FAILED_PRECONDITION",
                format!(
                    "removing node {id} would leave {remaining} voter(s), fewer than the \
                     replication factor {factor}; lower it first (tcr cluster set replication-factor {remaining})"
                ),
            ));
        }
    }
    change_membership(&st, change).await?;
    // A majority of n voters tolerates (n-1)/2 failures.
    let tolerance = (remaining - 1) / 2;
    let warning = (tolerance == 0).then(|| {
        format!("{remaining} voter(s) left: the cluster no longer tolerates the loss of any node")
    });
    Ok(Json(json!({"removed": id, "voters": remaining, "faultTolerance": tolerance, "warning": warning})).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateMember {
    /// Blob placement weight (relative capacity); 0 owns nothing.
    pub weight: u32,
}

/// Change a member's placement weight (a disk was grown or shrunk). The
/// storage loops then move the blobs whose owners changed, as after a
/// membership change. Addresses stay as they are: only the weight of an
/// existing member is rewritten, which is what makes `SetNodes` safe here.
#[utoipa::path(patch, path = "/v1/container-registries/cluster/members/{id}", tag = "operator", description = "change a member's placement weight (operator only)",
    params(("id" = u64, Path)),
    request_body = Object,
    responses(
        (status = 200, description = "a JSON document", body = Object),
        ErrorResponses,
    ))]
pub async fn update_member(
    State(st): State<Arc<ApiState>>,
    OriginalUri(uri): OriginalUri,
    Path(id): Path<u64>,
    body: Bytes,
) -> ApiResult {
    let req: UpdateMember = parse_json(&body)?;
    if let Some(r) = redirect_to_leader(&st, &uri) {
        return Ok(r);
    }
    let membership = committed_membership(&st);
    let Some(node) = membership.get_node(&id) else {
        return Err(ApiError::not_found(format!("node {id} is not a member")));
    };
    let others_weigh = membership
        .voter_ids()
        .filter(|v| *v != id)
        .any(|v| membership.get_node(&v).is_some_and(|n| n.weight > 0));
    if req.weight == 0 && membership.voter_ids().any(|v| v == id) && !others_weigh {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "FAILED_PRECONDITION",
            format!(
                "node {id} is the only voter with a weight above 0; no blob would have an owner"
            ),
        ));
    }
    let previous = node.weight;
    let node = NodeInfo {
        weight: req.weight,
        ..node.clone()
    };
    let change = ChangeMembers::SetNodes(std::collections::BTreeMap::from([(id, node)]));
    change_membership(&st, change).await?;
    Ok(Json(json!({"id": id, "weight": req.weight, "previousWeight": previous})).into_response())
}

/// The membership this node has seen committed.
fn committed_membership(st: &ApiState) -> openraft::Membership<u64, NodeInfo> {
    st.meta
        .raft()
        .metrics()
        .borrow()
        .membership_config
        .membership()
        .clone()
}

async fn change_membership(
    st: &ApiState,
    change: ChangeMembers<u64, NodeInfo>,
) -> Result<(), ApiError> {
    st.meta
        .raft()
        .change_membership(change, false)
        .await
        .map(|_| ())
        .map_err(|e| {
            ApiError::new(
                StatusCode::CONFLICT,
                "MEMBERSHIP_CHANGE_FAILED",
                e.to_string(),
            )
        })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransferLeader {
    pub to: u64,
}

/// Hand leadership to another voter (planned maintenance of the leader's
/// host). Writes pause for about one election timeout while it happens.
#[utoipa::path(post, path = "/v1/container-registries/cluster/leader/transfer", tag = "operator", description = "hand leadership to a voter (operator only)",
    request_body = Object,
    responses(
        (status = 200, description = "a JSON document", body = Object),
        ErrorResponses,
    ))]
pub async fn transfer_leader(
    State(st): State<Arc<ApiState>>,
    OriginalUri(uri): OriginalUri,
    body: Bytes,
) -> ApiResult {
    let req: TransferLeader = parse_json(&body)?;
    if let Some(r) = redirect_to_leader(&st, &uri) {
        return Ok(r);
    }
    let voters = st.meta.consensus().voters();
    if !voters.contains(&req.to) {
        return Err(ApiError::not_found(format!(
            "node {} is not a voter of this cluster",
            req.to
        )));
    }
    match st.meta.transfer_leadership(req.to).await {
        TransferReply::Transferred { leader, term } => {
            Ok(Json(json!({"leader": leader, "term": term})).into_response())
        }
        TransferReply::NotLeader(_) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "UNAVAILABLE",
            "leadership changed; retry",
        )),
        TransferReply::Failed(e) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "LEADER_TRANSFER_FAILED",
            e,
        )),
    }
}

/// The effective replication factor (the setting, capped at the voters;
/// else the default for the membership) and whether it was set.
fn replication(reader: &tcr_raft::StateReader, voters: usize) -> Result<(usize, bool), ApiError> {
    let set = reader.replication_factor()?;
    let factor = match set {
        Some(f) => (f as usize).min(voters.max(1)),
        None => tcr_storage::placement::default_replication(voters),
    };
    Ok((factor, set.is_some()))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Settings {
    pub replication_factor: Option<u32>,
    /// Repair and rebalance bandwidth per node in bytes/s (0: no limit).
    pub rebalance_bytes_per_sec: Option<u64>,
    /// Garbage collection grace period in seconds.
    pub gc_grace_period_secs: Option<u64>,
    /// Seconds between scheduled retention runs (0: only on demand).
    pub retention_interval_secs: Option<u64>,
}

/// Change cluster settings. A replication factor above the number of
/// voters is refused: there would be fewer owners than copies asked for.
#[utoipa::path(patch, path = "/v1/container-registries/cluster/settings", tag = "operator", description = "cluster settings (replicationFactor, rebalanceBytesPerSec, gcGracePeriodSecs, retentionIntervalSecs) (operator only)",
    request_body = Object,
    responses(
        (status = 200, description = "a JSON document", body = Object),
        ErrorResponses,
    ))]
pub async fn update_settings(State(st): State<Arc<ApiState>>, body: Bytes) -> ApiResult {
    let req: Settings = parse_json(&body)?;
    if let Some(factor) = req.replication_factor {
        let voters = st.meta.consensus().voters().len();
        if factor == 0 {
            return Err(ApiError::invalid(
                "the replication factor must be at least 1",
            ));
        }
        if factor as usize > voters {
            return Err(ApiError::invalid(format!(
                "replication factor {factor} exceeds the {voters} voter(s) of this cluster; add members first"
            )));
        }
        st.meta
            .write(tcr_raft::Command::SetReplicationFactor { factor })
            .await?;
    }
    if req.rebalance_bytes_per_sec.is_some()
        || req.gc_grace_period_secs.is_some()
        || req.retention_interval_secs.is_some()
    {
        st.meta
            .write(tcr_raft::Command::SetStorageSettings {
                rebalance_bytes_per_sec: req.rebalance_bytes_per_sec,
                gc_grace_secs: req.gc_grace_period_secs,
                retention_interval_secs: req.retention_interval_secs,
            })
            .await?;
    }
    let voters = st.meta.consensus().voters().len();
    // A linearizable read: this node may apply the write a beat after the leader.
    let state = st.meta.read().await?;
    let (factor, set) = replication(state, voters)?;
    Ok(Json(json!({
        "replicationFactor": factor,
        "replicationFactorSet": set,
        "writeQuorum": tcr_storage::placement::write_quorum(factor),
        "rebalanceBytesPerSec": state.rebalance_bytes_per_sec()?,
        "gcGracePeriodSecs": state.gc_grace_secs()?.unwrap_or(st.jobs.gc_grace_secs),
        "retentionIntervalSecs": crate::jobs::retention::interval_secs(&st.jobs)?,
    }))
    .into_response())
}
