//! `fjord-worker run --function NAME` runs one worker; `fjord-worker control` runs the recorder
//! and the worker supervisor.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use fjord_common::callback::{Networks, Signer};
use fjord_common::config::{NatsArgs, duration_arg};
use fjord_common::queue::Queue;
use fjord_common::store::{self, Store};
use fjord_common::{FunctionName, telemetry};
use fjord_worker::autoscale::{AutoscaleOptions, WorkerCommand};
use fjord_worker::control::{self, ControlOptions};
use fjord_worker::dispatcher::DispatchConfig;
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
        /// Started because the function had no worker (the autoscaler sets it): the first
        /// call's accept-to-start time is reported as a cold start.
        #[arg(long, hide = true)]
        cold_start: bool,
    },
    /// Run the recorder, the callback dispatcher and the autoscaler of worker processes.
    Control {
        /// PostgreSQL URL (migrations are applied at start over this direct connection).
        #[arg(long, env = "DATABASE_URL")]
        database_url: String,
        /// A direct PostgreSQL URL for the migrations, when `DATABASE_URL` goes through
        /// PgBouncer (they take a session lock, which transaction pooling cannot hold).
        #[arg(long, env = "FJORD_MIGRATION_DATABASE_URL")]
        migration_database_url: Option<String>,
        /// `DATABASE_URL` points at PgBouncer in transaction-pooling mode.
        #[arg(long, env = "FJORD_PGBOUNCER", value_parser = clap::builder::BoolishValueParser::new(), num_args = 0..=1, default_missing_value = "true", default_value = "false")]
        pgbouncer: bool,
        /// Connections the recorder may hold.
        #[arg(long, env = "FJORD_CONTROL_DB_POOL", default_value_t = 4)]
        db_pool: u32,
        /// Do not start worker processes (they run elsewhere, e.g. under KEDA).
        #[arg(long, env = "FJORD_NO_SPAWN")]
        no_spawn: bool,
        /// How long running calls may take to finish after SIGTERM.
        #[arg(long, env = "FJORD_DRAIN_GRACE", default_value = "30s", value_parser = duration_arg)]
        drain_grace: Duration,
        /// How often the autoscaler looks at every function's queue (calls also wake it at once).
        #[arg(long, env = "FJORD_AUTOSCALE_INTERVAL", default_value = "500ms", value_parser = duration_arg)]
        autoscale_interval: Duration,
        /// Serve Prometheus metrics (`/metrics`) on this address, e.g. 127.0.0.1:9464.
        #[arg(long, env = "FJORD_CONTROL_METRICS_ADDR")]
        metrics_addr: Option<std::net::SocketAddr>,
        /// Byte cap of the call stream (0: none but JetStream's own limits); intake answers
        /// 429 near it instead of letting the disk fill.
        #[arg(long, env = "FJORD_STREAM_MAX_BYTES", default_value_t = 4 << 30)]
        stream_max_bytes: u64,
        #[command(flatten)]
        callbacks: CallbackArgs,
    },
}

/// The callback dispatcher's settings.
#[derive(clap::Args)]
struct CallbackArgs {
    /// Secrets callbacks are signed with (Standard Webhooks): `whsec_<base64>`, comma-separated
    /// to keep several active while rotating. Unset: callbacks are unsigned.
    #[arg(
        long,
        env = "FJORD_CALLBACK_SECRET",
        hide_env_values = true,
        default_value = ""
    )]
    callback_secret: String,
    /// Address ranges callbacks may reach although they are loopback, private or link-local
    /// (CIDR, comma-separated), such as 10.0.0.0/8 for receivers on a private network.
    #[arg(long, env = "FJORD_CALLBACK_ALLOW_NETS", default_value = "")]
    callback_allow_nets: String,
    /// Callback attempts in flight at once, overall.
    #[arg(long, env = "FJORD_CALLBACK_CONCURRENCY", default_value_t = 256)]
    callback_concurrency: usize,
    /// Callback attempts in flight at once to one host name.
    #[arg(long, env = "FJORD_CALLBACK_HOST_CONCURRENCY", default_value_t = 16)]
    callback_host_concurrency: usize,
    /// How long a dispatcher holds a callback it is delivering; if it dies, another dispatcher
    /// sends the callback again after this long.
    #[arg(long, env = "FJORD_CALLBACK_LEASE", default_value = "60s", value_parser = duration_arg)]
    callback_lease: Duration,
}

