//! Online garbage collection on a three-node cluster: images are deleted
//! and collected while other clients keep pushing images that share layers
//! with them. Afterwards every acknowledged, still-tagged image pulls
//! byte-identical through every node, and the collected blobs' files are
//! gone from every data dir.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use reqwest::{Client, StatusCode};
use serde_json::{json, Value};
use tcr_tests::harness::{cluster, tcr_json, wait_for, Node};
use tcr_tests::images::{digest, OCI_MANIFEST};

struct Img {
    tag: String,
    manifest: Vec<u8>,
    blobs: Vec<Vec<u8>>,
}

fn image(tag: &str, blobs: Vec<Vec<u8>>) -> Img {
    let desc =
        |b: &Vec<u8>, mt: &str| json!({"mediaType": mt, "digest": digest(b), "size": b.len()});
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": desc(&blobs[0], "application/vnd.oci.image.config.v1+json"),
        "layers": blobs[1..].iter().map(|b| desc(b, "application/vnd.oci.image.layer.v1.tar")).collect::<Vec<_>>(),
    }))
    .unwrap();
    Img {
        tag: tag.to_string(),
        manifest,
        blobs,
    }
}

/// Push as docker does: HEAD each blob, upload the missing ones, PUT the
/// manifest. A manifest refused because a blob was collected in between
/// gets its blobs uploaded again. Returns whether the push was acknowledged.
async fn push(c: &Client, base: &str, repo: &str, img: &Img) -> bool {
    for _attempt in 0..5 {
        for b in &img.blobs {
            let d = digest(b);
            let head = c.head(format!("{base}/v2/{repo}/blobs/{d}")).send().await;
            if head.is_ok_and(|r| r.status() == StatusCode::OK) {
                continue;
            }
            let r = c
                .post(format!("{base}/v2/{repo}/blobs/uploads/?digest={d}"))
                .body(b.clone())
                .send()
                .await;
            if !r.is_ok_and(|r| r.status() == StatusCode::CREATED) {
                return false;
            }
        }
        let r = c
            .put(format!("{base}/v2/{repo}/manifests/{}", img.tag))
            .header("content-type", OCI_MANIFEST)
            .body(img.manifest.clone())
            .send()
            .await;
        match r {
            Ok(r) if r.status() == StatusCode::CREATED => return true,
            Ok(r) if r.status() == StatusCode::BAD_REQUEST => {
                let v: Value = r.json().await.unwrap_or_default();
                assert_eq!(v["errors"][0]["code"], "MANIFEST_BLOB_UNKNOWN", "{v}");
                // A layer was collected between the HEAD and the PUT.
            }
            _ => return false,
        }
    }
    false
}

fn blob_file(node: &Node, d: &str) -> std::path::PathBuf {
    let hex = d.strip_prefix("sha256:").unwrap();
    node.dir.join("data/blobs/sha256").join(&hex[..2]).join(hex)
}

