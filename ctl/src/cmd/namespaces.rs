//! `tcr namespaces`.

use clap::Subcommand;
use reqwest::Method;
use serde_json::json;

use crate::client::Client;
use crate::output::{print, Output};

const COLUMNS: &[(&str, &str)] = &[
    ("NAME", "name"),
    ("VISIBILITY", "visibility"),
    ("ORGANISATION", "organisation"),
    ("PROJECT", "project"),
    ("CREATED", "createdAt"),
];

#[derive(Subcommand)]
pub enum NamespacesCmd {
    /// List the namespaces you may pull from.
    List {
        /// Only this organisation's.
        #[arg(long)]
        org: Option<String>,
    },
    /// Create a namespace.
    Create {
        name: String,
        #[arg(long, default_value = "private", value_parser = ["public", "private"])]
        visibility: String,
        /// Owning organisation (default: the credential's).
        #[arg(long)]
        org: Option<String>,
        /// Scope it to one project of the organisation.
        #[arg(long)]
        project: Option<String>,
    },
    /// Show one namespace.
    Show { name: String },
    /// Change a namespace's visibility.
    SetVisibility {
        name: String,
        #[arg(value_parser = ["public", "private"])]
        visibility: String,
    },
    /// Delete an empty namespace.
    Delete { name: String },
}

pub async fn run(c: &Client, cmd: NamespacesCmd, out: Output) -> anyhow::Result<()> {
    const BASE: &str = "/v1/container-registries/namespaces";
    let v = match cmd {
        NamespacesCmd::List { org } => {
            let path = match org {
                Some(o) => format!("{BASE}?organisation={o}"),
                None => BASE.to_string(),
            };
            let v = c.call(Method::GET, &path, None).await?;
            return print(&v, out, Some("namespaces"), COLUMNS);
        }
        NamespacesCmd::Create {
            name,
            visibility,
            org,
            project,
        } => {
            let mut body = json!({"name": name, "visibility": visibility});
            if let Some(o) = org {
                body["organisation"] = json!(o);
            }
            if let Some(p) = project {
                body["project"] = json!(p);
            }
            c.call(Method::POST, BASE, Some(body)).await?
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
        NamespacesCmd::Delete { name } => {
            c.call(Method::DELETE, &format!("{BASE}/{name}"), None)
                .await?;
            println!("deleted namespace {name}");
            return Ok(());
        }
    };
    print(&v, out, None, COLUMNS)
}
