//! Retention policies on real clusters: every rule kind, protected
//! patterns, tag filters, untagged manifests, index children and
//! referrers; the preview lists exactly what the run then removes (the
//! audit record and the registry agree); blobs the removals free are
//! reclaimed by GC; pull times reach Raft in batches; and a leader killed
//! with SIGKILL in the middle of a run leaves the state of one complete run.

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::StatusCode;
use serde_json::{json, Value};
use tcr_tests::harness::{cluster, tcr, tcr_json, wait_for, Node};
use tcr_tests::images::{digest, OCI_INDEX, OCI_MANIFEST};
use tcr_tests::oci::Oci;

const CONFIG: &[u8] = b"{\"architecture\":\"amd64\",\"os\":\"linux\"}";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// An image manifest with the shared config and its own layer; pushes
/// both blobs. Returns (manifest bytes, digest, layer digest).
async fn image(oci: &Oci, repo: &str, marker: &str) -> (Vec<u8>, String, String) {
    let layer = format!("layer of {marker}").into_bytes();
    oci.push_blob(repo, CONFIG).await;
    let layer_digest = oci.push_blob(repo, &layer).await;
    let m = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest(CONFIG), "size": CONFIG.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer_digest, "size": layer.len()}],
    }))
    .unwrap();
    let d = digest(&m);
    (m, d, layer_digest)
}

/// Push `marker`'s image under `reference` (a tag or its digest).
async fn push(oci: &Oci, repo: &str, marker: &str, reference: Option<&str>) -> String {
    let (m, d, _) = image(oci, repo, marker).await;
    let r = oci
        .put_manifest(repo, reference.unwrap_or(&d), OCI_MANIFEST, &m)
        .await;
    assert_eq!(r.status(), StatusCode::CREATED, "push {repo}:{marker}");
    d
}

/// A referrer (an artifact whose subject is `subject`), pushed by digest.
async fn push_referrer(oci: &Oci, repo: &str, subject: &str, marker: &str) -> String {
    let empty = oci.push_blob(repo, b"{}").await;
    let m = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": "application/vnd.example.signature",
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty, "size": 2},
        "layers": [],
        "subject": {"mediaType": OCI_MANIFEST, "digest": subject, "size": 1},
        "annotations": {"marker": marker},
    }))
    .unwrap();
    let d = digest(&m);
    let r = oci.put_manifest(repo, &d, OCI_MANIFEST, &m).await;
    assert_eq!(r.status(), StatusCode::CREATED, "push referrer {marker}");
    d
}

async fn manifest_status(oci: &Oci, repo: &str, reference: &str) -> StatusCode {
    oci.http
        .head(oci.url(&format!("/v2/{repo}/manifests/{reference}")))
        .header("accept", format!("{OCI_MANIFEST}, {OCI_INDEX}"))
        .send()
        .await
        .unwrap()
        .status()
}

