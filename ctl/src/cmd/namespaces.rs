use clap::Subcommand;
use reqwest::Method;
use serde_json::{json, Value};

use crate::client::Client;
use crate::output::{table, Output};

#[derive(Subcommand)]
pub enum NamespacesCmd {
    /// List namespaces.
    List,
    /// Create a namespace.
    Create {
        name: String,
        #[arg(long, default_value = "private", value_parser = ["public", "private"])]
        visibility: String,
    },
    /// Show one namespace.
    Show { name: String },
    /// Change a namespace's visibility.
    SetVisibility {
        name: String,
        #[arg(value_parser = ["public", "private"])]
        visibility: String,
    },
}

fn rows(items: &[Value]) -> Vec<Vec<String>> {
    items
        .iter()
        .map(|n| {
            vec![
                n["name"].as_str().unwrap_or("").to_string(),
                n["visibility"].as_str().unwrap_or("").to_string(),
                n["createdAt"].to_string(),
            ]
        })
        .collect()
}

pub async fn run(c: &Client, cmd: NamespacesCmd, out: Output) -> anyhow::Result<()> {
    const BASE: &str = "/v1/container-registries/namespaces";
    let v = match cmd {
        NamespacesCmd::List => c.call(Method::GET, BASE, None).await?,
        NamespacesCmd::Create { name, visibility } => {
            c.call(
                Method::POST,
                BASE,
                Some(json!({"name": name, "visibility": visibility})),
            )
            .await?
        }
        NamespacesCmd::Show { name } => {
            c.call(Method::GET, &format!("{BASE}/{name}"), None).await?
        }
        NamespacesCmd::SetVisibility { name, visibility } => {
            c.call(
                Method::PATCH,
                &format!("{BASE}/{name}"),
                Some(json!({"visibility": visibility})),
            )
            .await?
        }
    };
    if out == Output::Json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let items = match v.get("namespaces").and_then(Value::as_array) {
        Some(list) => list.clone(),
        None => vec![v],
    };
    table(&["NAME", "VISIBILITY", "CREATED"], &rows(&items));
    Ok(())
}
