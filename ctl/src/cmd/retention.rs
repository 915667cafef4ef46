//! `tcr retention`: a namespace's retention policy, what it would remove,
//! runs on demand, and the audit record of past runs.

use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Args, Subcommand};
use reqwest::Method;
use serde_json::{json, Value};

use crate::client::Client;
use crate::output::{print, Output};

#[derive(Subcommand)]
pub enum RetentionCmd {
    /// Set (replace) the namespace's policy, from a JSON file or from flags.
    Set(SetArgs),
    /// Show the namespace's policy.
    Show { namespace: String },
    /// Remove the namespace's policy.
    Clear { namespace: String },
    /// List exactly what a run started now would remove; remove nothing.
    Preview { namespace: String },
    /// Run the policy now and wait for the run to finish.
    Run {
        namespace: String,
        /// Print the run's id and return at once.
        #[arg(long)]
        no_wait: bool,
    },
    /// Past runs, newest first; with a run id, that run's audit record.
    Runs {
        namespace: String,
        run: Option<String>,
    },
}

#[derive(Args)]
pub struct SetArgs {
    namespace: String,
    /// The policy as JSON (see the API's RetentionPolicy); other flags are
    /// then not allowed.
    #[arg(long, conflicts_with_all = ["keep_last_pushed", "keep_last_pulled", "keep_pushed_within", "keep_pulled_within", "untagged_older_than", "remove_referrers", "protect"])]
    file: Option<std::path::PathBuf>,
    /// Keep the N most recently pushed tags.
    #[arg(long)]
    keep_last_pushed: Option<u32>,
    /// Keep the N most recently pulled tags.
    #[arg(long)]
    keep_last_pulled: Option<u32>,
    /// Keep tags pushed within this long, e.g. `30d`.
    #[arg(long)]
    keep_pushed_within: Option<humantime::Duration>,
    /// Keep tags pulled within this long.
    #[arg(long)]
    keep_pulled_within: Option<humantime::Duration>,
    /// The keep rules above look only at tags matching these patterns.
    #[arg(long = "tags", value_name = "PATTERN")]
    tags: Vec<String>,
    /// The keep rules above never look at tags matching these patterns.
    #[arg(long = "exclude-tags", value_name = "PATTERN")]
    exclude_tags: Vec<String>,
    /// Remove untagged manifests older than this, e.g. `7d`.
    #[arg(long)]
    untagged_older_than: Option<humantime::Duration>,
    /// Remove referrers (signatures, SBOMs) of removed manifests.
    #[arg(long)]
    remove_referrers: bool,
    /// Always keep tags matching these patterns, e.g. `latest`, `v*`.
    #[arg(long, value_name = "PATTERN")]
    protect: Vec<String>,
}

fn policy_path(ns: &str) -> String {
    format!("/v1/container-registries/namespaces/{ns}/retention-policy")
}

fn runs_path(ns: &str) -> String {
    format!("/v1/container-registries/namespaces/{ns}/retention-runs")
}

impl SetArgs {
    fn policy(&self) -> anyhow::Result<Value> {
        if let Some(f) = &self.file {
            let text =
                std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?;
            return serde_json::from_str(&text)
                .with_context(|| format!("{} is not JSON", f.display()));
        }
        let rule = |keep: &str, field: &str, v: Value| {
            let mut r = json!({ "keep": keep, field: v });
            if !self.tags.is_empty() {
                r["tags"] = json!(self.tags);
            }
            if !self.exclude_tags.is_empty() {
                r["excludeTags"] = json!(self.exclude_tags);
            }
            r
        };
        let mut rules = Vec::new();
        if let Some(n) = self.keep_last_pushed {
            rules.push(rule("lastPushed", "count", json!(n)));
        }
        if let Some(n) = self.keep_last_pulled {
            rules.push(rule("lastPulled", "count", json!(n)));
        }
        if let Some(d) = self.keep_pushed_within {
            rules.push(rule("pushedWithin", "withinSecs", json!(d.as_secs())));
        }
        if let Some(d) = self.keep_pulled_within {
            rules.push(rule("pulledWithin", "withinSecs", json!(d.as_secs())));
        }
        let mut p = json!({
            "rules": rules,
            "removeReferrers": self.remove_referrers,
            "protect": self.protect,
        });
        if let Some(d) = self.untagged_older_than {
            p["untaggedOlderThanSecs"] = json!(d.as_secs());
        }
        Ok(p)
    }
}

const REMOVAL_COLUMNS: &[(&str, &str)] = &[
    ("REPOSITORY", "repository"),
    ("TAG", "tag"),
    ("DIGEST", "digest"),
    ("RULE", "rule"),
];

