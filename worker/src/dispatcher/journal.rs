//! Writes attempt outcomes to PostgreSQL in batches (one transaction per batch), retrying
//! while the database is away. An outcome not yet written when the process dies is redone:
//! the callback's lease runs out and it is attempted again, with the same `webhook-id`.

use std::time::Duration;

use fjord_common::store::Store;
use fjord_common::store::callbacks::Attempt;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::warn;

const MAX_BATCH: usize = 1000;
/// How long outcomes are retried once the dispatcher is stopping.
const FINAL_RETRIES: Duration = Duration::from_secs(10);

/// Starts the writer; it ends once every sender is dropped and what they sent is written.
pub fn start(store: Store) -> (mpsc::UnboundedSender<Attempt>, JoinHandle<()>) {
    let (tx, mut rx) = mpsc::unbounded_channel::<Attempt>();
    let task = tokio::spawn(async move {
        let mut batch = Vec::with_capacity(MAX_BATCH);
        while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
            let mut delay = Duration::from_millis(100);
            let mut stopping_since = None;
            loop {
                match store.record_callback_attempts(&batch).await {
                    Ok(()) => break,
                    Err(e) => {
                        warn!(error = %e, attempts = batch.len(), "recording callback attempts failed; retrying");
                        if rx.is_closed() {
                            let since =
                                *stopping_since.get_or_insert_with(tokio::time::Instant::now);
                            if since.elapsed() > FINAL_RETRIES {
                                warn!(
                                    attempts = batch.len(),
                                    "giving up on recording callback attempts; they will be retried"
                                );
                                break;
                            }
                        }
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(Duration::from_secs(5));
                    }
                }
            }
            batch.clear();
        }
    });
    (tx, task)
}
