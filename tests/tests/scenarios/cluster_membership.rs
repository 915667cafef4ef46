//! Membership changes with `tcr`: grow 3 -> 5 on a state of 50,000 tags (the
//! new members catch up through a snapshot, the log having been compacted),
//! shrink 5 -> 3 (removing the leader among others), restart every node,
//! and every node reports the same state digest.

use std::path::Path;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::Value;
use tcr_tests::harness::{tcr_json, wait_for, Node};
use tcr_tests::images::{Image, OCI_MANIFEST};
use tcr_tests::oci::{push_tags, Oci};

const TAGS: usize = 50_000;

async fn status(node: &Node) -> Option<Value> {
    reqwest::get(format!("{}/v1/container-registries/cluster", node.url()))
        .await
        .ok()?
        .json()
        .await
        .ok()
}

async fn voter_ids(node: &Node) -> Vec<u64> {
    let s = status(node).await.unwrap_or_default();
    let mut v: Vec<u64> = s["members"]
        .as_array()
        .map(|m| {
            m.iter()
                .filter(|m| m["role"] == "voter")
                .filter_map(|m| m["id"].as_u64())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[tokio::test]
async fn grow_to_five_through_snapshot_shrink_to_three_restart_all() {
    let dir = tempfile::tempdir().unwrap();
    let env = [("TCR_SNAPSHOT_LOGS", "2000")];
    let n1 = Node::start_with(&dir.path().join("n1"), &env, &["--node-id", "1"]).await;
    let join = n1.rpc();
    let mut nodes = vec![n1];
    for id in 2..=3 {
        let id_s = id.to_string();
        nodes.push(
            Node::start_with(
                &dir.path().join(format!("n{id}")),
                &env,
                &["--node-id", &id_s, "--join", &join],
            )
            .await,
        );
    }
    wait_for("three voters", Duration::from_secs(60), || async {
        voter_ids(&nodes[0]).await == [1, 2, 3]
    })
    .await;

    nodes[0].create_namespace("acme", "private").await;
    let img = Image::new("membership", "amd64");
    let oci = Oci::new(&nodes[0].url());
    oci.push_blob("acme/app", &img.layer).await;
    oci.push_blob("acme/app", &img.config).await;
    let started = Instant::now();
    let urls: Vec<String> = nodes.iter().map(|n| n.url()).collect();
    push_tags(
        &urls,
        "acme/app",
        OCI_MANIFEST,
        &img.manifest,
        0..TAGS,
        5,
        32,
    )
    .await;
    eprintln!(
        "pushed {TAGS} tags through 3 nodes in {:?}",
        started.elapsed()
    );

    grow_to_five_through_snapshots(dir.path(), &env, &mut nodes).await;

    // Shrink: remove node 1 (the first leader) and node 4.
    for id in [1, 4] {
        tcr_json(
            &nodes[2].url(),
            &["members", "remove", "--id", &id.to_string()],
        );
    }
    wait_for("voters 2, 3, 5", Duration::from_secs(30), || async {
        voter_ids(&nodes[2]).await == [2, 3, 5]
    })
    .await;
    // The removed leader steps down; a survivor is elected.
    wait_for(
        "a leader among 2, 3, 5",
        Duration::from_secs(30),
        || async {
            let leader = status(&nodes[2]).await.and_then(|s| s["leader"].as_u64());
            matches!(leader, Some(2 | 3 | 5))
        },
    )
    .await;
    // A push after the shrink, through the survivors.
    let extra = Oci::new(&nodes[4].url())
        .put_manifest("acme/app", "after-shrink", OCI_MANIFEST, &img.manifest)
        .await;
    assert_eq!(extra.status(), StatusCode::CREATED);

    // Restart every remaining voter.
    for i in [1usize, 2, 4] {
        nodes[i].kill9();
    }
    for i in [1usize, 2, 4] {
        nodes[i].restart_no_wait();
    }
    for i in [1usize, 2, 4] {
        nodes[i].wait_ready().await;
    }
    let status_all = tcr_json(&nodes[1].url(), &["cluster", "status"]);
    let members = status_all["members"].as_array().unwrap();
    assert_eq!(members.len(), 3);
    let digests: Vec<&str> = members
        .iter()
        .map(|m| m["stateDigest"].as_str().unwrap_or("unreachable"))
        .collect();
    wait_for(
        "equal digests on all three",
        Duration::from_secs(30),
        || async {
            let s = tcr_json(&nodes[1].url(), &["cluster", "status"]);
            let d: Vec<String> = s["members"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| m["stateDigest"].as_str().unwrap_or("").to_string())
                .collect();
            d.len() == 3 && !d[0].is_empty() && d.iter().all(|x| x == &d[0])
        },
    )
    .await;
    eprintln!("digests after restart: {digests:?}");
    // Every tag, counted page by page through a restarted node.
    assert_eq!(tags_listed_page_by_page(&nodes[4].url()).await, TAGS + 1);
}

/// Nodes 4 and 5 start empty, wait to be added with `tcr members add`, and
/// catch up through a snapshot.
async fn grow_to_five_through_snapshots(dir: &Path, env: &[(&str, &str)], nodes: &mut Vec<Node>) {
    for id in 4..=5 {
        let id_s = id.to_string();
        nodes.push(Node::start_unready(
            &dir.join(format!("n{id}")),
            env,
            &["--node-id", &id_s, "--no-init"],
        ));
    }
    for id in 4..=5usize {
        let (rpc, http) = (nodes[id - 1].rpc(), nodes[id - 1].host());
        // Through a node that may well be a follower: it redirects to the leader.
        let v = tcr_json(
            &nodes[1].url(),
            &[
                "members",
                "add",
                "--id",
                &id.to_string(),
                "--rpc-addr",
                &rpc,
                "--http-addr",
                &http,
            ],
        );
        assert_eq!(v["role"], "voter");
    }
    assert_eq!(voter_ids(&nodes[0]).await, [1, 2, 3, 4, 5]);
    for id in 4..=5usize {
        let s = status(&nodes[id - 1]).await.unwrap();
        assert!(
            s["snapshotIndex"].as_u64().unwrap_or(0) > 0,
            "node {id} caught up without a snapshot: {s}"
        );
    }
}

async fn tags_listed_page_by_page(url: &str) -> usize {
    let oci = Oci::new(url);
    let (mut count, mut path) = (0, "/v2/acme/app/tags/list?n=10000".to_string());
    loop {
        let resp = oci.get(&path).await;
        let next = resp.headers().get("link").map(|l| {
            l.to_str()
                .unwrap()
                .split(';')
                .next()
                .unwrap()
                .trim_matches(|c| c == '<' || c == '>' || c == ' ')
                .to_string()
        });
        let v: Value = resp.json().await.unwrap();
        count += v["tags"].as_array().unwrap().len();
        match next {
            Some(n) => path = n,
            None => break,
        }
    }
    count
}
