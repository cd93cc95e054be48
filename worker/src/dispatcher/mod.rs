//! The callback dispatcher: POSTs each final call's result to its `X-Callback-Url` in
//! OpenFaaS's format, signed (Standard Webhooks), retried with backoff, every attempt logged.
//!
//! Callbacks reach it two ways: the recorder in the same process hands over each outcome as
//! it reads it from the stream, so the first attempt starts within milliseconds of the
//! function's finish, while the outcome is still being written (see [`early`]); the write
//! makes the callback `pending` already leased to this dispatcher. And a poll takes due
//! callbacks nobody holds — retries whose backoff is over, redeliveries, and callbacks a dispatcher that died was
//! holding. A callback waiting out its backoff is only a row: it holds no memory, no lease and
//! no slot.
//!
//! Concurrency is bounded per host name and overall. Each host also has a queue in memory,
//! sized from how long its attempts take so that nothing waits in it longer than a quarter of
//! the lease: a fast receiver gets a deep queue, a slow or dead one a short queue. Beyond that
//! a host's callbacks stay in PostgreSQL (the poll skips full hosts), so callbacks to other
//! hosts never wait behind a slow one.

mod deliver;
mod early;
mod journal;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use fjord_common::CallId;
use fjord_common::callback::{Networks, Policy, Signer};
use fjord_common::functions::Functions;
use fjord_common::invocation::{FinalStatus, Finished};
use fjord_common::retry::RetryPolicy;
use fjord_common::store::Store;
use fjord_common::store::callbacks::{Attempt, Callback, host_of};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::metrics::ControlMetrics;
use uuid::Uuid;

/// The dispatcher's settings (`FJORD_CALLBACK_*`).
#[derive(Clone, Debug)]
pub struct DispatchConfig {
    pub signer: Signer,
    pub networks: Networks,
    /// Attempts in flight at once, overall.
    pub concurrency: usize,
    /// Attempts in flight at once to one host name.
    pub host_concurrency: usize,
    /// How long a dispatcher holds a callback before another may take it (it must outlast one
    /// attempt plus the wait behind its host's queue).
    pub lease: Duration,
    /// How often due callbacks are looked for.
    pub poll_interval: Duration,
    /// Where delivery spans go (OTLP, off unless configured).
    pub tracer: fjord_common::otlp::Tracer,
}

impl Default for DispatchConfig {
    fn default() -> Self {
        DispatchConfig {
            signer: Signer::default(),
            networks: Networks::default(),
            concurrency: 256,
            host_concurrency: 16,
            lease: Duration::from_secs(60),
            poll_interval: Duration::from_millis(250),
            tracer: Default::default(),
        }
    }
}

/// How the recorder hands outcomes with a callback to this process's dispatcher.
#[derive(Clone)]
pub struct Handoff {
    tx: mpsc::UnboundedSender<Handed>,
    lease: Uuid,
    lease_for: Duration,
}

/// What the recorder hands over, in stream order.
enum Handed {
    /// An outcome just read from the stream, not yet recorded; `attempt` is false for one that
    /// must wait for the write (it still makes the call's other outcomes wait).
    Read { callback: Callback, attempt: bool },
    /// Whether the write made that outcome (`webhook_id` names it) the call's; if so the
    /// callback is now pending under this dispatcher's lease.
    Decided {
        call_id: CallId,
        webhook_id: String,
        recorded: Option<Callback>,
    },
}

impl Handoff {
    /// The lease the recorder writes with a pending callback.
    pub fn lease(&self) -> (Uuid, Duration) {
        (self.lease, self.lease_for)
    }

    /// Hands over an outcome the recorder has read (`final_seq` is its stream sequence) and
    /// will write next. A cancellation is left to the write: a running call's is published
    /// twice (by whoever cancelled it and by its worker), and with two control processes each
    /// could read one of them.
    pub fn read(&self, finished: &Finished, body: &[u8], final_seq: u64) {
        if let Some(callback) = self.callback(finished, body, final_seq) {
            let attempt = finished.status != FinalStatus::Cancelled;
            self.send(Handed::Read { callback, attempt });
        }
    }

    /// Tells whether the write made this outcome the call's, leaving its callback pending
    /// under [`Handoff::lease`].
    pub fn decided(&self, finished: &Finished, body: &[u8], final_seq: u64, recorded: bool) {
        if finished.callback_url.is_none() {
            return;
        }
        self.send(Handed::Decided {
            call_id: finished.call_id,
            webhook_id: fjord_common::callback::webhook_id(finished.call_id, final_seq as i64),
            recorded: recorded
                .then(|| self.callback(finished, body, final_seq))
                .flatten(),
        });
    }

