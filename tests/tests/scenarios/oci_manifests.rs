//! Manifests, tags, catalog and referrers of the distribution spec, and the
//! rule that no malformed request gets a 5xx.

use reqwest::StatusCode;
use serde_json::{json, Value};
use tcr_tests::harness::Node;
use tcr_tests::images::{digest, index, Image, OCI_CONFIG, OCI_INDEX, OCI_MANIFEST};
use tcr_tests::oci::{error_code, Oci};

const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

async fn setup() -> (tempfile::TempDir, Node, Oci) {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path()).await;
    node.create_namespace("acme", "private").await;
    let oci = Oci::new(&node.url());
    (dir, node, oci)
}

async fn push_image(oci: &Oci, repo: &str, img: &Image, tag: &str) -> String {
    oci.push_blob(repo, &img.layer).await;
    oci.push_blob(repo, &img.config).await;
    let resp = oci
        .put_manifest(repo, tag, OCI_MANIFEST, &img.manifest)
        .await;
    assert_eq!(
        resp.status(),
        StatusCode::CREATED,
        "{:?}",
        resp.text().await
    );
    img.manifest_digest()
}

#[tokio::test]
async fn image_manifest_by_tag_and_digest() {
    let (_d, _n, oci) = setup().await;
    let img = Image::new("one", "amd64");
    let d = push_image(&oci, "acme/app", &img, "v1").await;

    for reference in ["v1", d.as_str()] {
        let resp = oci
            .http
            .get(oci.url(&format!("/v2/acme/app/manifests/{reference}")))
            .header("accept", OCI_MANIFEST)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.headers()["content-type"], OCI_MANIFEST);
        assert_eq!(resp.headers()["docker-content-digest"], d.as_str());
        assert_eq!(
            resp.bytes().await.unwrap().as_ref(),
            img.manifest.as_slice()
        );
    }
    let head = oci
        .http
        .head(oci.url("/v2/acme/app/manifests/v1"))
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), StatusCode::OK);
    assert_eq!(
        head.headers()["content-length"],
        img.manifest.len().to_string().as_str()
    );

    // A client that only accepts Docker types does not get an OCI manifest.
    let resp = oci
        .http
        .get(oci.url("/v2/acme/app/manifests/v1"))
        .header("accept", DOCKER_MANIFEST)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn docker_schema2_and_manifest_list() {
    let (_d, _n, oci) = setup().await;
    let config =
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
    let cd = oci.push_blob("acme/d", config).await;
    let m = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": DOCKER_MANIFEST,
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "digest": cd, "size": config.len()},
        "layers": []
    }))
    .unwrap();
    let resp = oci
        .put_manifest("acme/d", "latest", DOCKER_MANIFEST, &m)
        .await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    let list = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": DOCKER_LIST,
        "manifests": [{"mediaType": DOCKER_MANIFEST, "digest": digest(&m), "size": m.len(),
                       "platform": {"architecture": "amd64", "os": "linux"}}]
    }))
    .unwrap();
    let resp = oci
        .put_manifest("acme/d", "multi", DOCKER_LIST, &list)
        .await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    let got = oci.get("/v2/acme/d/manifests/multi").await;
    assert_eq!(got.headers()["content-type"], DOCKER_LIST);
    assert_eq!(got.bytes().await.unwrap().as_ref(), list.as_slice());
}

#[tokio::test]
async fn index_needs_its_children_and_manifest_needs_its_blobs() {
    let (_d, _n, oci) = setup().await;
    let img = Image::new("x", "amd64");
    // Blobs not pushed: MANIFEST_BLOB_UNKNOWN.
    let resp = oci
        .put_manifest("acme/app", "v1", OCI_MANIFEST, &img.manifest)
        .await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_code(resp).await, "MANIFEST_BLOB_UNKNOWN");
    // Index over a manifest that is not there: MANIFEST_UNKNOWN.
    let ix = index(&[(&img, "amd64")]);
    let resp = oci.put_manifest("acme/app", "multi", OCI_INDEX, &ix).await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_code(resp).await, "MANIFEST_UNKNOWN");
    // Once the child exists the index is accepted.
    push_image(&oci, "acme/app", &img, "v1").await;
    let resp = oci.put_manifest("acme/app", "multi", OCI_INDEX, &ix).await;
    assert_eq!(resp.status(), StatusCode::CREATED);
}

