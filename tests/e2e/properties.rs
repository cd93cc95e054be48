//! The properties the core path promises: no execution time limit, redelivery after a crash,
//! workers that need no database, one record per accepted call.

use std::collections::HashSet;
use std::time::Duration;

use fjord_tests::{Options, Platform, wait_for};
use futures::StreamExt;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// Starts a worker process, makes a `sleep` call with `query`, SIGKILLs the worker once the
/// call runs, and starts a second worker. Returns the call id and the second worker.
async fn kill_worker_mid_call(p: &Platform, query: &str) -> (String, tokio::process::Child) {
    let mut first = p.spawn_worker("sleep");
    let r = p
        .post(&format!("/async-function/sleep?{query}"))
        .body("payload")
        .send()
        .await
        .unwrap();
    let id = r.headers()["x-call-id"].to_str().unwrap().to_owned();
    wait_for("the call to start", Duration::from_secs(30), || async {
        (p.status(&id).await["status"] == "running").then_some(())
    })
    .await;
    kill(Pid::from_raw(first.id().unwrap() as i32), Signal::SIGKILL).unwrap();
    first.wait().await.unwrap();
    (id, p.spawn_worker("sleep"))
}

#[tokio::test]
async fn a_call_running_five_times_the_lease_is_neither_redelivered_nor_duplicated() {
    let mut p = Platform::start_with(Options {
        ack_wait: Duration::from_secs(1),
        ..Default::default()
    })
    .await;
    let spec = p.deploy("sleep", "sleep").await;
    p.start_worker(&spec).await;
    p.start_worker(&spec).await;
    let r = p
        .post("/async-function/sleep?ms=5000")
        .send()
        .await
        .unwrap();
    let id = r.headers()["x-call-id"].to_str().unwrap().to_owned();
    let s = p.wait_final(&id, Duration::from_secs(20)).await;
    assert_eq!(s["status"], "succeeded");
    assert_eq!(s["attempts"], 1, "{s}");
    assert!(s["duration_seconds"].as_f64().unwrap() >= 5.0);
    let info = p
        .queue
        .function_consumer(&"sleep".parse().unwrap())
        .await
        .unwrap()
        .get_info()
        .await
        .unwrap();
    assert_eq!(info.num_redelivered, 0);
    assert_eq!(
        info.delivered.consumer_sequence, 1,
        "delivered exactly once"
    );
}

#[tokio::test]
async fn a_worker_killed_mid_call_is_replaced_and_the_call_completes_once() {
    let p = Platform::start_with(Options {
        ack_wait: Duration::from_secs(2),
        ..Default::default()
    })
    .await;
    p.deploy("sleep", "sleep").await;
    let (id, mut second) = kill_worker_mid_call(&p, "ms=3000").await;
    let s = p.wait_final(&id, Duration::from_secs(30)).await;
    assert_eq!(s["status"], "succeeded", "{s}");
    assert_eq!(s["attempts"], 2, "{s}");
    let results: i64 =
        sqlx::query_scalar("SELECT count(*) FROM invocations WHERE result_body IS NOT NULL")
            .fetch_one(p.store.pool())
            .await
            .unwrap();
    assert_eq!(results, 1);
    let r = p
        .system(&format!("/system/invocations/{id}/result"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.text().await.unwrap(), "payload");
    second.start_kill().unwrap();
}

#[tokio::test]
async fn workers_use_no_database_connections() {
    let p = Platform::start_with(Options {
        recorder: false,
        ..Default::default()
    })
    .await;
    p.deploy("echo", "echo").await;
    let mut control = p
        .worker_command()
        .args(["control", "--no-spawn"])
        .env("FJORD_CONTROL_DB_POOL", "2")
        .spawn()
        .unwrap();
    let mut workers: Vec<_> = (0..6)
        .map(|_| {
            p.worker_command()
                .env_remove("DATABASE_URL")
                .args(["run", "--function", "echo"])
                .spawn()
                .unwrap()
        })
        .collect();
    let ids: Vec<String> = futures::stream::iter(0..300)
        .map(|i| p.call_async("echo", format!("{i}")))
        .buffer_unordered(32)
        .collect()
        .await;
    for id in &ids {
        p.wait_final(id, Duration::from_secs(30)).await;
    }
    let connections: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()",
    )
    .fetch_one(p.store.pool())
    .await
    .unwrap();
    // The gateway's read pool (4) and the control process's pool (2), whatever the workers.
    assert!(connections <= 6, "{connections} connections with 6 workers");
    for w in workers.iter_mut() {
        w.start_kill().unwrap();
    }
    control.start_kill().unwrap();
}

