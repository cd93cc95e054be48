//! Idempotent intake: repeats of a POST with the same `Idempotency-Key` (or a client's
//! `X-Call-Id`) answer with the original call id and run once, within the window and across
//! gateways.

use std::time::Duration;

use fjord_tests::{Options, Platform, error_code, script_spec, shared_dir};
use futures::StreamExt;

/// An exec function that appends a line per run to `runs` in a fresh folder.
fn counting(name: &str) -> (fjord_common::stack::FunctionSpec, std::path::PathBuf) {
    let dir = shared_dir("fjord-idem-");
    let s = script_spec(
        name,
        &dir,
        &format!("echo run >> {}/runs\ncat", dir.display()),
    );
    (s, dir)
}

fn runs(dir: &std::path::Path) -> usize {
    std::fs::read_to_string(dir.join("runs"))
        .map(|s| s.lines().count())
        .unwrap_or(0)
}

async fn post_keyed(url: &str, function: &str, key: &str, body: &str) -> reqwest::Response {
    fjord_tests::http_client()
        .post(format!("{url}/async-function/{function}"))
        .header("Idempotency-Key", key)
        .body(body.to_owned())
        .send()
        .await
        .unwrap()
}

fn call_id(r: &reqwest::Response) -> String {
    r.headers()["x-call-id"].to_str().unwrap().to_owned()
}

#[tokio::test]
async fn repeats_with_one_key_run_once_across_gateways_and_after_the_dedupe_window() {
    let (f, dir) = counting("once");
    let mut p = Platform::start().await;
    let f = p.deploy_spec(f).await;
    p.start_worker(&f).await;
    let second = p.second_gateway().await;

    // A burst of concurrent repeats, split over two gateways, before anything is recorded.
    let urls = [p.url.clone(), second.clone()];
    let ids: Vec<String> = futures::stream::iter(0..20)
        .map(|i| {
            let url = urls[i % 2].clone();
            async move {
                let r = post_keyed(&url, "once", "order-17", "first").await;
                assert_eq!(r.status(), 202);
                call_id(&r)
            }
        })
        .buffer_unordered(10)
        .collect()
        .await;
    assert!(ids.iter().all(|id| *id == ids[0]), "{ids:?}");
    let s = p.wait_final(&ids[0], Duration::from_secs(10)).await;
    assert_eq!(s["status"], "succeeded");

    // Later repeats (PostgreSQL answers now, whatever JetStream's window) name the same call.
    let r = post_keyed(&second, "once", "order-17", "other body").await;
    assert_eq!(r.status(), 202);
    assert_eq!(call_id(&r), ids[0]);
    assert_eq!(r.headers()["x-fjord-repeated"], "true");
    // Purge JetStream's memory of the message id: only the record can catch the repeat now.
    p.queue.stream().await.unwrap().purge().await.unwrap();
    let r = post_keyed(&p.url, "once", "order-17", "third").await;
    assert_eq!(call_id(&r), ids[0]);

    // Another key, or the same key for another function, is another call.
    let other = post_keyed(&p.url, "once", "order-18", "x").await;
    assert_ne!(call_id(&other), ids[0]);
    p.wait_final(&call_id(&other), Duration::from_secs(10))
        .await;
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM invocations")
        .fetch_one(p.store.pool())
        .await
        .unwrap();
    assert_eq!(n, 2);
    assert_eq!(runs(&dir), 2, "each key ran once");

    let bad = p
        .post("/async-function/once")
        .header("Idempotency-Key", "")
        .send()
        .await
        .unwrap();
    assert_eq!(
        error_code(bad).await,
        (400, "invalid_idempotency_key".into())
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn a_key_starts_a_new_call_once_its_call_is_older_than_the_window() {
    let (f, dir) = counting("windowed");
    let window = Duration::from_millis(1500);
    let mut p = Platform::start_with(Options {
        idempotency_window: window,
        ..Default::default()
    })
    .await;
    let f = p.deploy_spec(f).await;
    p.start_worker(&f).await;
    let started = tokio::time::Instant::now();
    let first = call_id(&post_keyed(&p.url, "windowed", "nightly", "").await);
    // A repeat at once names the same call.
    assert_eq!(
        call_id(&post_keyed(&p.url, "windowed", "nightly", "").await),
        first
    );
    p.wait_final(&first, Duration::from_secs(10)).await;
    // Once the first call is older than the window, the key starts a new one (the wait is
    // the point of the test: it lets the record age).
    tokio::time::sleep_until(started + window + Duration::from_millis(300)).await;
    let second = call_id(&post_keyed(&p.url, "windowed", "nightly", "").await);
    assert_ne!(second, first);
    assert_eq!(
        call_id(&post_keyed(&p.url, "windowed", "nightly", "").await),
        second
    );
    p.wait_final(&second, Duration::from_secs(10)).await;
    assert_eq!(runs(&dir), 2);
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn a_client_call_id_names_one_call_for_good() {
    let (f, dir) = counting("named");
    let mut p = Platform::start().await;
    let f = p.deploy_spec(f).await;
    p.start_worker(&f).await;
    p.deploy("echo", "echo").await;
    let id = uuid::Uuid::new_v4().to_string();
    let post = |function: &'static str| {
        p.post(&format!("/async-function/{function}"))
            .header("X-Call-Id", &id)
            .send()
    };
    assert_eq!(post("named").await.unwrap().status(), 202);
    p.wait_final(&id, Duration::from_secs(10)).await;
    p.queue.stream().await.unwrap().purge().await.unwrap();
    let again = post("named").await.unwrap();
    assert_eq!(again.status(), 202);
    assert_eq!(call_id(&again), id);
    assert_eq!(runs(&dir), 1);
    let elsewhere = post("echo").await.unwrap();
    assert_eq!(error_code(elsewhere).await, (409, "call_id_in_use".into()));
    // The synchronous route runs a call once too, and points to the original.
    let sync = p
        .post("/function/named")
        .header("X-Call-Id", &id)
        .send()
        .await
        .unwrap();
    assert_eq!(sync.headers()["x-call-id"].to_str().unwrap(), id);
    assert_eq!(error_code(sync).await, (409, "duplicate_call".into()));
    assert_eq!(runs(&dir), 1);
    let _ = std::fs::remove_dir_all(dir);
}
