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
    /// A PEM CA bundle to verify an https endpoint against, instead of the
    /// system's roots (a private CA, e.g. from `tcr certs init`).
    #[arg(long, env = "TCR_CACERT", global = true)]
    cacert: Option<std::path::PathBuf>,
    /// Bearer token (the admin token or a credential).
    #[arg(long, env = "TCR_TOKEN", global = true, hide_env_values = true)]
    token: Option<String>,
    /// Output format.
    #[arg(long, short = 'o', value_enum, default_value_t = Output::Human, global = true)]
    output: Output,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Namespaces: create, list, show, set visibility.
    #[command(subcommand, alias = "ns")]
    Namespaces(cmd::namespaces::NamespacesCmd),
    /// Repositories of a namespace: list, delete.
    #[command(subcommand)]
    Repos(cmd::repos::ReposCmd),
    /// Tags of a repository.
    #[command(subcommand)]
    Tags(cmd::repos::TagsCmd),
    /// Artifacts (manifests) of a repository.
    #[command(subcommand)]
    Artifacts(cmd::repos::ArtifactsCmd),
    /// Bytes stored and gigabyte-hours, per namespace or organisation;
    /// with --days, day by day.
    Usage {
        namespace: Option<String>,
        #[arg(long, conflicts_with = "namespace")]
        org: Option<String>,
        /// The last N days (today included, up to 400): stored bytes at
        /// each day's start and the gigabyte-hours of each day.
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..=400))]
        days: Option<u64>,
    },
    /// Organisations and their feature gates.
    #[command(subcommand, alias = "organisations")]
    Orgs(cmd::orgs::OrgsCmd),
    /// Projects inside an organisation.
    #[command(subcommand)]
    Projects(cmd::orgs::ProjectsCmd),
    /// Robot credentials / API tokens: create, list, revoke.
    #[command(subcommand)]
    Credentials(cmd::credentials::CredentialsCmd),
    /// Garbage collection: run, status.
    #[command(subcommand)]
    Gc(cmd::gc::GcCmd),
    /// Retention policies: set, show, preview, run, and the audit of runs.
    #[command(subcommand)]
    Retention(cmd::retention::RetentionCmd),
    /// The audit trail: who changed what, when, from where.
    #[command(subcommand)]
    Audit(cmd::audit::AuditCmd),
    /// Token signing keys: list, rotate.
    #[command(subcommand)]
    Keys(cmd::keys::KeysCmd),
    /// Store a credential for the endpoint (like `docker login`).
    Login {
        #[arg(long, short = 'u', default_value = "tcr")]
        username: String,
        /// The secret (prefer --password-stdin: arguments show in `ps`).
        #[arg(long, short = 'p', conflicts_with = "password_stdin")]
        password: Option<String>,
        /// Read the secret from standard input.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Forget the stored credential for the endpoint.
    Logout,
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
    /// Certificates for TLS and peer mutual TLS: a CA and host certificates.
    #[command(subcommand)]
    Certs(cmd::certs::CertsCmd),
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // --token / TCR_TOKEN, else what `tcr login` stored for this endpoint.
    let token = cli
        .token
        .clone()
        .or_else(|| cmd::login::stored_token(&cli.endpoint));
    let out = cli.output;
    // reqwest's builder is not Clone: one per client, from the same flags.
    let http = || client::http_builder(cli.cacert.as_deref());
    let client = match http() {
        Ok(b) => Client::new(&cli.endpoint, token.clone(), b),
        Err(e) => {
            eprintln!("tcr: {e:#}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = match cli.command {
        Command::Bench(args) => match http() {
            Ok(b) => bench::run(args, token, out, b).await,
            Err(e) => Err(e),
        },
        Command::Certs(c) => cmd::certs::run(c),
        Command::Namespaces(c) => cmd::namespaces::run(&client, c, out).await,
        Command::Cluster(c) => cmd::cluster::run_cluster(&client, c, out).await,
        Command::Members(c) => cmd::cluster::run_members(&client, c, out).await,
        Command::Leader(c) => cmd::cluster::run_leader(&client, c, out).await,
        Command::Storage(c) => cmd::storage::run(&client, c, out).await,
        Command::Repos(c) => cmd::repos::run(&client, c, out).await,
        Command::Tags(c) => cmd::repos::run_tags(&client, c, out).await,
        Command::Artifacts(c) => cmd::repos::run_artifacts(&client, c, out).await,
        Command::Usage {
            namespace,
            org,
            days,
        } => cmd::repos::run_usage(&client, namespace.as_deref(), org.as_deref(), days, out).await,
        Command::Orgs(c) => cmd::orgs::run_orgs(&client, c, out).await,
        Command::Projects(c) => cmd::orgs::run_projects(&client, c, out).await,
        Command::Credentials(c) => cmd::credentials::run(&client, c, out).await,
        Command::Keys(c) => cmd::keys::run(&client, c, out).await,
        Command::Audit(c) => cmd::audit::run(&client, c, out).await,
        Command::Gc(c) => cmd::gc::run(&client, c, out).await,
        Command::Retention(c) => cmd::retention::run(&client, c, out).await,
        Command::Login {
            username,
            password,
            password_stdin,
        } => {
            let password = if password_stdin { None } else { password };
            if password.is_none() && !password_stdin {
                eprintln!("tcr: reading the secret from standard input");
            }
            match http() {
                Ok(b) => cmd::login::login(b, &cli.endpoint, &username, password).await,
                Err(e) => Err(e),
            }
        }
        Command::Logout => cmd::login::logout(&cli.endpoint),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tcr: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
