//! Blobs across a three-node cluster with replication factor 2: each blob
//! pushed through any node ends up on exactly its two owners (checked in
//! the data dirs), is pulled byte-identical through every node, survives
//! the kill -9 of any one node, and a corrupt copy is never served whole.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rand::{Rng, SeedableRng};
use reqwest::StatusCode;
use serde_json::Value;
use tcr_tests::harness::{tcr, tcr_json, wait_for, Node};
use tcr_tests::images::digest;
use tcr_tests::oci::Oci;

fn blob_path(node: &Node, d: &str) -> PathBuf {
    let hex = d.strip_prefix("sha256:").unwrap();
    node.dir.join("data/blobs/sha256").join(&hex[..2]).join(hex)
}

/// The integrity index stored beside a node's copy of `d`, if any.
fn index_file(node: &Node, d: &str) -> Option<Vec<u8>> {
    std::fs::read(blob_path(node, d).with_extension("idx")).ok()
}

fn holders(nodes: &[Node], d: &str) -> Vec<u64> {
    (0..nodes.len())
        .filter(|i| blob_path(&nodes[*i], d).exists())
        .map(|i| i as u64 + 1)
        .collect()
}

/// A client whose every request ends within a minute: a read cut or
/// stalled by the node under test fails the attempt instead of hanging it.
fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("client")
}

