//! Callback delivery state on the `invocations` rows and the `callback_attempts` log.
//!
//! The recorder makes a callback `pending` in the write that records the call's final outcome.
//! A dispatcher holds a callback under a lease (a token and an expiry): it either got it from
//! the recorder in its own process, or took it with [`Store::claim_callbacks`] once it was due
//! and unheld. An attempt's outcome is applied only under the lease it was made with, so a
//! dispatcher that was presumed dead, or a callback redelivered meanwhile, never overwrites a
//! newer state; the attempt is logged either way.

use bytes::Bytes;
use chrono::{DateTime, Utc};
use std::time::Duration;
use uuid::Uuid;

use super::Store;
use crate::{CallId, Error};

/// The lowercase host name of a callback URL: the key per-host delivery limits use.
pub fn host_of(url: &str) -> Option<String> {
    url::Url::parse(url)
        .ok()?
        .host_str()
        .map(|h| h.to_ascii_lowercase())
}

/// A callback a dispatcher holds, with everything its request needs.
#[derive(Clone, Debug)]
pub struct Callback {
    pub call_id: CallId,
    pub function: String,
    pub url: String,
    pub host: String,
    /// The call's final status (`succeeded`, `failed`, `dead`, `cancelled`).
    pub status: String,
    pub function_status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
    /// When the call was accepted, unix nanoseconds.
    pub start_time_ns: i64,
    pub duration_seconds: f64,
    pub traceparent: Option<String>,
    pub webhook_id: String,
    /// Executions of the call (`X-Retry` of its last one).
    pub call_attempts: u32,
    /// Attempts of this callback in the current round, and when the round began.
    pub attempts: u32,
    pub round_at: DateTime<Utc>,
    pub lease: Uuid,
}

/// One delivery attempt and what it led to.
#[derive(Clone, Debug)]
pub struct Attempt {
    pub call_id: CallId,
    pub lease: Uuid,
    pub at: DateTime<Utc>,
    pub url: String,
    pub webhook_id: String,
    pub status_code: Option<u16>,
    pub error: Option<String>,
    pub duration_seconds: f64,
    /// `delivered`, `retrying` or `failed`.
    pub outcome: &'static str,
    pub next_at: Option<DateTime<Utc>>,
}

/// An attempt as the delivery log shows it.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct AttemptRow {
    pub at: DateTime<Utc>,
    pub url: String,
    pub webhook_id: String,
    pub status_code: Option<i32>,
    pub error: Option<String>,
    pub duration_seconds: f64,
    pub outcome: String,
    pub next_attempt_at: Option<DateTime<Utc>>,
}

type ClaimedRow = (
    Uuid,
    String,
    String,
    Option<String>,
    String,
    Option<i32>,
    Option<sqlx::types::Json<Vec<(String, String)>>>,
    Option<Vec<u8>>,
    DateTime<Utc>,
    Option<f64>,
    Option<String>,
    i64,
    i32,
    Option<DateTime<Utc>>,
    i32,
);

/// What asking for a redelivery found.
#[derive(Debug, PartialEq, Eq)]
pub enum Redelivery {
    Scheduled,
    NoSuchCall,
    NotFinal,
    NoCallback,
}

impl Store {
    /// Takes up to `limit` due, unheld callbacks under `lease` for `lease_for`, oldest due
    /// first, skipping rows another dispatcher is taking and hosts in `busy_hosts`.
    pub async fn claim_callbacks(
        &self,
        lease: Uuid,
        lease_for: Duration,
        limit: i64,
        busy_hosts: &[String],
    ) -> Result<Vec<Callback>, Error> {
        let rows: Vec<ClaimedRow> = self.run(async |c, p| sqlx::query_as(
            "UPDATE invocations AS i
             SET callback_lease = $1, callback_lease_until = now() + make_interval(secs => $2)
             FROM (SELECT call_id FROM invocations
                   WHERE callback_state IN ('pending', 'retrying') AND callback_next_at <= now()
                     AND (callback_lease_until IS NULL OR callback_lease_until < now())
                     AND NOT (COALESCE(callback_host, '') = ANY($3))
                   ORDER BY callback_next_at
                   LIMIT $4
                   FOR UPDATE SKIP LOCKED) AS due
             WHERE i.call_id = due.call_id
             RETURNING i.call_id, i.function, i.callback_url, i.callback_host, i.status, i.function_status,
                       i.result_headers, i.result_body, i.created_at, i.duration_seconds, i.traceparent,
                       i.final_seq, i.callback_attempts, i.callback_round_at, i.attempts",
        )
        .bind(lease)
        .bind(lease_for.as_secs_f64())
        .bind(busy_hosts)
        .bind(limit)
        .persistent(p).fetch_all(c).await).await?;
        Ok(rows
            .into_iter()
            .map(|r| {
                let call_id = CallId(r.0);
                Callback {
                    call_id,
                    function: r.1,
                    host: r.3.unwrap_or_default(),
                    url: r.2,
                    status: r.4,
                    function_status: r.5.and_then(|s| u16::try_from(s).ok()).unwrap_or(503),
                    headers: r.6.map(|j| j.0).unwrap_or_default(),
                    body: Bytes::from(r.7.unwrap_or_default()),
                    start_time_ns: r.8.timestamp_nanos_opt().unwrap_or_default(),
                    duration_seconds: r.9.unwrap_or(0.0),
                    traceparent: r.10,
                    webhook_id: crate::callback::webhook_id(call_id, r.11),
                    attempts: r.12.max(0) as u32,
                    round_at: r.13.unwrap_or_else(Utc::now),
                    call_attempts: r.14.max(0) as u32,
                    lease,
                }
            })
            .collect())
    }