#[tokio::test]
async fn collection_while_pushing_keeps_every_acknowledged_image() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = cluster(
        dir.path(),
        3,
        &[],
        &[
            "--orphan-grace-secs",
            "1",
            "--storage-interval-secs",
            "1",
            "--gc-interval-secs",
            "0",
        ],
    )
    .await;
    nodes[0].create_namespace("g", "private").await;
    let urls: Vec<String> = nodes.iter().map(Node::url).collect();
    let c = Client::new();
    let shared = vec![b'S'; 2000];
    let unique: Vec<Vec<u8>> = (0..8).map(|i| vec![b'a' + i as u8; 3000 + i]).collect();
    let old: Vec<Img> = (0..8)
        .map(|i| {
            let config = format!("{{\"old\":{i}}}").into_bytes();
            image(
                &format!("old-{i}"),
                vec![config, shared.clone(), unique[i].clone()],
            )
        })
        .collect();
    for (i, img) in old.iter().enumerate() {
        assert!(push(&c, &urls[i % 3], "g/app", img).await);
    }
    // Delete the first five images: their configs and unique layers lose
    // their last reference; the shared layer does not.
    for img in &old[..5] {
        let r = c
            .delete(format!(
                "{}/v2/g/app/manifests/{}",
                urls[1],
                digest(&img.manifest)
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::ACCEPTED);
    }
    grace_and_bandwidth_are_cluster_settings(&urls);

    // Pushers re-use the deleted images' layers while the collection runs.
    let stop = Arc::new(AtomicBool::new(false));
    let pushers: Vec<_> = (0..2)
        .map(|p| {
            let (c, urls, shared, unique, stop) = (
                c.clone(),
                urls.clone(),
                shared.clone(),
                unique.clone(),
                stop.clone(),
            );
            tokio::spawn(async move {
                let mut acked = Vec::new();
                let mut j = 0;
                while !stop.load(Ordering::Relaxed) || j < 4 {
                    let config = format!("{{\"new\":{p},\"j\":{j}}}").into_bytes();
                    let img = image(
                        &format!("new-{p}-{j}"),
                        vec![config, shared.clone(), unique[j % 5].clone()],
                    );
                    if push(&c, &urls[(p + j) % 3], "g/app", &img).await {
                        acked.push(img);
                    }
                    j += 1;
                }
                acked
            })
        })
        .collect();
    let ran = tcr_json(&urls[2], &["gc", "run", "--grace-period", "0s"]);
    assert!(ran["collected"].as_u64().unwrap() >= 5, "{ran}");
    stop.store(true, Ordering::Relaxed);
    let mut acked: Vec<Img> = Vec::new();
    for p in pushers {
        acked.extend(p.await.unwrap());
    }
    assert!(
        acked.len() >= 8,
        "pushers acknowledged only {}",
        acked.len()
    );

    // Every acknowledged, still-tagged image is whole, through every node.
    let kept: Vec<&Img> = old[5..].iter().chain(acked.iter()).collect();
    every_image_is_whole_through_every_node(&c, &urls, &kept).await;
    // The deleted images' configs (never pushed again) are gone from every disk.
    let gone: Vec<String> = old[..5].iter().map(|i| digest(&i.blobs[0])).collect();
    wait_for(
        "collected blobs swept from every data dir",
        Duration::from_secs(30),
        || async {
            nodes
                .iter()
                .all(|n| gone.iter().all(|d| !blob_file(n, d).exists()))
        },
    )
    .await;
    for d in &gone {
        let r = c
            .head(format!("{}/v2/g/app/blobs/{d}", urls[0]))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
    }
    // The shared layer is still on its owners.
    assert!(nodes
        .iter()
        .any(|n| blob_file(n, &digest(&shared)).exists()));
    let status = tcr_json(&urls[0], &["gc", "status"]);
    assert!(
        status["last"]["collected"].as_u64().unwrap() >= 5,
        "{status}"
    );
    let swept: u64 = status["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["sweptBytes"].as_u64().unwrap_or(0))
        .sum();
    assert!(swept > 0, "{status}");
}

/// The grace period is a cluster setting (`--grace-period` overrides it
/// for one run); so is the rebalance bandwidth.
fn grace_and_bandwidth_are_cluster_settings(urls: &[String]) {
    // The grace period is a cluster setting: with an hour, nothing this
    // young is a candidate; `--grace-period` overrides it for one run.
    let set = tcr_json(&urls[1], &["cluster", "set", "gc-grace-period", "1h"]);
    assert_eq!(set["gcGracePeriodSecs"], 3600, "{set}");
    let young = tcr_json(&urls[0], &["gc", "run", "--dry-run"]);
    assert_eq!(
        (
            young["candidates"].as_u64(),
            young["gracePeriodSecs"].as_u64()
        ),
        (Some(0), Some(3600)),
        "{young}"
    );
    let set = tcr_json(&urls[2], &["cluster", "set", "rebalance-bandwidth", "50MB"]);
    assert_eq!(set["rebalanceBytesPerSec"], 50_000_000, "{set}");
    let dry = tcr_json(
        &urls[2],
        &["gc", "run", "--dry-run", "--grace-period", "0s"],
    );
    assert_eq!(dry["candidates"], 10, "{dry}");
}

async fn every_image_is_whole_through_every_node(c: &Client, urls: &[String], kept: &[&Img]) {
    for url in urls {
        for img in kept {
            let m = c
                .get(format!("{url}/v2/g/app/manifests/{}", img.tag))
                .header("accept", OCI_MANIFEST)
                .send()
                .await
                .unwrap();
            assert_eq!(m.status(), StatusCode::OK, "{url} {}", img.tag);
            assert_eq!(m.bytes().await.unwrap().as_ref(), img.manifest.as_slice());
            for b in &img.blobs {
                let r = c
                    .get(format!("{url}/v2/g/app/blobs/{}", digest(b)))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), StatusCode::OK, "{url} {} blob", img.tag);
                assert_eq!(r.bytes().await.unwrap().as_ref(), b.as_slice());
            }
        }
    }
}