async fn tags(node: &Node, repo: &str) -> Vec<Value> {
    let v: Value = node
        .client()
        .get(format!(
            "{}/v1/container-registries/repositories/{}/tags",
            node.url(),
            repo.replace('/', "%2F")
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["tags"].as_array().cloned().unwrap_or_default()
}

async fn tag_names(node: &Node, repo: &str) -> BTreeSet<String> {
    tags(node, repo)
        .await
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_string())
        .collect()
}

/// Pull `tag` with a GET and wait until its pull time is in Raft.
async fn pull_and_wait(oci: &Oci, node: &Node, repo: &str, tag: &str) {
    let r = oci
        .http
        .get(oci.url(&format!("/v2/{repo}/manifests/{tag}")))
        .header("accept", OCI_MANIFEST)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    wait_for(
        &format!("the pull of {repo}:{tag} flushed into Raft"),
        Duration::from_secs(15),
        || async {
            tags(node, repo)
                .await
                .iter()
                .any(|t| t["name"] == tag && t["lastPulledAtMs"].as_u64().is_some())
        },
    )
    .await;
}

fn set_policy(node: &Node, ns: &str, policy: &Value) {
    let file = node.dir.join(format!("policy-{ns}.json"));
    std::fs::write(&file, serde_json::to_vec(policy).unwrap()).unwrap();
    tcr_json(
        &node.url(),
        &["retention", "set", ns, "--file", file.to_str().unwrap()],
    );
}

/// (repository, tag or "", digest) of each removal in a preview or an audit record.
fn removals(list: &Value) -> BTreeSet<(String, String, String)> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["repository"].as_str().unwrap().to_string(),
                r["tag"].as_str().unwrap_or("").to_string(),
                r["digest"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn expect(items: &[(&str, &str, &str)]) -> BTreeSet<(String, String, String)> {
    items
        .iter()
        .map(|(r, t, d)| (r.to_string(), t.to_string(), d.to_string()))
        .collect()
}

/// Preview, run with `tcr retention run`, and check that the preview, the
/// run's audit record and `expected` are the same set; returns the run.
fn preview_then_run(node: &Node, ns: &str, expected: &BTreeSet<(String, String, String)>) -> Value {
    let preview = tcr_json(&node.url(), &["retention", "preview", ns]);
    assert_eq!(&removals(&preview["removals"]), expected, "preview of {ns}");
    let run = tcr_json(&node.url(), &["retention", "run", ns]);
    assert!(run["finishedAt"].as_u64().is_some(), "{run}");
    assert_eq!(&removals(&run["removed"]), expected, "run of {ns}");
    let tags = expected.iter().filter(|r| !r.1.is_empty()).count() as u64;
    assert_eq!(run["tagsRemoved"].as_u64(), Some(tags));
    assert_eq!(
        run["manifestsRemoved"].as_u64(),
        Some(expected.len() as u64 - tags)
    );
    run
}

#[tokio::test]
async fn every_rule_kind_removes_what_its_preview_listed() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = cluster(
        dir.path(),
        3,
        &[],
        &["--pull-flush-secs", "0.2", "--retention-interval-secs", "0"],
    )
    .await;
    let oci: Vec<Oci> = nodes.iter().map(|n| Oci::new(&n.url())).collect();
    for ns in ["pushed", "pulled", "within", "filters", "untagged"] {
        nodes[0].create_namespace(ns, "private").await;
    }

    let (d1, d2) = keep_last_pushed(&nodes, &oci).await;
    let pulled = keep_last_pulled(&nodes, &oci).await;
    let rel1 = tag_filters(&nodes, &oci).await;
    let untagged = untagged_children_and_referrers(&nodes, &oci).await;
    within_windows_remove_what_is_older(&nodes, &oci).await;

    let r = "pushed/app";
    preview_then_run(
        &nodes[2],
        "pushed",
        &expect(&[(r, "x1", &d1), (r, "x2", &d2), (r, "", &d2)]),
    );
    assert_eq!(
        tag_names(&nodes[0], r).await,
        ["latest", "x3", "x4"].map(String::from).into()
    );
    assert_eq!(manifest_status(&oci[1], r, &d1).await, StatusCode::OK);
    assert_eq!(
        manifest_status(&oci[1], r, &d2).await,
        StatusCode::NOT_FOUND
    );

    let r = "pulled/app";
    preview_then_run(
        &nodes[0],
        "pulled",
        &expect(&[
            (r, "p1", &pulled[0]),
            (r, "p4", &pulled[3]),
            (r, "", &pulled[0]),
            (r, "", &pulled[3]),
        ]),
    );
    assert_eq!(
        tag_names(&nodes[1], r).await,
        ["p2", "p3"].map(String::from).into()
    );

    let r = "filters/app";
    preview_then_run(
        &nodes[1],
        "filters",
        &expect(&[(r, "rel-1", &rel1), (r, "", &rel1)]),
    );
    assert_eq!(
        tag_names(&nodes[2], r).await,
        ["dev-1", "rel-2", "rel-keep-1"].map(String::from).into()
    );

    untagged_go_with_their_referrers(&nodes, &oci, &untagged).await;

    // A second run finds nothing more; the audit lists both, newest first.
    let again = tcr_json(&nodes[2].url(), &["retention", "run", "untagged"]);
    assert_eq!(again["removed"], json!([]));
    let runs = tcr_json(&nodes[0].url(), &["retention", "runs", "untagged"]);
    let runs = runs["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 2);
    assert_eq!(runs[0]["id"], again["id"]);
    assert_eq!(runs[1]["manifestsRemoved"].as_u64(), Some(3));

    // The layer only the removed x2 used is reclaimed by GC; the shared
    // config stays.
    let layer_of_two = digest(b"layer of two");
    let gc = tcr_json(&nodes[0].url(), &["gc", "run", "--grace-period", "0s"]);
    assert!(gc["collected"].as_u64().unwrap() >= 1, "{gc}");
    let blob = |o: &Oci, d: String| {
        let url = o.url(&format!("/v2/pushed/app/blobs/{d}"));
        let c = o.http.clone();
        async move { c.head(url).send().await.unwrap().status() }
    };
    assert_eq!(blob(&oci[2], layer_of_two).await, StatusCode::NOT_FOUND);
    assert_eq!(blob(&oci[2], digest(CONFIG)).await, StatusCode::OK);
    bad_policies_are_refused(&nodes[0]).await;
}

/// Policy: keep the last 2 pushed, protect lat*; returns the digests of
/// one and two.
async fn keep_last_pushed(nodes: &[Node], oci: &[Oci]) -> (String, String) {
    // keep last N pushed, a protected tag, and a digest shared by a
    // removed and a kept tag.
    let r = "pushed/app";
    push(&oci[0], r, "latest", Some("latest")).await;
    let d1 = push(&oci[1], r, "one", Some("x1")).await;
    let d2 = push(&oci[2], r, "two", Some("x2")).await;
    push(&oci[0], r, "three", Some("x3")).await;
    assert_eq!(push(&oci[1], r, "one", Some("x4")).await, d1);
    set_policy(
        &nodes[0],
        "pushed",
        &json!({"rules": [{"keep": "lastPushed", "count": 2}], "protect": ["lat*"]}),
    );
    (d1, d2)
}

async fn keep_last_pulled(nodes: &[Node], oci: &[Oci]) -> Vec<String> {
    // keep last N pulled: p1 pulled first, then p3, then p2; p4 never.
    let r = "pulled/app";
    let mut pulled = Vec::new();
    for t in ["p1", "p2", "p3", "p4"] {
        pulled.push(push(&oci[0], r, t, Some(t)).await);
    }
    pull_and_wait(&oci[1], &nodes[0], r, "p1").await;
    pull_and_wait(&oci[2], &nodes[0], r, "p3").await;
    pull_and_wait(&oci[0], &nodes[0], r, "p2").await;
    set_policy(
        &nodes[0],
        "pulled",
        &json!({"rules": [{"keep": "lastPulled", "count": 2}]}),
    );
    pulled
}

async fn tag_filters(nodes: &[Node], oci: &[Oci]) -> String {
    // tag filters: only rel-*, never rel-keep*; dev-1 is out of scope.
    let r = "filters/app";
    push(&oci[0], r, "dev", Some("dev-1")).await;
    let rel1 = push(&oci[1], r, "rel1", Some("rel-1")).await;
    push(&oci[2], r, "rel2", Some("rel-2")).await;
    push(&oci[0], r, "relkeep", Some("rel-keep-1")).await;
    set_policy(
        &nodes[0],
        "filters",
        &json!({"rules": [{"keep": "lastPushed", "count": 1, "tags": ["rel-*"], "excludeTags": ["rel-keep*"]}]}),
    );
    rel1
}

/// The manifests of the untagged namespace the checks name.
struct Untagged {
    kept: String,
    gone: String,
    sig_kept: String,
    sig_gone: String,
    loose: String,
    c1: String,
    c2: String,
}

async fn untagged_children_and_referrers(nodes: &[Node], oci: &[Oci]) -> Untagged {
    // untagged manifests, index children, referrers.
    let r = "untagged/app";
    let kept = push(&oci[0], r, "kept", Some("keep")).await;
    let gone = push(&oci[1], r, "gone", Some("gone")).await;
    let sig_kept = push_referrer(&oci[2], r, &kept, "sig of kept").await;
    let sig_gone = push_referrer(&oci[0], r, &gone, "sig of gone").await;
    let loose = push(&oci[1], r, "loose", None).await;
    let (c1, c2) = (
        push(&oci[2], r, "child1", None).await,
        push(&oci[0], r, "child2", None).await,
    );
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [
            {"mediaType": OCI_MANIFEST, "digest": c1, "size": 1, "platform": {"architecture": "amd64", "os": "linux"}},
            {"mediaType": OCI_MANIFEST, "digest": c2, "size": 1, "platform": {"architecture": "arm64", "os": "linux"}},
        ],
    }))
    .unwrap();
    let resp = oci[1].put_manifest(r, "multi", OCI_INDEX, &index).await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    set_policy(
        &nodes[0],
        "untagged",
        &json!({
            "rules": [{"keep": "lastPushed", "count": 0}],
            "protect": ["keep", "multi"],
            "untaggedOlderThanSecs": 3,
            "removeReferrers": true,
        }),
    );
    Untagged {
        kept,
        gone,
        sig_kept,
        sig_gone,
        loose,
        c1,
        c2,
    }
}

