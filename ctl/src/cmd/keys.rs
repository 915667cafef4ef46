//! `tcr keys`: the token signing keys.

use clap::Subcommand;
use reqwest::Method;

use crate::client::Client;
use crate::output::{print, Output};

#[derive(Subcommand)]
pub enum KeysCmd {
    /// List signing keys (public facts only).
    List,
    /// Add a new signing key; the old ones verify until their tokens expire.
    Rotate,
}

pub async fn run(c: &Client, cmd: KeysCmd, out: Output) -> anyhow::Result<()> {
    match cmd {
        KeysCmd::List => {
            let v = c
                .call(Method::GET, "/v1/container-registries/keys", None)
                .await?;
            print(
                &v,
                out,
                Some("keys"),
                &[
                    ("KID", "kid"),
                    ("CREATED", "createdAt"),
                    ("SIGNING", "signing"),
                    ("VERIFYING", "verifying"),
                    ("RETIRE AT", "retireAt"),
                ],
            )
        }
        KeysCmd::Rotate => {
            let v = c
                .call(Method::POST, "/v1/container-registries/keys/rotate", None)
                .await?;
            print(&v, out, None, &[("NEW KEY", "kid")])
        }
    }
}
