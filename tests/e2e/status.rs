//! `/system/invocations`, `/system/queues`, basic auth and read-your-writes.

use std::time::Duration;

use fjord_tests::{PASSWORD, Platform, USER, wait_for};
use serde_json::Value;

#[tokio::test]
async fn status_right_after_202_is_never_404() {
    let mut p = Platform::start().await;
    let spec = p.deploy("echo", "echo").await;
    p.start_worker(&spec).await;
    for _ in 0..50 {
        let id = p.call_async("echo", "x").await;
        let r = p
            .system(&format!("/system/invocations/{id}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "status right after the 202");
    }
    // An id nobody used is a real 404 once the recorder has caught up.
    let unknown = uuid::Uuid::new_v4();
    let r = p
        .system(&format!("/system/invocations/{unknown}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["code"], "invocation_not_found");
    let r = p
        .system(&format!("/system/invocations/{unknown}/result"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = p
        .system("/system/invocations/not-a-uuid")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
}

#[tokio::test]
async fn status_from_a_second_gateway_without_a_recorder_in_it() {
    // Two gateways on one installation: the second has no recorder of its own.
    let mut p = Platform::start().await;
    let spec = p.deploy("echo", "echo").await;
    p.start_worker(&spec).await;
    let second = fjord_tests::Platform::second_gateway(&p).await;
    for _ in 0..20 {
        let id = p.call_async("echo", "x").await;
        let r = p
            .http
            .get(format!("{second}/system/invocations/{id}"))
            .basic_auth(USER, Some(PASSWORD))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
}

#[tokio::test]
async fn result_is_409_until_final_and_failures_are_recorded_truthfully() {
    let mut p = Platform::start().await;
    let spec = p.deploy("sleep", "sleep").await;
    p.start_worker(&spec).await;
    let r = p
        .post("/async-function/sleep?ms=1500")
        .body("zz")
        .send()
        .await
        .unwrap();
    let id = r.headers()["x-call-id"].to_str().unwrap().to_owned();
    let running = wait_for("the call to run", Duration::from_secs(10), || async {
        let s = p.status(&id).await;
        (s["status"] == "running").then_some(s)
    })
    .await;
    assert_eq!(running["attempts"], 1);
    assert!(running["finished_at"].is_null());
    let r = p
        .system(&format!("/system/invocations/{id}/result"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    assert_eq!(r.json::<Value>().await.unwrap()["code"], "not_finished");
    assert_eq!(
        p.wait_final(&id, Duration::from_secs(10)).await["status"],
        "succeeded"
    );

    // A non-2xx answer from the function is a failure with its status and body kept.
    let r = p
        .post("/async-function/sleep?ms=soon")
        .send()
        .await
        .unwrap();
    let id = r.headers()["x-call-id"].to_str().unwrap().to_owned();
    let s = p.wait_final(&id, Duration::from_secs(10)).await;
    assert_eq!(s["status"], "failed");
    assert_eq!(s["function_status"], 400);
    assert!(s["error"].as_str().unwrap().contains("400"), "{s}");
    let r = p
        .system(&format!("/system/invocations/{id}/result"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-function-status"], "400");
    assert!(r.text().await.unwrap().contains("soon"));
}

#[tokio::test]
async fn listing_filters_and_pages_newest_first() {
    let mut p = Platform::start().await;
    let echo = p.deploy("echo", "echo").await;
    let sleep = p.deploy("sleep", "sleep").await;
    p.start_worker(&echo).await;
    p.start_worker(&sleep).await;
    let mut ids = Vec::new();
    for i in 0..7 {
        ids.push(p.call_async("echo", format!("{i}")).await);
    }
    let failed = p
        .post("/async-function/sleep?ms=bad")
        .send()
        .await
        .unwrap()
        .headers()["x-call-id"]
        .to_str()
        .unwrap()
        .to_owned();
    for id in ids.iter().chain([&failed]) {
        p.wait_final(id, Duration::from_secs(10)).await;
    }
    let page = |q: String| {
        let p = &p;
        async move {
            let r = p
                .system(&format!("/system/invocations?{q}"))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200, "{q}");
            r.json::<Value>().await.unwrap()
        }
    };
    let mut seen = Vec::new();
    let mut cursor = String::new();
    loop {
        let v = page(format!("function=echo&limit=3&before={cursor}")).await;
        for item in v["items"].as_array().unwrap() {
            assert_eq!(item["function"], "echo");
            seen.push(item["call_id"].as_str().unwrap().to_owned());
        }
        match v["next"].as_str() {
            Some(next) => cursor = next.to_owned(),
            None => break,
        }
    }
    let mut newest_first = ids.clone();
    newest_first.reverse();
    assert_eq!(seen, newest_first);
    let v = page("status=failed".into()).await;
    let items = v["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["call_id"], failed.as_str());
    assert!(v["next"].is_null());
    for bad in [
        "status=bogus",
        "limit=0",
        "limit=5000",
        "limit=x",
        "before=garbage",
    ] {
        let r = p
            .system(&format!("/system/invocations?{bad}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{bad}");
        assert_eq!(r.json::<Value>().await.unwrap()["code"], "invalid_query");
    }
}

#[tokio::test]
async fn queues_show_pending_in_flight_and_workers() {
    let mut p = Platform::start().await;
    let spec = p.deploy("sleep", "sleep").await;
    for _ in 0..5 {
        p.post("/async-function/sleep?ms=100").send().await.unwrap();
    }
    let rows: Value = p
        .system("/system/queues")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let row = &rows.as_array().unwrap()[0];
    assert_eq!(row["function"], "sleep");
    assert_eq!(row["pending"], 5);
    assert_eq!(row["in_flight"], 0);
    assert_eq!(row["workers"], 0);
    assert!(row["oldest_pending_seconds"].as_f64().unwrap() >= 0.0);

    // `fjord queues --watch` redraws the table (clear screen, time, table) every 2 s.
    let mut watch = p
        .cli()
        .args(["queues", "--watch"])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(3000)).await;
    watch.start_kill().unwrap();
    let out = watch.wait_with_output().await.unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.matches("\x1b[2J").count() >= 2,
        "two redraws in 3 s: {text:?}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("sleep ") && l.split_whitespace().nth(1) == Some("5")),
        "{text}"
    );

    p.start_worker(&spec).await;
    p.start_worker(&spec).await;
    wait_for(
        "two workers and an empty queue",
        Duration::from_secs(10),
        || async {
            let rows: Value = p
                .system("/system/queues")
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            let row = &rows[0];
            (row["workers"] == 2 && row["pending"] == 0 && row["in_flight"] == 0).then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn system_routes_need_basic_auth_and_healthz_is_open() {
    let p = Platform::start().await;
    for path in [
        "/system/invocations",
        "/system/queues",
        &format!("/system/invocations/{}", uuid::Uuid::new_v4()),
    ] {
        let r = p.http.get(format!("{}{path}", p.url)).send().await.unwrap();
        assert_eq!(r.status(), 401, "{path}");
        assert!(r.headers().contains_key("www-authenticate"));
        assert_eq!(r.json::<Value>().await.unwrap()["code"], "unauthorized");
        let r = p
            .http
            .get(format!("{}{path}", p.url))
            .basic_auth(USER, Some("wrong"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "{path} with a wrong password");
    }
    let r = p
        .http
        .get(format!("{}/healthz", p.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}
