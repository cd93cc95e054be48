//! The recorder: consumes every message of the installation's stream (invocations and outcome
//! events) and applies them to PostgreSQL in batches, one transaction per batch, acknowledging
//! only after the commit. Reading and writing are two tasks: while one batch is written, the
//! next messages are parsed, and each outcome with a callback URL is handed to this process's
//! dispatcher as soon as it is read, then again once the write has decided whether it made
//! the call final (which gives the call a pending callback in the same transaction). While
//! PostgreSQL is away the writer holds its batch and retries, and the reader stops at
//! [`READ_AHEAD`] messages; the stream keeps everything meanwhile, so intake never depends on
//! the database.
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
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::dispatcher::Handoff;
use crate::metrics::ControlMetrics;

/// Messages applied in one transaction at most.
const MAX_BATCH: usize = 2000;
/// Messages read ahead of the writer at most (while it writes, the next ones are parsed and
/// their callbacks handed over).
const READ_AHEAD: usize = 2 * MAX_BATCH;

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
    // Retrying a failing write stops this long after `shutdown`; what is left is handed back.
    let give_up = CancellationToken::new();
    tokio::spawn({
        let (shutdown, give_up) = (shutdown.clone(), give_up.clone());
        async move {
            shutdown.cancelled().await;
            tokio::time::sleep(DRAIN_LIMIT).await;
            give_up.cancel();
        }
    });
    let (read_tx, read_rx) = mpsc::unbounded_channel();
    let room = Arc::new(Semaphore::new(READ_AHEAD));
    let writer = tokio::spawn(write(
        queue.clone(),
        store,
        handoff.clone(),
        metrics,
        read_rx,
        give_up.clone(),
    ));
    info!("recorder started");
    loop {
        let chunk = tokio::select! {
            chunk = chunks.next() => chunk,
            _ = shutdown.cancelled() => break,
        };
        let Some(chunk) = chunk else { break };
        let read = read(&queue, handoff.as_ref(), &room, ok_messages(chunk)).await;
        if !pass_on(&read_tx, read, &give_up).await {
            break;
        }
    }
    // Drain: what has already been delivered to this recorder, until the pull goes quiet.
    while !give_up.is_cancelled()
        && let Ok(Some(chunk)) = tokio::time::timeout(DRAIN_QUIET, chunks.next()).await
    {
        let read = read(&queue, handoff.as_ref(), &room, ok_messages(chunk)).await;
        if !pass_on(&read_tx, read, &give_up).await {
            break;
        }
    }
    drop(read_tx);
    let _ = writer.await;
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

/// Messages read and parsed, not yet written.
#[derive(Default)]
struct Read {
    batch: Batch,
    /// Stored bodies to delete once the batch is written.
    objects: Vec<String>,
    /// The messages to acknowledge once it is written.
    messages: Vec<Message>,
    /// Their share of [`READ_AHEAD`].
    room: Option<OwnedSemaphorePermit>,
}

impl Read {
    fn extend(&mut self, other: Read) {
        let (batch, o) = (&mut self.batch, other.batch);
        batch.invoked.extend(o.invoked);
        batch.started.extend(o.started);
        batch.finished.extend(o.finished);
        batch.retried.extend(o.retried);
        batch.dead_letters.extend(o.dead_letters);
        self.objects.extend(other.objects);
        self.messages.extend(other.messages);
        match (&mut self.room, other.room) {
            (Some(room), Some(more)) => room.merge(more),
            (room, more) => *room = room.take().or(more),
        }
    }

    /// Hands the messages back for immediate redelivery (to the next recorder).
    async fn hand_back(&self) {
        for message in &self.messages {
            let _ = message.ack_with(AckKind::Nak(None)).await;
        }
    }
}

