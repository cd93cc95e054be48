//! NATS JetStream layout and access: one stream per installation holding invocations
//! (`<prefix>.invoke.<function>`) and outcome events (`<prefix>.event.<kind>.<call_id>`), one
//! durable pull consumer per function, one for the recorder, and an object store for bodies too
//! large for a NATS message.
//!
//! The stream uses Interest retention: a message stays until every consumer whose filter matches
//! has acknowledged it, so the recorder and a function's consumer each see every invocation
//! from a single publish. A consumer must therefore exist before the first publish it should
//! see: [`Queue::ensure`] creates the recorder's, deploying creates a function's.

use std::sync::Arc;
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::{self, consumer, object_store, stream};
use bytes::Bytes;
use futures::StreamExt;
use tokio::io::AsyncReadExt;

use crate::invocation::{self, BodyRef, CallMeta, Event, SCHEMA_HEADER, SCHEMA_VERSION};
use crate::{CallId, Error, FunctionName};

/// Names of everything an installation keeps in NATS, derived from its prefix so several
/// installations (and tests) share one server.
#[derive(Clone, Debug)]
pub struct Names {
    prefix: String,
}

impl Names {
    /// `prefix` may hold ASCII letters, digits, `-` and `_`.
    pub fn new(prefix: &str) -> Result<Self, Error> {
        let ok = !prefix.is_empty()
            && prefix.len() <= 32
            && prefix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !ok {
            return Err(Error::invalid(
                "FJORD_NATS_PREFIX",
                format!("{prefix:?} must be 1-32 ASCII letters, digits, '-' or '_'"),
            ));
        }
        Ok(Names {
            prefix: prefix.to_owned(),
        })
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }
    pub fn stream(&self) -> String {
        format!("{}_calls", self.prefix)
    }
    pub fn invoke(&self, function: &FunctionName) -> String {
        format!("{}.invoke.{function}", self.prefix)
    }
    pub fn event(&self, event: &Event) -> String {
        format!("{}.event.{}.{}", self.prefix, event.kind(), event.call_id())
    }
    /// Every event of one call; the synchronous route listens here.
    pub fn events_of(&self, call_id: CallId) -> String {
        format!("{}.event.*.{call_id}", self.prefix)
    }
    /// Core NATS subject on which workers of a function answer a head count.
    pub fn ping(&self, function: &FunctionName) -> String {
        format!("{}.ping.{function}", self.prefix)
    }
    /// Core NATS subject announcing (without a body) each call published for the function: the
    /// autoscaler's push-driven wake-up.
    pub fn wake(&self, function: &FunctionName) -> String {
        format!("{}.wake.{function}", self.prefix)
    }
    /// Every function's wake-ups.
    pub fn wakes(&self) -> String {
        format!("{}.wake.*", self.prefix)
    }
    /// Core NATS subject on which a worker started from zero reports its first call's cold
    /// start (seconds from accept to start, as text).
    pub fn cold_start(&self, function: &FunctionName) -> String {
        format!("{}.coldstart.{function}", self.prefix)
    }
    pub fn cold_starts(&self) -> String {
        format!("{}.coldstart.*", self.prefix)
    }
    /// Core NATS request subject on which the autoscaler answers for a function (see
    /// [`crate::scale::ScaleRequest`]).
    pub fn autoscaler(&self, function: &FunctionName) -> String {
        format!("{}.autoscaler.{function}", self.prefix)
    }
    /// Every function's autoscaler requests.
    pub fn autoscaler_all(&self) -> String {
        format!("{}.autoscaler.*", self.prefix)
    }
    pub fn function_consumer(&self, function: &FunctionName) -> String {
        format!("fn_{function}")
    }
    pub fn recorder_consumer(&self) -> &'static str {
        "recorder"
    }
    /// The consumer of calls waiting out a retry backoff (see [`crate::invocation::Retrying`]).
    pub fn retrier_consumer(&self) -> &'static str {
        "retrier"
    }
    /// Every retry event.
    pub fn retrying(&self) -> String {
        format!("{}.event.retrying.>", self.prefix)
    }
    pub fn bodies_bucket(&self) -> String {
        format!("{}_bodies", self.prefix)
    }
    pub fn registry_bucket(&self) -> String {
        format!("{}_functions", self.prefix)
    }
    /// The stream backing the registry bucket.
    pub fn registry_stream(&self) -> String {
        format!("KV_{}", self.registry_bucket())
    }
    /// Handler packages, by digest.
    pub fn packages_bucket(&self) -> String {
        format!("{}_packages", self.prefix)
    }
    /// Cancellation requests, by call id (see [`crate::cancel`]).
    pub fn cancels_bucket(&self) -> String {
        format!("{}_cancels", self.prefix)
    }
    /// Secret values (`/system/secrets`), by name.
    pub fn secrets_bucket(&self) -> String {
        format!("{}_secrets", self.prefix)
    }
    /// Functions' output lines (see [`crate::logs`]).
    pub fn logs_stream(&self) -> String {
        format!("{}_logs", self.prefix)
    }
    /// The subject of a function's output line, for one call or (`-`) none in particular.
    pub fn log(&self, function: &FunctionName, call_id: Option<CallId>) -> String {
        match call_id {
            Some(id) => format!("{}.log.{function}.{id}", self.prefix),
            None => format!("{}.log.{function}.-", self.prefix),
        }
    }
    /// Every stream of the installation (calls, registry, secrets, stored bodies, packages,
    /// function output): what removing an installation deletes.
    pub fn streams(&self) -> [String; 7] {
        [
            self.stream(),
            self.logs_stream(),
            format!("KV_{}", self.cancels_bucket()),
            self.registry_stream(),
            format!("KV_{}", self.secrets_bucket()),
            format!("OBJ_{}", self.bodies_bucket()),
            format!("OBJ_{}", self.packages_bucket()),
        ]
    }
}

