//! Which call a POST is: a new one, or a repeat of one already accepted.
//!
//! - `Idempotency-Key` (1–255 visible ASCII characters): the call id is derived from the
//!   function and the key ([`CallId::for_key`]), so repeats within the window
//!   (`FJORD_IDEMPOTENCY_WINDOW`) name the same call and run it once. Once the call is older than
//!   the window, the key starts a new call (the next round's id).
//! - A client's `X-Call-Id` (without a key) names one call for good: a repeat is the same call,
//!   and the id used for another function is `409 call_id_in_use`.
//!
//! Nothing is stored for this beyond the calls' own rows: PostgreSQL answers for repeats the
//! recorder has written, and JetStream's duplicate window (two minutes, message id = call id)
//! for the moments before it has — so memory and storage stay bounded at any intake rate. The
//! price is one indexed read per keyed request, and `503 database_unavailable` for keyed
//! requests while PostgreSQL is down (unkeyed intake goes on).

use std::collections::HashMap;

use axum::http::HeaderMap;
use chrono::{DateTime, Utc};
use fjord_common::{CallId, FunctionName};

use crate::AppState;
use crate::error::ApiError;

/// Rounds of ids one key can have (a key reused after more windows than this gets random ids).
const ROUNDS: u32 = 16;

pub(super) enum Identity {
    New(CallId),
    /// Accepted before, at this time.
    Repeat(CallId, DateTime<Utc>),
}

pub(super) async fn identify(
    state: &AppState,
    function: &FunctionName,
    headers: &HeaderMap,
) -> Result<Identity, ApiError> {
    let key = match headers.get("idempotency-key") {
        None => None,
        Some(v) => Some(
            v.to_str()
                .ok()
                .map(str::trim)
                .filter(|k| !k.is_empty() && k.len() <= 255)
                .ok_or_else(|| {
                    ApiError::InvalidIdempotencyKey("must be 1-255 visible ASCII characters".into())
                })?
                .to_owned(),
        ),
    };
    if let Some(key) = key {
        let rounds: Vec<CallId> = (0..ROUNDS)
            .map(|n| CallId::for_key(function, &key, n))
            .collect();
        let known = existing(state, &rounds).await?;
        let cutoff = Utc::now()
            - chrono::Duration::from_std(state.settings.idempotency_window)
                .unwrap_or(chrono::Duration::MAX);
        return Ok(match rounds.iter().rposition(|id| known.contains_key(id)) {
            None => Identity::New(rounds[0]),
            Some(i) if known[&rounds[i]].1 >= cutoff => {
                Identity::Repeat(rounds[i], known[&rounds[i]].1)
            }
            Some(i) if i + 1 < rounds.len() => Identity::New(rounds[i + 1]),
            Some(_) => Identity::New(CallId::new()),
        });
    }
    let Some(raw) = headers.get("x-call-id") else {
        return Ok(Identity::New(CallId::new()));
    };
    let id: CallId = raw
        .to_str()
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| ApiError::InvalidCallId("must be a UUID".into()))?;
    Ok(match existing(state, &[id]).await?.remove(&id) {
        None => Identity::New(id),
        Some((f, at)) if f == function.as_str() => Identity::Repeat(id, at),
        Some((f, _)) => {
            return Err(ApiError::CallIdInUse {
                id: id.to_string(),
                function: f,
            });
        }
    })
}

async fn existing(
    state: &AppState,
    ids: &[CallId],
) -> Result<HashMap<CallId, (String, DateTime<Utc>)>, ApiError> {
    Ok(state
        .store
        .created(ids)
        .await?
        .into_iter()
        .map(|(id, function, at)| (id, (function, at)))
        .collect())
}
