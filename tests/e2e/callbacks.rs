//! Callbacks against a real local HTTP receiver: OpenFaaS's format byte for byte, Standard
//! Webhooks signatures (checked here and by the reference Python library), the retry schedule
//! and `Retry-After`, 410, redirects, timeouts, refused networks, the delivery log and
//! redelivery, a first attempt that does not wait for PostgreSQL, a killed dispatcher, and a
//! slow host that must not delay a fast one.

use std::time::{Duration, Instant};

use fjord_common::callback::Signer;
use fjord_tests::receiver::{Received, Receiver, Reply};
use fjord_tests::{
    CALLBACK_SECRETS, Options, Platform, available, dispatch_config, error_code, spec, wait_for,
};
use serde_json::Value;

/// A call with a callback to `url`; returns its id.
async fn call_with_callback(p: &Platform, function: &str, url: &str, body: &[u8]) -> String {
    let r = p
        .post(&format!("/async-function/{function}"))
        .header("X-Callback-Url", url)
        .header("Content-Type", "application/x-fjord-test")
        .body(body.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202, "{:?}", r.text().await);
    r.headers()["x-call-id"].to_str().unwrap().to_owned()
}

/// Deploys echo with these callback annotations and starts a worker for it.
async fn echo_with(p: &mut Platform, name: &str, annotations: &[(&str, &str)]) {
    let mut s = spec(name, "echo");
    for (k, v) in annotations {
        s.annotations.insert((*k).into(), (*v).into());
    }
    let s = p.deploy_spec(s).await;
    p.start_worker(&s).await;
}

/// Whether `webhook-signature` holds a valid signature for every one of the test secrets.
fn signed_by_each_secret(r: &Received) -> bool {
    let id = r.header("webhook-id");
    let ts: i64 = r.header("webhook-timestamp").parse().unwrap();
    let header = r.header("webhook-signature");
    let sent: Vec<&str> = header.split(' ').collect();
    CALLBACK_SECRETS.split(',').all(|secret| {
        let expected = Signer::parse(secret)
            .unwrap()
            .sign(&id, ts, &r.body)
            .unwrap();
        sent.contains(&expected.as_str())
    })
}

async fn callback_state(p: &Platform, id: &str, state: &str) -> Value {
    wait_for(
        &format!("callback of {id} to be {state}"),
        Duration::from_secs(20),
        || async {
            let s = p.status(id).await;
            (s["callback"]["state"] == state).then_some(s)
        },
    )
    .await
}

