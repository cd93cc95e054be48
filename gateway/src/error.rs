//! The gateway's one error type: every failure a client can see, with its status code and a
//! stable snake_case `code` (listed in the README). Internal details are logged, not sent.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("no function named {0:?} is deployed")]
    FunctionNotFound(String),
    #[error("no invocation with id {0}")]
    InvocationNotFound(String),
    #[error("no route {0}")]
    RouteNotFound(String),
    #[error("invalid path: {0}")]
    InvalidPath(String),
    #[error("method {method} is not allowed here; allowed: {allowed}")]
    MethodNotAllowed {
        method: String,
        allowed: &'static str,
    },
    #[error("request body is larger than the limit of {0} bytes")]
    PayloadTooLarge(usize),
    #[error("could not read the request body: {0}")]
    BadBody(String),
    #[error("invalid X-Callback-Url: {0}")]
    InvalidCallbackUrl(String),
    #[error("invalid X-Call-Id: {0}")]
    InvalidCallId(String),
    #[error("invalid Idempotency-Key: {0}")]
    InvalidIdempotencyKey(String),
    #[error("call id {id} belongs to a call of {function}")]
    CallIdInUse { id: String, function: String },
    #[error(
        "this call was accepted before (call {0}); its status and result are under /system/invocations/{0}"
    )]
    DuplicateCall(String),
    #[error("invalid query parameter {param}: {message}")]
    InvalidQuery {
        param: &'static str,
        message: String,
    },
    #[error("invalid {field}: {message}")]
    InvalidDefinition { field: String, message: String },
    #[error("a function named {0:?} is deployed already; update it with PUT")]
    FunctionExists(String),
    #[error("no secret named {0:?}")]
    SecretNotFound(String),
    #[error("a secret named {0:?} exists already; update it with PUT")]
    SecretExists(String),
    #[error("authentication required")]
    Unauthorized,
    #[error("the call has not finished yet (status {0})")]
    NotFinished(String),
    #[error("call {0} was made without an X-Callback-Url")]
    NoCallback(String),
    #[error("the call is final already (status {0}); there is nothing to cancel")]
    AlreadyFinal(String),
    #[error("the call is not dead (status {0}); only dead calls can be re-driven")]
    NotDead(String),
    #[error("the request of call {0} was not kept, so it cannot be re-driven")]
    NotRedrivable(String),
    #[error("the call did not finish within {0} s; it carries on asynchronously")]
    SyncTimeout(u64),
    #[error("{0}; the call was not accepted")]
    QueueFull(String),
    #[error("the queue (NATS JetStream) is unavailable; the call was not accepted")]
    QueueUnavailable,
    /// The publish was sent but NATS did not confirm it (it went away mid-way): the call may be
    /// queued after all. Its id is in `X-Call-Id`.
    #[error(
        "the queue (NATS JetStream) did not confirm the call {0}; it may still run: retry with the same Idempotency-Key or X-Call-Id so it runs once"
    )]
    PublishUnconfirmed(String),
    #[error(
        "no autoscaler is running: start fjord-worker control without FJORD_NO_SPAWN (on Kubernetes, KEDA scales the workers: use kubectl scale)"
    )]
    AutoscalerUnavailable,
    #[error("the database is unavailable")]
    DatabaseUnavailable,
    #[error("the call may have been accepted but is not recorded yet; retry shortly")]
    NotYetRecorded,
    #[error("internal error")]
    Internal,
}

