//! Namespaces: visibility flips as registers (one per namespace), and
//! creations, every acknowledged one of which must exist afterwards.

use rand::Rng;
use serde_json::json;

use super::{from_error, from_status, perform, Ctx, Invocation, Outcome};

const BASE: &str = "/v1/container-registries/namespaces";

pub fn keys(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("jns{i}")).collect()
}

/// Create `name` (private) unless it exists.
pub async fn ensure_namespace(ctx: &Ctx, name: &str) -> anyhow::Result<()> {
    let r = ctx
        .http
        .post(ctx.url(1, BASE))
        .bearer_auth(&ctx.token)
        .json(&json!({"name": name, "visibility": "private"}))
        .send()
        .await?;
    anyhow::ensure!(
        r.status().is_success() || r.status() == reqwest::StatusCode::CONFLICT,
        "creating namespace {name}: {}",
        r.status()
    );
    Ok(())
}

pub async fn setup(ctx: &Ctx, keys: &[String]) -> anyhow::Result<()> {
    for k in keys {
        ensure_namespace(ctx, k).await?;
    }
    Ok(())
}

async fn answer(r: Result<reqwest::Response, reqwest::Error>, ok: reqwest::StatusCode) -> Outcome {
    match r {
        Err(e) => from_error(&e),
        Ok(r) if r.status() == ok => match r.json::<serde_json::Value>().await {
            Ok(v) => Outcome::Ok(v["visibility"].as_str().map(String::from)),
            Err(_) => Outcome::Ok(None),
        },
        Ok(r) => {
            let s = r.status();
            from_status(s, &r.text().await.unwrap_or_default())
        }
    }
}

pub async fn read(ctx: &Ctx, node: usize, ns: &str) -> Outcome {
    let r = ctx
        .http
        .get(ctx.url(node, &format!("{BASE}/{ns}")))
        .bearer_auth(&ctx.token)
        .send()
        .await;
    answer(r, reqwest::StatusCode::OK).await
}

/// Whether namespace `ns` exists, as node `node` answers.
pub async fn exists(ctx: &Ctx, node: usize, ns: &str) -> Option<bool> {
    let r = ctx
        .http
        .get(ctx.url(node, &format!("{BASE}/{ns}")))
        .bearer_auth(&ctx.token)
        .send()
        .await
        .ok()?;
    match r.status() {
        reqwest::StatusCode::OK => Some(true),
        reqwest::StatusCode::NOT_FOUND => Some(false),
        _ => None,
    }
}

pub async fn op(ctx: &Ctx, keys: &[String], process: i64, seq: u64) -> bool {
    let node = ctx.random_node();
    let roll = rand::rng().random_range(0..10);
    let key = keys[rand::rng().random_range(0..keys.len())].clone();
    if roll < 4 {
        let visibility = if rand::rng().random_bool(0.5) {
            "public"
        } else {
            "private"
        };
        let inv = Invocation {
            f: "write",
            key: Some(key.clone()),
            value: Some(visibility.into()),
            node,
        };
        let run = async {
            let r = ctx
                .http
                .patch(ctx.url(node, &format!("{BASE}/{key}")))
                .bearer_auth(&ctx.token)
                .json(&json!({"visibility": visibility}))
                .send()
                .await;
            match answer(r, reqwest::StatusCode::OK).await {
                Outcome::Ok(_) => Outcome::Ok(None),
                other => other,
            }
        };
        perform(ctx, "namespaces", process, inv, run).await
    } else if roll < 8 {
        let inv = Invocation {
            f: "read",
            key: Some(key.clone()),
            value: None,
            node,
        };
        perform(ctx, "namespaces", process, inv, read(ctx, node, &key)).await
    } else {
        let name = format!("jc-{process}-{seq}").replace('-', "x");
        let inv = Invocation {
            f: "create",
            key: Some(name.clone()),
            value: None,
            node,
        };
        let run = async {
            let r = ctx
                .http
                .post(ctx.url(node, BASE))
                .bearer_auth(&ctx.token)
                .json(&json!({"name": name, "visibility": "private"}))
                .send()
                .await;
            match answer(r, reqwest::StatusCode::CREATED).await {
                Outcome::Ok(_) => Outcome::Ok(None),
                other => other,
            }
        };
        perform(ctx, "namespaces", process, inv, run).await
    }
}
