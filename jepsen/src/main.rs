//! `tcr-jepsen`: tcr's fault-injection suite, in the manner of Jepsen. It
//! runs a real cluster (one network namespace per node), drives concurrent
//! clients, injects faults, records every operation with its invocation and
//! completion times, and checks the history afterwards.

mod availability;
mod checker;
mod cluster;
mod history;
mod nemesis;
mod report;
mod workload;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use serde_json::json;
use tokio::sync::Mutex;

use cluster::Cluster;
use history::Recorder;
use workload::Ctx;

/// Every host name of this suite starts with this and the runner's pid, so
/// a run finds and removes what an interrupted run left.
pub const HOSTS_OWNER: &str = "tcrj";

/// Namespaces, links and rules of runs that are gone.
fn remove_leftovers() -> Vec<String> {
    tcr_tests::hosts::remove_leftovers(HOSTS_OWNER, "tcr-jepsen")
}

#[derive(Parser)]
#[command(name = "tcr-jepsen", version, about = "Fault-injection suite for tcr")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Workload {
    Tags,
    Blobs,
    Namespaces,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run a cluster under faults and check what the clients saw.
    Run(RunArgs),
    /// Remove namespaces, links, rules and processes left by runs that
    /// were killed before they could clean up.
    Clean,
}

#[derive(clap::Args)]
struct RunArgs {
    /// Nodes (3-7), each on a host (network namespace) of its own.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u8).range(3..=7))]
    nodes: u8,
    /// How long clients run.
    #[arg(long, default_value = "60s")]
    time: humantime::Duration,
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "partition,kill,pause,membership"
    )]
    nemesis: Vec<nemesis::Kind>,
    #[arg(long, value_delimiter = ',', default_value = "tags,blobs")]
    workload: Vec<Workload>,
    /// Concurrent clients, spread over the workloads.
    #[arg(long, default_value_t = 10)]
    concurrency: usize,
    /// Partition shapes to take turns with (halves, isolated-leader,
    /// majority-ring, bridge).
    #[arg(long, value_delimiter = ',', default_value = "halves,isolated-leader,majority-ring,bridge",
          value_parser = clap::builder::PossibleValuesParser::new(nemesis::SHAPES))]
    shapes: Vec<String>,
    /// How long each fault lasts.
    #[arg(long, default_value = "6s")]
    fault: humantime::Duration,
    /// Calm between faults.
    #[arg(long, default_value = "4s")]
    calm: humantime::Duration,
    /// Registers per register workload (tags, namespaces).
    #[arg(long, default_value_t = 4)]
    keys: usize,
    /// Where runs are kept: `<store>/<run>/`.
    #[arg(long, default_value = "store")]
    store: PathBuf,
    /// Where tcr-node and tcr are (default: next to this program).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Start the nodes with `--read-consistency stale`, serving reads from
    /// local state without the read index: a deliberate bug the checker
    /// must catch. For testing the suite only.
    #[arg(long)]
    unsafe_stale_reads: bool,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Cmd::Clean => {
            for r in remove_leftovers() {
                println!("removed {r}");
            }
            std::process::ExitCode::SUCCESS
        }
        Cmd::Run(args) => match run(args).await {
            Ok(true) => std::process::ExitCode::SUCCESS,
            Ok(false) => std::process::ExitCode::from(1),
            Err(e) => {
                eprintln!("tcr-jepsen: {e:#}");
                std::process::ExitCode::from(2)
            }
        },
    }
}

/// Progress on stderr; a closed stderr (a reader that went away) must not
/// stop a run halfway, so write errors are ignored.
fn log(msg: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "[tcr-jepsen] {msg}");
}

