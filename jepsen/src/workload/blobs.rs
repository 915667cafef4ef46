//! No lost data: clients push unique blobs through random nodes; after the
//! faults are healed, every acknowledged blob is read from every node and
//! its digest verified.

use std::time::{Duration, Instant};

use rand::Rng;
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::{expect, perform, Ctx, Invocation};

pub const REPO: &str = "jepsen/blobs";

pub async fn op(ctx: &Ctx, process: i64) -> bool {
    let node = ctx.random_node();
    let size = rand::rng().random_range(1024..256 * 1024);
    let mut data = vec![0u8; size];
    rand::rng().fill(&mut data[..]);
    let digest = format!("sha256:{}", hex::encode(Sha256::digest(&data)));
    let inv = Invocation {
        f: "push",
        key: Some(digest.clone()),
        value: Some(size.to_string()),
        node,
    };
    let run = async {
        let r = ctx
            .http
            .post(ctx.url(node, &format!("/v2/{REPO}/blobs/uploads/?digest={digest}")))
            .bearer_auth(&ctx.token)
            .body(data)
            .send()
            .await;
        expect(r, reqwest::StatusCode::CREATED).await
    };
    perform(ctx, "blobs", process, inv, run).await
}

#[derive(Debug, Default, Serialize)]
pub struct Verification {
    pub acknowledged: usize,
    /// Acknowledged blobs some node could not serve at all.
    pub lost: Vec<String>,
    /// Acknowledged blobs some node served with the wrong bytes.
    pub corrupt: Vec<String>,
    pub reads: usize,
}

/// How one node served one blob in the end.
enum Served {
    Intact,
    Corrupt,
    Missing,
}

async fn read_one(ctx: &Ctx, node: usize, d: &str, deadline: Instant) -> (Served, usize) {
    let mut reads = 0;
    loop {
        reads += 1;
        let r = ctx
            .http
            .get(ctx.url(node, &format!("/v2/{REPO}/blobs/{d}")))
            .bearer_auth(&ctx.token)
            .send()
            .await;
        let body = match r {
            Ok(r) if r.status().is_success() => r.bytes().await.ok(),
            _ => None,
        };
        match body {
            Some(b) => {
                let got = format!("sha256:{}", hex::encode(Sha256::digest(&b)));
                return (
                    if got == d {
                        Served::Intact
                    } else {
                        Served::Corrupt
                    },
                    reads,
                );
            }
            None if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            None => return (Served::Missing, reads),
        }
    }
}

/// Read every acknowledged blob from every node (16 reads at a time); a
/// read that fails is retried until `patience` runs out (a node may still
/// be catching up).
pub async fn verify(ctx: &Ctx, digests: &[String], patience: Duration) -> Verification {
    use futures::StreamExt;
    let deadline = Instant::now() + patience;
    let nodes = ctx.urls.len();
    let results: Vec<(String, Served, usize)> = futures::stream::iter(
        digests
            .iter()
            .flat_map(|d| (1..=nodes).map(move |n| (d.clone(), n))),
    )
    .map(|(d, node)| async move {
        let (served, reads) = read_one(ctx, node, &d, deadline).await;
        (d, served, reads)
    })
    .buffer_unordered(16)
    .collect()
    .await;
    let mut v = Verification {
        acknowledged: digests.len(),
        ..Verification::default()
    };
    for (d, served, reads) in results {
        v.reads += reads;
        let list = match served {
            Served::Intact => continue,
            Served::Corrupt => &mut v.corrupt,
            Served::Missing => &mut v.lost,
        };
        if !list.contains(&d) {
            list.push(d);
        }
    }
    v.lost.sort();
    v.corrupt.sort();
    v
}
