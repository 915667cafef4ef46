//! `tcr audit`: the audit trail of who changed what.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use clap::Subcommand;
use reqwest::Method;
use serde_json::Value;

use crate::client::Client;
use crate::output::{table, Output};

#[derive(Subcommand)]
pub enum AuditCmd {
    /// Events oldest first (the operator sees all; an organisation admin
    /// its organisation's).
    List {
        #[arg(long)]
        org: Option<String>,
        #[arg(long)]
        namespace: Option<String>,
        /// operator, anonymous, a credential id or name, system or
        /// system:<job> (gc, retention, keys, raft).
        #[arg(long)]
        actor: Option<String>,
        /// An action, or a prefix ending in '.' (tag., credential.).
        #[arg(long)]
        action: Option<String>,
        /// From this long ago (`1h`, `7d`) or this time (RFC 3339).
        #[arg(long)]
        since: Option<String>,
        /// Before this long ago or this time.
        #[arg(long)]
        until: Option<String>,
        /// Print at most this many events.
        #[arg(long, default_value_t = 1000)]
        limit: usize,
    },
}

/// `1h` (that long ago) or an RFC 3339 time, as seconds since the epoch.
fn when(arg: &str, v: &str) -> anyhow::Result<String> {
    if let Ok(ago) = humantime::parse_duration(v) {
        let t = SystemTime::now()
            .checked_sub(ago)
            .unwrap_or(UNIX_EPOCH)
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO);
        return Ok(t.as_secs().to_string());
    }
    humantime::parse_rfc3339_weak(v).with_context(|| {
        format!("--{arg} {v}: neither a duration (1h, 7d) nor an RFC 3339 time")
    })?;
    Ok(v.to_string())
}

fn actor(e: &Value) -> String {
    let a = &e["actor"];
    match a["kind"].as_str() {
        Some("credential") => format!(
            "{} ({})",
            a["name"].as_str().unwrap_or("?"),
            a["id"].as_str().unwrap_or("?")
        ),
        Some("system") => format!("system:{}", a["id"].as_str().unwrap_or("?")),
        Some(k) => k.to_string(),
        None => "-".into(),
    }
}

pub async fn run(c: &Client, cmd: AuditCmd, out: Output) -> anyhow::Result<()> {
    let AuditCmd::List {
        org,
        namespace,
        actor: who,
        action,
        since,
        until,
        limit,
    } = cmd;
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    let filters = [
        ("organisation", org),
        ("namespace", namespace),
        ("actor", who),
        ("action", action),
        ("since", since.map(|s| when("since", &s)).transpose()?),
        ("until", until.map(|u| when("until", &u)).transpose()?),
    ];
    for (k, v) in &filters {
        if let Some(v) = v {
            query.append_pair(k, v);
        }
    }
    let base = query.finish();
    let mut events: Vec<Value> = Vec::new();
    let mut last: Option<String> = None;
    // Pages are bounded by what the node looks at, not only by what
    // matches: follow `next` until the trail ends or the limit is reached.
    while events.len() < limit {
        let mut q = url::form_urlencoded::Serializer::new(base.clone());
        q.append_pair("n", &(limit - events.len()).min(1000).to_string());
        if let Some(l) = &last {
            q.append_pair("last", l);
        }
        let path = format!("/v1/container-registries/audit-events?{}", q.finish());
        let v = c.call(Method::GET, &path, None).await?;
        if let Some(page) = v["events"].as_array() {
            events.extend(page.iter().cloned());
        }
        match v["next"].as_str() {
            Some(n) => last = Some(n.to_string()),
            None => break,
        }
    }
    events.truncate(limit);
    if out == Output::Json {
        println!("{}", serde_json::to_string_pretty(&events)?);
        return Ok(());
    }
    let s = |v: &Value| v.as_str().unwrap_or("-").to_string();
    let rows: Vec<Vec<String>> = events
        .iter()
        .map(|e| {
            let result = match e["reason"].as_str() {
                Some(r) => format!("refused: {r}"),
                None => s(&e["result"]),
            };
            vec![
                s(&e["time"]),
                actor(e),
                s(&e["action"]),
                s(&e["resource"]),
                s(&e["detail"]),
                result,
                s(&e["address"]),
            ]
        })
        .collect();
    table(
        &[
            "TIME", "ACTOR", "ACTION", "RESOURCE", "DETAIL", "RESULT", "FROM",
        ],
        &rows,
    );
    Ok(())
}
