//! The worker loop: pulls one function's consumer, runs each call through the function, keeps
//! the lease alive with in-progress acks while it runs (no execution time limit), publishes the
//! outcome and only then acknowledges the message. A call whose lease is lost is stopped and
//! leaves no outcome (see [`crate::lease`]).
//!
//! Retries (see `fjord_common::retry`): a retryable failure with attempts left is published as a
//! `retrying` event carrying the whole call, and the message is acknowledged; the control
//! process's retrier puts it back on the queue when its backoff is over. So a call waiting out
//! a backoff holds no slot of the function's consumer. A retryable failure on the last attempt
//! ends the call `dead`, with its request kept for a redrive.
//!
//! Shutdown: the loop stops pulling, hands back any message that still arrives, and lets running
//! calls finish within the grace period. Calls still running when it ends are abandoned: each is
//! handed back for immediate redelivery as the same attempt, and the interrupted run's outcome
//! is never published.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{AckKind, Message, consumer::PullConsumer};
use bytes::Bytes;
use fjord_common::cancel::{Cancelled, Cancels};
use fjord_common::invocation::{
    self, BodyRef, CallMeta, Event, FinalStatus, Finished, Retrying, SCHEMA_VERSION, now_ns,
};
use fjord_common::logs::LogWriter;
use fjord_common::otlp::{self, Tracer};
use fjord_common::queue::Queue;
use fjord_common::registry::{Change, Registry};
use fjord_common::retry::{RetryPolicy, parse_retry_after};
use fjord_common::stack::FunctionSpec;
use fjord_common::trace;
use fjord_common::{Error, FunctionName};
use fjord_functions::{Function, Request, Response};
use futures::StreamExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, error, info, info_span, warn};

use crate::lease::Lease;
use crate::runtime::output::OutputLog;
use crate::runtime::{self, Sandbox};

/// How long an open pull request waits for messages before it is renewed, at most. A message's
/// lease is counted from its pull request (see [`Lease`]), so a pull request lasts a quarter
/// of the lease at most.
const FETCH_EXPIRES: Duration = Duration::from_secs(2);

/// A call still running after this long is reported `running`. Faster calls go straight to
/// their outcome, which carries the attempt and start time anyway: at high rates this saves
/// one stream message (stored, delivered, acknowledged) per call.
const REPORT_START_AFTER: Duration = Duration::from_millis(25);

pub struct WorkerOptions {
    /// How long running calls may take to finish after shutdown begins.
    pub drain_grace: Duration,
    /// Where functions' files, homes and secrets live on this host (see [`runtime::Sandbox`]).
    pub work_dir: PathBuf,
    /// Started because the function had no worker: report the first call's cold start.
    pub cold_start: bool,
    /// Where the queue-wait and execution spans go (off by default).
    pub tracer: Tracer,
}

/// What every call handler of one worker shares.
struct Shared {
    queue: Queue,
    function: Arc<dyn Function>,
    name: FunctionName,
    /// The deployment this worker runs; calls accepted for an earlier one (the function was
    /// removed and deployed again) are cancelled, not run.
    incarnation: String,
    /// Executions allowed per call (the consumer delivers once more to record `dead`).
    max_attempts: u32,
    /// Deliveries the consumer allows per message.
    max_deliver: i64,
    retry: RetryPolicy,
    /// The consumer's lease length (see [`Lease`]).
    ack_wait: Duration,
    /// Fired when the drain grace is over: running calls stop and hand their message back.
    abandon: CancellationToken,
    /// Calls cancelled through the gateway, and the running ones to stop when they are.
    cancelled: Cancelled,
    /// Set until the first call starts, for a worker started from zero.
    cold_start: std::sync::atomic::AtomicBool,
    tracer: Tracer,
}