    fn send(&self, handed: Handed) {
        // A closed channel means the dispatcher stopped; its lease runs out and another takes it.
        let _ = self.tx.send(handed);
    }

    fn callback(&self, finished: &Finished, body: &[u8], final_seq: u64) -> Option<Callback> {
        let url = finished.callback_url.as_ref()?;
        Some(Callback {
            call_id: finished.call_id,
            function: finished.function.to_string(),
            host: host_of(url).unwrap_or_default(),
            url: url.clone(),
            status: finished.status.as_str().to_owned(),
            function_status: finished.function_status,
            headers: finished.headers.clone(),
            body: bytes::Bytes::copy_from_slice(body),
            start_time_ns: finished.created_ns,
            duration_seconds: finished
                .started_ns
                .map_or(0.0, |s| (finished.finished_ns - s) as f64 / 1e9),
            traceparent: finished.traceparent.clone(),
            webhook_id: fjord_common::callback::webhook_id(finished.call_id, final_seq as i64),
            call_attempts: finished.attempt,
            attempts: 0,
            round_at: chrono::Utc::now(),
            lease: self.lease,
        })
    }
}

/// Callbacks held in memory at most (queued behind their hosts), whatever the hosts.
const MAX_BUFFERED: usize = 20_000;
/// Callbacks one poll takes at most; a full poll is followed by another at once.
const POLL_BATCH: usize = 2_000;

/// One host's share of the dispatcher.
#[derive(Default)]
struct Host {
    running: usize,
    waiting: VecDeque<Queued>,
}

/// A callback waiting for a slot.
struct Queued {
    callback: Callback,
    /// Read from the stream and not yet known to be recorded (see [`early`]).
    early: bool,
}

/// An attempt that ended.
struct Ended {
    host: String,
    seconds: f64,
    attempt: Attempt,
    early: bool,
}

pub struct Dispatcher {
    store: Store,
    functions: Functions,
    config: DispatchConfig,
    client: reqwest::Client,
    lease: Uuid,
    rx: mpsc::UnboundedReceiver<Handed>,
    metrics: Arc<ControlMetrics>,
}

/// Creates the dispatcher and the handoff its recorder uses.
pub fn new(
    store: Store,
    functions: Functions,
    config: DispatchConfig,
    metrics: Arc<ControlMetrics>,
) -> Result<(Dispatcher, Handoff), fjord_common::Error> {
    if config.signer.is_empty() {
        warn!("FJORD_CALLBACK_SECRET is not set: callbacks are sent unsigned");
    }
    let client = deliver::client(&config)?;
    let (tx, rx) = mpsc::unbounded_channel();
    let lease = Uuid::new_v4();
    let handoff = Handoff {
        tx,
        lease,
        lease_for: config.lease,
    };
    Ok((
        Dispatcher {
            store,
            functions,
            config,
            client,
            lease,
            rx,
            metrics,
        },
        handoff,
    ))
}

