//! Three nodes, each in a network namespace of its own. A node cut off from
//! the other two (a minority) neither acknowledges writes nor serves stale
//! linearizable reads, and catches up once the partition heals. The same
//! holds when the cut-off node is the leader.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;
use tcr_tests::harness::{certs, peer_tls_args, wait_for, Node};
use tcr_tests::hosts::Hosts;
use tcr_tests::images::{Image, OCI_MANIFEST};

const TOKEN: &str = "partition-test-token";

async fn status(node: &Node) -> Option<Value> {
    let r = node
        .client()
        .get(format!("{}/v1/container-registries/cluster", node.url()))
        .send()
        .await
        .ok()?;
    r.json().await.ok()
}

/// Three nodes under peer mutual TLS, each with a certificate for its
/// own address.
async fn cluster(net: &Hosts, dir: &std::path::Path) -> Vec<Node> {
    let ips: Vec<String> = (1..=3).map(|i| net.ip(i)).collect();
    let ips: Vec<&str> = ips.iter().map(String::as_str).collect();
    let certs = certs(&dir.join("certs"), &ips);
    let args = |i: usize, extra: &[&str]| -> Vec<String> {
        let mut a = vec!["--node-id".to_string(), i.to_string()];
        a.extend(extra.iter().map(|s| s.to_string()));
        a.extend(peer_tls_args(&certs, &net.ip(i)));
        a
    };
    let a1 = args(1, &[]);
    let a1: Vec<&str> = a1.iter().map(String::as_str).collect();
    let first = Node::start_in(net, 1, &dir.join("n1"), TOKEN, &a1).await;
    let join = first.rpc();
    let mut nodes = vec![first];
    for i in 2..=3 {
        let a = args(i, &["--join", &join]);
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        nodes.push(Node::start_in(net, i, &dir.join(format!("n{i}")), TOKEN, &a).await);
    }
    for n in &nodes {
        wait_for("three voters", Duration::from_secs(60), || async {
            status(n).await.and_then(|s| {
                s["members"]
                    .as_array()
                    .map(|m| m.iter().filter(|m| m["role"] == "voter").count())
            }) == Some(3)
        })
        .await;
    }
    nodes
}

/// The image's layer and config, in one monolithic POST each.
async fn push_blobs(node: &Node, img: &Image) {
    for blob in [&img.layer, &img.config] {
        let d = tcr_tests::images::digest(blob);
        let r = node
            .client()
            .post(format!(
                "{}/v2/acme/app/blobs/uploads/?digest={d}",
                node.url()
            ))
            .body(blob.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::CREATED);
    }
}

fn manifest(img: &Image, round: &str) -> Vec<u8> {
    let mut m: Value = serde_json::from_slice(&img.manifest).unwrap();
    m["annotations"] = serde_json::json!({"round": round});
    serde_json::to_vec(&m).unwrap()
}

async fn put(node: &Node, tag: &str, body: &[u8]) -> StatusCode {
    match node
        .client()
        .put(format!("{}/v2/acme/app/manifests/{tag}", node.url()))
        .header("content-type", OCI_MANIFEST)
        .body(body.to_vec())
        .send()
        .await
    {
        Ok(r) => r.status(),
        Err(_) => StatusCode::GATEWAY_TIMEOUT,
    }
}

async fn get(node: &Node, tag: &str) -> (StatusCode, Vec<u8>) {
    match node
        .client()
        .get(format!("{}/v2/acme/app/manifests/{tag}", node.url()))
        .send()
        .await
    {
        Ok(r) => (
            r.status(),
            r.bytes().await.map(|b| b.to_vec()).unwrap_or_default(),
        ),
        Err(_) => (StatusCode::GATEWAY_TIMEOUT, Vec::new()),
    }
}

