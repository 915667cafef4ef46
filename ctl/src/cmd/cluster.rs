//! `tcr cluster status` and `tcr members list|add|remove`.

use std::time::Duration;

use clap::Subcommand;
use reqwest::Method;
use serde_json::{json, Value};

use crate::client::Client;
use crate::output::{table, Output};

#[derive(Subcommand)]
pub enum ClusterCmd {
    /// Leader, term, indexes, and every member's role, address, lag, health
    /// and state digest.
    Status,
    /// Change a cluster setting.
    #[command(subcommand)]
    Set(SetCmd),
}

#[derive(Subcommand)]
pub enum SetCmd {
    /// How many nodes hold each blob (at most the number of voters).
    ReplicationFactor { factor: u32 },
    /// Bandwidth of repair and rebalance pulls per node, e.g. `100MB`
    /// (`0`: no limit); overrides the nodes' --rebalance-bytes-per-sec.
    RebalanceBandwidth { per_sec: bytesize::ByteSize },
    /// Garbage collection grace period, e.g. `24h`; overrides the nodes'
    /// --gc-grace-secs.
    GcGracePeriod { period: humantime::Duration },
    /// Time between scheduled retention runs, e.g. `1d` (`0s`: only
    /// `tcr retention run`); overrides the nodes' --retention-interval-secs.
    RetentionInterval { interval: humantime::Duration },
    /// Requests per minute allowed to one credential (to one client address
    /// for anonymous callers; 0: no limit). A pull is a manifest GET, a push
    /// an upload opened or a manifest put or deleted. With --org, that
    /// organisation's override (--clear removes it).
    RateLimit {
        #[arg(long)]
        org: Option<String>,
        #[arg(long, default_value_t = 0)]
        pulls_per_minute: u32,
        #[arg(long, default_value_t = 0)]
        pushes_per_minute: u32,
        #[arg(long, default_value_t = 0)]
        management_per_minute: u32,
        #[arg(long, requires = "org")]
        clear: bool,
    },
}

#[derive(Subcommand)]
pub enum MembersCmd {
    /// List members.
    List,
    /// Add a node: learner first, voter once it has caught up.
    Add {
        #[arg(long)]
        id: u64,
        #[arg(long)]
        rpc_addr: String,
        #[arg(long)]
        http_addr: String,
        /// Blob placement weight (relative capacity).
        #[arg(long, default_value_t = 100)]
        weight: u32,
    },
    /// Change a member's blob placement weight (its relative capacity, for
    /// a disk that was grown or shrunk; 0 owns nothing). The blobs whose
    /// owners change move in the background: follow with `tcr storage
    /// status --watch`.
    SetWeight {
        #[arg(long)]
        id: u64,
        #[arg(long)]
        weight: u32,
    },
    /// Remove a node from the cluster.
    Remove {
        #[arg(long)]
        id: u64,
        /// Then wait until the remaining nodes hold every blob's copies
        /// (with a progress display), so the node can be stopped safely.
        #[arg(long)]
        drain: bool,
        /// Give up draining after this long.
        #[arg(long, default_value = "1h")]
        drain_timeout: humantime::Duration,
    },
}

#[derive(Subcommand)]
pub enum LeaderCmd {
    /// Make another voter the leader (writes pause about one election
    /// timeout while it happens).
    Transfer {
        #[arg(long)]
        to: u64,
    },
}

const BASE: &str = "/v1/container-registries/cluster";

/// Ask every member for its own view (applied index, digest), so the
/// status shows health and whether the replicas agree.
async fn member_views(c: &Client, status: &Value) -> Vec<Value> {
    let mut views = Vec::new();
    for m in status["members"].as_array().cloned().unwrap_or_default() {
        let addr = m["httpAddr"].as_str().unwrap_or_default();
        let view = match c.member(addr).call(Method::GET, BASE, None).await {
            Ok(v) => {
                json!({"healthy": true, "appliedIndex": v["appliedIndex"], "stateDigest": v["stateDigest"], "state": v["state"]})
            }
            Err(e) => json!({"healthy": false, "error": e.to_string()}),
        };
        let mut m = m.clone();
        if let (Some(obj), Some(extra)) = (m.as_object_mut(), view.as_object()) {
            obj.extend(extra.clone());
        }
        views.push(m);
    }
    views
}