/// Why a worker could not run.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error(transparent)]
    Queue(#[from] Error),
    #[error(transparent)]
    Runtime(#[from] runtime::Error),
    #[error("function {0} is not deployed")]
    NotDeployed(FunctionName),
}

/// Runs the deployed function `name` until `shutdown` fires and the drain is over.
///
/// A worker's start lies on the path of every cold start, so what it needs from NATS before its
/// first pull (its definition and a watch on it, the cancellations so far, its consumer) is
/// asked for side by side, and the installation is taken to exist (see [`Queue::attach`]).
pub async fn run(
    queue: Queue,
    name: FunctionName,
    options: WorkerOptions,
    shutdown: CancellationToken,
) -> Result<(), WorkerError> {
    // Fired once the drain is over (or on any early return): only then may the runtime stop
    // the function's long-lived process.
    let runtime_done = CancellationToken::new();
    let _stop_runtime = runtime_done.clone().drop_guard();
    let (definition, cancelled, consumer) = tokio::try_join!(
        open_definition(&queue, &name),
        async {
            Cancels::open(&queue)
                .await?
                .follow(runtime_done.clone())
                .await
        },
        queue.function_consumer(&name),
    )?;
    let (spec, changes) = definition.ok_or_else(|| WorkerError::NotDeployed(name.clone()))?;
    let max_inflight = spec.max_inflight()? as usize;
    let sandbox = Sandbox::create(&options.work_dir, &spec)?;
    let output = OutputLog::new(LogWriter::new(&queue, &spec.name));
    crate::prepare::prepare(&queue, &spec, &sandbox).await?;
    let function = tokio::select! {
        function = runtime::start(&spec, &sandbox, output, runtime_done.clone()) => function?,
        _ = shutdown.cancelled() => return Ok(()),
    };
    let config = &consumer.cached_info().config;
    let max_deliver = config.max_deliver.max(2);
    let retry = RetryPolicy::for_spec(&spec)?;
    let max_attempts = retry.attempts.min((max_deliver - 1) as u32);
    let shared = Arc::new(Shared {
        queue: queue.clone(),
        function,
        name: spec.name.clone(),
        incarnation: spec.incarnation.clone(),
        max_attempts,
        max_deliver,
        retry,
        ack_wait: config.ack_wait,
        abandon: CancellationToken::new(),
        cancelled,
        cold_start: options.cold_start.into(),
        tracer: options.tracer.clone(),
    });
    // Pulling also stops when the definition changes or goes: this worker then finishes what
    // it runs and exits, and its supervisor starts one with the current definition.
    let stop_pulling = shutdown.child_token();
    let watch = follow_definition(changes, &spec, stop_pulling.clone());
    let secrets =
        crate::prepare::follow_secrets(&queue, &spec, &sandbox, stop_pulling.clone()).await?;
    let pings = answer_pings(&queue, &spec.name, stop_pulling.clone()).await?;
    info!(function = %spec.name, max_inflight, "worker started");

    let tracker = TaskTracker::new();
    pull(&consumer, &shared, max_inflight, &tracker, &stop_pulling).await;
    watch.abort();
    if let Some(secrets) = secrets {
        secrets.abort();
    }

    tracker.close();
    if tokio::time::timeout(options.drain_grace, tracker.wait())
        .await
        .is_err()
    {
        warn!(function = %spec.name, "drain grace over: handing unfinished calls back");
        shared.abandon.cancel();
        tracker.wait().await;
    }
    pings.abort();
    drop(shared);
    runtime_done.cancel();
    info!(function = %spec.name, "worker stopped");
    Ok(())
}

async fn pull(
    consumer: &PullConsumer,
    shared: &Arc<Shared>,
    max_inflight: usize,
    tracker: &TaskTracker,
    shutdown: &CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(max_inflight));
    let expires = FETCH_EXPIRES
        .min(shared.ack_wait / 4)
        .max(Duration::from_millis(100));
    loop {
        let first = tokio::select! {
            permit = slots.clone().acquire_owned() => permit.expect("semaphore never closed"),
            _ = shutdown.cancelled() => return,
        };
        let mut permit = Some(first);
        let want = slots.available_permits() + 1;
        let requested = tokio::time::Instant::now();
        let batch = consumer
            .fetch()
            .max_messages(want)
            .expires(expires)
            .messages()
            .await;
        let mut batch = match batch {
            Ok(b) => b,
            Err(e) => {
                warn!(error = %e, "pull request failed; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(500)) => continue,
                    _ = shutdown.cancelled() => return,
                }
            }
        };
        loop {
            let next = tokio::select! {
                next = batch.next() => next,
                _ = shutdown.cancelled() => {
                    // The pull request stays open on the server until it expires or has
                    // delivered what it asked for: hand back whatever it still delivers as
                    // unrun (no attempt spent) instead of letting it wait out the lease.
                    while let Some(Ok(message)) = batch.next().await {
                        hand_back_unrun(shared, &message).await;
                    }
                    return;
                }
            };
            match next {
                None => break,
                Some(Err(e)) => {
                    warn!(error = %e, "pull interrupted");
                    break;
                }
                Some(Ok(message)) => {
                    let slot = match permit.take() {
                        Some(p) => p,
                        None => slots
                            .clone()
                            .acquire_owned()
                            .await
                            .expect("semaphore never closed"),
                    };
                    let shared = shared.clone();
                    tracker.spawn(handle(shared, message, requested, slot));
                }
            }
        }
    }
}

