//! Blobs stream: pushing and pulling a large blob keeps the node's memory
//! flat (no request path holds a whole blob).

use futures::StreamExt;
use sha2::{Digest, Sha256};
use tcr_tests::harness::Node;

const SIZE: u64 = 768 << 20;
const BLOCK: usize = 1 << 20;

fn block(i: u64) -> bytes::Bytes {
    let mut b = vec![(i % 251) as u8; BLOCK];
    b[..8].copy_from_slice(&i.to_le_bytes());
    bytes::Bytes::from(b)
}

#[tokio::test]
async fn large_blob_push_and_pull_stay_under_150_mib_rss() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path()).await;
    node.create_namespace("acme", "private").await;
    let blocks = SIZE / BLOCK as u64;
    let mut h = Sha256::new();
    for i in 0..blocks {
        h.update(block(i));
    }
    let d = format!("sha256:{}", hex::encode(h.finalize()));

    let c = reqwest::Client::new();
    let body = reqwest::Body::wrap_stream(futures::stream::iter(
        (0..blocks).map(|i| Ok::<_, std::io::Error>(block(i))),
    ));
    let resp = c
        .post(format!(
            "{}/v2/acme/big/blobs/uploads/?digest={d}",
            node.url()
        ))
        .header("content-length", SIZE)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201, "{:?}", resp.text().await);

    let resp = c
        .get(format!("{}/v2/acme/big/blobs/{d}", node.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut h = Sha256::new();
    let mut n = 0u64;
    let mut s = resp.bytes_stream();
    while let Some(chunk) = s.next().await {
        let chunk = chunk.unwrap();
        n += chunk.len() as u64;
        h.update(&chunk);
    }
    assert_eq!(n, SIZE);
    assert_eq!(format!("sha256:{}", hex::encode(h.finalize())), d);
    let peak = node.peak_rss();
    eprintln!(
        "peak RSS after a {} MiB push and pull: {} MiB",
        SIZE >> 20,
        peak >> 20
    );
    assert!(peak < 150 << 20, "peak RSS {} MiB", peak >> 20);
}
