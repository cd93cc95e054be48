//! Backpressure at intake: a call is refused with `429 queue_full` (and `Retry-After`) when its
//! function has `com.fjord.queue.max` calls queued or running, or when the stream is nearly at
//! its byte cap — never accepted with a 202 and dropped later.
//!
//! A task refreshes the figures every [`REFRESH`] (consumer info of each capped function,
//! stream info); between refreshes the gateway adds what it accepted itself, so a burst cannot
//! run past a cap between two refreshes. Several gateways each add only their own, so together
//! they may overshoot a cap by what the others accept in one refresh interval. A refresh adds
//! to the figures it read what this gateway accepted while it read them, and the calls it was
//! still publishing when it began (which the figures may or may not hold: counted, to be safe),
//! so a refresh never forgets a call this gateway let in; a call counted twice that way may be
//! refused one call early, until the next refresh. The stream cap
//! keeps [`HEADROOM`] free for the outcome events of calls already accepted: a stream full of
//! calls whose outcomes cannot be written would never drain. JetStream enforces the cap itself
//! too (discard-new); a publish it refuses is answered 429 as well.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fjord_common::FunctionName;
use fjord_common::functions::Functions;
use fjord_common::queue::Queue;
use tokio_util::sync::CancellationToken;

use crate::error::ApiError;

const REFRESH: Duration = Duration::from_millis(100);
/// Share of the stream's byte cap intake leaves to outcome events.
const HEADROOM: f64 = 0.1;

#[derive(Clone)]
pub struct Pressure {
    queue: Queue,
    functions: Functions,
    state: Arc<Mutex<State>>,
}

#[derive(Default)]
struct State {
    /// Calls queued or running per capped function, as last seen, plus those accepted since.
    depths: HashMap<FunctionName, Depth>,
    /// Functions without a cap, as last seen.
    uncapped: HashSet<FunctionName>,
    /// Bytes in the stream as last seen plus those accepted since, and the intake limit.
    bytes: u64,
    byte_limit: Option<u64>,
}

struct Depth {
    max: u64,
    calls: u64,
    /// Calls admitted so far (never reset), to tell which a refresh's figures cannot hold.
    admitted: u64,
    /// Calls admitted whose publish has not finished.
    publishing: u64,
}

/// A call let in at a capped function; dropped once its publish is over.
pub struct Admission {
    state: Option<(Arc<Mutex<State>>, FunctionName)>,
}

impl Drop for Admission {
    fn drop(&mut self) {
        if let Some((state, function)) = self.state.take()
            && let Some(depth) = state.lock().expect("lock").depths.get_mut(&function)
        {
            depth.publishing = depth.publishing.saturating_sub(1);
        }
    }
}

impl Pressure {
    /// Reads the figures once (so the stream's cap holds from the first call), then starts the
    /// refresh task.
    pub async fn follow(
        queue: Queue,
        functions: Functions,
        shutdown: CancellationToken,
    ) -> Pressure {
        let pressure = Pressure {
            queue: queue.clone(),
            functions: functions.clone(),
            state: Arc::default(),
        };
        let state = pressure.state.clone();
        refresh(&queue, &functions, &state).await;
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(REFRESH) => {}
                    _ = shutdown.cancelled() => return,
                }
                refresh(&queue, &functions, &state).await;
            }
        });
        pressure
    }

    /// Takes a place for a call of `body_len` bytes, or says why there is none. A function
    /// not seen before is looked up at once, so a new cap holds from its first call.
    pub async fn admit(
        &self,
        function: &FunctionName,
        body_len: usize,
    ) -> Result<Admission, ApiError> {
        if let Some(admitted) = self.try_admit(function, body_len) {
            return admitted;
        }
        // Not from the cache only: a function deployed a moment ago may not be in it yet.
        let max = self
            .functions
            .get(function)
            .await?
            .and_then(|spec| spec.queue_max().ok().flatten());
        let calls = match max {
            Some(_) => {
                let stats = self.queue.stats(function).await?;
                stats.pending + stats.in_flight
            }
            None => 0,
        };
        {
            let mut state = self.state.lock().expect("lock");
            match max {
                None => {
                    state.uncapped.insert(function.clone());
                }
                Some(max) => {
                    state.depths.entry(function.clone()).or_insert(Depth {
                        max,
                        calls,
                        admitted: 0,
                        publishing: 0,
                    });
                }
            }
        }
        self.try_admit(function, body_len)
            .unwrap_or(Ok(Admission { state: None }))
    }

    /// `None` when the function is not known yet.
    fn try_admit(
        &self,
        function: &FunctionName,
        body_len: usize,
    ) -> Option<Result<Admission, ApiError>> {
        let mut state = self.state.lock().expect("lock");
        if let Some(limit) = state.byte_limit
            && state.bytes + body_len as u64 > limit
        {
            return Some(Err(ApiError::QueueFull(
                "the queue's storage is full; try again shortly".into(),
            )));
        }
        if let Some(depth) = state.depths.get_mut(function) {
            if depth.calls >= depth.max {
                return Some(Err(ApiError::QueueFull(format!(
                    "{function} has {} calls queued or running, its com.fjord.queue.max",
                    depth.max
                ))));
            }
            depth.calls += 1;
            depth.admitted += 1;
            depth.publishing += 1;
            state.bytes += body_len as u64;
            return Some(Ok(Admission {
                state: Some((self.state.clone(), function.clone())),
            }));
        } else if !state.uncapped.contains(function) {
            return None;
        }
        state.bytes += body_len as u64;
        Some(Ok(Admission { state: None }))
    }
}

async fn refresh(queue: &Queue, functions: &Functions, state: &Mutex<State>) {
    // (admitted, publishing) per function as the refresh begins.
    let before: HashMap<FunctionName, (u64, u64)> = state
        .lock()
        .expect("lock")
        .depths
        .iter()
        .map(|(name, d)| (name.clone(), (d.admitted, d.publishing)))
        .collect();
    let mut depths = HashMap::new();
    let mut uncapped = HashSet::new();
    for spec in functions.list() {
        let Ok(Some(max)) = spec.queue_max() else {
            uncapped.insert(spec.name.clone());
            continue;
        };
        match queue.stats(&spec.name).await {
            Ok(stats) => {
                let calls = stats.pending + stats.in_flight;
                depths.insert(
                    spec.name.clone(),
                    Depth {
                        max,
                        calls,
                        admitted: 0,
                        publishing: 0,
                    },
                );
            }
            Err(e) => {
                tracing::debug!(error = %e, function = %spec.name, "queue figures unavailable")
            }
        }
    }
    let bytes = queue.stream_bytes().await;
    let mut state = state.lock().expect("lock");
    for (name, depth) in &mut depths {
        let (admitted_before, publishing_before) = before.get(name).copied().unwrap_or_default();
        if let Some(now) = state.depths.get(name) {
            depth.calls += now.admitted.saturating_sub(admitted_before) + publishing_before;
            depth.admitted = now.admitted;
            depth.publishing = now.publishing;
        }
    }
    state.depths = depths;
    state.uncapped = uncapped;
    if let Ok((bytes, cap)) = bytes {
        state.bytes = bytes;
        state.byte_limit = cap.map(|c| (c as f64 * (1.0 - HEADROOM)) as u64);
    }
}