/// Per-function queue settings fixed when the function's consumer is created.
#[derive(Clone, Debug)]
pub struct ConsumerSettings {
    /// How long a worker may stay silent before its call is redelivered. Workers send
    /// in-progress acks at a third of this, so it bounds crash detection, not execution time.
    pub ack_wait: Duration,
    /// Executions in total before a call is given up as `dead`.
    pub max_attempts: u32,
    /// Calls handed out and not yet acknowledged, across all workers of the function.
    pub max_ack_pending: i64,
}

impl ConsumerSettings {
    /// Settings for a function: `com.openfaas.retry.attempts` (default 3) executions, and the
    /// installation's lease length.
    pub fn for_spec(spec: &crate::stack::FunctionSpec, ack_wait: Duration) -> Result<Self, Error> {
        let max_attempts = crate::retry::RetryPolicy::for_spec(spec)?.attempts;
        Ok(ConsumerSettings {
            ack_wait,
            max_attempts,
            ..Default::default()
        })
    }
}

impl Default for ConsumerSettings {
    fn default() -> Self {
        ConsumerSettings {
            ack_wait: Duration::from_secs(30),
            max_attempts: 3,
            max_ack_pending: 10_000,
        }
    }
}

/// The longest wait between reconnect attempts while NATS is away.
const RECONNECT_DELAY_MAX: Duration = Duration::from_millis(500);

/// The lease of the control process's consumers (recorder, retrier): how long the events a
/// killed control process had taken wait before another one gets them. A recorder that is
/// still retrying a batch (PostgreSQL away) keeps the lease with in-progress acks.
pub const CONTROL_ACK_WAIT: Duration = Duration::from_secs(10);

/// Live figures of one function's queue.
#[derive(Clone, Debug, Default)]
pub struct QueueStats {
    pub pending: u64,
    pub in_flight: u64,
    pub redelivered: u64,
    pub oldest_pending_seconds: f64,
}

/// A handle on an installation's JetStream resources. Cheap to clone.
#[derive(Clone)]
pub struct Queue {
    pub client: async_nats::Client,
    pub js: jetstream::Context,
    pub names: Names,
    /// The bodies bucket, opened on first use by a worker (see [`Queue::attach`]).
    bodies: Arc<tokio::sync::OnceCell<object_store::ObjectStore>>,
    /// Bodies larger than this go to the object store (derived from the server's max_payload).
    inline_limit: usize,
}

const META_ROOM: usize = 64 * 1024;

