//! `POST /async-function/{name}`: acceptance, what the function receives, and every bad input.

use std::time::Duration;

use fjord_tests::{Platform, error_code, wait_for};
use serde_json::Value;

#[tokio::test]
async fn async_call_is_accepted_run_and_recorded() {
    let mut p = Platform::start().await;
    let spec = p.deploy("echo", "echo").await;
    p.start_worker(&spec).await;
    let before = fjord_common::invocation::now_ns();
    let r = p
        .post("/async-function/echo")
        .header("Content-Type", "text/x-test")
        .body("hello fjord")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let call_id = r.headers()["x-call-id"].to_str().unwrap().to_owned();
    uuid::Uuid::parse_str(&call_id).expect("X-Call-Id is a UUID");
    let start: i64 = r.headers()["x-start-time"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(start >= before && start <= fjord_common::invocation::now_ns());
    assert!(r.bytes().await.unwrap().is_empty(), "202 has an empty body");

    let s = p.wait_final(&call_id, Duration::from_secs(10)).await;
    assert_eq!(s["status"], "succeeded", "{s}");
    assert_eq!(s["function"], "echo");
    assert_eq!(s["attempts"], 1);
    assert_eq!(s["function_status"], 200);
    for field in ["created_at", "started_at", "finished_at"] {
        let t = s[field].as_str().unwrap();
        assert!(t.ends_with('Z'), "{field} is RFC 3339 UTC: {t}");
        chrono::DateTime::parse_from_rfc3339(t).unwrap();
    }
    assert!(s["duration_seconds"].as_f64().unwrap() >= 0.0);

    let r = p
        .system(&format!("/system/invocations/{call_id}/result"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/x-test");
    assert_eq!(r.headers()["x-function-status"], "200");
    assert_eq!(r.text().await.unwrap(), "hello fjord");
}

#[tokio::test]
async fn function_receives_body_path_query_headers_and_call_headers() {
    let mut p = Platform::start().await;
    let spec = p.deploy("inspect", "inspect").await;
    p.start_worker(&spec).await;
    let body: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
    let r = p
        .post("/async-function/inspect/some/sub/path?a=1&b=two")
        .header("X-Custom", "value-1")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let call_id = r.headers()["x-call-id"].to_str().unwrap().to_owned();
    let start = r.headers()["x-start-time"].to_str().unwrap().to_owned();
    p.wait_final(&call_id, Duration::from_secs(10)).await;
    let seen: Value = p
        .system(&format!("/system/invocations/{call_id}/result"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(seen["method"], "POST");
    assert_eq!(seen["path"], "/some/sub/path");
    assert_eq!(seen["query"], "a=1&b=two");
    assert_eq!(seen["body_len"], body.len());
    let header = |name: &str| {
        seen["headers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|h| h[0].as_str().unwrap().eq_ignore_ascii_case(name))
            .map(|h| h[1].as_str().unwrap().to_owned())
    };
    assert_eq!(header("x-custom").as_deref(), Some("value-1"));
    assert_eq!(header("x-call-id").as_deref(), Some(call_id.as_str()));
    assert_eq!(header("x-start-time").as_deref(), Some(start.as_str()));

    // Byte for byte: echo returns exactly what was sent.
    let spec = p.deploy("echo", "echo").await;
    p.start_worker(&spec).await;
    let call_id = p.call_async("echo", body.clone()).await;
    p.wait_final(&call_id, Duration::from_secs(10)).await;
    let back = p
        .system(&format!("/system/invocations/{call_id}/result"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(&back[..], &body[..]);
}

#[tokio::test]
async fn large_bodies_and_results_travel_out_of_band_and_are_cleaned_up() {
    let mut p = Platform::start().await;
    let spec = p.deploy("echo", "echo").await;
    p.start_worker(&spec).await;
    // Five times NATS's default 1 MiB message limit.
    let body: Vec<u8> = (0..5 * 1024 * 1024).map(|i: u32| (i % 251) as u8).collect();
    assert!(body.len() > p.queue.inline_limit());
    let call_id = p.call_async("echo", body.clone()).await;
    let s = p.wait_final(&call_id, Duration::from_secs(30)).await;
    assert_eq!(s["status"], "succeeded", "{s}");
    let back = p
        .system(&format!("/system/invocations/{call_id}/result"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(back.len(), body.len());
    assert!(back[..] == body[..], "large body came back changed");
    wait_for(
        "stored bodies to be deleted",
        Duration::from_secs(10),
        || async { p.queue.list_objects().await.ok()?.is_empty().then_some(()) },
    )
    .await;
}

#[tokio::test]
async fn client_call_id_and_callback_url_are_kept() {
    let mut p = Platform::start().await;
    let spec = p.deploy("echo", "echo").await;
    p.start_worker(&spec).await;
    let id = uuid::Uuid::new_v4().to_string();
    let r = p
        .post("/async-function/echo")
        .header("X-Call-Id", &id)
        .header("X-Callback-Url", "https://203.0.113.10/hook?x=1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    assert_eq!(r.headers()["x-call-id"].to_str().unwrap(), id);
    let s = p.wait_final(&id, Duration::from_secs(10)).await;
    assert_eq!(s["callback_url"], "https://203.0.113.10/hook?x=1");
    // A repeated POST with the same id is de-duplicated by JetStream: still one record.
    let r = p
        .post("/async-function/echo")
        .header("X-Call-Id", &id)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM invocations")
        .fetch_one(p.store.pool())
        .await
        .unwrap();
    assert_eq!(n, 1);
}

#[tokio::test]
async fn bad_input_gets_clear_errors() {
    let p = Platform::start_with(fjord_tests::Options {
        max_body: 1000,
        ..Default::default()
    })
    .await;
    p.deploy("echo", "echo").await;

    for method in [
        reqwest::Method::GET,
        reqwest::Method::PUT,
        reqwest::Method::PATCH,
    ] {
        let r = p
            .http
            .request(method.clone(), format!("{}/async-function/echo", p.url))
            .send()
            .await
            .unwrap();
        assert_eq!(r.headers()["allow"], "POST, DELETE");
        assert_eq!(
            error_code(r).await,
            (405, "method_not_allowed".into()),
            "{method}"
        );
    }
    let r = p.post("/async-function/nope").send().await.unwrap();
    assert_eq!(error_code(r).await, (404, "function_not_found".into()));
    let r = p.post("/async-function/Not_A_Name").send().await.unwrap();
    assert_eq!(error_code(r).await, (404, "function_not_found".into()));
    let r = p
        .post("/async-function/echo")
        .body(vec![b'x'; 1001])
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r).await, (413, "payload_too_large".into()));
    let r = p
        .post("/async-function/echo")
        .body(vec![b'x'; 1000])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202, "a body at the limit is accepted");
    for bad in [
        "not a url",
        "ftp://example.com/x",
        "http://",
        "/relative",
        "http://169.254.169.254/latest/meta-data/",
        "http://10.1.2.3/",
    ] {
        let r = p
            .post("/async-function/echo")
            .header("X-Callback-Url", bad)
            .send()
            .await
            .unwrap();
        assert_eq!(
            error_code(r).await,
            (400, "invalid_callback_url".into()),
            "{bad}"
        );
    }
    for bad in ["123", "not-a-uuid", ""] {
        let r = p
            .post("/async-function/echo")
            .header("X-Call-Id", bad)
            .send()
            .await
            .unwrap();
        assert_eq!(
            error_code(r).await,
            (400, "invalid_call_id".into()),
            "{bad:?}"
        );
    }
    let r = p.post("/async-function/echo/%FF%FE").send().await.unwrap();
    assert_eq!(
        error_code(r).await,
        (400, "invalid_path".into()),
        "invalid UTF-8 in the sub-path"
    );
    let r = p.system("/system/invocations/%FF").send().await.unwrap();
    assert_eq!(error_code(r).await, (400, "invalid_path".into()));
    let r = p.post("/no/such/route").send().await.unwrap();
    assert_eq!(error_code(r).await, (404, "route_not_found".into()));
    // Nothing refused above was queued.
    let stats = p.queue.stats(&"echo".parse().unwrap()).await.unwrap();
    assert_eq!(stats.pending, 1, "only the call at the limit is queued");
}

#[tokio::test]
async fn unknown_schema_version_is_left_for_a_worker_that_understands_it() {
    let mut p = Platform::start().await;
    let spec = p.deploy("echo", "echo").await;
    p.start_worker(&spec).await;
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Fjord-Schema", "99");
    p.queue
        .js
        .publish_with_headers(
            format!("{}.invoke.echo", p.prefix),
            headers,
            "{}\nfuture".into(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    // The worker receives it, declines it (nak) and it stays in the queue, not acknowledged.
    let consumer = p
        .queue
        .function_consumer(&"echo".parse().unwrap())
        .await
        .unwrap();
    wait_for(
        "the message to be offered and declined",
        Duration::from_secs(10),
        || async {
            let info = consumer.get_info().await.unwrap();
            (info.delivered.stream_sequence > 0 && info.ack_floor.stream_sequence == 0)
                .then_some(())
        },
    )
    .await;
    // A normal call still flows past it.
    let id = p.call_async("echo", "ok").await;
    assert_eq!(
        p.wait_final(&id, Duration::from_secs(10)).await["status"],
        "succeeded"
    );
    let info = consumer.get_info().await.unwrap();
    assert!(
        info.num_ack_pending + info.num_pending as usize >= 1,
        "the unknown message is still queued"
    );
}
