//! What a node does with clients that misbehave: connections that trickle
//! their headers or never send a request, more connections than it serves,
//! a guesser hammering one credential, anonymous scrapes of `/metrics`, and a
//! namespace administrator reaching for the operator's quota.

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
            // Collected blobs leave the disk this long after their files
            // were last written.
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
    // Now the disk itself fills (something else on it): a Raft write that
    // meets ENOSPC stops the Raft core and liveness fails.
    let filler = dir.path().join("data/filler");
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
