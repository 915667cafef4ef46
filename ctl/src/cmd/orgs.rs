//! `tcr orgs` and `tcr projects`.

use clap::Subcommand;
use reqwest::Method;
use serde_json::json;

use crate::client::Client;
use crate::output::{print, Output};

const BASE: &str = "/v1/container-registries/organisations";
const ORG_COLUMNS: &[(&str, &str)] = &[
    ("NAME", "name"),
    ("FEATURES", "features"),
    ("CREATED", "createdAt"),
];
const PROJECT_COLUMNS: &[(&str, &str)] = &[
    ("ORGANISATION", "organisation"),
    ("NAME", "name"),
    ("CREATED", "createdAt"),
];

#[derive(Subcommand)]
pub enum OrgsCmd {
    /// List organisations (the operator sees all, a credential its own).
    List,
    /// Create an organisation (operator only).
    Create {
        name: String,
        /// Turn on the containerRegistry feature gate at once.
        #[arg(long)]
        enable_registry: bool,
    },
    /// Show one organisation.
    Show { name: String },
    /// Delete an organisation with no namespaces (operator only).
    Delete { name: String },
    /// Turn a feature gate on or off (operator only), e.g. containerRegistry.
    Feature {
        name: String,
        feature: String,
        #[arg(value_parser = ["on", "off"])]
        state: String,
    },
}

#[derive(Subcommand)]
pub enum ProjectsCmd {
    /// List the projects of an organisation.
    List {
        #[arg(long)]
        org: String,
    },
    /// Create a project.
    Create {
        #[arg(long)]
        org: String,
        name: String,
    },
    /// Delete a project (its credentials go with it).
    Delete {
        #[arg(long)]
        org: String,
        name: String,
    },
}

pub async fn run_orgs(c: &Client, cmd: OrgsCmd, out: Output) -> anyhow::Result<()> {
    let v = match cmd {
        OrgsCmd::List => {
            let v = c.call(Method::GET, BASE, None).await?;
            return print(&v, out, Some("organisations"), ORG_COLUMNS);
        }
        OrgsCmd::Create {
            name,
            enable_registry,
        } => {
            let body = json!({"name": name, "features": {"containerRegistry": enable_registry}});
            c.call(Method::POST, BASE, Some(body)).await?
        }
        OrgsCmd::Show { name } => c.call(Method::GET, &format!("{BASE}/{name}"), None).await?,
        OrgsCmd::Delete { name } => {
            c.call(Method::DELETE, &format!("{BASE}/{name}"), None)
                .await?;
            println!("deleted organisation {name}");
            return Ok(());
        }
        OrgsCmd::Feature {
            name,
            feature,
            state,
        } => {
            c.call(
                Method::PUT,
                &format!("{BASE}/{name}/features/{feature}"),
                Some(json!({"enabled": state == "on"})),
            )
            .await?
        }
    };
    print(&v, out, None, ORG_COLUMNS)
}

pub async fn run_projects(c: &Client, cmd: ProjectsCmd, out: Output) -> anyhow::Result<()> {
    let v = match cmd {
        ProjectsCmd::List { org } => {
            let v = c
                .call(Method::GET, &format!("{BASE}/{org}/projects"), None)
                .await?;
            return print(&v, out, Some("projects"), PROJECT_COLUMNS);
        }
        ProjectsCmd::Create { org, name } => {
            c.call(
                Method::POST,
                &format!("{BASE}/{org}/projects"),
                Some(json!({ "name": name })),
            )
            .await?
        }
        ProjectsCmd::Delete { org, name } => {
            c.call(
                Method::DELETE,
                &format!("{BASE}/{org}/projects/{name}"),
                None,
            )
            .await?;
            println!("deleted project {name} of {org}");
            return Ok(());
        }
    };
    print(&v, out, None, PROJECT_COLUMNS)
}
