//! `tcr-node`: one node of a tcr registry cluster.

mod api;
mod audit;
mod auth;
mod cluster_view;
mod config;
mod connections;
mod console;
mod jobs;
mod lifecycle;
mod listing;
mod metadata;
mod metrics;
mod oci;
mod rate_limits;
mod router;
mod rpc_port;
mod start;
mod state;

use std::process::ExitCode;

use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> ExitCode {
    // openraft's INFO lines are internal state dumps of several hundred
    // characters: a new user's screen shows tcr's own events; TCR_LOG=info
    // (or openraft=debug) shows them.
    let filter =
        EnvFilter::try_from_env("TCR_LOG").unwrap_or_else(|_| EnvFilter::new("info,openraft=warn"));
    let json = std::env::var("TCR_LOG_FORMAT").is_ok_and(|f| f == "json");
    if json {
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .json()
            .init();
    } else {
        tracing_subscriber::fmt().with_env_filter(filter).init();
    }
    let cfg = match config::Config::load() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("tcr-node: {e:#}");
            return ExitCode::from(2);
        }
    };
    match start::run(cfg).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("tcr-node: {e:#}");
            ExitCode::FAILURE
        }
    }
}
