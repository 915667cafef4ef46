//! A thin OCI client over reqwest for tests that check exact status codes,
//! headers and error bodies (the real clients hide those).

use reqwest::{Client, Response, StatusCode};
use serde_json::Value;

use crate::images::digest;

pub struct Oci {
    pub base: String,
    pub http: Client,
}

impl Oci {
    pub fn new(base: &str) -> Oci {
        Oci {
            base: base.to_string(),
            http: Client::new(),
        }
    }

    /// With a client of the caller's (a CA to trust, credentials).
    pub fn with_http(base: &str, http: Client) -> Oci {
        Oci {
            base: base.to_string(),
            http,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub async fn push_blob(&self, repo: &str, data: &[u8]) -> String {
        let d = digest(data);
        let resp = self
            .http
            .post(self.url(&format!("/v2/{repo}/blobs/uploads/?digest={d}")))
            .body(data.to_vec())
            .send()
            .await
            .expect("push blob");
        assert_eq!(
            resp.status(),
            StatusCode::CREATED,
            "push blob: {:?}",
            resp.text().await
        );
        d
    }

    pub async fn put_manifest(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        body: &[u8],
    ) -> Response {
        self.http
            .put(self.url(&format!("/v2/{repo}/manifests/{reference}")))
            .header("content-type", media_type)
            .body(body.to_vec())
            .send()
            .await
            .expect("put manifest")
    }

    pub async fn get(&self, path: &str) -> Response {
        self.http.get(self.url(path)).send().await.expect("GET")
    }
}

/// The first error code of an OCI error body.
pub async fn error_code(resp: Response) -> String {
    let v: Value = resp.json().await.expect("error body is JSON");
    v["errors"][0]["code"]
        .as_str()
        .expect("errors[0].code")
        .to_string()
}

/// PUT `manifest` under tags `t<i>` (i in `tags`, zero-padded to `width`)
/// in `repo`, round-robin over `urls`, `concurrency` at a time; every push
/// must be acknowledged with 201.
pub async fn push_tags(
    urls: &[String],
    repo: &str,
    media_type: &str,
    manifest: &[u8],
    tags: std::ops::Range<usize>,
    width: usize,
    concurrency: usize,
) {
    use futures::StreamExt;
    let client = Client::new();
    futures::stream::iter(tags)
        .map(|i| {
            let url = format!("{}/v2/{repo}/manifests/t{i:0width$}", urls[i % urls.len()]);
            let req = client
                .put(url)
                .header("content-type", media_type)
                .body(manifest.to_vec());
            async move {
                let r = req.send().await.expect("PUT manifest");
                assert_eq!(r.status(), StatusCode::CREATED, "tag t{i}");
            }
        })
        .buffer_unordered(concurrency)
        .collect::<Vec<()>>()
        .await;
}
