//! `tcr`: the operator CLI for tcr clusters, and `tcr bench`.

mod bench;
mod client;
mod cmd;
mod output;

use clap::{Parser, Subcommand};

use client::Client;
use output::Output;

#[derive(Parser)]
#[command(name = "tcr", version, about = "Operate a tcr registry cluster")]
struct Cli {
    /// Any node's HTTP address.
    #[arg(
        long,
        env = "TCR_ENDPOINT",
        default_value = "http://127.0.0.1:5000",
        global = true
    )]
    endpoint: String,
    /// Bearer token (the admin token or a credential).
    #[arg(long, env = "TCR_TOKEN", global = true, hide_env_values = true)]
    token: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Output::Human, global = true)]
    output: Output,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Namespaces: create, list, show, set visibility.
    #[command(subcommand, alias = "ns")]
    Namespaces(cmd::namespaces::NamespacesCmd),
    /// Repositories of a namespace.
    #[command(subcommand)]
    Repos(cmd::repos::ReposCmd),
    /// Cluster status.
    #[command(subcommand)]
    Cluster(cmd::cluster::ClusterCmd),
    /// Cluster membership: list, add, remove.
    #[command(subcommand)]
    Members(cmd::cluster::MembersCmd),
    /// Leadership: transfer it to another voter.
    #[command(subcommand)]
    Leader(cmd::cluster::LeaderCmd),
    /// Blob storage across the nodes: status, rebalance, scrub.
    #[command(subcommand)]
    Storage(cmd::storage::StorageCmd),
    /// Benchmark any OCI registry (push, pull, manifests, tag listing).
    Bench(bench::BenchArgs),
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Bench(args) => bench::run(args, cli.token.clone(), cli.output).await,
        Command::Namespaces(c) => {
            let client = Client::new(&cli.endpoint, cli.token.clone());
            cmd::namespaces::run(&client, c, cli.output).await
        }
        Command::Cluster(c) => {
            let client = Client::new(&cli.endpoint, cli.token.clone());
            cmd::cluster::run_cluster(&client, c, cli.output).await
        }
        Command::Members(c) => {
            let client = Client::new(&cli.endpoint, cli.token.clone());
            cmd::cluster::run_members(&client, c, cli.output).await
        }
        Command::Leader(c) => {
            let client = Client::new(&cli.endpoint, cli.token.clone());
            cmd::cluster::run_leader(&client, c, cli.output).await
        }
        Command::Storage(c) => {
            let client = Client::new(&cli.endpoint, cli.token.clone());
            cmd::storage::run(&client, c, cli.output).await
        }
        Command::Repos(c) => {
            let client = Client::new(&cli.endpoint, cli.token.clone());
            cmd::repos::run(&client, c, cli.output).await
        }
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tcr: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
