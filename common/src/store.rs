//! PostgreSQL: the projection of the invocation stream (`invocations`, `results`), the embedded
//! migrations, and the reads the gateway serves.
//!
//! Writes come only from the recorder, in batches: one transaction applies a whole batch of
//! stream messages with one `UNNEST` statement per kind, so the cost per call stays far below one
//! commit. Every statement is idempotent (a redelivered message changes nothing) and the first
//! final outcome of a call wins.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, Row};
use uuid::Uuid;

use crate::invocation::{CallMeta, Finished};
use crate::{CallId, Error};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

/// Applies the embedded migrations over a direct connection (sqlx takes an advisory lock, which
/// needs a session: never run this through PgBouncer's transaction pooling).
pub async fn migrate(database_url: &str) -> Result<(), Error> {
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(Duration::from_secs(10))
        .connect(database_url)
        .await?;
    MIGRATOR.run(&pool).await?;
    pool.close().await;
    Ok(())
}

/// A call as the status API shows it.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct InvocationRow {
    pub call_id: Uuid,
    pub function: String,
    pub status: String,
    pub attempts: i32,
    pub callback_url: Option<String>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub duration_seconds: Option<f64>,
    pub function_status: Option<i32>,
    pub error: Option<String>,
}

/// A recorded response.
#[derive(Clone, Debug, Default)]
pub struct ResultRow {
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// What the recorder applies in one transaction. Order inside a batch is stream order.
#[derive(Default)]
pub struct Batch {
    pub invoked: Vec<(CallMeta, u64)>,
    pub started: Vec<Started>,
    /// Each with its result body (already fetched if it was stored out of band).
    pub finished: Vec<(Finished, Vec<u8>)>,
}

pub struct Started {
    pub call_id: CallId,
    pub function: String,
    pub attempt: u32,
    pub created_ns: i64,
    pub at_ns: i64,
}

impl Batch {
    pub fn is_empty(&self) -> bool {
        self.invoked.is_empty() && self.started.is_empty() && self.finished.is_empty()
    }
}

/// Filters for listing calls, newest first.
#[derive(Clone, Debug, Default)]
pub struct ListFilter {
    pub function: Option<String>,
    pub status: Option<String>,
    /// Only calls strictly older than this (created_at, call_id) position.
    pub before: Option<(DateTime<Utc>, Uuid)>,
    pub limit: i64,
}

fn ts(ns: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_nanos(ns)
}

const COLUMNS: &str = "call_id, function, status, attempts, callback_url, created_at, started_at, \
                       finished_at, duration_seconds, function_status, error";

#[derive(Clone)]
pub struct Store {
    pool: PgPool,
}

impl Store {
    /// A pool of at most `max_connections`; connections are opened lazily.
    pub async fn connect(database_url: &str, max_connections: u32) -> Result<Self, Error> {
        let options: PgConnectOptions = database_url.parse()?;
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(3))
            .connect_lazy_with(options);
        Ok(Store { pool })
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Applies a batch in one transaction. Returns the calls whose final state this batch
    /// recorded; finished events for calls that were already final are left out (late outcomes
    /// of superseded attempts).
    pub async fn apply(&self, batch: &Batch) -> Result<Vec<CallId>, Error> {
        let mut tx = self.pool.begin().await?;

        // The same call can appear twice in a batch (a redelivery); Postgres refuses to touch
        // one row twice in a statement, so keep one entry per call.
        let mut seen = HashMap::new();
        for (meta, seq) in &batch.invoked {
            seen.entry(meta.call_id).or_insert((meta, *seq));
        }
        if !seen.is_empty() {
            let rows: Vec<_> = seen.into_values().collect();
            sqlx::query(
                "INSERT INTO invocations (call_id, function, status, created_at, method, path, query, callback_url, stream_seq)
                 SELECT u.call_id, u.function, 'queued', u.created_at, u.method, u.path, u.query, u.callback_url, u.seq
                 FROM UNNEST($1::uuid[], $2::text[], $3::timestamptz[], $4::text[], $5::text[], $6::text[], $7::text[], $8::int8[])
                      AS u(call_id, function, created_at, method, path, query, callback_url, seq)
                 ON CONFLICT (call_id) DO UPDATE SET
                     created_at = EXCLUDED.created_at, method = EXCLUDED.method, path = EXCLUDED.path,
                     query = EXCLUDED.query, stream_seq = EXCLUDED.stream_seq,
                     callback_url = COALESCE(invocations.callback_url, EXCLUDED.callback_url)",
            )
            .bind(rows.iter().map(|(m, _)| m.call_id.0).collect::<Vec<_>>())
            .bind(rows.iter().map(|(m, _)| m.function.to_string()).collect::<Vec<_>>())
            .bind(rows.iter().map(|(m, _)| ts(m.start_time_ns)).collect::<Vec<_>>())
            .bind(rows.iter().map(|(m, _)| m.method.clone()).collect::<Vec<_>>())
            .bind(rows.iter().map(|(m, _)| m.path.clone()).collect::<Vec<_>>())
            .bind(rows.iter().map(|(m, _)| m.query.clone()).collect::<Vec<_>>())
            .bind(rows.iter().map(|(m, _)| m.callback_url.clone()).collect::<Vec<_>>())
            .bind(rows.iter().map(|(_, s)| *s as i64).collect::<Vec<_>>())
            .execute(&mut *tx)
            .await?;
        }

        let mut started: HashMap<CallId, &Started> = HashMap::new();
        for s in &batch.started {
            let keep = started
                .get(&s.call_id)
                .is_none_or(|k| k.attempt < s.attempt);
            if keep {
                started.insert(s.call_id, s);
            }
        }
        if !started.is_empty() {
            let rows: Vec<_> = started.into_values().collect();
            sqlx::query(
                "INSERT INTO invocations (call_id, function, status, attempts, created_at, started_at)
                 SELECT u.call_id, u.function, 'running', u.attempt, u.created_at, u.started_at
                 FROM UNNEST($1::uuid[], $2::text[], $3::int4[], $4::timestamptz[], $5::timestamptz[])
                      AS u(call_id, function, attempt, created_at, started_at)
                 ON CONFLICT (call_id) DO UPDATE SET
                     status = CASE WHEN invocations.status IN ('queued', 'running') THEN 'running'
                                   ELSE invocations.status END,
                     attempts = GREATEST(invocations.attempts, EXCLUDED.attempts),
                     started_at = COALESCE(invocations.started_at, EXCLUDED.started_at)",
            )
            .bind(rows.iter().map(|s| s.call_id.0).collect::<Vec<_>>())
            .bind(rows.iter().map(|s| s.function.clone()).collect::<Vec<_>>())
            .bind(rows.iter().map(|s| s.attempt as i32).collect::<Vec<_>>())
            .bind(rows.iter().map(|s| ts(s.created_ns)).collect::<Vec<_>>())
            .bind(rows.iter().map(|s| ts(s.at_ns)).collect::<Vec<_>>())
            .execute(&mut *tx)
            .await?;
        }

        // First final outcome in stream order wins, within the batch and against the table.
        let mut finished: Vec<&(Finished, Vec<u8>)> = Vec::new();
        for f in &batch.finished {
            if !finished.iter().any(|k| k.0.call_id == f.0.call_id) {
                finished.push(f);
            }
        }
        let mut recorded = Vec::new();
        if !finished.is_empty() {
            let rows = sqlx::query(
                "INSERT INTO invocations (call_id, function, status, attempts, created_at, started_at,
                                          finished_at, duration_seconds, function_status, error, callback_url)
                 SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::int4[], $5::timestamptz[],
                                      $6::timestamptz[], $7::timestamptz[], $8::float8[], $9::int4[], $10::text[], $11::text[])
                 ON CONFLICT (call_id) DO UPDATE SET
                     status = EXCLUDED.status,
                     attempts = GREATEST(invocations.attempts, EXCLUDED.attempts),
                     started_at = COALESCE(invocations.started_at, EXCLUDED.started_at),
                     finished_at = EXCLUDED.finished_at,
                     duration_seconds = EXCLUDED.duration_seconds,
                     function_status = EXCLUDED.function_status,
                     error = EXCLUDED.error,
                     callback_url = COALESCE(invocations.callback_url, EXCLUDED.callback_url)
                 WHERE invocations.status NOT IN ('succeeded', 'failed', 'dead', 'cancelled')
                 RETURNING call_id",
            )
            .bind(finished.iter().map(|(f, _)| f.call_id.0).collect::<Vec<_>>())
            .bind(finished.iter().map(|(f, _)| f.function.to_string()).collect::<Vec<_>>())
            .bind(finished.iter().map(|(f, _)| f.status.as_str()).collect::<Vec<_>>())
            .bind(finished.iter().map(|(f, _)| f.attempt as i32).collect::<Vec<_>>())
            .bind(finished.iter().map(|(f, _)| ts(f.created_ns)).collect::<Vec<_>>())
            .bind(finished.iter().map(|(f, _)| f.started_ns.map(ts)).collect::<Vec<_>>())
            .bind(finished.iter().map(|(f, _)| ts(f.finished_ns)).collect::<Vec<_>>())
            .bind(
                finished
                    .iter()
                    .map(|(f, _)| f.started_ns.map(|s| (f.finished_ns - s) as f64 / 1e9))
                    .collect::<Vec<_>>(),
            )
            .bind(finished.iter().map(|(f, _)| i32::from(f.function_status)).collect::<Vec<_>>())
            .bind(finished.iter().map(|(f, _)| f.error.clone()).collect::<Vec<_>>())
            .bind(finished.iter().map(|(f, _)| f.callback_url.clone()).collect::<Vec<_>>())
            .fetch_all(&mut *tx)
            .await?;
            recorded = rows
                .iter()
                .map(|r| CallId(r.get::<Uuid, _>(0)))
                .collect::<Vec<_>>();
            let results: Vec<_> = finished
                .iter()
                .filter(|(f, _)| recorded.contains(&f.call_id))
                .collect();
            if !results.is_empty() {
                sqlx::query(
                    "INSERT INTO results (call_id, headers, body)
                     SELECT * FROM UNNEST($1::uuid[], $2::jsonb[], $3::bytea[])
                     ON CONFLICT (call_id) DO UPDATE SET headers = EXCLUDED.headers, body = EXCLUDED.body",
                )
                .bind(results.iter().map(|(f, _)| f.call_id.0).collect::<Vec<_>>())
                .bind(
                    results
                        .iter()
                        .map(|(f, _)| sqlx::types::Json(f.headers.clone()))
                        .collect::<Vec<_>>(),
                )
                .bind(results.iter().map(|(_, b)| b.clone()).collect::<Vec<_>>())
                .execute(&mut *tx)
                .await?;
            }
        }
        tx.commit().await?;
        Ok(recorded)
    }

    pub async fn invocation(&self, call_id: CallId) -> Result<Option<InvocationRow>, Error> {
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM invocations WHERE call_id = $1"
        ));
        Ok(sqlx::query_as(sql)
            .bind(call_id.0)
            .fetch_optional(&self.pool)
            .await?)
    }

    pub async fn result(&self, call_id: CallId) -> Result<Option<ResultRow>, Error> {
        let row = sqlx::query("SELECT headers, body FROM results WHERE call_id = $1")
            .bind(call_id.0)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| ResultRow {
            headers: r.get::<sqlx::types::Json<Vec<(String, String)>>, _>(0).0,
            body: r.get(1),
        }))
    }

    /// Calls newest first; the last row's position is the cursor for the next page.
    pub async fn list(&self, filter: &ListFilter) -> Result<Vec<InvocationRow>, Error> {
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM invocations
             WHERE ($1::text IS NULL OR function = $1)
               AND ($2::text IS NULL OR status = $2)
               AND ($3::timestamptz IS NULL OR (created_at, call_id) < ($3, $4))
             ORDER BY created_at DESC, call_id DESC
             LIMIT $5"
        ));
        Ok(sqlx::query_as(sql)
            .bind(filter.function.as_deref())
            .bind(filter.status.as_deref())
            .bind(filter.before.map(|b| b.0))
            .bind(filter.before.map(|b| b.1))
            .bind(filter.limit)
            .fetch_all(&self.pool)
            .await?)
    }
}
