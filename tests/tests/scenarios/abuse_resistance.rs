//! What a node does with clients that misbehave: connections that trickle
//! their headers or never send a request, more connections than it serves,
//! a guesser hammering one credential, anonymous scrapes of `/metrics`, and a
//! namespace administrator reaching for the operator's quota; and the audit
//! trail that says who did what.

use std::time::{Duration, Instant};

use reqwest::{Client, StatusCode};
use serde_json::{json, Value};
use tcr_tests::harness::{tcr, tcr_json, wait_for, Node};
use tcr_tests::oci::Oci;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const OPERATOR: &str = "operator-token-abuse-0123456789";

fn op(node: &Node, args: &[&str]) -> Value {
    let mut all = vec!["--token", OPERATOR];
    all.extend_from_slice(args);
    tcr_json(&node.url(), &all)
}

/// An organisation `acme` with namespace `acme` and one credential with
/// `scope`; returns the credential's id and secret.
fn tenant(node: &Node, scope: &str) -> (String, String) {
    op(node, &["orgs", "create", "acme", "--enable-registry"]);
    op(node, &["namespaces", "create", "acme", "--org", "acme"]);
    let cred = op(
        node,
        &[
            "credentials",
            "create",
            "--org",
            "acme",
            "--name",
            "ci",
            "--scope",
            scope,
        ],
    );
    (
        cred["id"].as_str().unwrap().to_string(),
        cred["secret"].as_str().unwrap().to_string(),
    )
}

/// One raw HTTP/1.1 exchange on `conn`: the status line of the answer, or
/// None when the server closed the connection instead.
async fn exchange(conn: &mut TcpStream, request: &str) -> Option<String> {
    conn.write_all(request.as_bytes()).await.ok()?;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = conn.read(&mut buf).await.ok()?;
        if n == 0 {
            return (!got.is_empty()).then(|| String::from_utf8_lossy(&got).into_owned());
        }
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&got);
        // Every answer here is JSON or empty with a Content-Length.
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse::<usize>().unwrap())
                })
                .unwrap_or(0);
            if body.len() >= len {
                return Some(head.to_string());
            }
        }
    }
}

/// Wait until the server closes `conn` (EOF or reset), sending one header
/// byte every `every` meanwhile; how long that took.
async fn trickle_until_closed(mut conn: TcpStream, every: Duration) -> Duration {
    let started = Instant::now();
    let _ = conn
        .write_all(b"GET /v2/ HTTP/1.1\r\nHost: tcr\r\nX-Slow: ")
        .await;
    let mut buf = [0u8; 512];
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            r = conn.read(&mut buf) => match r {
                Ok(0) | Err(_) => return started.elapsed(),
                Ok(_) => {}
            },
            _ = tick.tick() => {
                if conn.write_all(b"a").await.is_err() {
                    return started.elapsed();
                }
            }
        }
    }
}

/// Wait until the server closes `conn`, sending nothing.
async fn silent_until_closed(mut conn: TcpStream) -> Duration {
    let started = Instant::now();
    let mut buf = [0u8; 64];
    loop {
        match conn.read(&mut buf).await {
            Ok(0) | Err(_) => return started.elapsed(),
            Ok(_) => {}
        }
    }
}

#[tokio::test]
async fn trickling_and_silent_connections_are_cut_off_and_hold_up_no_pull() {
    let dir = tempfile::tempdir().unwrap();
    let timeout = Duration::from_secs(4);
    let node = Node::start_with(dir.path(), &[], &["--header-read-timeout-secs", "4"]).await;
    node.create_namespace("acme", "private").await;
    let oci = Oci::new(&node.url());
    let layer = vec![7u8; 1 << 20];
    let digest = oci.push_blob("acme/app", &layer).await;
    let addr = format!("127.0.0.1:{}", node.http_port);
    // 1,800 connections that trickle a header one byte a second, and 200
    // that never send anything.
    let mut open = Vec::new();
    for i in 0..2000 {
        let conn = TcpStream::connect(&addr).await.expect("connect");
        open.push(tokio::spawn(async move {
            if i % 10 == 0 {
                silent_until_closed(conn).await
            } else {
                trickle_until_closed(conn, Duration::from_secs(1)).await
            }
        }));
    }
    // A normal pull through the same node meanwhile.
    let c = Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let started = Instant::now();
    let resp = c
        .get(oci.url(&format!("/v2/acme/app/blobs/{digest}")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.bytes().await.unwrap().len(), layer.len());
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(1),
        "a pull beside 2,000 trickling connections took {took:?}"
    );
    // Every one of them is closed by the node, within the header timeout
    // (and a little scheduling slack), not kept open by its trickle.
    let mut slowest = Duration::ZERO;
    for t in open {
        let held = tokio::time::timeout(timeout * 4, t)
            .await
            .expect("a trickling connection was never closed")
            .unwrap();
        slowest = slowest.max(held);
    }
    assert!(
        slowest < timeout + Duration::from_secs(3),
        "a connection stayed open {slowest:?} with a {timeout:?} header timeout"
    );
    assert!(
        slowest >= timeout - Duration::from_millis(500),
        "closed before the timeout ({slowest:?}): the node is not just timing out headers"
    );
}

