//! `fjord-gateway`: parse config, connect, serve until SIGINT/SIGTERM.

use anyhow::Context;
use clap::Parser;
use fjord_common::telemetry;
use fjord_gateway::{AppState, GatewayConfig};
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    telemetry::init();
    let config = GatewayConfig::parse();
    let shutdown = CancellationToken::new();
    let token = shutdown.clone();
    tokio::spawn(async move {
        fjord_common::signal::terminated().await;
        token.cancel();
    });
    let state = AppState::build(&config, shutdown.clone()).await?;
    let listener = tokio::net::TcpListener::bind(config.addr)
        .await
        .with_context(|| format!("binding {}", config.addr))?;
    tracing::info!(addr = %listener.local_addr()?, "gateway listening");
    fjord_gateway::serve(listener, state, shutdown).await?;
    Ok(())
}
