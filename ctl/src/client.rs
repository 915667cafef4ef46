//! A small client for the management API, with errors that say what to do.

use anyhow::{anyhow, Context};
use reqwest::{Method, StatusCode};
use serde_json::Value;

pub struct Client {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
}

impl Client {
    pub fn new(endpoint: &str, token: Option<String>) -> Client {
        Client {
            base: endpoint.trim_end_matches('/').to_string(),
            token,
            http: reqwest::Client::new(),
        }
    }

    /// The same credentials against another node.
    pub fn at(&self, endpoint: &str) -> Client {
        Client {
            base: endpoint.trim_end_matches('/').to_string(),
            token: self.token.clone(),
            http: self.http.clone(),
        }
    }

    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let url = format!("{}{}", self.base, path);
        let mut req = self.http.request(method.clone(), &url);
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req
            .send()
            .await
            .with_context(|| format!("cannot reach {} (is a node running there?)", self.base))?;
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        let json: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if status.is_success() {
            return Ok(json);
        }
        if status == StatusCode::UNAUTHORIZED {
            return Err(anyhow!(
                "{method} {path}: unauthorized; pass --token or set TCR_TOKEN"
            ));
        }
        let msg = json["error"]["message"]
            .as_str()
            .unwrap_or(text.trim())
            .to_string();
        Err(anyhow!("{method} {path}: {status}: {msg}"))
    }
}
