//! `tcr-jepsen`: tcr's fault-injection suite. This is its skeleton; the
//! clusters, nemeses, workloads and checkers arrive with issue 7.

use clap::Parser;

#[derive(Parser)]
#[command(
    name = "tcr-jepsen",
    version,
    about = "Fault-injection suite for tcr (not implemented yet)"
)]
struct Cli {}

fn main() -> anyhow::Result<()> {
    Cli::parse();
    anyhow::bail!("tcr-jepsen has no workloads yet; see issue 7")
}