#[tokio::test]
async fn connections_past_the_cap_get_503_and_the_open_ones_keep_working() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start_with(
        dir.path(),
        &[],
        &["--max-connections", "8", "--header-read-timeout-secs", "60"],
    )
    .await;
    let addr = format!("127.0.0.1:{}", node.http_port);
    let get = "GET /v2/ HTTP/1.1\r\nHost: tcr\r\n\r\n";
    // The harness's readiness probe may still hold a connection a moment.
    let mut held = Vec::new();
    for _ in 0..100 {
        if held.len() == 8 {
            break;
        }
        let mut conn = TcpStream::connect(&addr).await.unwrap();
        match exchange(&mut conn, get).await {
            Some(head) if head.starts_with("HTTP/1.1 200") => held.push(conn),
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    assert_eq!(
        held.len(),
        8,
        "could not open 8 connections under a cap of 8"
    );
    for _ in 0..3 {
        let mut extra = TcpStream::connect(&addr).await.unwrap();
        let head = exchange(&mut extra, get)
            .await
            .expect("an over-the-cap connection is answered, not dropped");
        assert!(head.starts_with("HTTP/1.1 503"), "{head}");
        assert!(
            head.to_ascii_lowercase().contains("retry-after: 1"),
            "{head}"
        );
        // And closed.
        let mut rest = Vec::new();
        let n = tokio::time::timeout(Duration::from_secs(5), extra.read_to_end(&mut rest))
            .await
            .expect("closed after its 503")
            .unwrap_or(0);
        assert_eq!(n, 0);
    }
    // The connections already served are untouched.
    for conn in &mut held {
        let head = exchange(conn, get).await.expect("still open");
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    }
    // Closing some frees their places.
    held.truncate(4);
    wait_for(
        "a place freed by closed connections",
        Duration::from_secs(10),
        || {
            let addr = addr.clone();
            async move {
                let mut conn = TcpStream::connect(&addr).await.unwrap();
                exchange(&mut conn, get)
                    .await
                    .is_some_and(|h| h.starts_with("HTTP/1.1 200"))
            }
        },
    )
    .await;
}

#[tokio::test]
async fn a_guesser_gets_429s_and_bounded_memory_while_others_are_served() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start_with(dir.path(), &[("TCR_ADMIN_TOKEN", OPERATOR)], &[]).await;
    let (id, secret) = tenant(&node, "acme:pull,push");
    let c = Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let base = format!("{}/v2/", node.url());
    // The real owner signed in before the attack.
    let ok = c
        .get(&base)
        .basic_auth("ci", Some(&secret))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    let before = node.peak_rss();
    let wrong = format!("tcr_{id}_{}", "A".repeat(43));
    let guesses: Vec<_> = (0..200)
        .map(|_| {
            let (c, base, wrong) = (c.clone(), base.clone(), wrong.clone());
            tokio::spawn(async move {
                let r = c
                    .get(&base)
                    .basic_auth("ci", Some(&wrong))
                    .send()
                    .await
                    .unwrap();
                let retry = r.headers().get("retry-after").is_some();
                let status = r.status();
                let body = r.text().await.unwrap();
                (status, retry, body)
            })
        })
        .collect();
    // Others are served meanwhile: the owner, and the operator.
    for _ in 0..5 {
        let r = c
            .get(&base)
            .basic_auth("ci", Some(&secret))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "the owner was refused during the attack");
        let r = c.get(&base).bearer_auth(OPERATOR).send().await.unwrap();
        assert_eq!(r.status(), 200);
    }
    let mut by_status = std::collections::BTreeMap::<u16, usize>::new();
    for g in guesses {
        let (status, retry, body) = g.await.unwrap();
        *by_status.entry(status.as_u16()).or_default() += 1;
        match status {
            StatusCode::UNAUTHORIZED => {}
            StatusCode::TOO_MANY_REQUESTS => {
                assert!(retry, "429 without Retry-After");
                assert!(body.contains("TOOMANYREQUESTS"), "{body}");
            }
            StatusCode::SERVICE_UNAVAILABLE => assert!(retry, "503 without Retry-After"),
            s => panic!("a wrong guess got {s}: {body}"),
        }
    }
    assert!(
        by_status.get(&429).copied().unwrap_or(0) >= 150,
        "the guesser was not held back: {by_status:?}"
    );
    assert!(
        by_status.get(&401).copied().unwrap_or(0) <= 20,
        "too many guesses were checked: {by_status:?}"
    );
    let peak = node.peak_rss();
    assert!(
        peak < 300 << 20,
        "peak RSS {} MiB (before the attack {} MiB)",
        peak >> 20,
        before >> 20
    );
    // The operator sees the refusals counted.
    let metrics = c
        .get(format!("{}/metrics", node.url()))
        .bearer_auth(OPERATOR)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let throttled = metrics
        .lines()
        .find(|l| l.starts_with("tcr_auth_failures_total{reason=\"throttled\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0);
    assert!(throttled >= 150.0, "{metrics}");
    // A guess at a revoked credential is refused without waiting on argon2.
    let out = tcr(
        &node.url(),
        &[
            "--token",
            OPERATOR,
            "credentials",
            "revoke",
            "--org",
            "acme",
            &id,
        ],
    );
    assert!(out.status.success());
    let r = c
        .get(&base)
        .basic_auth("ci", Some(&secret))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}

#[tokio::test]
async fn metrics_are_for_the_operator_or_the_metrics_listener() {
    let dir = tempfile::tempdir().unwrap();
    let metrics_port = tcr_tests::harness::free_port();
    let metrics_addr = format!("127.0.0.1:{metrics_port}");
    let node = Node::start_with(
        dir.path(),
        &[("TCR_ADMIN_TOKEN", OPERATOR)],
        &["--metrics-addr", &metrics_addr],
    )
    .await;
    let (_, secret) = tenant(&node, "acme:admin");
    let c = Client::new();
    let url = format!("{}/metrics", node.url());
    let anonymous = c.get(&url).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);
    let body = anonymous.text().await.unwrap();
    assert!(!body.contains("acme"), "{body}");
    let tenant = c.get(&url).bearer_auth(&secret).send().await.unwrap();
    assert_eq!(tenant.status(), 403);
    let operator = c.get(&url).bearer_auth(OPERATOR).send().await.unwrap();
    assert_eq!(operator.status(), 200);
    let text = operator.text().await.unwrap();
    assert!(
        text.contains("tcr_namespace_stored_bytes{namespace=\"acme\"}"),
        "{text}"
    );
    // The metrics listener answers without a credential, and serves
    // nothing else.
    let scraped = c
        .get(format!("http://{metrics_addr}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(scraped.status(), 200);
    assert!(scraped
        .text()
        .await
        .unwrap()
        .contains("tcr_http_requests_total"));
    let other = c
        .get(format!("http://{metrics_addr}/v2/"))
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 404);
}

#[tokio::test]
async fn a_namespace_admin_cannot_change_the_operators_quota() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start_with(dir.path(), &[("TCR_ADMIN_TOKEN", OPERATOR)], &[]).await;
    let (_, secret) = tenant(&node, "acme:admin");
    let c = Client::new();
    let url = format!("{}/v1/container-registries/namespaces/acme", node.url());
    let patch = |token: &str, body: Value| c.patch(&url).bearer_auth(token).json(&body).send();
    let r = patch(OPERATOR, json!({"quotaBytes": 1_000_000}))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    for body in [
        json!({"quotaBytes": 0}),
        json!({"quotaBytes": 2_000_000}),
        json!({"visibility": "public", "quotaBytes": 0}),
    ] {
        let r = patch(&secret, body.clone()).await.unwrap();
        assert_eq!(r.status(), 403, "{body}");
    }
    // Nothing of a refused request was applied.
    let ns: Value = c
        .get(&url)
        .bearer_auth(OPERATOR)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ns["quotaBytes"], 1_000_000);
    assert_eq!(ns["visibility"], "private");
    // What the namespace's admin may change still works, quota unchanged.
    let r = patch(
        &secret,
        json!({"visibility": "public", "quotaBytes": 1_000_000}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    let ns: Value = r.json().await.unwrap();
    assert_eq!(ns["visibility"], "public");
    assert_eq!(ns["quotaBytes"], 1_000_000);
}

#[tokio::test]
async fn referrers_come_in_bounded_pages_with_capped_annotations() {
    use tcr_tests::images::{digest, OCI_MANIFEST};
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path()).await;
    node.create_namespace("acme", "public").await;
    let oci = Oci::new(&node.url());
    let empty = oci.push_blob("acme/app", b"{}").await;
    let config =
        json!({"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty, "size": 2});
    let subject = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config, "layers": []
    }))
    .unwrap();
    let r = oci
        .put_manifest("acme/app", "v1", OCI_MANIFEST, &subject)
        .await;
    assert_eq!(r.status(), 201);
    let subject_digest = digest(&subject);
    // 300 signatures, each with a 64 KiB annotation beside a small one.
    let big = "s".repeat(64 * 1024);
    let mut pushed = Vec::new();
    for i in 0..300 {
        let m = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": "application/vnd.example.sig",
            "config": config,
            "layers": [],
            "subject": {"mediaType": OCI_MANIFEST, "digest": subject_digest, "size": subject.len()},
            "annotations": {"created": format!("2026-12-02T00:00:{:02}Z", i % 60), "payload": big, "n": i.to_string()}
        }))
        .unwrap();
        let r = oci
            .put_manifest("acme/app", &digest(&m), OCI_MANIFEST, &m)
            .await;
        assert_eq!(r.status(), 201);
        pushed.push(digest(&m));
    }
    // Anonymous, following Link headers to the end.
    let c = Client::new();
    let mut next = Some(format!("/v2/acme/app/referrers/{subject_digest}"));
    let mut seen = Vec::new();
    let mut pages = 0;
    while let Some(path) = next.take() {
        let r = c.get(format!("{}{path}", node.url())).send().await.unwrap();
        assert_eq!(r.status(), 200);
        next = r.headers().get("link").map(|l| {
            let l = l.to_str().unwrap();
            l[l.find('<').unwrap() + 1..l.find('>').unwrap()].to_string()
        });
        let body = r.bytes().await.unwrap();
        assert!(body.len() < 4 << 20, "a page of {} bytes", body.len());
        let v: Value = serde_json::from_slice(&body).unwrap();
        for m in v["manifests"].as_array().unwrap() {
            let a = &m["annotations"];
            assert!(
                a["created"].is_string(),
                "the small annotation is kept: {a}"
            );
            assert!(a.get("payload").is_none(), "the 64 KiB one is not");
            seen.push(m["digest"].as_str().unwrap().to_string());
        }
        pages += 1;
        assert!(pages <= 300, "the pages never end");
    }
    assert!(pages >= 3, "300 referrers in {pages} pages");
    seen.sort();
    pushed.sort();
    assert_eq!(seen, pushed, "every referrer exactly once across the pages");
    // A client may ask for small pages.
    let r = c
        .get(format!(
            "{}/v2/acme/app/referrers/{subject_digest}?n=7&artifactType=application/vnd.example.sig",
            node.url()
        ))
        .send()
        .await
        .unwrap();
    assert!(r.headers()["link"]
        .to_str()
        .unwrap()
        .contains("artifactType="));
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["manifests"].as_array().unwrap().len(), 7);
}

