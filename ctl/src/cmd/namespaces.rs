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
    ("QUOTA", "quotaBytes"),
    ("IMMUTABLE", "immutableTags"),
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
    /// Immutable tag patterns and the storage quota.
    SetLimits {
        name: String,
        /// A tag pattern (`*`, `?`) that may not move once set; repeatable.
        #[arg(long = "immutable-tag")]
        immutable_tags: Vec<String>,
        /// Remove every immutable tag pattern.
        #[arg(long, conflicts_with = "immutable_tags")]
        no_immutable_tags: bool,
        /// Storage quota, e.g. `10GiB`, `500MB`, or bytes.
        #[arg(long)]
        quota: Option<bytesize::ByteSize>,
        /// Remove the quota.
        #[arg(long, conflicts_with = "quota")]
        no_quota: bool,
    },
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
        NamespacesCmd::SetLimits {
            name,
            immutable_tags,
            no_immutable_tags,
            quota,
            no_quota,
        } => {
            let mut body = json!({});
            if no_immutable_tags || !immutable_tags.is_empty() {
                body["immutableTags"] = json!(immutable_tags);
            }
            if no_quota {
                body["quotaBytes"] = json!(0);
            } else if let Some(q) = quota {
                body["quotaBytes"] = json!(q.as_u64().max(1));
            }
            c.call(Method::PATCH, &format!("{BASE}/{name}"), Some(body))
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