/// A reference that is neither a tag nor a digest names no manifest: GET,
/// HEAD and DELETE answer 404 (the conformance suite's
/// `.INVALID_MANIFEST_NAME`), a push 400 TAG_INVALID.
#[tokio::test]
async fn a_reference_that_is_no_tag_is_unknown_to_reads_and_invalid_to_pushes() {
    let (_d, _n, oci) = setup().await;
    let img = Image::new("no tag", "amd64");
    push_image(&oci, "acme/app", &img, "v1").await;
    let path = "/v2/acme/app/manifests/.INVALID_MANIFEST_NAME";
    let resp = oci.get(path).await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    assert_eq!(error_code(resp).await, "MANIFEST_UNKNOWN");
    let head = oci.http.head(oci.url(path)).send().await.unwrap();
    assert_eq!(head.status(), StatusCode::NOT_FOUND);
    let del = oci.http.delete(oci.url(path)).send().await.unwrap();
    assert_eq!(del.status(), StatusCode::NOT_FOUND);
    let resp = oci
        .put_manifest(
            "acme/app",
            ".INVALID_MANIFEST_NAME",
            OCI_MANIFEST,
            &img.manifest,
        )
        .await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_code(resp).await, "TAG_INVALID");
}

#[tokio::test]
async fn invalid_manifests_are_refused_with_the_spec_codes() {
    let (_d, _n, oci) = setup().await;
    let img = Image::new("y", "amd64");
    oci.push_blob("acme/app", &img.layer).await;
    oci.push_blob("acme/app", &img.config).await;

    let resp = oci
        .put_manifest("acme/app", "bad", OCI_MANIFEST, b"{not json")
        .await;
    assert_eq!(error_code(resp).await, "MANIFEST_INVALID");
    // Content-Type says index, body says image manifest.
    let resp = oci
        .put_manifest("acme/app", "bad", OCI_INDEX, &img.manifest)
        .await;
    assert_eq!(error_code(resp).await, "MANIFEST_INVALID");
    let resp = oci
        .put_manifest(
            "acme/app",
            "bad",
            "application/vnd.docker.distribution.manifest.v1+prettyjws",
            br#"{"schemaVersion":1}"#,
        )
        .await;
    assert_eq!(error_code(resp).await, "MANIFEST_INVALID");
    // Pushed by a digest that is not the content's.
    let wrong = digest(b"other");
    let resp = oci
        .put_manifest("acme/app", &wrong, OCI_MANIFEST, &img.manifest)
        .await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_code(resp).await, "DIGEST_INVALID");
    // Over 4 MiB.
    let mut huge = img.manifest.clone();
    huge.truncate(huge.len() - 1);
    huge.extend_from_slice(
        format!(
            r#","annotations":{{"pad":"{}"}}}}"#,
            "x".repeat(4 * 1024 * 1024)
        )
        .as_bytes(),
    );
    let resp = oci
        .put_manifest("acme/app", "huge", OCI_MANIFEST, &huge)
        .await;
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(error_code(resp).await, "SIZE_INVALID");
    // Unknown tags and repositories.
    assert_eq!(
        error_code(oci.get("/v2/acme/app/manifests/nope").await).await,
        "MANIFEST_UNKNOWN"
    );
    assert_eq!(
        error_code(oci.get("/v2/acme/none/manifests/nope").await).await,
        "NAME_UNKNOWN"
    );
}

#[tokio::test]
async fn delete_by_tag_and_by_digest() {
    let (_d, _n, oci) = setup().await;
    let img = Image::new("z", "amd64");
    let d = push_image(&oci, "acme/app", &img, "a").await;
    assert_eq!(
        oci.put_manifest("acme/app", "b", OCI_MANIFEST, &img.manifest)
            .await
            .status(),
        201
    );

    let del = oci
        .http
        .delete(oci.url("/v2/acme/app/manifests/a"))
        .send()
        .await
        .unwrap();
    assert_eq!(del.status(), StatusCode::ACCEPTED);
    assert_eq!(oci.get("/v2/acme/app/manifests/a").await.status(), 404);
    assert_eq!(
        oci.get("/v2/acme/app/manifests/b").await.status(),
        200,
        "other tags stay"
    );

    let del = oci
        .http
        .delete(oci.url(&format!("/v2/acme/app/manifests/{d}")))
        .send()
        .await
        .unwrap();
    assert_eq!(del.status(), StatusCode::ACCEPTED);
    assert_eq!(
        oci.get(&format!("/v2/acme/app/manifests/{d}"))
            .await
            .status(),
        404
    );
    assert_eq!(
        oci.get("/v2/acme/app/manifests/b").await.status(),
        404,
        "tags of a deleted manifest go"
    );
}

