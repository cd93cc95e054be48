//! `fjord`: the command line. `up` runs the whole platform on this machine; the other commands
//! talk to a gateway.

mod bench;
mod client;
mod commands;
mod deploy;
mod k8s;
mod up;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "fjord",
    version,
    about = "Fjord: asynchronous functions on servers you own"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start NATS and PostgreSQL if needed, deploy the stack, run gateway, control and workers.
    Up(up::UpArgs),
    /// Deploy the functions of a stack.yml (packing and uploading handler folders), or with
    /// --k8s write Kubernetes manifests (worker Deployments, KEDA ScaledObjects) for it.
    Deploy(deploy::DeployArgs),
    /// Remove a function: new calls get 404, queued ones end as cancelled.
    Remove(deploy::RemoveArgs),
    /// List the deployed functions.
    List(deploy::ListArgs),
    /// Call a function.
    Invoke(commands::InvokeArgs),
    /// Show a call's status.
    Status(commands::StatusArgs),
    /// Show queue depth per function (`--watch` redraws it every 2 s).
    Queues(commands::QueuesArgs),
    /// Show a function's own output (stdout/stderr of exec and http functions).
    Logs(commands::LogsArgs),
    /// Measure intake, end-to-end throughput and latency against the raw baselines.
    Bench(bench::BenchArgs),
}

#[tokio::main]
async fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    fjord_common::telemetry::init_with_default("warn");
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Up(args) => up::run(args).await,
        Command::Deploy(args) => deploy::run(args).await,
        Command::Remove(args) => deploy::remove(args).await,
        Command::List(args) => deploy::list(args).await,
        Command::Invoke(args) => commands::invoke(args).await,
        Command::Status(args) => commands::status(args).await,
        Command::Queues(args) => commands::queues(args).await,
        Command::Logs(args) => commands::logs(args).await,
        Command::Bench(args) => bench::run(args).await,
    };
    if let Err(e) = result {
        eprintln!("fjord: {e:#}");
        std::process::exit(1);
    }
}