pub async fn run_cluster(c: &Client, cmd: ClusterCmd, out: Output) -> anyhow::Result<()> {
    if let ClusterCmd::Set(SetCmd::RateLimit {
        org,
        pulls_per_minute,
        pushes_per_minute,
        management_per_minute,
        clear,
    }) = cmd
    {
        let path = match &org {
            Some(o) => format!("/v1/container-registries/organisations/{o}/rate-limits"),
            None => format!("{BASE}/rate-limits"),
        };
        if clear {
            c.call(Method::DELETE, &path, None).await?;
            let org = org.unwrap_or_default();
            if out == Output::Json {
                println!("{}", json!({ "organisation": org, "cleared": true }));
            } else {
                println!("rate limits of organisation {org} removed: the cluster's apply");
            }
            return Ok(());
        }
        let body = json!({
            "pullsPerMinute": pulls_per_minute,
            "pushesPerMinute": pushes_per_minute,
            "managementPerMinute": management_per_minute,
        });
        let v = c.call(Method::PUT, &path, Some(body)).await?;
        if out == Output::Json {
            println!("{}", serde_json::to_string_pretty(&v)?);
        } else {
            let l = &v["effective"];
            println!(
                "rate limits per minute ({}): pulls {}, pushes {}, management {} (0: no limit)",
                org.as_deref().unwrap_or("cluster default"),
                l["pullsPerMinute"],
                l["pushesPerMinute"],
                l["managementPerMinute"]
            );
        }
        return Ok(());
    }
    if let ClusterCmd::Set(set) = cmd {
        let body = match set {
            SetCmd::ReplicationFactor { factor } => json!({ "replicationFactor": factor }),
            SetCmd::RebalanceBandwidth { per_sec } => {
                json!({ "rebalanceBytesPerSec": per_sec.as_u64() })
            }
            SetCmd::GcGracePeriod { period } => json!({ "gcGracePeriodSecs": period.as_secs() }),
            SetCmd::RetentionInterval { interval } => {
                json!({ "retentionIntervalSecs": interval.as_secs() })
            }
            SetCmd::RateLimit { .. } => unreachable!("handled above"),
        };
        let v = c
            .call(Method::PATCH, &format!("{BASE}/settings"), Some(body))
            .await?;
        if out == Output::Json {
            println!("{}", serde_json::to_string_pretty(&v)?);
        } else {
            println!(
                "replication factor {} (write quorum {}), rebalance bandwidth {} bytes/s (null: each node's flag), gc grace period {} s",
                v["replicationFactor"], v["writeQuorum"], v["rebalanceBytesPerSec"], v["gcGracePeriodSecs"]
            );
        }
        return Ok(());
    }
    let mut status = c.call(Method::GET, BASE, None).await?;
    let members = member_views(c, &status).await;
    status["members"] = Value::Array(members.clone());
    if out == Output::Json {
        println!("{}", serde_json::to_string_pretty(&status)?);
        return Ok(());
    }
    println!(
        "leader: {}  term: {}  last log: {}  applied: {}  replication: {} (write quorum {})",
        status["leader"],
        status["term"],
        status["lastLogIndex"],
        status["appliedIndex"],
        status["replicationFactor"],
        status["writeQuorum"]
    );
    if let Some(ms) = status["leaderLeaseLapsedMs"].as_u64() {
        println!(
            "warning: the node answering leads but has not heard from a quorum for {ms} ms \
             (cut off by a partition?); it serves nothing until it does"
        );
    }
    let rows: Vec<Vec<String>> = members
        .iter()
        .map(|m| {
            vec![
                m["id"].to_string(),
                m["role"].as_str().unwrap_or("").to_string(),
                m["state"].as_str().unwrap_or("-").to_string(),
                m["rpcAddr"].as_str().unwrap_or("").to_string(),
                m["httpAddr"].as_str().unwrap_or("").to_string(),
                m["lag"]
                    .as_u64()
                    .map(|l| l.to_string())
                    .unwrap_or_else(|| "-".into()),
                if m["healthy"].as_bool() == Some(true) {
                    "ok".into()
                } else {
                    "DOWN".into()
                },
                m["stateDigest"]
                    .as_str()
                    .map(|d| d[..12.min(d.len())].to_string())
                    .unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    table(
        &[
            "ID", "ROLE", "STATE", "RPC", "HTTP", "LAG", "HEALTH", "DIGEST",
        ],
        &rows,
    );
    Ok(())
}

/// Show the new member's progress: its matched log index (as the leader
/// sees it) against the leader's last index, until the add call returns.
async fn watch_catch_up(c: Client, id: u64, bar: indicatif::ProgressBar) {
    loop {
        if let Ok(s) = c.call(Method::GET, BASE, None).await {
            // Only the leader tracks replication; ask it directly.
            let leader = s["leader"].as_u64();
            let leader_http = s["members"]
                .as_array()
                .and_then(|m| m.iter().find(|m| m["id"].as_u64() == leader))
                .and_then(|m| m["httpAddr"].as_str())
                .map(str::to_string);
            if let Some(addr) = leader_http {
                if let Ok(ls) = c.member(&addr).call(Method::GET, BASE, None).await {
                    let last = ls["lastLogIndex"].as_u64().unwrap_or(0);
                    let me = ls["members"]
                        .as_array()
                        .and_then(|m| m.iter().find(|m| m["id"].as_u64() == Some(id)).cloned());
                    bar.set_length(last);
                    if let Some(me) = me {
                        let voter = me["role"] == "voter";
                        // A voter has caught up (the leader's replication
                        // entry restarts at a membership change).
                        let matched = me["matchedIndex"].as_u64().unwrap_or(0);
                        bar.set_position(if voter { last } else { matched.min(last) });
                        let lag = me["lag"]
                            .as_u64()
                            .map(|l| l.to_string())
                            .unwrap_or_else(|| "?".into());
                        bar.set_message(match me["role"].as_str() {
                            Some("voter") => "voter".to_string(),
                            _ => format!("learner catching up, lag {lag}"),
                        });
                    }
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

pub async fn run_members(c: &Client, cmd: MembersCmd, out: Output) -> anyhow::Result<()> {
    let v = match cmd {
        MembersCmd::List => {
            let status = c.call(Method::GET, BASE, None).await?;
            if out == Output::Json {
                println!("{}", serde_json::to_string_pretty(&status["members"])?);
                return Ok(());
            }
            let rows: Vec<Vec<String>> = status["members"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .iter()
                .map(|m| {
                    vec![
                        m["id"].to_string(),
                        m["role"].as_str().unwrap_or("").to_string(),
                        m["rpcAddr"].as_str().unwrap_or("").to_string(),
                        m["httpAddr"].as_str().unwrap_or("").to_string(),
                        m["weight"].to_string(),
                    ]
                })
                .collect();
            table(&["ID", "ROLE", "RPC", "HTTP", "WEIGHT"], &rows);
            return Ok(());
        }
        MembersCmd::Add {
            id,
            rpc_addr,
            http_addr,
            weight,
        } => {
            let progress = (out == Output::Human).then(|| {
                let bar = indicatif::ProgressBar::new(0);
                bar.set_style(
                    indicatif::ProgressStyle::with_template(
                        "{spinner} node {prefix}: {msg} [{bar:30}] {pos}/{len} log entries",
                    )
                    .expect("static template")
                    .progress_chars("=> "),
                );
                bar.set_prefix(id.to_string());
                bar.set_message("joining as a learner");
                bar.enable_steady_tick(Duration::from_millis(120));
                let watcher = tokio::spawn(watch_catch_up(c.at(&c.base), id, bar.clone()));
                (bar, watcher)
            });
            let r = c
                .call(
                    Method::POST,
                    &format!("{BASE}/members"),
                    Some(
                        json!({"id": id, "rpcAddr": rpc_addr, "httpAddr": http_addr, "weight": weight}),
                    ),
                )
                .await;
            if let Some((bar, watcher)) = progress {
                watcher.abort();
                bar.finish_and_clear();
            }
            r?
        }
        MembersCmd::SetWeight { id, weight } => {
            let v = c
                .call(
                    Method::PATCH,
                    &format!("{BASE}/members/{id}"),
                    Some(json!({ "weight": weight })),
                )
                .await?;
            if out == Output::Json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                println!(
                    "node {id}: weight {} (was {}); blobs move in the background (tcr storage status --watch)",
                    v["weight"], v["previousWeight"]
                );
            }
            return Ok(());
        }
        MembersCmd::Remove {
            id,
            drain,
            drain_timeout,
        } => {
            let v = c
                .call(Method::DELETE, &format!("{BASE}/members/{id}"), None)
                .await?;
            if drain {
                crate::cmd::storage::wait_until_placed(c, drain_timeout.into()).await?;
                if out == Output::Human {
                    println!("node {id} drained: the remaining nodes hold every blob's copies");
                }
            }
            v
        }
    };
    if out == Output::Json {
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        if let Some(w) = v["warning"].as_str() {
            eprintln!("warning: {w}");
        }
        if let Some(id) = v["removed"].as_u64() {
            println!("removed node {id}; {} voter(s) remain", v["voters"]);
        } else {
            println!(
                "node {} is a {}",
                v["id"],
                v["role"].as_str().unwrap_or("member")
            );
        }
    }
    Ok(())
}

pub async fn run_leader(c: &Client, cmd: LeaderCmd, out: Output) -> anyhow::Result<()> {
    let LeaderCmd::Transfer { to } = cmd;
    let spinner = (out == Output::Human).then(|| {
        let s = indicatif::ProgressBar::new_spinner();
        s.set_message(format!(
            "handing leadership to node {to} (waiting for the followers' lease to expire)"
        ));
        s.enable_steady_tick(Duration::from_millis(120));
        s
    });
    let r = c
        .call(
            Method::POST,
            &format!("{BASE}/leader/transfer"),
            Some(json!({ "to": to })),
        )
        .await;
    if let Some(s) = spinner {
        s.finish_and_clear();
    }
    let v = r?;
    if out == Output::Json {
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!("node {} leads (term {})", v["leader"], v["term"]);
    }
    Ok(())
}
