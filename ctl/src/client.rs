//! A small client for the management API, with errors that say what to do.

use anyhow::{anyhow, Context};
use reqwest::{Method, StatusCode};
use serde_json::Value;

pub struct Client {
    pub base: String,
    token: Option<String>,
    http: reqwest::Client,
}

/// An HTTP client builder that verifies https endpoints against the
/// system's roots, or against `cacert` (a PEM bundle) when given.
pub fn http_builder(cacert: Option<&std::path::Path>) -> anyhow::Result<reqwest::ClientBuilder> {
    let mut b = reqwest::Client::builder();
    if let Some(path) = cacert {
        let pem = std::fs::read(path)
            .with_context(|| format!("reading the CA bundle {} (--cacert)", path.display()))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .with_context(|| format!("{} holds no PEM certificate", path.display()))?;
        if certs.is_empty() {
            anyhow::bail!("{} holds no PEM certificate", path.display());
        }
        b = b.tls_built_in_root_certs(false);
        for c in certs {
            b = b.add_root_certificate(c);
        }
    }
    Ok(b)
}

/// A connection failure, with the TLS cause spelled out (reqwest hides it
/// a few sources deep) and what to do about an untrusted certificate.
pub fn unreachable(url: &str, e: reqwest::Error) -> anyhow::Error {
    let mut causes = vec![];
    let mut source: Option<&dyn std::error::Error> = Some(&e);
    while let Some(s) = source {
        causes.push(s.to_string());
        source = s.source();
    }
    let all = causes.join(": ");
    if all.contains("certificate") || all.contains("UnknownIssuer") {
        anyhow!("cannot reach {url}: {all} (the server's TLS certificate is not trusted: pass --cacert with the CA that signed it)")
    } else {
        anyhow!("cannot reach {url} (is a node running there?): {all}")
    }
}

impl Client {
    pub fn new(endpoint: &str, token: Option<String>, http: reqwest::ClientBuilder) -> Client {
        Client {
            base: endpoint.trim_end_matches('/').to_string(),
            token,
            // Redirects (307 to the leader) are followed by hand, and only
            // to a member of the cluster (see `follow`).
            http: http
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("an HTTP client builds"),
        }
    }

    /// The same credentials against the member at `http_addr` (as the
    /// cluster lists it), over the scheme of the endpoint given.
    pub fn member(&self, http_addr: &str) -> Client {
        let scheme = if self.base.starts_with("https://") {
            "https"
        } else {
            "http"
        };
        self.at(&format!("{scheme}://{http_addr}"))
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
            let resp = req.send().await.map_err(|e| unreachable(&url, e))?;
            let location = resp
                .headers()
                .get(reqwest::header::LOCATION)
                .and_then(|l| l.to_str().ok());
            match location {
                Some(l) if resp.status().is_redirection() && redirects < 5 => {
                    url = self.follow(&url, l).await?;
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

impl Client {
    /// Where a redirect from `from` to `location` may go: only to a node
    /// the cluster lists as a member, over the same scheme, so the token
    /// is never sent to another host or in plain text.
    async fn follow(&self, from: &str, location: &str) -> anyhow::Result<String> {
        let from_url = url::Url::parse(from).with_context(|| format!("bad URL {from}"))?;
        let to = from_url
            .join(location)
            .with_context(|| format!("bad redirect target {location}"))?;
        if to.scheme() != from_url.scheme() {
            return Err(anyhow!(
                "refusing to follow a redirect from {from} to {to}: the scheme changes"
            ));
        }
        let authority = match (to.host_str(), to.port_or_known_default()) {
            (Some(h), Some(p)) => format!("{h}:{p}"),
            _ => return Err(anyhow!("refusing to follow a redirect to {to}: no host")),
        };
        let same = from_url.host_str() == to.host_str()
            && from_url.port_or_known_default() == to.port_or_known_default();
        if !same {
            let mut req = self
                .http
                .get(format!("{}/v1/container-registries/cluster", self.base));
            if let Some(t) = &self.token {
                req = req.bearer_auth(t);
            }
            let status: Value = req
                .send()
                .await
                .map_err(|e| unreachable(&self.base, e))?
                .json()
                .await
                .unwrap_or(Value::Null);
            let member = status["members"].as_array().is_some_and(|m| {
                m.iter().any(|m| {
                    m["httpAddr"].as_str().is_some_and(|a| {
                        a.trim_start_matches('[').replace(']', "")
                            == authority.replace(['[', ']'], "")
                    })
                })
            });
            if !member {
                return Err(anyhow!(
                    "refusing to follow a redirect to {to}: {authority} is not a member of the cluster"
                ));
            }
        }
        Ok(to.to_string())
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
