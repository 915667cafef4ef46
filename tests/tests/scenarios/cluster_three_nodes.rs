//! A three-node cluster of real processes, built with `tcr members add`:
//! writes on any node, linearizable reads on any node right after a write,
//! a new leader after the leader is killed with nothing acknowledged lost,
//! leadership transfer without a failed write, the replication factor
//! setting, and a node that was down while the log was compacted catching
//! up from a snapshot.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::Value;
use tcr_tests::harness::{bin, cluster, tcr, wait_for, Node};
use tcr_tests::images::{Image, OCI_MANIFEST};
use tcr_tests::oci::{push_tags, Oci};

async fn status(node: &Node) -> Option<Value> {
    let r = reqwest::get(format!("{}/v1/container-registries/cluster", node.url()))
        .await
        .ok()?;
    r.json().await.ok()
}

async fn three_nodes(dir: &std::path::Path) -> Vec<Node> {
    three_nodes_with(dir, &[]).await
}

/// Three fresh nodes made a cluster with `tcr members add`.
async fn three_nodes_with(dir: &std::path::Path, env: &[(&str, &str)]) -> Vec<Node> {
    cluster(dir, 3, env, &[]).await
}

#[tokio::test]
async fn writes_anywhere_and_reads_anywhere_are_linearizable() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = three_nodes(dir.path()).await;
    // Namespace created through a follower (forwarded to the leader).
    nodes[2].create_namespace("acme", "private").await;
    let (n1, n3) = (Oci::new(&nodes[0].url()), Oci::new(&nodes[2].url()));
    let img = Image::new("cluster", "amd64");
    n1.push_blob("acme/app", &img.layer).await;
    n1.push_blob("acme/app", &img.config).await;
    let mut stale = 0;
    for i in 0..200 {
        // Unique manifest per round, so a stale read is visible.
        let mut m: Value = serde_json::from_slice(&img.manifest).unwrap();
        m["annotations"] = serde_json::json!({"round": i.to_string()});
        let body = serde_json::to_vec(&m).unwrap();
        let resp = n1
            .put_manifest("acme/app", "latest", OCI_MANIFEST, &body)
            .await;
        assert_eq!(resp.status(), StatusCode::CREATED);
        let got = n3.get("/v2/acme/app/manifests/latest").await;
        assert_eq!(got.status(), StatusCode::OK);
        if got.bytes().await.unwrap().as_ref() != body.as_slice() {
            stale += 1;
        }
    }
    assert_eq!(stale, 0, "stale reads through a follower");

    // Every node reports the same state digest once applied.
    let digest = |s: Value| s["stateDigest"].as_str().unwrap().to_string();
    let want = digest(status(&nodes[0]).await.unwrap());
    for n in &nodes[1..] {
        wait_for("same state digest", Duration::from_secs(10), || {
            let want = want.clone();
            async move { status(n).await.map(digest) == Some(want) }
        })
        .await;
    }

    // The CLI shows the three members, healthy.
    let out = std::process::Command::new(bin("tcr"))
        .args([
            "--endpoint",
            &nodes[1].url(),
            "--output",
            "json",
            "cluster",
            "status",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let members = v["members"].as_array().unwrap();
    assert_eq!(members.len(), 3);
    assert!(members
        .iter()
        .all(|m| m["healthy"] == true && m["role"] == "voter"));

    // The blob replication factor: min(3, voters) by default, set through
    // any node, seen by every node; more copies than voters is refused.
    assert_eq!(v["replicationFactor"], 3);
    assert_eq!(v["writeQuorum"], 2);
    let out = tcr(
        &nodes[2].url(),
        &["cluster", "set", "replication-factor", "2"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("replication factor 2 (write quorum 2)"));
    for n in &nodes {
        // Status reads this node's applied state, which may trail by a beat.
        wait_for(
            "the setting on every node",
            Duration::from_secs(10),
            || async {
                status(n).await.is_some_and(|s| {
                    s["replicationFactor"] == 2 && s["replicationFactorSet"] == true
                })
            },
        )
        .await;
    }
    for bad in ["4", "0"] {
        let out = tcr(
            &nodes[0].url(),
            &["cluster", "set", "replication-factor", bad],
        );
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("400")
                && (err.contains("exceeds the 3 voter(s)") || err.contains("at least 1")),
            "{err}"
        );
    }
    assert_eq!(status(&nodes[1]).await.unwrap()["replicationFactor"], 2);
}

#[tokio::test]
async fn leader_kill9_elects_a_new_leader_and_loses_no_acknowledged_write() {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = three_nodes(dir.path()).await;
    nodes[0].create_namespace("acme", "private").await;
    let img = Image::new("failover", "amd64");
    let first = Oci::new(&nodes[0].url());
    first.push_blob("acme/app", &img.layer).await;
    first.push_blob("acme/app", &img.config).await;
    let leader = status(&nodes[0]).await.unwrap()["leader"].as_u64().unwrap() as usize;
    let leader_idx = leader - 1;

    let mut acked = Vec::new();
    for i in 0..20 {
        let oci = Oci::new(&nodes[i % 3].url());
        let resp = oci
            .put_manifest(
                "acme/app",
                &format!("before{i}"),
                OCI_MANIFEST,
                &img.manifest,
            )
            .await;
        assert_eq!(resp.status(), StatusCode::CREATED);
        acked.push(format!("before{i}"));
    }
    nodes[leader_idx].kill9();
    let killed_at = Instant::now();
    let survivors: Vec<usize> = (0..3).filter(|i| *i != leader_idx).collect();
    // Writes through the survivors succeed again once a new leader is up.
    let mut first_ok = None;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(15))
        .build()
        .unwrap();
    for i in 0..20 {
        let node = &nodes[survivors[i % 2]];
        let tag = format!("after{i}");
        let resp = client
            .put(format!("{}/v2/acme/app/manifests/{tag}", node.url()))
            .header("content-type", OCI_MANIFEST)
            .body(img.manifest.clone())
            .send()
            .await
            .unwrap();
        if resp.status() == StatusCode::CREATED {
            first_ok.get_or_insert(killed_at.elapsed());
            acked.push(tag);
        } else {
            assert_eq!(
                resp.status(),
                StatusCode::SERVICE_UNAVAILABLE,
                "{:?}",
                resp.text().await
            );
        }
    }
    let without_leader = first_ok.expect("no write succeeded after the leader was killed");
    eprintln!("writes resumed {without_leader:?} after the leader was killed");
    assert!(without_leader < Duration::from_secs(15));
    let new_leader = status(&nodes[survivors[0]]).await.unwrap()["leader"].as_u64();
    assert!(new_leader.is_some() && new_leader != Some(leader as u64));

    // The old leader comes back and catches up: every acknowledged tag is on every node.
    nodes[leader_idx].restart().await;
    for n in &nodes {
        let oci = Oci::new(&n.url());
        for tag in &acked {
            let resp = oci.get(&format!("/v2/acme/app/manifests/{tag}")).await;
            assert_eq!(
                resp.status(),
                StatusCode::OK,
                "{tag} missing on {}",
                n.url()
            );
        }
    }
}