impl Queue {
    /// Connects and makes sure the stream, the recorder's consumer, the bodies bucket and the
    /// function registry exist (idempotent; the gateway and the control process call it at
    /// start).
    pub async fn connect(nats_url: &str, names: Names) -> Result<Self, Error> {
        let queue = Self::attach(nats_url, names).await?;
        let bodies = ensure(&queue.js, &queue.names).await?;
        let _ = queue.bodies.set(bodies);
        Ok(queue)
    }

    /// Connects to an installation that exists, creating and checking nothing: a worker's
    /// start, where every round trip before the first pull adds to a cold start. Its first
    /// call that needs the bodies bucket opens it.
    pub async fn attach(nats_url: &str, names: Names) -> Result<Self, Error> {
        let client = async_nats::ConnectOptions::new()
            .name(format!("fjord-{}", names.prefix()))
            .retry_on_initial_connect()
            .connection_timeout(Duration::from_secs(2))
            // Back within half a second of the server (the default backs off to 4 s): intake
            // answers 503 until then. A refused connect costs the server nothing.
            .reconnect_delay_callback(|attempts| {
                Duration::from_millis(2_u64.saturating_pow(attempts.min(16) as u32))
                    .min(RECONNECT_DELAY_MAX)
            })
            .connect(nats_url);
        let client = tokio::time::timeout(Duration::from_secs(10), client)
            .await
            .map_err(|_| Error::Nats(format!("no NATS server answers at {nats_url}")))?
            .map_err(Error::nats)?;
        let js = jetstream::new(client.clone());
        // With `retry_on_initial_connect` the client may not have met the server yet, and its
        // server info is empty until it has: wait for the connection before sizing bodies.
        if client.server_info().max_payload == 0 {
            let _ = tokio::time::timeout(Duration::from_secs(10), client.flush()).await;
        }
        let max_payload = match client.server_info().max_payload {
            0 => 1024 * 1024,
            n => n,
        };
        let inline_limit = max_payload.saturating_sub(META_ROOM).max(1024);
        Ok(Queue {
            client,
            js,
            names,
            bodies: Arc::default(),
            inline_limit,
        })
    }

    async fn bodies(&self) -> Result<&object_store::ObjectStore, Error> {
        self.bodies
            .get_or_try_init(|| async {
                self.js
                    .get_object_store(self.names.bodies_bucket())
                    .await
                    .map_err(Error::nats)
            })
            .await
    }

    pub fn inline_limit(&self) -> usize {
        self.inline_limit
    }

    /// Creates the function's durable pull consumer if it does not exist yet.
    pub async fn ensure_function_consumer(
        &self,
        function: &FunctionName,
        settings: &ConsumerSettings,
    ) -> Result<(), Error> {
        let name = self.names.function_consumer(function);
        let config = consumer::pull::Config {
            durable_name: Some(name.clone()),
            filter_subject: self.names.invoke(function),
            ack_policy: consumer::AckPolicy::Explicit,
            ack_wait: settings.ack_wait,
            // One delivery beyond the attempts: the worker that sees it records `dead` and
            // terminates the message, so nothing stays stuck after its last attempt.
            max_deliver: i64::from(settings.max_attempts) + 1,
            max_ack_pending: settings.max_ack_pending,
            ..Default::default()
        };
        self.stream()
            .await?
            .get_or_create_consumer(&name, config)
            .await
            .map_err(Error::nats)?;
        Ok(())
    }

    /// Removes the function's consumer (its queued calls are released from the stream).
    pub async fn delete_function_consumer(&self, function: &FunctionName) -> Result<(), Error> {
        let name = self.names.function_consumer(function);
        match self.stream().await?.delete_consumer(&name).await {
            Ok(_) => Ok(()),
            Err(e) if e.to_string().contains("not found") => Ok(()),
            Err(e) => Err(Error::nats(e)),
        }
    }

    pub async fn stream(&self) -> Result<stream::Stream<()>, Error> {
        self.js
            .get_stream_no_info(self.names.stream())
            .await
            .map_err(Error::nats)
    }

    pub async fn function_consumer(
        &self,
        function: &FunctionName,
    ) -> Result<consumer::PullConsumer, Error> {
        self.stream()
            .await?
            .get_consumer(&self.names.function_consumer(function))
            .await
            .map_err(Error::nats)
    }

