//! `/async-function/{name}[/{path}]` and `/function/{name}[/{path}]`: accept a call, write it
//! to JetStream, and answer 202 (async) or the function's response (sync).

use std::collections::HashMap;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use fjord_common::invocation::{self, BodyRef, CallMeta, Event, now_ns};
use fjord_common::{CallId, FunctionName};
use futures::StreamExt;

use super::extract::ApiPath;
use super::idempotency::{self, Identity};
use crate::AppState;
use crate::error::ApiError;

/// Everything about an accepted call that the response needs.
struct Accepted {
    call_id: CallId,
    start_time_ns: i64,
}

/// A request ready to publish, or a repeat of a call accepted before (see [`idempotency`]).
enum Prepared {
    Call(Box<CallMeta>, Bytes),
    Repeat(Accepted),
}

/// Validates the request and builds its meta; the call is not yet published.
async fn prepare(
    state: &AppState,
    params: &HashMap<String, String>,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Prepared, ApiError> {
    let raw_name = params.get("name").map(String::as_str).unwrap_or_default();
    let name: FunctionName = raw_name
        .parse()
        .map_err(|_| ApiError::FunctionNotFound(raw_name.to_owned()))?;
    let incarnation = state
        .functions
        .incarnation(&name)
        .await?
        .ok_or_else(|| ApiError::FunctionNotFound(name.to_string()))?;
    let body = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::PayloadTooLarge(state.settings.max_body)
        } else {
            ApiError::BadBody(rejection.body_text())
        }
    })?;
    let callback_url = match headers.get("x-callback-url") {
        None => None,
        Some(v) => Some(callback_url(state, v).await?),
    };
    let call_id = match idempotency::identify(state, &name, headers).await? {
        Identity::New(id) => id,
        Identity::Repeat(call_id, at) => {
            return Ok(Prepared::Repeat(Accepted {
                call_id,
                start_time_ns: at.timestamp_nanos_opt().unwrap_or_default(),
            }));
        }
    };
    let traceparent = fjord_common::trace::traceparent_for(
        call_id,
        headers.get("traceparent").and_then(|v| v.to_str().ok()),
    );
    let path = match params.get("path") {
        Some(p) => format!("/{p}"),
        None => "/".to_owned(),
    };
    let meta = CallMeta {
        call_id,
        function: name,
        method: method.to_string(),
        path,
        query: uri.query().unwrap_or_default().to_owned(),
        headers: headers
            .iter()
            .map(|(k, v)| {
                (
                    k.to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        callback_url,
        start_time_ns: now_ns(),
        body: BodyRef::Inline,
        incarnation,
        traceparent,
        first_attempt: 0,
        redrive: 0,
    };
    Ok(Prepared::Call(Box::new(meta), body))
}

/// An absolute http(s) URL whose host resolves only to addresses callbacks may reach (see
/// `fjord_common::callback::networks`); the dispatcher checks again when it connects.
async fn callback_url(state: &AppState, value: &HeaderValue) -> Result<String, ApiError> {
    let text = value
        .to_str()
        .map_err(|_| ApiError::InvalidCallbackUrl("not visible ASCII".into()))?;
    let url = state
        .settings
        .callback_networks
        .check_url(text)
        .await
        .map_err(ApiError::InvalidCallbackUrl)?;
    Ok(url.to_string())
}

/// Publishes and waits for JetStream's acknowledgement, bounded so a lost NATS answers 503
/// quickly instead of hanging the client.
async fn publish(state: &AppState, meta: CallMeta, body: Bytes) -> Result<Accepted, ApiError> {
    if !matches!(
        state.queue.client.connection_state(),
        async_nats::connection::State::Connected
    ) {
        return Err(ApiError::QueueUnavailable);
    }
    let _admission = state.pressure.admit(&meta.function, body.len()).await?;
    let meta_function = meta.function.clone();
    // Built only when tracing is on: intake's hot path allocates nothing for it otherwise.
    let span = state.tracer.enabled().then(|| accept_span(&meta)).flatten();
    let accepted = Accepted {
        call_id: meta.call_id,
        start_time_ns: meta.start_time_ns,
    };
    match tokio::time::timeout(
        state.settings.publish_timeout,
        state.queue.publish_call(meta, body),
    )
    .await
    {
        Ok(Ok(_)) => {
            state.metrics.submitted.inc(&[meta_function.as_str()]);
            if let Some(mut span) = span {
                span.end_ns = now_ns();
                state.tracer.record(span);
            }
            Ok(accepted)
        }
        // JetStream's own cap (discard-new): refused, not dropped.
        Ok(Err(e)) if e.to_string().contains("maximum bytes") => Err(ApiError::QueueFull(
            "the queue's storage is full; try again shortly".into(),
        )),
        // Sent, maybe stored, but not confirmed: the client is told so, with the call's id.
        Ok(Err(e)) => {
            tracing::warn!(error = %e, call.id = %accepted.call_id, function = %meta_function, "publish failed");
            Err(ApiError::PublishUnconfirmed(accepted.call_id.to_string()))
        }
        Err(_) => {
            tracing::warn!(call.id = %accepted.call_id, function = %meta_function, "publish not acknowledged in time");
            Err(ApiError::PublishUnconfirmed(accepted.call_id.to_string()))
        }
    }
}

/// The accept span of a call about to be published: its id is the one in the call's
/// `traceparent`, its parent the caller's span when the caller sent a valid `traceparent`.
fn accept_span(meta: &CallMeta) -> Option<fjord_common::otlp::Span> {
    let (trace_id, span_id) = fjord_common::trace::ids(&meta.traceparent)?;
    let parent = meta
        .headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("traceparent"))
        .and_then(|(_, v)| fjord_common::trace::ids(v))
        .filter(|(caller_trace, _)| *caller_trace == trace_id)
        .map(|(_, span)| span.to_owned());
    Some(fjord_common::otlp::Span {
        trace_id: trace_id.to_owned(),
        span_id: span_id.to_owned(),
        parent_span_id: parent,
        name: "fjord.accept",
        kind: fjord_common::otlp::Kind::Server,
        start_ns: meta.start_time_ns,
        end_ns: 0,
        attributes: vec![
            ("fjord.call_id", meta.call_id.to_string().into()),
            ("fjord.function", meta.function.to_string().into()),
            ("http.request.method", meta.method.clone().into()),
        ],
        error: None,
    })
}

fn call_headers(response: &mut Response, accepted: &Accepted) {
    let headers = response.headers_mut();
    headers.insert(
        "x-call-id",
        HeaderValue::from_str(&accepted.call_id.to_string()).expect("uuid is ASCII"),
    );
    headers.insert("x-start-time", HeaderValue::from(accepted.start_time_ns));
}

/// Counts a call the gateway answered for a deployed function (`gateway_function_invocation_total`
/// and, for `sync`, `gateway_functions_seconds`; otherwise `fjord_intake_seconds` when
/// accepted). Unknown names are not counted, so a scanner cannot grow the label set.
fn count(
    state: &AppState,
    params: &HashMap<String, String>,
    answered: Result<Response, ApiError>,
    since: std::time::Instant,
    sync: bool,
) -> Result<Response, ApiError> {
    let code = match &answered {
        Ok(response) => response.status(),
        Err(ApiError::FunctionNotFound(_)) => return answered,
        Err(e) => e.status(),
    };
    let name = params.get("name").map(String::as_str).unwrap_or_default();
    if state.functions.cached(name).is_none() {
        return answered;
    }
    let m = &state.metrics;
    m.invocations.inc(&[name, code.as_str()]);
    let seconds = since.elapsed().as_secs_f64();
    if sync {
        m.durations.observe(&[name], seconds);
    } else if code == StatusCode::ACCEPTED {
        m.intake.observe(&[name], seconds);
    }
    answered
}

pub async fn asynchronous(
    State(state): State<AppState>,
    ApiPath(params): ApiPath<HashMap<String, String>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let since = std::time::Instant::now();
    let answered = accept(&state, &params, method, uri, headers, body).await;
    count(&state, &params, answered, since, false)
}

async fn accept(
    state: &AppState,
    params: &HashMap<String, String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    if method == Method::DELETE {
        let raw = params.get("name").map(String::as_str).unwrap_or_default();
        return super::cancel::cancel(state, &headers, raw).await;
    }
    if method != Method::POST {
        return Err(ApiError::MethodNotAllowed {
            method: method.to_string(),
            allowed: "POST, DELETE",
        });
    }
    let (accepted, repeated) = match prepare(state, params, &method, &uri, &headers, body).await? {
        Prepared::Call(meta, body) => (publish(state, *meta, body).await?, false),
        Prepared::Repeat(accepted) => (accepted, true),
    };
    let mut response = StatusCode::ACCEPTED.into_response();
    call_headers(&mut response, &accepted);
    if repeated {
        response
            .headers_mut()
            .insert("x-fjord-repeated", HeaderValue::from_static("true"));
    }
    Ok(response)
}

/// Headers of the function's response that describe the transport, not the content.
const HOP_BY_HOP: [&str; 4] = [
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
];

pub async fn synchronous(
    State(state): State<AppState>,
    ApiPath(params): ApiPath<HashMap<String, String>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let since = std::time::Instant::now();
    let answered = run(&state, &params, method, uri, headers, body).await;
    count(&state, &params, answered, since, true)
}

async fn run(
    state: &AppState,
    params: &HashMap<String, String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let (meta, body) = match prepare(state, params, &method, &uri, &headers, body).await? {
        Prepared::Call(meta, body) => (*meta, body),
        Prepared::Repeat(accepted) => {
            return Err(ApiError::DuplicateCall(accepted.call_id.to_string()));
        }
    };
    // Subscribe before publishing so the outcome cannot slip past.
    let mut events = state
        .queue
        .client
        .subscribe(state.queue.names.events_of(meta.call_id))
        .await
        .map_err(|_| ApiError::QueueUnavailable)?;
    let accepted = publish(state, meta, body).await?;
    let deadline = tokio::time::Instant::now() + state.settings.sync_timeout;
    let finished = loop {
        match tokio::time::timeout_at(deadline, events.next()).await {
            Err(_) => {
                let mut response =
                    ApiError::SyncTimeout(state.settings.sync_timeout.as_secs()).into_response();
                call_headers(&mut response, &accepted);
                return Ok(response);
            }
            Ok(None) => return Err(ApiError::QueueUnavailable),
            Ok(Some(message)) => {
                if let Ok((Event::Finished(f), inline)) =
                    invocation::decode::<Event>(&message.payload)
                {
                    break (f, inline);
                }
            }
        }
    };
    let (finished, inline) = finished;
    let body = match state.queue.load_body(&finished.body, inline).await {
        Ok(body) => body,
        // The recorder moves large results into PostgreSQL and deletes the object.
        Err(_) => match state.store.result(accepted.call_id).await? {
            Some(row) => Bytes::from(row.body),
            None => return Err(ApiError::Internal),
        },
    };
    let status = StatusCode::from_u16(finished.function_status).unwrap_or(StatusCode::BAD_GATEWAY);
    let mut response = Response::builder()
        .status(status)
        .body(Body::from(body))
        .map_err(|_| ApiError::Internal)?;
    for (k, v) in &finished.headers {
        if HOP_BY_HOP.contains(&k.to_ascii_lowercase().as_str()) {
            continue;
        }
        if let (Ok(k), Ok(v)) = (
            HeaderName::try_from(k.as_str()),
            HeaderValue::try_from(v.as_str()),
        ) {
            response.headers_mut().append(k, v);
        }
    }
    call_headers(&mut response, &accepted);
    if let Some(started) = finished.started_ns {
        let seconds = (finished.finished_ns - started) as f64 / 1e9;
        if let Ok(v) = HeaderValue::from_str(&format!("{seconds:.6}")) {
            response.headers_mut().insert("x-duration-seconds", v);
        }
    }
    Ok(response)
}