/// A tmpfs of `mib` MiB mounted on `path` for the test's life.
struct SmallDisk(std::path::PathBuf);

impl SmallDisk {
    fn mount(path: &std::path::Path, mib: u64) -> SmallDisk {
        std::fs::create_dir_all(path).unwrap();
        tcr_tests::harness::run(
            "mount",
            &[
                "-t",
                "tmpfs",
                "-o",
                &format!("size={mib}m"),
                "tcr-test",
                path.to_str().unwrap(),
            ],
        );
        SmallDisk(path.to_path_buf())
    }

    fn available(&self) -> u64 {
        let out =
            tcr_tests::harness::run("df", &["-B1", "--output=avail", self.0.to_str().unwrap()]);
        out.lines().nth(1).unwrap().trim().parse().unwrap()
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .args(["-l", self.0.to_str().unwrap()])
            .status();
    }
}

/// 4 MiB that differ for every `i`.
fn layer(i: u32) -> Vec<u8> {
    let mut v = Vec::with_capacity(4 << 20);
    let mut x = u64::from(i).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    while v.len() < 4 << 20 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v
}

#[tokio::test]
async fn a_nearly_full_disk_refuses_pushes_keeps_pulls_and_recovers() {
    use tcr_tests::images::{digest, OCI_MANIFEST};
    let dir = tempfile::tempdir().unwrap();
    let disk = SmallDisk::mount(&dir.path().join("data"), 160);
    let mut node = Node::start_with(
        dir.path(),
        &[],
        &[
            "--min-free-disk",
            "48MiB",
            "--rocksdb-memory",
            "16MiB",
            "--storage-interval-secs",
            "1",
            // Collected blobs leave the disk this long after an upload
            // last relied on them.
            "--orphan-grace-secs",
            "1",
        ],
    )
    .await;
    node.create_namespace("acme", "private").await;
    let oci = Oci::new(&node.url());
    let c = Client::new();
    let empty = oci.push_blob("acme/app", b"{}").await;
    let manifest = |layer: &str| {
        serde_json::to_vec(&json!({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty, "size": 2},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer, "size": 4 << 20}]
        }))
        .unwrap()
    };
    // Push until the node refuses: cleanly, and before the disk is full.
    let mut acked: Vec<(String, u32)> = Vec::new();
    let mut refused = None;
    for i in 0..40u32 {
        let data = layer(i);
        let d = digest(&data);
        let r = c
            .post(oci.url(&format!("/v2/acme/app/blobs/uploads/?digest={d}")))
            .body(data)
            .send()
            .await
            .unwrap();
        if r.status() != StatusCode::CREATED {
            refused = Some((r.status(), r.text().await.unwrap()));
            break;
        }
        let m = manifest(&d);
        let r = oci
            .put_manifest("acme/app", &format!("t{i}"), OCI_MANIFEST, &m)
            .await;
        assert_eq!(r.status(), 201);
        acked.push((digest(&m), i));
    }
    let (status, body) = refused.expect("the node never refused a push on a 160 MiB disk");
    assert_eq!(status, StatusCode::INSUFFICIENT_STORAGE, "{body}");
    assert!(body.contains("--min-free-disk"), "{body}");
    assert!(acked.len() >= 10, "refused after {} pushes", acked.len());
    let free = disk.available();
    assert!(
        free > 24 << 20,
        "the disk was let fill up: {free} bytes free"
    );
    // Nothing was left half-written: no staging file remains.
    let staged = std::fs::read_dir(dir.path().join("data/uploads"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(staged, 0, "a refused upload left its staging files");
    // Pulls go on, and so do small metadata writes (a tag).
    for (m, i) in &acked {
        let r = oci
            .get(&format!("/v2/acme/app/blobs/{}", digest(&layer(*i))))
            .await;
        assert_eq!(r.status(), 200);
        assert_eq!(r.bytes().await.unwrap().as_ref(), layer(*i).as_slice());
        let r = c
            .get(oci.url(&format!("/v2/acme/app/manifests/{m}")))
            .header("accept", OCI_MANIFEST)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    // (The newest, which the deletes below keep.)
    let newest = manifest(&digest(&layer(acked[acked.len() - 1].1)));
    let r = oci
        .put_manifest("acme/app", "latest", OCI_MANIFEST, &newest)
        .await;
    assert_eq!(r.status(), 201);
    // Delete half, collect, and pushes are taken again.
    let (gone, kept) = acked.split_at(acked.len() / 2);
    for (m, _) in gone {
        let r = c
            .delete(oci.url(&format!("/v2/acme/app/manifests/{m}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
    }
    tcr_json(&node.url(), &["gc", "run", "--grace-period", "0s"]);
    let again = layer(1000);
    let again_digest = digest(&again);
    wait_for("a push accepted after delete + GC", Duration::from_secs(30), || {
        let (c, url, body) = (
            c.clone(),
            oci.url(&format!("/v2/acme/app/blobs/uploads/?digest={again_digest}")),
            again.clone(),
        );
        async move { c.post(url).body(body).send().await.unwrap().status() == StatusCode::CREATED }
    })
    .await;
    let filler =
        a_full_disk_stops_raft_and_fails_liveness(dir.path(), &node, &oci, &c, &empty).await;
    // Space freed, the pod restarted: everything acknowledged is there.
    std::fs::remove_file(&filler).unwrap();
    node.kill9();
    node.restart().await;
    for (m, i) in kept {
        let r = c
            .get(oci.url(&format!("/v2/acme/app/manifests/t{i}")))
            .header("accept", OCI_MANIFEST)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "t{i} lost");
        assert_eq!(digest(&r.bytes().await.unwrap()), *m);
        let r = oci
            .get(&format!("/v2/acme/app/blobs/{}", digest(&layer(*i))))
            .await;
        assert_eq!(r.bytes().await.unwrap().as_ref(), layer(*i).as_slice());
    }
    let r = c
        .get(oci.url("/v2/acme/app/manifests/latest"))
        .header("accept", OCI_MANIFEST)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(digest(&r.bytes().await.unwrap()), digest(&newest));
    let r = reqwest::get(format!("{}/healthz", node.url()))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

/// Fills the node's disk with a file of its own and returns its path.
async fn a_full_disk_stops_raft_and_fails_liveness(
    dir: &std::path::Path,
    node: &Node,
    oci: &Oci,
    c: &Client,
    empty: &str,
) -> std::path::PathBuf {
    use tcr_tests::images::OCI_MANIFEST;
    // Now the disk itself fills (something else on it): a Raft write that
    // meets ENOSPC stops the Raft core and liveness fails.
    let filler = dir.join("data/filler");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&filler).unwrap();
        let mb = vec![0u8; 1 << 20];
        while f.write_all(&mb).and_then(|_| f.sync_data()).is_ok() {}
    }
    let big = "a".repeat(1 << 20);
    let mut failed = false;
    for i in 0..64 {
        let m = serde_json::to_vec(&json!({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty, "size": 2},
            "layers": [], "annotations": {"fill": big, "i": i.to_string()}
        }))
        .unwrap();
        let r = c
            .put(oci.url(&format!("/v2/acme/app/manifests/fill{i}")))
            .header("content-type", OCI_MANIFEST)
            .body(m)
            .timeout(Duration::from_secs(20))
            .send()
            .await;
        if !r.is_ok_and(|r| r.status() == StatusCode::CREATED) {
            failed = true;
            break;
        }
    }
    assert!(failed, "64 MiB of manifests fit on a full disk");
    wait_for(
        "liveness failing after ENOSPC",
        Duration::from_secs(20),
        || {
            let url = format!("{}/healthz", node.url());
            async move {
                reqwest::get(url)
                    .await
                    .is_ok_and(|r| r.status() == StatusCode::SERVICE_UNAVAILABLE)
            }
        },
    )
    .await;
    filler
}

/// A client that sends `secret` as the Basic password on every request.
fn as_credential(secret: &str) -> Client {
    use base64::Engine;
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("ci:{secret}"));
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        format!("Basic {basic}").parse().unwrap(),
    );
    Client::builder().default_headers(headers).build().unwrap()
}

