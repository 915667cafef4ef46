//! Namespace limits and metering: immutable tags and storage quotas refuse
//! real `docker push`es with a clear message and nothing half-written;
//! stored bytes count each unique blob and manifest once per namespace; and
//! gigabyte-hours accrue from the leader's Raft-committed ticks without
//! double counting across a leader change.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;
use tcr_tests::harness::{cluster, run_env, tcr, tcr_json, wait_for, Node};
use tcr_tests::images::{digest, tar, Image, OCI_MANIFEST};
use tcr_tests::oci::Oci;

async fn usage(node: &Node, ns: &str) -> Value {
    reqwest::get(format!(
        "{}/v1/container-registries/namespaces/{ns}/usage",
        node.url()
    ))
    .await
    .unwrap()
    .json()
    .await
    .unwrap()
}

/// `docker push` that must fail; returns what docker printed.
fn push_refused(cfg: &std::path::Path, image: &str) -> String {
    let out = std::process::Command::new("docker")
        .args(["push", image])
        .env("DOCKER_CONFIG", cfg)
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "docker push {image} should be refused"
    );
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[tokio::test]
async fn immutable_tags_and_quotas_refuse_docker_pushes() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(&dir.path().join("node")).await;
    node.create_namespace("fixed", "private").await;
    node.create_namespace("small", "private").await;
    tcr_json(
        &node.url(),
        &["namespaces", "set-limits", "fixed", "--immutable-tag", "v*"],
    );
    let cfg = dir.path().join("docker");
    std::fs::create_dir_all(&cfg).unwrap();
    let env = [("DOCKER_CONFIG", cfg.to_str().unwrap())];
    let docker = |args: &[&str]| run_env("docker", args, &env);
    let import = |marker: &str, image: &str| {
        let t = dir.path().join(format!("{marker}.tar"));
        let body = format!("{marker} {}", node.http_port);
        std::fs::write(&t, tar(&[("hello.txt", body.as_bytes())])).unwrap();
        docker(&["import", t.to_str().unwrap(), image]);
    };
    let h = node.host();

    // Immutable: v1 cannot move; latest can.
    let v1 = format!("{h}/fixed/app:v1");
    import("first", &v1);
    docker(&["push", &v1]);
    let first = Oci::new(&node.url())
        .get("/v2/fixed/app/manifests/v1")
        .await
        .headers()["docker-content-digest"]
        .to_str()
        .unwrap()
        .to_string();
    import("second", &v1);
    let said = push_refused(&cfg, &v1);
    assert!(said.contains("immutable"), "{said}");
    let now = Oci::new(&node.url())
        .get("/v2/fixed/app/manifests/v1")
        .await;
    assert_eq!(
        now.headers()["docker-content-digest"].to_str().unwrap(),
        first
    );
    let latest = format!("{h}/fixed/app:latest");
    docker(&["tag", &v1, &latest]);
    docker(&["push", &latest]);
    import("third", &latest);
    docker(&["push", &latest]);
    // Nor can it be deleted.
    let del = reqwest::Client::new()
        .delete(format!("{}/v2/fixed/app/manifests/v1", node.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(del.status(), StatusCode::FORBIDDEN);

    // Quota: room for one image, not for a second.
    let one = format!("{h}/small/app:one");
    import("quota one", &one);
    docker(&["push", &one]);
    let used = usage(&node, "small").await["bytes"].as_u64().unwrap();
    assert!(used > 0);
    tcr_json(
        &node.url(),
        &[
            "namespaces",
            "set-limits",
            "small",
            "--quota",
            &(used + 10).to_string(),
        ],
    );
    let two = format!("{h}/small/app:two");
    import("quota two, a different layer", &two);
    let said = push_refused(&cfg, &two);
    assert!(said.contains("quota"), "{said}");
    let after = usage(&node, "small").await;
    assert_eq!(
        after["bytes"].as_u64().unwrap(),
        used,
        "nothing half-written"
    );
    assert_eq!(after["quotaBytes"].as_u64().unwrap(), used + 10);
    let tags: Value = Oci::new(&node.url())
        .get("/v2/small/app/tags/list")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(tags["tags"], serde_json::json!(["one"]));
    // The same image again adds nothing, so it is not refused.
    docker(&["tag", &one, &format!("{h}/small/app:again")]);
    docker(&["push", &format!("{h}/small/app:again")]);
    // Lifting the quota lets the push through.
    tcr_json(
        &node.url(),
        &["namespaces", "set-limits", "small", "--no-quota"],
    );
    docker(&["push", &two]);
    for i in [&v1, &latest, &one, &two] {
        let _ = std::process::Command::new("docker")
            .args(["rmi", i])
            .env("DOCKER_CONFIG", &cfg)
            .output();
    }
}

#[tokio::test]
async fn stored_bytes_and_gigabyte_hours_survive_a_leader_change() {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = cluster(dir.path(), 3, &[], &["--metering-interval-secs", "0.5"]).await;
    nodes[0].create_namespace("m", "private").await;
    let oci = Oci::new(&nodes[1].url());
    let config = vec![b'c'; 1000];
    let layer = vec![b'l'; 2500];
    let img = Image::new("metering", "amd64");
    // The same two blobs in two repositories, through different nodes, and
    // one manifest referencing them in both.
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest(&config), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": digest(&layer), "size": layer.len()}],
    }))
    .unwrap();
    for (i, repo) in ["m/a", "m/b"].into_iter().enumerate() {
        let o = Oci::new(&nodes[i].url());
        o.push_blob(repo, &config).await;
        o.push_blob(repo, &layer).await;
        let r = o.put_manifest(repo, "v1", OCI_MANIFEST, &manifest).await;
        assert_eq!(r.status(), StatusCode::CREATED);
    }
    // A blob of another namespace does not count here.
    nodes[0].create_namespace("other", "private").await;
    oci.push_blob("other/x", &img.layer).await;
    let expect = (config.len() + layer.len() + manifest.len()) as u64;
    for n in &nodes {
        let u = usage(n, "m").await;
        assert_eq!(u["bytes"].as_u64(), Some(expect), "{u}");
        assert_eq!(
            (u["blobs"].as_u64(), u["manifests"].as_u64()),
            (Some(2), Some(1))
        );
    }

    // Ticks accrue bytes x seconds.
    wait_for(
        "a metering tick after the pushes",
        Duration::from_secs(10),
        || async {
            usage(&nodes[0], "m").await["byteSeconds"]
                .as_u64()
                .unwrap_or(0)
                > 0
        },
    )
    .await;
    let before = usage(&nodes[0], "m").await;
    let (m1, s1) = (
        before["meteredAt"].as_u64().unwrap(),
        before["byteSeconds"].as_u64().unwrap(),
    );
    let status: Value = reqwest::get(format!(
        "{}/v1/container-registries/cluster",
        nodes[0].url()
    ))
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let leader = status["leader"].as_u64().unwrap() as usize - 1;
    nodes[leader].kill9();
    let survivors: Vec<usize> = (0..3).filter(|i| *i != leader).collect();
    // A new leader keeps ticking; every figure any node reports is the one
    // the ticks since (m1, s1) account for: no interval counted twice or lost.
    wait_for(
        "ticks from the new leader",
        Duration::from_secs(30),
        || async {
            let u = usage(&nodes[survivors[0]], "m").await;
            u["meteredAt"].as_u64().unwrap_or(0) >= m1 + 3
        },
    )
    .await;
    for &i in &survivors {
        let u = usage(&nodes[i], "m").await;
        let (m2, s2) = (
            u["meteredAt"].as_u64().unwrap(),
            u["byteSeconds"].as_u64().unwrap(),
        );
        assert!(m2 > m1);
        assert_eq!(s2 - s1, expect * (m2 - m1), "node {}: {u}", i + 1);
        let gb_hours = u["gigabyteHours"].as_f64().unwrap();
        assert!((gb_hours - s2 as f64 / 3600.0 / 1e9).abs() < 1e-12);
    }
    // Prometheus shows the same bytes.
    let metrics = reqwest::get(format!("{}/metrics", nodes[survivors[1]].url()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(&format!(
            "tcr_namespace_stored_bytes{{namespace=\"m\"}} {expect}"
        )),
        "{metrics}"
    );

    // Day by day: the days so far (none, or today's if the test crossed
    // midnight UTC) and now, which is the usage as of the last tick.
    let node = &nodes[survivors[0]];
    let days = tcr_json(&node.url(), &["usage", "m", "--days", "7"]);
    let now = &days["now"];
    assert_eq!(now["bytes"].as_u64(), Some(expect), "{days}");
    assert!(now["at"].as_u64().unwrap() > m1, "{days}");
    let per_day = days["days"].as_array().unwrap();
    assert!(per_day.len() <= 1, "{days}");
    for d in per_day {
        assert_eq!(d["bytes"].as_u64(), Some(expect), "{days}");
    }
    let human = tcr(&node.url(), &["usage", "m", "--days", "7"]);
    let printed = String::from_utf8_lossy(&human.stdout);
    assert!(
        printed.contains(&format!("now: {expect} bytes")),
        "{printed}"
    );
    // An organisation-less namespace's days, and bad windows and names.
    for (path, status) in [
        ("namespaces/m/usage/days?days=0", StatusCode::BAD_REQUEST),
        ("namespaces/m/usage/days?days=401", StatusCode::BAD_REQUEST),
        ("namespaces/m/usage/days?days=1e3", StatusCode::BAD_REQUEST),
        ("namespaces/nope/usage/days", StatusCode::NOT_FOUND),
        ("organisations/nope/usage/days", StatusCode::NOT_FOUND),
    ] {
        let r = reqwest::get(format!("{}/v1/container-registries/{path}", node.url()))
            .await
            .unwrap();
        assert_eq!(r.status(), status, "{path}");
        let body: Value = r.json().await.unwrap();
        assert!(
            body["error"]["message"].as_str().is_some(),
            "{path}: {body}"
        );
    }
    let bad = tcr(&node.url(), &["usage", "m", "--days", "0"]);
    assert!(!bad.status.success());
}