async fn within_windows_remove_what_is_older(nodes: &[Node], oci: &[Oci]) {
    // pushed-within and pulled-within: old ones now, new ones after a gap
    // longer than the window (6 s), in one policy with two scoped rules.
    let r = "within/app";
    let w_old = push(&oci[0], r, "w-old", Some("w-old")).await;
    let q_old = push(&oci[1], r, "q-old", Some("q-old")).await;
    let q_never = push(&oci[2], r, "q-never", Some("q-never")).await;
    pull_and_wait(&oci[0], &nodes[0], r, "q-old").await;
    let t0 = now();
    wait_for(
        "8 s past the old pushes",
        Duration::from_secs(20),
        || async { now() >= t0 + 8 },
    )
    .await;
    push(&oci[1], r, "w-new", Some("w-new")).await;
    push(&oci[2], r, "q-new", Some("q-new")).await;
    pull_and_wait(&oci[0], &nodes[0], r, "q-new").await;
    set_policy(
        &nodes[0],
        "within",
        &json!({"rules": [
            {"keep": "pushedWithin", "withinSecs": 6, "tags": ["w-*"]},
            {"keep": "pulledWithin", "withinSecs": 6, "tags": ["q-*"]},
        ]}),
    );

    // Each preview equals its run; then the registry shows the result.
    preview_then_run(
        &nodes[1],
        "within",
        &expect(&[
            (r, "w-old", &w_old),
            (r, "q-old", &q_old),
            (r, "q-never", &q_never),
            (r, "", &w_old),
            (r, "", &q_old),
            (r, "", &q_never),
        ]),
    );
    assert_eq!(
        tag_names(&nodes[2], r).await,
        ["q-new", "w-new"].map(String::from).into()
    );
}

