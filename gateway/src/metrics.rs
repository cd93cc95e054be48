//! The gateway's `/metrics` (Prometheus text format, behind the same auth as `/system/*`).
//!
//! Counted here, per gateway: the calls it answered under OpenFaaS's names
//! (`gateway_function_invocation_total` with the code it answered — 202 for an accepted
//! asynchronous call, the function's status for a synchronous one — and
//! `gateway_functions_seconds` for synchronous calls), the calls it queued
//! (`queue_worker_messages_submitted_total`) and its intake latency. Read at scrape time, so
//! every gateway shows the same figures: the queue of each function from JetStream, the workers
//! that answer a head count, and the autoscaler's sizing. The final outcomes of asynchronous
//! calls are counted by the control process under the same OpenFaaS names, as OpenFaaS's
//! gateway counts its queue-worker's reports.

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use fjord_common::metrics::{CONTENT_TYPE, Counter, Histogram, LATENCY_BUCKETS, write_gauge};

use crate::AppState;
use crate::routes::Live;

const FUNCTION: &[&str] = &["function_name"];

pub struct GatewayMetrics {
    pub invocations: Counter,
    pub durations: Histogram,
    pub submitted: Counter,
    pub intake: Histogram,
}

impl Default for GatewayMetrics {
    fn default() -> Self {
        GatewayMetrics {
            invocations: Counter::new(
                "gateway_function_invocation_total",
                "Calls this gateway answered, by the code it answered (202: an asynchronous call accepted).",
                &["function_name", "code"],
            ),
            durations: Histogram::new(
                "gateway_functions_seconds",
                "Request to response of synchronous calls.",
                FUNCTION,
                LATENCY_BUCKETS,
            ),
            submitted: Counter::new(
                "queue_worker_messages_submitted_total",
                "Calls this gateway wrote to their function's queue.",
                FUNCTION,
            ),
            intake: Histogram::new(
                "fjord_intake_seconds",
                "Request to 202 of accepted asynchronous calls.",
                FUNCTION,
                LATENCY_BUCKETS,
            ),
        }
    }
}

pub async fn serve(State(state): State<AppState>) -> Response {
    let live = crate::routes::live(&state).await;
    let m = &state.metrics;
    let mut out = String::new();
    m.invocations.write(&mut out);
    m.durations.write(&mut out);
    m.submitted.write(&mut out);
    m.intake.write(&mut out);
    write_gauge(
        &mut out,
        "gateway_service_count",
        "Deployed functions' workers that answer a head count.",
        FUNCTION,
        live.iter()
            .filter_map(|f| Some((vec![f.name.as_str()], f.running? as f64))),
    );
    type Figure = fn(&Live) -> Option<f64>;
    let figures: [(&str, &str, Figure); 8] = [
        (
            "queue_worker_pending_messages",
            "Calls waiting in the function's queue.",
            |f| f.stats.as_ref().map(|s| s.pending as f64),
        ),
        (
            "queue_worker_function_invocation_inflight",
            "Calls delivered to a worker and not yet finished.",
            |f| f.stats.as_ref().map(|s| s.in_flight as f64),
        ),
        (
            "fjord_queue_redelivered_messages",
            "Calls in flight that were delivered more than once.",
            |f| f.stats.as_ref().map(|s| s.redelivered as f64),
        ),
        (
            "fjord_queue_oldest_pending_seconds",
            "Age of the oldest call waiting in the queue (0: none waits).",
            |f| f.stats.as_ref().map(|s| s.oldest_pending_seconds),
        ),
        (
            "fjord_workers_running",
            "Workers that answer a head count.",
            |f| f.running.map(|n| n as f64),
        ),
        (
            "fjord_workers_wanted",
            "Workers the autoscaler keeps (absent when none answers, e.g. under KEDA).",
            |f| f.wanted.map(f64::from),
        ),
        (
            "fjord_workers_min",
            "com.openfaas.scale.min of the function.",
            |f| f.policy.as_ref().map(|p| f64::from(p.min)),
        ),
        (
            "fjord_workers_max",
            "com.openfaas.scale.max of the function.",
            |f| f.policy.as_ref().map(|p| f64::from(p.max)),
        ),
    ];
    for (name, help, figure) in figures {
        write_gauge(
            &mut out,
            name,
            help,
            FUNCTION,
            live.iter()
                .filter_map(|f| Some((vec![f.name.as_str()], figure(f)?))),
        );
    }
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], out).into_response()
}
