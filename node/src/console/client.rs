//! The console's way to the registry's state: requests sent in-process
//! through the same routes, doors and handlers as the network's, acting for
//! the signed-in caller. A page therefore sees and does exactly what the API
//! would let the same credential see and do; there is no second path.

use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{header, Method, Request, StatusCode};
use axum::Router;
use serde::de::DeserializeOwned;
use tower::ServiceExt;

use crate::auth::{Caller, ConsoleCaller};

/// Largest response a page reads (a manifest is at most a few MiB; a
/// listing page is bounded by its `n`).
const MAX_RESPONSE: usize = 16 << 20;

/// What the API answered instead of success, in its own words.
#[derive(Debug, Clone)]
pub struct Refused {
    pub status: StatusCode,
    pub message: String,
}

impl Refused {
    /// The console's own refusal of a form or a link it cannot use.
    pub fn bad_request(message: impl Into<String>) -> Refused {
        Refused {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.message, self.status.as_u16())
    }
}

/// The in-process client of one page request.
#[derive(Clone)]
pub struct Client {
    routes: Router,
    caller: Caller,
    /// The browser's address: rate limits and the audit trail see it.
    peer: Option<SocketAddr>,
}

impl Client {
    pub fn new(routes: Router, caller: Caller, peer: Option<SocketAddr>) -> Client {
        Client {
            routes,
            caller,
            peer,
        }
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, Refused> {
        self.json(Method::GET, path, None).await
    }

    /// Each path read at once; the answer of each, in order.
    pub async fn get_each<T: DeserializeOwned>(
        &self,
        paths: impl IntoIterator<Item = String>,
    ) -> Vec<Result<T, Refused>> {
        futures::future::join_all(paths.into_iter().map(|p| async move { self.get(&p).await }))
            .await
    }

    /// A body-less answer (204, 202): only whether it succeeded.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<(), Refused> {
        self.raw(method, path, body, None).await.map(|_| ())
    }

    pub async fn json<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<T, Refused> {
        let bytes = self.raw(method, path, body, None).await?;
        serde_json::from_slice(&bytes).map_err(|e| Refused {
            status: StatusCode::BAD_GATEWAY,
            message: format!("unexpected answer from {path}: {e}"),
        })
    }

    /// A registry resource (`/v2/...`) read with an `Accept` header.
    pub async fn oci(&self, path: &str, accept: &str) -> Result<bytes::Bytes, Refused> {
        self.raw(Method::GET, path, None, Some(accept)).await
    }

    async fn raw(
        &self,
        method: Method,
        path: &str,
        body: Option<serde_json::Value>,
        accept: Option<&str>,
    ) -> Result<bytes::Bytes, Refused> {
        let mut req = Request::builder().method(method).uri(path);
        if let Some(a) = accept {
            req = req.header(header::ACCEPT, a);
        }
        let body = match body {
            Some(v) => {
                req = req.header(header::CONTENT_TYPE, "application/json");
                Body::from(serde_json::to_vec(&v).expect("JSON values serialise"))
            }
            None => Body::empty(),
        };
        let mut req = req.body(body).map_err(|e| Refused {
            status: StatusCode::BAD_REQUEST,
            message: format!("{path}: {e}"),
        })?;
        req.extensions_mut()
            .insert(ConsoleCaller(self.caller.clone()));
        if let Some(p) = self.peer {
            req.extensions_mut().insert(ConnectInfo(p));
        }
        let resp = self
            .routes
            .clone()
            .oneshot(req)
            .await
            .unwrap_or_else(|never| match never {});
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), MAX_RESPONSE)
            .await
            .map_err(|e| Refused {
                status: StatusCode::BAD_GATEWAY,
                message: format!("reading {path}: {e}"),
            })?;
        if status.is_success() {
            return Ok(bytes);
        }
        Err(Refused {
            status,
            message: error_message(&bytes).unwrap_or_else(|| {
                status
                    .canonical_reason()
                    .unwrap_or("request failed")
                    .to_string()
            }),
        })
    }
}

/// The message of either façade's error body: the management API's
/// `{"error":{"message"}}` or the registry's `{"errors":[{"message"}]}`.
fn error_message(body: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    v.pointer("/error/message")
        .or_else(|| v.pointer("/errors/0/message"))
        .and_then(|m| m.as_str())
        .map(str::to_string)
}

/// One path segment, every byte but letters and digits escaped (a
/// repository's `/` becomes `%2F`, as the management API expects).
pub fn seg(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// `?a=1&b=2` from the pairs whose value is present.
pub fn query(pairs: &[(&str, Option<&str>)]) -> String {
    let present: Vec<(&str, &str)> = pairs
        .iter()
        .filter_map(|(k, v)| v.map(|v| (*k, v)))
        .collect();
    if present.is_empty() {
        return String::new();
    }
    format!(
        "?{}",
        serde_urlencoded::to_string(present).expect("strings encode")
    )
}

/// The management API's base path.
pub const API: &str = "/v1/container-registries";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_names_stay_inside_their_segment() {
        assert_eq!(seg("acme/app"), "acme%2Fapp");
        assert_eq!(seg("../cluster"), "%2E%2E%2Fcluster");
        assert_eq!(seg("a?b#c"), "a%3Fb%23c");
        assert_eq!(
            query(&[("n", Some("5")), ("last", None), ("p", Some("a&b"))]),
            "?n=5&p=a%26b"
        );
        assert_eq!(query(&[("last", None)]), "");
    }
}
