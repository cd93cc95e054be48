//! Cancellation requests, shared through a NATS key-value bucket (`<prefix>_cancels`, one key
//! per cancelled call id, kept for [`KEPT_FOR`]) so workers on any host learn of them without a
//! database.
//!
//! The gateway writes the key, then records the call `cancelled` with an outcome event (so a
//! queued call that no worker holds is final at once). Every worker follows the bucket from its
//! start ([`Cancels::follow`]): a call it pulls that is cancelled is never run, and a running
//! one is stopped (its future dropped: an exec call's process group is killed, a built-in stops
//! at its next await). Either way the worker publishes the `cancelled` outcome too, so the call
//! is final even if the gateway's own event was lost; the first final outcome wins.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::kv;
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use crate::queue::Queue;
use crate::{CallId, Error};

/// How long a cancellation is remembered: longer than any call is expected to stay queued.
pub const KEPT_FOR: Duration = Duration::from_secs(7 * 24 * 3600);

/// How long a starting worker waits to have read the cancellations made so far.
const CATCH_UP: Duration = Duration::from_secs(2);

#[derive(Clone)]
pub struct Cancels {
    kv: kv::Store,
}

impl Cancels {
    pub async fn open(queue: &Queue) -> Result<Self, Error> {
        let kv = queue
            .js
            .get_key_value(queue.names.cancels_bucket())
            .await
            .map_err(Error::nats)?;
        Ok(Cancels { kv })
    }

    /// Asks every worker to cancel the call.
    pub async fn request(&self, call_id: CallId) -> Result<(), Error> {
        self.kv
            .put(call_id.to_string(), bytes::Bytes::new())
            .await
            .map_err(Error::nats)?;
        Ok(())
    }

    /// Follows the cancellations until `shutdown`; returns once those made so far are read (or
    /// after a short bound, logged).
    pub async fn follow(&self, shutdown: CancellationToken) -> Result<Cancelled, Error> {
        let mut watch = self
            .kv
            .watch_all_from_revision(1)
            .await
            .map_err(Error::nats)?;
        let cancelled = Cancelled::default();
        let status = self.kv.status().await.map_err(Error::nats)?;
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let mut ready_tx = (status.values() > 0).then_some(ready_tx);
        let state = cancelled.clone();
        tokio::spawn(async move {
            loop {
                let entry = tokio::select! {
                    entry = watch.next() => entry,
                    _ = shutdown.cancelled() => return,
                };
                match entry {
                    Some(Ok(entry)) => {
                        if entry.operation == kv::Operation::Put
                            && let Ok(id) = entry.key.parse::<CallId>()
                        {
                            state.add(id);
                        }
                        if entry.delta == 0
                            && let Some(tx) = ready_tx.take()
                        {
                            let _ = tx.send(());
                        }
                    }
                    Some(Err(e)) => tracing::warn!(error = %e, "cancellation watch error"),
                    None => return,
                }
            }
        });
        if status.values() > 0 && tokio::time::timeout(CATCH_UP, ready_rx).await.is_err() {
            tracing::warn!(
                "cancellations not read in time; running calls are still stopped when they arrive"
            );
        }
        Ok(cancelled)
    }
}

/// What a worker knows of cancellations, and the calls it is running.
#[derive(Clone, Default)]
pub struct Cancelled {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Default)]
struct Inner {
    ids: HashSet<CallId>,
    running: HashMap<CallId, CancellationToken>,
}

impl Cancelled {
    fn add(&self, id: CallId) {
        let mut inner = self.inner.lock().expect("lock");
        inner.ids.insert(id);
        if let Some(token) = inner.running.get(&id) {
            token.cancel();
        }
    }

    pub fn contains(&self, id: CallId) -> bool {
        self.inner.lock().expect("lock").ids.contains(&id)
    }

    /// A token fired when the call is cancelled while it runs (at once if it already is);
    /// dropping the guard forgets the call.
    pub fn running(&self, id: CallId) -> Running {
        let token = CancellationToken::new();
        let mut inner = self.inner.lock().expect("lock");
        if inner.ids.contains(&id) {
            token.cancel();
        }
        inner.running.insert(id, token.clone());
        Running {
            id,
            token,
            owner: self.clone(),
        }
    }
}

pub struct Running {
    id: CallId,
    pub token: CancellationToken,
    owner: Cancelled,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.owner
            .inner
            .lock()
            .expect("lock")
            .running
            .remove(&self.id);
    }
}
