//! Dead letters: the request of every call recorded `dead`, kept so it can be re-driven, and
//! the reset of a re-driven call's row.
//!
//! The worker that gives a call up attaches its request to the `dead` outcome; the recorder
//! keeps it here only if that outcome won (the call was not already final). A redrive is a new
//! invocation message with a higher [`CallMeta::redrive`]; when the recorder applies it, the
//! call's row starts over (`queued`, no attempts, no outcome, no callback state) and its dead
//! letter goes, so the row always describes the current round.

use sqlx::{Postgres, Transaction};
use uuid::Uuid;

use super::{Batch, Store};
use crate::invocation::CallMeta;
use crate::{CallId, Error};

/// A dead call's request, as a redrive needs it.
#[derive(Clone, Debug)]
pub struct DeadLetter {
    pub meta: CallMeta,
    pub body: Vec<u8>,
    /// Redrives so far.
    pub redrives: u32,
}

type Row = (Uuid, sqlx::types::Json<CallMeta>, Vec<u8>, i32);

fn dead_letter((_, meta, body, redrives): Row) -> DeadLetter {
    DeadLetter {
        meta: meta.0,
        body,
        redrives: redrives.max(0) as u32,
    }
}

impl Store {
    /// Starts the rows of re-driven calls over (inside the recorder's transaction, before the
    /// batch's upsert applies what the new round already did).
    pub(super) async fn reset_redriven(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        batch: &Batch,
    ) -> Result<(), Error> {
        let redriven: Vec<(Uuid, i32)> = batch
            .invoked
            .iter()
            .filter(|(meta, _)| meta.redrive > 0)
            .map(|(meta, _)| (meta.call_id.0, meta.redrive as i32))
            .collect();
        if redriven.is_empty() {
            return Ok(());
        }
        let reset: Vec<Uuid> = sqlx::query_scalar(
            "UPDATE invocations AS i
             SET status = 'queued', attempts = 0, started_at = NULL, finished_at = NULL,
                 duration_seconds = NULL, function_status = NULL, error = NULL, final_seq = NULL,
                 next_attempt_at = NULL, result_headers = NULL, result_body = NULL,
                 callback_state = NULL, callback_attempts = 0, callback_round_at = NULL,
                 callback_next_at = NULL, callback_lease = NULL, callback_lease_until = NULL,
                 redrives = u.redrive
             FROM UNNEST($1::uuid[], $2::int4[]) AS u(call_id, redrive)
             WHERE i.call_id = u.call_id AND i.redrives < u.redrive AND i.status = 'dead'
             RETURNING i.call_id",
        )
        .bind(redriven.iter().map(|r| r.0).collect::<Vec<_>>())
        .bind(redriven.iter().map(|r| r.1).collect::<Vec<_>>())
        .persistent(self.prepared())
        .fetch_all(&mut **tx)
        .await?;
        sqlx::query("DELETE FROM dead_letters WHERE call_id = ANY($1)")
            .bind(&reset)
            .persistent(self.prepared())
            .execute(&mut **tx)
            .await?;
        Ok(())
    }

    /// Keeps the requests of the calls this batch recorded `dead`.
    pub(super) async fn keep_dead_letters(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        batch: &Batch,
        recorded: &[(CallId, u64)],
    ) -> Result<(), Error> {
        let won: std::collections::HashSet<CallId> = recorded.iter().map(|(id, _)| *id).collect();
        let kept: Vec<&(CallMeta, Vec<u8>)> = batch
            .dead_letters
            .iter()
            .filter(|(meta, _)| won.contains(&meta.call_id))
            .collect();
        if kept.is_empty() {
            return Ok(());
        }
        sqlx::query(
            "INSERT INTO dead_letters (call_id, function, meta, body, dead_at)
             SELECT call_id, function, meta, body, now()
             FROM UNNEST($1::uuid[], $2::text[], $3::jsonb[], $4::bytea[]) AS u(call_id, function, meta, body)
             ON CONFLICT (call_id) DO UPDATE
                 SET meta = EXCLUDED.meta, body = EXCLUDED.body, dead_at = EXCLUDED.dead_at",
        )
        .bind(kept.iter().map(|(m, _)| m.call_id.0).collect::<Vec<_>>())
        .bind(kept.iter().map(|(m, _)| m.function.to_string()).collect::<Vec<_>>())
        .bind(
            kept.iter()
                .map(|(m, _)| sqlx::types::Json(m.clone()))
                .collect::<Vec<_>>(),
        )
        .bind(kept.iter().map(|(_, b)| b.clone()).collect::<Vec<_>>())
        .persistent(self.prepared()).execute(&mut **tx)
        .await?;
        Ok(())
    }

    /// The dead letter of a call that is `dead` now, if its request was kept.
    pub async fn dead_letter(&self, call_id: CallId) -> Result<Option<DeadLetter>, Error> {
        let row: Option<Row> = self
            .run(async |c, p| {
                sqlx::query_as(
                    "SELECT d.call_id, d.meta, d.body, i.redrives
             FROM dead_letters d JOIN invocations i USING (call_id)
             WHERE d.call_id = $1 AND i.status = 'dead'",
                )
                .bind(call_id.0)
                .persistent(p)
                .fetch_optional(c)
                .await
            })
            .await?;
        Ok(row.map(dead_letter))
    }

    /// A page of a function's dead letters in call id order, after `after`; the last one's id
    /// is the cursor for the next page.
    pub async fn dead_letters_of(
        &self,
        function: &str,
        after: Option<CallId>,
        limit: i64,
    ) -> Result<Vec<DeadLetter>, Error> {
        let rows: Vec<Row> = self
            .run(async |c, p| {
                sqlx::query_as(
                    "SELECT d.call_id, d.meta, d.body, i.redrives
             FROM dead_letters d JOIN invocations i USING (call_id)
             WHERE d.function = $1 AND ($2::uuid IS NULL OR d.call_id > $2) AND i.status = 'dead'
             ORDER BY d.call_id
             LIMIT $3",
                )
                .bind(function)
                .bind(after.map(|a| a.0))
                .bind(limit)
                .persistent(p)
                .fetch_all(c)
                .await
            })
            .await?;
        Ok(rows.into_iter().map(dead_letter).collect())
    }
}
