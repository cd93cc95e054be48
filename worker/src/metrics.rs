//! The control process's `/metrics` (Prometheus text format), served on
//! `FJORD_CONTROL_METRICS_ADDR` when it is set: the autoscaler's cold starts.

use std::sync::Arc;

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use fjord_common::metrics::FunctionHistogram;
use tokio_util::sync::CancellationToken;

/// Serves `/metrics` on `listener` until `shutdown`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    cold_starts: Arc<FunctionHistogram>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let app = Router::new().route(
        "/metrics",
        get(move || {
            let cold_starts = cold_starts.clone();
            async move {
                let mut text = String::new();
                cold_starts.write(&mut text);
                (
                    [(
                        header::CONTENT_TYPE,
                        "text/plain; version=0.0.4; charset=utf-8",
                    )],
                    text,
                )
                    .into_response()
            }
        }),
    );
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
}
