//! The retrier: puts calls back on their function's queue when their retry backoff is over.
//!
//! A worker publishes a failed attempt that may run again as a `retrying` event carrying the
//! whole call and acknowledges the call's message, so the waiting call holds no slot of the
//! function's consumer (`max_ack_pending`) however long it waits. The retrier's own consumer
//! takes those events: one not yet due is handed back with the rest of its wait as the nak
//! delay; a due one is published again as an invocation starting at the next attempt (its
//! message id names the attempt, so a retrier that dies between publishing and acknowledging
//! is de-duplicated) and only then acknowledged. Several control processes share the consumer.
//! A call whose function was removed meanwhile is ended `cancelled`.
//!
//! Fence: a retry event is dropped when the call's record shows it was overtaken — final, or
//! re-driven since. That is the late outcome of an attempt whose worker lost its lease (see
//! the worker's `lease`) while the message ran again elsewhere; putting it back on the queue
//! would run the call once more. A record that is merely at a later attempt does not drop it:
//! after a nats-server crash a delivery can come again as an earlier attempt, and dropping its
//! retry would leave the call unfinished for good, where letting it through costs at most one
//! more run. With PostgreSQL unreachable the event is not held back either: retries do not
//! wait for the database, and the recorder keeps the first final outcome.

use std::time::Duration;

use async_nats::jetstream::{AckKind, Message};
use bytes::Bytes;
use fjord_common::Error;
use fjord_common::functions::Functions;
use fjord_common::invocation::{self, Event, FinalStatus, Finished, Retrying, now_ns};
use fjord_common::queue::Queue;
use fjord_common::store::Store;
use futures::StreamExt;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// Retry events handled at once.
const CONCURRENCY: usize = 64;

pub async fn run(
    queue: Queue,
    store: Store,
    functions: Functions,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    let consumer = queue.retrier_consumer().await?;
    let messages = consumer
        .stream()
        .max_messages_per_batch(CONCURRENCY)
        .heartbeat(Duration::from_secs(5))
        .expires(Duration::from_secs(30))
        .messages()
        .await
        .map_err(Error::nats)?;
    info!("retrier started");
    let handled = messages
        .take_until(shutdown.cancelled_owned())
        .for_each_concurrent(CONCURRENCY, |message| {
            let (queue, store, functions) = (queue.clone(), store.clone(), functions.clone());
            async move {
                match message {
                    Ok(message) => handle(&queue, &store, &functions, message).await,
                    Err(e) => warn!(error = %e, "retrier pull interrupted"),
                }
            }
        });
    handled.await;
    info!("retrier stopped");
    Ok(())
}

async fn handle(queue: &Queue, store: &Store, functions: &Functions, message: Message) {
    if invocation::schema_version(message.headers.as_ref()) != invocation::SCHEMA_VERSION {
        let _ = message
            .ack_with(AckKind::Nak(Some(Duration::from_secs(5))))
            .await;
        return;
    }
    let (retrying, inline): (Retrying, Bytes) = match invocation::decode::<Event>(&message.payload)
    {
        Ok((Event::Retrying(r), inline)) => (*r, inline),
        Ok(_) | Err(_) => {
            warn!(subject = %message.subject, "not a retry event; terminating it");
            let _ = message.ack_with(AckKind::Term).await;
            return;
        }
    };
    let remaining = retrying.not_before_ns - now_ns();
    if remaining > 0 {
        let wait = Duration::from_nanos(remaining as u64);
        let _ = message.ack_with(AckKind::Nak(Some(wait))).await;
        return;
    }
    let call = &retrying.call;
    if overtaken(store, &retrying).await {
        info!(call.id = %call.call_id, function = %call.function, attempt = retrying.attempt, "late retry event of an overtaken attempt; dropped");
        let _ = message.double_ack().await;
        return;
    }
    let deployed = match functions.get(&call.function).await {
        Ok(spec) => spec.is_some(),
        Err(e) => {
            warn!(error = %e, "registry unavailable; trying again shortly");
            let _ = message
                .ack_with(AckKind::Nak(Some(Duration::from_secs(1))))
                .await;
            return;
        }
    };
    let published = if !deployed {
        info!(call.id = %call.call_id, function = %call.function, "function removed while the call waited to retry; cancelling it");
        let finished = cancelled(&retrying);
        queue
            .publish_event(Event::Finished(Box::new(finished)), Bytes::new())
            .await
    } else {
        let mut next = call.clone();
        next.first_attempt = retrying.attempt + 1;
        queue
            .publish_invocation(&next, &inline, &next.message_id())
            .await
    };
    match published {
        Ok(_) => {
            debug!(call.id = %call.call_id, function = %call.function, attempt = retrying.attempt + 1, "call back on its queue");
            if let Err(e) = message.double_ack().await {
                // Redelivered: the republish is de-duplicated by its message id.
                warn!(error = %e, "retrier ack failed");
            }
        }
        Err(e) => {
            warn!(error = %e, call.id = %call.call_id, function = %call.function, "could not put a call back on its queue; trying again shortly");
            let _ = message
                .ack_with(AckKind::Nak(Some(Duration::from_secs(1))))
                .await;
        }
    }
}

/// Whether the call's record has moved past this retry event (see the module's fence).
async fn overtaken(store: &Store, r: &Retrying) -> bool {
    match store.invocation(r.call.call_id).await {
        Ok(Some(row)) => row.is_final() || row.redrives > r.call.redrive as i32,
        Ok(None) => false,
        Err(e) => {
            warn!(error = %e, call.id = %r.call.call_id, function = %r.call.function, "cannot check the call's record; retrying it unchecked");
            false
        }
    }
}

fn cancelled(r: &Retrying) -> Finished {
    crate::worker::finished(
        &r.call,
        r.attempt,
        None,
        FinalStatus::Cancelled,
        503,
        format!("{} was removed", r.call.function),
    )
}