async fn json(url: &str) -> Option<Value> {
    http().get(url).send().await.ok()?.json().await.ok()
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
    let resp = http()
        .get(format!("{}/v2/acme/app/blobs/{d}", node.url()))
        .send()
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

/// Bytes `from..=to` of blob `d` through `node`: `Ok` only for a 206 whose
/// body arrived whole.
async fn range(node: &Node, d: &str, from: u64, to: u64) -> Result<Vec<u8>, String> {
    let resp = http()
        .get(format!("{}/v2/acme/app/blobs/{d}", node.url()))
        .header("range", format!("bytes={from}-{to}"))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if resp.status() != StatusCode::PARTIAL_CONTENT {
        return Err(format!("status {}", resp.status()));
    }
    let body = resp.bytes().await.map_err(|e| e.to_string())?;
    if body.len() as u64 != to - from + 1 {
        return Err(format!("{} bytes", body.len()));
    }
    Ok(body.to_vec())
}

/// The first successful answer of `attempt`, retried as a client would
/// for up to 20 s.
async fn retried<F, Fut>(what: &str, attempt: F) -> Vec<u8>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<Vec<u8>, String>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        match attempt().await {
            Ok(body) => return body,
            Err(e) => assert!(
                tokio::time::Instant::now() < deadline,
                "no {what} after 20 s of retries: {e}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Storage passes every second, so repair and rebalance are quick to see.
const ENV: [(&str, &str); 1] = [("TCR_STORAGE_INTERVAL_SECS", "1")];

async fn all_on_their_owners(nodes: &[Node], blobs: &[String], within: Duration) {
    for d in blobs {
        let want = owners(&nodes[0], d).await;
        wait_for("copies on exactly the owners", within, || {
            let ok = holders(nodes, d) == want;
            async move { ok }
        })
        .await;
    }
}

/// Start node 4 empty and add it with `tcr members add --weight`.
async fn add_fourth(dir: &Path, nodes: &mut Vec<Node>, weight: u32) {
    let mut n4 = Node::start_unready(&dir.join("n4"), &ENV, &["--node-id", "4", "--no-init"]);
    let v = tcr_json(
        &nodes[0].url(),
        &[
            "members",
            "add",
            "--id",
            "4",
            "--rpc-addr",
            &n4.rpc(),
            "--http-addr",
            &n4.host(),
            "--weight",
            &weight.to_string(),
        ],
    );
    assert_eq!(v["role"], "voter");
    n4.wait_ready().await;
    nodes.push(n4);
}

async fn start_cluster(dir: &Path) -> Vec<Node> {
    start_cluster_with(dir, 2).await
}

/// Three voters with replication factor `r`, and the namespace `acme`.
async fn start_cluster_with(dir: &Path, r: u32) -> Vec<Node> {
    let n1 = Node::start_with(&dir.join("n1"), &ENV, &["--node-id", "1"]).await;
    let join = n1.rpc();
    let mut nodes = vec![n1];
    for id in 2..=3 {
        let id_s = id.to_string();
        nodes.push(
            Node::start_with(
                &dir.join(format!("n{id}")),
                &ENV,
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
    let out = tcr(
        &nodes[0].url(),
        &["cluster", "set", "replication-factor", &r.to_string()],
    );
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
                .is_some_and(|s| s["replicationFactor"] == r)
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

    transfers_are_counted(&nodes).await;
    a_range_through_a_node_without_a_copy(&nodes, &pushed).await;

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
    // The survivors count the blobs that lost a copy, each once.
    let mut lost_a_copy = 0;
    for (d, _, _) in &pushed {
        lost_a_copy += u64::from(owners(&nodes[0], d).await.contains(&2));
    }
    let under = |report: &Value| -> u64 {
        report
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|v| v["storage"]["underReplicated"].as_u64())
            .sum()
    };
    wait_for(
        "under-replicated blobs reported",
        Duration::from_secs(60),
        || async { under(&tcr_json(&nodes[0].url(), &["storage", "status"])) == lost_a_copy },
    )
    .await;
    // It comes back with its blobs gone (a replaced disk): repair pulls
    // every blob it owns again.
    std::fs::remove_dir_all(nodes[1].dir.join("data/blobs")).unwrap();
    nodes[1].restart().await;
    let digests: Vec<String> = pushed.iter().map(|(d, _, _)| d.clone()).collect();
    all_on_their_owners(&nodes, &digests, Duration::from_secs(120)).await;
    wait_for(
        "no blob under-replicated",
        Duration::from_secs(60),
        || async { under(&tcr_json(&nodes[0].url(), &["storage", "status"])) == 0 },
    )
    .await;
    // Its storage status tells what the repair did, once the pass ends.
    wait_for(
        "node 2 reports the copies it pulled",
        Duration::from_secs(60),
        || async {
            let report = tcr_json(&nodes[0].url(), &["storage", "status"]);
            report.as_array().unwrap().iter().any(|v| {
                v["nodeId"] == 2
                    && v["storage"]["pulled"].as_u64().unwrap_or(0) > 0
                    && v["storage"]["missing"] == 0
            })
        },
    )
    .await;
    for (d, len, _) in &pushed {
        let body = pull(&nodes[1], d).await.unwrap();
        assert_eq!((body.len(), digest(&body)), (*len, d.clone()));
    }
}

async fn transfers_are_counted(nodes: &[Node]) {
    // Prometheus counts the transfers: pushes to owners, remote reads.
    let mut pushes_ok = 0;
    let mut remote_ok = 0;
    let mut remote_grpc = 0;
    for n in nodes {
        let text = http()
            .get(format!("{}/metrics", n.url()))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let value = |series: &str| -> u64 {
            text.lines()
                .find_map(|l| l.strip_prefix(series))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0)
        };
        pushes_ok += value(r#"tcr_blob_transfers_total{kind="push",result="ok"}"#);
        remote_ok += value(r#"tcr_blob_transfers_total{kind="remote_read",result="ok"}"#);
        remote_grpc += value(r#"tcr_blob_transfers_total{kind="remote_read_grpc",result="ok"}"#);
    }
    // Every blob pushed through a node went to at least one other owner;
    // every node without a copy read each such blob remotely once.
    assert!(pushes_ok >= 200 - 1, "{pushes_ok} pushes");
    assert!(remote_ok >= 200, "{remote_ok} remote reads");
    // Peers of one version read from each other over HTTP; gRPC is only
    // the fallback for an older peer.
    assert_eq!(remote_grpc, 0, "remote reads that fell back to gRPC");
}

async fn a_range_through_a_node_without_a_copy(nodes: &[Node], pushed: &[(String, usize, String)]) {
    // A range through a node without a copy.
    let (d, len, _) = pushed.iter().find(|(_, len, _)| *len > 1 << 20).unwrap();
    let outsider = (1..=3u64)
        .find(|id| !holders(nodes, d).contains(id))
        .unwrap();
    let whole = pull(&nodes[outsider as usize - 1], d).await.unwrap();
    let resp = http()
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
}

#[tokio::test]
async fn a_corrupt_copy_is_never_served_and_scrub_heals_it() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = start_cluster(dir.path()).await;
    let flip = |node: &Node, d: &str| {
        let p = blob_path(node, d);
        let mut bytes = std::fs::read(&p).unwrap();
        bytes[1 << 20] ^= 0xff;
        std::fs::write(&p, bytes).unwrap();
    };

    // Both owners' copies rot: no node serves the bytes whole, neither an
    // owner (its own copy) nor the third node (streaming from the owners).
    let data: Vec<u8> = (0..3u32 << 20).map(|i| (i % 251) as u8).collect();
    let d = Oci::new(&nodes[0].url()).push_blob("acme/app", &data).await;
    all_on_their_owners(&nodes, std::slice::from_ref(&d), Duration::from_secs(30)).await;
    for id in owners(&nodes[0], &d).await {
        flip(&nodes[id as usize - 1], &d);
    }
    // A client resuming with a range over the rot gets an error or a cut
    // body from every node, never the rotten bytes.
    for n in &nodes {
        let r = range(n, &d, (1 << 20) - 500, (1 << 20) + 500).await;
        assert!(
            r.is_err(),
            "{} served a range over a rotten chunk: {} bytes",
            n.url(),
            r.map(|b| b.len()).unwrap_or(0)
        );
    }
    for n in &nodes {
        if let Ok(body) = pull(n, &d).await {
            panic!(
                "{} served {} bytes of a blob whose every copy is corrupt (digest {})",
                n.url(),
                body.len(),
                digest(&body)
            );
        }
    }

    // One copy rots, the other is good: scrub finds the rotten one without
    // any read, quarantines it, and its owner pulls a good copy.
    let data2: Vec<u8> = (0..2u32 << 20).map(|i| (i % 241) as u8).collect();
    let d2 = Oci::new(&nodes[0].url())
        .push_blob("acme/app", &data2)
        .await;
    all_on_their_owners(&nodes, std::slice::from_ref(&d2), Duration::from_secs(30)).await;
    let rotten = &nodes[owners(&nodes[0], &d2).await[0] as usize - 1];
    flip(rotten, &d2);
    let p = blob_path(rotten, &d2);
    wait_for(
        "scrub heals the rotten copy",
        Duration::from_secs(60),
        || {
            let healed = std::fs::read(&p).is_ok_and(|b| digest(&b) == d2);
            async move { healed }
        },
    )
    .await;
    let quarantined = std::fs::read_dir(rotten.dir.join("data/quarantine"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert!(quarantined >= 1, "the rotten copy was kept aside");
    for n in &nodes {
        assert_eq!(pull(n, &d2).await.unwrap(), data2);
    }
    a_rotten_range_is_retried_from_the_good_copy(&nodes, &flip).await;
}

/// One owner's copy rots: a range over the rot through that owner is cut
/// or refused, and the client's retry gets the good bytes from the other.
async fn a_rotten_range_is_retried_from_the_good_copy(nodes: &[Node], flip: &dyn Fn(&Node, &str)) {
    let data: Vec<u8> = (0..3u32 << 20).map(|i| (i % 239) as u8).collect();
    let d = Oci::new(&nodes[0].url()).push_blob("acme/app", &data).await;
    all_on_their_owners(nodes, std::slice::from_ref(&d), Duration::from_secs(30)).await;
    let rotten = &nodes[owners(&nodes[0], &d).await[0] as usize - 1];
    flip(rotten, &d);
    // A range over a clean chunk of the rotten copy is served at once.
    let (a, b) = ((2u64 << 20) + 100, (2u64 << 20) + 5000);
    let clean = range(rotten, &d, a, b)
        .await
        .expect("a range over a clean chunk");
    assert!(
        clean == data[a as usize..=b as usize],
        "the clean range differs"
    );
    let (from, to) = ((1u64 << 20) - 500, (1u64 << 20) + 500);
    let want = &data[from as usize..=to as usize];
    let body = retried("a good range", || range(rotten, &d, from, to)).await;
    assert!(body == want, "a range was served with rotten bytes");
    // The rotten copy was quarantined; the storage loop brings a good one.
    let p = blob_path(rotten, &d);
    wait_for(
        "repair replaces the quarantined copy",
        Duration::from_secs(60),
        || {
            let healed = std::fs::read(&p).is_ok_and(|b| digest(&b) == d);
            async move { healed }
        },
    )
    .await;
}

#[tokio::test]
async fn growing_to_four_moves_blobs_to_their_new_owners_with_no_failed_read() {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = start_cluster(dir.path()).await;
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut blobs = Vec::new();
    for _ in 0..60 {
        let mut data = vec![0u8; rng.random_range(1..1 << 20)];
        rng.fill(&mut data[..]);
        let via = rng.random_range(0..3);
        blobs.push(
            Oci::new(&nodes[via].url())
                .push_blob("acme/app", &data)
                .await,
        );
    }
    all_on_their_owners(&nodes, &blobs, Duration::from_secs(30)).await;

    // A reader loops over every blob through every node while node 4 joins.
    let urls: Vec<String> = nodes.iter().map(|n| n.url()).collect();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = tokio::spawn({
        let (blobs, stop) = (blobs.clone(), stop.clone());
        async move {
            let client = http();
            let (mut reads, mut failed) = (0usize, Vec::new());
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                for (i, d) in blobs.iter().enumerate() {
                    let url = format!("{}/v2/acme/app/blobs/{d}", urls[(i + reads) % urls.len()]);
                    let ok = match client.get(&url).send().await {
                        Ok(r) if r.status() == StatusCode::OK => {
                            r.bytes().await.is_ok_and(|b| &digest(&b) == d)
                        }
                        _ => false,
                    };
                    reads += 1;
                    if !ok {
                        failed.push(url);
                    }
                }
            }
            (reads, failed)
        }
    });
    add_fourth(dir.path(), &mut nodes, 100).await;
    for n in &nodes {
        let url = format!("{}/v1/container-registries/cluster", n.url());
        wait_for(
            "four voters everywhere",
            Duration::from_secs(30),
            || async {
                json(&url).await.is_some_and(|s| {
                    s["members"]
                        .as_array()
                        .is_some_and(|m| m.iter().filter(|m| m["role"] == "voter").count() == 4)
                })
            },
        )
        .await;
    }
    let mut moved_to_4 = 0;
    for d in &blobs {
        moved_to_4 += usize::from(owners(&nodes[0], d).await.contains(&4));
    }
    assert!(moved_to_4 > 0, "node 4 owns some blobs");
    all_on_their_owners(&nodes, &blobs, Duration::from_secs(120)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (reads, failed) = reader.await.unwrap();
    eprintln!(
        "{moved_to_4} of {} blobs moved to node 4; {reads} reads during the move",
        blobs.len()
    );
    assert!(
        failed.is_empty(),
        "{} of {reads} reads failed: {:?}",
        failed.len(),
        &failed[..failed.len().min(5)]
    );
    wait_for(
        "no pass reports work left",
        Duration::from_secs(30),
        || async {
            let report = tcr_json(&nodes[0].url(), &["storage", "status"]);
            report.as_array().unwrap().iter().all(|v| {
                v["storage"]["misplaced"] == 0
                    && v["storage"]["missing"] == 0
                    && v["storage"]["passes"].as_u64() > Some(0)
            })
        },
    )
    .await;
    // Prometheus shows node 4 holding exactly the blobs it owns.
    let metrics = http()
        .get(format!("{}/metrics", nodes[3].url()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let held = format!("tcr_storage{{what=\"held\"}} {moved_to_4}");
    assert!(metrics.contains(&held), "{held} not in:\n{metrics}");
}

#[tokio::test]
async fn an_upload_moves_between_nodes_start_patch_put() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = start_cluster(dir.path()).await;
    let data: Vec<u8> = (0..5u32 << 20).map(|i| (i % 253) as u8).collect();
    let d = digest(&data);
    let c = http();
    let started = c
        .post(format!("{}/v2/acme/app/blobs/uploads/", nodes[0].url()))
        .send()
        .await
        .unwrap();
    assert_eq!(started.status(), StatusCode::ACCEPTED);
    let location = started.headers()["location"].to_str().unwrap().to_string();
    assert!(
        location.starts_with("/v2/acme/app/blobs/uploads/1-"),
        "{location}"
    );
    let (first, rest) = data.split_at(3 << 20);
    // PATCH through node 2: passed on to node 1, which holds the session.
    let patched = c
        .patch(format!("{}{location}", nodes[1].url()))
        .header("content-type", "application/octet-stream")
        .header("content-range", format!("0-{}", first.len() - 1))
        .body(first.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(patched.status(), StatusCode::ACCEPTED);
    assert_eq!(
        patched.headers()["range"],
        format!("0-{}", first.len() - 1).as_str()
    );
    let location = patched.headers()["location"].to_str().unwrap().to_string();
    // Its status through node 3.
    let status = c
        .get(format!("{}{location}", nodes[2].url()))
        .send()
        .await
        .unwrap();
    assert_eq!(status.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        status.headers()["range"],
        format!("0-{}", first.len() - 1).as_str()
    );
    // The last chunk and the digest through node 3.
    let sep = if location.contains('?') { '&' } else { '?' };
    let put = c
        .put(format!("{}{location}{sep}digest={d}", nodes[2].url()))
        .header("content-type", "application/octet-stream")
        .body(rest.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), StatusCode::CREATED, "{:?}", put.text().await);
    for n in &nodes {
        assert_eq!(pull(n, &d).await.unwrap(), data, "via {}", n.url());
    }
    // Mounted into another repository through every node, whether or not
    // that node holds a copy: the committed record decides.
    for (i, n) in nodes.iter().enumerate() {
        let mounted = c
            .post(format!(
                "{}/v2/acme/other{i}/blobs/uploads/?mount={d}&from=acme/app",
                n.url()
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(
            mounted.status(),
            StatusCode::CREATED,
            "mount via {}",
            n.url()
        );
        let got = c
            .get(format!(
                "{}/v2/acme/other{i}/blobs/{d}",
                nodes[(i + 1) % 3].url()
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(got.status(), StatusCode::OK);
        assert_eq!(got.bytes().await.unwrap().as_ref(), data.as_slice());
    }
    // A session of a node that is not a member is unknown, not a 500.
    let unknown = c
        .patch(format!(
            "{}/v2/acme/app/blobs/uploads/9-0123456789abcdef",
            nodes[0].url()
        ))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
    let v: Value = unknown.json().await.unwrap();
    assert_eq!(v["errors"][0]["code"], "BLOB_UPLOAD_UNKNOWN");
}

#[tokio::test]
async fn a_member_of_weight_zero_owns_no_blob_until_its_weight_is_raised() {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = start_cluster(dir.path()).await;
    add_fourth(dir.path(), &mut nodes, 0).await;
    let mut rng = rand::rngs::StdRng::seed_from_u64(9);
    let mut blobs = Vec::new();
    for i in 0..30 {
        let mut data = vec![0u8; rng.random_range(1..64 << 10)];
        rng.fill(&mut data[..]);
        blobs.push(
            Oci::new(&nodes[i % 4].url())
                .push_blob("acme/app", &data)
                .await,
        );
    }
    for d in &blobs {
        let o = owners(&nodes[3], d).await;
        assert_eq!(o.len(), 2, "{d}");
        assert!(!o.contains(&4), "{d} placed on the weight-0 member: {o:?}");
    }
    all_on_their_owners(&nodes, &blobs, Duration::from_secs(30)).await;

    // Its disk was grown: raise its weight. About half of the blobs now
    // count it among their two owners and move there; nothing else moves.
    let v = tcr_json(
        &nodes[1].url(),
        &["members", "set-weight", "--id", "4", "--weight", "100"],
    );
    assert_eq!(v["weight"], 100, "{v}");
    assert_eq!(v["previousWeight"], 0, "{v}");
    let listed = tcr_json(&nodes[2].url(), &["members", "list"]);
    let four = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == 4)
        .cloned()
        .unwrap();
    assert_eq!(four["weight"], 100, "{listed}");
    weight_seen_everywhere(&nodes, 100).await;
    let mut moved = 0;
    for d in &blobs {
        moved += usize::from(owners(&nodes[0], d).await.contains(&4));
    }
    assert!(
        (5..=25).contains(&moved),
        "{moved} of 30 blobs now owned by node 4"
    );
    all_on_their_owners(&nodes, &blobs, Duration::from_secs(60)).await;
    for d in &blobs {
        assert_eq!(pull(&nodes[3], d).await.map(|b| digest(&b)), Ok(d.clone()));
    }

    // Back to 0 (the disk is being retired): node 4 ends up holding nothing.
    tcr_json(
        &nodes[0].url(),
        &["members", "set-weight", "--id", "4", "--weight", "0"],
    );
    weight_seen_everywhere(&nodes, 0).await;
    all_on_their_owners(&nodes, &blobs, Duration::from_secs(60)).await;
    assert!(blobs.iter().all(|d| !blob_path(&nodes[3], d).exists()));
    // An unknown member is refused, not created.
    let out = tcr(
        &nodes[0].url(),
        &["members", "set-weight", "--id", "9", "--weight", "100"],
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not a member"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every node's membership gives node 4 this weight.
async fn weight_seen_everywhere(nodes: &[Node], weight: u64) {
    for n in nodes {
        let url = format!("{}/v1/container-registries/cluster", n.url());
        wait_for(
            "the new weight on every node",
            Duration::from_secs(10),
            || async {
                json(&url).await.is_some_and(|s| {
                    s["members"]
                        .as_array()
                        .is_some_and(|m| m.iter().any(|m| m["id"] == 4 && m["weight"] == weight))
                })
            },
        )
        .await;
    }
}

/// POST, PATCH, PUT: the way docker pushes a layer (the digest, and so
/// the owners, known only at the end). Returns the final status.
async fn push_chunked(c: &reqwest::Client, base: &str, data: &[u8], d: &str) -> StatusCode {
    let start = c
        .post(format!("{base}/v2/acme/app/blobs/uploads/"))
        .send()
        .await
        .unwrap();
    assert_eq!(start.status(), StatusCode::ACCEPTED);
    let at = start.headers()["location"].to_str().unwrap().to_string();
    let at = if at.starts_with('/') {
        format!("{base}{at}")
    } else {
        at
    };
    let patched = c.patch(&at).body(data.to_vec()).send().await.unwrap();
    assert_eq!(patched.status(), StatusCode::ACCEPTED);
    let at = patched.headers()["location"].to_str().unwrap().to_string();
    let at = if at.starts_with('/') {
        format!("{base}{at}")
    } else {
        at
    };
    let sep = if at.contains('?') { '&' } else { '?' };
    c.put(format!("{at}{sep}digest={d}"))
        .send()
        .await
        .unwrap()
        .status()
}

/// Several builds pushing the same base layer at once through a node that
/// does not own it: every push succeeds (none loses its copy to another's
/// clean-up), and afterwards only the owners hold it.
#[tokio::test]
async fn concurrent_pushes_of_one_layer_through_a_non_owner_all_succeed() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = start_cluster(dir.path()).await;
    let mut rng = rand::rngs::StdRng::seed_from_u64(21);
    let c = http();
    for round in 0..3 {
        let mut data = vec![0u8; 3 << 20];
        rng.fill(&mut data[..]);
        let d = digest(&data);
        let own = owners(&nodes[0], &d).await;
        let outsider = (1..=3u64).find(|i| !own.contains(i)).unwrap();
        let base = nodes[outsider as usize - 1].url();
        let pushes = (0..8).map(|i| {
            let (c, base, data, d) = (c.clone(), base.clone(), data.clone(), d.clone());
            async move {
                if i % 2 == 0 {
                    push_chunked(&c, &base, &data, &d).await
                } else {
                    c.post(format!("{base}/v2/acme/app/blobs/uploads/?digest={d}"))
                        .body(data)
                        .send()
                        .await
                        .unwrap()
                        .status()
                }
            }
        });
        let statuses = futures::future::join_all(pushes).await;
        assert!(
            statuses.iter().all(|s| *s == StatusCode::CREATED),
            "round {round}: {statuses:?}"
        );
        wait_for("copies on the owners only", Duration::from_secs(20), || {
            let ok = holders(&nodes, &d) == own;
            async move { ok }
        })
        .await;
        for n in &nodes {
            assert_eq!(pull(n, &d).await.map(|b| digest(&b)), Ok(d.clone()));
        }
    }
}

/// The pipelined replica sessions (`uploads/pipe-*`) in a node's data dir,
/// with their sizes.
fn pipe_sessions(node: &Node) -> Vec<(String, u64)> {
    let Ok(dir) = std::fs::read_dir(node.dir.join("data/uploads")) else {
        return Vec::new();
    };
    dir.filter_map(|e| {
        let name = e.ok()?.file_name().to_string_lossy().into_owned();
        name.starts_with("pipe-").then_some(())?;
        let size = std::fs::metadata(node.dir.join("data/uploads").join(&name).join("data"))
            .map_or(0, |m| m.len());
        Some((name, size))
    })
    .collect()
}

/// `tcr_blob_transfers_total{kind, result}` on a node.
async fn transfers(node: &Node, kind: &str, result: &str) -> u64 {
    let text = http()
        .get(format!("{}/metrics", node.url()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let line = format!("tcr_blob_transfers_total{{kind=\"{kind}\",result=\"{result}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&line))
        .map_or(0, |v| v.trim().parse().unwrap())
}

/// PATCH `chunk` at `offset` of the session at `location` through `base`.
async fn patch_at(
    c: &reqwest::Client,
    base: &str,
    location: &str,
    offset: usize,
    chunk: &[u8],
) -> String {
    let r = c
        .patch(format!("{base}{location}"))
        .header("content-type", "application/octet-stream")
        .header(
            "content-range",
            format!("{offset}-{}", offset + chunk.len() - 1),
        )
        .body(chunk.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED, "{:?}", r.text().await);
    r.headers()["location"].to_str().unwrap().to_string()
}

async fn post_upload(c: &reqwest::Client, base: &str) -> String {
    let r = c
        .post(format!("{base}/v2/acme/app/blobs/uploads/"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    r.headers()["location"].to_str().unwrap().to_string()
}

/// With R=3 on three nodes every node owns every blob, so a chunked
/// upload's bytes go to the other owners as each PATCH arrives, before the
/// digest is known; the PUT seals those copies. A wrong digest or a
/// cancelled upload leaves nothing on the peers, and a peer lost midway
/// does not fail the upload.
#[tokio::test]
async fn a_chunked_upload_reaches_every_owner_while_its_chunks_arrive() {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = start_cluster_with(dir.path(), 3).await;
    let c = http();
    let mut rng = rand::rngs::StdRng::seed_from_u64(33);
    let mut data = vec![0u8; 7 << 20];
    rng.fill(&mut data[..]);
    let d = digest(&data);
    let chunks: Vec<&[u8]> = data.chunks(2 << 20).collect();

    // POST at node 1; PATCHes at nodes 1 and 2 (passed on to node 1).
    let mut location = post_upload(&c, &nodes[0].url()).await;
    let mut offset = 0;
    for (i, chunk) in chunks[..3].iter().enumerate() {
        location = patch_at(&c, &nodes[i % 2].url(), &location, offset, chunk).await;
        offset += chunk.len();
        // The chunks reach the other owners' disks before the digest is
        // known (a peer may hold its last MiB in its write buffer).
        for n in &nodes[1..] {
            wait_for(
                "the chunks on the other owners",
                Duration::from_secs(10),
                || {
                    let s = pipe_sessions(n);
                    let ok = s.len() == 1 && s[0].1 + (1 << 20) >= offset as u64;
                    async move { ok }
                },
            )
            .await;
        }
    }
    assert!(holders(&nodes, &d).is_empty(), "not a blob before the PUT");
    // The last chunk with the PUT, through node 3.
    let sep = if location.contains('?') { '&' } else { '?' };
    let put = c
        .put(format!("{}{location}{sep}digest={d}", nodes[2].url()))
        .body(chunks[3].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), StatusCode::CREATED, "{:?}", put.text().await);
    assert!(holders(&nodes, &d).len() >= 2, "a write quorum at the 201");
    wait_for(
        "a copy on every owner, no session left",
        Duration::from_secs(20),
        || {
            let ok = holders(&nodes, &d) == vec![1, 2, 3]
                && nodes.iter().all(|n| pipe_sessions(n).is_empty());
            async move { ok }
        },
    )
    .await;
    // Every copy has its integrity index at once (the peers were sealed
    // with the index the receiving node made of the verified bytes), the
    // same on every owner.
    let first = index_file(&nodes[0], &d).expect("an index beside the copy");
    for n in &nodes[1..] {
        assert_eq!(
            index_file(n, &d).as_ref(),
            Some(&first),
            "index on {}",
            n.url()
        );
    }
    // Both peers took the whole upload as it came: no push afterwards.
    assert_eq!(transfers(&nodes[0], "pipelined_append", "ok").await, 2);
    assert_eq!(transfers(&nodes[0], "pipelined_append", "error").await, 0);
    assert_eq!(transfers(&nodes[0], "push", "error").await, 0);
    for n in &nodes {
        assert_eq!(pull(n, &d).await.unwrap(), data, "via {}", n.url());
    }

    // A whole blob in one request goes to the other owners as it arrives,
    // and each copy is installed with the index the receiving node sends
    // once the bytes matched there: the same index on every owner.
    let mut one = vec![0u8; 3 << 20];
    rng.fill(&mut one[..]);
    let d1 = Oci::new(&nodes[1].url()).push_blob("acme/app", &one).await;
    wait_for(
        "a copy with its index on every owner",
        Duration::from_secs(20),
        || {
            let ok = nodes.iter().all(|n| index_file(n, &d1).is_some());
            async move { ok }
        },
    )
    .await;
    let first = index_file(&nodes[1], &d1).unwrap();
    for n in &nodes {
        assert_eq!(
            index_file(n, &d1).as_ref(),
            Some(&first),
            "index on {}",
            n.url()
        );
        assert_eq!(pull(n, &d1).await.unwrap(), one, "via {}", n.url());
    }

    // A wrong digest at the PUT: refused, and no copy anywhere.
    let other = &data[..3 << 20];
    let location = post_upload(&c, &nodes[1].url()).await;
    let location = patch_at(&c, &nodes[1].url(), &location, 0, other).await;
    let wrong = digest(b"something else");
    let sep = if location.contains('?') { '&' } else { '?' };
    let put = c
        .put(format!("{}{location}{sep}digest={wrong}", nodes[1].url()))
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), StatusCode::BAD_REQUEST);
    let v: Value = put.json().await.unwrap();
    assert_eq!(v["errors"][0]["code"], "DIGEST_INVALID");
    wait_for(
        "no session left after a wrong digest",
        Duration::from_secs(10),
        || {
            let ok = nodes.iter().all(|n| pipe_sessions(n).is_empty());
            async move { ok }
        },
    )
    .await;
    assert!(holders(&nodes, &wrong).is_empty());
    assert!(holders(&nodes, &digest(other)).is_empty());

    // A cancelled upload leaves nothing on the peers either.
    let location = post_upload(&c, &nodes[2].url()).await;
    let location = patch_at(&c, &nodes[2].url(), &location, 0, other).await;
    // The PATCH is answered before the peers' sessions need to exist.
    wait_for(
        "the cancelled upload's session on a peer",
        Duration::from_secs(10),
        || {
            let ok = pipe_sessions(&nodes[0]).len() == 1;
            async move { ok }
        },
    )
    .await;
    let del = c
        .delete(format!("{}{location}", nodes[2].url()))
        .send()
        .await
        .unwrap();
    assert_eq!(del.status(), StatusCode::NO_CONTENT);
    wait_for(
        "no session left after a cancel",
        Duration::from_secs(10),
        || {
            let ok = nodes.iter().all(|n| pipe_sessions(n).is_empty());
            async move { ok }
        },
    )
    .await;

    // A peer killed midway: the upload still succeeds on the two left.
    let mut data2 = vec![0u8; 5 << 20];
    rng.fill(&mut data2[..]);
    let d2 = digest(&data2);
    let location = post_upload(&c, &nodes[0].url()).await;
    let location = patch_at(&c, &nodes[0].url(), &location, 0, &data2[..2 << 20]).await;
    nodes[2].kill9();
    let location = patch_at(&c, &nodes[0].url(), &location, 2 << 20, &data2[2 << 20..]).await;
    let sep = if location.contains('?') { '&' } else { '?' };
    let put = c
        .put(format!("{}{location}{sep}digest={d2}", nodes[0].url()))
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), StatusCode::CREATED, "{:?}", put.text().await);
    assert_eq!(transfers(&nodes[0], "pipelined_append", "error").await, 1);
    wait_for(
        "copies on the two nodes left",
        Duration::from_secs(20),
        || {
            let ok = blob_path(&nodes[0], &d2).exists() && blob_path(&nodes[1], &d2).exists();
            async move { ok }
        },
    )
    .await;
    assert_eq!(pull(&nodes[1], &d2).await.unwrap(), data2);
    // Back up, node 3 gets its copy from the repair loop.
    nodes[2].restart().await;
    wait_for(
        "repair gives node 3 its copy",
        Duration::from_secs(60),
        || {
            let ok = blob_path(&nodes[2], &d2).exists();
            async move { ok }
        },
    )
    .await;
}

/// Node `id`'s storage report, as `tcr storage status` shows it.
fn storage_of(nodes: &[Node], id: u64) -> Value {
    let report = tcr_json(&nodes[0].url(), &["storage", "status"]);
    let v = report
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["nodeId"] == id)
        .cloned();
    v.map(|v| v["storage"].clone()).unwrap_or_default()
}

/// Where a node keeps its cached copy of `d`.
fn cache_path(node: &Node, d: &str) -> PathBuf {
    let hex = d.strip_prefix("sha256:").unwrap();
    node.dir
        .join("data/cache/blobs/sha256")
        .join(&hex[..2])
        .join(hex)
}

#[tokio::test]
async fn non_owners_keep_verified_copies_of_hot_blobs() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = start_cluster_with(dir.path(), 1).await;
    let data: Vec<u8> = (0..6u32 << 20)
        .map(|i| (i % 247) as u8 ^ (i >> 20) as u8)
        .collect();
    let d = Oci::new(&nodes[0].url()).push_blob("acme/app", &data).await;
    all_on_their_owners(&nodes, std::slice::from_ref(&d), Duration::from_secs(30)).await;
    let owner_id = owners(&nodes[0], &d).await[0];
    let owner = &nodes[owner_id as usize - 1];
    let readers: Vec<&Node> = nodes
        .iter()
        .enumerate()
        .filter(|(i, _)| *i as u64 + 1 != owner_id)
        .map(|(_, n)| n)
        .collect();
    let sent_before = transfers(owner, "served_read", "ok").await;

    // 32 pulls at once through the two non-owners: one transfer each.
    let dr = d.as_str();
    let pulls = readers
        .iter()
        .flat_map(|n| (0..16).map(move |_| pull(n, dr)));
    for body in futures::future::join_all(pulls).await {
        assert!(body.expect("a concurrent pull") == data, "a pull differs");
    }
    let sent = transfers(owner, "served_read", "ok").await - sent_before;
    assert!(
        (1..=2).contains(&sent),
        "the owner sent the blob {sent} times for 32 pulls through 2 non-owners"
    );
    // Later pulls are local to the non-owners.
    for n in &readers {
        assert!(pull(n, &d).await.unwrap() == data);
    }
    assert_eq!(
        transfers(owner, "served_read", "ok").await - sent_before,
        sent
    );
    // A cached copy is not a replica: only the owner holds the blob.
    assert_eq!(holders(&nodes, &d), vec![owner_id]);
    let report = tcr_json(&nodes[0].url(), &["storage", "status"]);
    for v in report.as_array().unwrap() {
        let cache = &v["storage"]["cache"];
        if v["nodeId"] == owner_id {
            assert_eq!(cache["blobs"], 0, "{v}");
        } else {
            assert_eq!(cache["blobs"], 1, "{v}");
            assert!(cache["hits"].as_u64().unwrap() >= 1, "{v}");
        }
    }

    a_rotten_cached_copy_is_cut_and_fetched_again(readers[0], &d, &data).await;
    the_only_copy_lost_is_repaired_from_a_cache(&nodes, owner_id, &d).await;
    a_node_that_becomes_the_owner_keeps_its_cached_copy(&nodes, owner_id, &d, &data).await;
    a_range_that_misses_fills_the_cache(&nodes).await;

    // Collected by GC: the caches let it go at their next storage pass.
    let ran = tcr_json(&nodes[0].url(), &["gc", "run", "--grace-period", "0s"]);
    assert!(ran.is_object(), "{ran}");
    wait_for(
        "the collected blob leaves the caches",
        Duration::from_secs(60),
        || {
            let gone = readers.iter().all(|n| !cache_path(n, &d).exists());
            async move { gone }
        },
    )
    .await;
}

/// The owner (R=1) loses its only copy: its repair finds no other
/// replica, and takes the blob from a node that has it cached (chunk-
/// checked there, SHA-256-checked on the way in).
async fn the_only_copy_lost_is_repaired_from_a_cache(nodes: &[Node], owner: u64, d: &str) {
    let p = blob_path(&nodes[owner as usize - 1], d);
    std::fs::remove_file(&p).unwrap();
    wait_for(
        "the owner's copy is back from a cache",
        Duration::from_secs(30),
        || {
            let back = std::fs::read(&p).is_ok_and(|b| digest(&b) == d);
            async move { back }
        },
    )
    .await;
    // Still the only replica: the caches did not become copies.
    assert_eq!(holders(nodes, d), vec![owner]);
}

/// The owner's weight drops to 0, so one of the two nodes that cached
/// the blob becomes its owner: it installs its cached copy (no pull from
/// the old owner), and the old owner then lets its copy go.
async fn a_node_that_becomes_the_owner_keeps_its_cached_copy(
    nodes: &[Node],
    old_owner: u64,
    d: &str,
    data: &[u8],
) {
    let storage = |id: u64| storage_of(nodes, id);
    let before: Vec<Value> = (1..=3).map(storage).collect();
    let id = old_owner.to_string();
    tcr_json(
        &nodes[0].url(),
        &["members", "set-weight", "--id", &id, "--weight", "0"],
    );
    wait_for(
        "the blob has a new owner",
        Duration::from_secs(10),
        || async { owners(&nodes[0], d).await.iter().all(|o| *o != old_owner) },
    )
    .await;
    let new_owner = owners(&nodes[0], d).await[0];
    let node = &nodes[new_owner as usize - 1];
    assert!(
        cache_path(node, d).exists(),
        "node {new_owner} has no cached copy"
    );
    wait_for(
        "the new owner holds the blob and the old one let it go",
        Duration::from_secs(60),
        || {
            let moved = holders(nodes, d) == vec![new_owner];
            async move { moved }
        },
    )
    .await;
    let after = storage(new_owner);
    let was = &before[new_owner as usize - 1];
    assert_eq!(after["promoted"].as_u64(), Some(1), "{after}");
    assert_eq!(
        after["pulled"], was["pulled"],
        "node {new_owner} pulled it: {after}"
    );
    assert_eq!(after["cache"]["blobs"], 0, "{after}");
    assert!(
        !cache_path(node, d).exists(),
        "still cached as well as stored"
    );
    assert!(pull(node, d).await.unwrap() == data);
}

/// A range through a non-owner that has not cached the blob (a client
/// resuming, a lazy-pulling snapshotter) is served from the owner at once
/// and brings the whole blob into that node's cache: later ranges through
/// it are local (the owner sends nothing more) and still exact.
async fn a_range_that_misses_fills_the_cache(nodes: &[Node]) {
    let data: Vec<u8> = (0..5u32 << 20)
        .map(|i| (i % 233) as u8 ^ (i >> 16) as u8)
        .collect();
    let d = Oci::new(&nodes[0].url()).push_blob("acme/app", &data).await;
    all_on_their_owners(nodes, std::slice::from_ref(&d), Duration::from_secs(30)).await;
    let owner_id = owners(&nodes[0], &d).await[0];
    let owner = &nodes[owner_id as usize - 1];
    let reader_id = (1..=3u64).find(|id| *id != owner_id).unwrap();
    let reader = &nodes[reader_id as usize - 1];
    let fills_before = storage_of(nodes, reader_id)["cache"]["fills"]
        .as_u64()
        .unwrap();
    let want = |from: u64, to: u64| &data[from as usize..=to as usize];

    let (from, to) = ((2u64 << 20) + 10, (3u64 << 20) + 99);
    let first = range(reader, &d, from, to).await.expect("the first range");
    assert!(first == want(from, to), "the first range differs");
    wait_for(
        "the range miss brings the blob into the cache",
        Duration::from_secs(30),
        || {
            let fills = storage_of(nodes, reader_id)["cache"]["fills"].as_u64();
            async move { fills > Some(fills_before) }
        },
    )
    .await;
    assert!(
        std::fs::read(cache_path(reader, &d)).is_ok_and(|b| b == data),
        "the cached copy differs"
    );
    let sent = transfers(owner, "served_read", "ok").await;
    for k in 0..5u64 {
        let (from, to) = ((k << 20) + 7 * k, (k << 20) + 300_000);
        let body = range(reader, &d, from, to).await.expect("a later range");
        assert!(body == want(from, to), "range {from}-{to} differs");
    }
    assert_eq!(
        transfers(owner, "served_read", "ok").await,
        sent,
        "ranges through a node with the blob cached went to the owner"
    );
    // Still only the owner holds a replica.
    assert_eq!(holders(nodes, &d), vec![owner_id]);
}

/// A cached copy rots: a pull through that node is cut before the bad
/// chunk, and the next pull fetches the blob from its owner again.
async fn a_rotten_cached_copy_is_cut_and_fetched_again(node: &Node, d: &str, data: &[u8]) {
    let p = cache_path(node, d);
    let mut bytes = std::fs::read(&p).unwrap();
    bytes[(3 << 20) + 5] ^= 0x20;
    std::fs::write(&p, bytes).unwrap();
    assert!(
        pull(node, d).await.is_err(),
        "a rotten cached copy was served whole"
    );
    let body = retried("a good pull", || pull(node, d)).await;
    assert!(body == data, "a pull after the rot differs");
    // The copy is kept once the fill beside that pull is installed.
    wait_for(
        "the cache holds a good copy again",
        Duration::from_secs(20),
        || {
            let healed = std::fs::read(&p).is_ok_and(|b| digest(&b) == d);
            async move { healed }
        },
    )
    .await;
}