async fn untagged_go_with_their_referrers(nodes: &[Node], oci: &[Oci], u: &Untagged) {
    let kept = u.kept.clone();
    let gone = u.gone.clone();
    let sig_kept = u.sig_kept.clone();
    let sig_gone = u.sig_gone.clone();
    let loose = u.loose.clone();
    let c1 = u.c1.clone();
    let c2 = u.c2.clone();
    // The untagged ones have been there for more than 3 s by now.
    let r = "untagged/app";
    preview_then_run(
        &nodes[0],
        "untagged",
        &expect(&[
            (r, "gone", &gone),
            (r, "", &gone),
            (r, "", &sig_gone),
            (r, "", &loose),
        ]),
    );
    for d in [&kept, &sig_kept, &c1, &c2] {
        assert_eq!(manifest_status(&oci[2], r, d).await, StatusCode::OK, "{d}");
    }
    for d in [&gone, &sig_gone, &loose] {
        assert_eq!(
            manifest_status(&oci[2], r, d).await,
            StatusCode::NOT_FOUND,
            "{d}"
        );
    }
    assert_eq!(
        tag_names(&nodes[1], r).await,
        ["keep", "multi"].map(String::from).into()
    );
}

async fn bad_policies_are_refused(node: &Node) {
    // Bad policies are refused with the reason.
    let out = tcr(
        &node.url(),
        &[
            "retention",
            "set",
            "pushed",
            "--keep-last-pushed",
            "2",
            "--protect",
            "",
        ],
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("protect"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let resp = node
        .client()
        .put(format!(
            "{}/v1/container-registries/namespaces/pushed/retention-policy",
            node.url()
        ))
        .json(&json!({"rules": [{"keep": "lastPushed", "withinSecs": 5}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn a_leader_killed_mid_run_leaves_the_state_of_one_complete_run() {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = cluster(
        dir.path(),
        3,
        &[],
        &[
            "--retention-interval-secs",
            "0",
            // Slow the run down so that the kill lands in the middle of it.
            "--retention-pause-ms",
            "150",
        ],
    )
    .await;
    nodes[0].create_namespace("bulk", "private").await;
    let repos: Vec<String> = (0..24).map(|i| format!("bulk/r{i:02}")).collect();
    let mut expected = BTreeSet::new();
    for (i, repo) in repos.iter().enumerate() {
        let oci = Oci::new(&nodes[i % 3].url());
        for t in 0..4 {
            let d = push(&oci, repo, &format!("{repo} {t}"), Some(&format!("t{t}"))).await;
            if t < 3 {
                expected.insert((repo.clone(), format!("t{t}"), d.clone()));
                expected.insert((repo.clone(), String::new(), d));
            }
        }
    }
    set_policy(
        &nodes[0],
        "bulk",
        &json!({"rules": [{"keep": "lastPushed", "count": 1}]}),
    );
    let preview = tcr_json(&nodes[0].url(), &["retention", "preview", "bulk"]);
    assert_eq!(removals(&preview["removals"]), expected);

    let started = tcr_json(&nodes[1].url(), &["retention", "run", "bulk", "--no-wait"]);
    let id = started["id"].as_str().unwrap().to_string();
    let run_of = |node: &Node| {
        let url = format!(
            "{}/v1/container-registries/namespaces/bulk/retention-runs/{id}",
            node.url()
        );
        let c = node.client();
        async move {
            match c.get(url).send().await {
                Ok(r) if r.status() == StatusCode::OK => r.json::<Value>().await.ok(),
                _ => None,
            }
        }
    };
    wait_for("the run under way", Duration::from_secs(30), || async {
        run_of(&nodes[0])
            .await
            .is_some_and(|r| r["repositoriesDone"].as_u64().unwrap_or(0) >= 3)
    })
    .await;
    let status: Value = nodes[0]
        .client()
        .get(format!(
            "{}/v1/container-registries/cluster",
            nodes[0].url()
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let leader = status["leader"].as_u64().unwrap() as usize - 1;
    let mid = run_of(&nodes[leader]).await.unwrap();
    assert!(
        mid["finishedAt"].is_null(),
        "the run finished before the kill: {mid}"
    );
    nodes[leader].kill9();
    let other = (leader + 1) % 3;
    wait_for(
        "the next leader to finish the run",
        Duration::from_secs(60),
        || async {
            run_of(&nodes[other])
                .await
                .is_some_and(|r| r["finishedAt"].as_u64().is_some())
        },
    )
    .await;
    let run = run_of(&nodes[other]).await.unwrap();
    // Nothing removed twice, nothing left out.
    let listed = run["removed"].as_array().unwrap().len();
    assert_eq!(listed, expected.len(), "duplicates in the audit record");
    assert_eq!(removals(&run["removed"]), expected);
    assert_eq!(run["repositoriesDone"].as_u64(), Some(24));
    assert_eq!(run["tagsRemoved"].as_u64(), Some(72));
    assert_eq!(run["manifestsRemoved"].as_u64(), Some(72));

    // The killed node comes back and agrees.
    nodes[leader].restart().await;
    for repo in &repos {
        assert_eq!(
            tag_names(&nodes[leader], repo).await,
            BTreeSet::from(["t3".to_string()]),
            "{repo}"
        );
    }
    let again = tcr_json(&nodes[leader].url(), &["retention", "preview", "bulk"]);
    assert_eq!(again["removals"], json!([]));

    // A schedule starts runs by itself.
    tcr_json(
        &nodes[0].url(),
        &["cluster", "set", "retention-interval", "2s"],
    );
    wait_for("a scheduled run", Duration::from_secs(30), || async {
        let runs = tcr_json(&nodes[other].url(), &["retention", "runs", "bulk"]);
        runs["runs"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["trigger"] == "schedule" && r["finishedAt"].as_u64().is_some())
    })
    .await;
}
