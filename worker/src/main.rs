//! `fjord-worker run --function NAME` runs one worker; `fjord-worker control` runs the recorder
//! and the worker supervisor.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use fjord_common::config::{NatsArgs, duration_arg};
use fjord_common::queue::Queue;
use fjord_common::registry::Registry;
use fjord_common::store::{self, Store};
use fjord_common::{FunctionName, telemetry};
use fjord_worker::control::{self, ControlOptions};
use fjord_worker::runtime;
use fjord_worker::worker::{self, WorkerOptions};
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(
    name = "fjord-worker",
    version,
    about = "Fjord worker and control process"
)]
struct Cli {
    #[command(flatten)]
    nats: NatsArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run one worker process for a function.
    Run {
        /// The deployed function to run.
        #[arg(long)]
        function: FunctionName,
        /// How long running calls may take to finish after SIGTERM.
        #[arg(long, env = "FJORD_DRAIN_GRACE", default_value = "30s", value_parser = duration_arg)]
        drain_grace: Duration,
        /// Where functions' files, homes and secrets live [default: /var/lib/fjord/work as root, else <temp dir>/fjord-work-<uid>].
        #[arg(long, env = "FJORD_WORK_DIR")]
        work_dir: Option<PathBuf>,
    },
    /// Run the recorder and keep the functions' worker processes running.
    Control {
        /// PostgreSQL URL (migrations are applied at start over this direct connection).
        #[arg(long, env = "DATABASE_URL")]
        database_url: String,
        /// Connections the recorder may hold.
        #[arg(long, env = "FJORD_CONTROL_DB_POOL", default_value_t = 4)]
        db_pool: u32,
        /// Do not start worker processes (they run elsewhere, e.g. under KEDA).
        #[arg(long, env = "FJORD_NO_SPAWN")]
        no_spawn: bool,
        /// How long running calls may take to finish after SIGTERM.
        #[arg(long, env = "FJORD_DRAIN_GRACE", default_value = "30s", value_parser = duration_arg)]
        drain_grace: Duration,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    telemetry::init();
    let cli = Cli::parse();
    let shutdown = CancellationToken::new();
    let token = shutdown.clone();
    tokio::spawn(async move {
        fjord_common::signal::terminated().await;
        token.cancel();
    });
    let queue = Queue::connect(&cli.nats.nats_url, cli.nats.names()?)
        .await
        .context("connecting to NATS")?;
    match cli.command {
        Command::Run {
            function,
            drain_grace,
            work_dir,
        } => {
            let registry = Registry::open(&queue).await?;
            let spec = registry
                .get(&function)
                .await?
                .with_context(|| format!("function {function} is not deployed"))?;
            let options = WorkerOptions {
                max_inflight: spec.max_inflight()? as usize,
                drain_grace,
                work_dir: work_dir.unwrap_or_else(runtime::default_work_dir),
            };
            worker::run(queue, spec, options, shutdown).await?;
        }
        Command::Control {
            database_url,
            db_pool,
            no_spawn,
            drain_grace,
        } => {
            store::migrate(&database_url)
                .await
                .context("applying migrations")?;
            let store = Store::connect(&database_url, db_pool).await?;
            let options = ControlOptions {
                worker_exe: std::env::current_exe()?,
                spawn_workers: !no_spawn,
                stop_timeout: drain_grace + Duration::from_secs(5),
            };
            control::run(queue, store, options, shutdown).await?;
        }
    }
    Ok(())
}
