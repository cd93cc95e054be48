//! `/system/invocations`: one call's status, its result, and the list of calls.
//!
//! Read your writes: the recorder writes rows a moment after the 202, so a miss is only a 404
//! once the recorder has caught up with the stream as it was when the request arrived (bounded
//! by `FJORD_READ_WAIT`); if it has not caught up by then the answer is 503 `not_yet_recorded`,
//! never a false 404.

use std::collections::HashMap;
use std::time::Duration;

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::Response;
use chrono::{DateTime, SecondsFormat, Utc};
use fjord_common::CallId;
use fjord_common::invocation::STATUSES;
use fjord_common::store::{InvocationRow, ListFilter};
use serde_json::{Value, json};
use uuid::Uuid;

use super::extract::{ApiPath, ApiQuery};
use crate::AppState;
use crate::error::ApiError;

pub(super) fn rfc3339(t: Option<DateTime<Utc>>) -> Value {
    t.map(|t| Value::String(t.to_rfc3339_opts(SecondsFormat::Micros, true)))
        .unwrap_or(Value::Null)
}

fn to_json(row: &InvocationRow) -> Value {
    json!({
        "call_id": row.call_id,
        "function": row.function,
        "status": row.status,
        "attempts": row.attempts,
        "created_at": rfc3339(Some(row.created_at)),
        "started_at": rfc3339(row.started_at),
        "finished_at": rfc3339(row.finished_at),
        "duration_seconds": row.duration_seconds,
        "function_status": row.function_status,
        "next_attempt_at": rfc3339(row.next_attempt_at),
        "redrives": row.redrives,
        "callback_url": row.callback_url,
        // A call still running has its callback ahead of it: `pending`, no attempts yet.
        "callback": row.callback_url.as_ref().map(|_| json!({
            "state": row.callback_state.as_deref().unwrap_or("pending"),
            "attempts": row.callback_attempts,
            "next_attempt_at": rfc3339(row.callback_next_at),
        })),
        "error": row.error,
    })
}

pub(super) fn parse_id(raw: &str) -> Result<CallId, ApiError> {
    raw.parse()
        .map_err(|_| ApiError::InvalidCallId(format!("{raw:?} is not a UUID")))
}

/// The row, waiting for the recorder on a miss.
pub(super) async fn find(state: &AppState, call_id: CallId) -> Result<InvocationRow, ApiError> {
    if let Some(row) = state.store.invocation(call_id).await? {
        return Ok(row);
    }
    let (target, _) = state.queue.recorder_progress().await?;
    let deadline = tokio::time::Instant::now() + state.settings.read_wait;
    loop {
        let (_, floor) = state.queue.recorder_progress().await?;
        if floor >= target {
            break;
        }
        if tokio::time::Instant::now() >= deadline {
            return match state.store.invocation(call_id).await? {
                Some(row) => Ok(row),
                None => Err(ApiError::NotYetRecorded),
            };
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    state
        .store
        .invocation(call_id)
        .await?
        .ok_or_else(|| ApiError::InvocationNotFound(call_id.to_string()))
}

pub async fn get(
    State(state): State<AppState>,
    ApiPath(raw): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    let row = find(&state, parse_id(&raw)?).await?;
    Ok(Json(to_json(&row)))
}

pub async fn result(
    State(state): State<AppState>,
    ApiPath(raw): ApiPath<String>,
) -> Result<Response, ApiError> {
    let call_id = parse_id(&raw)?;
    let row = find(&state, call_id).await?;
    if !row.is_final() {
        return Err(ApiError::NotFinished(row.status));
    }
    let result = state.store.result(call_id).await?.unwrap_or_default();
    let mut response = Response::builder()
        .status(StatusCode::OK)
        .body(Body::from(result.body))
        .map_err(|_| ApiError::Internal)?;
    let headers = response.headers_mut();
    for (k, v) in &result.headers {
        let name = k.to_ascii_lowercase();
        if name == "content-type"
            && let (Ok(k), Ok(v)) = (
                HeaderName::try_from(name.as_str()),
                HeaderValue::try_from(v.as_str()),
            )
        {
            headers.insert(k, v);
        }
    }
    headers
        .entry(header::CONTENT_TYPE)
        .or_insert(HeaderValue::from_static("application/octet-stream"));
    if let Some(code) = row.function_status {
        headers.insert("x-function-status", HeaderValue::from(code));
    }
    headers.insert(
        "x-call-id",
        HeaderValue::from_str(&call_id.to_string()).expect("ascii"),
    );
    Ok(response)
}

/// `before` cursors are `<created_at unix microseconds>_<call id>` of the last row of a page.
fn cursor(row: &InvocationRow) -> String {
    format!("{}_{}", row.created_at.timestamp_micros(), row.call_id)
}

fn parse_cursor(raw: &str) -> Result<(DateTime<Utc>, Uuid), ApiError> {
    let bad = || ApiError::InvalidQuery {
        param: "before",
        message: format!("{raw:?} is not a cursor from a previous page's \"next\""),
    };
    let (micros, id) = raw.split_once('_').ok_or_else(bad)?;
    let micros: i64 = micros.parse().map_err(|_| bad())?;
    let at = DateTime::from_timestamp_micros(micros).ok_or_else(bad)?;
    let id = Uuid::parse_str(id).map_err(|_| bad())?;
    Ok((at, id))
}

pub async fn list(
    State(state): State<AppState>,
    ApiQuery(params): ApiQuery<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let status = params.get("status").filter(|s| !s.is_empty()).cloned();
    list_calls(&state, &params, status).await
}

/// A page of calls (`{"items", "next"}`) with `function`, `limit` and `before` from the query
/// and the given status.
pub(super) async fn list_calls(
    state: &AppState,
    params: &HashMap<String, String>,
    status: Option<String>,
) -> Result<Json<Value>, ApiError> {
    if let Some(s) = &status
        && !STATUSES.contains(&s.as_str())
    {
        return Err(ApiError::InvalidQuery {
            param: "status",
            message: format!("{s:?} is not one of {}", STATUSES.join(", ")),
        });
    }
    let limit = match params.get("limit") {
        None => 50,
        Some(l) => match l.parse::<i64>() {
            Ok(n) if (1..=1000).contains(&n) => n,
            _ => {
                return Err(ApiError::InvalidQuery {
                    param: "limit",
                    message: format!("{l:?} is not a number from 1 to 1000"),
                });
            }
        },
    };
    let before = match params.get("before").filter(|s| !s.is_empty()) {
        None => None,
        Some(raw) => Some(parse_cursor(raw)?),
    };
    let filter = ListFilter {
        function: params.get("function").filter(|s| !s.is_empty()).cloned(),
        status,
        before,
        limit,
    };
    let rows = state.store.list(&filter).await?;
    let next = (rows.len() as i64 == limit)
        .then(|| rows.last().map(cursor))
        .flatten();
    Ok(Json(json!({
        "items": rows.iter().map(to_json).collect::<Vec<_>>(),
        "next": next,
    })))
}