async fn minority_cannot_ack_or_serve_stale(isolate_leader: bool) {
    let net = Hosts::create("tcrt", 3).expect("test hosts");
    let dir = tempfile::tempdir().unwrap();
    let nodes = cluster(&net, dir.path()).await;
    nodes[0].create_namespace("acme", "private").await;
    let img = Image::new("partition", "amd64");
    push_blobs(&nodes[0], &img).await;
    let v0 = manifest(&img, "v0");
    assert_eq!(put(&nodes[0], "tag", &v0).await, StatusCode::CREATED);

    let leader = status(&nodes[0]).await.unwrap()["leader"].as_u64().unwrap() as usize;
    let cut = if isolate_leader {
        leader
    } else {
        (leader % 3) + 1
    };
    let majority: Vec<usize> = (1..=3).filter(|i| *i != cut).collect();
    // Everyone has v0 before the cut.
    for n in &nodes {
        wait_for("v0 everywhere", Duration::from_secs(10), || async {
            get(n, "tag").await.1 == v0
        })
        .await;
    }
    net.isolate(cut).expect("cutting a node off");
    let minority = &nodes[cut - 1];

    // The minority cannot acknowledge a write.
    let lost = manifest(&img, "minority");
    let st = put(minority, "other", &lost).await;
    assert_ne!(
        st,
        StatusCode::CREATED,
        "a write was acknowledged in the minority"
    );

    // The majority moves the tag on (after electing a new leader if needed).
    let v1 = manifest(&img, "v1");
    let mut moved = false;
    for _ in 0..40 {
        if put(&nodes[majority[0] - 1], "tag", &v1).await == StatusCode::CREATED {
            moved = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(moved, "the majority could not write");

    // A linearizable read in the minority must not answer with the old v0.
    let (st, body) = get(minority, "tag").await;
    assert!(
        !(st == StatusCode::OK && body == v0),
        "stale read of v0 served by the minority after v1 was acknowledged"
    );
    assert_ne!(
        st,
        StatusCode::OK,
        "the minority answered a linearizable read"
    );

    net.heal().expect("healing");
    wait_for(
        "the healed node serves v1",
        Duration::from_secs(30),
        || async { get(minority, "tag").await == (StatusCode::OK, v1.clone()) },
    )
    .await;
    if isolate_leader {
        // The deposed leader's entry never reached a majority: it is
        // overwritten, never committed. (A follower's forwarded write is
        // indeterminate instead: bytes already in its TCP send buffer are
        // retransmitted to the leader after the heal, so a 503 there means
        // "maybe", as in Jepsen's histories.)
        let (st, _) = get(minority, "other").await;
        assert_eq!(
            st,
            StatusCode::NOT_FOUND,
            "the deposed leader's unacknowledged write was committed"
        );
    }
}

#[tokio::test]
async fn isolated_follower_neither_acknowledges_nor_serves_stale_reads() {
    minority_cannot_ack_or_serve_stale(false).await;
}

#[tokio::test]
async fn isolated_leader_neither_acknowledges_nor_serves_stale_reads() {
    minority_cannot_ack_or_serve_stale(true).await;
}

/// A PUT's status, its Retry-After, and how long it took to answer.
async fn timed_put(node: &Node, tag: &str, body: &[u8]) -> (StatusCode, bool, Duration) {
    let started = std::time::Instant::now();
    let r = node
        .client()
        .put(format!("{}/v2/acme/app/manifests/{tag}", node.url()))
        .header("content-type", OCI_MANIFEST)
        .body(body.to_vec())
        .send()
        .await;
    let (st, retry_after) = match r {
        Ok(r) => (r.status(), r.headers().contains_key("retry-after")),
        Err(_) => (StatusCode::GATEWAY_TIMEOUT, false),
    };
    (st, retry_after, started.elapsed())
}

async fn term(node: &Node) -> Option<u64> {
    status(node).await.and_then(|s| s["term"].as_u64())
}

/// The availability bounds of a leader isolation, at three times the
/// targets (election timeout + 1 s for the majority's first write, 2 s for
/// an answer from the cut-off leader) to allow for a busy 2-core machine.
const MAJORITY_WRITES_WITHIN: Duration = Duration::from_secs(9);
const CUT_OFF_LEADER_ANSWERS_WITHIN: Duration = Duration::from_secs(6);

#[tokio::test]
async fn an_isolated_leader_is_replaced_fast_and_its_return_costs_no_election() {
    let net = Hosts::create("tcrt", 3).expect("test hosts");
    let dir = tempfile::tempdir().unwrap();
    let nodes = cluster(&net, dir.path()).await;
    nodes[0].create_namespace("acme", "private").await;
    let img = Image::new("failover", "amd64");
    push_blobs(&nodes[0], &img).await;
    assert_eq!(
        put(&nodes[0], "tag", &manifest(&img, "v0")).await,
        StatusCode::CREATED
    );
    let leader = status(&nodes[0]).await.unwrap()["leader"].as_u64().unwrap() as usize;
    let old = &nodes[leader - 1];
    let majority: Vec<&Node> = (1..=3)
        .filter(|i| *i != leader)
        .map(|i| &nodes[i - 1])
        .collect();

    net.isolate(leader).expect("cutting the leader off");
    let cut = std::time::Instant::now();
    // Through the old leader, at once: a fast 503 the client may retry.
    let old_1 = manifest(&img, "old-1");
    let at_old = timed_put(old, "old-1", &old_1);
    // Through the majority, until a write is acknowledged.
    let at_majority = async {
        loop {
            let (st, _, _) = timed_put(majority[0], "tag", &manifest(&img, "v1")).await;
            if st == StatusCode::CREATED {
                return cut.elapsed();
            }
            assert!(cut.elapsed() < Duration::from_secs(30), "no majority write");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let ((st, retry_after, answered), first_write) = tokio::join!(at_old, at_majority);
    assert_eq!(
        st,
        StatusCode::SERVICE_UNAVAILABLE,
        "cut-off leader's answer"
    );
    assert!(retry_after, "the cut-off leader's 503 has no Retry-After");
    assert!(
        answered < CUT_OFF_LEADER_ANSWERS_WITHIN,
        "the cut-off leader answered after {answered:?}"
    );
    assert!(
        first_write < MAJORITY_WRITES_WITHIN,
        "the majority's first write was acknowledged {first_write:?} after the cut"
    );
    // Later requests at the old leader are refused at once.
    let (st, _, answered) = timed_put(old, "old-2", &manifest(&img, "old-2")).await;
    assert_eq!(st, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        answered < CUT_OFF_LEADER_ANSWERS_WITHIN,
        "a later request at the cut-off leader took {answered:?}"
    );

    let new_term = term(majority[0]).await.expect("the majority's term");
    net.heal().expect("healing");
    // Every node acknowledges writes again (the old leader forwards them).
    for (i, n) in nodes.iter().enumerate() {
        let tag = format!("after-heal-{i}");
        wait_for(
            "a write through every node after the heal",
            Duration::from_secs(20),
            || async { put(n, &tag, &manifest(&img, &tag)).await == StatusCode::CREATED },
        )
        .await;
    }
    // The returning node rejoined without an election: for three election
    // timeouts after it is back, every node stays in the majority's term.
    let watch_until = std::time::Instant::now() + Duration::from_secs(6);
    while std::time::Instant::now() < watch_until {
        for (i, n) in nodes.iter().enumerate() {
            if let Some(t) = term(n).await {
                assert_eq!(t, new_term, "node {}: the term moved after the heal", i + 1);
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
