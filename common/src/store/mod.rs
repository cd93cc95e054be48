//! PostgreSQL: the projection of the invocation stream (`invocations`), the embedded
//! migrations, and the reads the gateway serves. Callback delivery state lives on the same rows
//! ([`callbacks`]).
//!
//! Writes come only from the recorder, in batches: one transaction applies a whole batch of
//! stream messages with one `UNNEST` statement per kind, so the cost per call stays far below one
//! commit. Every statement is idempotent (a redelivered message changes nothing) and the first
//! final outcome of a call wins.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::invocation::{CallMeta, Finished, Retrying};
use crate::{CallId, Error};

pub mod callbacks;
pub mod dashboard;
pub mod dead_letters;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

/// Connection options for `database_url`. On loopback, TLS is off unless the URL asks for it
/// (`sslmode=`): sqlx does not set TCP_NODELAY, and over TLS a large batch then stalls on the
/// server's delayed ACK (about 40 ms a batch, measured: 21k rows/s instead of 134k with
/// Debian's default `ssl = on`). TLS on loopback protects nothing.
pub fn connect_options(database_url: &str) -> Result<PgConnectOptions, Error> {
    let options: PgConnectOptions = database_url.parse()?;
    let loopback = matches!(
        options.get_host(),
        "127.0.0.1" | "localhost" | "::1" | "[::1]"
    ) || options.get_host().starts_with('/');
    if loopback && !database_url.contains("sslmode=") {
        return Ok(options.ssl_mode(sqlx::postgres::PgSslMode::Disable));
    }
    Ok(options)
}

/// Applies the embedded migrations over a direct connection (sqlx takes an advisory lock, which
/// needs a session: never run this through PgBouncer's transaction pooling).
pub async fn migrate(database_url: &str) -> Result<(), Error> {
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(Duration::from_secs(10))
        .connect_with(connect_options(database_url)?)
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
    pub callback_state: Option<String>,
    pub callback_attempts: i32,
    pub callback_next_at: Option<DateTime<Utc>>,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub redrives: i32,
    pub traceparent: Option<String>,
}

impl InvocationRow {
    pub fn is_final(&self) -> bool {
        crate::invocation::FINAL_STATUSES.contains(&self.status.as_str())
    }
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
    /// Each with its stream sequence.
    pub invoked: Vec<(CallMeta, u64)>,
    pub started: Vec<Started>,
    /// Each with its result body (already fetched if it was stored out of band) and its
    /// stream sequence.
    pub finished: Vec<(Finished, Vec<u8>, u64)>,
    /// Attempts that failed and will run again after a backoff.
    pub retried: Vec<Retrying>,
    /// Requests of calls recorded `dead` (with their bodies), kept if that outcome wins.
    pub dead_letters: Vec<(CallMeta, Vec<u8>)>,
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
        self.invoked.is_empty()
            && self.started.is_empty()
            && self.finished.is_empty()
            && self.retried.is_empty()
    }
}

/// One call's row as a batch leaves it.
struct MergedRow {
    call_id: Uuid,
    function: String,
    status: &'static str,
    attempts: i32,
    method: Option<String>,
    path: Option<String>,
    query: Option<String>,
    callback_url: Option<String>,
    callback_host: Option<String>,
    traceparent: Option<String>,
    created_at: DateTime<Utc>,
    started_at: Option<DateTime<Utc>>,
    finished_at: Option<DateTime<Utc>>,
    duration_seconds: Option<f64>,
    function_status: Option<i32>,
    error: Option<String>,
    next_attempt_at: Option<DateTime<Utc>>,
    stream_seq: Option<i64>,
    final_seq: Option<i64>,
    result_headers: Option<sqlx::types::Json<Vec<(String, String)>>>,
    result_body: Option<Vec<u8>>,
}

impl MergedRow {
    /// How far a call that is not final has got: its attempt, and whether it is waiting
    /// after that attempt.
    fn phase(&self) -> (i32, bool) {
        (self.attempts, self.next_attempt_at.is_some())
    }

    fn new(call_id: CallId, function: String, created_ns: i64) -> MergedRow {
        MergedRow {
            call_id: call_id.0,
            function,
            status: "queued",
            attempts: 0,
            method: None,
            path: None,
            query: None,
            callback_url: None,
            callback_host: None,
            traceparent: None,
            created_at: ts(created_ns),
            started_at: None,
            finished_at: None,
            duration_seconds: None,
            function_status: None,
            error: None,
            next_attempt_at: None,
            stream_seq: None,
            final_seq: None,
            result_headers: None,
            result_body: None,
        }
    }
}

