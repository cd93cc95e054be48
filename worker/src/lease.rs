//! One delivery's lease on its message, and the fence that keeps a stale worker's outcome out.
//!
//! While a call runs, in-progress acks keep the server from redelivering its message. Each one
//! is sent as a request, and the server's answer confirms it arrived: the server then waits at
//! least the consumer's ack wait from the moment it was sent before it redelivers. The lease is
//! *lost* when no ack was confirmed within the ack wait of the last confirmed one (a cut link,
//! NATS away too long): the message may by then run on another worker. A worker whose lease is
//! lost stops the call and neither publishes its outcome nor acknowledges the message, so the
//! outcome of a superseded attempt is never recorded and cannot end or re-queue the call that
//! replaced it. Losing the lease is final for that delivery: a confirmation that comes later
//! (the link is back) proves nothing about the time in between.
//!
//! The lease is counted from the pull request the message came on, which the server sent it
//! after: a delivery that arrives late (a paused worker, a stalled connection) is already lost
//! and never runs.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::{AckKind, Message};
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};
use tracing::warn;

pub(crate) struct Lease {
    held: Arc<Held>,
    keeper: tokio::task::JoinHandle<()>,
}

struct Held {
    ack_wait: Duration,
    /// When the last confirmed in-progress ack was sent (at first: the message's arrival).
    since: Mutex<Instant>,
    /// Fired by the keeper when it finds the lease lost.
    lost: CancellationToken,
}

impl Held {
    /// Computed, not only signalled: a worker resuming from a pause (a stopped process, a
    /// suspended VM) sees the lease lost before the keeper has had a chance to run.
    fn is_lost(&self) -> bool {
        self.lost.is_cancelled() || Instant::now() >= *self.since.lock().unwrap() + self.ack_wait
    }
}

impl Lease {
    /// Starts keeping the lease of `message`, which came on a pull request sent at
    /// `requested`, on a consumer whose ack wait is `ack_wait`.
    pub(crate) fn keep(message: &Message, ack_wait: Duration, requested: Instant) -> Lease {
        let held = Arc::new(Held {
            ack_wait,
            since: Mutex::new(requested),
            lost: CancellationToken::new(),
        });
        let keeper = tokio::spawn(keep(message.clone(), held.clone()));
        Lease { held, keeper }
    }

    /// Resolves once the keeper finds the lease lost.
    pub(crate) fn lost(&self) -> WaitForCancellationFuture<'_> {
        self.held.lost.cancelled()
    }

    pub(crate) fn is_lost(&self) -> bool {
        self.held.is_lost()
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.keeper.abort();
    }
}

async fn keep(message: Message, held: Arc<Held>) {
    // Three tries per ack wait: one slow or failed confirmation does not lose the lease.
    let every = (held.ack_wait / 3).max(Duration::from_millis(100));
    // After a failed try, the next one waits this long at least.
    let pause = (every / 4).max(Duration::from_millis(25));
    let mut earliest = Instant::now();
    loop {
        // Due `every` after the last confirmation (at once for a delivery that came late on
        // its pull request).
        let due = (*held.since.lock().unwrap() + every).max(earliest);
        tokio::time::sleep_until(due).await;
        if held.is_lost() {
            break;
        }
        let sent = Instant::now();
        let deadline = *held.since.lock().unwrap() + held.ack_wait;
        let confirm = message.double_ack_with(AckKind::Progress);
        match tokio::time::timeout_at(deadline, confirm).await {
            Ok(Ok(())) => *held.since.lock().unwrap() = sent,
            Ok(Err(e)) => warn!(error = %e, "in-progress ack failed"),
            Err(_) => {}
        }
        earliest = Instant::now() + pause;
        if held.is_lost() {
            break;
        }
    }
    let since = *held.since.lock().unwrap();
    warn!(
        unconfirmed_ms = since.elapsed().as_millis() as u64,
        "lease lost: no in-progress ack confirmed within the ack wait; the call may run elsewhere"
    );
    held.lost.cancel();
}
