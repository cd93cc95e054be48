//! The invocation model and its wire format on NATS.
//!
//! An invocation message is `Fjord-Schema` (NATS header) + payload `meta JSON` `\n` `body`.
//! Outcome events (`started`, `finished`) use the same framing, the body being the function's
//! result. Bodies too large for one NATS message live in the object store and the meta says so
//! (`BodyRef::Stored`): a claim check.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::{CallId, Error, FunctionName};

/// The NATS header that carries the schema version of the payload.
pub const SCHEMA_HEADER: &str = "Fjord-Schema";
/// The version this build writes and understands.
pub const SCHEMA_VERSION: u32 = 1;

/// Where a message's body is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum BodyRef {
    /// Right after the meta line in the same message.
    Inline,
    /// In the bodies object store under `object`.
    Stored { object: String, size: u64 },
}

/// Everything about a call except its body.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CallMeta {
    pub call_id: CallId,
    pub function: FunctionName,
    pub method: String,
    /// The sub-path after the function name, always starting with `/`.
    pub path: String,
    /// The raw query string, without `?`; empty when there is none.
    pub query: String,
    pub headers: Vec<(String, String)>,
    pub callback_url: Option<String>,
    /// When the gateway accepted the call, unix nanoseconds (`X-Start-Time`).
    pub start_time_ns: i64,
    pub body: BodyRef,
    /// The incarnation of the function the call was accepted for (see
    /// `FunctionSpec::incarnation`); a worker of a later incarnation cancels the call instead of
    /// running it.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub incarnation: String,
    /// The call's W3C `traceparent` (see [`crate::trace`]); the function and the callback
    /// receive it.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub traceparent: String,
    /// The attempt number of this message's first delivery: a retry after a backoff is a new
    /// message starting at the next attempt (0 and 1 both mean the first).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub first_attempt: u32,
    /// How many times the call was re-driven from the dead letters; a redrive starts the call
    /// over with fresh attempts.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub redrive: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl CallMeta {
    /// The attempt number of delivery `delivered` (from 1) of this message.
    pub fn attempt(&self, delivered: u32) -> u32 {
        self.first_attempt.max(1) + delivered.max(1) - 1
    }

    /// The JetStream message id (de-duplication key) of this message: the call id for the
    /// call as accepted, with the redrive and attempt for the messages that run it again.
    pub fn message_id(&self) -> String {
        if self.first_attempt <= 1 && self.redrive == 0 {
            self.call_id.to_string()
        } else {
            format!("{}.{}.{}", self.call_id, self.redrive, self.first_attempt)
        }
    }
}

/// How a call ended (one attempt's view).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinalStatus {
    Succeeded,
    Failed,
    Dead,
    Cancelled,
}

impl FinalStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            FinalStatus::Succeeded => "succeeded",
            FinalStatus::Failed => "failed",
            FinalStatus::Dead => "dead",
            FinalStatus::Cancelled => "cancelled",
        }
    }
}

/// The statuses a call ends in ([`FinalStatus`] as stored).
pub const FINAL_STATUSES: [&str; 4] = ["succeeded", "failed", "dead", "cancelled"];

/// Every status a call can have, as stored and shown.
pub const STATUSES: [&str; 6] = [
    "queued",
    "running",
    "succeeded",
    "failed",
    "dead",
    "cancelled",
];

/// Events published by workers, applied by the recorder.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    Started {
        call_id: CallId,
        function: FunctionName,
        attempt: u32,
        created_ns: i64,
        at_ns: i64,
    },
    Finished(Box<Finished>),
    /// An attempt failed with a retryable status and attempts are left: the call waits as
    /// `queued` until `not_before_ns`, then runs again as attempt `attempt + 1`. The message
    /// carries the whole call (body inline after the meta line) so the retrier can put it back
    /// on the function's queue without holding a consumer slot meanwhile.
    Retrying(Box<Retrying>),
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Retrying {
    pub call: CallMeta,
    /// The attempt that failed.
    pub attempt: u32,
    pub started_ns: i64,
    pub finished_ns: i64,
    /// When the next attempt may start, unix nanoseconds.
    pub not_before_ns: i64,
    pub function_status: u16,
    pub error: Option<String>,
}

