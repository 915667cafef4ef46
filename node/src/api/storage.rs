//! Where a blob's copies belong and whether this node holds one; the
//! storage loop's reports, this node's and every member's.

use crate::api::errors::ErrorResponses;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::response::IntoResponse;
use axum::Json;
use serde_json::json;
use tcr_storage::Digest;

use super::errors::{ApiError, ApiResult};
use crate::state::ApiState;

#[utoipa::path(get, path = "/v1/container-registries/storage/blobs/{digest}", tag = "operator", description = "where a blob is stored (operator only)",
    params(("digest" = String, Path)),
    responses(
        (status = 200, description = "a JSON document", body = Object),
        ErrorResponses,
    ))]
pub async fn blob(State(st): State<Arc<ApiState>>, Path(digest): Path<String>) -> ApiResult {
    let d: Digest = digest
        .parse()
        .map_err(|e| ApiError::invalid(format!("{e}")))?;
    let reader = st.meta.reader();
    let record = reader.blob(&d.to_string())?;
    let placement = st.replicas.placement(&d);
    let local = st.blobs.stat(&d).await.ok().flatten().is_some();
    Ok(Json(json!({
        "digest": d.to_string(),
        "committed": record.is_some(),
        "size": record.map(|r| r.size),
        "owners": placement.owners.iter().map(|(id, _)| id).collect::<Vec<_>>(),
        "heldHere": local,
    }))
    .into_response())
}

/// This node's storage loop: what its last pass found and did.
#[utoipa::path(get, path = "/v1/container-registries/storage", tag = "operator", description = "this node's storage report (operator only)",
    responses(
        (status = 200, description = "a JSON document", body = Object),
        ErrorResponses,
    ))]
pub async fn status(State(st): State<Arc<ApiState>>) -> ApiResult {
    let report = st.reconciler.report();
    Ok(Json(json!({"nodeId": st.node_id, "storage": report})).into_response())
}

/// How long a member has to send its report.
const REPORT_DEADLINE: Duration = Duration::from_secs(3);

/// Every member's storage report: this node's own, the others' asked over
/// the peer port (mutual TLS when configured), all at once, each within
/// `REPORT_DEADLINE`; a member that does not answer is listed with why.
#[utoipa::path(get, path = "/v1/container-registries/storage/members", tag = "operator", description = "every member's storage report (operator only)",
    responses(
        (status = 200, description = "a JSON document", body = Object),
        ErrorResponses,
    ))]
pub async fn members(State(st): State<Arc<ApiState>>) -> ApiResult {
    let metrics = st.meta.raft().metrics().borrow().clone();
    let nodes: Vec<(u64, String)> = metrics
        .membership_config
        .membership()
        .nodes()
        .map(|(id, n)| (*id, n.rpc_addr.clone()))
        .collect();
    let asks = nodes.into_iter().map(|(id, addr)| {
        let st = st.clone();
        async move {
            if id == st.node_id {
                return json!({"nodeId": id, "rpcAddr": addr, "storage": st.reconciler.report()});
            }
            let answer = match st.replicas.channel(&addr) {
                None => Err(format!("no connection to {addr}")),
                Some(ch) => {
                    let asked = tcr_storage::cluster::replication::report(ch);
                    match tokio::time::timeout(REPORT_DEADLINE, asked).await {
                        Ok(r) => r.map_err(|e| e.to_string()),
                        Err(_) => Err(format!("no answer within {} s", REPORT_DEADLINE.as_secs())),
                    }
                }
            };
            match answer {
                Ok(report) => json!({"nodeId": id, "rpcAddr": addr, "storage": report}),
                Err(e) => json!({"nodeId": id, "rpcAddr": addr, "error": e}),
            }
        }
    });
    let nodes = futures::future::join_all(asks).await;
    Ok(Json(json!({ "nodes": nodes })).into_response())
}

/// Start a storage pass (repair, rebalance, scrub) on this node now.
#[utoipa::path(post, path = "/v1/container-registries/storage/passes", tag = "operator", description = "start a storage pass now (operator only)",
    responses(
        (status = 200, description = "a JSON document", body = Object),
        ErrorResponses,
    ))]
pub async fn run_pass(State(st): State<Arc<ApiState>>) -> ApiResult {
    st.reconciler.wake();
    Ok((
        axum::http::StatusCode::ACCEPTED,
        Json(json!({"nodeId": st.node_id, "started": true})),
    )
        .into_response())
}