/// Push `image`'s blobs and its manifest under `tag`.
async fn push_image(oci: &Oci, image: &tcr_tests::images::Image, tag: &str) {
    oci.push_blob("acme/app", &image.config).await;
    oci.push_blob("acme/app", &image.layer).await;
    let r = oci
        .put_manifest(
            "acme/app",
            tag,
            tcr_tests::images::OCI_MANIFEST,
            &image.manifest,
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED, "push {tag}");
}

/// Every audit event `token` may see through `node`, following `next`.
async fn audit_events(node: &Node, token: &str, query: &str) -> Vec<Value> {
    let mut events = Vec::new();
    let mut last = String::new();
    loop {
        let r = Client::new()
            .get(format!(
                "{}/v1/container-registries/audit-events?n=7&{query}{last}",
                node.url()
            ))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        let v: Value = r.json().await.unwrap();
        events.extend(v["events"].as_array().unwrap().iter().cloned());
        match v["next"].as_str() {
            Some(n) => last = format!("&last={n}"),
            None => return events,
        }
    }
}

/// (action, actor, resource) of an event; a credential actor by its name.
fn step(e: &Value) -> (String, String, String) {
    let a = &e["actor"];
    let actor = match a["kind"].as_str().unwrap() {
        "credential" => a["name"].as_str().unwrap().to_string(),
        "system" => format!("system:{}", a["id"].as_str().unwrap()),
        k => k.to_string(),
    };
    (
        e["action"].as_str().unwrap().to_string(),
        actor,
        e["resource"].as_str().unwrap().to_string(),
    )
}

