//! The autoscaler's figures, on an installation whose control process starts the workers:
//! - cold start: from the gateway's accept to the function starting, each call made with zero
//!   workers running (scaled to zero by hand before each, the state an idle function is in);
//! - burst: 10,000 calls to a 100 ms `sleep` with `max: 8`: how soon 8 workers answer, and how
//!   fast the backlog drains against the 8 × `max_inflight` / 100 ms it implies;
//! - memory: resident size of idle built-in workers and of the control process.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use fjord_common::FunctionName;
use fjord_common::scale::{self, ScaleRequest, ScaleStatus};
use fjord_common::stack::FunctionSpec;
use reqwest::header::HeaderMap;

use super::BenchArgs;
use super::cpu::{children_of, rss_bytes};
use super::setup::{Installation, spec};
use super::{callbacks, load};

const BURST_CALLS: f64 = 10_000.0;
const BURST_MAX: u32 = 8;
const BURST_INFLIGHT: u32 = 10;
const BURST_SLEEP_MS: u64 = 100;

pub fn functions() -> Vec<FunctionSpec> {
    let max = BURST_MAX.to_string();
    vec![
        spec("cold", "echo", 64, &[("com.openfaas.scale.min", "0")]),
        spec(
            "burst",
            "sleep",
            BURST_INFLIGHT,
            &[
                ("com.openfaas.scale.min", "0"),
                ("com.openfaas.scale.max", &max),
                ("com.fjord.scale.down-window", "2s"),
            ],
        ),
    ]
}

pub async fn run(args: &BenchArgs, install: &Installation) -> anyhow::Result<()> {
    let cold: FunctionName = "cold".parse()?;
    let http = reqwest::Client::new();
    let control = install.control_pid().context("control process")?;
    let control_idle = rss_bytes(control).unwrap_or(0);

    // 1. Cold starts.
    let mut starts = Vec::with_capacity(args.cold_starts);
    for _ in 0..args.cold_starts {
        scaled(install, &cold, Some(0), |s| s.running == 0).await?;
        let r = http
            .post(install.url("/async-function/cold"))
            .send()
            .await?;
        if r.status() != 202 {
            bail!("a call to cold was answered {}", r.status());
        }
        let id: uuid::Uuid = r.headers()["x-call-id"].to_str()?.parse()?;
        starts.push(accept_to_start(install, id).await?);
        install.wait_final(id).await?;
    }
    starts.sort_by(f64::total_cmp);
    println!(
        "\ncold start (gateway accept to function start, zero workers running), {} calls",
        starts.len()
    );
    println!(
        "  p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        callbacks::percentile(&starts, 50.0),
        callbacks::percentile(&starts, 99.0),
        callbacks::percentile(&starts, 100.0)
    );

    let exported = http.get(&install.metrics_url).send().await?.text().await?;
    let count = exported
        .lines()
        .find(|l| l.starts_with("fjord_cold_start_seconds_count{function_name=\"cold\"}"));
    println!(
        "  control process /metrics: {}",
        count.unwrap_or("no fjord_cold_start_seconds series for cold")
    );

    // 2. Memory of an idle built-in worker that has just started, and of the control process.
    scaled(install, &cold, Some(1), |s| s.running == 1).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let fresh = worker_rss(control, "cold");

    // 3. Burst.
    let since = chrono::Utc::now();
    let began = Instant::now();
    let burst: FunctionName = "burst".parse()?;
    let watch = tokio::spawn(time_to_workers(
        install.queue().clone(),
        burst.clone(),
        began,
    ));
    let rate = 4_000.0;
    let offered = load::open_loop(
        &install.url(&format!("/async-function/burst?ms={BURST_SLEEP_MS}")),
        b"",
        &HeaderMap::new(),
        args.connections,
        rate,
        Duration::from_secs_f64(BURST_CALLS / rate),
    )
    .await?;
    let reached = watch.await?;
    let recorded = install
        .wait_recorded("burst", since, began, offered.ok)
        .await?;
    let (first_start, last_finish): (f64, f64) = sqlx::query_as(
        "SELECT EXTRACT(EPOCH FROM min(started_at))::float8, EXTRACT(EPOCH FROM max(finished_at))::float8
         FROM invocations WHERE function = 'burst' AND created_at >= $1",
    )
    .bind(since)
    .fetch_one(install.pool())
    .await?;
    let implied = (BURST_MAX * BURST_INFLIGHT) as f64 * 1000.0 / BURST_SLEEP_MS as f64;
    println!(
        "\nburst: {} calls to a {BURST_SLEEP_MS} ms sleep offered at {rate:.0}/s, max {BURST_MAX} workers x {BURST_INFLIGHT} calls",
        offered.ok
    );
    match reached {
        Some(t) => println!(
            "  {BURST_MAX} workers answering {:.0} ms after the first call",
            t.as_secs_f64() * 1000.0
        ),
        None => println!("  {BURST_MAX} workers never answered at once"),
    }
    println!(
        "  drained at {:.0} calls/s from first start to last finish (implied {implied:.0}/s); all recorded {:.1} s after the first call",
        recorded.calls as f64 / (last_finish - first_start),
        recorded.seconds
    );
    let control_busy = rss_bytes(control).unwrap_or(0);

    // After the burst the workers go back down (2 s window) to the one kept while not idle.
    scaled(install, &burst, None, |s| s.running == 1).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = worker_rss(control, "burst");
    println!("\nmemory (resident)");
    println!(
        "  idle built-in worker: {} just started, {} after the burst",
        mib(&fresh),
        mib(&after)
    );
    println!(
        "  control process: {:.1} MiB idle, {:.1} MiB after the burst, {:.1} MiB now",
        control_idle as f64 / 1048576.0,
        control_busy as f64 / 1048576.0,
        rss_bytes(control).unwrap_or(0) as f64 / 1048576.0
    );
    Ok(())
}