/// Fires `stop` when the function's definition is no longer `spec` (updated or removed).
/// Changes to a function's definition, its current one first.
type Changes = std::pin::Pin<Box<dyn futures::Stream<Item = Result<Change, Error>> + Send>>;

/// The function's definition as the registry holds it (`None`: not deployed), and the watch on
/// it, which starts with that value: a change made while the worker starts is not missed.
async fn open_definition(
    queue: &Queue,
    name: &FunctionName,
) -> Result<Option<(FunctionSpec, Changes)>, Error> {
    let registry = Registry::open(queue).await?;
    let (spec, changes) = tokio::try_join!(registry.get(name), registry.watch_one(name))?;
    Ok(spec.map(|spec| (spec, Box::pin(changes) as Changes)))
}

/// Stops pulling when the definition the worker runs is replaced or removed.
fn follow_definition(
    mut changes: Changes,
    spec: &FunctionSpec,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let spec = spec.clone();
    tokio::spawn(async move {
        loop {
            let change = tokio::select! {
                change = changes.next() => change,
                _ = stop.cancelled() => return,
            };
            match change {
                Some(Ok(Change::Deployed(current))) if *current == spec => {}
                Some(Ok(change)) => {
                    let what = match change {
                        Change::Deployed(_) => "updated",
                        Change::Removed(_) => "removed",
                    };
                    info!(function = %spec.name, "definition {what}: this worker stops pulling");
                    stop.cancel();
                    return;
                }
                Some(Err(e)) => warn!(error = %e, "registry watch error"),
                None => return,
            }
        }
    })
}

/// Answers head counts on the function's ping subject (the gateway's `workers` figure).
async fn answer_pings(
    queue: &Queue,
    name: &FunctionName,
    shutdown: CancellationToken,
) -> Result<tokio::task::JoinHandle<()>, Error> {
    let mut sub = queue
        .client
        .subscribe(queue.names.ping(name))
        .await
        .map_err(Error::nats)?;
    let client = queue.client.clone();
    Ok(tokio::spawn(async move {
        loop {
            tokio::select! {
                msg = sub.next() => match msg {
                    Some(msg) => if let Some(reply) = msg.reply {
                        let _ = client.publish(reply, Bytes::from_static(b"1")).await;
                    },
                    None => return,
                },
                _ = shutdown.cancelled() => return,
            }
        }
    }))
}

