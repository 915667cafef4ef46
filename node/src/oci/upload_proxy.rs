//! Upload sessions live on the node that holds their staging file (the
//! upload id starts with its node id). A PATCH, PUT, GET or DELETE of a
//! session that reaches another node is passed to that node, streaming
//! both ways, with the client's headers (credentials included). It goes to
//! the owner's RPC port (`/v2/...` there runs the same router and checks),
//! so it travels under the nodes' mutual TLS.

use std::sync::OnceLock;
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderName, Method};
use axum::response::{IntoResponse, Response};
use futures::TryStreamExt;

use super::errors::{OciError, OciResult};
use crate::state::OciState;

/// The header a forwarding node names the client's address in. Only the
/// RPC port (where peers prove themselves under mutual TLS) believes it.
pub const CLIENT_ADDRESS: &str = "x-tcr-client-address";

/// The forwarded client address of a request that came from a peer.
pub fn forwarded_client(req: &mut Request) {
    let ip = req
        .headers_mut()
        .remove(CLIENT_ADDRESS)
        .and_then(|v| v.to_str().ok()?.parse().ok());
    if let Some(ip) = ip {
        req.extensions_mut()
            .insert(crate::auth::ForwardedClient(ip));
    }
}

/// The node an upload id names (`<node id>-<random>`).
pub fn session_node(id: &str) -> Option<u64> {
    id.split_once('-')?.0.parse().ok()
}

fn client() -> &'static reqwest::Client {
    static CLIENT: OnceLock<reqwest::Client> = OnceLock::new();
    // No read timeout: an upload body may be slow to come from its client.
    CLIENT.get_or_init(|| tcr_storage::cluster::peer_http::client(Duration::from_secs(5), None))
}

/// Headers that describe one hop, not the request.
fn hop_by_hop(name: &HeaderName) -> bool {
    name == header::HOST
        || name == header::CONNECTION
        || name == header::TRANSFER_ENCODING
        || name == header::TE
        || name == header::UPGRADE
        || name.as_str() == "keep-alive"
        || name.as_str() == "proxy-connection"
}

#[tracing::instrument(level = "debug", skip(st, req))]
pub async fn forward(st: &OciState, owner: u64, method: Method, req: Request) -> OciResult {
    let node = st
        .meta
        .raft()
        .metrics()
        .borrow()
        .membership_config
        .membership()
        .get_node(&owner)
        .cloned();
    let Some(node) = node else {
        return Err(OciError::blob_upload_unknown(format!(
            "the upload session belongs to node {owner}, which is not a member"
        )));
    };
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_default();
    let url = format!(
        "{}://{}{path}",
        tcr_storage::cluster::peer_http::scheme(),
        node.rpc_addr
    );
    let mut out = client().request(method, &url);
    for (name, value) in req.headers() {
        if !hop_by_hop(name) && name != CLIENT_ADDRESS {
            out = out.header(name, value);
        }
    }
    // The owner rate-limits and audits the client, not this node.
    if let Some(ip) = crate::auth::peer_ip(&req) {
        out = out.header(CLIENT_ADDRESS, ip.to_string());
    }
    let body = req.into_body().into_data_stream();
    let resp = out
        .body(reqwest::Body::wrap_stream(body))
        .send()
        .await
        .map_err(|e| {
            OciError::unavailable(format!(
                "node {owner}, which holds this upload session, is unreachable: {e}"
            ))
            .with_header("retry-after", "1")
        })?;
    let mut back = Response::builder().status(resp.status().as_u16());
    for (name, value) in resp.headers() {
        if !hop_by_hop(name) {
            back = back.header(name.as_str(), value.as_bytes());
        }
    }
    let stream = resp.bytes_stream().map_err(std::io::Error::other);
    back.body(Body::from_stream(stream))
        .map_err(|e| OciError::internal(format!("relaying node {owner}'s answer: {e}")))
        .map(IntoResponse::into_response)
}