/// Returns whether the history is valid.
async fn run(args: RunArgs) -> anyhow::Result<bool> {
    for r in remove_leftovers() {
        log(&format!("removed a leftover of an earlier run: {r}"));
    }
    let bins = match &args.bin_dir {
        Some(b) => b.clone(),
        None => std::env::current_exe()?
            .parent()
            .context("program directory")?
            .to_path_buf(),
    };
    let stamp = humantime::format_rfc3339_seconds(std::time::SystemTime::now())
        .to_string()
        .replace(':', "");
    let dir = args.store.join(format!("{stamp}-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let dir = dir.canonicalize()?;
    let mut node_args = Vec::new();
    if args.unsafe_stale_reads {
        node_args.extend(["--read-consistency".to_string(), "stale".to_string()]);
    }
    log(&format!(
        "starting {} nodes; run directory {}",
        args.nodes,
        dir.display()
    ));
    let cluster = Cluster::start(args.nodes as usize, &dir, &bins, node_args).await?;
    let cluster = Arc::new(Mutex::new(cluster));

    // An interrupted run still tears everything down.
    let outcome = tokio::select! {
        r = exercise(&args, cluster.clone(), &dir) => r,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
        _ = terminated() => Err(anyhow::anyhow!("terminated")),
    };
    let mut c = cluster.lock().await;
    c.teardown();
    for i in 1..=c.nodes.len() {
        let _ = std::fs::remove_dir_all(dir.join(format!("n{i}")).join("data"));
    }
    outcome
}

async fn terminated() {
    if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        s.recv().await;
    } else {
        std::future::pending::<()>().await;
    }
}

async fn exercise(
    args: &RunArgs,
    cluster: Arc<Mutex<Cluster>>,
    dir: &std::path::Path,
) -> anyhow::Result<bool> {
    let rec = Arc::new(Recorder::default());
    let (urls, token) = {
        let c = cluster.lock().await;
        (
            (1..=c.nodes.len()).map(|i| c.url(i)).collect::<Vec<_>>(),
            c.token.clone(),
        )
    };
    let ctx = Arc::new(Ctx::new(urls, token, rec.clone()));
    let tag_keys = workload::tags::keys(args.keys);
    let ns_keys = workload::namespaces::keys(args.keys);
    workload::tags::setup(&ctx).await?;
    if args.workload.contains(&Workload::Namespaces) {
        workload::namespaces::setup(&ctx, &ns_keys).await?;
    }

    let time: Duration = args.time.into();
    let until = Instant::now() + time;
    log(&format!(
        "running {:?} with {} clients for {time:?}; nemesis {:?}",
        args.workload, args.concurrency, args.nemesis
    ));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut clients = Vec::new();
    for j in 0..args.concurrency.max(1) {
        let w = args.workload[j % args.workload.len()];
        let (ctx, tag_keys, ns_keys) = (ctx.clone(), tag_keys.clone(), ns_keys.clone());
        let stop = stop.clone();
        let stride = args.concurrency.max(1) as i64;
        clients.push(tokio::spawn(async move {
            let mut seq = 0u64;
            workload::client_loop(j as i64, stride, stop, |p| {
                seq += 1;
                let (ctx, tag_keys, ns_keys) = (ctx.clone(), tag_keys.clone(), ns_keys.clone());
                let s = seq;
                async move {
                    match w {
                        Workload::Tags => workload::tags::op(&ctx, &tag_keys, p, s).await,
                        Workload::Blobs => workload::blobs::op(&ctx, p).await,
                        Workload::Namespaces => {
                            workload::namespaces::op(&ctx, &ns_keys, p, s).await
                        }
                    }
                }
            })
            .await
        }));
    }
    let schedule = nemesis::Schedule {
        kinds: args.nemesis.clone(),
        shapes: args.shapes.clone(),
        fault: args.fault.into(),
        calm: args.calm.into(),
    };
    let injected = nemesis::run(cluster.clone(), rec.clone(), schedule, until).await;
    tokio::time::sleep_until(until.into()).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for c in clients {
        c.await?;
    }

    log("healing; waiting for the cluster to settle");
    {
        let mut c = cluster.lock().await;
        c.heal_all()?;
        let n = c.nodes.len();
        for i in 1..=n {
            c.wait_ready(i, Duration::from_secs(90)).await?;
        }
        c.wait_voters(n, Duration::from_secs(90)).await?;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;

    // Final reads from every node, in the history like any other read.
    let n = ctx.urls.len();
    let final_process = 1_000_000i64;
    for (k, key) in tag_keys.iter().enumerate() {
        for node in 1..=n {
            let p = final_process + (k * n + node) as i64;
            let inv = workload::Invocation {
                f: "read",
                key: Some(key.clone()),
                value: None,
                node,
            };
            workload::perform(&ctx, "tags", p, inv, workload::tags::read(&ctx, node, key)).await;
        }
    }
    let mut missing_creates = Vec::new();
    if args.workload.contains(&Workload::Namespaces) {
        for (k, key) in ns_keys.iter().enumerate() {
            for node in 1..=n {
                let p = 2 * final_process + (k * n + node) as i64;
                let inv = workload::Invocation {
                    f: "read",
                    key: Some(key.clone()),
                    value: None,
                    node,
                };
                workload::perform(
                    &ctx,
                    "namespaces",
                    p,
                    inv,
                    workload::namespaces::read(&ctx, node, key),
                )
                .await;
            }
        }
        for name in checker::acknowledged(&rec.ops(), "namespaces", "create") {
            for node in 1..=n {
                if workload::namespaces::exists(&ctx, node, &name).await != Some(true) {
                    missing_creates.push(format!("{name} (node {node})"));
                }
            }
        }
    }
    let blobs = if args.workload.contains(&Workload::Blobs) {
        let digests = checker::acknowledged(&rec.ops(), "blobs", "push");
        log(&format!(
            "verifying {} acknowledged blobs on {n} nodes",
            digests.len()
        ));
        Some(workload::blobs::verify(&ctx, &digests, Duration::from_secs(60)).await)
    } else {
        None
    };

    let ops = rec.ops();
    let tags = args
        .workload
        .contains(&Workload::Tags)
        .then(|| checker::registers(&ops, "tags", None));
    let visibility = args
        .workload
        .contains(&Workload::Namespaces)
        .then(|| checker::registers(&ops, "namespaces", Some("private")));
    let valid = tags.as_ref().is_none_or(|t| t.valid)
        && visibility.as_ref().is_none_or(|t| t.valid)
        && missing_creates.is_empty()
        && blobs
            .as_ref()
            .is_none_or(|b| b.lost.is_empty() && b.corrupt.is_empty());
    let counts = checker::counts(&ops);
    let anomalies = tags.as_ref().map_or(0, |t| t.anomalies.len())
        + visibility.as_ref().map_or(0, |t| t.anomalies.len())
        + missing_creates.len()
        + blobs.as_ref().map_or(0, |b| b.lost.len() + b.corrupt.len());
    let faults =
        injected.partition + injected.kill + injected.pause + injected.membership + injected.netem;
    let availability = availability::analyse(&ops, &injected.windows);
    let summary = json!({
        "valid": valid,
        "nodes": args.nodes,
        "timeSecs": time.as_secs(),
        "concurrency": args.concurrency,
        "unsafeStaleReads": args.unsafe_stale_reads,
        "ops": counts,
        "faults": faults,
        "nemesis": injected,
        "anomalies": anomalies,
        "availability": availability,
        "workloads": {
            "tags": tags,
            "namespaces": visibility.map(|v| json!({
                "valid": v.valid && missing_creates.is_empty(),
                "keys": v.keys,
                "calls": v.calls,
                "unknown": v.unknown,
                "anomalies": v.anomalies,
                "missingCreations": missing_creates,
            })),
            "blobs": blobs,
        },
    });
    let mut history = String::new();
    for op in &ops {
        history.push_str(&serde_json::to_string(op)?);
        history.push('\n');
    }
    std::fs::write(dir.join("history.jsonl"), history)?;
    std::fs::write(
        dir.join("results.json"),
        serde_json::to_vec_pretty(&summary)?,
    )?;
    std::fs::write(dir.join("report.html"), report::html(&ops, &summary))?;
    // The anomalies themselves, before the summary line.
    for (w, r) in [
        ("tags", &summary["workloads"]["tags"]),
        ("namespaces", &summary["workloads"]["namespaces"]),
    ] {
        for a in r["anomalies"].as_array().into_iter().flatten() {
            println!(
                "{w} {}: not linearizable; smallest window found:",
                a["key"].as_str().unwrap_or("")
            );
            for line in a["window"].as_array().into_iter().flatten() {
                println!("    {}", line.as_str().unwrap_or(""));
            }
        }
    }
    for (what, list) in [
        ("lost blob", &summary["workloads"]["blobs"]["lost"]),
        ("corrupt blob", &summary["workloads"]["blobs"]["corrupt"]),
        (
            "missing namespace",
            &summary["workloads"]["namespaces"]["missingCreations"],
        ),
    ] {
        for item in list.as_array().into_iter().flatten() {
            println!("{what}: {}", item.as_str().unwrap_or(""));
        }
    }
    let secs = |v: Option<u64>| v.map_or("-".to_string(), |ms| format!("{:.1} s", ms as f64 / 1e3));
    println!(
        "tcr-jepsen: unavailability per fault: majority writes again after {} (median; worst {}), \
         cut-off nodes answered within {}, every node writes again {} after a heal (worst), \
         {} of {} heals caused an election",
        secs(availability.median_majority_first_write_ms),
        secs(availability.worst_majority_first_write_ms),
        secs(availability.worst_minority_answer_ms),
        secs(availability.worst_heal_recovery_ms),
        availability.elections_after_heal,
        availability.heals,
    );
    println!(
        "tcr-jepsen: {} — {} operations (ok {}, fail {}, info {}), {faults} faults, {anomalies} anomalies; {}",
        if valid { "valid" } else { "INVALID" },
        counts.ok + counts.fail + counts.info,
        counts.ok,
        counts.fail,
        counts.info,
        dir.join("report.html").display()
    );
    Ok(valid)
}