/// Runs one delivery, pulled by a request sent at `requested`.
async fn handle(
    shared: Arc<Shared>,
    message: Message,
    requested: tokio::time::Instant,
    _slot: OwnedSemaphorePermit,
) {
    let version = invocation::schema_version(message.headers.as_ref());
    if version != SCHEMA_VERSION {
        warn!(
            subject = %message.subject,
            schema = version,
            understood = SCHEMA_VERSION,
            "message has a schema version this worker does not understand; leaving it for a worker that does"
        );
        let _ = message
            .ack_with(AckKind::Nak(Some(Duration::from_secs(5))))
            .await;
        return;
    }
    let delivered = match message.info() {
        Ok(info) => info.delivered.max(1) as u32,
        Err(e) => {
            error!(error = %e, "message without JetStream metadata");
            return;
        }
    };
    let (meta, inline): (CallMeta, Bytes) = match invocation::decode(&message.payload) {
        Ok(decoded) => decoded,
        Err(e) => {
            error!(error = %e, subject = %message.subject, "undecodable invocation; terminating it");
            let _ = message.ack_with(AckKind::Term).await;
            return;
        }
    };
    let attempt = meta.attempt(delivered);
    let span = info_span!("call", call.id = %meta.call_id, function = %shared.name, attempt);
    let lease = Lease::keep(&message, shared.ack_wait, requested);
    async move {
        if lease.is_lost() {
            // Delivered to a pull request older than the lease (this worker was paused or its
            // connection stalled): it may be running elsewhere already. Not acknowledged, not
            // nak'd (either would act on the other delivery).
            warn!("delivery arrived after its lease could have lapsed; left alone");
            return;
        }
        if !meta.incarnation.is_empty() && meta.incarnation != shared.incarnation {
            let error = format!(
                "accepted for an earlier deployment of {} that was removed",
                shared.name
            );
            info!(%error, "cancelling call");
            let finished = finished(&meta, attempt - 1, None, FinalStatus::Cancelled, 503, error);
            end_unrun(&shared, &lease, &message, finished).await;
            return;
        }
        if shared.cancelled.contains(meta.call_id) {
            info!("call cancelled before it ran");
            let error = "cancelled before it ran".to_owned();
            let finished = finished(&meta, attempt - 1, None, FinalStatus::Cancelled, 503, error);
            end_unrun(&shared, &lease, &message, finished).await;
            return;
        }
        // The last delivery the consumer allows is never run: it records the call `dead`, so
        // nothing stays stuck in the stream.
        if attempt > shared.max_attempts || i64::from(delivered) >= shared.max_deliver {
            let error = format!(
                "the worker was lost during each of {} attempts",
                attempt - 1
            );
            warn!(%error, "recording call as dead");
            let mut finished = finished(&meta, attempt - 1, None, FinalStatus::Dead, 503, error);
            finished.dead_letter = dead_letter(&shared, &meta, &inline).await;
            end_unrun(&shared, &lease, &message, finished).await;
            return;
        }
        let (mut finished, body) =
            match execute(&shared, &lease, &meta, inline.clone(), attempt).await {
                Attempt::Done(finished, body) => (*finished, body),
                Attempt::Abandoned => {
                    hand_back(&shared, &message, &meta, &inline, attempt).await;
                    return;
                }
                // Not acknowledged: the message is (or will be) delivered again.
                Attempt::Superseded => return,
            };
        let retryable = finished.status == FinalStatus::Failed
            && shared.retry.retryable(finished.function_status);
        let (event, body) = if retryable && attempt < shared.max_attempts {
            let retry_after = finished
                .headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case("retry-after"))
                .and_then(|(_, v)| parse_retry_after(v));
            let wait = shared.retry.wait(attempt, retry_after);
            info!(
                function_status = finished.function_status,
                wait_ms = wait.as_millis() as u64,
                "attempt failed; retrying after a backoff"
            );
            let retrying = Retrying {
                call: meta.clone(),
                attempt,
                started_ns: finished.started_ns.unwrap_or(finished.finished_ns),
                finished_ns: finished.finished_ns,
                not_before_ns: finished.finished_ns + wait.as_nanos() as i64,
                function_status: finished.function_status,
                error: finished.error.clone(),
            };
            (Event::Retrying(Box::new(retrying)), inline)
        } else {
            if retryable {
                finished.status = FinalStatus::Dead;
                finished.dead_letter = dead_letter(&shared, &meta, &inline).await;
            }
            (Event::Finished(Box::new(finished)), body)
        };
        if publish(&shared, &lease, event, body).await
            && let Err(e) = message.double_ack().await
        {
            // The outcome is published; a redelivery finds the call final or retrying.
            warn!(error = %e, "ack failed after the outcome was published");
        }
    }
    .instrument(span)
    .await
}

