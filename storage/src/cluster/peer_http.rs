//! HTTP clients for node-to-node calls (blob reads between nodes, proxied
//! upload requests), to other nodes' RPC ports: under peer TLS they present
//! this node's certificate and accept only a peer's; no redirects, Nagle
//! off. Each caller keeps one client for the life of the process.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

static PEER_TLS: OnceLock<Option<Arc<tcr_tls::ClientConfig>>> = OnceLock::new();

/// Set once at start, before any client is made: the TLS configuration of
/// calls to peers (`None`: plain HTTP).
pub fn configure(tls: Option<Arc<tcr_tls::ClientConfig>>) {
    let _ = PEER_TLS.set(tls);
}

fn tls() -> Option<Arc<tcr_tls::ClientConfig>> {
    PEER_TLS.get().cloned().flatten()
}

/// `https` under peer TLS, else `http`.
pub fn scheme() -> &'static str {
    if tls().is_some() {
        "https"
    } else {
        "http"
    }
}

/// A client that gives up connecting after `connect` and, with
/// `read_idle`, on a peer that sends nothing for that long.
pub fn client(connect: Duration, read_idle: Option<Duration>) -> reqwest::Client {
    let mut builder = reqwest::Client::builder()
        .connect_timeout(connect)
        .tcp_nodelay(true)
        .redirect(reqwest::redirect::Policy::none());
    if let Some(tls) = tls() {
        builder = builder.use_preconfigured_tls((*tls).clone());
    }
    match read_idle {
        Some(idle) => builder.read_timeout(idle),
        None => builder,
    }
    .build()
    .expect("an HTTP client for peers builds")
}
