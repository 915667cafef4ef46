//! Blobs across a three-node cluster with replication factor 2: each blob
//! pushed through any node ends up on exactly its two owners (checked in
//! the data dirs), is pulled byte-identical through every node, survives
//! the kill -9 of any one node, and a corrupt copy is never served whole.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rand::{Rng, SeedableRng};
use reqwest::StatusCode;
use serde_json::Value;
use tcr_tests::harness::{bin, wait_for, Node};
use tcr_tests::images::digest;
use tcr_tests::oci::Oci;

fn blob_path(node: &Node, d: &str) -> PathBuf {
    let hex = d.strip_prefix("sha256:").unwrap();
    node.dir.join("data/blobs/sha256").join(&hex[..2]).join(hex)
}

fn holders(nodes: &[Node], d: &str) -> Vec<u64> {
    (0..nodes.len())
        .filter(|i| blob_path(&nodes[*i], d).exists())
        .map(|i| i as u64 + 1)
        .collect()
}

async fn json(url: &str) -> Option<Value> {
    reqwest::get(url).await.ok()?.json().await.ok()
}

async fn owners(node: &Node, d: &str) -> Vec<u64> {
    let v = json(&format!(
        "{}/v1/container-registries/storage/blobs/{d}",
        node.url()
    ))
    .await
    .unwrap();
    let mut o: Vec<u64> = v["owners"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i.as_u64().unwrap())
        .collect();
    o.sort();
    o
}

async fn pull(node: &Node, d: &str) -> Result<Vec<u8>, String> {
    let resp = reqwest::get(format!("{}/v2/acme/app/blobs/{d}", node.url()))
        .await
        .map_err(|e| e.to_string())?;
    if resp.status() != StatusCode::OK {
        return Err(format!("status {}", resp.status()));
    }
    resp.bytes()
        .await
        .map(|b| b.to_vec())
        .map_err(|e| e.to_string())
}