/// Records a call that ends without running (cancelled, or `dead`) and terminates its message
/// once the outcome is published.
async fn end_unrun(shared: &Shared, lease: &Lease, message: &Message, finished: Finished) {
    if publish(
        shared,
        lease,
        Event::Finished(Box::new(finished)),
        Bytes::new(),
    )
    .await
    {
        let _ = message.ack_with(AckKind::Term).await;
    }
}

/// Hands a call abandoned at the end of the drain grace back for immediate redelivery as the
/// same attempt: published again starting at `attempt`, then acknowledged, so the interrupted
/// run costs no attempt (a nak would count its delivery). The new message's id names the
/// original's stream sequence, so a worker that dies between the two steps is de-duplicated.
/// If NATS does not take it, the message is nak'd instead.
async fn hand_back(
    shared: &Shared,
    message: &Message,
    meta: &CallMeta,
    inline: &Bytes,
    attempt: u32,
) {
    let mut again = meta.clone();
    again.first_attempt = attempt;
    let seq = message
        .info()
        .map(|i| i.stream_sequence)
        .unwrap_or_default();
    let id = format!("{}.h{seq}", again.message_id());
    let publish = shared.queue.publish_invocation(&again, inline, &id);
    match tokio::time::timeout(Duration::from_secs(2), publish).await {
        Ok(Ok(_)) => {
            let _ = message.double_ack().await;
        }
        _ => {
            let _ = message.ack_with(AckKind::Nak(None)).await;
        }
    }
}

/// Hands back a message that arrived while the worker stops, before it ran: as the attempt it
/// would have been ([`hand_back`]). A nak would spend one of the call's deliveries, so a call
/// with one attempt could be recorded `dead` without ever running.
async fn hand_back_unrun(shared: &Shared, message: &Message) {
    let delivered = message
        .info()
        .map(|i| i.delivered.max(1) as u32)
        .unwrap_or(1);
    match invocation::decode::<CallMeta>(&message.payload) {
        Ok((meta, inline)) => {
            let attempt = meta.attempt(delivered);
            hand_back(shared, message, &meta, &inline, attempt).await;
        }
        Err(_) => {
            let _ = message.ack_with(AckKind::Nak(None)).await;
        }
    }
}

/// The request of a call about to be recorded `dead`, with its body moved out of band so it
/// outlives the call's messages and the call can be re-driven. `None` if the body could not be
/// stored (logged; that dead letter cannot be re-driven).
async fn dead_letter(shared: &Shared, meta: &CallMeta, inline: &Bytes) -> Option<CallMeta> {
    let mut request = meta.clone();
    if matches!(meta.body, BodyRef::Inline) && !inline.is_empty() {
        match shared.queue.store_request(meta.call_id, inline).await {
            Ok(body) => request.body = body,
            Err(e) => {
                error!(error = %e, "could not keep the request of a dead call; it cannot be re-driven");
                return None;
            }
        }
    }
    Some(request)
}

/// How one attempt ended.
enum Attempt {
    /// With this outcome (and response body) to publish.
    Done(Box<Finished>, Bytes),
    /// Stopped at the end of the drain grace: the message goes back to the queue.
    Abandoned,
    /// Stopped because the lease was lost: the call may run elsewhere, so this attempt leaves
    /// no trace.
    Superseded,
}