/// A scripted session on three nodes (organisations, a namespace,
/// credentials, pushes, a retag, a tag deletion, a retention run, GC, a
/// revocation) yields exactly those events, in order, with the right
/// actors, nodes and addresses, the same through every node; an
/// organisation's admin sees its own organisation's events only; the CLI
/// filters them; and each event is one JSON log line on the node that took
/// the request.
#[tokio::test]
async fn the_audit_trail_says_who_did_what_in_order_on_every_node() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = tcr_tests::harness::cluster(
        dir.path(),
        3,
        &[("TCR_ADMIN_TOKEN", OPERATOR), ("TCR_LOG_FORMAT", "json")],
        &[],
    )
    .await;
    let s = an_audited_session(&nodes).await;
    an_admin_sees_its_own_organisation_only(&nodes, &s).await;
    let (n0, n1) = (&nodes[0], &nodes[1]);
    op(n0, &["gc", "run", "--grace-period", "0s"]);
    let out = tcr(
        &n1.url(),
        &[
            "--token",
            OPERATOR,
            "credentials",
            "revoke",
            "--org",
            "acme",
            &s.ci_id,
        ],
    );
    assert!(out.status.success());

    let all = the_trail_lists_the_session_in_order(&nodes, &s).await;
    the_trail_is_one_everywhere_filtered_logged_and_guarded(&nodes, &s, &all).await;
}

