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
