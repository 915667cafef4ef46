use clap::Subcommand;
use reqwest::Method;
use serde_json::Value;

use crate::client::Client;
use crate::output::{table, Output};

#[derive(Subcommand)]
pub enum ReposCmd {
    /// List the repositories of a namespace.
    List { namespace: String },
}

pub async fn run(c: &Client, cmd: ReposCmd, out: Output) -> anyhow::Result<()> {
    let ReposCmd::List { namespace } = cmd;
    let v = c
        .call(
            Method::GET,
            &format!("/v1/container-registries/namespaces/{namespace}/repositories"),
            None,
        )
        .await?;
    if out == Output::Json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let rows: Vec<Vec<String>> = v["repositories"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|r: &Value| {
            vec![
                r["name"].as_str().unwrap_or("").to_string(),
                r["createdAt"].to_string(),
            ]
        })
        .collect();
    table(&["REPOSITORY", "CREATED"], &rows);
    Ok(())
}
