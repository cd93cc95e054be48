//! Callbacks: what every process that touches them shares. Where a callback may go
//! ([`networks`]), how it is signed ([`signing`], the Standard Webhooks scheme), and when a
//! failed delivery is tried again ([`policy`]). The dispatcher itself lives in the worker crate;
//! the gateway checks targets at intake.

pub mod networks;
pub mod policy;
pub mod signing;

pub use networks::Networks;
pub use policy::Policy;
pub use signing::Signer;

/// A callback's states, as stored and shown: `pending` (not attempted yet, or sent again on
/// request), `retrying` (an attempt failed; another is scheduled), `delivered` (a receiver
/// answered 2xx) and `failed` (out of attempts, or the receiver answered 410 Gone).
pub const STATES: [&str; 4] = ["pending", "retrying", "delivered", "failed"];

/// The `webhook-id` of a call's callback: stable across every retry and redelivery of the same
/// final outcome, and different for a later outcome of the same call (a re-driven dead letter),
/// since it includes the stream sequence of the event that made the call final.
pub fn webhook_id(call_id: crate::CallId, final_seq: i64) -> String {
    format!("msg_{}_{final_seq}", call_id.0.simple())
}