/// The outcome of one attempt that ends the call.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Finished {
    pub call_id: CallId,
    pub function: FunctionName,
    pub attempt: u32,
    pub created_ns: i64,
    pub started_ns: Option<i64>,
    pub finished_ns: i64,
    pub status: FinalStatus,
    /// The function's HTTP status; 503 when it could not be run at all.
    pub function_status: u16,
    pub headers: Vec<(String, String)>,
    /// Why it failed: a reason and a bounded tail of stderr where there is one.
    pub error: Option<String>,
    pub callback_url: Option<String>,
    pub body: BodyRef,
    /// The call's request body object, if it was stored out of band; the recorder deletes it
    /// once the call is final.
    #[serde(default)]
    pub request_object: Option<String>,
    /// The call's `traceparent`, for the callback.
    #[serde(default)]
    pub traceparent: Option<String>,
    /// For a `dead` call: the request, kept so the call can be re-driven. Its body is in the
    /// object store (`BodyRef::Stored`) unless it was empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_letter: Option<CallMeta>,
}

impl Finished {
    /// The outcome of a call ended without a (further) run — cancelled, or given up — with no
    /// result body and function status 503. Callers add what they know of the call.
    pub fn ended(
        call_id: CallId,
        function: FunctionName,
        attempt: u32,
        created_ns: i64,
        status: FinalStatus,
        error: String,
    ) -> Finished {
        Finished {
            call_id,
            function,
            attempt,
            created_ns,
            started_ns: None,
            finished_ns: now_ns(),
            status,
            function_status: 503,
            headers: Vec::new(),
            error: (!error.is_empty()).then_some(error),
            callback_url: None,
            body: BodyRef::Inline,
            request_object: None,
            traceparent: None,
            dead_letter: None,
        }
    }
}

impl Event {
    pub fn call_id(&self) -> CallId {
        match self {
            Event::Started { call_id, .. } => *call_id,
            Event::Finished(f) => f.call_id,
            Event::Retrying(r) => r.call.call_id,
        }
    }

    /// The subject token for this event kind.
    pub fn kind(&self) -> &'static str {
        match self {
            Event::Started { .. } => "started",
            Event::Finished(_) => "finished",
            Event::Retrying(_) => "retrying",
        }
    }
}

/// Frames `meta` and `body` into one payload.
pub fn encode<T: Serialize>(meta: &T, body: &[u8]) -> Bytes {
    let mut out = serde_json::to_vec(meta).expect("meta serialises");
    out.reserve(body.len() + 1);
    out.push(b'\n');
    out.extend_from_slice(body);
    Bytes::from(out)
}

/// Splits a payload into its meta and its inline body.
pub fn decode<T: for<'de> Deserialize<'de>>(payload: &Bytes) -> Result<(T, Bytes), Error> {
    let nl = payload
        .iter()
        .position(|b| *b == b'\n')
        .ok_or_else(|| Error::Malformed("no meta line".into()))?;
    let meta =
        serde_json::from_slice(&payload[..nl]).map_err(|e| Error::Malformed(e.to_string()))?;
    Ok((meta, payload.slice(nl + 1..)))
}

/// Reads the schema version from a message's headers; a missing header is version 0, which no
/// build understands.
pub fn schema_version(headers: Option<&async_nats::HeaderMap>) -> u32 {
    headers
        .and_then(|h| h.get(SCHEMA_HEADER))
        .and_then(|v| v.as_str().parse().ok())
        .unwrap_or(0)
}

/// Unix nanoseconds now.
pub fn now_ns() -> i64 {
    chrono::Utc::now()
        .timestamp_nanos_opt()
        .expect("date within range")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn framing_keeps_bodies_byte_for_byte() {
        let meta = serde_json::json!({"a": "line\nbreak"});
        let body = b"\n\x00\xffbinary\n";
        let framed = encode(&meta, body);
        let (back, b): (serde_json::Value, Bytes) = decode(&framed).unwrap();
        assert_eq!(back, meta);
        assert_eq!(&b[..], body);
        assert!(decode::<serde_json::Value>(&Bytes::from_static(b"{}")).is_err());
    }
}
