//! The control process's `/metrics` (Prometheus text format), served on
//! `FJORD_CONTROL_METRICS_ADDR` when it is set. It counts what this process records and
//! delivers: the final outcomes of calls under OpenFaaS's names (as OpenFaaS's gateway counts
//! the queue-worker's async reports), queue waits, retries, dead letters, callback attempts,
//! the recorder's batches and lag, and the autoscaler's cold starts. The gateway's `/metrics`
//! has the intake side and the live queue figures. With several control processes, each counts
//! its own share: sum across them.

use std::sync::Arc;

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use fjord_common::invocation::{FinalStatus, Finished};
use fjord_common::metrics::{CONTENT_TYPE, Counter, Histogram, LATENCY_BUCKETS, write_gauge};
use fjord_common::queue::Queue;
use tokio_util::sync::CancellationToken;

const FUNCTION: &[&str] = &["function_name"];

/// Messages per applied recorder batch.
const BATCH_BUCKETS: &[f64] = &[
    1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0,
];

/// Everything the control process counts; shared by its recorder, dispatcher and autoscaler.
pub struct ControlMetrics {
    pub invocations: Counter,
    pub durations: Histogram,
    pub processed: Counter,
    pub queue_wait: Histogram,
    pub cold_starts: Histogram,
    pub retries: Counter,
    pub dead_letters: Counter,
    pub callback_attempts: Counter,
    pub batch_size: Histogram,
    pub batch_seconds: Histogram,
}

impl Default for ControlMetrics {
    fn default() -> Self {
        ControlMetrics {
            invocations: Counter::new(
                "gateway_function_invocation_total",
                "Asynchronous calls that reached a final state, by the function's status code (503: could not be run).",
                &["function_name", "code"],
            ),
            durations: Histogram::new(
                "gateway_functions_seconds",
                "Run time of asynchronous calls that reached a final state.",
                FUNCTION,
                LATENCY_BUCKETS,
            ),
            processed: Counter::new(
                "queue_worker_messages_processed_total",
                "Queued calls that reached a final state.",
                FUNCTION,
            ),
            queue_wait: Histogram::new(
                "fjord_queue_wait_seconds",
                "Accept to start of calls' first attempts.",
                FUNCTION,
                LATENCY_BUCKETS,
            ),
            cold_starts: Histogram::new(
                "fjord_cold_start_seconds",
                "Accept to function start of calls that found no worker running (the worker was started for them).",
                FUNCTION,
                LATENCY_BUCKETS,
            ),
            retries: Counter::new(
                "fjord_retries_total",
                "Failed attempts scheduled to run again after a backoff.",
                FUNCTION,
            ),
            dead_letters: Counter::new(
                "fjord_dead_letters_total",
                "Calls that ended dead (attempts exhausted), their request kept for a redrive.",
                FUNCTION,
            ),
            callback_attempts: Counter::new(
                "fjord_callback_attempts_total",
                "Callback delivery attempts by outcome: delivered, retrying or failed.",
                &["outcome"],
            ),
            batch_size: Histogram::new(
                "fjord_recorder_batch_messages",
                "Messages applied to PostgreSQL per recorder transaction.",
                &[],
                BATCH_BUCKETS,
            ),
            batch_seconds: Histogram::new(
                "fjord_recorder_batch_seconds",
                "Time to apply one recorder batch to PostgreSQL.",
                &[],
                LATENCY_BUCKETS,
            ),
        }
    }
}

impl ControlMetrics {
    /// Counts a call the recorder made final.
    pub fn finished(&self, finished: &Finished) {
        let function = finished.function.as_str();
        let code = finished.function_status.to_string();
        self.invocations.inc(&[function, &code]);
        self.processed.inc(&[function]);
        if let Some(started) = finished.started_ns {
            let seconds = (finished.finished_ns - started).max(0) as f64 / 1e9;
            self.durations.observe(&[function], seconds);
        }
        if finished.status == FinalStatus::Dead {
            self.dead_letters.inc(&[function]);
        }
    }

    /// The whole exposition: the counts kept here and the recorder's lag read from JetStream.
    pub async fn render(&self, queue: &Queue) -> String {
        let mut out = String::new();
        self.invocations.write(&mut out);
        self.durations.write(&mut out);
        self.processed.write(&mut out);
        self.queue_wait.write(&mut out);
        self.cold_starts.write(&mut out);
        self.retries.write(&mut out);
        self.dead_letters.write(&mut out);
        self.callback_attempts.write(&mut out);
        self.batch_size.write(&mut out);
        self.batch_seconds.write(&mut out);
        if let Ok(pending) = queue.recorder_pending().await {
            write_gauge(
                &mut out,
                "fjord_recorder_pending_messages",
                "Stream messages (calls and outcomes) not yet recorded in PostgreSQL: the recorder's lag.",
                &[],
                [(vec![], pending as f64)],
            );
        }
        out
    }
}

/// Serves `/metrics` on `listener` until `shutdown`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    queue: Queue,
    metrics: Arc<ControlMetrics>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let app = Router::new().route(
        "/metrics",
        get(move || {
            let (queue, metrics) = (queue.clone(), metrics.clone());
            async move {
                let text = metrics.render(&queue).await;
                ([(header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response()
            }
        }),
    );
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
}
