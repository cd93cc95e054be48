//! The recorder: consumes every message of the installation's stream (invocations and outcome
//! events) and applies them to PostgreSQL in batches, one transaction per batch, acknowledging
//! only after the commit. A call it makes final with a callback URL gets a pending callback in
//! the same write, handed straight to this process's dispatcher when there is one. While PostgreSQL is away it holds its batch and retries; the stream
//! keeps everything meanwhile, so intake never depends on the database.
//!
//! On shutdown it first applies what it has already been handed (until the pull goes quiet,
//! bounded by [`DRAIN_LIMIT`]); what it cannot apply it hands back for immediate redelivery, so
//! the next recorder does not wait out the lease.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{AckKind, Message};
use bytes::Bytes;
use fjord_common::CallId;
use fjord_common::invocation::{self, BodyRef, CallMeta, Event, SCHEMA_VERSION};
use fjord_common::queue::{CONTROL_ACK_WAIT, Queue};
use fjord_common::store::{Batch, Started, Store};
use futures::StreamExt;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::dispatcher::Handoff;
use crate::metrics::ControlMetrics;

/// Messages applied in one transaction at most.
const MAX_BATCH: usize = 2000;

/// How long a stopping recorder keeps applying messages already delivered to it.
const DRAIN_LIMIT: Duration = Duration::from_secs(5);
/// The pull counts as quiet when nothing arrives for this long.
const DRAIN_QUIET: Duration = Duration::from_millis(200);

pub async fn run(
    queue: Queue,
    store: Store,
    handoff: Option<Handoff>,
    metrics: Arc<ControlMetrics>,
    shutdown: CancellationToken,
) -> Result<(), fjord_common::Error> {
    let consumer = queue.recorder_consumer().await?;
    let messages = consumer
        .stream()
        .max_messages_per_batch(MAX_BATCH)
        .heartbeat(Duration::from_secs(5))
        .expires(Duration::from_secs(30))
        .messages()
        .await
        .map_err(fjord_common::Error::nats)?;
    let mut chunks = messages.ready_chunks(MAX_BATCH);
    info!("recorder started");
    loop {
        let chunk = tokio::select! {
            chunk = chunks.next() => chunk,
            _ = shutdown.cancelled() => break,
        };
        let Some(chunk) = chunk else { break };
        if !record(
            &queue,
            &store,
            handoff.as_ref(),
            &metrics,
            ok_messages(chunk),
            &shutdown,
        )
        .await
        {
            break;
        }
    }
    // Drain: a short, bounded grace of its own, since `shutdown` has already fired.
    let drain = CancellationToken::new();
    let deadline = tokio::time::Instant::now() + DRAIN_LIMIT;
    let stop_drain = drain.clone();
    tokio::spawn(async move {
        tokio::time::sleep_until(deadline).await;
        stop_drain.cancel();
    });
    while let Ok(Some(chunk)) = tokio::time::timeout(DRAIN_QUIET, chunks.next()).await {
        if !record(
            &queue,
            &store,
            handoff.as_ref(),
            &metrics,
            ok_messages(chunk),
            &drain,
        )
        .await
        {
            break;
        }
    }
    info!("recorder stopped");
    Ok(())
}

fn ok_messages(
    chunk: Vec<Result<Message, async_nats::jetstream::consumer::pull::MessagesError>>,
) -> Vec<Message> {
    chunk
        .into_iter()
        .filter_map(|m| {
            m.map_err(|e| warn!(error = %e, "recorder pull interrupted"))
                .ok()
        })
        .collect()
}

