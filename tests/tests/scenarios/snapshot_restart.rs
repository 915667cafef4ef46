//! A node that has snapshotted and purged its Raft log restarts from the
//! snapshot plus the log tail with every tag intact.

use std::time::Duration;

use tcr_tests::harness::{wait_for, Node};
use tcr_tests::images::{Image, OCI_MANIFEST};
use tcr_tests::oci::Oci;

#[tokio::test]
async fn restart_from_snapshot_and_log_tail_keeps_every_tag() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = Node::start_with_env(dir.path(), &[("TCR_SNAPSHOT_LOGS", "50")]).await;
    node.create_namespace("acme", "private").await;
    let oci = Oci::new(&node.url());
    let img = Image::new("snap", "amd64");
    oci.push_blob("acme/app", &img.layer).await;
    oci.push_blob("acme/app", &img.config).await;
    for i in 0..300 {
        let resp = oci
            .put_manifest("acme/app", &format!("t{i:03}"), OCI_MANIFEST, &img.manifest)
            .await;
        assert_eq!(resp.status(), 201);
    }
    let status = format!("{}/v1/container-registries/cluster", node.url());
    wait_for("a Raft snapshot", Duration::from_secs(30), || async {
        let s: Option<serde_json::Value> = match reqwest::get(&status).await {
            Ok(r) => r.json().await.ok(),
            Err(_) => None,
        };
        s.and_then(|s| s["snapshotIndex"].as_u64()).unwrap_or(0) > 0
    })
    .await;

    node.kill9();
    node.restart().await;
    let v: serde_json::Value = oci
        .get("/v2/acme/app/tags/list")
        .await
        .json()
        .await
        .unwrap();
    let tags: Vec<String> = (0..300).map(|i| format!("t{i:03}")).collect();
    assert_eq!(v["tags"], serde_json::json!(tags));
    let resp = oci.get("/v2/acme/app/manifests/t299").await;
    assert_eq!(
        resp.bytes().await.unwrap().as_ref(),
        img.manifest.as_slice()
    );
}