    /// Logs attempts and applies their outcomes (each only under its own lease), in one
    /// transaction. (`call_id = ANY(...)` keeps the planner on the primary key: joined with
    /// `UNNEST` alone it may hash-join against a scan of the whole table.)
    pub async fn record_callback_attempts(&self, attempts: &[Attempt]) -> Result<(), Error> {
        if attempts.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool().begin().await?;
        let ids: Vec<Uuid> = attempts.iter().map(|a| a.call_id.0).collect();
        let outcomes: Vec<&str> = attempts.iter().map(|a| a.outcome).collect();
        let next: Vec<Option<DateTime<Utc>>> = attempts.iter().map(|a| a.next_at).collect();
        sqlx::query(
            "INSERT INTO callback_attempts (call_id, at, url, webhook_id, status_code, error,
                                            duration_seconds, outcome, next_attempt_at)
             SELECT * FROM UNNEST($1::uuid[], $2::timestamptz[], $3::text[], $4::text[], $5::int4[],
                                  $6::text[], $7::float8[], $8::text[], $9::timestamptz[])",
        )
        .bind(&ids)
        .bind(attempts.iter().map(|a| a.at).collect::<Vec<_>>())
        .bind(attempts.iter().map(|a| a.url.clone()).collect::<Vec<_>>())
        .bind(
            attempts
                .iter()
                .map(|a| a.webhook_id.clone())
                .collect::<Vec<_>>(),
        )
        .bind(
            attempts
                .iter()
                .map(|a| a.status_code.map(i32::from))
                .collect::<Vec<_>>(),
        )
        .bind(attempts.iter().map(|a| a.error.clone()).collect::<Vec<_>>())
        .bind(
            attempts
                .iter()
                .map(|a| a.duration_seconds)
                .collect::<Vec<_>>(),
        )
        .bind(&outcomes)
        .bind(&next)
        .persistent(self.prepared())
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE invocations AS i
             SET callback_state = u.outcome, callback_attempts = i.callback_attempts + 1,
                 callback_next_at = u.next_at, callback_lease = NULL, callback_lease_until = NULL
             FROM UNNEST($1::uuid[], $2::uuid[], $3::text[], $4::timestamptz[]) AS u(call_id, lease, outcome, next_at)
             WHERE i.call_id = ANY($1) AND i.call_id = u.call_id AND i.callback_lease = u.lease",
        )
        .bind(&ids)
        .bind(attempts.iter().map(|a| a.lease).collect::<Vec<_>>())
        .bind(&outcomes)
        .bind(&next)
        .persistent(self.prepared()).execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Gives held callbacks back so any dispatcher's next poll takes them.
    pub async fn release_callbacks(&self, lease: Uuid, calls: &[CallId]) -> Result<(), Error> {
        if calls.is_empty() {
            return Ok(());
        }
        self.run(async |c, p| {
            sqlx::query(
                "UPDATE invocations SET callback_lease = NULL, callback_lease_until = NULL
             WHERE call_id = ANY($1) AND callback_lease = $2",
            )
            .bind(calls.iter().map(|c| c.0).collect::<Vec<_>>())
            .bind(lease)
            .persistent(p)
            .execute(c)
            .await
        })
        .await?;
        Ok(())
    }

    /// The delivery log of a call's callback, oldest attempt first.
    pub async fn callback_log(&self, call_id: CallId) -> Result<Vec<AttemptRow>, Error> {
        self.run(async |c, p| sqlx::query_as(
            "SELECT at, url, webhook_id, status_code, error, duration_seconds, outcome, next_attempt_at
             FROM callback_attempts WHERE call_id = $1 ORDER BY id",
        )
        .bind(call_id.0)
        .persistent(p).fetch_all(c).await).await
    }

    /// Schedules a final call's callback to be sent again now, as a fresh round of attempts
    /// (same `webhook-id`).
    pub async fn redeliver_callback(&self, call_id: CallId) -> Result<Redelivery, Error> {
        let done = self
            .run(async |c, p| {
                sqlx::query(
                    "UPDATE invocations
             SET callback_state = 'pending', callback_attempts = 0, callback_round_at = now(),
                 callback_next_at = now(), callback_lease = NULL, callback_lease_until = NULL
             WHERE call_id = $1 AND final_seq IS NOT NULL AND callback_url IS NOT NULL",
                )
                .bind(call_id.0)
                .persistent(p)
                .execute(c)
                .await
            })
            .await?;
        if done.rows_affected() == 1 {
            return Ok(Redelivery::Scheduled);
        }
        Ok(match self.invocation(call_id).await? {
            None => Redelivery::NoSuchCall,
            Some(row) if row.callback_url.is_none() => Redelivery::NoCallback,
            Some(_) => Redelivery::NotFinal,
        })
    }
}
