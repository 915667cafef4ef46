//! HTTP clients for node-to-node calls (blob reads between nodes, proxied
//! upload requests): plain HTTP on private addresses, no redirects, Nagle
//! off. Each caller keeps one client for the life of the process.

use std::time::Duration;

/// A client that gives up connecting after `connect` and, with
/// `read_idle`, on a peer that sends nothing for that long.
pub fn client(connect: Duration, read_idle: Option<Duration>) -> reqwest::Client {
    let builder = reqwest::Client::builder()
        .connect_timeout(connect)
        .tcp_nodelay(true)
        .redirect(reqwest::redirect::Policy::none());
    match read_idle {
        Some(idle) => builder.read_timeout(idle),
        None => builder,
    }
    .build()
    .expect("an HTTP client without TLS builds")
}
