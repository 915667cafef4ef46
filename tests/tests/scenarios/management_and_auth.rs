//! The management API, the admin-token and open-mode contracts, metrics.

use std::process::Command;

use reqwest::StatusCode;
use serde_json::{json, Value};
use tcr_tests::harness::{bin, free_port, tcr_json, Node};
use tcr_tests::oci::Oci;

#[tokio::test]
async fn namespaces_and_repositories() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path()).await;
    let c = reqwest::Client::new();
    let base = format!("{}/v1/container-registries", node.url());
    let resp = c
        .post(format!("{base}/namespaces"))
        .json(&json!({"name": "acme", "visibility": "public"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(
        (v["name"].as_str(), v["visibility"].as_str()),
        (Some("acme"), Some("public"))
    );
    let again = c
        .post(format!("{base}/namespaces"))
        .json(&json!({"name": "acme"}))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::CONFLICT);
    let v: Value = again.json().await.unwrap();
    assert_eq!(v["error"]["code"], "ALREADY_EXISTS");

    c.post(format!("{base}/namespaces"))
        .json(&json!({"name": "beta"}))
        .send()
        .await
        .unwrap();
    let v: Value = c
        .get(format!("{base}/namespaces"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let names: Vec<&str> = v["namespaces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["acme", "beta"]);
    let v: Value = c
        .get(format!("{base}/namespaces/beta"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["visibility"], "private");

    let resp = c
        .patch(format!("{base}/namespaces/beta"))
        .json(&json!({"visibility": "public"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let v: Value = c
        .get(format!("{base}/namespaces/beta"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["visibility"], "public");

    let oci = Oci::new(&node.url());
    oci.push_blob("acme/web", b"1").await;
    oci.push_blob("acme/team/api", b"2").await;
    oci.push_blob("beta/other", b"3").await;
    let v: Value = c
        .get(format!("{base}/namespaces/acme/repositories"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let repos: Vec<&str> = v["repositories"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(repos, ["acme/team/api", "acme/web"]);
    let missing = c
        .get(format!("{base}/namespaces/nope/repositories"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);

    let spec: Value = c
        .get(format!("{base}/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(spec["openapi"].as_str().unwrap().starts_with("3."));
    assert!(spec["paths"]["/v1/container-registries/namespaces"]["post"].is_object());
}

#[tokio::test]
async fn tcr_cli_manages_namespaces() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path()).await;
    let tcr = bin("tcr");
    let out = Command::new(&tcr)
        .args([
            "--endpoint",
            &node.url(),
            "namespaces",
            "create",
            "acme",
            "--visibility",
            "public",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new(&tcr)
        .args([
            "--endpoint",
            &node.url(),
            "--output",
            "json",
            "namespaces",
            "list",
        ])
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["namespaces"][0]["name"], "acme");
    let human = Command::new(&tcr)
        .args(["--endpoint", &node.url(), "namespaces", "list"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&human.stdout);
    assert!(
        text.contains("NAME") && text.contains("acme") && text.contains("public"),
        "{text}"
    );
    // A clear error when the endpoint is down.
    let down = Command::new(&tcr)
        .args([
            "--endpoint",
            &format!("http://127.0.0.1:{}", free_port()),
            "namespaces",
            "list",
        ])
        .output()
        .unwrap();
    assert!(!down.status.success());
    assert!(String::from_utf8_lossy(&down.stderr).contains("cannot reach"));
}

#[tokio::test]
async fn admin_token_guards_every_api() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start_with_env(dir.path(), &[("TCR_ADMIN_TOKEN", "s3cret-token")]).await;
    let c = reqwest::Client::new();
    let resp = c.get(format!("{}/v2/", node.url())).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    // The Docker token challenge, naming this node's token endpoint.
    let challenge = resp.headers()["www-authenticate"].to_str().unwrap();
    assert_eq!(
        challenge,
        format!("Bearer realm=\"{}/v2/token\",service=\"tcr\"", node.url())
    );
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["errors"][0]["code"], "UNAUTHORIZED");

    let wrong = c
        .get(format!("{}/v2/", node.url()))
        .bearer_auth("nope")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    let ok = c
        .get(format!("{}/v2/", node.url()))
        .bearer_auth("s3cret-token")
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
    let basic = c
        .get(format!("{}/v2/", node.url()))
        .basic_auth("admin", Some("s3cret-token"))
        .send()
        .await
        .unwrap();
    assert_eq!(basic.status(), StatusCode::OK);

    let m = c
        .post(format!("{}/v1/container-registries/namespaces", node.url()))
        .json(&json!({"name": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(m.status(), StatusCode::UNAUTHORIZED);
    let v: Value = m.json().await.unwrap();
    assert!(v["error"]["code"].is_string());
    // The token never reaches the log.
    assert!(!node.log().contains("s3cret-token"));
}

#[test]
fn open_mode_refuses_a_non_loopback_listener() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(bin("tcr-node"))
        .args([
            "--data-dir",
            dir.path().to_str().unwrap(),
            "--http-addr",
            &format!("0.0.0.0:{}", free_port()),
        ])
        .env_remove("TCR_ADMIN_TOKEN")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("refusing to run without authentication"));
}

#[tokio::test]
async fn metrics_count_requests() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path()).await;
    let c = reqwest::Client::new();
    for _ in 0..3 {
        c.get(format!("{}/v2/", node.url())).send().await.unwrap();
    }
    let text = c
        .get(format!("{}/metrics", node.url()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let line = text
        .lines()
        .find(|l| {
            l.starts_with("tcr_http_requests_total")
                && l.contains("route=\"base\"")
                && l.contains("status=\"200\"")
        })
        .unwrap_or_else(|| panic!("no base counter in:\n{text}"));
    let n: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(n >= 3.0, "{line}");
    assert!(text.contains("tcr_raft_is_leader 1"));
}

/// A management call sent to a follower is redirected to the leader with
/// its credentials: the CLI follows the 307 itself, keeping the token that
/// an HTTP client would drop when the port changes.
#[tokio::test]
async fn cli_keeps_the_token_across_the_redirect_to_the_leader() {
    let dir = tempfile::tempdir().unwrap();
    let env = [("TCR_ADMIN_TOKEN", "s3cret-token")];
    let n1 = Node::start_with(&dir.path().join("n1"), &env, &["--node-id", "1"]).await;
    let n2 = Node::start_with(
        &dir.path().join("n2"),
        &env,
        &["--node-id", "2", "--join", &n1.rpc()],
    )
    .await;
    let tcr = |endpoint: &str, args: &[&str]| {
        Command::new(bin("tcr"))
            .args([
                "--endpoint",
                endpoint,
                "--token",
                "s3cret-token",
                "--output",
                "json",
            ])
            .args(args)
            .output()
            .unwrap()
    };
    // Wait (bounded) until node 2 is a voter, as node 1 reports it.
    tcr_tests::harness::wait_for(
        "node 2 is a voter",
        std::time::Duration::from_secs(60),
        || async {
            let out = tcr(&n1.url(), &["members", "list"]);
            let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
            v.as_array()
                .is_some_and(|m| m.iter().filter(|m| m["role"] == "voter").count() == 2)
        },
    )
    .await;
    let status: Value =
        serde_json::from_slice(&tcr(&n1.url(), &["cluster", "status"]).stdout).unwrap();
    let leader = status["leader"].as_u64().unwrap();
    let (follower, other) = if leader == 1 { (&n2, 2) } else { (&n1, 1) };
    // Asked of the follower: 307 to the leader, which needs the token too.
    let out = tcr(
        &follower.url(),
        &["leader", "transfer", "--to", &other.to_string()],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["leader"].as_u64(), Some(other));
}

/// schemathesis (PyPI) against the served OpenAPI document, with the
/// operator's token and a seeded tenant so calls reach real records: no
/// 5xx, and every answer matches the documented schema. Cluster, storage
/// and key operations are left out: they change membership and keys.
#[tokio::test]
async fn the_openapi_document_holds_under_schemathesis() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start_with_env(dir.path(), &[("TCR_ADMIN_TOKEN", "schema-op")]).await;
    let url = node.url();
    let op = |args: &[&str]| {
        let mut all = vec!["--token", "schema-op"];
        all.extend_from_slice(args);
        tcr_json(&url, &all)
    };
    op(&["orgs", "create", "acme", "--enable-registry"]);
    op(&["projects", "create", "--org", "acme", "web"]);
    op(&["namespaces", "create", "acme", "--org", "acme"]);
    op(&[
        "credentials",
        "create",
        "--org",
        "acme",
        "--name",
        "ci",
        "--scope",
        "acme:pull",
    ]);
    let out = Command::new("schemathesis")
        .args([
            "run",
            &format!("{url}/v1/container-registries/openapi.json"),
            "--header",
            "Authorization: Bearer schema-op",
            "--checks",
            "not_a_server_error,response_schema_conformance",
            "--max-examples",
            "25",
            "--exclude-path-regex",
            "/cluster|/storage|/keys",
            "--generation-deterministic",
            "--request-timeout",
            "30",
        ])
        .output()
        .expect("schemathesis is installed by scripts/setup");
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "schemathesis found problems:\n{report}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // It really exercised the API.
    assert!(report.contains("passed"), "{report}");
    assert!(!node.log().contains("panicked"));
}
