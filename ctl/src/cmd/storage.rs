//! `tcr storage status|rebalance|scrub`: every member's storage loop.

use std::time::Duration;

use clap::Subcommand;
use reqwest::Method;
use serde_json::{json, Value};

use crate::client::Client;
use crate::output::{table, Output};

#[derive(Subcommand)]
pub enum StorageCmd {
    /// Per node: blobs and bytes held, under-replicated (missing) and
    /// misplaced counts, what the last pass moved, scrub results, and the
    /// cache of blobs streamed from their owners.
    Status {
        /// Refresh every two seconds until interrupted.
        #[arg(long)]
        watch: bool,
    },
    /// Start a pass on every node now (repair and move blobs to their owners).
    Rebalance,
    /// Start a pass on every node now (it re-hashes a bounded amount of data).
    Scrub,
}

const CLUSTER: &str = "/v1/container-registries/cluster";
const STORAGE: &str = "/v1/container-registries/storage";
const MEMBERS_STORAGE: &str = "/v1/container-registries/storage/members";

pub async fn members(c: &Client) -> anyhow::Result<Vec<(u64, String)>> {
    let status = c.call(Method::GET, CLUSTER, None).await?;
    Ok(status["members"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter_map(|m| Some((m["id"].as_u64()?, m["httpAddr"].as_str()?.to_string())))
        .collect())
}

/// Every member's report: gathered by the node at the endpoint over the
/// peer port (one call; members need not be reachable from here), or, from
/// a node too old to gather them, asked of each member's registry port.
async fn collect(c: &Client) -> anyhow::Result<Vec<Value>> {
    if let Ok(v) = c.call(Method::GET, MEMBERS_STORAGE, None).await {
        if let Some(nodes) = v["nodes"].as_array() {
            return Ok(nodes.clone());
        }
    }
    let mut out = Vec::new();
    for (id, addr) in members(c).await? {
        let v = match c.member(&addr).call(Method::GET, STORAGE, None).await {
            Ok(v) => v,
            Err(e) => json!({"nodeId": id, "error": e.to_string()}),
        };
        out.push(v);
    }
    Ok(out)
}

/// A node's cache: blobs, bytes of its limit, and reads it served.
fn cached(c: &Value) -> String {
    let mib = |k: &str| c[k].as_u64().unwrap_or(0) as f64 / (1 << 20) as f64;
    match c["blobs"].as_u64() {
        Some(blobs) => format!(
            "{blobs} ({:.1}/{:.0} MiB, {} hits)",
            mib("bytes"),
            mib("limit"),
            c["hits"].as_u64().unwrap_or(0)
        ),
        None => "off".into(),
    }
}

fn print(nodes: &[Value]) {
    let n = |v: &Value, k: &str| {
        v["storage"][k]
            .as_u64()
            .map(|x| x.to_string())
            .unwrap_or_else(|| "-".into())
    };
    let rows: Vec<Vec<String>> = nodes
        .iter()
        .map(|v| {
            vec![
                v["nodeId"].to_string(),
                n(v, "held"),
                v["storage"]["heldBytes"]
                    .as_u64()
                    .map(|b| format!("{:.1} MiB", b as f64 / (1 << 20) as f64))
                    .unwrap_or_else(|| "-".into()),
                n(v, "missing"),
                n(v, "underReplicated"),
                n(v, "misplaced"),
                n(v, "pulled"),
                n(v, "dropped"),
                n(v, "corruptFound"),
                cached(&v["storage"]["cache"]),
                n(v, "passes"),
                v["error"].as_str().unwrap_or("").to_string(),
            ]
        })
        .collect();
    table(
        &[
            "NODE",
            "HELD",
            "BYTES",
            "MISSING",
            "UNDER-R",
            "MISPLACED",
            "PULLED",
            "DROPPED",
            "CORRUPT",
            "CACHED",
            "PASSES",
            "ERROR",
        ],
        &rows,
    );
    let misplaced: u64 = nodes
        .iter()
        .filter_map(|v| v["storage"]["misplaced"].as_u64())
        .sum();
    let missing: u64 = nodes
        .iter()
        .filter_map(|v| v["storage"]["missing"].as_u64())
        .sum();
    let under: u64 = nodes
        .iter()
        .filter_map(|v| v["storage"]["underReplicated"].as_u64())
        .sum();
    if misplaced + missing + under == 0 {
        println!("every blob is on its owners");
    } else {
        println!("{under} blob(s) under-replicated; {missing} copies to pull, {misplaced} to drop");
    }
}

/// Copies in place (held by their owners) out of all owned copies, and the
/// copies still to drop, summed over the nodes.
fn progress(nodes: &[Value]) -> (u64, u64, u64) {
    let sum = |k: &str| -> u64 { nodes.iter().filter_map(|v| v["storage"][k].as_u64()).sum() };
    (sum("held"), sum("owned"), sum("misplaced"))
}

fn progress_bar() -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{msg} [{bar:40}] {pos}/{len} owned copies in place",
        )
        .expect("static template")
        .progress_chars("=> "),
    );
    bar
}