const RUN_COLUMNS: &[(&str, &str)] = &[
    ("ID", "id"),
    ("TRIGGER", "trigger"),
    ("REQUESTED AT", "requestedAt"),
    ("FINISHED AT", "finishedAt"),
    ("REPOSITORIES", "repositoriesDone"),
    ("TAGS REMOVED", "tagsRemoved"),
    ("MANIFESTS REMOVED", "manifestsRemoved"),
];

pub async fn run(c: &Client, cmd: RetentionCmd, out: Output) -> anyhow::Result<()> {
    match cmd {
        RetentionCmd::Set(args) => {
            let body = args.policy()?;
            let v = c
                .call(Method::PUT, &policy_path(&args.namespace), Some(body))
                .await?;
            print_json_or(&v, out, "retention policy set")
        }
        RetentionCmd::Show { namespace } => {
            let v = c.call(Method::GET, &policy_path(&namespace), None).await?;
            println!("{}", serde_json::to_string_pretty(&v)?);
            Ok(())
        }
        RetentionCmd::Clear { namespace } => {
            c.call(Method::DELETE, &policy_path(&namespace), None)
                .await?;
            if out == Output::Human {
                println!("retention policy of {namespace} removed");
            }
            Ok(())
        }
        RetentionCmd::Preview { namespace } => {
            let v = c
                .call(
                    Method::GET,
                    &format!("{}/preview", policy_path(&namespace)),
                    None,
                )
                .await?;
            if out == Output::Human {
                println!(
                    "a run now would remove {} tag(s) and {} manifest(s)",
                    v["tags"], v["manifests"]
                );
            }
            print(&v, out, Some("removals"), REMOVAL_COLUMNS)
        }
        RetentionCmd::Run { namespace, no_wait } => {
            let started = c.call(Method::POST, &runs_path(&namespace), None).await?;
            let id = started["id"].as_str().unwrap_or_default().to_string();
            if no_wait {
                return print_json_or(&started, out, &format!("retention run {id} started"));
            }
            let v = wait(c, &namespace, &id).await?;
            if out == Output::Human {
                println!(
                    "retention run {id}: {} repositories, {} tag(s) and {} manifest(s) removed",
                    v["repositoriesDone"], v["tagsRemoved"], v["manifestsRemoved"]
                );
            }
            print(&v, out, Some("removed"), REMOVAL_COLUMNS)
        }
        RetentionCmd::Runs { namespace, run } => match run {
            None => {
                let v = c.call(Method::GET, &runs_path(&namespace), None).await?;
                print(&v, out, Some("runs"), RUN_COLUMNS)
            }
            Some(id) => {
                let v = c
                    .call(
                        Method::GET,
                        &format!("{}/{id}", runs_path(&namespace)),
                        None,
                    )
                    .await?;
                if out == Output::Human {
                    print(&v, out, None, RUN_COLUMNS)?;
                }
                print(&v, out, Some("removed"), REMOVAL_COLUMNS)
            }
        },
    }
}

fn print_json_or(v: &Value, out: Output, human: &str) -> anyhow::Result<()> {
    if out == Output::Json {
        println!("{}", serde_json::to_string_pretty(v)?);
    } else {
        println!("{human}");
    }
    Ok(())
}

/// Follow a run to its end, with a spinner counting repositories. A run
/// survives a leader change (the next leader resumes it), so errors are
/// retried for a while before giving up.
async fn wait(c: &Client, ns: &str, id: &str) -> anyhow::Result<Value> {
    let bar = indicatif::ProgressBar::new_spinner();
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} {msg}").expect("static template"),
    );
    bar.enable_steady_tick(Duration::from_millis(120));
    let path = format!("{}/{id}", runs_path(ns));
    let mut failing_since: Option<Instant> = None;
    loop {
        match c.call(Method::GET, &path, None).await {
            Ok(v) => {
                failing_since = None;
                if !v["finishedAt"].is_null() {
                    bar.finish_and_clear();
                    return Ok(v);
                }
                bar.set_message(format!(
                    "retention run {id}: {} repositories done, {} tag(s) and {} manifest(s) removed",
                    v["repositoriesDone"], v["tagsRemoved"], v["manifestsRemoved"]
                ));
            }
            Err(e) => {
                let since = *failing_since.get_or_insert_with(Instant::now);
                if since.elapsed() > Duration::from_secs(60) {
                    bar.finish_and_clear();
                    return Err(e.context(format!("following retention run {id}")));
                }
                bar.set_message(format!("retention run {id}: waiting for the cluster ({e})"));
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