#[tokio::test]
async fn thousands_of_concurrent_calls_make_exactly_one_record_each() {
    let mut p = Platform::start().await;
    let spec = p.deploy("echo", "echo").await;
    p.start_worker(&spec).await;
    p.start_worker(&spec).await;
    let ids: Vec<String> = futures::stream::iter(0..3000)
        .map(|i| p.call_async("echo", format!("call {i}")))
        .buffer_unordered(256)
        .collect()
        .await;
    let accepted: HashSet<_> = ids.iter().cloned().collect();
    assert_eq!(accepted.len(), 3000, "every 202 has its own id");
    let rows = wait_for(
        "every call to be recorded as succeeded",
        Duration::from_secs(60),
        || async {
            let rows: Vec<(uuid::Uuid, String)> =
                sqlx::query_as("SELECT call_id, status FROM invocations")
                    .fetch_all(p.store.pool())
                    .await
                    .unwrap();
            rows.iter()
                .all(|(_, s)| s == "succeeded")
                .then_some(rows)
                .filter(|r| r.len() >= 3000)
        },
    )
    .await;
    let recorded: HashSet<_> = rows.iter().map(|(id, _)| id.to_string()).collect();
    assert_eq!(rows.len(), 3000, "one row per call");
    assert_eq!(recorded, accepted);
}

#[tokio::test]
async fn a_call_whose_every_attempt_is_lost_ends_dead_and_leaves_the_stream() {
    let p = Platform::start_with(Options {
        ack_wait: Duration::from_secs(1),
        ..Default::default()
    })
    .await;
    let mut spec = fjord_tests::spec("sleep", "sleep");
    spec.annotations
        .insert("com.openfaas.retry.attempts".into(), "1".into());
    p.deploy_spec(spec).await;
    let (id, mut second) = kill_worker_mid_call(&p, "ms=3000").await;
    let s = p.wait_final(&id, Duration::from_secs(30)).await;
    assert_eq!(s["status"], "dead", "{s}");
    assert_eq!(s["attempts"], 1, "{s}");
    assert_eq!(s["function_status"], 503);
    assert!(s["error"].as_str().unwrap().contains("lost"), "{s}");
    // Terminated, not stuck: nothing pending or in flight for the function.
    let consumer = p
        .queue
        .function_consumer(&"sleep".parse().unwrap())
        .await
        .unwrap();
    wait_for(
        "the message to leave the consumer",
        Duration::from_secs(10),
        || async {
            let info = consumer.get_info().await.unwrap();
            (info.num_pending == 0 && info.num_ack_pending == 0).then_some(())
        },
    )
    .await;
    second.start_kill().unwrap();
}

#[tokio::test]
async fn an_outcome_delivered_twice_is_handed_over_once() {
    // The recorder's ack can be lost (a crash, NATS restarted) and the outcome delivered again:
    // applying it again must not hand its callback to the dispatcher a second time.
    let p = Platform::start_with(Options {
        recorder: false,
        dispatcher: None,
        ..Default::default()
    })
    .await;
    let call = fjord_common::CallId::new();
    let mut finished = fjord_common::invocation::Finished::ended(
        call,
        "echo".parse().unwrap(),
        1,
        fjord_common::invocation::now_ns(),
        fjord_common::invocation::FinalStatus::Succeeded,
        String::new(),
    );
    finished.callback_url = Some("https://203.0.113.10/hook".into());
    let mut batch = fjord_common::store::Batch::default();
    batch.finished.push((finished, b"done".to_vec(), 7));
    let first = p.store.apply(&batch, None).await.unwrap();
    assert_eq!(first, vec![(call, 7)]);
    let again = p.store.apply(&batch, None).await.unwrap();
    assert!(again.is_empty(), "{again:?}");
    assert_eq!(p.status(&call.to_string()).await["status"], "succeeded");
}
