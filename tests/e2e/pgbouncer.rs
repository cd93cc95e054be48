//! Fjord through PgBouncer 1.18 in transaction-pooling mode (no prepared statements across
//! transactions): the gateway's reads and a real control process (recorder, retrier,
//! dispatcher, migrations over a direct connection) all work through it.

use std::time::Duration;

use fjord_common::services::LocalPgBouncer;
use fjord_tests::receiver::Receiver;
use fjord_tests::{Options, Platform, available, spec, unique, with_database};
use futures::StreamExt;
use serde_json::Value;

fn pgbouncer_installed() -> bool {
    std::path::Path::new("/usr/sbin/pgbouncer").exists()
        || std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
            .any(|d| d.join("pgbouncer").exists())
}

#[tokio::test]
async fn calls_callbacks_retries_and_reads_work_through_pgbouncer_transaction_pooling() {
    if !available(
        pgbouncer_installed(),
        "pgbouncer (apt-get install pgbouncer)",
    ) {
        return;
    }
    let dir = std::env::temp_dir().join(unique("fjord-pgb-"));
    let mut bouncer = LocalPgBouncer::start(&dir, 5432)
        .await
        .expect("starting pgbouncer");
    let p = Platform::start_with(Options {
        recorder: false,
        pgbouncer_url: Some(bouncer.url("postgres")),
        ..Default::default()
    })
    .await;
    p.deploy("echo", "echo").await;
    let mut flaky = spec("flaky", "sleep");
    flaky
        .annotations
        .insert("com.openfaas.retry.codes".into(), "400".into());
    flaky
        .annotations
        .insert("com.openfaas.retry.attempts".into(), "2".into());
    flaky
        .annotations
        .insert("com.openfaas.retry.min_wait".into(), "100ms".into());
    p.deploy_spec(flaky).await;
    // The control process records, retries, delivers callbacks and runs the workers, all of its
    // database work through PgBouncer; only the migrations go direct.
    let mut control = p
        .worker_command()
        .args(["control"])
        .env(
            "DATABASE_URL",
            with_database(&bouncer.url("postgres"), &p.db.name),
        )
        .env("FJORD_PGBOUNCER", "1")
        .env("FJORD_MIGRATION_DATABASE_URL", &p.db.url)
        .spawn()
        .unwrap();

    let receiver = Receiver::start().await;
    let ids: Vec<String> = futures::stream::iter(0..300)
        .map(|i| {
            let (p, url) = (&p, receiver.url.clone());
            async move {
                let r = p
                    .post("/async-function/echo")
                    .header("X-Callback-Url", url)
                    .body(format!("call {i}"))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 202);
                r.headers()["x-call-id"].to_str().unwrap().to_owned()
            }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    receiver.wait_for(300, Duration::from_secs(60)).await;
    for id in &ids {
        let s = p.wait_final(id, Duration::from_secs(30)).await;
        assert_eq!(s["status"], "succeeded", "{s}");
        // The receiver has every callback before the attempt's log line is written: the
        // attempt starts when the recorder reads the outcome, its line once the outcome is
        // recorded.
        fjord_tests::wait_for(
            &format!("the callback of {id} to be logged as delivered"),
            Duration::from_secs(30),
            || async {
                let log: Value = p
                    .system(&format!("/system/invocations/{id}/callbacks"))
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                (log["state"] == "delivered" && log["items"].as_array().unwrap().len() == 1)
                    .then_some(())
            },
        )
        .await;
    }
    let list: Value = p
        .system("/system/invocations?function=echo&limit=1000")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["items"].as_array().unwrap().len(), 300);

    // A retried call that dies, its dead letter, and its redrive.
    let r = p.post("/async-function/flaky?ms=bad").send().await.unwrap();
    let dead = r.headers()["x-call-id"].to_str().unwrap().to_owned();
    let s = p.wait_final(&dead, Duration::from_secs(30)).await;
    assert_eq!(
        (s["status"].as_str(), s["attempts"].as_i64()),
        (Some("dead"), Some(2)),
        "{s}"
    );
    let r = p
        .admin(
            reqwest::Method::POST,
            &format!("/system/dead-letters/{dead}/redrive"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    fjord_tests::wait_for(
        "the redrive to be recorded",
        Duration::from_secs(30),
        || async {
            let s = p.status(&dead).await;
            (s["redrives"] == 1 && s["status"] == "dead").then_some(())
        },
    )
    .await;

    // SIGTERM: the control process stops the workers it started before it exits.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(control.id().unwrap() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let _ = tokio::time::timeout(Duration::from_secs(30), control.wait()).await;
    drop(p);
    bouncer.stop().await;
    let _ = std::fs::remove_dir_all(dir);
}