fn update(bar: &indicatif::ProgressBar, nodes: &[Value]) {
    let (held, owned, misplaced) = progress(nodes);
    bar.set_length(owned);
    bar.set_position(held);
    bar.set_message(if held == owned && misplaced == 0 {
        "balanced".to_string()
    } else {
        format!("rebalancing, {misplaced} copies to drop")
    });
}

pub async fn run(c: &Client, cmd: StorageCmd, out: Output) -> anyhow::Result<()> {
    match cmd {
        StorageCmd::Status { watch } => {
            let nodes = collect(c).await?;
            if out == Output::Json {
                println!("{}", serde_json::to_string_pretty(&nodes)?);
                return Ok(());
            }
            print(&nodes);
            if !watch {
                return Ok(());
            }
            // A bar follows every node's passes until interrupted.
            let bar = progress_bar();
            loop {
                update(&bar, &collect(c).await?);
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
        StorageCmd::Rebalance | StorageCmd::Scrub => {
            let mut started = Vec::new();
            for (id, addr) in members(c).await? {
                c.member(&addr)
                    .call(Method::POST, &format!("{STORAGE}/passes"), None)
                    .await?;
                started.push(id);
            }
            if out == Output::Json {
                println!("{}", json!({"started": started}));
            } else {
                println!("a storage pass started on nodes {started:?}; follow it with `tcr storage status --watch`");
            }
            Ok(())
        }
    }
}

/// After a membership change: start storage passes and wait until every
/// member has run a full pass since, and none reports a missing or
/// under-replicated copy.
pub async fn wait_until_placed(c: &Client, timeout: Duration) -> anyhow::Result<()> {
    // Pass counters by node id: the membership a node reports may still
    // lag the change, so members can appear or go between readings.
    let passes = |nodes: &[Value]| -> std::collections::BTreeMap<u64, u64> {
        nodes
            .iter()
            .filter_map(|v| Some((v["nodeId"].as_u64()?, v["storage"]["passes"].as_u64()?)))
            .collect()
    };
    let mut start = passes(&collect(c).await?);
    let bar = progress_bar();
    let deadline = std::time::Instant::now() + timeout;
    loop {
        start_passes(c).await?;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let nodes = collect(c).await?;
        update(&bar, &nodes);
        let now = passes(&nodes);
        for (id, n) in &now {
            start.entry(*id).or_insert(*n);
        }
        // Every member answering, each with two passes since the change.
        let fresh = now.len() == nodes.len() && now.iter().all(|(id, n)| *n >= start[id] + 2);
        let sum = |k: &str| -> u64 { nodes.iter().filter_map(|v| v["storage"][k].as_u64()).sum() };
        let errors = nodes.iter().any(|v| v.get("error").is_some());
        if fresh && !errors && sum("missing") + sum("underReplicated") == 0 {
            bar.finish_and_clear();
            return Ok(());
        }
        if std::time::Instant::now() > deadline {
            bar.finish_and_clear();
            anyhow::bail!(
                "blobs still under-replicated after {timeout:?}: {} missing copies",
                sum("missing")
            );
        }
    }
}

/// Ask every member for a storage pass now (a member that does not answer
/// runs its next scheduled one).
pub async fn start_passes(c: &Client) -> anyhow::Result<()> {
    for (_, addr) in members(c).await? {
        let _ = c
            .member(&addr)
            .call(Method::POST, &format!("{STORAGE}/passes"), None)
            .await;
    }
    Ok(())
}
