//! `tcr repos`, `tcr tags`, `tcr artifacts`, `tcr usage`.

use clap::Subcommand;
use reqwest::Method;

use crate::client::Client;
use crate::output::{print, Output};

#[derive(Subcommand)]
pub enum ReposCmd {
    /// List the repositories of a namespace.
    List { namespace: String },
    /// Delete a repository: all its tags and manifests.
    Delete { repository: String },
}

#[derive(Subcommand)]
pub enum TagsCmd {
    /// List a repository's tags and the digests they point at.
    List {
        repository: String,
        /// Only tags starting with this.
        #[arg(long)]
        prefix: Option<String>,
    },
}

#[derive(Subcommand)]
pub enum ArtifactsCmd {
    /// List a repository's artifacts (manifests).
    List {
        repository: String,
        /// Only tagged (true) or untagged (false) artifacts.
        #[arg(long)]
        tagged: Option<bool>,
    },
}

/// A repository name as one path segment.
fn segment(repo: &str) -> String {
    repo.replace('/', "%2F")
}

const REPOS: &str = "/v1/container-registries/repositories";

pub async fn run(c: &Client, cmd: ReposCmd, out: Output) -> anyhow::Result<()> {
    match cmd {
        ReposCmd::List { namespace } => {
            let v = c
                .call(
                    Method::GET,
                    &format!("/v1/container-registries/namespaces/{namespace}/repositories"),
                    None,
                )
                .await?;
            print(
                &v,
                out,
                Some("repositories"),
                &[("REPOSITORY", "name"), ("CREATED", "createdAt")],
            )
        }
        ReposCmd::Delete { repository } => {
            c.call(
                Method::DELETE,
                &format!("{REPOS}/{}", segment(&repository)),
                None,
            )
            .await?;
            println!("deleted repository {repository}");
            Ok(())
        }
    }
}

pub async fn run_tags(c: &Client, cmd: TagsCmd, out: Output) -> anyhow::Result<()> {
    let TagsCmd::List { repository, prefix } = cmd;
    let mut path = format!("{REPOS}/{}/tags", segment(&repository));
    if let Some(p) = prefix {
        path.push_str(&format!("?prefix={p}"));
    }
    let v = c.call(Method::GET, &path, None).await?;
    print(
        &v,
        out,
        Some("tags"),
        &[("TAG", "name"), ("DIGEST", "digest")],
    )
}

pub async fn run_artifacts(c: &Client, cmd: ArtifactsCmd, out: Output) -> anyhow::Result<()> {
    let ArtifactsCmd::List { repository, tagged } = cmd;
    let mut path = format!("{REPOS}/{}/artifacts", segment(&repository));
    if let Some(t) = tagged {
        path.push_str(&format!("?tagged={t}"));
    }
    let v = c.call(Method::GET, &path, None).await?;
    print(
        &v,
        out,
        Some("artifacts"),
        &[
            ("DIGEST", "digest"),
            ("MEDIA TYPE", "mediaType"),
            ("SIZE", "size"),
            ("PUSHED", "pushedAt"),
            ("TAGS", "tags"),
        ],
    )
}

const USAGE_COLUMNS: &[(&str, &str)] = &[
    ("NAMESPACE", "namespace"),
    ("BYTES", "bytes"),
    ("QUOTA", "quotaBytes"),
    ("BLOBS", "blobs"),
    ("MANIFESTS", "manifests"),
    ("GB-HOURS", "gigabyteHours"),
];

const DAY_COLUMNS: &[(&str, &str)] = &[
    ("DATE", "date"),
    ("BYTES", "bytes"),
    ("GB-HOURS", "dayGigabyteHours"),
];

/// One namespace's usage, or (`org`) every namespace of an organisation;
/// with `days`, its daily samples.
pub async fn run_usage(
    c: &Client,
    namespace: Option<&str>,
    org: Option<&str>,
    days: Option<u64>,
    out: Output,
) -> anyhow::Result<()> {
    if let Some(n) = days {
        let path = match (namespace, org) {
            (Some(ns), _) => {
                format!("/v1/container-registries/namespaces/{ns}/usage/days?days={n}")
            }
            (None, Some(org)) => {
                format!("/v1/container-registries/organisations/{org}/usage/days?days={n}")
            }
            (None, None) => {
                anyhow::bail!("name a namespace, or --org ORG for all of its namespaces")
            }
        };
        let v = c.call(Method::GET, &path, None).await?;
        print(&v, out, Some("days"), DAY_COLUMNS)?;
        if out == Output::Human {
            println!(
                "now: {} bytes, {} GB-hours in all",
                v["now"]["bytes"], v["now"]["gigabyteHours"]
            );
        }
        return Ok(());
    }
    match (namespace, org) {
        (Some(ns), _) => {
            let v = c
                .call(
                    Method::GET,
                    &format!("/v1/container-registries/namespaces/{ns}/usage"),
                    None,
                )
                .await?;
            print(&v, out, None, USAGE_COLUMNS)
        }
        (None, Some(org)) => {
            let v = c
                .call(
                    Method::GET,
                    &format!("/v1/container-registries/organisations/{org}/usage"),
                    None,
                )
                .await?;
            print(&v, out, Some("namespaces"), USAGE_COLUMNS)?;
            if out == Output::Human {
                println!(
                    "total: {} bytes, {} GB-hours",
                    v["bytes"], v["gigabyteHours"]
                );
            }
            Ok(())
        }
        (None, None) => anyhow::bail!("name a namespace, or --org ORG for all of its namespaces"),
    }
}