#[tokio::test]
async fn leader_transfer_hands_over_without_failing_a_write() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = three_nodes(dir.path()).await;
    nodes[0].create_namespace("acme", "private").await;
    let img = Image::new("transfer", "amd64");
    let oci = Oci::new(&nodes[0].url());
    oci.push_blob("acme/app", &img.layer).await;
    oci.push_blob("acme/app", &img.config).await;
    let leader = status(&nodes[0]).await.unwrap()["leader"].as_u64().unwrap();
    let others: Vec<u64> = (1..=3).filter(|i| *i != leader).collect();
    // Asked through the node that is neither leader nor target: the CLI
    // follows the 307 to the leader.
    let (target, via) = (others[0], others[1]);

    // Pushes through every node while leadership moves: none may fail.
    let urls: Vec<String> = nodes.iter().map(|n| n.url()).collect();
    let manifest = img.manifest.clone();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = tokio::spawn({
        let stop = stop.clone();
        async move {
            let mut acked = Vec::new();
            let mut i = 0usize;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let tag = format!("t{i}");
                let resp = Oci::new(&urls[i % 3])
                    .put_manifest("acme/app", &tag, OCI_MANIFEST, &manifest)
                    .await;
                assert_eq!(resp.status(), StatusCode::CREATED, "push of {tag}");
                acked.push(tag);
                i += 1;
            }
            acked
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;

    let started = Instant::now();
    let out = tcr(
        &nodes[via as usize - 1].url(),
        &["leader", "transfer", "--to", &target.to_string()],
    );
    let took = started.elapsed();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&format!("node {target} leads")),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    eprintln!("leadership moved from node {leader} to node {target} in {took:?}");
    for n in &nodes {
        wait_for(
            "every node follows the new leader",
            Duration::from_secs(10),
            || async { status(n).await.and_then(|s| s["leader"].as_u64()) == Some(target) },
        )
        .await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let acked = writer.await.expect("no push failed during the transfer");
    assert!(acked.len() > 2);
    for n in &nodes {
        let oci = Oci::new(&n.url());
        for tag in acked.iter().step_by(7).chain(acked.last()) {
            let resp = oci.get(&format!("/v2/acme/app/manifests/{tag}")).await;
            assert_eq!(resp.status(), StatusCode::OK, "{tag} on {}", n.url());
        }
    }

    // Refusals: a node that is not a voter, and a malformed id.
    let out = tcr(&nodes[0].url(), &["leader", "transfer", "--to", "9"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("node 9 is not a voter"), "{err}");
    // Back to the first leader, asked at the current leader itself.
    let out = tcr(
        &nodes[target as usize - 1].url(),
        &[
            "--output",
            "json",
            "leader",
            "transfer",
            "--to",
            &leader.to_string(),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["leader"].as_u64(), Some(leader));
}

#[tokio::test]
async fn a_node_down_while_the_log_is_compacted_catches_up_from_a_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = three_nodes_with(dir.path(), &[("TCR_SNAPSHOT_LOGS", "500")]).await;
    nodes[0].create_namespace("acme", "private").await;
    let img = Image::new("catch-up", "amd64");
    let oci = Oci::new(&nodes[0].url());
    oci.push_blob("acme/app", &img.layer).await;
    oci.push_blob("acme/app", &img.config).await;
    let leader = status(&nodes[0]).await.unwrap()["leader"].as_u64().unwrap() as usize;
    let down = (0..3).find(|i| *i != leader - 1).unwrap();
    nodes[down].kill9();

    // Far more entries than the leader keeps behind its snapshots (1,000).
    const TAGS: usize = 3000;
    let up: Vec<String> = (0..3)
        .filter(|i| *i != down)
        .map(|i| nodes[i].url())
        .collect();
    push_tags(&up, "acme/app", OCI_MANIFEST, &img.manifest, 0..TAGS, 4, 16).await;
    let leader_status = status(&nodes[leader - 1]).await.unwrap();
    assert!(
        leader_status["snapshotIndex"].as_u64().unwrap_or(0) > 1000,
        "the leader compacted its log: {leader_status}"
    );

    nodes[down].restart().await;
    let want = |s: &Value| s["stateDigest"].as_str().map(str::to_string);
    wait_for(
        "the restarted node has the same state",
        Duration::from_secs(60),
        || async {
            let (l, d) = (status(&nodes[leader - 1]).await, status(&nodes[down]).await);
            matches!((l, d), (Some(l), Some(d)) if want(&l).is_some() && want(&l) == want(&d))
        },
    )
    .await;
    let s = status(&nodes[down]).await.unwrap();
    assert!(
        s["snapshotIndex"].as_u64().unwrap_or(0) > 0,
        "the restarted node caught up without a snapshot: {s}"
    );
    let tags: Value = Oci::new(&nodes[down].url())
        .get("/v2/acme/app/tags/list?n=10000")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(tags["tags"].as_array().map(Vec::len), Some(TAGS));
}
