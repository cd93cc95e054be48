//! HTTP basic auth in front of `/system/*`.

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::Response;
use base64::Engine;

use crate::AppState;
use crate::error::ApiError;

pub async fn require(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    if authorized(&state, request.headers()) {
        Ok(next.run(request).await)
    } else {
        Err(ApiError::Unauthorized)
    }
}

/// Whether the request carries the installation's basic-auth credentials (for routes outside
/// `/system/*` that need them, such as cancelling a call).
pub fn authorized(state: &AppState, headers: &axum::http::HeaderMap) -> bool {
    let expected = &state.settings.credentials;
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b64| {
            base64::engine::general_purpose::STANDARD
                .decode(b64.trim())
                .ok()
        })
        .and_then(|raw| String::from_utf8(raw).ok());
    given
        .as_deref()
        .and_then(|g| g.split_once(':'))
        .is_some_and(|(user, password)| {
            // Both compared in full so the time taken says nothing about which part was wrong.
            constant_time_eq(user.as_bytes(), expected.user.as_bytes())
                & constant_time_eq(password.as_bytes(), expected.password.as_bytes())
        })
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for (i, x) in a.iter().enumerate() {
        diff |= usize::from(x ^ b.get(i).copied().unwrap_or(0));
    }
    diff == 0
}