/// Applies one chunk; `false` when `shutdown` interrupted the retries, in which case the
/// chunk's messages are handed back (nak) for immediate redelivery.
async fn record(
    queue: &Queue,
    store: &Store,
    handoff: Option<&Handoff>,
    metrics: &ControlMetrics,
    messages: Vec<Message>,
    shutdown: &CancellationToken,
) -> bool {
    let mut batch = Batch::default();
    let mut objects = Vec::new();
    let mut applied = Vec::with_capacity(messages.len());
    for message in messages {
        if invocation::schema_version(message.headers.as_ref()) != SCHEMA_VERSION {
            warn!(subject = %message.subject, "message has a schema version this recorder does not understand; leaving it");
            let _ = message
                .ack_with(AckKind::Nak(Some(Duration::from_secs(5))))
                .await;
            continue;
        }
        let seq = message.info().map(|i| i.stream_sequence).unwrap_or(0);
        let is_event = message
            .subject
            .as_str()
            .starts_with(&format!("{}.event.", queue.names.prefix()));
        let parsed = if is_event {
            add_event(queue, &mut batch, &mut objects, &message.payload, seq).await
        } else {
            invocation::decode::<CallMeta>(&message.payload)
                .map(|(meta, _)| batch.invoked.push((meta, seq)))
        };
        match parsed {
            Ok(()) => applied.push(message),
            Err(e) => {
                error!(error = %e, subject = %message.subject, "unrecordable message; terminating it");
                let _ = message.ack_with(AckKind::Term).await;
            }
        }
    }
    let mut delay = Duration::from_millis(100);
    let mut held_since = std::time::Instant::now();
    loop {
        let started = std::time::Instant::now();
        match store.apply(&batch, handoff.map(Handoff::lease)).await {
            Ok(recorded) => {
                let apply_ms = started.elapsed().as_secs_f64() * 1000.0;
                let won: HashSet<(CallId, u64)> = recorded.iter().copied().collect();
                if let Some(handoff) = handoff {
                    hand_over(handoff, &batch, &won);
                }
                count(metrics, &batch, &won, applied.len(), started.elapsed());
                debug!(
                    messages = applied.len(),
                    finals = recorded.len(),
                    apply_ms,
                    "batch recorded"
                );
                let late = batch.finished.len() - recorded.len();
                if late > 0 {
                    debug!(late, "outcomes for calls already final were not recorded");
                }
                break;
            }
            Err(e) => {
                warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "recording a batch failed; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = shutdown.cancelled() => {
                        for message in &applied {
                            let _ = message.ack_with(AckKind::Nak(None)).await;
                        }
                        return false;
                    }
                }
                delay = (delay * 2).min(Duration::from_secs(5));
                // Still holding the batch: keep its lease, so no other recorder takes it up.
                if held_since.elapsed() >= CONTROL_ACK_WAIT / 3 {
                    for message in &applied {
                        let _ = message.ack_with(AckKind::Progress).await;
                    }
                    held_since = std::time::Instant::now();
                }
            }
        }
    }
    for message in &applied {
        if let Err(e) = message.ack().await {
            warn!(error = %e, "recorder ack failed; the message will be applied again");
        }
    }
    for object in objects {
        if let Err(e) = queue.delete_object(&object).await {
            warn!(error = %e, object, "could not delete a stored body");
        }
    }
    true
}

/// Counts what an applied batch recorded: the calls it made final (not late outcomes of
/// calls already final), first attempts' queue waits, retries scheduled.
fn count(
    metrics: &ControlMetrics,
    batch: &Batch,
    won: &HashSet<(CallId, u64)>,
    messages: usize,
    took: Duration,
) {
    metrics.batch_size.observe(&[], messages as f64);
    metrics.batch_seconds.observe(&[], took.as_secs_f64());
    for (finished, _, seq) in &batch.finished {
        if won.contains(&(finished.call_id, *seq)) {
            metrics.finished(finished);
            if let (1, Some(started)) = (finished.attempt, finished.started_ns) {
                let wait = (started - finished.created_ns).max(0) as f64 / 1e9;
                metrics
                    .queue_wait
                    .observe(&[finished.function.as_str()], wait);
            }
        }
    }
    for retrying in &batch.retried {
        metrics.retries.inc(&[retrying.call.function.as_str()]);
    }
}

/// Hands the dispatcher the callbacks of the calls this batch made final.
fn hand_over(handoff: &Handoff, batch: &Batch, won: &HashSet<(CallId, u64)>) {
    for (finished, body, seq) in &batch.finished {
        if finished.callback_url.is_some() && won.contains(&(finished.call_id, *seq)) {
            handoff.send(finished, body, *seq);
        }
    }
}

async fn add_event(
    queue: &Queue,
    batch: &mut Batch,
    objects: &mut Vec<String>,
    payload: &Bytes,
    seq: u64,
) -> Result<(), fjord_common::Error> {
    let (event, inline): (Event, Bytes) = invocation::decode(payload)?;
    match event {
        Event::Started {
            call_id,
            function,
            attempt,
            created_ns,
            at_ns,
        } => batch.started.push(Started {
            call_id,
            function: function.to_string(),
            attempt,
            created_ns,
            at_ns,
        }),
        Event::Retrying(retrying) => batch.retried.push(*retrying),
        Event::Finished(mut finished) => {
            if let Some(mut request) = finished.dead_letter.take() {
                match queue.load_body(&request.body, Bytes::new()).await {
                    Ok(body) => {
                        if let BodyRef::Stored { object, .. } = &request.body {
                            objects.push(object.clone());
                        }
                        request.body = BodyRef::Inline;
                        batch.dead_letters.push((request, body.to_vec()));
                    }
                    // Already kept by an earlier delivery of this event.
                    Err(e) => {
                        warn!(error = %e, call.id = %finished.call_id, function = %finished.function, "dead call's request unavailable")
                    }
                }
            }
            let body = match queue.load_body(&finished.body, inline).await {
                Ok(body) => body.to_vec(),
                Err(e) => {
                    // Already moved into PostgreSQL by an earlier delivery of this event.
                    warn!(error = %e, call.id = %finished.call_id, function = %finished.function, "stored result unavailable");
                    Vec::new()
                }
            };
            if let BodyRef::Stored { object, .. } = &finished.body {
                objects.push(object.clone());
            }
            if let Some(object) = &finished.request_object {
                objects.push(object.clone());
            }
            batch.finished.push((*finished, body, seq));
        }
    }
    Ok(())
}