    pub async fn retrier_consumer(&self) -> Result<consumer::PullConsumer, Error> {
        self.stream()
            .await?
            .get_consumer(self.names.retrier_consumer())
            .await
            .map_err(Error::nats)
    }

    pub async fn recorder_consumer(&self) -> Result<consumer::PullConsumer, Error> {
        self.stream()
            .await?
            .get_consumer(self.names.recorder_consumer())
            .await
            .map_err(Error::nats)
    }

    /// Stream messages the recorder has not applied yet (waiting or being applied).
    pub async fn recorder_pending(&self) -> Result<u64, Error> {
        let info = self
            .stream()
            .await?
            .consumer_info(self.names.recorder_consumer())
            .await
            .map_err(Error::nats)?;
        Ok(info.num_pending + info.num_ack_pending as u64)
    }

    /// Publishes an invocation and waits for JetStream's acknowledgement; returns the stream
    /// sequence. A body over the inline limit is stored first, under the call's id.
    pub async fn publish_call(&self, mut meta: CallMeta, body: Bytes) -> Result<u64, Error> {
        let inline = if body.len() > self.inline_limit {
            let object = format!("call-{}", meta.call_id);
            self.put_object(&object, &body).await?;
            meta.body = BodyRef::Stored {
                object,
                size: body.len() as u64,
            };
            Bytes::new()
        } else {
            meta.body = BodyRef::Inline;
            body
        };
        self.publish_invocation(&meta, &inline, &meta.message_id())
            .await
    }

    /// Publishes an invocation whose body is already where `meta.body` says (inline: `inline`)
    /// and waits for the ack. The message id (usually [`CallMeta::message_id`]) makes a re-sent
    /// message stored once.
    pub async fn publish_invocation(
        &self,
        meta: &CallMeta,
        inline: &[u8],
        message_id: &str,
    ) -> Result<u64, Error> {
        let payload = invocation::encode(meta, inline);
        let subject = self.names.invoke(&meta.function);
        let mut headers = schema_headers();
        headers.insert("Nats-Msg-Id", message_id);
        if !meta.traceparent.is_empty() {
            headers.insert("traceparent", meta.traceparent.as_str());
        }
        let stored = self.publish(subject, headers, payload).await?;
        // Best effort: a lost wake-up delays a zero-scaled function until the autoscaler's next
        // look at the queues, it loses no call.
        let _ = self
            .client
            .publish(self.names.wake(&meta.function), Bytes::new())
            .await;
        Ok(stored)
    }

    /// Stores a request body out of band (a dead letter's, so it outlives its messages) and
    /// returns the reference.
    pub async fn store_request(&self, call_id: CallId, body: &[u8]) -> Result<BodyRef, Error> {
        let object = format!("dead-{call_id}");
        self.put_object(&object, body).await?;
        Ok(BodyRef::Stored {
            object,
            size: body.len() as u64,
        })
    }

    /// Publishes a start event without waiting for JetStream's ack: losing one costs only the
    /// `running` status for a moment (the outcome event repeats the attempt and start time),
    /// and not waiting saves a round trip before every call.
    pub async fn publish_started(&self, event: &Event) -> Result<(), Error> {
        let payload = invocation::encode(event, &[]);
        self.client
            .publish_with_headers(self.names.event(event), schema_headers(), payload)
            .await
            .map_err(Error::nats)
    }

    /// Publishes an outcome event (large result bodies out of band) and waits for the ack.
    /// Events carry no de-duplication id: applying one twice changes nothing.
    pub async fn publish_event(&self, mut event: Event, body: Bytes) -> Result<u64, Error> {
        let inline = match &mut event {
            Event::Finished(f) if body.len() > self.inline_limit => {
                let object = format!("result-{}-{}", f.call_id, f.attempt);
                self.put_object(&object, &body).await?;
                f.body = BodyRef::Stored {
                    object,
                    size: body.len() as u64,
                };
                Bytes::new()
            }
            _ => body,
        };
        let payload = invocation::encode(&event, &inline);
        self.publish(self.names.event(&event), schema_headers(), payload)
            .await
    }