/// Asks the autoscaler (setting `replicas` if given) until its status passes `done`.
async fn scaled(
    install: &Installation,
    function: &FunctionName,
    replicas: Option<u32>,
    done: impl Fn(&ScaleStatus) -> bool,
) -> anyhow::Result<()> {
    let request = ScaleRequest { replicas };
    let query = ScaleRequest::default();
    let timeout = Duration::from_secs(2);
    scale::ask(install.queue(), function, &request, timeout).await?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = scale::ask(install.queue(), function, &query, timeout).await?;
        if status.as_ref().is_some_and(&done) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{function} did not scale as asked: {status:?}");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Milliseconds from the call's accept to its start, once its row shows a start.
async fn accept_to_start(install: &Installation, id: uuid::Uuid) -> anyhow::Result<f64> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ms: Option<f64> = sqlx::query_scalar(
            "SELECT (EXTRACT(EPOCH FROM started_at - created_at) * 1000)::float8
             FROM invocations WHERE call_id = $1 AND started_at IS NOT NULL",
        )
        .bind(id)
        .fetch_optional(install.pool())
        .await?
        .flatten();
        if let Some(ms) = ms {
            return Ok(ms);
        }
        if Instant::now() > deadline {
            bail!("call {id} did not start");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// How long after `began` the function first had `BURST_MAX` workers answering a head count
/// (`None`: not within 10 s).
async fn time_to_workers(
    queue: fjord_common::queue::Queue,
    function: FunctionName,
    began: Instant,
) -> Option<Duration> {
    while began.elapsed() < Duration::from_secs(10) {
        let asked = began.elapsed();
        let count = queue
            .head_count(&function, Duration::from_millis(20))
            .await
            .ok()?;
        if count as u32 >= BURST_MAX {
            return Some(asked);
        }
    }
    None
}

/// Resident sizes of the control process's workers for `function`.
fn worker_rss(control: u32, function: &str) -> Vec<u64> {
    let wanted = format!("--function\0{function}\0");
    children_of(control)
        .into_iter()
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| c.windows(wanted.len()).any(|w| w == wanted.as_bytes()))
        })
        .filter_map(rss_bytes)
        .collect()
}

fn mib(sizes: &[u64]) -> String {
    let shown: Vec<String> = sizes
        .iter()
        .map(|b| format!("{:.1} MiB", *b as f64 / 1048576.0))
        .collect();
    if shown.is_empty() {
        "(no worker)".into()
    } else {
        shown.join(", ")
    }
}
