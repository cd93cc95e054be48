//! The callback phases: a receiver in this process that answers 200 at once and notes when
//! each callback arrives, so the benchmark measures how many callbacks a second arrive and how
//! long after the function finished (its `finished_at` in PostgreSQL, same clock) each one did.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use chrono::{DateTime, Utc};
use uuid::Uuid;

/// Arrival time per call id.
#[derive(Clone, Default)]
pub struct Receiver {
    arrivals: Arc<Mutex<HashMap<Uuid, DateTime<Utc>>>>,
    pub url: String,
}

impl Receiver {
    pub async fn start() -> anyhow::Result<Receiver> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let receiver = Receiver {
            url: format!("http://{}/hook", listener.local_addr()?),
            ..Receiver::default()
        };
        let arrivals = receiver.arrivals.clone();
        let app = axum::Router::new().fallback(move |headers: HeaderMap| {
            let arrivals = arrivals.clone();
            async move {
                let now = Utc::now();
                if let Some(id) = headers
                    .get("x-call-id")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| Uuid::parse_str(v).ok())
                {
                    arrivals.lock().expect("lock").entry(id).or_insert(now);
                }
                StatusCode::OK
            }
        });
        tokio::spawn(async move { axum::serve(listener, app).await });
        Ok(receiver)
    }

    pub fn count(&self) -> usize {
        self.arrivals.lock().expect("lock").len()
    }

    /// Clears what arrived so far and returns it.
    pub fn take(&self) -> HashMap<Uuid, DateTime<Utc>> {
        std::mem::take(&mut *self.arrivals.lock().expect("lock"))
    }

    /// Waits until `n` callbacks arrived (bounded: 120 s).
    pub async fn wait_for(&self, n: u64) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
        while (self.count() as u64) < n {
            if tokio::time::Instant::now() > deadline {
                anyhow::bail!("only {} of {n} callbacks arrived", self.count());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }
}

/// Callbacks per second over the span from the first arrival to the last.
pub fn rate(arrivals: &HashMap<Uuid, DateTime<Utc>>) -> f64 {
    let (Some(first), Some(last)) = (arrivals.values().min(), arrivals.values().max()) else {
        return 0.0;
    };
    let span = (*last - *first).as_seconds_f64();
    if span <= 0.0 {
        return 0.0;
    }
    (arrivals.len() - 1) as f64 / span
}

/// Milliseconds from each call's recorded finish to its callback's arrival, sorted.
pub fn delays(
    arrivals: &HashMap<Uuid, DateTime<Utc>>,
    finished: &HashMap<Uuid, DateTime<Utc>>,
) -> Vec<f64> {
    let mut delays: Vec<f64> = arrivals
        .iter()
        .filter_map(|(id, at)| {
            finished
                .get(id)
                .map(|f| (*at - *f).as_seconds_f64() * 1000.0)
        })
        .collect();
    delays.sort_by(f64::total_cmp);
    delays
}

/// The `q`th percentile of sorted values.
pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((q / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}