    async fn publish(
        &self,
        subject: String,
        headers: HeaderMap,
        payload: Bytes,
    ) -> Result<u64, Error> {
        let ack = self
            .js
            .publish_with_headers(subject, headers, payload)
            .await
            .map_err(Error::nats)?
            .await
            .map_err(Error::nats)?;
        Ok(ack.sequence)
    }

    /// The body a message refers to: its inline part, or the stored object.
    pub async fn load_body(&self, body: &BodyRef, inline: Bytes) -> Result<Bytes, Error> {
        match body {
            BodyRef::Inline => Ok(inline),
            BodyRef::Stored { object, size } => {
                let mut reader = self
                    .bodies()
                    .await?
                    .get(object)
                    .await
                    .map_err(Error::nats)?;
                let mut out = Vec::with_capacity(*size as usize);
                reader
                    .read_to_end(&mut out)
                    .await
                    .map_err(|e| Error::Nats(format!("reading object {object}: {e}")))?;
                Ok(Bytes::from(out))
            }
        }
    }

    async fn put_object(&self, name: &str, body: &[u8]) -> Result<(), Error> {
        let mut reader = body;
        self.bodies()
            .await?
            .put(name, &mut reader)
            .await
            .map_err(Error::nats)?;
        Ok(())
    }

    /// Deletes stored bodies; a missing object is not an error (cleanup may run twice).
    pub async fn delete_object(&self, name: &str) -> Result<(), Error> {
        match self.bodies().await?.delete(name).await {
            Ok(()) => Ok(()),
            Err(e) if e.to_string().contains("not found") => Ok(()),
            Err(e) => Err(Error::nats(e)),
        }
    }

    /// Names of the objects currently stored (tests use it to check cleanup).
    pub async fn list_objects(&self) -> Result<Vec<String>, Error> {
        // The listing's ordered consumer can miss its end when objects are deleted while it
        // runs, and would then wait for ever: bounded.
        let listing = async {
            let mut list = self.bodies().await?.list().await.map_err(Error::nats)?;
            let mut names = Vec::new();
            while let Some(info) = list.next().await {
                let info = info.map_err(Error::nats)?;
                if !info.deleted {
                    names.push(info.name);
                }
            }
            Ok(names)
        };
        tokio::time::timeout(Duration::from_secs(5), listing)
            .await
            .map_err(|_| Error::Nats("listing the stored bodies timed out".into()))?
    }

    /// Workers of the function that answer a head count on its ping subject within `window`
    /// (a worker answers once it pulls calls).
    pub async fn head_count(
        &self,
        function: &FunctionName,
        window: Duration,
    ) -> Result<usize, Error> {
        let inbox = self.client.new_inbox();
        let mut replies = self
            .client
            .subscribe(inbox.clone())
            .await
            .map_err(Error::nats)?;
        self.client
            .publish_with_reply(self.names.ping(function), inbox, Bytes::new())
            .await
            .map_err(Error::nats)?;
        let mut count = 0;
        let deadline = tokio::time::Instant::now() + window;
        while let Ok(Some(reply)) = tokio::time::timeout_at(deadline, replies.next()).await {
            // With nobody listening the server answers once with a "no responders" status.
            if reply.status.is_none() {
                count += 1;
            }
        }
        Ok(count)
    }

    /// Pending, in-flight and redelivered counts from the function's consumer, and the age of
    /// the oldest call not yet handed to a worker.
    pub async fn stats(&self, function: &FunctionName) -> Result<QueueStats, Error> {
        let stream = self.stream().await?;
        let info = stream
            .consumer_info(self.names.function_consumer(function))
            .await
            .map_err(Error::nats)?;
        let mut stats = QueueStats {
            pending: info.num_pending,
            in_flight: info.num_ack_pending as u64,
            redelivered: info.num_redelivered as u64,
            oldest_pending_seconds: 0.0,
        };
        if info.num_pending > 0 {
            let next = stream
                .direct_get_next_for_subject(
                    self.names.invoke(function),
                    Some(info.delivered.stream_sequence + 1),
                )
                .await;
            if let Ok(message) = next {
                let stored_ns = message.time.unix_timestamp_nanos() as i64;
                let age_ns = invocation::now_ns().saturating_sub(stored_ns);
                stats.oldest_pending_seconds = (age_ns as f64 / 1e9).max(0.0);
            }
        }
        Ok(stats)
    }