async fn log(p: &Platform, id: &str) -> Value {
    let r = p
        .system(&format!("/system/invocations/{id}/callbacks"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

#[tokio::test]
async fn delivered_in_openfaas_format_and_signed() {
    let mut p = Platform::start().await;
    echo_with(&mut p, "echo", &[]).await;
    let receiver = Receiver::start().await;
    let body = b"binary \x00\xff body\r\n".to_vec();
    let caller_trace = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let before_ns = chrono::Utc::now().timestamp_nanos_opt().unwrap();
    let r = p
        .post("/async-function/echo/some/path?q=1")
        .header("X-Callback-Url", format!("{}/hook?token=abc", receiver.url))
        .header("Content-Type", "application/x-fjord-test")
        .header("traceparent", caller_trace)
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let id = r.headers()["x-call-id"].to_str().unwrap().to_owned();
    let got = receiver.wait_for(1, Duration::from_secs(10)).await;
    let cb = &got[0];
    assert_eq!(cb.path, "/hook?token=abc");
    assert_eq!(&cb.body[..], &body[..], "body byte for byte");
    assert_eq!(cb.header("content-type"), "application/x-fjord-test");
    assert_eq!(cb.header("x-call-id"), id);
    assert_eq!(cb.header("x-function-name"), "echo");
    assert_eq!(cb.header("x-function-status"), "200");
    assert_eq!(cb.header("x-fjord-status"), "succeeded");
    let duration: f64 = cb.header("x-duration-seconds").parse().unwrap();
    assert!((0.0..5.0).contains(&duration), "{duration}");
    let start: i64 = cb.header("x-start-time").parse().unwrap();
    assert!(
        start >= before_ns && start - before_ns < 5_000_000_000,
        "{start}"
    );
    let tp = cb.header("traceparent");
    assert!(
        tp.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-") && tp.ends_with("-01"),
        "the caller's trace continues: {tp}"
    );
    assert!(cb.header("webhook-id").starts_with("msg_"));
    let ts: i64 = cb.header("webhook-timestamp").parse().unwrap();
    assert!((chrono::Utc::now().timestamp() - ts).abs() < 10);
    assert_eq!(cb.header("webhook-signature").split(' ').count(), 2);
    assert!(signed_by_each_secret(cb), "{:?}", cb.headers);

    let s = callback_state(&p, &id, "delivered").await;
    assert_eq!(s["callback"]["attempts"], 1);
    let l = log(&p, &id).await;
    assert_eq!(l["state"], "delivered");
    let items = l["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["status_code"], 200);
    assert_eq!(items[0]["outcome"], "delivered");
    assert_eq!(items[0]["webhook_id"], cb.header("webhook-id"));
    assert!(items[0]["duration_seconds"].as_f64().unwrap() >= 0.0);
    // Delivered once: no second attempt follows a 2xx.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(receiver.received().len(), 1);
}

/// The first attempt does not wait for PostgreSQL: while the recorder's write is held up (a
/// lock on `invocations`), the callback still arrives; once the write goes through, that one
/// attempt is logged and the callback is `delivered`, with no second delivery.
#[tokio::test]
async fn a_callback_is_attempted_while_its_outcome_is_still_being_written() {
    let mut p = Platform::start().await;
    echo_with(&mut p, "echo", &[]).await;
    let receiver = Receiver::start().await;
    let mut lock = p.store.pool().begin().await.unwrap();
    sqlx::query("LOCK TABLE invocations IN SHARE ROW EXCLUSIVE MODE")
        .execute(&mut *lock)
        .await
        .unwrap();
    let id = call_with_callback(&p, "echo", &receiver.url, b"before the write").await;
    let got = receiver.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(got[0].header("x-call-id"), id);
    assert_eq!(got[0].body, b"before the write"[..]);
    let recorded: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM invocations WHERE call_id = $1::uuid AND final_seq IS NOT NULL",
    )
    .bind(&id)
    .fetch_one(&mut *lock)
    .await
    .unwrap();
    assert_eq!(recorded, 0, "the outcome is not written yet");
    lock.rollback().await.unwrap();

    let s = callback_state(&p, &id, "delivered").await;
    assert_eq!(s["callback"]["attempts"], 1);
    let l = log(&p, &id).await;
    let items = l["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{l}");
    assert_eq!(items[0]["outcome"], "delivered");
    assert_eq!(items[0]["webhook_id"], got[0].header("webhook-id"));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(receiver.received().len(), 1);
}

#[tokio::test]
async fn failed_and_cancelled_calls_report_their_status() {
    let mut p = Platform::start().await;
    let resize = p.deploy_spec(spec("resize", "image-resize")).await;
    p.start_worker(&resize).await;
    p.deploy("idle", "echo").await;
    let receiver = Receiver::start().await;
    let failed = call_with_callback(&p, "resize", &receiver.url, b"not an image").await;
    let got = receiver.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(got[0].header("x-call-id"), failed);
    let code: u16 = got[0].header("x-function-status").parse().unwrap();
    assert!((400..500).contains(&code), "{code}");
    assert_eq!(got[0].header("x-fjord-status"), "failed");
    assert!(
        !got[0].body.is_empty(),
        "the function's error body is passed on"
    );

    // Removing a function cancels its queued calls; their callbacks say so.
    let cancelled = call_with_callback(&p, "idle", &receiver.url, b"never runs").await;
    let r = p
        .admin(reqwest::Method::DELETE, "/system/functions")
        .json(&serde_json::json!({"functionName": "idle"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let got = receiver.wait_for(2, Duration::from_secs(20)).await;
    assert_eq!(got[1].header("x-call-id"), cancelled);
    assert_eq!(got[1].header("x-fjord-status"), "cancelled");
    assert_eq!(got[1].header("x-function-status"), "503");
    assert!(signed_by_each_secret(&got[1]));
}

const SYSTEM_PYTHON: &str = "/usr/bin/python3";

#[tokio::test]
async fn a_standard_webhooks_library_verifies_the_signature() {
    // The system Python, where `.ci/run` installs the package (not whatever `python3` a
    // version manager puts first on PATH).
    let present = std::process::Command::new(SYSTEM_PYTHON)
        .args(["-c", "import standardwebhooks"])
        .status()
        .is_ok_and(|s| s.success());
    if !available(present, "python3 with the standardwebhooks package") {
        return;
    }
    let mut p = Platform::start().await;
    echo_with(&mut p, "echo", &[]).await;
    let receiver = Receiver::start().await;
    call_with_callback(&p, "echo", &receiver.url, b"{\"pdf\": \"ready\"}").await;
    let cb = &receiver.wait_for(1, Duration::from_secs(10)).await[0];
    let dir = std::env::temp_dir().join(fjord_tests::unique("swh"));
    std::fs::create_dir_all(&dir).unwrap();
    let headers: serde_json::Map<String, Value> =
        ["webhook-id", "webhook-timestamp", "webhook-signature"]
            .iter()
            .map(|h| (h.to_string(), Value::String(cb.header(h))))
            .collect();
    std::fs::write(dir.join("headers.json"), Value::Object(headers).to_string()).unwrap();
    std::fs::write(dir.join("body"), &cb.body).unwrap();
    let script = "import json, sys\n\
                  from standardwebhooks.webhooks import Webhook\n\
                  headers = json.load(open(sys.argv[1]))\n\
                  body = open(sys.argv[2], 'rb').read()\n\
                  for secret in sys.argv[3].split(','):\n\
                  \x20   Webhook(secret).verify(body, headers, json_parse=False)\n\
                  try:\n\
                  \x20   Webhook('whsec_' + 'd3Jvbmc=').verify(body, headers, json_parse=False)\n\
                  \x20   print('a wrong secret verified')\n\
                  except Exception:\n\
                  \x20   print('verified')\n";
    let out = tokio::process::Command::new(SYSTEM_PYTHON)
        .args(["-c", script])
        .arg(dir.join("headers.json"))
        .arg(dir.join("body"))
        .arg(CALLBACK_SECRETS)
        .output()
        .await
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "verified",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn retries_follow_the_schedule_and_honour_retry_after() {
    let mut p = Platform::start().await;
    echo_with(
        &mut p,
        "echo",
        &[
            ("com.fjord.callback.min_wait", "300ms"),
            ("com.fjord.callback.max_wait", "5s"),
            ("com.fjord.callback.attempts", "5"),
        ],
    )
    .await;
    let receiver = Receiver::start().await;
    receiver.reply(Reply::status(500));
    receiver.reply(Reply::status(503).header("Retry-After", "2"));
    let id = call_with_callback(&p, "echo", &receiver.url, b"again").await;
    receiver.wait_for(2, Duration::from_secs(10)).await;
    let s = wait_for(
        "the second attempt to be recorded",
        Duration::from_secs(10),
        || async {
            let s = p.status(&id).await;
            (s["callback"]["attempts"] == 2).then_some(s)
        },
    )
    .await;
    assert_eq!(s["callback"]["state"], "retrying");
    assert!(s["callback"]["next_attempt_at"].is_string());
    let got = receiver.wait_for(3, Duration::from_secs(10)).await;
    let first_gap = got[1].at - got[0].at;
    let second_gap = got[2].at - got[1].at;
    assert!(
        first_gap >= Duration::from_millis(240) && first_gap < Duration::from_millis(1500),
        "backoff after the first failure: {first_gap:?}"
    );
    assert!(
        second_gap >= Duration::from_millis(1950),
        "Retry-After: 2 is honoured: {second_gap:?}"
    );
    let ids: Vec<String> = got.iter().map(|r| r.header("webhook-id")).collect();
    assert!(ids.iter().all(|i| *i == ids[0]), "same webhook-id: {ids:?}");
    assert!(got.iter().all(signed_by_each_secret));
    assert!(got.iter().all(|r| r.body == b"again"[..]));
    let s = callback_state(&p, &id, "delivered").await;
    assert_eq!(s["callback"]["attempts"], 3);
    let items = log(&p, &id).await["items"].as_array().unwrap().clone();
    let codes: Vec<(i64, String)> = items
        .iter()
        .map(|i| {
            (
                i["status_code"].as_i64().unwrap(),
                i["outcome"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        codes,
        [
            (500, "retrying".into()),
            (503, "retrying".into()),
            (200, "delivered".into())
        ]
    );
    assert!(items[0]["next_attempt_at"].is_string());
}

#[tokio::test]
async fn gone_stops_and_running_out_of_attempts_fails() {
    let mut p = Platform::start().await;
    echo_with(
        &mut p,
        "echo",
        &[
            ("com.fjord.callback.min_wait", "100ms"),
            ("com.fjord.callback.attempts", "3"),
        ],
    )
    .await;
    let gone = Receiver::start().await;
    gone.otherwise(Reply::status(410));
    let failing = Receiver::start().await;
    failing.otherwise(Reply::status(500));
    let a = call_with_callback(&p, "echo", &gone.url, b"a").await;
    let b = call_with_callback(&p, "echo", &failing.url, b"b").await;
    let s = callback_state(&p, &a, "failed").await;
    assert_eq!(s["callback"]["attempts"], 1);
    callback_state(&p, &b, "failed").await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(gone.received().len(), 1, "410 Gone stops retrying");
    assert_eq!(failing.received().len(), 3, "three attempts in total");
    let items = log(&p, &b).await["items"].as_array().unwrap().clone();
    assert_eq!(items.len(), 3);
    assert_eq!(items[2]["outcome"], "failed");
    assert!(items[2]["next_attempt_at"].is_null());
}

#[tokio::test]
async fn only_307_and_308_redirects_are_followed_and_their_targets_checked() {
    let mut p = Platform::start().await;
    echo_with(&mut p, "echo", &[("com.fjord.callback.attempts", "1")]).await;
    let target = Receiver::start().await;
    let r307 = Receiver::start().await;
    r307.reply(Reply::status(307).header("Location", &format!("{}/moved", target.url)));
    let r308 = Receiver::start().await;
    r308.reply(Reply::status(308).header("Location", "/relative"));
    let r302 = Receiver::start().await;
    let not_followed = Receiver::start().await;
    r302.otherwise(Reply::status(302).header("Location", &not_followed.url));
    let to_metadata = Receiver::start().await;
    to_metadata.otherwise(
        Reply::status(307).header("Location", "http://169.254.169.254/latest/meta-data/"),
    );

    let a = call_with_callback(&p, "echo", &r307.url, b"body 307").await;
    let b = call_with_callback(&p, "echo", &r308.url, b"body 308").await;
    let c = call_with_callback(&p, "echo", &r302.url, b"body 302").await;
    let d = call_with_callback(&p, "echo", &to_metadata.url, b"body meta").await;

    let moved = &target.wait_for(1, Duration::from_secs(10)).await[0];
    assert_eq!(moved.path, "/moved");
    assert_eq!(moved.body, b"body 307"[..], "307 re-sends the body");
    assert!(signed_by_each_secret(moved));
    let got = r308.wait_for(2, Duration::from_secs(10)).await;
    assert_eq!(got[1].path, "/relative");
    assert_eq!(got[1].body, b"body 308"[..]);
    callback_state(&p, &a, "delivered").await;
    callback_state(&p, &b, "delivered").await;
    assert!(
        log(&p, &a).await["items"][0]["url"]
            .as_str()
            .unwrap()
            .ends_with("/moved")
    );

    callback_state(&p, &c, "failed").await;
    assert!(not_followed.received().is_empty(), "302 is not followed");
    let e = log(&p, &c).await["items"][0].clone();
    assert_eq!(e["status_code"], 302);
    assert!(e["error"].as_str().unwrap().contains("not followed"), "{e}");

    callback_state(&p, &d, "failed").await;
    let e = log(&p, &d).await["items"][0].clone();
    assert!(
        e["error"].as_str().unwrap().contains("169.254.169.254"),
        "{e}"
    );
    assert!(e["error"].as_str().unwrap().contains("refused"), "{e}");
}

#[tokio::test]
async fn a_receiver_that_does_not_answer_in_time_is_retried() {
    let mut p = Platform::start().await;
    echo_with(
        &mut p,
        "echo",
        &[
            ("com.fjord.callback.timeout", "300ms"),
            ("com.fjord.callback.min_wait", "100ms"),
        ],
    )
    .await;
    let receiver = Receiver::start().await;
    receiver.reply(Reply::status(200).after(Duration::from_secs(3)));
    let id = call_with_callback(&p, "echo", &receiver.url, b"slow").await;
    callback_state(&p, &id, "delivered").await;
    let items = log(&p, &id).await["items"].as_array().unwrap().clone();
    assert_eq!(items.len(), 2);
    assert!(items[0]["status_code"].is_null());
    assert!(
        items[0]["error"].as_str().unwrap().contains("timed out"),
        "{}",
        items[0]
    );
    assert!(items[0]["duration_seconds"].as_f64().unwrap() < 1.0);
    assert_eq!(items[1]["status_code"], 200);
}

#[tokio::test]
async fn refused_networks_are_refused_at_intake_and_at_connect_time() {
    let p = Platform::start_with(Options {
        gateway_allow_nets: String::new(),
        ..Default::default()
    })
    .await;
    p.deploy("echo", "echo").await;
    for refused in [
        "http://127.0.0.1:9/hook",
        "http://localhost/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.1/",
        "http://192.168.1.10/",
        "http://[::1]/",
        "http://[fe80::1]/",
        "http://0.0.0.0/",
        "http://[::ffff:127.0.0.1]/",
        "http://no-such-host.invalid/",
        "ftp://203.0.113.10/",
    ] {
        let r = p
            .post("/async-function/echo")
            .header("X-Callback-Url", refused)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{refused}");
        let e: Value = r.json().await.unwrap();
        assert_eq!(e["code"], "invalid_callback_url", "{refused}");
    }
    let r = p
        .post("/async-function/echo")
        .header("X-Callback-Url", "https://203.0.113.10/public")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202, "a public address is accepted");

    // The gateway allows loopback here but the dispatcher does not: the connect-time check
    // refuses the receiver, whether named or given as an address.
    let mut dispatch = dispatch_config();
    dispatch.networks = fjord_common::callback::Networks::default();
    let mut p = Platform::start_with(Options {
        dispatcher: Some(dispatch),
        ..Default::default()
    })
    .await;
    echo_with(&mut p, "echo", &[("com.fjord.callback.attempts", "1")]).await;
    let receiver = Receiver::start().await;
    let port = receiver.url.rsplit(':').next().unwrap().to_owned();
    let named = call_with_callback(&p, "echo", &format!("http://localhost:{port}/"), b"x").await;
    let literal = call_with_callback(&p, "echo", &receiver.url, b"x").await;
    for id in [named, literal] {
        callback_state(&p, &id, "failed").await;
        let e = log(&p, &id).await["items"][0]["error"].clone();
        assert!(e.as_str().unwrap().contains("refused"), "{e}");
    }
    assert!(receiver.received().is_empty());
}

#[tokio::test]
async fn the_log_and_redelivery_endpoints() {
    let mut p = Platform::start().await;
    echo_with(&mut p, "echo", &[]).await;
    let slow = p.deploy_spec(spec("sleep", "sleep")).await;
    p.start_worker(&slow).await;
    let receiver = Receiver::start().await;
    let id = call_with_callback(&p, "echo", &receiver.url, b"twice").await;
    callback_state(&p, &id, "delivered").await;
    let r = p
        .admin(
            reqwest::Method::POST,
            &format!("/system/invocations/{id}/callbacks/redeliver"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let got = receiver.wait_for(2, Duration::from_secs(10)).await;
    assert_eq!(got[0].header("webhook-id"), got[1].header("webhook-id"));
    assert_eq!(got[1].body, b"twice"[..]);
    wait_for("two logged attempts", Duration::from_secs(10), || async {
        let l = log(&p, &id).await;
        (l["items"].as_array().unwrap().len() == 2 && l["state"] == "delivered").then_some(())
    })
    .await;

    let redeliver = |id: String| {
        p.admin(
            reqwest::Method::POST,
            &format!("/system/invocations/{id}/callbacks/redeliver"),
        )
        .send()
    };
    let unknown = uuid::Uuid::new_v4().to_string();
    assert_eq!(
        error_code(redeliver(unknown.clone()).await.unwrap()).await,
        (404, "invocation_not_found".into())
    );
    assert_eq!(
        error_code(redeliver("nope".into()).await.unwrap()).await,
        (400, "invalid_call_id".into())
    );
    let r = p
        .system(&format!("/system/invocations/{unknown}/callbacks"))
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r).await, (404, "invocation_not_found".into()));
    let plain = p.call_async("echo", "no callback").await;
    p.wait_final(&plain, Duration::from_secs(10)).await;
    assert_eq!(
        error_code(redeliver(plain.clone()).await.unwrap()).await,
        (409, "no_callback".into())
    );
    assert!(p.status(&plain).await["callback"].is_null());
    let running = call_with_callback(&p, "sleep?ms=5000", &receiver.url, b"").await;
    let s = wait_for("the sleep to start", Duration::from_secs(10), || async {
        let s = p.status(&running).await;
        (s["status"] == "running").then_some(s)
    })
    .await;
    assert_eq!(s["callback"]["state"], "pending", "{s}");
    assert_eq!(s["callback"]["attempts"], 0);
    assert_eq!(
        error_code(redeliver(running).await.unwrap()).await,
        (409, "not_finished".into())
    );
    let r = p
        .http
        .post(format!(
            "{}/system/invocations/{id}/callbacks/redeliver",
            p.url
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "behind basic auth");
}

#[tokio::test]
async fn a_killed_dispatcher_is_taken_over_with_the_same_webhook_id() {
    let mut p = Platform::start_with(Options {
        recorder: false,
        ..Default::default()
    })
    .await;
    let s = p.deploy("echo", "echo").await;
    p.start_worker(&s).await;
    let control = || {
        let mut c = p.worker_command();
        c.args(["control", "--no-spawn"])
            .env("FJORD_CALLBACK_LEASE", "2s");
        c.spawn().unwrap()
    };
    let mut first = control();
    let receiver = Receiver::start().await;
    // The first attempt never gets an answer: the dispatcher is killed while it waits.
    receiver.reply(Reply::status(200).after(Duration::from_secs(120)));
    let id = call_with_callback(&p, "echo", &receiver.url, b"at least once").await;
    receiver.wait_for(1, Duration::from_secs(20)).await;
    first.start_kill().unwrap();
    first.wait().await.unwrap();
    let killed_at = Instant::now();
    let _second = control();
    let got = receiver.wait_for(2, Duration::from_secs(20)).await;
    assert!(killed_at.elapsed() < Duration::from_secs(15));
    assert_eq!(got[0].header("webhook-id"), got[1].header("webhook-id"));
    assert_eq!(got[1].body, b"at least once"[..]);
    assert!(signed_by_each_secret(&got[1]));
    callback_state(&p, &id, "delivered").await;
}

#[tokio::test]
async fn a_slow_host_does_not_delay_callbacks_to_another() {
    let mut dispatch = dispatch_config();
    dispatch.host_concurrency = 4;
    dispatch.concurrency = 16;
    let mut p = Platform::start_with(Options {
        dispatcher: Some(dispatch),
        ..Default::default()
    })
    .await;
    echo_with(&mut p, "echo", &[]).await;
    let slow = Receiver::start_on("127.0.0.2:0").await;
    slow.otherwise(Reply::status(200).after(Duration::from_secs(3)));
    let fast = Receiver::start().await;
    for i in 0..200 {
        call_with_callback(&p, "echo", &slow.url, format!("slow {i}").as_bytes()).await;
    }
    slow.wait_for(4, Duration::from_secs(10)).await;
    let started = Instant::now();
    for i in 0..20 {
        call_with_callback(&p, "echo", &fast.url, format!("fast {i}").as_bytes()).await;
    }
    fast.wait_for(20, Duration::from_secs(5)).await;
    let took = started.elapsed();
    assert!(took < Duration::from_secs(2), "fast host waited {took:?}");
    assert!(
        slow.received().len() <= 8,
        "at most 4 at a time to the slow host: {}",
        slow.received().len()
    );
}

#[tokio::test]
async fn thousands_of_callbacks_backing_off_delay_nobody() {
    let mut p = Platform::start().await;
    echo_with(
        &mut p,
        "echo",
        &[
            ("com.fjord.callback.min_wait", "10m"),
            ("com.fjord.callback.max_wait", "10m"),
        ],
    )
    .await;
    let failing = Receiver::start().await;
    failing.otherwise(Reply::status(500));
    for i in 0..1000 {
        call_with_callback(&p, "echo", &failing.url, format!("{i}").as_bytes()).await;
    }
    failing.wait_for(1000, Duration::from_secs(60)).await;
    wait_for(
        "1000 callbacks to be retrying",
        Duration::from_secs(30),
        || async {
            let n: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM invocations WHERE callback_state = 'retrying'",
            )
            .fetch_one(p.store.pool())
            .await
            .unwrap();
            (n == 1000).then_some(())
        },
    )
    .await;
    let fresh = Receiver::start().await;
    let started = Instant::now();
    call_with_callback(&p, "echo", &fresh.url, b"not stuck").await;
    fresh.wait_for(1, Duration::from_secs(5)).await;
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(failing.received().len(), 1000, "nothing retried early");
}