#[tokio::test]
async fn tag_list_and_catalog_paginate_with_link() {
    let (_d, _n, oci) = setup().await;
    let img = Image::new("t", "amd64");
    push_image(&oci, "acme/app", &img, "t00").await;
    let mut want = vec!["t00".to_string()];
    for i in 1..25 {
        let tag = format!("t{i:02}");
        assert_eq!(
            oci.put_manifest("acme/app", &tag, OCI_MANIFEST, &img.manifest)
                .await
                .status(),
            201
        );
        want.push(tag);
    }
    let mut got = Vec::new();
    let mut path = "/v2/acme/app/tags/list?n=10".to_string();
    let mut pages = 0;
    loop {
        let resp = oci.get(&path).await;
        assert_eq!(resp.status(), 200);
        let link = resp
            .headers()
            .get("link")
            .map(|v| v.to_str().unwrap().to_string());
        let v: Value = resp.json().await.unwrap();
        assert_eq!(v["name"], "acme/app");
        got.extend(
            v["tags"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t.as_str().unwrap().to_string()),
        );
        pages += 1;
        match link {
            Some(l) => {
                path = l
                    .split(';')
                    .next()
                    .unwrap()
                    .trim_matches(|c| c == '<' || c == '>' || c == ' ')
                    .to_string()
            }
            None => break,
        }
    }
    assert_eq!(got, want);
    assert_eq!(pages, 3);
    let v: Value = oci
        .get("/v2/acme/app/tags/list?n=5&last=t21")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["tags"], json!(["t22", "t23", "t24"]));
    assert_eq!(
        error_code(oci.get("/v2/acme/app/tags/list?n=x").await).await,
        "PAGINATION_NUMBER_INVALID"
    );

    for r in ["acme/b", "acme/c"] {
        oci.push_blob(r, b"x").await;
    }
    let resp = oci.get("/v2/_catalog?n=2").await;
    assert!(resp.headers().contains_key("link"));
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["repositories"], json!(["acme/app", "acme/b"]));
    let v: Value = oci
        .get("/v2/_catalog?n=2&last=acme/b")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["repositories"], json!(["acme/c"]));
}

#[tokio::test]
async fn subject_and_referrers_with_artifact_type_filter() {
    let (_d, _n, oci) = setup().await;
    let img = Image::new("s", "amd64");
    let subject = push_image(&oci, "acme/app", &img, "v1").await;
    let empty = oci.push_blob("acme/app", b"{}").await;
    let mut referrer_digests = Vec::new();
    for (kind, n) in [
        ("application/vnd.example.sbom", 1),
        ("application/vnd.example.sig", 2),
    ] {
        let m = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": kind,
            "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty, "size": 2},
            "layers": [],
            "subject": {"mediaType": OCI_MANIFEST, "digest": subject, "size": img.manifest.len()},
            "annotations": {"n": n.to_string()}
        }))
        .unwrap();
        let resp = oci
            .put_manifest("acme/app", &digest(&m), OCI_MANIFEST, &m)
            .await;
        assert_eq!(resp.status(), StatusCode::CREATED);
        assert_eq!(resp.headers()["oci-subject"], subject.as_str());
        referrer_digests.push(digest(&m));
    }
    let resp = oci.get(&format!("/v2/acme/app/referrers/{subject}")).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], OCI_INDEX);
    assert!(resp.headers().get("oci-filters-applied").is_none());
    let v: Value = resp.json().await.unwrap();
    let mut found: Vec<String> = v["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["digest"].as_str().unwrap().to_string())
        .collect();
    found.sort();
    referrer_digests.sort();
    assert_eq!(found, referrer_digests);

    let resp = oci
        .get(&format!(
            "/v2/acme/app/referrers/{subject}?artifactType=application/vnd.example.sig"
        ))
        .await;
    assert_eq!(resp.headers()["oci-filters-applied"], "artifactType");
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["manifests"].as_array().unwrap().len(), 1);
    assert_eq!(
        v["manifests"][0]["artifactType"],
        "application/vnd.example.sig"
    );
    assert_eq!(v["manifests"][0]["annotations"]["n"], "2");

    // A subject with no referrers: an empty index, not an error.
    let v: Value = oci
        .get(&format!("/v2/acme/app/referrers/{}", digest(b"none")))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["manifests"], json!([]));
    let _ = OCI_CONFIG;
}

