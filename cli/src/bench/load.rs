//! HTTP load: closed loop (each connection sends its next call when the last is answered) and
//! open loop (calls sent on a fixed schedule whatever the answers, so latency is not hidden by
//! back-off).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use reqwest::header::HeaderMap;
use tokio::sync::Mutex;

pub struct Load {
    pub ok: u64,
    pub errors: u64,
    pub elapsed: Duration,
    /// Latencies of accepted calls, sorted, in milliseconds.
    latencies: Vec<f64>,
}

impl Load {
    pub fn rate(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64()
    }

    /// The `q`th percentile latency in milliseconds (100 = max).
    pub fn p(&self, q: f64) -> f64 {
        if self.latencies.is_empty() {
            return f64::NAN;
        }
        let i = ((q / 100.0) * (self.latencies.len() - 1) as f64).round() as usize;
        self.latencies[i.min(self.latencies.len() - 1)]
    }
}

fn client(connections: usize) -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .pool_max_idle_per_host(connections)
        .http1_only()
        .tcp_nodelay(true)
        .build()?)
}

struct Tally {
    ok: AtomicU64,
    errors: AtomicU64,
    latencies: Mutex<Vec<f64>>,
}

async fn one(
    client: &reqwest::Client,
    url: &str,
    body: &bytes::Bytes,
    headers: &HeaderMap,
    tally: &Tally,
    local: &mut Vec<f64>,
) {
    let sent = Instant::now();
    let request = client.post(url).headers(headers.clone()).body(body.clone());
    match request.send().await {
        Ok(r) if r.status() == 202 => {
            tally.ok.fetch_add(1, Ordering::Relaxed);
            local.push(sent.elapsed().as_secs_f64() * 1000.0);
        }
        _ => {
            tally.errors.fetch_add(1, Ordering::Relaxed);
        }
    }
}

async fn finish(tally: Arc<Tally>, started: Instant) -> Load {
    let mut latencies = std::mem::take(&mut *tally.latencies.lock().await);
    latencies.sort_by(f64::total_cmp);
    Load {
        ok: tally.ok.load(Ordering::Relaxed),
        errors: tally.errors.load(Ordering::Relaxed),
        elapsed: started.elapsed(),
        latencies,
    }
}

fn tally() -> Arc<Tally> {
    Arc::new(Tally {
        ok: AtomicU64::new(0),
        errors: AtomicU64::new(0),
        latencies: Mutex::new(Vec::new()),
    })
}

/// When a sender's next call is due: `None` stops it, `Some(None)` sends at once,
/// `Some(Some(t))` sends at `t`.
type Due = Option<Option<Instant>>;

/// Runs `connections` senders, each asking `schedule` when to send its next call.
async fn drive(
    url: &str,
    body: &[u8],
    headers: &HeaderMap,
    connections: usize,
    schedule: impl Fn() -> Due + Send + Sync + 'static,
) -> anyhow::Result<Load> {
    let client = client(connections)?;
    let body = bytes::Bytes::copy_from_slice(body);
    let tally = tally();
    let schedule = Arc::new(schedule);
    let started = Instant::now();
    let tasks: Vec<_> = (0..connections)
        .map(|_| {
            let (client, url, body, headers, tally, schedule) = (
                client.clone(),
                url.to_owned(),
                body.clone(),
                headers.clone(),
                tally.clone(),
                schedule.clone(),
            );
            tokio::spawn(async move {
                let mut local = Vec::new();
                while let Some(due) = schedule() {
                    if let Some(due) = due {
                        tokio::time::sleep_until(due.into()).await;
                    }
                    one(&client, &url, &body, &headers, &tally, &mut local).await;
                }
                tally.latencies.lock().await.extend(local);
            })
        })
        .collect();
    for t in tasks {
        t.await?;
    }
    Ok(finish(tally, started).await)
}

/// `connections` loops, each sending its next call as soon as the last is answered.
pub async fn closed_loop(
    url: &str,
    body: &[u8],
    headers: &HeaderMap,
    connections: usize,
    duration: Duration,
) -> anyhow::Result<Load> {
    let deadline = Instant::now() + duration;
    drive(url, body, headers, connections, move || {
        (Instant::now() < deadline).then_some(None)
    })
    .await
}

/// Calls sent at `rate` per second for `duration`, spread over `connections` senders, each
/// sending on its own schedule (a late answer delays nothing but itself, up to the number of
/// connections).
pub async fn open_loop(
    url: &str,
    body: &[u8],
    headers: &HeaderMap,
    connections: usize,
    rate: f64,
    duration: Duration,
) -> anyhow::Result<Load> {
    let started = Instant::now();
    let total = (rate * duration.as_secs_f64()) as u64;
    let next = AtomicU64::new(0);
    drive(url, body, headers, connections, move || {
        let i = next.fetch_add(1, Ordering::Relaxed);
        (i < total).then(|| Some(started + Duration::from_secs_f64(i as f64 / rate)))
    })
    .await
}
