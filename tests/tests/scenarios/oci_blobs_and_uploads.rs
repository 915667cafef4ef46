//! Blob and upload endpoints of the distribution spec, against a real node.

use reqwest::StatusCode;
use tcr_tests::harness::Node;
use tcr_tests::images::digest;
use tcr_tests::oci::{error_code, Oci};

async fn node_with_ns() -> (tempfile::TempDir, Node, Oci) {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path()).await;
    node.create_namespace("acme", "private").await;
    let oci = Oci::new(&node.url());
    (dir, node, oci)
}

#[tokio::test]
async fn base_endpoint_names_the_api_version() {
    let (_d, _n, oci) = node_with_ns().await;
    let resp = oci.get("/v2/").await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        resp.headers()["docker-distribution-api-version"],
        "registry/2.0"
    );
}

#[tokio::test]
async fn push_into_missing_namespace_is_refused_naming_it() {
    let (_d, _n, oci) = node_with_ns().await;
    let resp = oci
        .http
        .post(oci.url("/v2/nosuch/app/blobs/uploads/"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["errors"][0]["code"], "NAME_UNKNOWN");
    assert!(body["errors"][0]["message"]
        .as_str()
        .unwrap()
        .contains("nosuch"));
}

#[tokio::test]
async fn invalid_names_get_name_invalid() {
    let (_d, _n, oci) = node_with_ns().await;
    for path in [
        "/v2/Acme/App/blobs/uploads/",
        "/v2/acme/blobs/uploads/",
        "/v2/acme/a..b/blobs/uploads/",
    ] {
        let resp = oci.http.post(oci.url(path)).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{path}");
        assert_eq!(error_code(resp).await, "NAME_INVALID", "{path}");
    }
    let long = format!("/v2/acme/{}/tags/list", "a".repeat(300));
    assert_eq!(error_code(oci.get(&long).await).await, "NAME_INVALID");
}

#[tokio::test]
async fn chunked_upload_with_status_and_out_of_order_chunk() {
    let (_d, _n, oci) = node_with_ns().await;
    let resp = oci
        .http
        .post(oci.url("/v2/acme/app/blobs/uploads/"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let loc = resp.headers()["location"].to_str().unwrap().to_string();
    let uuid = resp.headers()["docker-upload-uuid"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(loc.ends_with(&uuid));

    let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let (a, b) = data.split_at(100_000);
    let resp = oci
        .http
        .patch(oci.url(&loc))
        .header("content-range", "0-99999")
        .body(a.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    assert_eq!(resp.headers()["range"], "0-99999");

    // A chunk that does not start where the upload ends is refused.
    let resp = oci
        .http
        .patch(oci.url(&loc))
        .header("content-range", "150000-150009")
        .body(vec![0u8; 10])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::RANGE_NOT_SATISFIABLE);

    let status = oci.get(&loc).await;
    assert_eq!(status.status(), StatusCode::NO_CONTENT);
    assert_eq!(status.headers()["range"], "0-99999");

    // Final PUT carries the last chunk.
    let d = digest(&data);
    let resp = oci
        .http
        .put(oci.url(&format!("{loc}?digest={d}")))
        .header("content-range", "100000-299999")
        .body(b.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    assert_eq!(resp.headers()["docker-content-digest"], d.as_str());
    let got = oci.get(&format!("/v2/acme/app/blobs/{d}")).await;
    assert_eq!(got.status(), StatusCode::OK);
    assert_eq!(got.bytes().await.unwrap().as_ref(), data.as_slice());
    // The session is gone once finished.
    assert_eq!(error_code(oci.get(&loc).await).await, "BLOB_UPLOAD_UNKNOWN");
}

#[tokio::test]
async fn digest_mismatch_is_refused_and_nothing_is_stored() {
    let (_d, _n, oci) = node_with_ns().await;
    let wrong = digest(b"something else");
    let resp = oci
        .http
        .post(oci.url(&format!("/v2/acme/app/blobs/uploads/?digest={wrong}")))
        .body(b"actual bytes".to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_code(resp).await, "DIGEST_INVALID");
    for d in [wrong, digest(b"actual bytes")] {
        let head = oci
            .http
            .head(oci.url(&format!("/v2/acme/app/blobs/{d}")))
            .send()
            .await
            .unwrap();
        assert_eq!(head.status(), StatusCode::NOT_FOUND);
    }
    let bad = oci
        .http
        .post(oci.url("/v2/acme/app/blobs/uploads/?digest=sha256:nothex"))
        .body(b"x".to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(bad).await, "DIGEST_INVALID");
}

#[tokio::test]
async fn cancelled_upload_is_gone() {
    let (_d, _n, oci) = node_with_ns().await;
    let resp = oci
        .http
        .post(oci.url("/v2/acme/app/blobs/uploads/"))
        .send()
        .await
        .unwrap();
    let loc = resp.headers()["location"].to_str().unwrap().to_string();
    let del = oci.http.delete(oci.url(&loc)).send().await.unwrap();
    assert_eq!(del.status(), StatusCode::NO_CONTENT);
    assert_eq!(error_code(oci.get(&loc).await).await, "BLOB_UPLOAD_UNKNOWN");
    let del = oci.http.delete(oci.url(&loc)).send().await.unwrap();
    assert_eq!(del.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn upload_of_another_repository_is_not_reachable() {
    let (_d, _n, oci) = node_with_ns().await;
    let resp = oci
        .http
        .post(oci.url("/v2/acme/one/blobs/uploads/"))
        .send()
        .await
        .unwrap();
    let loc = resp.headers()["location"].to_str().unwrap().to_string();
    let other = loc.replace("/acme/one/", "/acme/two/");
    assert_eq!(
        error_code(oci.get(&other).await).await,
        "BLOB_UPLOAD_UNKNOWN"
    );
}

#[tokio::test]
async fn cross_repository_mount() {
    let (_d, _n, oci) = node_with_ns().await;
    let d = oci.push_blob("acme/src", b"shared layer").await;
    let resp = oci
        .http
        .post(oci.url(&format!(
            "/v2/acme/dst/blobs/uploads/?mount={d}&from=acme/src"
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    assert_eq!(resp.headers()["docker-content-digest"], d.as_str());
    let got = oci.get(&format!("/v2/acme/dst/blobs/{d}")).await;
    assert_eq!(got.bytes().await.unwrap().as_ref(), b"shared layer");

    // Not mountable (unknown source blob): a fresh upload session instead.
    let other = digest(b"nowhere");
    let resp = oci
        .http
        .post(oci.url(&format!(
            "/v2/acme/dst/blobs/uploads/?mount={other}&from=acme/src"
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    assert!(resp.headers().contains_key("location"));
}

#[tokio::test]
async fn blob_get_head_ranges_and_delete() {
    let (_d, _n, oci) = node_with_ns().await;
    let data: Vec<u8> = (0..1000u32).map(|i| (i * 7 % 256) as u8).collect();
    let d = oci.push_blob("acme/app", &data).await;
    let path = format!("/v2/acme/app/blobs/{d}");

    let head = oci.http.head(oci.url(&path)).send().await.unwrap();
    assert_eq!(head.status(), StatusCode::OK);
    assert_eq!(head.headers()["content-length"], "1000");
    assert_eq!(head.headers()["docker-content-digest"], d.as_str());

    let part = oci
        .http
        .get(oci.url(&path))
        .header("range", "bytes=10-19")
        .send()
        .await
        .unwrap();
    assert_eq!(part.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(part.headers()["content-range"], "bytes 10-19/1000");
    assert_eq!(part.bytes().await.unwrap().as_ref(), &data[10..20]);

    let tail = oci
        .http
        .get(oci.url(&path))
        .header("range", "bytes=-5")
        .send()
        .await
        .unwrap();
    assert_eq!(tail.bytes().await.unwrap().as_ref(), &data[995..]);

    let bad = oci
        .http
        .get(oci.url(&path))
        .header("range", "bytes=2000-")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(bad.headers()["content-range"], "bytes */1000");

    // The same digest is unknown in a repository it was never pushed to.
    let elsewhere = oci.get(&format!("/v2/acme/other/blobs/{d}")).await;
    assert_eq!(elsewhere.status(), StatusCode::NOT_FOUND);

    let del = oci.http.delete(oci.url(&path)).send().await.unwrap();
    assert_eq!(del.status(), StatusCode::ACCEPTED);
    assert_eq!(error_code(oci.get(&path).await).await, "BLOB_UNKNOWN");
}

#[tokio::test]
async fn same_blob_in_two_repositories_is_stored_once() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path()).await;
    node.create_namespace("acme", "private").await;
    let oci = Oci::new(&node.url());
    let data = vec![42u8; 50_000];
    let d = oci.push_blob("acme/one", &data).await;
    oci.push_blob("acme/two", &data).await;
    let mut copies = 0;
    for entry in walk(&dir.path().join("data/blobs")) {
        if entry.file_name().unwrap().to_str().unwrap() == d.trim_start_matches("sha256:") {
            copies += 1;
        }
    }
    assert_eq!(copies, 1);
}

fn walk(p: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(p) {
        for e in rd.flatten() {
            let path = e.path();
            if path.is_dir() {
                out.extend(walk(&path));
            } else {
                out.push(path);
            }
        }
    }
    out
}

#[tokio::test]
async fn upload_session_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = Node::start(dir.path()).await;
    node.create_namespace("acme", "private").await;
    let oci = Oci::new(&node.url());
    let resp = oci
        .http
        .post(oci.url("/v2/acme/app/blobs/uploads/"))
        .send()
        .await
        .unwrap();
    let loc = resp.headers()["location"].to_str().unwrap().to_string();
    let resp = oci
        .http
        .patch(oci.url(&loc))
        .body(b"before restart, ".to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);

    node.kill9();
    node.restart().await;

    let status = oci.get(&loc).await;
    assert_eq!(status.status(), StatusCode::NO_CONTENT);
    assert_eq!(status.headers()["range"], "0-15");
    let whole = b"before restart, after restart".to_vec();
    let d = digest(&whole);
    let resp = oci
        .http
        .put(oci.url(&format!("{loc}?digest={d}")))
        .body(b"after restart".to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    let got = oci.get(&format!("/v2/acme/app/blobs/{d}")).await;
    assert_eq!(got.bytes().await.unwrap().as_ref(), whole.as_slice());
}

#[tokio::test]
async fn a_stalled_upload_body_is_aborted_and_cut_back() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start_with_env(dir.path(), &[("TCR_BODY_IDLE_TIMEOUT_SECS", "1")]).await;
    node.create_namespace("acme", "private").await;
    let oci = Oci::new(&node.url());
    let resp = oci
        .http
        .post(oci.url("/v2/acme/app/blobs/uploads/"))
        .send()
        .await
        .unwrap();
    let loc = resp.headers()["location"].to_str().unwrap().to_string();
    oci.http
        .patch(oci.url(&loc))
        .body(b"kept".to_vec())
        .send()
        .await
        .unwrap();

    // Ten bytes, then silence for longer than the idle timeout.
    let body = futures::stream::unfold(0, |step| async move {
        match step {
            0 => Some((
                Ok::<_, std::io::Error>(bytes::Bytes::from_static(b"0123456789")),
                1,
            )),
            1 => {
                tokio::time::sleep(std::time::Duration::from_secs(5)).await;
                None
            }
            _ => None,
        }
    });
    let resp = oci
        .http
        .patch(oci.url(&loc))
        .body(reqwest::Body::wrap_stream(body))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_code(resp).await, "BLOB_UPLOAD_INVALID");
    let status = oci.get(&loc).await;
    assert_eq!(
        status.headers()["range"],
        "0-3",
        "the stalled chunk was not kept"
    );
}