/// Parses a chunk (once the writer is few enough messages behind); each outcome with a
/// callback goes to the dispatcher straight away, so its first attempt need not wait for the
/// write.
async fn read(
    queue: &Queue,
    handoff: Option<&Handoff>,
    room: &Arc<Semaphore>,
    messages: Vec<Message>,
) -> Read {
    let permits = u32::try_from(messages.len().clamp(1, READ_AHEAD)).unwrap_or(1);
    let mut read = Read {
        room: room.clone().acquire_many_owned(permits).await.ok(),
        ..Read::default()
    };
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
            add_event(
                queue,
                &mut read.batch,
                &mut read.objects,
                &message.payload,
                seq,
            )
            .await
        } else {
            invocation::decode::<CallMeta>(&message.payload)
                .map(|(meta, _)| read.batch.invoked.push((meta, seq)))
        };
        match parsed {
            Ok(()) => read.messages.push(message),
            Err(e) => {
                error!(error = %e, subject = %message.subject, "unrecordable message; terminating it");
                let _ = message.ack_with(AckKind::Term).await;
            }
        }
    }
    if let Some(handoff) = handoff {
        for (finished, body, seq) in &read.batch.finished {
            handoff.read(finished, body, *seq);
        }
    }
    read
}

/// Passes a chunk to the writer; `false` once the writer is gone or gave up.
async fn pass_on(
    tx: &mpsc::UnboundedSender<Read>,
    read: Read,
    give_up: &CancellationToken,
) -> bool {
    if give_up.is_cancelled() {
        read.hand_back().await;
        return false;
    }
    match tx.send(read) {
        Ok(()) => true,
        Err(mpsc::error::SendError(read)) => {
            read.hand_back().await;
            false
        }
    }
}

/// Writes what was read, one transaction per batch: all the chunks waiting, up to
/// [`MAX_BATCH`] messages. Once a write gives up, the rest is handed back unwritten.
async fn write(
    queue: Queue,
    store: Store,
    handoff: Option<Handoff>,
    metrics: Arc<ControlMetrics>,
    mut rx: mpsc::UnboundedReceiver<Read>,
    give_up: CancellationToken,
) {
    let mut next = None;
    let mut gave_up = false;
    loop {
        let mut read = match next.take() {
            Some(read) => read,
            None => match rx.recv().await {
                Some(read) => read,
                None => break,
            },
        };
        if gave_up {
            read.hand_back().await;
            continue;
        }
        while let Ok(more) = rx.try_recv() {
            if read.messages.len() + more.messages.len() > MAX_BATCH {
                next = Some(more);
                break;
            }
            read.extend(more);
        }
        gave_up = !record(&queue, &store, handoff.as_ref(), &metrics, read, &give_up).await;
    }
}

/// Writes one batch; `false` when `give_up` interrupted the retries, in which case its
/// messages are handed back (nak) for immediate redelivery.
async fn record(
    queue: &Queue,
    store: &Store,
    handoff: Option<&Handoff>,
    metrics: &ControlMetrics,
    read: Read,
    give_up: &CancellationToken,
) -> bool {
    let Read {
        batch,
        objects,
        messages: applied,
        ..
    } = &read;
    let mut delay = Duration::from_millis(100);
    let mut held_since = std::time::Instant::now();
    loop {
        let started = std::time::Instant::now();
        match store.apply(batch, handoff.map(Handoff::lease)).await {
            Ok(recorded) => {
                let apply_ms = started.elapsed().as_secs_f64() * 1000.0;
                let won: HashSet<(CallId, u64)> = recorded.iter().copied().collect();
                if let Some(handoff) = handoff {
                    for (finished, body, seq) in &batch.finished {
                        let recorded = won.contains(&(finished.call_id, *seq));
                        handoff.decided(finished, body, *seq, recorded);
                    }
                }
                count(metrics, batch, &won, applied.len(), started.elapsed());
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
                    _ = give_up.cancelled() => {
                        read.hand_back().await;
                        return false;
                    }
                }
                delay = (delay * 2).min(Duration::from_secs(5));
                // Still holding the batch: keep its lease, so no other recorder takes it up.
                if held_since.elapsed() >= CONTROL_ACK_WAIT / 3 {
                    for message in applied {
                        let _ = message.ack_with(AckKind::Progress).await;
                    }
                    held_since = std::time::Instant::now();
                }
            }
        }
    }
    for message in applied {
        if let Err(e) = message.ack().await {
            warn!(error = %e, "recorder ack failed; the message will be applied again");
        }
    }
    for object in objects {
        if let Err(e) = queue.delete_object(object).await {
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
