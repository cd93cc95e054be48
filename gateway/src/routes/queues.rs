//! `/system/queues`: live queue figures per function, from JetStream consumer info, and the
//! number of workers that answer a head count ([`fjord_common::queue::Queue::head_count`]).

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use fjord_common::FunctionName;
use fjord_common::queue::QueueStats;
use fjord_common::scale::ScalePolicy;
use serde_json::{Value, json};

use crate::AppState;
use crate::error::ApiError;

/// How long replies to a head count are collected.
const PING_WINDOW: Duration = Duration::from_millis(50);

/// Workers of the function that answer a head count within a short window.
pub(crate) async fn count_workers(
    state: &AppState,
    function: &FunctionName,
) -> Result<usize, ApiError> {
    state
        .queue
        .head_count(function, PING_WINDOW)
        .await
        .map_err(|_| ApiError::QueueUnavailable)
}

/// One deployed function's live figures, as `/metrics` and the dashboard show them: `None`
/// where the source did not answer.
pub(crate) struct Live {
    pub name: String,
    pub stats: Option<QueueStats>,
    pub running: Option<usize>,
    /// The autoscaler's worker count (absent without one, as under KEDA).
    pub wanted: Option<u32>,
    pub policy: Option<ScalePolicy>,
}

/// Every deployed function's live figures, read side by side.
pub(crate) async fn live(state: &AppState) -> Vec<Live> {
    let specs = state.functions.list();
    futures::future::join_all(specs.iter().map(|spec| async move {
        let (stats, running, status) = tokio::join!(
            state.queue.stats(&spec.name),
            count_workers(state, &spec.name),
            super::scale::autoscaler_status(state, &spec.name),
        );
        Live {
            name: spec.name.to_string(),
            stats: stats.ok(),
            running: running.ok(),
            wanted: status.map(|s| s.replicas),
            policy: ScalePolicy::for_spec(spec).ok(),
        }
    }))
    .await
}

pub async fn list(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let functions = state.functions.list();
    let rows = futures::future::join_all(functions.iter().map(|spec| {
        let state = state.clone();
        async move {
            let stats = state.queue.stats(&spec.name).await?;
            let workers = count_workers(&state, &spec.name).await?;
            Ok::<_, ApiError>(json!({
                "function": spec.name,
                "pending": stats.pending,
                "in_flight": stats.in_flight,
                "redelivered": stats.redelivered,
                "workers": workers,
                "oldest_pending_seconds": stats.oldest_pending_seconds,
            }))
        }
    }))
    .await;
    Ok(Json(Value::Array(
        rows.into_iter().collect::<Result<_, _>>()?,
    )))
}
