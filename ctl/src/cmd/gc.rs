//! `tcr gc`: garbage collection of unreferenced blobs.

use clap::Subcommand;
use reqwest::Method;
use serde_json::{json, Value};

use crate::client::Client;
use crate::output::{print, Output};

#[derive(Subcommand)]
pub enum GcCmd {
    /// Collect blobs no manifest references (pushes and pulls go on).
    Run {
        /// List what would be removed; remove nothing.
        #[arg(long)]
        dry_run: bool,
        /// Override the grace period for this run, e.g. `1h`, `0s`.
        #[arg(long)]
        grace_period: Option<humantime::Duration>,
    },
    /// The last run, and the bytes each node has reclaimed.
    Status,
}

pub async fn run(c: &Client, cmd: GcCmd, out: Output) -> anyhow::Result<()> {
    match cmd {
        GcCmd::Run {
            dry_run,
            grace_period,
        } => {
            let mut body = json!({ "dryRun": dry_run });
            if let Some(g) = grace_period {
                body["gracePeriodSecs"] = json!(g.as_secs());
            }
            let v = c
                .call(Method::POST, "/v1/container-registries/gc/runs", Some(body))
                .await?;
            if !dry_run {
                // Every node deletes its files in a storage pass: start one now.
                crate::cmd::storage::start_passes(c).await?;
            }
            print(
                &v,
                out,
                None,
                &[
                    ("DRY RUN", "dryRun"),
                    ("CANDIDATES", "candidates"),
                    ("CANDIDATE BYTES", "candidateBytes"),
                    ("COLLECTED", "collected"),
                    ("COLLECTED BYTES", "collectedBytes"),
                ],
            )?;
            if dry_run && out == Output::Human {
                for d in v["digests"].as_array().cloned().unwrap_or_default() {
                    println!("  {}", d.as_str().unwrap_or(""));
                }
            }
            Ok(())
        }
        GcCmd::Status => {
            let mut nodes = Vec::new();
            for (id, addr) in crate::cmd::storage::members(c).await? {
                let v = c
                    .member(&addr)
                    .call(Method::GET, "/v1/container-registries/gc", None)
                    .await
                    .unwrap_or_else(|e| json!({"nodeId": id, "error": e.to_string()}));
                nodes.push(v);
            }
            let last = nodes
                .iter()
                .find_map(|n| n.get("last").filter(|l| !l.is_null()).cloned())
                .unwrap_or(Value::Null);
            let v = json!({"last": last, "nodes": nodes});
            if out == Output::Json {
                println!("{}", serde_json::to_string_pretty(&v)?);
                return Ok(());
            }
            match last.as_object() {
                Some(_) => println!(
                    "last run at {}: {} candidates, {} blobs ({} bytes) collected",
                    last["at"], last["candidates"], last["collected"], last["collectedBytes"]
                ),
                None => println!("no garbage collection has run"),
            }
            print(
                &v,
                out,
                Some("nodes"),
                &[
                    ("NODE", "nodeId"),
                    ("SWEPT BLOBS", "sweptBlobs"),
                    ("SWEPT BYTES", "sweptBytes"),
                    ("ERROR", "error"),
                ],
            )
        }
    }
}
