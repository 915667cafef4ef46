//! `tcr credentials`: robot accounts / API tokens of an organisation.

use anyhow::{anyhow, bail};
use clap::Subcommand;
use reqwest::Method;
use serde_json::{json, Value};

use crate::client::Client;
use crate::output::{print, Output};

const COLUMNS: &[(&str, &str)] = &[
    ("ID", "id"),
    ("NAME", "name"),
    ("PROJECT", "project"),
    ("SCOPES", "scopes"),
    ("EXPIRES", "expiresAt"),
    ("REVOKED", "revokedAt"),
];

#[derive(Subcommand)]
pub enum CredentialsCmd {
    /// Create a credential; its secret is printed once.
    Create {
        #[arg(long)]
        org: String,
        /// User name shown in listings (docker login accepts any user name).
        #[arg(long)]
        name: String,
        /// Confine it to one project of the organisation.
        #[arg(long)]
        project: Option<String>,
        /// NAMESPACE:ACTIONS, e.g. `acme:pull,push` or `*:admin`; repeatable.
        #[arg(long = "scope", required = true)]
        scopes: Vec<String>,
        /// Lifetime, e.g. `30d`, `12h` (default: until revoked).
        #[arg(long)]
        expires_in: Option<humantime::Duration>,
    },
    /// List an organisation's credentials (never their secrets).
    List {
        #[arg(long)]
        org: String,
    },
    /// Revoke a credential: it stops working on every node at once.
    Revoke {
        #[arg(long)]
        org: String,
        id: String,
    },
}

/// `ns:pull,push` -> {"namespace": "ns", "actions": ["pull", "push"]}.
fn parse_scope(s: &str) -> anyhow::Result<Value> {
    let (ns, actions) = s
        .rsplit_once(':')
        .ok_or_else(|| anyhow!("scope '{s}' is not NAMESPACE:ACTIONS (e.g. acme:pull,push)"))?;
    let actions: Vec<&str> = actions.split(',').filter(|a| !a.is_empty()).collect();
    for a in &actions {
        if !["pull", "push", "delete", "admin"].contains(a) {
            bail!("scope '{s}': unknown action '{a}' (pull, push, delete, admin)");
        }
    }
    if ns.is_empty() || actions.is_empty() {
        bail!("scope '{s}' needs a namespace and at least one action");
    }
    Ok(json!({"namespace": ns, "actions": actions}))
}

pub async fn run(c: &Client, cmd: CredentialsCmd, out: Output) -> anyhow::Result<()> {
    const BASE: &str = "/v1/container-registries/organisations";
    match cmd {
        CredentialsCmd::Create {
            org,
            name,
            project,
            scopes,
            expires_in,
        } => {
            let scopes = scopes
                .iter()
                .map(|s| parse_scope(s))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let mut body = json!({"name": name, "scopes": scopes});
            if let Some(p) = project {
                body["project"] = json!(p);
            }
            if let Some(d) = expires_in {
                body["expiresInSecs"] = json!(d.as_secs().max(1));
            }
            let v = c
                .call(
                    Method::POST,
                    &format!("{BASE}/{org}/credentials"),
                    Some(body),
                )
                .await?;
            if out == Output::Json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                print(&v, out, None, COLUMNS)?;
                println!();
                println!(
                    "secret (shown once): {}",
                    v["secret"].as_str().unwrap_or("")
                );
                println!(
                    "docker login <registry> -u {} --password-stdin   # paste the secret",
                    v["username"].as_str().unwrap_or("robot")
                );
            }
            Ok(())
        }
        CredentialsCmd::List { org } => {
            let v = c
                .call(Method::GET, &format!("{BASE}/{org}/credentials"), None)
                .await?;
            print(&v, out, Some("credentials"), COLUMNS)
        }
        CredentialsCmd::Revoke { org, id } => {
            c.call(
                Method::DELETE,
                &format!("{BASE}/{org}/credentials/{id}"),
                None,
            )
            .await?;
            println!("revoked credential {id}");
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_parse_and_bad_ones_say_why() {
        assert_eq!(
            parse_scope("acme:pull,push").unwrap(),
            json!({"namespace": "acme", "actions": ["pull", "push"]})
        );
        assert_eq!(parse_scope("*:admin").unwrap()["namespace"], "*");
        assert!(parse_scope("acme")
            .unwrap_err()
            .to_string()
            .contains("NAMESPACE:ACTIONS"));
        assert!(parse_scope("acme:fly")
            .unwrap_err()
            .to_string()
            .contains("unknown action"));
        assert!(parse_scope(":pull").is_err());
    }
}