/// Runs one attempt while `lease` holds, as a span of the call's trace (a child of the
/// gateway's accept span, its id in the `traceparent` the function gets), the first attempt
/// after a queue-wait span.
async fn execute(
    shared: &Shared,
    lease: &Lease,
    meta: &CallMeta,
    inline: Bytes,
    attempt: u32,
) -> Attempt {
    let started_ns = now_ns();
    let span_id = trace::new_span_id();
    let traceparent = trace::child(&meta.traceparent, &span_id);
    let result = run_attempt(
        shared,
        lease,
        meta,
        inline,
        attempt,
        started_ns,
        traceparent,
    )
    .await;
    if shared.tracer.enabled()
        && let Some((trace_id, accept)) = trace::ids(&meta.traceparent)
    {
        let function = meta.function.to_string();
        let call = meta.call_id.to_string();
        let span = |name, kind, span_id: String, start_ns, error| otlp::Span {
            trace_id: trace_id.to_owned(),
            span_id,
            parent_span_id: Some(accept.to_owned()),
            name,
            kind,
            start_ns,
            end_ns: now_ns(),
            attributes: vec![
                ("fjord.call_id", call.clone().into()),
                ("fjord.function", function.clone().into()),
                ("fjord.attempt", attempt.into()),
            ],
            error,
        };
        if attempt == 1 {
            let mut wait = span(
                "fjord.queue",
                otlp::Kind::Internal,
                trace::new_span_id(),
                meta.start_time_ns,
                None,
            );
            wait.end_ns = started_ns;
            shared.tracer.record(wait);
        }
        let (error, status) = match &result {
            Attempt::Done(f, _) => (f.error.clone(), Some(f.function_status)),
            Attempt::Abandoned => (Some("abandoned at the end of the drain".into()), None),
            Attempt::Superseded => (Some("superseded: the lease was lost".into()), None),
        };
        let mut run = span(
            "fjord.execute",
            otlp::Kind::Consumer,
            span_id,
            started_ns,
            error,
        );
        if let Some(status) = status {
            run.attributes
                .push(("http.response.status_code", status.into()));
        }
        shared.tracer.record(run);
    }
    result
}

async fn run_attempt(
    shared: &Shared,
    lease: &Lease,
    meta: &CallMeta,
    inline: Bytes,
    attempt: u32,
    started_ns: i64,
    traceparent: Option<String>,
) -> Attempt {
    if shared
        .cold_start
        .swap(false, std::sync::atomic::Ordering::Relaxed)
    {
        let seconds = started_ns.saturating_sub(meta.start_time_ns) as f64 / 1e9;
        let _ = shared
            .queue
            .client
            .publish(
                shared.queue.names.cold_start(&shared.name),
                seconds.to_string().into(),
            )
            .await;
    }
    let started = Event::Started {
        call_id: meta.call_id,
        function: meta.function.clone(),
        attempt,
        created_ns: meta.start_time_ns,
        at_ns: started_ns,
    };
    let body = match shared.queue.load_body(&meta.body, inline).await {
        Ok(body) => body,
        Err(e) => {
            let error = format!("request body unavailable: {e}");
            error!(%error);
            let f = finished(
                meta,
                attempt,
                Some(started_ns),
                FinalStatus::Failed,
                503,
                error,
            );
            return Attempt::Done(Box::new(f), Bytes::new());
        }
    };
    let request = request_for(meta, body, attempt, shared.max_attempts, traceparent);
    let running = shared.cancelled.running(meta.call_id);
    let call = shared.function.call(request);
    tokio::pin!(call);
    let report_start = tokio::time::sleep(REPORT_START_AFTER);
    tokio::pin!(report_start);
    let mut start_reported = false;
    let response: Response = loop {
        tokio::select! {
            response = &mut call => break response,
            _ = &mut report_start, if !start_reported => {
                start_reported = true;
                if let Err(e) = shared.queue.publish_started(&started).await {
                    warn!(error = %e, "could not publish the start");
                }
            }
            _ = lease.lost() => {
                warn!("call stopped: its lease is lost; this attempt's outcome is fenced");
                return Attempt::Superseded;
            }
            _ = shared.abandon.cancelled() => return Attempt::Abandoned,
            _ = running.token.cancelled() => {
                // Dropping the call stops it: an exec call's process group is killed.
                info!("call cancelled while running; stopped");
                let error = "cancelled while running".to_owned();
                let f = finished(meta, attempt, Some(started_ns), FinalStatus::Cancelled, 503, error);
                return Attempt::Done(Box::new(f), Bytes::new());
            }
        }
    };
    let (status, error) = if (200..300).contains(&response.status) {
        (FinalStatus::Succeeded, None)
    } else {
        (
            FinalStatus::Failed,
            Some(
                response
                    .reason
                    .clone()
                    .unwrap_or_else(|| format!("function answered HTTP {}", response.status)),
            ),
        )
    };
    let mut f = finished(
        meta,
        attempt,
        Some(started_ns),
        status,
        response.status,
        String::new(),
    );
    f.error = error;
    f.headers = response.headers;
    Attempt::Done(Box::new(f), response.body)
}