impl CallbackArgs {
    fn config(&self) -> anyhow::Result<DispatchConfig> {
        anyhow::ensure!(
            self.callback_concurrency > 0 && self.callback_host_concurrency > 0,
            "FJORD_CALLBACK_CONCURRENCY and FJORD_CALLBACK_HOST_CONCURRENCY must be at least 1"
        );
        Ok(DispatchConfig {
            signer: Signer::parse(&self.callback_secret)?,
            networks: Networks::parse(&self.callback_allow_nets)?,
            concurrency: self.callback_concurrency,
            host_concurrency: self.callback_host_concurrency,
            lease: self.callback_lease,
            tracer: fjord_common::otlp::Tracer::from_env("fjord-control"),
            ..DispatchConfig::default()
        })
    }
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
    let names = cli.nats.names()?;
    let queue = match cli.command {
        // A worker's start is on a cold start's path: the control process set NATS up.
        Command::Run { .. } => Queue::attach(&cli.nats.nats_url, names).await,
        _ => Queue::connect(&cli.nats.nats_url, names).await,
    }
    .context("connecting to NATS")?;
    match cli.command {
        Command::Run {
            function,
            drain_grace,
            work_dir,
            cold_start,
        } => {
            let options = WorkerOptions {
                tracer: fjord_common::otlp::Tracer::from_env("fjord-worker"),
                drain_grace,
                work_dir: work_dir.unwrap_or_else(runtime::default_work_dir),
                cold_start,
            };
            worker::run(queue, function, options, shutdown).await?;
        }
        Command::Control {
            database_url,
            migration_database_url,
            pgbouncer,
            db_pool,
            no_spawn,
            drain_grace,
            autoscale_interval,
            metrics_addr,
            stream_max_bytes,
            callbacks,
        } => {
            let dispatch = callbacks.config()?;
            queue
                .limit_stream_bytes(stream_max_bytes)
                .await
                .context("capping the call stream")?;
            store::migrate(migration_database_url.as_deref().unwrap_or(&database_url))
                .await
                .context("applying migrations")?;
            let store = Store::connect_with(&database_url, db_pool, pgbouncer).await?;
            let metrics = std::sync::Arc::new(fjord_worker::metrics::ControlMetrics::default());
            let autoscale = AutoscaleOptions {
                worker: WorkerCommand {
                    exe: std::env::current_exe()?,
                    // The workers use this process's NATS settings, however they were given.
                    env: vec![
                        ("NATS_URL".into(), cli.nats.nats_url.clone()),
                        ("FJORD_NATS_PREFIX".into(), cli.nats.nats_prefix.clone()),
                        (
                            "FJORD_DRAIN_GRACE".into(),
                            format!("{}ms", drain_grace.as_millis()),
                        ),
                    ],
                    stop_timeout: drain_grace + Duration::from_secs(5),
                },
                interval: autoscale_interval,
                metrics: metrics.clone(),
            };
            let metrics_listener = match metrics_addr {
                Some(addr) => Some(
                    tokio::net::TcpListener::bind(addr)
                        .await
                        .with_context(|| format!("listening on {addr} for /metrics"))?,
                ),
                None => None,
            };
            let options = ControlOptions {
                autoscale: (!no_spawn).then_some(autoscale),
                dispatch,
                metrics,
                metrics_listener,
            };
            control::run(queue, store, options, shutdown).await?;
        }
    }
    Ok(())
}
