//! `/function/{name}`: the same call, synchronously, through the same queue.

use std::time::Duration;

use fjord_tests::{Options, Platform};
use serde_json::Value;

#[tokio::test]
async fn sync_call_returns_the_functions_response_and_is_recorded() {
    let mut p = Platform::start().await;
    let echo = p.deploy("echo", "echo").await;
    let sleep = p.deploy("sleep", "sleep").await;
    p.start_worker(&echo).await;
    p.start_worker(&sleep).await;
    let r = p
        .http
        .put(format!("{}/function/echo/any/path", p.url))
        .header("Content-Type", "application/json")
        .body(r#"{"a":1}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/json");
    let id = r.headers()["x-call-id"].to_str().unwrap().to_owned();
    assert_eq!(r.text().await.unwrap(), r#"{"a":1}"#);
    // Recorded like any other call (the recorder may be a moment behind the response).
    let s = p.wait_final(&id, Duration::from_secs(10)).await;
    assert_eq!(s["status"], "succeeded");
    assert_eq!(s["attempts"], 1);

    // The function's own failure status comes back as is.
    let r = p
        .http
        .get(format!("{}/function/sleep?ms=nope", p.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);

    // Large results come back whole.
    let big: Vec<u8> = (0..3 * 1024 * 1024).map(|i: u32| (i % 13) as u8).collect();
    let r = p
        .http
        .post(format!("{}/function/echo", p.url))
        .body(big.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.bytes().await.unwrap()[..] == big[..]);
}

#[tokio::test]
async fn sync_timeout_answers_504_and_the_call_carries_on() {
    let mut p = Platform::start_with(Options {
        sync_timeout: Duration::from_secs(1),
        ..Default::default()
    })
    .await;
    let sleep = p.deploy("sleep", "sleep").await;
    p.start_worker(&sleep).await;
    let started = std::time::Instant::now();
    let r = p
        .http
        .post(format!("{}/function/sleep?ms=2500", p.url))
        .body("late")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 504);
    assert!(started.elapsed() < Duration::from_millis(2400));
    let id = r.headers()["x-call-id"].to_str().unwrap().to_owned();
    assert_eq!(r.json::<Value>().await.unwrap()["code"], "sync_timeout");
    let s = p.wait_final(&id, Duration::from_secs(10)).await;
    assert_eq!(s["status"], "succeeded");
}