async fn start_cluster(dir: &Path) -> Vec<Node> {
    let n1 = Node::start_with(&dir.join("n1"), &[], &["--node-id", "1"]).await;
    let join = n1.rpc();
    let mut nodes = vec![n1];
    for id in 2..=3 {
        let id_s = id.to_string();
        nodes.push(
            Node::start_with(
                &dir.join(format!("n{id}")),
                &[],
                &["--node-id", &id_s, "--join", &join],
            )
            .await,
        );
    }
    let status = format!("{}/v1/container-registries/cluster", nodes[0].url());
    wait_for("three voters", Duration::from_secs(60), || async {
        json(&status).await.is_some_and(|s| {
            s["members"]
                .as_array()
                .is_some_and(|m| m.iter().filter(|m| m["role"] == "voter").count() == 3)
        })
    })
    .await;
    let out = std::process::Command::new(bin("tcr"))
        .args([
            "--endpoint",
            &nodes[0].url(),
            "cluster",
            "set",
            "replication-factor",
            "2",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for n in &nodes {
        let url = format!("{}/v1/container-registries/cluster", n.url());
        wait_for("R=2 on every node", Duration::from_secs(10), || async {
            json(&url)
                .await
                .is_some_and(|s| s["replicationFactor"] == 2)
        })
        .await;
    }
    nodes[0].create_namespace("acme", "private").await;
    nodes
}

#[tokio::test]
async fn blobs_live_on_their_owners_and_are_pulled_through_any_node() {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = start_cluster(dir.path()).await;
    let mut rng = rand::rngs::StdRng::seed_from_u64(42);
    // 200 blobs: mostly small, some of a few MiB, five large (up to 64 MiB).
    let sizes: Vec<usize> = (0..200)
        .map(|i| match i {
            0 => 0,
            i if i % 40 == 1 => [16, 24, 32, 48, 64][i / 40] << 20,
            i if i % 10 == 2 => rng.random_range(1 << 20..8 << 20),
            _ => rng.random_range(1..256 << 10),
        })
        .collect();
    let mut pushed = Vec::new();
    for (i, size) in sizes.iter().enumerate() {
        let mut data = vec![0u8; *size];
        rng.fill(&mut data[..]);
        let via = rng.random_range(0..3);
        let d = Oci::new(&nodes[via].url())
            .push_blob("acme/app", &data)
            .await;
        pushed.push((d, data.len(), digest(&data)));
        let _ = i;
    }

    // Exactly the two owners hold each blob (the node that took the upload
    // drops its copy once both owners have theirs).
    for (d, _, _) in &pushed {
        let want = owners(&nodes[0], d).await;
        assert_eq!(want.len(), 2, "{d}");
        for n in &nodes[1..] {
            assert_eq!(
                owners(n, d).await,
                want,
                "every node computes the same owners"
            );
        }
        wait_for(
            "copies on exactly the owners",
            Duration::from_secs(30),
            || {
                let ok = holders(&nodes, d) == want;
                async move { ok }
            },
        )
        .await;
    }

    // Every blob, through every node, byte-identical.
    for n in &nodes {
        for (d, len, _) in &pushed {
            let body = pull(n, d)
                .await
                .unwrap_or_else(|e| panic!("{d} via {}: {e}", n.url()));
            assert_eq!(body.len(), *len);
            assert_eq!(&digest(&body), d, "{d} via {}", n.url());
        }
    }

    // A range through a node without a copy.
    let (d, len, _) = pushed.iter().find(|(_, len, _)| *len > 1 << 20).unwrap();
    let outsider = (1..=3u64)
        .find(|id| !holders(&nodes, d).contains(id))
        .unwrap();
    let whole = pull(&nodes[outsider as usize - 1], d).await.unwrap();
    let resp = reqwest::Client::new()
        .get(format!(
            "{}/v2/acme/app/blobs/{d}",
            nodes[outsider as usize - 1].url()
        ))
        .header("range", "bytes=1000-1999")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(
        resp.headers()["content-range"],
        format!("bytes 1000-1999/{len}").as_str()
    );
    assert_eq!(resp.bytes().await.unwrap().as_ref(), &whole[1000..2000]);

    // kill -9 of any one node: the other two still serve every blob.
    nodes[1].kill9();
    for n in [&nodes[0], &nodes[2]] {
        for (d, len, _) in &pushed {
            let body = pull(n, d)
                .await
                .unwrap_or_else(|e| panic!("{d} via {} with node 2 down: {e}", n.url()));
            assert_eq!(body.len(), *len);
            assert_eq!(&digest(&body), d);
        }
    }
}

#[tokio::test]
async fn a_corrupt_copy_is_never_served_whole_through_another_node() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = start_cluster(dir.path()).await;
    let data: Vec<u8> = (0..3u32 << 20).map(|i| (i % 251) as u8).collect();
    let d = Oci::new(&nodes[0].url()).push_blob("acme/app", &data).await;
    let want = owners(&nodes[0], &d).await;
    wait_for(
        "copies on exactly the owners",
        Duration::from_secs(30),
        || {
            let ok = holders(&nodes, &d) == want;
            async move { ok }
        },
    )
    .await;
    let outsider = (1..=3u64).find(|id| !want.contains(id)).unwrap();
    // Flip one byte in the middle of both owners' copies (same size).
    for id in &want {
        let p = blob_path(&nodes[*id as usize - 1], &d);
        let mut bytes = std::fs::read(&p).unwrap();
        bytes[1 << 20] ^= 0xff;
        std::fs::write(&p, bytes).unwrap();
    }
    match pull(&nodes[outsider as usize - 1], &d).await {
        Ok(body) => panic!(
            "a corrupt copy was served whole ({} bytes, digest {})",
            body.len(),
            digest(&body)
        ),
        Err(e) => eprintln!("corrupt copy cut off: {e}"),
    }
}
