//! `/system/dead-letters`: calls that ran out of attempts (`dead`), and putting them back with
//! fresh attempts.
//!
//! A redrive publishes the kept request again as a new invocation of the same call (same call
//! id, `X-Callback-Url` and trace; the function's current deployment) with the next redrive
//! number; the recorder then starts the call's row over, so its status, attempts and callback
//! describe the new round. Its callback, once final again, carries a new `webhook-id`.

use std::collections::HashMap;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use fjord_common::CallId;
use fjord_common::store::dead_letters::DeadLetter;
use serde_json::{Value, json};

use super::extract::{ApiPath, ApiQuery};
use super::status::{find, list_calls, parse_id};
use crate::AppState;
use crate::error::ApiError;

/// Dead calls newest first, as `GET /system/invocations?status=dead` lists them.
pub async fn list(
    State(state): State<AppState>,
    ApiQuery(params): ApiQuery<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    list_calls(&state, &params, Some("dead".into())).await
}

/// Re-drives one dead call: 202. 404 for an unknown call, 409 `not_dead` for one that is not
/// dead, 409 `not_redrivable` if its request was not kept.
pub async fn redrive_one(
    State(state): State<AppState>,
    ApiPath(raw): ApiPath<String>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let call_id = parse_id(&raw)?;
    let row = find(&state, call_id).await?;
    if row.status != "dead" {
        return Err(ApiError::NotDead(row.status));
    }
    let letter = state
        .store
        .dead_letter(call_id)
        .await?
        .ok_or_else(|| ApiError::NotRedrivable(call_id.to_string()))?;
    redrive(&state, letter).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"call_id": call_id, "status": "queued"})),
    ))
}

/// Most dead letters one bulk redrive puts back; the answer says whether more are left.
const BULK_LIMIT: usize = 10_000;
const PAGE: i64 = 500;

/// Re-drives every dead call of `?function=` (required): 202 `{"redriven": n, "more": bool}`.
pub async fn redrive_all(
    State(state): State<AppState>,
    ApiQuery(params): ApiQuery<HashMap<String, String>>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let function = params
        .get("function")
        .filter(|f| !f.is_empty())
        .ok_or_else(|| ApiError::InvalidQuery {
            param: "function",
            message: "name the function whose dead letters to re-drive".into(),
        })?;
    let mut after: Option<CallId> = None;
    let mut redriven = 0;
    loop {
        let page = state.store.dead_letters_of(function, after, PAGE).await?;
        let full = page.len() as i64 == PAGE;
        for letter in page {
            after = Some(letter.meta.call_id);
            redrive(&state, letter).await?;
            redriven += 1;
        }
        if !full || redriven >= BULK_LIMIT {
            let more = full;
            return Ok((
                StatusCode::ACCEPTED,
                Json(json!({"function": function, "redriven": redriven, "more": more})),
            ));
        }
    }
}

async fn redrive(state: &AppState, letter: DeadLetter) -> Result<(), ApiError> {
    let mut meta = letter.meta;
    meta.incarnation = state
        .functions
        .incarnation(&meta.function)
        .await?
        .ok_or_else(|| ApiError::FunctionNotFound(meta.function.to_string()))?;
    meta.first_attempt = 0;
    meta.redrive = letter.redrives + 1;
    let publish = state.queue.publish_call(meta, Bytes::from(letter.body));
    match tokio::time::timeout(state.settings.publish_timeout, publish).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(e.into()),
        Err(_) => Err(ApiError::QueueUnavailable),
    }
}