impl Dispatcher {
    /// Delivers until `shutdown`; then hands back what it holds and lets attempts in flight
    /// finish (bounded by the longest attempt timeout allowed, 10 s by default).
    pub async fn run(mut self, shutdown: CancellationToken) {
        let (journal, journal_task) = journal::start(self.store.clone());
        let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Ended>();
        let tracker = TaskTracker::new();
        let shared = Arc::new(Shared {
            client: self.client.clone(),
            signer: self.config.signer.clone(),
            networks: self.config.networks.clone(),
            functions: self.functions.clone(),
            metrics: self.metrics.clone(),
            tracer: self.config.tracer.clone(),
        });
        let mut state = State {
            hosts: HashMap::new(),
            pace: HashMap::new(),
            running: 0,
            buffered: 0,
            released: Vec::new(),
            early: early::Early::default(),
            journal,
        };
        let (polled_tx, mut polled_rx) = mpsc::unbounded_channel::<(Vec<Callback>, bool)>();
        let mut polling = false;
        let mut tick = tokio::time::interval(self.config.poll_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        info!(lease = %self.lease, "callback dispatcher started");
        loop {
            tokio::select! {
                Some(handed) = self.rx.recv() => {
                    self.take(&mut state, handed);
                    self.pump_all(&mut state, &shared, &tracker, &done_tx);
                }
                Some(ended) = done_rx.recv() => {
                    state.ended(ended);
                    self.pump_all(&mut state, &shared, &tracker, &done_tx);
                }
                // The poll runs as its own task, so callbacks handed over meanwhile start at once.
                _ = tick.tick(), if !polling => {
                    self.release_later(&mut state);
                    polling = self.poll(&state, &polled_tx);
                }
                Some((claimed, full)) = polled_rx.recv() => {
                    polling = false;
                    for callback in claimed {
                        self.admit(&mut state, callback);
                    }
                    if full {
                        tick.reset_immediately();
                    }
                    self.pump_all(&mut state, &shared, &tracker, &done_tx);
                }
                _ = shutdown.cancelled() => break,
            }
        }
        // Hand back what waits here and is recorded (an outcome not yet recorded is written
        // by the next recorder, under its dispatcher's lease), then let attempts in flight end.
        self.rx.close();
        while let Ok(handed) = self.rx.try_recv() {
            if let Handed::Decided {
                call_id,
                webhook_id,
                recorded,
            } = handed
                && let Some(callback) = state.decided(call_id, &webhook_id, recorded)
            {
                state.released.push(callback);
            }
        }
        for host in state.hosts.values_mut() {
            for queued in host.waiting.drain(..) {
                if !queued.early || state.early.recorded(&queued.callback) {
                    state.released.push(queued.callback);
                }
            }
        }
        self.release(&mut state).await;
        tracker.close();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(12);
        loop {
            tokio::select! {
                Some(ended) = done_rx.recv() => state.ended(ended),
                _ = tracker.wait() => break,
                _ = tokio::time::sleep_until(deadline) => {
                    warn!("callback attempts still in flight at shutdown; their leases will run out");
                    break;
                }
            }
        }
        while let Ok(ended) = done_rx.try_recv() {
            state.ended(ended);
        }
        drop(state);
        let _ = journal_task.await;
        info!("callback dispatcher stopped");
    }

    /// Takes what the recorder hands over: an outcome just read is attempted at once when
    /// [`early::Early`] allows it; a recorded one that was not is queued now.
    fn take(&self, state: &mut State, handed: Handed) {
        match handed {
            // One not attempted now (a cancellation, or no room) still makes the call's
            // other outcomes wait for its decision.
            Handed::Read { callback, attempt } => {
                let cap = self.host_queue_cap(state, &callback.host);
                let host = state.hosts.entry(callback.host.clone()).or_default();
                if attempt
                    && host.waiting.len() < cap
                    && state.buffered < MAX_BUFFERED
                    && state.early.admit(&callback)
                {
                    host.waiting.push_back(Queued {
                        callback,
                        early: true,
                    });
                    state.buffered += 1;
                } else {
                    state.early.hold(&callback);
                }
            }
            Handed::Decided {
                call_id,
                webhook_id,
                recorded,
            } => {
                if let Some(callback) = state.decided(call_id, &webhook_id, recorded) {
                    self.admit(state, callback);
                }
            }
        }
    }

    /// Queues a recorded callback under its host, or hands it back when the host's queue is full.
    fn admit(&self, state: &mut State, callback: Callback) {
        let cap = self.host_queue_cap(state, &callback.host);
        let host = state.hosts.entry(callback.host.clone()).or_default();
        if host.waiting.len() >= cap || state.buffered >= MAX_BUFFERED {
            state.released.push(callback);
            return;
        }
        host.waiting.push_back(Queued {
            callback,
            early: false,
        });
        state.buffered += 1;
    }

    /// How many callbacks may wait for a host: as many as it works through in a quarter of
    /// the lease at its recent pace, and at least four per slot.
    fn host_queue_cap(&self, state: &State, host: &str) -> usize {
        let floor = self.config.host_concurrency * 4;
        match state.pace.get(host) {
            Some(seconds) if *seconds > 0.0 => {
                let per_slot = self.config.lease.as_secs_f64() / 4.0 / seconds;
                ((per_slot * self.config.host_concurrency as f64) as usize)
                    .clamp(floor, MAX_BUFFERED)
            }
            _ => floor,
        }
    }

    /// Starts every waiting callback that has a free slot, host by host.
    fn pump_all(
        &self,
        state: &mut State,
        shared: &Arc<Shared>,
        tracker: &TaskTracker,
        done: &mpsc::UnboundedSender<Ended>,
    ) {
        let mut idle = Vec::new();
        for (name, host) in state.hosts.iter_mut() {
            while host.running < self.config.host_concurrency
                && state.running < self.config.concurrency
            {
                let Some(Queued { callback, early }) = host.waiting.pop_front() else {
                    break;
                };
                state.buffered -= 1;
                if early && !state.early.wanted(&callback) {
                    continue;
                }
                host.running += 1;
                state.running += 1;
                let shared = shared.clone();
                let done = done.clone();
                let host = name.clone();
                tracker.spawn(async move {
                    let started = std::time::Instant::now();
                    let attempt = shared.attempt(callback).await;
                    let _ = done.send(Ended {
                        host,
                        seconds: started.elapsed().as_secs_f64(),
                        attempt,
                        early,
                    });
                });
            }
            if host.running == 0 && host.waiting.is_empty() {
                idle.push(name.clone());
            }
        }
        for name in idle {
            state.hosts.remove(&name);
        }
    }

    /// Starts a poll for due callbacks nobody holds, skipping hosts whose queue is full; the
    /// task sends what it took, and whether the poll was full (so more may be due). `false`
    /// when there is no room for more.
    fn poll(&self, state: &State, polled: &mpsc::UnboundedSender<(Vec<Callback>, bool)>) -> bool {
        let room = POLL_BATCH.min(MAX_BUFFERED.saturating_sub(state.buffered));
        if room == 0 {
            return false;
        }
        let busy: Vec<String> = state
            .hosts
            .iter()
            .filter(|(name, h)| h.waiting.len() >= self.host_queue_cap(state, name))
            .map(|(n, _)| n.clone())
            .collect();
        let (store, lease, lease_for, polled) = (
            self.store.clone(),
            self.lease,
            self.config.lease,
            polled.clone(),
        );
        tokio::spawn(async move {
            let claimed = match store
                .claim_callbacks(lease, lease_for, room as i64, &busy)
                .await
            {
                Ok(claimed) => claimed,
                Err(e) => {
                    warn!(error = %e, "looking for due callbacks failed");
                    Vec::new()
                }
            };
            if !claimed.is_empty() {
                debug!(claimed = claimed.len(), "due callbacks taken");
            }
            let full = claimed.len() == room;
            let _ = polled.send((claimed, full));
        });
        true
    }

    /// Hands back released callbacks in a task of its own (if that fails, their leases run
    /// out instead).
    fn release_later(&self, state: &mut State) {
        if state.released.is_empty() {
            return;
        }
        let calls: Vec<_> = state.released.drain(..).map(|c| c.call_id).collect();
        let (store, lease) = (self.store.clone(), self.lease);
        tokio::spawn(async move {
            if let Err(e) = store.release_callbacks(lease, &calls).await {
                warn!(error = %e, "handing back callbacks failed; their leases will run out");
            }
        });
    }

    async fn release(&self, state: &mut State) {
        if state.released.is_empty() {
            return;
        }
        let calls: Vec<_> = state.released.iter().map(|c| c.call_id).collect();
        match self.store.release_callbacks(self.lease, &calls).await {
            Ok(()) => state.released.clear(),
            Err(e) => warn!(error = %e, "handing back callbacks failed; their leases will run out"),
        }
    }
}

struct State {
    hosts: HashMap<String, Host>,
    /// Recent seconds per attempt, by host (kept while the host is idle).
    pace: HashMap<String, f64>,
    /// Attempts in flight.
    running: usize,
    /// Callbacks waiting in host queues.
    buffered: usize,
    /// Callbacks to hand back (host queue full, or stopping).
    released: Vec<Callback>,
    /// Callbacks attempted before their outcome was recorded.
    early: early::Early,
    /// Where attempts are logged.
    journal: mpsc::UnboundedSender<Attempt>,
}

impl State {
    /// The recorder's decision on an outcome: an early attempt that already ended is logged;
    /// a recorded callback that was not attempted early is returned, to be attempted.
    fn decided(
        &mut self,
        call_id: CallId,
        webhook_id: &str,
        recorded: Option<Callback>,
    ) -> Option<Callback> {
        match self.early.decided(call_id, webhook_id, recorded.is_some()) {
            early::Decided::Log(attempt) => {
                let _ = self.journal.send(attempt);
                None
            }
            early::Decided::Deliver => recorded,
            early::Decided::Nothing => None,
        }
    }

