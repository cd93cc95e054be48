//! `/system/invocations/{call_id}/callbacks`: a call's callback delivery log, and sending the
//! callback again.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use fjord_common::store::callbacks::Redelivery;
use serde_json::{Value, json};

use super::extract::ApiPath;
use super::status::{find, parse_id, rfc3339};
use crate::AppState;
use crate::error::ApiError;

/// Every attempt, oldest first, with the callback's current state.
pub async fn log(
    State(state): State<AppState>,
    ApiPath(raw): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    let call_id = parse_id(&raw)?;
    let row = find(&state, call_id).await?;
    let attempts = state.store.callback_log(call_id).await?;
    Ok(Json(json!({
        "call_id": call_id,
        "callback_url": row.callback_url,
        "state": row.callback_state,
        "next_attempt_at": rfc3339(row.callback_next_at),
        "items": attempts.iter().map(|a| json!({
            "at": rfc3339(Some(a.at)),
            "url": a.url,
            "webhook_id": a.webhook_id,
            "status_code": a.status_code,
            "error": a.error,
            "duration_seconds": a.duration_seconds,
            "outcome": a.outcome,
            "next_attempt_at": rfc3339(a.next_attempt_at),
        })).collect::<Vec<_>>(),
    })))
}

/// Sends a final call's callback again now, as a fresh round of attempts with the same
/// `webhook-id` (202). A call still running answers 409 `not_finished`; one made without a
/// callback URL, 409 `no_callback`.
pub async fn redeliver(
    State(state): State<AppState>,
    ApiPath(raw): ApiPath<String>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let call_id = parse_id(&raw)?;
    let row = find(&state, call_id).await?;
    match state.store.redeliver_callback(call_id).await? {
        Redelivery::Scheduled => Ok((
            StatusCode::ACCEPTED,
            Json(json!({"call_id": call_id, "callback": {"state": "pending"}})),
        )),
        Redelivery::NoSuchCall => Err(ApiError::InvocationNotFound(call_id.to_string())),
        Redelivery::NoCallback => Err(ApiError::NoCallback(call_id.to_string())),
        Redelivery::NotFinal => Err(ApiError::NotFinished(if row.is_final() {
            "being recorded".into()
        } else {
            row.status
        })),
    }
}
