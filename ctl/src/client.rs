//! A small client for the management API, with errors that say what to do.

use anyhow::{anyhow, Context};
use reqwest::{Method, StatusCode};
use serde_json::Value;

pub struct Client {
    pub base: String,
    token: Option<String>,
    http: reqwest::Client,
}

impl Client {
    pub fn new(endpoint: &str, token: Option<String>) -> Client {
        Client {
            base: endpoint.trim_end_matches('/').to_string(),
            token,
            // Redirects (307 to the leader) are followed by hand: reqwest
            // drops the Authorization header when the port changes.
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("a TLS-less HTTP client builds"),
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

    /// One management call. A 503 (no leader yet, leadership moving) is
    /// retried for up to 30 s before it is reported.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            match self.call_once(method.clone(), path, body.clone()).await? {
                Reply::Unavailable(msg) if std::time::Instant::now() < deadline => {
                    note_waiting(&msg);
                    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                }
                Reply::Unavailable(msg) => {
                    return Err(anyhow!("{method} {path}: 503 Service Unavailable: {msg}"))
                }
                Reply::Done(v) => return Ok(v),
            }
        }
    }

    async fn call_once(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Reply> {
        let mut url = format!("{}{}", self.base, path);
        let mut redirects = 0;
        let resp = loop {
            let mut req = self.http.request(method.clone(), &url);
            if let Some(t) = &self.token {
                req = req.bearer_auth(t);
            }
            if let Some(b) = &body {
                req = req.json(b);
            }
            let resp = req
                .send()
                .await
                .with_context(|| format!("cannot reach {url} (is a node running there?)"))?;
            let location = resp
                .headers()
                .get(reqwest::header::LOCATION)
                .and_then(|l| l.to_str().ok());
            match location {
                Some(l) if resp.status().is_redirection() && redirects < 5 => {
                    url = l.to_string();
                    redirects += 1;
                }
                _ => break resp,
            }
        };
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        let json: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if status.is_success() {
            return Ok(Reply::Done(json));
        }
        let msg = json["error"]["message"]
            .as_str()
            .unwrap_or(text.trim())
            .to_string();
        if status == StatusCode::SERVICE_UNAVAILABLE {
            return Ok(Reply::Unavailable(msg));
        }
        if status == StatusCode::UNAUTHORIZED {
            return Err(anyhow!(
                "{method} {path}: unauthorized; pass --token or set TCR_TOKEN"
            ));
        }
        Err(anyhow!("{method} {path}: {status}: {msg}"))
    }
}

enum Reply {
    Done(Value),
    Unavailable(String),
}

/// Say once per wait why the CLI is waiting (stderr, so JSON output stays clean).
fn note_waiting(msg: &str) {
    use std::sync::atomic::{AtomicBool, Ordering};
    static SAID: AtomicBool = AtomicBool::new(false);
    if !SAID.swap(true, Ordering::Relaxed) {
        eprintln!("waiting for the cluster: {msg}");
    }
}
