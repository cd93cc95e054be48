//! The raw figures Fjord is compared with, on the same servers: JetStream publish-with-ack
//! (pipelined as deep as the HTTP load), pull-and-ack of those messages, and a PostgreSQL
//! batched insert of rows shaped like Fjord's.

use std::future::IntoFuture;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer, stream};
use futures::StreamExt;

pub struct Baselines {
    pub publish: f64,
    pub pull: f64,
    pub insert: f64,
}

pub async fn run(
    nats_url: &str,
    database_url: &str,
    size: usize,
    in_flight: usize,
    duration: Duration,
) -> anyhow::Result<Baselines> {
    let client = async_nats::connect(nats_url).await?;
    let js = jetstream::new(client);
    let name = format!(
        "benchraw{}",
        &uuid::Uuid::new_v4().simple().to_string()[..10]
    );
    let s = js
        .create_stream(stream::Config {
            name: name.clone(),
            subjects: vec![format!("{name}.>")],
            storage: stream::StorageType::File,
            ..Default::default()
        })
        .await?;
    let payload = bytes::Bytes::from(vec![b'x'; size]);

    let started = Instant::now();
    let mut published = 0u64;
    let mut acks = futures::stream::FuturesUnordered::new();
    while started.elapsed() < duration {
        while acks.len() < in_flight {
            acks.push(
                js.publish(format!("{name}.m"), payload.clone())
                    .await?
                    .into_future(),
            );
        }
        if let Some(ack) = acks.next().await {
            ack?;
            published += 1;
        }
    }
    while let Some(ack) = acks.next().await {
        ack?;
        published += 1;
    }
    let publish = published as f64 / started.elapsed().as_secs_f64();

    let c = s
        .create_consumer(consumer::pull::Config {
            durable_name: Some("raw".into()),
            ack_policy: consumer::AckPolicy::Explicit,
            ..Default::default()
        })
        .await?;
    let mut messages = c.stream().max_messages_per_batch(1000).messages().await?;
    let started = Instant::now();
    let mut pulled = 0u64;
    while pulled < published {
        let m = messages
            .next()
            .await
            .ok_or_else(|| anyhow::anyhow!("pull ended"))?
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        m.ack().await.map_err(|e| anyhow::anyhow!("{e}"))?;
        pulled += 1;
    }
    let pull = pulled as f64 / started.elapsed().as_secs_f64();
    js.delete_stream(&name).await?;

    let pool =
        sqlx::PgPool::connect_with(fjord_common::store::connect_options(database_url)?).await?;
    let started = Instant::now();
    let mut inserted = 0u64;
    // Rows like a finished call's: the result body is the request body, as with echo.
    let body = vec![b'x'; size];
    while started.elapsed() < duration {
        let ids: Vec<uuid::Uuid> = (0..1000).map(|_| uuid::Uuid::now_v7()).collect();
        sqlx::query(
            "INSERT INTO invocations (call_id, function, status, attempts, created_at, started_at, finished_at,
                                      method, path, query, function_status, result_headers, result_body)
             SELECT id, 'raw', 'succeeded', 1, now(), now(), now(), 'POST', '/', '', 200,
                    '[[\"Content-Type\",\"application/octet-stream\"]]', $2
             FROM UNNEST($1::uuid[]) AS id",
        )
        .bind(&ids)
        .bind(&body)
        .execute(&pool)
        .await?;
        inserted += 1000;
    }
    let insert = inserted as f64 / started.elapsed().as_secs_f64();
    sqlx::query("DELETE FROM invocations WHERE function = 'raw'")
        .execute(&pool)
        .await?;
    pool.close().await;
    Ok(Baselines {
        publish,
        pull,
        insert,
    })
}
