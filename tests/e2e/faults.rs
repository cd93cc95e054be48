//! PostgreSQL and NATS going away under a running installation. These tests start their own
//! server processes so they can stop them.

use std::time::{Duration, Instant};

use fjord_common::services::{LocalNats, LocalPostgres};
use fjord_tests::{Options, Platform, unique, wait_for};
use futures::StreamExt;

fn scratch(tag: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(unique(tag))
}

#[tokio::test]
async fn intake_keeps_accepting_while_postgres_is_down_and_records_catch_up() {
    if !fjord_tests::can_start_servers() {
        return;
    }
    let dir = scratch("fjord-pg-");
    let mut pg = LocalPostgres::start(&dir.join("pg"), 0)
        .await
        .expect("starting PostgreSQL");
    let mut p = Platform::start_with(Options {
        admin_database_url: Some(pg.url("postgres")),
        ..Default::default()
    })
    .await;
    let spec = p.deploy("echo", "echo").await;
    p.start_worker(&spec).await;
    let mut ids: Vec<String> = futures::stream::iter(0..100)
        .map(|i| p.call_async("echo", format!("{i}")))
        .buffer_unordered(16)
        .collect()
        .await;
    pg.stop().await;
    let during: Vec<String> = futures::stream::iter(0..300)
        .map(|i| p.call_async("echo", format!("{i}")))
        .buffer_unordered(16)
        .collect()
        .await;
    ids.extend(during);
    pg.restart().await.expect("restarting PostgreSQL");
    let count = wait_for(
        "every accepted call to be recorded",
        Duration::from_secs(60),
        || async {
            let n: Result<i64, _> =
                sqlx::query_scalar("SELECT count(*) FROM invocations WHERE status = 'succeeded'")
                    .fetch_one(p.store.pool())
                    .await;
            n.ok().filter(|n| *n >= 400)
        },
    )
    .await;
    assert_eq!(count, 400);
    for id in &ids {
        assert_eq!(p.status(id).await["status"], "succeeded");
    }
    drop(p);
    pg.stop().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn intake_answers_503_within_two_seconds_when_nats_is_gone() {
    if !fjord_tests::can_start_servers() {
        return;
    }
    let dir = scratch("fjord-nats-");
    let mut nats = LocalNats::start(&dir, 0)
        .await
        .expect("starting nats-server");
    let mut p = Platform::start_with(Options {
        nats_url: Some(nats.url()),
        ..Default::default()
    })
    .await;
    let spec = p.deploy("echo", "echo").await;
    p.start_worker(&spec).await;
    let before = p.call_async("echo", "before").await;
    p.wait_final(&before, Duration::from_secs(10)).await;
    nats.kill().await;
    for _ in 0..5 {
        let started = Instant::now();
        let r = p
            .post("/async-function/echo")
            .body("lost?")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 503);
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "503 took {:?}",
            started.elapsed()
        );
        assert!(r.headers().contains_key("retry-after"));
        let v: serde_json::Value = r.json().await.unwrap();
        assert_eq!(v["code"], "queue_unavailable");
    }
    nats.restart().await.expect("restarting nats-server");
    // The client reconnects by itself; intake resumes and nothing refused was queued.
    let after = wait_for("intake to resume", Duration::from_secs(20), || async {
        let r = p
            .post("/async-function/echo")
            .body("after")
            .send()
            .await
            .ok()?;
        (r.status() == 202).then(|| r.headers()["x-call-id"].to_str().unwrap().to_owned())
    })
    .await;
    assert_eq!(
        p.wait_final(&after, Duration::from_secs(20)).await["status"],
        "succeeded"
    );
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM invocations")
        .fetch_one(p.store.pool())
        .await
        .unwrap();
    assert_eq!(n, 2, "only the two accepted calls exist");
    drop(p);
    nats.stop().await;
    let _ = std::fs::remove_dir_all(dir);
}