    /// Caps the stream at `max_bytes` (0: no cap) with discard-new, so JetStream refuses a
    /// publish rather than drop a stored call. The control process applies its setting at
    /// start.
    pub async fn limit_stream_bytes(&self, max_bytes: u64) -> Result<(), Error> {
        let mut config = self
            .stream()
            .await?
            .get_info()
            .await
            .map_err(Error::nats)?
            .config;
        let wanted = if max_bytes == 0 { -1 } else { max_bytes as i64 };
        if config.max_bytes == wanted && config.discard == stream::DiscardPolicy::New {
            return Ok(());
        }
        config.max_bytes = wanted;
        config.discard = stream::DiscardPolicy::New;
        self.js.update_stream(config).await.map_err(Error::nats)?;
        Ok(())
    }

    /// Bytes stored in the stream and its byte cap (`None`: uncapped).
    pub async fn stream_bytes(&self) -> Result<(u64, Option<u64>), Error> {
        let info = self.stream().await?.get_info().await.map_err(Error::nats)?;
        let cap = (info.config.max_bytes > 0).then_some(info.config.max_bytes as u64);
        Ok((info.state.bytes, cap))
    }

    /// The stream's last sequence and the recorder's acknowledged floor: when the floor has
    /// reached the last sequence, every call accepted so far is in PostgreSQL.
    pub async fn recorder_progress(&self) -> Result<(u64, u64), Error> {
        let stream = self.stream().await?;
        let last = stream
            .get_info()
            .await
            .map_err(Error::nats)?
            .state
            .last_sequence;
        let info = stream
            .consumer_info(self.names.recorder_consumer())
            .await
            .map_err(Error::nats)?;
        Ok((last, info.ack_floor.stream_sequence))
    }
}

fn schema_headers() -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(SCHEMA_HEADER, SCHEMA_VERSION.to_string().as_str());
    headers
}

/// Idempotent creation of the stream, recorder consumer, bodies bucket and registry bucket.
async fn ensure(
    js: &jetstream::Context,
    names: &Names,
) -> Result<object_store::ObjectStore, Error> {
    let prefix = names.prefix();
    let stream = js
        .get_or_create_stream(stream::Config {
            name: names.stream(),
            subjects: vec![format!("{prefix}.invoke.>"), format!("{prefix}.event.>")],
            retention: stream::RetentionPolicy::Interest,
            storage: stream::StorageType::File,
            duplicate_window: Duration::from_secs(120),
            allow_direct: true,
            ..Default::default()
        })
        .await
        .map_err(Error::nats)?;
    stream
        .get_or_create_consumer(
            names.recorder_consumer(),
            consumer::pull::Config {
                durable_name: Some(names.recorder_consumer().to_owned()),
                ack_policy: consumer::AckPolicy::Explicit,
                ack_wait: CONTROL_ACK_WAIT,
                max_ack_pending: 50_000,
                ..Default::default()
            },
        )
        .await
        .map_err(Error::nats)?;
    // Calls waiting out a retry backoff sit here, nak'd with their remaining wait, instead of
    // on their function's consumer: any number of them hold none of its slots.
    stream
        .get_or_create_consumer(
            names.retrier_consumer(),
            consumer::pull::Config {
                durable_name: Some(names.retrier_consumer().to_owned()),
                filter_subject: names.retrying(),
                ack_policy: consumer::AckPolicy::Explicit,
                ack_wait: CONTROL_ACK_WAIT,
                max_ack_pending: 1_000_000,
                ..Default::default()
            },
        )
        .await
        .map_err(Error::nats)?;
    crate::registry::ensure_bucket(js, &names.registry_bucket()).await?;
    crate::registry::ensure_bucket(js, &names.secrets_bucket()).await?;
    crate::registry::ensure_expiring_bucket(js, &names.cancels_bucket(), crate::cancel::KEPT_FOR)
        .await?;
    crate::logs::ensure_stream(js, names).await?;
    crate::package::ensure_store(js, &names.bodies_bucket()).await
}