#[tokio::test]
async fn malformed_requests_never_get_a_server_error() {
    let (_d, node, oci) = setup().await;
    let paths = [
        "/v2/acme/app/manifests/",
        "/v2/acme/app/manifests/sha256:",
        "/v2/acme/app/manifests/..",
        "/v2/acme/app/blobs/sha256:zz",
        "/v2/acme/app/blobs/md5:abc",
        "/v2/acme/app/blobs/uploads/../../x",
        "/v2/acme/app/blobs/uploads/%00",
        "/v2/acme/app/referrers/notadigest",
        "/v2/%2e%2e/x/tags/list",
        "/v2/acme/app/tags/list?n=-1",
        "/v2/_catalog?n=99999999999999999999999",
        "/v2/acme//app/tags/list",
        "/v2/acme/app/blobs/uploads/1-abc?digest=x",
        "/v1/container-registries/namespaces/%ff",
    ];
    let methods = [
        reqwest::Method::GET,
        reqwest::Method::HEAD,
        reqwest::Method::PUT,
        reqwest::Method::PATCH,
        reqwest::Method::DELETE,
        reqwest::Method::POST,
    ];
    for p in paths {
        for m in &methods {
            let resp = oci
                .http
                .request(m.clone(), oci.url(p))
                .header("content-range", "garbage")
                .header("range", "bytes=a-b")
                .header("content-type", "application/vnd.oci.image.manifest.v1+json")
                .body(b"\xff\xfe{".to_vec())
                .send()
                .await
                .unwrap();
            assert!(resp.status().as_u16() < 500, "{m} {p} -> {}", resp.status());
        }
    }
    for body in [
        &b"{"[..],
        b"[]",
        b"{\"name\":5}",
        b"{\"name\":\"UPPER\"}",
        b"{\"name\":\"ok\",\"visibility\":\"weird\"}",
    ] {
        let resp = oci
            .http
            .post(oci.url("/v1/container-registries/namespaces"))
            .body(body.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400, "{:?}", String::from_utf8_lossy(body));
        let v: Value = resp.json().await.unwrap();
        assert!(v["error"]["code"].is_string() && v["error"]["message"].is_string());
    }
    // The node is still healthy afterwards.
    assert_eq!(oci.get("/v2/").await.status(), 200);
    assert!(!node.log().contains("panicked"));
}

/// The management listings filter while they page: tags by prefix,
/// artifacts by tagged state and media type, with `more` and `last`.
#[tokio::test]
async fn management_listings_filter_and_page() {
    let (_d, _n, oci) = setup().await;
    let tagged = Image::new("tagged", "amd64");
    let kept = push_image(&oci, "acme/app", &tagged, "v1").await;
    for tag in ["v2", "v3", "dev", "latest", "w1"] {
        let resp = oci
            .put_manifest("acme/app", tag, OCI_MANIFEST, &tagged.manifest)
            .await;
        assert_eq!(resp.status(), StatusCode::CREATED);
    }
    let loose = Image::new("untagged", "amd64");
    let loose_digest = loose.manifest_digest();
    push_image(&oci, "acme/app", &loose, &loose_digest).await;

    let list = |path: String| {
        let oci = &oci;
        async move {
            let resp = oci
                .get(&format!(
                    "/v1/container-registries/repositories/acme%2Fapp/{path}"
                ))
                .await;
            assert_eq!(resp.status(), StatusCode::OK, "{path}");
            resp.json::<serde_json::Value>().await.unwrap()
        }
    };
    let names = |v: &serde_json::Value, field: &str, key: &str| -> Vec<String> {
        v[field]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t[key].as_str().unwrap().to_string())
            .collect()
    };
    let first = list("tags?prefix=v&n=2".into()).await;
    assert_eq!(names(&first, "tags", "name"), ["v1", "v2"]);
    assert_eq!(first["more"], true);
    let rest = list("tags?prefix=v&n=2&last=v2".into()).await;
    assert_eq!(names(&rest, "tags", "name"), ["v3"]);
    assert_eq!(rest["more"], false, "w1 is past the prefix: {rest}");

    let untagged = list("artifacts?tagged=false".into()).await;
    assert_eq!(names(&untagged, "artifacts", "digest"), [loose_digest]);
    let with_tags = list("artifacts?tagged=true".into()).await;
    assert_eq!(names(&with_tags, "artifacts", "digest"), [kept]);
    let encoded = OCI_MANIFEST.replace('/', "%2F").replace('+', "%2B");
    let by_type = list(format!("artifacts?mediaType={encoded}&n=1")).await;
    assert_eq!(by_type["artifacts"].as_array().unwrap().len(), 1);
    assert_eq!(by_type["more"], true);
    let none = list("artifacts?mediaType=application%2Fx-none".into()).await;
    assert_eq!(none["artifacts"], serde_json::json!([]));
    assert_eq!(none["more"], false);
}
