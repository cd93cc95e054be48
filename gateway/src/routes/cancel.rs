//! `DELETE /async-function/{call_id}` (basic auth): cancels a call that is not final.
//!
//! The cancellation is written to the cancellations bucket first (every worker follows it: a
//! queued call is never run, a running one is stopped), then the call is recorded `cancelled`
//! with an outcome event, so it is final even if no worker ever pulls it. The first final
//! outcome wins: a call that finishes in the same instant keeps its own outcome. Answers 202,
//! 404 for an unknown call, 409 `already_final` for a final one.

use axum::Json;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use fjord_common::cancel::Cancels;
use fjord_common::invocation::{Event, FinalStatus, Finished};
use serde_json::json;

use super::status::{find, parse_id};
use crate::AppState;
use crate::error::ApiError;

pub(super) async fn cancel(
    state: &AppState,
    headers: &HeaderMap,
    raw: &str,
) -> Result<Response, ApiError> {
    if !crate::auth::authorized(state, headers) {
        return Err(ApiError::Unauthorized);
    }
    let call_id = parse_id(raw)?;
    let row = find(state, call_id).await?;
    if row.is_final() {
        return Err(ApiError::AlreadyFinal(row.status));
    }
    let function = row.function.parse().map_err(|_| ApiError::Internal)?;
    let publish = async {
        Cancels::open(&state.queue).await?.request(call_id).await?;
        let mut finished = Finished::ended(
            call_id,
            function,
            row.attempts.max(0) as u32,
            row.created_at.timestamp_nanos_opt().unwrap_or_default(),
            FinalStatus::Cancelled,
            "cancelled through the API".into(),
        );
        finished.callback_url = row.callback_url.clone();
        finished.traceparent = row.traceparent.clone();
        // A large request body, if there was one, is no longer needed.
        finished.request_object = Some(format!("call-{call_id}"));
        state
            .queue
            .publish_event(Event::Finished(Box::new(finished)), Bytes::new())
            .await
    };
    match tokio::time::timeout(state.settings.publish_timeout, publish).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => return Err(e.into()),
        Err(_) => return Err(ApiError::QueueUnavailable),
    }
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"call_id": call_id, "status": "cancelled"})),
    )
        .into_response())
}
