//! Retries after a backoff, dead letters and redrives, end to end: a real exec function that
//! fails on purpose, the retrier, the recorder and callbacks.

use std::path::Path;
use std::time::Duration;

use fjord_common::queue::ConsumerSettings;
use fjord_common::stack::FunctionSpec;
use fjord_tests::receiver::Receiver;
use fjord_tests::{Platform, error_code, script_spec, shared_dir, wait_for};
use serde_json::Value;

/// An exec function running `script` with these retry settings.
fn script_function(name: &str, dir: &Path, script: &str, retry: &[(&str, &str)]) -> FunctionSpec {
    let mut s = script_spec(name, dir, script);
    for (k, v) in retry {
        s.annotations
            .insert(format!("com.openfaas.retry.{k}"), (*v).into());
    }
    s
}

async fn call_with_callback(p: &Platform, function: &str, url: &str, body: &str) -> String {
    let r = p
        .post(&format!("/async-function/{function}"))
        .header("X-Callback-Url", url)
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    r.headers()["x-call-id"].to_str().unwrap().to_owned()
}

async fn result(p: &Platform, id: &str) -> String {
    p.system(&format!("/system/invocations/{id}/result"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_retryable_failure_runs_again_after_a_backoff_until_it_succeeds() {
    let dir = shared_dir("fjord-retry-");
    let log = dir.join("attempts");
    let script = format!(
        r#"echo "$Http_X_Retry $(date +%s%N)" >> {log}
if [ "$Http_X_Retry" -lt 3 ]; then echo "not yet" >&2; exit 1; fi
printf 'ok %s of %s' "$Http_X_Retry" "$Http_X_Retry_Max""#,
        log = log.display()
    );
    let mut p = Platform::start().await;
    let f = script_function(
        "flaky",
        &dir,
        &script,
        &[("attempts", "4"), ("min_wait", "500ms"), ("max_wait", "5s")],
    );
    let f = p.deploy_spec(f).await;
    p.start_worker(&f).await;
    let receiver = Receiver::start().await;
    let id = call_with_callback(&p, "flaky", &receiver.url, "").await;

    // Between attempts the call is queued again, with the time of its next attempt.
    let waiting = wait_for(
        "the call to wait for a retry",
        Duration::from_secs(20),
        || async {
            let s = p.status(&id).await;
            (s["status"] == "queued" && !s["next_attempt_at"].is_null()).then_some(s)
        },
    )
    .await;
    assert_eq!(waiting["function_status"], 500, "{waiting}");
    assert!(waiting["attempts"].as_i64().unwrap() >= 1, "{waiting}");

    let s = p.wait_final(&id, Duration::from_secs(30)).await;
    assert_eq!(s["status"], "succeeded", "{s}");
    assert_eq!(s["attempts"], 3, "{s}");
    assert!(s["next_attempt_at"].is_null(), "{s}");
    assert!(s["error"].is_null(), "{s}");
    assert_eq!(result(&p, &id).await, "ok 3 of 4");

    // Exponential: about 0.5 s, then about 1 s (±20 %).
    let times: Vec<(u32, i64)> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(|l| {
            let (n, t) = l.split_once(' ').unwrap();
            (n.parse().unwrap(), t.parse().unwrap())
        })
        .collect();
    assert_eq!(times.iter().map(|t| t.0).collect::<Vec<_>>(), [1, 2, 3]);
    let gap = |i: usize| (times[i + 1].1 - times[i].1) as f64 / 1e9;
    assert!(gap(0) >= 0.4 && gap(0) < 3.0, "first wait {}", gap(0));
    assert!(gap(1) >= 0.8 && gap(1) < 4.0, "second wait {}", gap(1));

    let got = receiver.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(got[0].header("x-retry"), "3");
    assert_eq!(got[0].header("x-retry-max"), "4");
    assert_eq!(got[0].header("x-fjord-status"), "succeeded");
    assert_eq!(&got[0].body[..], b"ok 3 of 4");
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn a_status_outside_the_retry_codes_fails_at_once() {
    let mut p = Platform::start().await;
    let f = p.deploy("sleepy", "sleep").await;
    p.start_worker(&f).await;
    let r = p
        .post("/async-function/sleepy?ms=never")
        .send()
        .await
        .unwrap();
    let id = r.headers()["x-call-id"].to_str().unwrap().to_owned();
    let s = p.wait_final(&id, Duration::from_secs(10)).await;
    assert_eq!(s["status"], "failed", "{s}");
    assert_eq!(s["attempts"], 1, "{s}");
    assert_eq!(s["function_status"], 400, "{s}");
}

#[tokio::test]
async fn a_call_out_of_attempts_is_a_dead_letter_that_a_redrive_runs_again() {
    let dir = shared_dir("fjord-retry-");
    let fixed = dir.join("fixed");
    let script = format!(
        "body=$(cat)\n[ -e {fixed} ] || {{ echo broken >&2; exit 1; }}\nprintf 'done: %s' \"$body\"",
        fixed = fixed.display()
    );
    let mut p = Platform::start().await;
    let f = script_function(
        "broken",
        &dir,
        &script,
        &[
            ("attempts", "2"),
            ("min_wait", "100ms"),
            ("max_wait", "100ms"),
        ],
    );
    let f = p.deploy_spec(f).await;
    p.start_worker(&f).await;
    let receiver = Receiver::start().await;
    let id = call_with_callback(&p, "broken", &receiver.url, "the payload").await;
    let s = p.wait_final(&id, Duration::from_secs(20)).await;
    assert_eq!(s["status"], "dead", "{s}");
    assert_eq!(s["attempts"], 2, "{s}");
    assert_eq!(s["function_status"], 500, "{s}");
    let first = receiver.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(first[0].header("x-fjord-status"), "dead");
    assert_eq!(first[0].header("x-retry"), "2");

    // Listed as a dead letter; nothing left behind in the stream.
    let list: Value = p
        .system("/system/dead-letters?function=broken")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let items = list["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{list}");
    assert_eq!(items[0]["call_id"], id.as_str());
    assert!(list["next"].is_null());
    let stream = p.queue.stream().await.unwrap();
    wait_for(
        "the stream to be empty",
        Duration::from_secs(10),
        || async {
            let info = stream.get_info().await.unwrap();
            (info.state.messages == 0).then_some(())
        },
    )
    .await;

    // Redriven once the function is fixed: the same call runs again with fresh attempts.
    std::fs::write(&fixed, "").unwrap();
    let r = p
        .admin(
            reqwest::Method::POST,
            &format!("/system/dead-letters/{id}/redrive"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let s = wait_for(
        "the redriven call to succeed",
        Duration::from_secs(20),
        || async {
            let s = p.status(&id).await;
            (s["status"] == "succeeded").then_some(s)
        },
    )
    .await;
    assert_eq!(s["attempts"], 1, "{s}");
    assert_eq!(s["redrives"], 1, "{s}");
    assert_eq!(result(&p, &id).await, "done: the payload");
    let both = receiver.wait_for(2, Duration::from_secs(10)).await;
    assert_eq!(both[1].header("x-fjord-status"), "succeeded");
    assert_ne!(both[0].header("webhook-id"), both[1].header("webhook-id"));
    let list: Value = p
        .system("/system/dead-letters?function=broken")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(list["items"].as_array().unwrap().is_empty(), "{list}");

    let again = p
        .admin(
            reqwest::Method::POST,
            &format!("/system/dead-letters/{id}/redrive"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(again).await, (409, "not_dead".into()));
    let unknown = p
        .admin(
            reqwest::Method::POST,
            &format!("/system/dead-letters/{}/redrive", uuid::Uuid::new_v4()),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);
    let no_function = p
        .admin(reqwest::Method::POST, "/system/dead-letters/redrive")
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(no_function).await, (400, "invalid_query".into()));
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn many_calls_redriven_at_once_run_again() {
    let dir = shared_dir("fjord-retry-");
    let fixed = dir.join("fixed");
    let script = format!("[ -e {fixed} ] || exit 1\ncat", fixed = fixed.display());
    let mut p = Platform::start().await;
    let f = script_function("bulk", &dir, &script, &[("attempts", "1")]);
    let f = p.deploy_spec(f).await;
    p.start_worker(&f).await;
    let mut ids = Vec::new();
    for i in 0..30 {
        ids.push(p.call_async("bulk", format!("n{i}")).await);
    }
    for id in &ids {
        assert_eq!(
            p.wait_final(id, Duration::from_secs(30)).await["status"],
            "dead"
        );
    }
    std::fs::write(&fixed, "").unwrap();
    let r = p
        .admin(
            reqwest::Method::POST,
            "/system/dead-letters/redrive?function=bulk",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["redriven"], 30, "{v}");
    assert_eq!(v["more"], false, "{v}");
    for (i, id) in ids.iter().enumerate() {
        wait_for(
            "a redriven call to succeed",
            Duration::from_secs(30),
            || async { (p.status(id).await["status"] == "succeeded").then_some(()) },
        )
        .await;
        assert_eq!(result(&p, id).await, format!("n{i}"));
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn calls_waiting_out_a_backoff_hold_no_consumer_slot() {
    let dir = shared_dir("fjord-retry-");
    let script = "body=$(cat)\n[ \"$body\" = fail ] && exit 1\nprintf fresh";
    let mut p = Platform::start().await;
    let f = script_function(
        "picky",
        &dir,
        script,
        &[("attempts", "3"), ("min_wait", "60s"), ("max_wait", "60s")],
    );
    // Four calls handed out at most; eight fail and wait a minute each.
    let settings = ConsumerSettings {
        max_ack_pending: 4,
        ..ConsumerSettings::for_spec(&f, Duration::from_secs(30)).unwrap()
    };
    let f = p.deploy_with(f, settings).await;
    p.start_worker(&f).await;
    let mut failing = Vec::new();
    for _ in 0..8 {
        failing.push(p.call_async("picky", "fail").await);
    }
    for id in &failing {
        wait_for(
            "a failing call to wait for its retry",
            Duration::from_secs(30),
            || async {
                let s = p.status(id).await;
                (s["status"] == "queued" && !s["next_attempt_at"].is_null()).then_some(())
            },
        )
        .await;
    }
    let fresh = p.call_async("picky", "ok").await;
    let s = p.wait_final(&fresh, Duration::from_secs(10)).await;
    assert_eq!(s["status"], "succeeded", "{s}");
    let at = |k: &str| chrono::DateTime::parse_from_rfc3339(s[k].as_str().unwrap()).unwrap();
    let waited = at("started_at") - at("created_at");
    assert!(
        waited < chrono::Duration::seconds(1),
        "the fresh call waited {waited} behind calls in backoff"
    );
    let consumer = p
        .queue
        .function_consumer(&"picky".parse().unwrap())
        .await
        .unwrap();
    let info = consumer.get_info().await.unwrap();
    assert_eq!(info.num_ack_pending, 0, "nothing holds a slot");
    let _ = std::fs::remove_dir_all(dir);
}