impl ApiError {
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::FunctionNotFound(_) => "function_not_found",
            ApiError::InvocationNotFound(_) => "invocation_not_found",
            ApiError::RouteNotFound(_) => "route_not_found",
            ApiError::InvalidPath(_) => "invalid_path",
            ApiError::MethodNotAllowed { .. } => "method_not_allowed",
            ApiError::PayloadTooLarge(_) => "payload_too_large",
            ApiError::BadBody(_) => "bad_body",
            ApiError::InvalidCallbackUrl(_) => "invalid_callback_url",
            ApiError::InvalidCallId(_) => "invalid_call_id",
            ApiError::InvalidIdempotencyKey(_) => "invalid_idempotency_key",
            ApiError::CallIdInUse { .. } => "call_id_in_use",
            ApiError::DuplicateCall(_) => "duplicate_call",
            ApiError::InvalidQuery { .. } => "invalid_query",
            ApiError::InvalidDefinition { .. } => "invalid_definition",
            ApiError::FunctionExists(_) => "function_exists",
            ApiError::SecretNotFound(_) => "secret_not_found",
            ApiError::SecretExists(_) => "secret_exists",
            ApiError::Unauthorized => "unauthorized",
            ApiError::NotFinished(_) => "not_finished",
            ApiError::NoCallback(_) => "no_callback",
            ApiError::NotDead(_) => "not_dead",
            ApiError::AlreadyFinal(_) => "already_final",
            ApiError::NotRedrivable(_) => "not_redrivable",
            ApiError::SyncTimeout(_) => "sync_timeout",
            ApiError::QueueFull(_) => "queue_full",
            ApiError::QueueUnavailable => "queue_unavailable",
            ApiError::PublishUnconfirmed(_) => "publish_unconfirmed",
            ApiError::AutoscalerUnavailable => "autoscaler_unavailable",
            ApiError::DatabaseUnavailable => "database_unavailable",
            ApiError::NotYetRecorded => "not_yet_recorded",
            ApiError::Internal => "internal",
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::FunctionNotFound(_)
            | ApiError::InvocationNotFound(_)
            | ApiError::RouteNotFound(_)
            | ApiError::SecretNotFound(_) => StatusCode::NOT_FOUND,
            ApiError::FunctionExists(_) | ApiError::SecretExists(_) => StatusCode::CONFLICT,
            ApiError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::BadBody(_)
            | ApiError::InvalidPath(_)
            | ApiError::InvalidCallbackUrl(_)
            | ApiError::InvalidCallId(_)
            | ApiError::InvalidIdempotencyKey(_)
            | ApiError::InvalidDefinition { .. }
            | ApiError::InvalidQuery { .. } => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::NotFinished(_)
            | ApiError::NoCallback(_)
            | ApiError::NotDead(_)
            | ApiError::AlreadyFinal(_)
            | ApiError::CallIdInUse { .. }
            | ApiError::DuplicateCall(_)
            | ApiError::NotRedrivable(_) => StatusCode::CONFLICT,
            ApiError::SyncTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
            ApiError::QueueFull(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::QueueUnavailable
            | ApiError::PublishUnconfirmed(_)
            | ApiError::AutoscalerUnavailable
            | ApiError::DatabaseUnavailable
            | ApiError::NotYetRecorded => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl From<fjord_common::Error> for ApiError {
    fn from(e: fjord_common::Error) -> Self {
        match e {
            fjord_common::Error::Database(e) => {
                tracing::warn!(error = %e, "database error");
                ApiError::DatabaseUnavailable
            }
            fjord_common::Error::Nats(e) => {
                tracing::warn!(error = %e, "NATS error");
                ApiError::QueueUnavailable
            }
            fjord_common::Error::Invalid { field, message } => {
                ApiError::InvalidDefinition { field, message }
            }
            other => {
                tracing::error!(error = %other, "internal error");
                ApiError::Internal
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let body = match &self {
            ApiError::InvalidDefinition { field, .. } => {
                Json(json!({"code": self.code(), "message": self.to_string(), "field": field}))
            }
            _ => Json(json!({"code": self.code(), "message": self.to_string()})),
        };
        let mut response = (status, body).into_response();
        let headers = response.headers_mut();
        match &self {
            ApiError::DuplicateCall(id) => {
                if let Ok(v) = HeaderValue::from_str(id) {
                    headers.insert("x-call-id", v);
                }
            }
            ApiError::PublishUnconfirmed(id) => {
                if let Ok(v) = HeaderValue::from_str(id) {
                    headers.insert("x-call-id", v);
                }
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            ApiError::MethodNotAllowed { allowed, .. } => {
                headers.insert(header::ALLOW, HeaderValue::from_static(allowed));
            }
            ApiError::Unauthorized => {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Basic realm=\"fjord\""),
                );
            }
            ApiError::QueueUnavailable
            | ApiError::QueueFull(_)
            | ApiError::DatabaseUnavailable
            | ApiError::NotYetRecorded => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            _ => {}
        }
        response
    }
}