/// Folds a batch into one row per call. The order of the rules does not matter: finals are
/// ordered by stream sequence (the lowest wins), and until a call is final its status is that
/// of the furthest phase seen — running attempt *n* is behind waiting after attempt *n*, which
/// is behind running attempt *n + 1* (see [`MergedRow::phase`]).
fn merge(batch: &Batch) -> Vec<MergedRow> {
    let mut rows: HashMap<CallId, MergedRow> = HashMap::new();
    for (meta, seq) in &batch.invoked {
        let row = rows.entry(meta.call_id).or_insert_with(|| {
            MergedRow::new(meta.call_id, meta.function.to_string(), meta.start_time_ns)
        });
        row.created_at = ts(meta.start_time_ns);
        row.method = Some(meta.method.clone());
        row.path = Some(meta.path.clone());
        row.query = Some(meta.query.clone());
        row.callback_url = row
            .callback_url
            .take()
            .or_else(|| meta.callback_url.clone());
        row.stream_seq = Some(*seq as i64);
        if !meta.traceparent.is_empty() {
            row.traceparent = Some(meta.traceparent.clone());
        }
    }
    for s in &batch.started {
        let row = rows
            .entry(s.call_id)
            .or_insert_with(|| MergedRow::new(s.call_id, s.function.clone(), s.created_ns));
        if row.final_seq.is_none() && (s.attempt as i32, false) > row.phase() {
            row.status = "running";
            row.next_attempt_at = None;
        }
        row.attempts = row.attempts.max(s.attempt as i32);
        let at = ts(s.at_ns);
        row.started_at = Some(row.started_at.map_or(at, |t| t.min(at)));
    }
    for r in &batch.retried {
        let call = &r.call;
        let row = rows.entry(call.call_id).or_insert_with(|| {
            MergedRow::new(call.call_id, call.function.to_string(), call.start_time_ns)
        });
        if row.final_seq.is_none() && (r.attempt as i32, true) > row.phase() {
            row.status = "queued";
            row.next_attempt_at = Some(ts(r.not_before_ns));
            row.function_status = Some(i32::from(r.function_status));
            row.error = r.error.clone();
        }
        row.attempts = row.attempts.max(r.attempt as i32);
        let at = ts(r.started_ns);
        row.started_at = Some(row.started_at.map_or(at, |t| t.min(at)));
        row.callback_url = row
            .callback_url
            .take()
            .or_else(|| call.callback_url.clone());
    }
    for (f, body, seq) in &batch.finished {
        let row = rows
            .entry(f.call_id)
            .or_insert_with(|| MergedRow::new(f.call_id, f.function.to_string(), f.created_ns));
        row.attempts = row.attempts.max(f.attempt as i32);
        if let Some(started) = f.started_ns {
            let at = ts(started);
            row.started_at = Some(row.started_at.map_or(at, |t| t.min(at)));
        }
        row.callback_url = row.callback_url.take().or_else(|| f.callback_url.clone());
        row.traceparent = row.traceparent.take().or_else(|| f.traceparent.clone());
        if row.final_seq.is_some_and(|k| k < *seq as i64) {
            continue;
        }
        row.status = f.status.as_str();
        row.finished_at = Some(ts(f.finished_ns));
        row.duration_seconds = f.started_ns.map(|s| (f.finished_ns - s) as f64 / 1e9);
        row.function_status = Some(i32::from(f.function_status));
        row.error = f.error.clone();
        row.next_attempt_at = None;
        row.final_seq = Some(*seq as i64);
        row.result_headers = Some(sqlx::types::Json(f.headers.clone()));
        row.result_body = Some(body.clone());
    }
    let mut rows: Vec<MergedRow> = rows.into_values().collect();
    for row in &mut rows {
        row.callback_host = row.callback_url.as_deref().and_then(callbacks::host_of);
    }
    rows
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
                       finished_at, duration_seconds, function_status, error, callback_state, \
                       callback_attempts, callback_next_at, next_attempt_at, redrives, \
                       traceparent";

#[derive(Clone)]
pub struct Store {
    pool: PgPool,
    /// Through PgBouncer's transaction pooling (see [`Store::connect_with`]).
    pgbouncer: bool,
}

impl Store {
    /// A pool of at most `max_connections`; connections are opened lazily.
    pub async fn connect(database_url: &str, max_connections: u32) -> Result<Self, Error> {
        Self::connect_with(database_url, max_connections, false).await
    }

    /// [`Store::connect`], through PgBouncer's transaction pooling when `pgbouncer`
    /// (`FJORD_PGBOUNCER`): every operation is then one transaction of unnamed statements,
    /// since only inside a transaction does PgBouncer keep one server connection from a
    /// statement's preparation to its execution, and a named statement would be left on a
    /// server connection another client gets next.
    pub async fn connect_with(
        database_url: &str,
        max_connections: u32,
        pgbouncer: bool,
    ) -> Result<Self, Error> {
        let mut options = connect_options(database_url)?;
        if pgbouncer {
            options = options.statement_cache_capacity(0);
        }
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(3))
            .connect_lazy_with(options);
        Ok(Store { pool, pgbouncer })
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Whether statements may be prepared and kept on the connection.
    fn prepared(&self) -> bool {
        !self.pgbouncer
    }

    /// Runs one operation on one connection, in a transaction through PgBouncer (see
    /// [`Store::connect_with`]); `op` gets the connection and whether to prepare statements.
    async fn run<T>(
        &self,
        op: impl AsyncFnOnce(&mut PgConnection, bool) -> Result<T, sqlx::Error>,
    ) -> Result<T, Error> {
        if self.pgbouncer {
            let mut tx = self.pool.begin().await?;
            let out = op(&mut tx, false).await?;
            tx.commit().await?;
            Ok(out)
        } else {
            let mut conn = self.pool.acquire().await?;
            Ok(op(&mut conn, true).await?)
        }
    }

    /// Applies a batch in one transaction. Returns the calls whose final state this batch
    /// recorded, each with the stream sequence of the outcome that won; outcomes for calls that
    /// were already final are left out (late outcomes of superseded attempts).
    ///
    /// A call made final with a callback URL gets its callback `pending` in the same write.
    /// With `lease` (the dispatcher in this process and how long it may hold a callback), the
    /// callback is already held by that dispatcher, which the recorder hands it to directly;
    /// without, any dispatcher's poll takes it.
    ///
    /// Everything the batch says about one call (its invocation, start and outcome usually
    /// arrive together under load) is merged into one row first, so a call costs one row write,
    /// not three. The upsert keeps the first final outcome: `final_seq` is the stream sequence
    /// of the event that made the call final, and a row that was not final before and whose
    /// returned `final_seq` is this batch's event was recorded by this batch (so an outcome
    /// delivered twice hands its callback over once).
    pub async fn apply(
        &self,
        batch: &Batch,
        lease: Option<(Uuid, Duration)>,
    ) -> Result<Vec<(CallId, u64)>, Error> {
        let rows = merge(batch);
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let mut tx = self.pool.begin().await?;
        self.reset_redriven(&mut tx, batch).await?;
        let lease_seconds = lease.map_or(0.0, |(_, d)| d.as_secs_f64());
        let returned: Vec<(Uuid, Option<i64>)> = sqlx::query_as(
            "WITH u AS (
                 SELECT *, final_seq IS NOT NULL AND callback_url IS NOT NULL AS cb
                 FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::int4[], $5::text[], $6::text[], $7::text[],
                             $8::text[], $9::timestamptz[], $10::timestamptz[], $11::timestamptz[], $12::float8[],
                             $13::int4[], $14::text[], $15::int8[], $16::int8[], $17::jsonb[], $18::bytea[],
                             $19::text[], $20::text[], $21::timestamptz[])
                      AS u(call_id, function, status, attempts, method, path, query, callback_url, created_at,
                           started_at, finished_at, duration_seconds, function_status, error, stream_seq,
                           final_seq, result_headers, result_body, traceparent, callback_host, next_attempt_at)),
             -- Calls final before this statement: an outcome delivered again (its ack was lost)
             -- returns its own sequence but was recorded by an earlier batch.
             prior AS (SELECT call_id FROM invocations WHERE call_id = ANY($1::uuid[]) AND final_seq IS NOT NULL),
             up AS (
             INSERT INTO invocations AS i (call_id, function, status, attempts, method, path, query, callback_url,
                                           created_at, started_at, finished_at, duration_seconds, function_status,
                                           error, stream_seq, final_seq, result_headers, result_body, traceparent,
                                           callback_host, next_attempt_at, callback_state, callback_round_at,
                                           callback_next_at, callback_lease, callback_lease_until)
             SELECT call_id, function, status, attempts, method, path, query, callback_url, created_at,
                    started_at, finished_at, duration_seconds, function_status, error, stream_seq, final_seq,
                    result_headers, result_body, traceparent, callback_host, next_attempt_at,
                    CASE WHEN cb THEN 'pending' END, CASE WHEN cb THEN now() END, CASE WHEN cb THEN now() END,
                    CASE WHEN cb THEN $22::uuid END,
                    CASE WHEN cb AND $22::uuid IS NOT NULL THEN now() + make_interval(secs => $23) END
             FROM u
             ON CONFLICT (call_id) DO UPDATE SET
                 traceparent = COALESCE(i.traceparent, EXCLUDED.traceparent),
                 callback_host = COALESCE(i.callback_host, EXCLUDED.callback_host),
                 callback_state = CASE WHEN i.final_seq IS NULL AND EXCLUDED.final_seq IS NOT NULL
                                        AND COALESCE(i.callback_url, EXCLUDED.callback_url) IS NOT NULL
                                       THEN 'pending' ELSE i.callback_state END,
                 callback_round_at = CASE WHEN i.final_seq IS NULL AND EXCLUDED.final_seq IS NOT NULL
                                           THEN now() ELSE i.callback_round_at END,
                 callback_next_at = CASE WHEN i.final_seq IS NULL AND EXCLUDED.final_seq IS NOT NULL
                                          THEN now() ELSE i.callback_next_at END,
                 callback_lease = CASE WHEN i.final_seq IS NULL AND EXCLUDED.final_seq IS NOT NULL
                                            AND EXCLUDED.callback_url IS NOT NULL
                                       THEN $22::uuid ELSE i.callback_lease END,
                 callback_lease_until = CASE WHEN i.final_seq IS NULL AND EXCLUDED.final_seq IS NOT NULL
                                                  AND EXCLUDED.callback_url IS NOT NULL AND $22::uuid IS NOT NULL
                                             THEN now() + make_interval(secs => $23) ELSE i.callback_lease_until END,
                 method = COALESCE(EXCLUDED.method, i.method),
                 path = COALESCE(EXCLUDED.path, i.path),
                 query = COALESCE(EXCLUDED.query, i.query),
                 callback_url = COALESCE(i.callback_url, EXCLUDED.callback_url),
                 stream_seq = COALESCE(EXCLUDED.stream_seq, i.stream_seq),
                 attempts = GREATEST(i.attempts, EXCLUDED.attempts),
                 started_at = LEAST(i.started_at, EXCLUDED.started_at),
                 status = CASE WHEN i.final_seq IS NOT NULL THEN i.status
                               WHEN EXCLUDED.final_seq IS NOT NULL THEN EXCLUDED.status
                               WHEN (EXCLUDED.attempts, EXCLUDED.next_attempt_at IS NOT NULL)
                                    > (i.attempts, i.next_attempt_at IS NOT NULL) THEN EXCLUDED.status
                               ELSE i.status END,
                 next_attempt_at = CASE WHEN i.final_seq IS NOT NULL OR EXCLUDED.final_seq IS NOT NULL THEN NULL
                                        WHEN (EXCLUDED.attempts, EXCLUDED.next_attempt_at IS NOT NULL)
                                             > (i.attempts, i.next_attempt_at IS NOT NULL) THEN EXCLUDED.next_attempt_at
                                        ELSE i.next_attempt_at END,
                 finished_at = CASE WHEN i.final_seq IS NULL THEN EXCLUDED.finished_at ELSE i.finished_at END,
                 duration_seconds = CASE WHEN i.final_seq IS NULL THEN EXCLUDED.duration_seconds ELSE i.duration_seconds END,
                 function_status = CASE WHEN i.final_seq IS NOT NULL THEN i.function_status
                                        WHEN EXCLUDED.final_seq IS NOT NULL THEN EXCLUDED.function_status
                                        ELSE COALESCE(EXCLUDED.function_status, i.function_status) END,
                 error = CASE WHEN i.final_seq IS NOT NULL THEN i.error
                              WHEN EXCLUDED.final_seq IS NOT NULL THEN EXCLUDED.error
                              ELSE COALESCE(EXCLUDED.error, i.error) END,
                 result_headers = CASE WHEN i.final_seq IS NULL THEN EXCLUDED.result_headers ELSE i.result_headers END,
                 result_body = CASE WHEN i.final_seq IS NULL THEN EXCLUDED.result_body ELSE i.result_body END,
                 final_seq = COALESCE(i.final_seq, EXCLUDED.final_seq)
             RETURNING call_id, final_seq)
             SELECT call_id, final_seq FROM up WHERE call_id NOT IN (SELECT call_id FROM prior)",
        )
        .bind(rows.iter().map(|r| r.call_id).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.function.clone()).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.status).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.attempts).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.method.clone()).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.path.clone()).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.query.clone()).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.callback_url.clone()).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.created_at).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.started_at).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.finished_at).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.duration_seconds).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.function_status).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.error.clone()).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.stream_seq).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.final_seq).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.result_headers.clone()).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.result_body.clone()).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.traceparent.clone()).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.callback_host.clone()).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.next_attempt_at).collect::<Vec<_>>())
        .bind(lease.map(|(id, _)| id))
        .bind(lease_seconds)
        .persistent(self.prepared()).fetch_all(&mut *tx)
        .await?;
        let ours: HashMap<Uuid, i64> = rows
            .iter()
            .filter_map(|r| r.final_seq.map(|s| (r.call_id, s)))
            .collect();
        let recorded: Vec<(CallId, u64)> = returned
            .into_iter()
            .filter_map(|(id, seq)| {
                let seq = seq?;
                (ours.get(&id) == Some(&seq)).then_some((CallId(id), seq as u64))
            })
            .collect();
        self.keep_dead_letters(&mut tx, batch, &recorded).await?;
        tx.commit().await?;
        Ok(recorded)
    }

    pub async fn invocation(&self, call_id: CallId) -> Result<Option<InvocationRow>, Error> {
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM invocations WHERE call_id = $1"
        ));
        self.run(async |c, p| {
            sqlx::query_as(sql)
                .bind(call_id.0)
                .persistent(p)
                .fetch_optional(c)
                .await
        })
        .await
    }

    /// Which of these calls exist: their function and when they were accepted.
    pub async fn created(
        &self,
        ids: &[CallId],
    ) -> Result<Vec<(CallId, String, DateTime<Utc>)>, Error> {
        let rows: Vec<(Uuid, String, DateTime<Utc>)> = self
            .run(async |c, p| {
                sqlx::query_as(
                    "SELECT call_id, function, created_at FROM invocations WHERE call_id = ANY($1)",
                )
                .bind(ids.iter().map(|id| id.0).collect::<Vec<_>>())
                .persistent(p)
                .fetch_all(c)
                .await
            })
            .await?;
        Ok(rows
            .into_iter()
            .map(|(id, f, at)| (CallId(id), f, at))
            .collect())
    }

    pub async fn result(&self, call_id: CallId) -> Result<Option<ResultRow>, Error> {
        type Stored = (
            Option<sqlx::types::Json<Vec<(String, String)>>>,
            Option<Vec<u8>>,
        );
        let row: Option<Stored> = self.run(async |c, p| sqlx::query_as(
            "SELECT result_headers, result_body FROM invocations WHERE call_id = $1 AND final_seq IS NOT NULL",
        )
        .bind(call_id.0)
        .persistent(p).fetch_optional(c).await).await?;
        Ok(row.map(|(headers, body)| ResultRow {
            headers: headers.map(|j| j.0).unwrap_or_default(),
            body: body.unwrap_or_default(),
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
        self.run(async |c, p| {
            sqlx::query_as(sql)
                .bind(filter.function.as_deref())
                .bind(filter.status.as_deref())
                .bind(filter.before.map(|b| b.0))
                .bind(filter.before.map(|b| b.1))
                .bind(filter.limit)
                .persistent(p)
                .fetch_all(c)
                .await
        })
        .await
    }

    /// Recorded calls per function (OpenFaaS's `invocationCount`): one count per function over
    /// its index, so the cost grows with the rows of the functions asked about.
    pub async fn invocation_counts(
        &self,
        functions: &[String],
    ) -> Result<HashMap<String, i64>, Error> {
        let rows: Vec<(String, i64)> = self
            .run(async |c, p| {
                sqlx::query_as(
                    "SELECT f, (SELECT count(*) FROM invocations WHERE function = f)
             FROM unnest($1::text[]) AS f",
                )
                .bind(functions)
                .persistent(p)
                .fetch_all(c)
                .await
            })
            .await?;
        Ok(rows.into_iter().collect())
    }
}