    /// An attempt ended: its slot is free, and it is logged (an early one once recorded).
    fn ended(&mut self, ended: Ended) {
        self.running -= 1;
        if let Some(h) = self.hosts.get_mut(&ended.host) {
            h.running -= 1;
        }
        self.note_pace(&ended.host, ended.seconds);
        let attempt = if ended.early {
            self.early.attempted(ended.attempt)
        } else {
            Some(ended.attempt)
        };
        if let Some(attempt) = attempt {
            let _ = self.journal.send(attempt);
        }
    }

    fn note_pace(&mut self, host: &str, seconds: f64) {
        if self.pace.len() > 10_000 && !self.pace.contains_key(host) {
            self.pace.clear();
        }
        let pace = self.pace.entry(host.to_owned()).or_insert(seconds);
        *pace = *pace * 0.8 + seconds * 0.2;
    }
}

/// What every attempt task needs.
struct Shared {
    client: reqwest::Client,
    signer: Signer,
    networks: Networks,
    functions: Functions,
    metrics: Arc<ControlMetrics>,
    tracer: fjord_common::otlp::Tracer,
}

impl Shared {
    /// One delivery attempt, as a span of the call's trace (a child of the gateway's accept
    /// span, its id in the `traceparent` the receiver gets).
    async fn attempt(&self, mut callback: Callback) -> Attempt {
        let span_id = fjord_common::trace::new_span_id();
        let call_trace = callback.traceparent.clone().unwrap_or_default();
        if let Some(child) = fjord_common::trace::child(&call_trace, &span_id) {
            callback.traceparent = Some(child);
        }
        let start_ns = fjord_common::invocation::now_ns();
        let spec = self.functions.cached(&callback.function);
        let policy = spec
            .as_ref()
            .and_then(|spec| Policy::for_spec(spec).ok())
            .unwrap_or_default();
        let retry_max = spec
            .as_ref()
            .and_then(|spec| RetryPolicy::for_spec(spec).ok())
            .unwrap_or_default()
            .attempts;
        let at = chrono::Utc::now();
        let sent = deliver::send(
            &self.client,
            &self.signer,
            &self.networks,
            &callback,
            policy.timeout,
            retry_max,
        )
        .await;
        let attempt = decide(&callback, &policy, at, sent);
        debug!(call.id = %callback.call_id, function = %callback.function, outcome = attempt.outcome, status = ?attempt.status_code, error = ?attempt.error, "callback attempt");
        self.metrics.callback_attempts.inc(&[attempt.outcome]);
        if self.tracer.enabled()
            && let Some((trace_id, accept)) = fjord_common::trace::ids(&call_trace)
        {
            let mut attributes = vec![
                ("fjord.call_id", callback.call_id.to_string().into()),
                ("fjord.function", callback.function.clone().into()),
                ("fjord.callback.outcome", attempt.outcome.into()),
            ];
            if let Some(code) = attempt.status_code {
                attributes.push(("http.response.status_code", code.into()));
            }
            self.tracer.record(fjord_common::otlp::Span {
                trace_id: trace_id.to_owned(),
                span_id,
                parent_span_id: Some(accept.to_owned()),
                name: "fjord.callback",
                kind: fjord_common::otlp::Kind::Client,
                start_ns,
                end_ns: fjord_common::invocation::now_ns(),
                attributes,
                error: attempt.error.clone(),
            });
        }
        attempt
    }
}

/// What an attempt leads to: delivered on 2xx; failed on 410 Gone or when the policy allows no
/// further attempt; otherwise retrying after the policy's wait.
fn decide(
    callback: &Callback,
    policy: &Policy,
    at: chrono::DateTime<chrono::Utc>,
    sent: deliver::Sent,
) -> Attempt {
    let number = callback.attempts + 1;
    let mut attempt = Attempt {
        call_id: callback.call_id,
        lease: callback.lease,
        at,
        url: sent.url,
        webhook_id: callback.webhook_id.clone(),
        status_code: sent.status,
        error: sent.error,
        duration_seconds: sent.duration.as_secs_f64(),
        outcome: "retrying",
        next_at: None,
    };
    if sent.status.is_some_and(|s| (200..300).contains(&s)) {
        attempt.outcome = "delivered";
        return attempt;
    }
    if sent.status == Some(410) {
        attempt.outcome = "failed";
        attempt
            .error
            .get_or_insert_with(|| "410 Gone: the receiver wants no more attempts".into());
        return attempt;
    }
    let next = chrono::Utc::now()
        + chrono::Duration::from_std(policy.wait(number, sent.retry_after))
            .unwrap_or(chrono::Duration::MAX);
    let deadline = callback.round_at
        + chrono::Duration::from_std(policy.max_age).unwrap_or(chrono::Duration::MAX);
    if number >= policy.attempts || next > deadline {
        attempt.outcome = "failed";
    } else {
        attempt.next_at = Some(next);
    }
    attempt
}
