//! The web dashboard: `/ui/` (one embedded page, no external assets) and the figures it shows,
//! `GET /system/dashboard` (per function, live queue figures from JetStream with the last
//! minutes' recorded calls from PostgreSQL) and `GET /system/dashboard/history?function=`
//! (the last 15 minutes in 30 s steps, from the samples the control process keeps).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::{Html, IntoResponse, Response};
use fjord_common::store::dashboard::Recent;
use serde_json::{Value, json};

use super::extract::ApiQuery;
use super::status::rfc3339;
use crate::AppState;
use crate::error::ApiError;

const PAGE: &str = include_str!("../ui/index.html");
/// How long one gateway reuses the last minutes' figures: however many dashboards are open,
/// PostgreSQL computes them at most once a second per gateway (the page refreshes every 2 s).
const RECENT_FOR: Duration = Duration::from_secs(1);

/// The last figures read from PostgreSQL and when; the lock also makes concurrent refreshes
/// wait for one query instead of each running its own.
#[derive(Default)]
pub struct RecentCache(tokio::sync::Mutex<Option<(Instant, Figures)>>);

type Figures = Arc<HashMap<String, Recent>>;

async fn recent(state: &AppState) -> Result<Figures, ApiError> {
    let mut cached = state.recent.0.lock().await;
    if let Some((at, figures)) = cached.as_ref()
        && at.elapsed() < RECENT_FOR
    {
        return Ok(figures.clone());
    }
    let figures = Arc::new(state.store.recent().await?);
    *cached = Some((Instant::now(), figures.clone()));
    Ok(figures)
}
/// The chart: 30 steps of 30 s.
const STEP_SECONDS: u32 = 30;
const POINTS: u32 = 30;

pub async fn page() -> Response {
    ([(header::CACHE_CONTROL, "no-store")], Html(PAGE)).into_response()
}

pub async fn figures(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let recent = recent(&state).await?;
    let mut functions = Vec::new();
    for f in super::live(&state).await {
        let stats = f.stats.ok_or(ApiError::QueueUnavailable)?;
        let policy = f.policy.unwrap_or_default();
        let r = recent.get(&f.name).cloned().unwrap_or_default();
        let error_rate = (r.finished_5m > 0).then(|| r.errors_5m as f64 / r.finished_5m as f64);
        functions.push(json!({
            "function": f.name,
            "pending": stats.pending,
            "in_flight": stats.in_flight,
            "redelivered": stats.redelivered,
            "oldest_pending_seconds": stats.oldest_pending_seconds,
            "workers": {
                "running": f.running,
                "wanted": f.wanted,
                "min": policy.min,
                "max": policy.max,
            },
            "calls_per_second": r.finished_1m as f64 / 60.0,
            "finished_5m": r.finished_5m,
            "error_rate": error_rate,
            "p50_seconds": r.p50,
            "p99_seconds": r.p99,
            "dead_letters": r.dead_letters,
            "failing_callbacks": r.failing_callbacks,
        }));
    }
    Ok(Json(json!({
        "generated_at": rfc3339(Some(chrono::Utc::now())),
        "functions": functions,
    })))
}

pub async fn history(
    State(state): State<AppState>,
    ApiQuery(params): ApiQuery<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let name = params.get("function").cloned().unwrap_or_default();
    if state.functions.cached(&name).is_none() {
        return Err(ApiError::FunctionNotFound(name));
    }
    let points = state.store.history(&name, STEP_SECONDS, POINTS).await?;
    let points: Vec<Value> = points
        .iter()
        .map(|p| {
            json!({
                "at": rfc3339(Some(p.at)),
                "pending": p.pending,
                "finished_per_second": p.finished_per_second,
            })
        })
        .collect();
    Ok(Json(json!({
        "function": name,
        "step_seconds": STEP_SECONDS,
        "points": points,
    })))
}
