//! Tags as linearizable registers: clients PUT manifests with unique
//! contents to a few tags and GET them back, through random nodes.

use rand::Rng;
use serde_json::json;
use sha2::{Digest, Sha256};

use super::{expect, from_error, from_status, perform, Ctx, Invocation, Outcome};

pub const REPO: &str = "jepsen/tags";
const MEDIA: &str = "application/vnd.oci.image.manifest.v1+json";
const EMPTY: &[u8] = b"{}";

fn empty_digest() -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(EMPTY)))
}

pub fn keys(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("k{i}")).collect()
}

/// The namespace and the config blob every manifest references.
pub async fn setup(ctx: &Ctx) -> anyhow::Result<()> {
    super::namespaces::ensure_namespace(ctx, "jepsen").await?;
    let url = ctx.url(
        1,
        &format!("/v2/{REPO}/blobs/uploads/?digest={}", empty_digest()),
    );
    let r = ctx
        .http
        .post(url)
        .bearer_auth(&ctx.token)
        .body(EMPTY.to_vec())
        .send()
        .await?;
    anyhow::ensure!(
        r.status().is_success(),
        "pushing the config blob: {}",
        r.status()
    );
    Ok(())
}

fn manifest(value: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": MEDIA,
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty_digest(), "size": 2},
        "layers": [],
        "annotations": {"jepsen.value": value},
    }))
    .expect("json")
}

pub async fn write(ctx: &Ctx, node: usize, key: &str, value: &str) -> Outcome {
    let r = ctx
        .http
        .put(ctx.url(node, &format!("/v2/{REPO}/manifests/{key}")))
        .bearer_auth(&ctx.token)
        .header("content-type", MEDIA)
        .body(manifest(value))
        .send()
        .await;
    expect(r, reqwest::StatusCode::CREATED).await
}

/// The value a tag holds (None: not set yet).
pub async fn read(ctx: &Ctx, node: usize, key: &str) -> Outcome {
    let r = ctx
        .http
        .get(ctx.url(node, &format!("/v2/{REPO}/manifests/{key}")))
        .bearer_auth(&ctx.token)
        .header("accept", MEDIA)
        .send()
        .await;
    match r {
        Err(e) => from_error(&e),
        Ok(r) if r.status() == reqwest::StatusCode::OK => {
            match r.json::<serde_json::Value>().await {
                Ok(v) => match v["annotations"]["jepsen.value"].as_str() {
                    Some(s) => Outcome::Ok(Some(s.to_string())),
                    None => Outcome::Info("manifest without a value".into()),
                },
                Err(e) => Outcome::Info(format!("body: {e}")),
            }
        }
        // Not written yet: the empty register.
        Ok(r) if r.status() == reqwest::StatusCode::NOT_FOUND => Outcome::Ok(Some(String::new())),
        Ok(r) => {
            let s = r.status();
            from_status(s, &r.text().await.unwrap_or_default())
        }
    }
}

/// One random operation of process `process`; true when indeterminate.
pub async fn op(ctx: &Ctx, keys: &[String], process: i64, seq: u64) -> bool {
    let node = ctx.random_node();
    let key = keys[rand::rng().random_range(0..keys.len())].clone();
    if rand::rng().random_bool(0.5) {
        let value = format!("{process}-{seq}");
        let inv = Invocation {
            f: "write",
            key: Some(key.clone()),
            value: Some(value.clone()),
            node,
        };
        perform(ctx, "tags", process, inv, write(ctx, node, &key, &value)).await
    } else {
        let inv = Invocation {
            f: "read",
            key: Some(key.clone()),
            value: None,
            node,
        };
        perform(ctx, "tags", process, inv, read(ctx, node, &key)).await
    }
}