pub(crate) fn finished(
    meta: &CallMeta,
    attempt: u32,
    started_ns: Option<i64>,
    status: FinalStatus,
    function_status: u16,
    error: String,
) -> Finished {
    let mut f = Finished::ended(
        meta.call_id,
        meta.function.clone(),
        attempt,
        meta.start_time_ns,
        status,
        error,
    );
    f.started_ns = started_ns;
    f.function_status = function_status;
    f.callback_url = meta.callback_url.clone();
    f.request_object = match &meta.body {
        BodyRef::Stored { object, .. } => Some(object.clone()),
        BodyRef::Inline => None,
    };
    f.traceparent = (!meta.traceparent.is_empty()).then(|| meta.traceparent.clone());
    f
}

/// The request as the function sees it: the caller's headers plus `X-Call-Id`, `X-Start-Time`,
/// `X-Retry` / `X-Retry-Max` and the attempt's `traceparent` (replacing any the caller sent).
fn request_for(
    meta: &CallMeta,
    body: Bytes,
    attempt: u32,
    max_attempts: u32,
    traceparent: Option<String>,
) -> Request {
    let mut headers: Vec<(String, String)> = meta
        .headers
        .iter()
        .filter(|(k, _)| {
            let replaced = k.eq_ignore_ascii_case("x-call-id")
                || k.eq_ignore_ascii_case("x-start-time")
                || k.eq_ignore_ascii_case("x-retry")
                || k.eq_ignore_ascii_case("x-retry-max")
                || (k.eq_ignore_ascii_case("traceparent") && !meta.traceparent.is_empty());
            !replaced
        })
        .cloned()
        .collect();
    if let Some(traceparent) =
        traceparent.or_else(|| (!meta.traceparent.is_empty()).then(|| meta.traceparent.clone()))
    {
        headers.push(("traceparent".into(), traceparent));
    }
    headers.push(("X-Call-Id".into(), meta.call_id.to_string()));
    headers.push(("X-Start-Time".into(), meta.start_time_ns.to_string()));
    headers.push(("X-Retry".into(), attempt.to_string()));
    headers.push(("X-Retry-Max".into(), max_attempts.to_string()));
    Request {
        method: meta.method.clone(),
        path: meta.path.clone(),
        query: meta.query.clone(),
        headers,
        body,
    }
}

/// Publishes the outcome, retrying while NATS is briefly away and the lease holds. `false`
/// when it could not be published before the lease was lost or the drain grace ended: the
/// message is then left for redelivery.
async fn publish(shared: &Shared, lease: &Lease, event: Event, body: Bytes) -> bool {
    let kind = event.kind();
    let mut delay = Duration::from_millis(100);
    for _ in 0..8 {
        if lease.is_lost() {
            warn!(
                event = kind,
                "lease lost before the outcome was published; it is fenced"
            );
            return false;
        }
        match shared
            .queue
            .publish_event(event.clone(), body.clone())
            .await
        {
            Ok(_) => {
                tracing::debug!(event = kind, "outcome published");
                return true;
            }
            Err(e) => {
                warn!(error = %e, "publishing the outcome failed; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = shared.abandon.cancelled() => return false,
                    _ = lease.lost() => {}
                }
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
    false
}
