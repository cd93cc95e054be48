//! Functions' own output: the stdout and stderr lines of exec and http functions, kept per call
//! in a JetStream stream of their own (`<prefix>_logs`, subjects
//! `<prefix>.log.<function>.<call id>`, or `.-` for a line no single call can be named for),
//! with limits so it never grows past its size or age. Workers publish without waiting for an
//! acknowledgement; `GET /system/logs` and `fjord logs` read it back, from any host.

use std::collections::VecDeque;
use std::time::Duration;

use async_nats::jetstream::{consumer, stream};
use futures::StreamExt;
use serde::{Deserialize, Serialize};

use crate::queue::{Names, Queue};
use crate::{CallId, Error, FunctionName};

/// How much of one call's output is kept; the rest is replaced by one line saying so.
pub const MAX_PER_CALL: usize = 64 * 1024;
/// A longer line is cut to this length.
pub const MAX_LINE: usize = 4096;
/// The stream's limits: lines older than this, or beyond this size, are dropped oldest first.
pub const MAX_AGE: Duration = Duration::from_secs(7 * 24 * 3600);
pub const MAX_BYTES: i64 = 256 * 1024 * 1024;

/// One line of a function's output, in OpenFaaS's `/system/logs` fields (`name`, `instance`,
/// `timestamp`, `text`) plus the call and the stream it came from.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct LogLine {
    pub name: String,
    pub instance: String,
    pub timestamp: chrono::DateTime<chrono::Utc>,
    pub call_id: Option<CallId>,
    pub stream: String,
    pub text: String,
}

/// Creates the logs stream if it does not exist (part of [`Queue::connect`]'s set-up).
pub async fn ensure_stream(
    js: &async_nats::jetstream::Context,
    names: &Names,
) -> Result<(), Error> {
    js.get_or_create_stream(stream::Config {
        name: names.logs_stream(),
        subjects: vec![format!("{}.log.>", names.prefix())],
        retention: stream::RetentionPolicy::Limits,
        storage: stream::StorageType::File,
        max_age: MAX_AGE,
        max_bytes: MAX_BYTES,
        discard: stream::DiscardPolicy::Old,
        ..Default::default()
    })
    .await
    .map_err(Error::nats)?;
    Ok(())
}

/// Where one worker writes its function's lines.
#[derive(Clone)]
pub struct LogWriter {
    client: async_nats::Client,
    names: Names,
    function: FunctionName,
    instance: String,
}

impl LogWriter {
    pub fn new(queue: &Queue, function: &FunctionName) -> Self {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_else(|_| "host".into());
        LogWriter {
            client: queue.client.clone(),
            names: queue.names.clone(),
            function: function.clone(),
            instance: format!("{host}-{}", std::process::id()),
        }
    }

    /// Publishes one line (cut to [`MAX_LINE`]); a line that cannot be sent is dropped, never
    /// waited for.
    pub async fn line(&self, call_id: Option<CallId>, stream: &str, text: &str) {
        let mut end = text.len().min(MAX_LINE);
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        let line = LogLine {
            name: self.function.to_string(),
            instance: self.instance.clone(),
            timestamp: chrono::Utc::now(),
            call_id,
            stream: stream.to_owned(),
            text: text[..end].trim_end_matches(['\r', '\n']).to_owned(),
        };
        let Ok(body) = serde_json::to_vec(&line) else {
            return;
        };
        let subject = self.names.log(&self.function, call_id);
        if let Err(e) = self.client.publish(subject, body.into()).await {
            tracing::debug!(error = %e, "function log line dropped");
        }
    }
}

/// What to read back.
#[derive(Clone, Debug, Default)]
pub struct LogQuery {
    pub call_id: Option<CallId>,
    /// Only lines at or after this time.
    pub since: Option<chrono::DateTime<chrono::Utc>>,
    /// Only the last this many of the lines kept (before following).
    pub tail: Option<usize>,
    /// After the lines kept, go on with new ones until the reader goes away.
    pub follow: bool,
}

/// The function's lines, oldest first, as a stream of its own task: it ends after the last
/// line kept unless `follow`, and stops when the receiver is dropped.
pub async fn read(
    queue: &Queue,
    function: &FunctionName,
    query: LogQuery,
) -> Result<tokio::sync::mpsc::Receiver<LogLine>, Error> {
    let names = &queue.names;
    let filter = match query.call_id {
        Some(id) => names.log(function, Some(id)),
        None => format!("{}.log.{function}.>", names.prefix()),
    };
    let consumer = queue
        .js
        .get_stream_no_info(names.logs_stream())
        .await
        .map_err(Error::nats)?
        .create_consumer(consumer::pull::OrderedConfig {
            filter_subject: filter,
            deliver_policy: consumer::DeliverPolicy::All,
            ..Default::default()
        })
        .await
        .map_err(Error::nats)?;
    let mut kept = consumer.cached_info().num_pending;
    let mut messages = consumer.messages().await.map_err(Error::nats)?;
    let (tx, rx) = tokio::sync::mpsc::channel(256);
    tokio::spawn(async move {
        let wanted = |line: &LogLine| query.since.is_none_or(|t| line.timestamp >= t);
        // The lines kept so far: all of them, or the last `tail` (held until the end of them).
        let mut held = VecDeque::new();
        while kept > 0 {
            let Some(Ok(message)) = messages.next().await else {
                return;
            };
            kept = message.info().map(|i| i.pending).unwrap_or(0);
            let Ok(line) = serde_json::from_slice::<LogLine>(&message.payload) else {
                continue;
            };
            if !wanted(&line) {
                continue;
            }
            match query.tail {
                Some(n) => {
                    held.push_back(line);
                    if held.len() > n {
                        held.pop_front();
                    }
                }
                None => {
                    if tx.send(line).await.is_err() {
                        return;
                    }
                }
            }
        }
        for line in held {
            if tx.send(line).await.is_err() {
                return;
            }
        }
        if !query.follow {
            return;
        }
        loop {
            tokio::select! {
                message = messages.next() => {
                    let Some(Ok(message)) = message else { return };
                    if let Ok(line) = serde_json::from_slice::<LogLine>(&message.payload)
                        && wanted(&line)
                        && tx.send(line).await.is_err()
                    {
                        return;
                    }
                }
                _ = tx.closed() => return,
            }
        }
    });
    Ok(rx)
}
