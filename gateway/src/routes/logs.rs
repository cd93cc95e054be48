//! `GET /system/logs?name=FN` (OpenFaaS's route): a function's own output as NDJSON, one
//! [`fjord_common::logs::LogLine`] per line, oldest first. `call=ID` keeps one call's lines,
//! `since=RFC3339` those from then on, `tail=N` the last N; `follow=true` goes on with new lines
//! until the client goes away.

use std::collections::HashMap;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::header;
use axum::response::Response;
use fjord_common::logs::{self, LogQuery};
use fjord_common::{CallId, FunctionName};

use super::extract::ApiQuery;
use crate::AppState;
use crate::error::ApiError;

fn query(params: &HashMap<String, String>) -> Result<LogQuery, ApiError> {
    let bad = |param: &'static str, message: String| ApiError::InvalidQuery { param, message };
    let call_id = match params.get("call") {
        None => None,
        Some(v) => Some(
            v.parse::<CallId>()
                .map_err(|_| bad("call", format!("{v:?} is not a call id")))?,
        ),
    };
    let since = match params.get("since") {
        None => None,
        Some(v) => Some(
            chrono::DateTime::parse_from_rfc3339(v)
                .map_err(|_| bad("since", format!("{v:?} is not an RFC 3339 time")))?
                .to_utc(),
        ),
    };
    let tail = match params.get("tail") {
        None => None,
        Some(v) => match v.parse::<usize>() {
            Ok(n) if (1..=100_000).contains(&n) => Some(n),
            _ => {
                return Err(bad(
                    "tail",
                    format!("{v:?} is not a number from 1 to 100000"),
                ));
            }
        },
    };
    let follow = match params.get("follow").map(String::as_str) {
        None | Some("false") | Some("0") => false,
        Some("true") | Some("1") => true,
        Some(v) => return Err(bad("follow", format!("{v:?} is not true or false"))),
    };
    Ok(LogQuery {
        call_id,
        since,
        tail,
        follow,
    })
}

pub async fn read(
    State(state): State<AppState>,
    ApiQuery(params): ApiQuery<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let raw = params.get("name").cloned().unwrap_or_default();
    if raw.is_empty() {
        return Err(ApiError::InvalidQuery {
            param: "name",
            message: "the function's name is required".into(),
        });
    }
    let name: FunctionName = raw
        .parse()
        .map_err(|_| ApiError::FunctionNotFound(raw.clone()))?;
    if state.functions.cached(name.as_str()).is_none() {
        return Err(ApiError::FunctionNotFound(raw));
    }
    let lines = logs::read(&state.queue, &name, query(&params)?)
        .await
        .map_err(|_| ApiError::QueueUnavailable)?;
    let body = futures::stream::unfold(lines, |mut lines| async move {
        let line = lines.recv().await?;
        let mut bytes = serde_json::to_vec(&line).unwrap_or_default();
        bytes.push(b'\n');
        Some((Ok::<_, std::convert::Infallible>(Bytes::from(bytes)), lines))
    });
    Response::builder()
        .header(header::CONTENT_TYPE, "application/x-ndjson")
        .body(Body::from_stream(body))
        .map_err(|_| ApiError::Internal)
}
