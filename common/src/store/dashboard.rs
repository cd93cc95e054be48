//! The dashboard's figures from PostgreSQL: queue-depth samples (written by the control
//! process, so charts survive restarts and agree across gateways) and what the recorded calls
//! say about the last minutes.

use std::collections::HashMap;

use chrono::{DateTime, Utc};

use super::Store;
use crate::Error;

/// How long samples are kept.
const SAMPLES_KEPT: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// One function's recorded figures over the last five minutes (and the last minute).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Recent {
    pub finished_1m: i64,
    pub finished_5m: i64,
    /// `failed` and `dead` calls among them.
    pub errors_5m: i64,
    /// Run time percentiles of the calls that ran, in seconds.
    pub p50: Option<f64>,
    pub p99: Option<f64>,
    pub dead_letters: i64,
    pub failing_callbacks: i64,
}

/// One point of a function's chart.
#[derive(Clone, Debug, PartialEq)]
pub struct Point {
    pub at: DateTime<Utc>,
    /// The highest sampled queue depth in the step (`None`: no sample).
    pub pending: Option<i64>,
    pub finished_per_second: f64,
}

impl Store {
    /// Writes one sample per function at `at` (rounded down to `step_seconds`; a sample
    /// another process wrote for the same time stays) and drops samples older than a day.
    pub async fn write_samples(
        &self,
        rows: &[(String, u64, u64)],
        step_seconds: u32,
    ) -> Result<(), Error> {
        let functions: Vec<&str> = rows.iter().map(|r| r.0.as_str()).collect();
        let pending: Vec<i64> = rows.iter().map(|r| r.1 as i64).collect();
        let in_flight: Vec<i64> = rows.iter().map(|r| r.2 as i64).collect();
        let step = f64::from(step_seconds.max(1));
        self.run(async |c, p| {
            sqlx::query(
                "INSERT INTO queue_samples (function, at, pending, in_flight)
                 SELECT f, to_timestamp(floor(extract(epoch FROM now()) / $4) * $4), pe, fl
                 FROM unnest($1::text[], $2::bigint[], $3::bigint[]) AS u(f, pe, fl)
                 ON CONFLICT DO NOTHING",
            )
            .bind(&functions)
            .bind(&pending)
            .bind(&in_flight)
            .bind(step)
            .persistent(p)
            .execute(&mut *c)
            .await?;
            sqlx::query("DELETE FROM queue_samples WHERE at < now() - make_interval(secs => $1)")
                .bind(SAMPLES_KEPT.as_secs_f64())
                .persistent(p)
                .execute(&mut *c)
                .await
        })
        .await?;
        Ok(())
    }

    /// Every function's figures over the last five minutes.
    pub async fn recent(&self) -> Result<HashMap<String, Recent>, Error> {
        type Row = (String, i64, i64, i64, Option<f64>, Option<f64>);
        type Counts = Vec<(String, i64)>;
        let (finished, dead, failing): (Vec<Row>, Counts, Counts) = self
            .run(async |c, p| {
                let finished = sqlx::query_as(
                    "SELECT function,
                            count(*) FILTER (WHERE finished_at > now() - interval '1 minute'),
                            count(*),
                            count(*) FILTER (WHERE status IN ('failed', 'dead')),
                            percentile_cont(0.5) WITHIN GROUP (ORDER BY duration_seconds),
                            percentile_cont(0.99) WITHIN GROUP (ORDER BY duration_seconds)
                     FROM invocations
                     WHERE finished_at > now() - interval '5 minutes'
                       AND status IN ('succeeded', 'failed', 'dead', 'cancelled')
                     GROUP BY function",
                )
                .persistent(p)
                .fetch_all(&mut *c)
                .await?;
                let dead =
                    sqlx::query_as("SELECT function, count(*) FROM dead_letters GROUP BY function")
                        .persistent(p)
                        .fetch_all(&mut *c)
                        .await?;
                let failing = sqlx::query_as(
                    "SELECT function, count(*) FROM invocations
                     WHERE callback_state IN ('retrying', 'failed') GROUP BY function",
                )
                .persistent(p)
                .fetch_all(&mut *c)
                .await?;
                Ok((finished, dead, failing))
            })
            .await?;
        let mut out: HashMap<String, Recent> = HashMap::new();
        for (function, f1, f5, errors, p50, p99) in finished {
            let r = out.entry(function).or_default();
            (r.finished_1m, r.finished_5m, r.errors_5m, r.p50, r.p99) = (f1, f5, errors, p50, p99);
        }
        for (function, n) in dead {
            out.entry(function).or_default().dead_letters = n;
        }
        for (function, n) in failing {
            out.entry(function).or_default().failing_callbacks = n;
        }
        Ok(out)
    }

    /// The function's chart over the last `points` steps of `step_seconds`, oldest first:
    /// the highest sampled queue depth and the calls finished per second in each.
    pub async fn history(
        &self,
        function: &str,
        step_seconds: u32,
        points: u32,
    ) -> Result<Vec<Point>, Error> {
        let step = f64::from(step_seconds.max(1));
        let span = step * f64::from(points);
        // One row per step and source: `true` for the sampled depth, `false` for finished calls.
        let (now, rows): (f64, Vec<(bool, i64, i64)>) = self
            .run(async |c, p| {
                let now: f64 = sqlx::query_scalar("SELECT extract(epoch FROM now())::float8")
                    .persistent(p)
                    .fetch_one(&mut *c)
                    .await?;
                let rows = sqlx::query_as(
                    "SELECT true, floor(extract(epoch FROM at) / $2)::bigint, max(pending)
                     FROM queue_samples
                     WHERE function = $1 AND at > now() - make_interval(secs => $3)
                     GROUP BY 2
                     UNION ALL
                     SELECT false, floor(extract(epoch FROM finished_at) / $2)::bigint, count(*)
                     FROM invocations
                     WHERE function = $1 AND finished_at > now() - make_interval(secs => $3)
                     GROUP BY 2",
                )
                .bind(function)
                .bind(step)
                .bind(span)
                .persistent(p)
                .fetch_all(&mut *c)
                .await?;
                Ok((now, rows))
            })
            .await?;
        let pick = |depth: bool| -> HashMap<i64, i64> {
            rows.iter()
                .filter(|r| r.0 == depth)
                .map(|r| (r.1, r.2))
                .collect()
        };
        let (depth, finished) = (pick(true), pick(false));
        let last = (now / step).floor() as i64;
        Ok((last - i64::from(points) + 1..=last)
            .map(|b| Point {
                at: DateTime::from_timestamp((b as f64 * step) as i64, 0).unwrap_or_default(),
                pending: depth.get(&b).copied(),
                finished_per_second: finished.get(&b).copied().unwrap_or(0) as f64 / step,
            })
            .collect())
    }
}
