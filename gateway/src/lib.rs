//! `fjord-gateway`: the thin HTTP ingress. It validates calls, writes them to JetStream and
//! answers 202 once JetStream has acknowledged them; it never runs functions and its write path
//! never touches PostgreSQL. It reads PostgreSQL for status and results and JetStream for live
//! queue depth.

pub mod auth;
pub mod config;
pub mod error;
pub mod metrics;
pub mod pressure;
pub mod routes;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use fjord_common::callback::Networks;
use fjord_common::queue::Queue;
use fjord_common::store::Store;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::pressure::Pressure;

use config::Credentials;
pub use config::GatewayConfig;
use fjord_common::functions::Functions;

/// Everything a request handler needs; cheap to clone (one per request).
#[derive(Clone)]
pub struct AppState {
    pub queue: Queue,
    pub store: Store,
    pub functions: Functions,
    /// Queue caps at intake (`com.fjord.queue.max`, the stream's byte cap).
    pub pressure: Pressure,
    pub settings: Arc<Settings>,
    /// What this gateway counts for `/metrics`.
    pub metrics: Arc<metrics::GatewayMetrics>,
    /// Where accept spans go (OTLP, off unless configured).
    pub tracer: fjord_common::otlp::Tracer,
    /// The dashboard's last-minutes figures, shared by its viewers.
    pub recent: Arc<routes::RecentCache>,
}

/// The parts of the configuration handlers read.
pub struct Settings {
    pub max_body: usize,
    pub sync_timeout: Duration,
    pub publish_timeout: Duration,
    pub read_wait: Duration,
    /// The lease of a running call, fixed in each function's consumer when it is deployed.
    pub ack_wait: Duration,
    pub credentials: Credentials,
    /// Where callback URLs may point beyond public addresses (`FJORD_CALLBACK_ALLOW_NETS`).
    pub callback_networks: Networks,
    /// How long an `Idempotency-Key` names the same call (`FJORD_IDEMPOTENCY_WINDOW`).
    pub idempotency_window: Duration,
}

impl AppState {
    /// Connects to NATS (creating the stream if needed), opens the read pool lazily and starts
    /// following the function registry.
    pub async fn build(
        config: &GatewayConfig,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Self> {
        let credentials = config.credentials().map_err(anyhow::Error::msg)?;
        let queue = Queue::connect(&config.nats.nats_url, config.nats.names()?).await?;
        let store =
            Store::connect_with(&config.database_url, config.db_pool, config.pgbouncer).await?;
        let functions = Functions::follow(&queue, shutdown.clone()).await?;
        let pressure = Pressure::follow(queue.clone(), functions.clone(), shutdown).await;
        Ok(AppState {
            pressure,
            queue,
            store,
            functions,
            metrics: Arc::default(),
            tracer: fjord_common::otlp::Tracer::from_env("fjord-gateway"),
            recent: Arc::default(),
            settings: Arc::new(Settings {
                max_body: config.max_body,
                sync_timeout: Duration::from_secs(config.sync_timeout),
                publish_timeout: config.publish_timeout,
                read_wait: config.read_wait,
                ack_wait: config.ack_wait,
                credentials,
                callback_networks: Networks::parse(&config.callback_allow_nets)?,
                idempotency_window: config.idempotency_window,
            }),
        })
    }
}

pub fn router(state: AppState) -> Router {
    routes::router(state)
}

/// Serves until `shutdown` fires, then finishes in-flight requests. Binding happens outside so
/// tests can listen on port 0.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
}
