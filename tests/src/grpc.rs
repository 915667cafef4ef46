//! Raw gRPC calls to a node's RPC port, for tests that send what no real
//! peer would: hand-made payloads, lying lengths, the wrong certificate.

use bytes::Bytes;

/// A `tcr.raft.v1.Payload { bytes data = 1; }` in protobuf, framed as one
/// gRPC message (uncompressed flag, big-endian length, message).
pub fn frame(data: &[u8]) -> Vec<u8> {
    let mut msg = vec![0x0a];
    let mut n = data.len() as u64;
    loop {
        let b = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            msg.push(b);
            break;
        }
        msg.push(b | 0x80);
    }
    msg.extend_from_slice(data);
    let mut out = vec![0u8];
    out.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    out.extend_from_slice(&msg);
    out
}

/// How a call ended, as far as the headers tell: an error comes back
/// "trailers-only", its `grpc-status` among the headers; a success has
/// none there (its status follows the body).
#[derive(Debug)]
pub struct Reply {
    pub http: u16,
    pub grpc_status: Option<String>,
    pub message: Option<String>,
    pub body: Bytes,
}

/// Every method a node's RPC port serves.
pub const METHODS: &[&str] = &[
    "/tcr.raft.v1.RaftService/AppendEntries",
    "/tcr.raft.v1.RaftService/Vote",
    "/tcr.raft.v1.RaftService/InstallSnapshot",
    "/tcr.raft.v1.ClusterService/Write",
    "/tcr.raft.v1.ClusterService/ReadIndex",
    "/tcr.raft.v1.ClusterService/Join",
    "/tcr.raft.v1.ClusterService/Elect",
    "/tcr.raft.v1.ClusterService/Assign",
    "/tcr.raft.v1.ClusterService/PreVote",
];

/// POST one framed payload to `base` + `method` over HTTP/2 (`client`
/// must speak h2: `http2_prior_knowledge`).
pub async fn call(
    client: &reqwest::Client,
    base: &str,
    method: &str,
    payload: &[u8],
) -> Result<Reply, reqwest::Error> {
    let resp = client
        .post(format!("{base}{method}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(frame(payload))
        .send()
        .await?;
    let header = |name: &str| {
        resp.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let (http, grpc_status, message) = (
        resp.status().as_u16(),
        header("grpc-status"),
        header("grpc-message"),
    );
    let body = resp.bytes().await?;
    Ok(Reply {
        http,
        grpc_status,
        message,
        body,
    })
}

/// bincode (standard: varint) of a `JoinRequest`/`AssignRequest`:
/// an id, then `NodeInfo { rpc_addr, http_addr, weight }`.
pub fn member_request(id: u8, rpc_addr: &str, http_addr: &str) -> Vec<u8> {
    assert!(id < 251 && rpc_addr.len() < 251 && http_addr.len() < 251);
    let mut out = vec![id, rpc_addr.len() as u8];
    out.extend_from_slice(rpc_addr.as_bytes());
    out.push(http_addr.len() as u8);
    out.extend_from_slice(http_addr.as_bytes());
    out.push(100);
    out
}