/// What the scripted session left for the audit trail to name.
struct AuditSession {
    ci_id: String,
    ci_secret: String,
    gx_id: String,
    gx_secret: String,
    a: tcr_tests::images::Image,
    b: tcr_tests::images::Image,
}

async fn an_audited_session(nodes: &[Node]) -> AuditSession {
    use tcr_tests::images::Image;
    let n0 = &nodes[0];
    let n1 = &nodes[1];
    let n2 = &nodes[2];
    op(n0, &["orgs", "create", "acme", "--enable-registry"]);
    op(n1, &["namespaces", "create", "acme", "--org", "acme"]);
    let ci = op(
        n2,
        &[
            "credentials",
            "create",
            "--org",
            "acme",
            "--name",
            "ci",
            "--scope",
            "*:admin",
        ],
    );
    let (ci_id, ci_secret) = (
        ci["id"].as_str().unwrap().to_string(),
        ci["secret"].as_str().unwrap().to_string(),
    );
    op(n0, &["orgs", "create", "globex", "--enable-registry"]);
    op(n0, &["namespaces", "create", "globex", "--org", "globex"]);
    let gx = op(
        n0,
        &[
            "credentials",
            "create",
            "--org",
            "globex",
            "--name",
            "gx",
            "--scope",
            "*:admin",
        ],
    );
    let (gx_id, gx_secret) = (
        gx["id"].as_str().unwrap().to_string(),
        gx["secret"].as_str().unwrap().to_string(),
    );

    // Pushes as ci: image a as v1 through node 2, the same manifest as v2
    // (a retag) through node 3, image b as old, then old deleted.
    let (a, b) = (
        Image::new("audit a", "amd64"),
        Image::new("audit b", "amd64"),
    );
    let via = |n: &Node| Oci::with_http(&n.url(), as_credential(&ci_secret));
    push_image(&via(n1), &a, "v1").await;
    let r = via(n2)
        .put_manifest(
            "acme/app",
            "v2",
            tcr_tests::images::OCI_MANIFEST,
            &a.manifest,
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    push_image(&via(n1), &b, "old").await;
    let r = as_credential(&ci_secret)
        .delete(format!("{}/v2/acme/app/manifests/old", n0.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    // Retention counts whole seconds: b is older than 0 s once one passed.
    let secs = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    };
    let pushed = secs();
    wait_for("the next second", Duration::from_secs(3), || async {
        secs() > pushed
    })
    .await;
    // ci, an admin of acme, removes untagged manifests (b) with retention.
    let as_ci = |n: &Node, args: &[&str]| {
        let mut all = vec!["--token", ci_secret.as_str()];
        all.extend_from_slice(args);
        tcr_json(&n.url(), &all)
    };
    as_ci(
        n1,
        &["retention", "set", "acme", "--untagged-older-than", "0s"],
    );
    let run = as_ci(n2, &["retention", "run", "acme"]);
    assert_eq!(run["manifestsRemoved"], 1, "{run}");

    AuditSession {
        ci_id,
        ci_secret,
        gx_id,
        gx_secret,
        a,
        b,
    }
}

async fn an_admin_sees_its_own_organisation_only(nodes: &[Node], s: &AuditSession) {
    let n0 = &nodes[0];
    let n2 = &nodes[2];
    let ci_secret = s.ci_secret.clone();
    let gx_id = s.gx_id.clone();
    let gx_secret = s.gx_secret.clone();
    // An organisation's admin sees its organisation's events only, and may
    // not ask for another's.
    let mine = audit_events(n2, &ci_secret, "").await;
    assert!(mine.len() >= 10, "{mine:?}");
    assert!(mine.iter().all(|e| e["organisation"] == "acme"), "{mine:?}");
    let theirs = audit_events(n0, &gx_secret, "").await;
    assert_eq!(
        theirs.iter().map(step).collect::<Vec<_>>(),
        [
            ("organisation.create", "operator", "globex"),
            ("namespace.create", "operator", "globex"),
            ("credential.create", "operator", gx_id.as_str()),
        ]
        .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
    );
    let r = Client::new()
        .get(format!(
            "{}/v1/container-registries/audit-events?organisation=acme",
            n0.url()
        ))
        .bearer_auth(&gx_secret)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
}

async fn the_trail_lists_the_session_in_order(nodes: &[Node], s: &AuditSession) -> Vec<Value> {
    use tcr_tests::images::digest;
    let n0 = &nodes[0];
    let ci_id = s.ci_id.clone();
    let gx_id = s.gx_id.clone();
    let a = &s.a;
    let b = &s.b;
    let all = audit_events(n0, OPERATOR, "").await;
    // Forming the cluster changed its membership: the cluster's own act.
    assert!(
        all.iter().any(|e| step(e)
            == (
                "cluster.membership".into(),
                "system:raft".into(),
                "cluster".into()
            )),
        "{all:?}"
    );
    let session: Vec<&Value> = all
        .iter()
        .filter(|e| e["action"] != "cluster.membership")
        .collect();
    let (a_ref, b_ref) = (
        format!("acme/app@{}", a.manifest_digest()),
        format!("acme/app@{}", b.manifest_digest()),
    );
    let mut collected = vec![digest(&b.config), digest(&b.layer)];
    collected.sort();
    let mut want: Vec<(&str, &str, &str)> = vec![
        ("organisation.create", "operator", "acme"),
        ("namespace.create", "operator", "acme"),
        ("credential.create", "operator", &ci_id),
        ("organisation.create", "operator", "globex"),
        ("namespace.create", "operator", "globex"),
        ("credential.create", "operator", &gx_id),
        ("manifest.push", "ci", &a_ref),
        ("tag.set", "ci", "acme/app:v1"),
        ("manifest.push", "ci", &a_ref),
        ("tag.set", "ci", "acme/app:v2"),
        ("manifest.push", "ci", &b_ref),
        ("tag.set", "ci", "acme/app:old"),
        ("tag.delete", "ci", "acme/app:old"),
        ("retention.policy.set", "ci", "acme"),
        ("retention.run.start", "ci", "acme"),
        ("retention.remove-manifest", "system:retention", &b_ref),
        ("retention.run.finish", "system:retention", "acme"),
    ];
    for d in &collected {
        want.push(("gc.collect", "operator", d));
    }
    want.push(("credential.revoke", "operator", &ci_id));
    let got: Vec<(String, String, String)> = session.iter().map(|e| step(e)).collect();
    let want: Vec<(String, String, String)> = want
        .into_iter()
        .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
        .collect();
    assert_eq!(got, want);
    // Who took each request, from where; refusals would say so.
    let node_of = |action: &str, resource: &str| {
        session
            .iter()
            .find(|e| e["action"] == action && e["resource"] == resource)
            .map(|e| {
                (
                    e["node"].as_u64(),
                    e["address"].clone(),
                    e["result"].clone(),
                )
            })
            .unwrap()
    };
    assert_eq!(
        node_of("tag.set", "acme/app:v1"),
        (Some(2), json!("127.0.0.1"), json!("ok"))
    );
    assert_eq!(node_of("tag.set", "acme/app:v2").0, Some(3));
    assert_eq!(node_of("credential.create", &ci_id).0, Some(3));
    assert_eq!(node_of("credential.revoke", &ci_id).0, Some(2));
    let times: Vec<u64> = session
        .iter()
        .map(|e| e["atMs"].as_u64().unwrap())
        .collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");

    all
}

async fn the_trail_is_one_everywhere_filtered_logged_and_guarded(
    nodes: &[Node],
    s: &AuditSession,
    all: &[Value],
) {
    let n0 = &nodes[0];
    let n1 = &nodes[1];
    let n2 = &nodes[2];
    let ci_secret = s.ci_secret.clone();
    // The same trail through every node.
    for n in [n1, n2] {
        assert_eq!(audit_events(n, OPERATOR, "").await, all);
    }
    // Filters, through the CLI.
    let listed = tcr_json(
        &n2.url(),
        &[
            "--token", OPERATOR, "audit", "list", "--actor", "ci", "--action", "tag.",
        ],
    );
    let listed: Vec<(String, String, String)> =
        listed.as_array().unwrap().iter().map(step).collect();
    assert_eq!(
        listed,
        ["acme/app:v1", "acme/app:v2", "acme/app:old"]
            .iter()
            .map(|r| ("tag.set".to_string(), "ci".to_string(), r.to_string()))
            .chain([("tag.delete".into(), "ci".into(), "acme/app:old".into())])
            .collect::<Vec<_>>()
    );
    // One JSON log line per event, on the node that took the request.
    let lines = |n: &Node, resource: &str| {
        n.log()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|l| {
                l["target"] == "tcr::audit"
                    && l["fields"]["action"] == "tag.set"
                    && l["fields"]["resource"] == resource
            })
            .count()
    };
    assert_eq!(
        [
            lines(n0, "acme/app:v1"),
            lines(n1, "acme/app:v1"),
            lines(n2, "acme/app:v1")
        ],
        [0, 1, 0]
    );
    assert!(!n1.log().contains(&ci_secret));

    // Hostile or wrong queries get clear errors.
    for (query, token, status) in [
        ("last=not-a-cursor", Some(OPERATOR), StatusCode::BAD_REQUEST),
        ("n=0", Some(OPERATOR), StatusCode::BAD_REQUEST),
        ("since=yesterday", Some(OPERATOR), StatusCode::BAD_REQUEST),
        ("", None, StatusCode::UNAUTHORIZED),
        ("", Some(ci_secret.as_str()), StatusCode::UNAUTHORIZED),
    ] {
        let mut req = Client::new().get(format!(
            "{}/v1/container-registries/audit-events?{query}",
            n1.url()
        ));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        assert_eq!(req.send().await.unwrap().status(), status, "{query}");
    }
}

/// The trail keeps events for `--audit-retention` only: the leader forgets
/// older ones, and what is kept is still listed.
#[tokio::test]
async fn the_audit_trail_forgets_events_past_its_retention() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start_with(
        dir.path(),
        &[("TCR_ADMIN_TOKEN", OPERATOR)],
        &["--audit-retention", "2s"],
    )
    .await;
    op(&node, &["orgs", "create", "old", "--enable-registry"]);
    let listed = audit_events(&node, OPERATOR, "action=organisation.create").await;
    assert_eq!(listed.len(), 1, "{listed:?}");
    wait_for(
        "the event to pass the retention and go",
        Duration::from_secs(20),
        || async {
            audit_events(&node, OPERATOR, "action=organisation.create")
                .await
                .is_empty()
        },
    )
    .await;
    op(&node, &["orgs", "create", "new", "--enable-registry"]);
    let listed = audit_events(&node, OPERATOR, "action=organisation.create").await;
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["resource"], "new");
}
