//! The single-host autoscaler against real NATS with real `fjord-worker` processes: scale from
//! zero on a call, up with backlog (never past max), down after the window (never below min), to
//! zero after idle, manual scaling, and crashed workers replaced, a crash loop shown.

use std::time::Duration;

use fjord_tests::{Platform, error_code, spec, unique, wait_for};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use reqwest::Method;
use serde_json::{Value, json};

const INTERVAL: Duration = Duration::from_millis(200);

fn with_labels(
    name: &str,
    handler: &str,
    labels: &[(&str, &str)],
) -> fjord_common::stack::FunctionSpec {
    let mut s = spec(name, handler);
    for (k, v) in labels {
        s.labels.insert(k.to_string(), v.to_string());
    }
    s
}

async fn function(p: &Platform, name: &str) -> Value {
    let r = p
        .system(&format!("/system/function/{name}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

/// Waits until the function's `replicas`, workers alive and workers answering all equal `n`.
async fn wait_workers(p: &Platform, name: &str, n: u64, timeout: Duration) -> Value {
    wait_for(&format!("{name} to run {n} workers"), timeout, || async {
        let f = function(p, name).await;
        let settled = f["replicas"] == n
            && f["scaling"]["running"] == n
            && f["availableReplicas"] == n
            && p.worker_pids(name).len() as u64 == n;
        settled.then_some(f)
    })
    .await
}

#[tokio::test]
async fn a_call_wakes_a_zero_scaled_function_which_goes_back_to_zero_when_idle() {
    let p = Platform::start().await;
    let name = unique("zero");
    p.deploy_spec(with_labels(
        &name,
        "echo",
        &[
            ("com.openfaas.scale.min", "0"),
            ("com.openfaas.scale.zero-duration", "2s"),
        ],
    ))
    .await;
    let cold_starts = p.start_autoscaler(INTERVAL);
    // Deployed and never called: nothing runs.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let f = wait_workers(&p, &name, 0, Duration::from_secs(5)).await;
    assert_eq!(f["scaling"]["scaleToZero"], true, "{f}");
    assert_eq!(f["scaling"]["idleSeconds"], Value::Null, "{f}");

    let id = p.call_async(&name, "wake up").await;
    let done = p.wait_final(&id, Duration::from_secs(20)).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    wait_workers(&p, &name, 1, Duration::from_secs(5)).await;

    // That call was a cold start, and the control process's /metrics shows it as a histogram.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(fjord_worker::metrics::serve(
        listener,
        p.queue.clone(),
        cold_starts,
        p.shutdown_token(),
    ));
    let text = wait_for(
        "the cold start to be observed",
        Duration::from_secs(5),
        || async {
            let text = p
                .http
                .get(format!("http://{addr}/metrics"))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            text.contains(&format!(
                "fjord_cold_start_seconds_count{{function_name=\"{name}\"}} 1"
            ))
            .then_some(text)
        },
    )
    .await;
    assert!(
        text.contains("# TYPE fjord_cold_start_seconds histogram"),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "fjord_cold_start_seconds_bucket{{function_name=\"{name}\",le=\"+Inf\"}} 1"
        )),
        "{text}"
    );
    let within_a_minute =
        format!("fjord_cold_start_seconds_bucket{{function_name=\"{name}\",le=\"60\"}} 1");
    assert!(text.contains(&within_a_minute), "{text}");

    // Idle for the zero duration (2 s): every worker stops; a later call wakes one again.
    wait_workers(&p, &name, 0, Duration::from_secs(15)).await;
    let id = p.call_async(&name, "again").await;
    let done = p.wait_final(&id, Duration::from_secs(20)).await;
    assert_eq!(done["status"], "succeeded", "{done}");
}

#[tokio::test]
async fn backlog_scales_up_to_max_and_down_to_min_after_the_window() {
    let p = Platform::start().await;
    let name = unique("burst");
    let mut s = with_labels(
        &name,
        "sleep",
        &[
            ("com.openfaas.scale.min", "1"),
            ("com.openfaas.scale.max", "3"),
            ("com.openfaas.scale.target", "2"),
            ("com.fjord.scale.down-window", "2s"),
        ],
    );
    s.environment.insert("max_inflight".into(), "2".into());
    p.deploy_spec(s).await;
    p.start_autoscaler(INTERVAL);
    wait_workers(&p, &name, 1, Duration::from_secs(10)).await;

    // 24 calls of 1 s: ceil(24 / 2) = 12 workers wanted, capped at 3.
    let mut ids = Vec::new();
    for _ in 0..24 {
        let r = p
            .post(&format!("/async-function/{name}?ms=1000"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
        ids.push(r.headers()["x-call-id"].to_str().unwrap().to_owned());
    }
    wait_workers(&p, &name, 3, Duration::from_secs(5)).await;
    let mut most = 0;
    for id in &ids {
        most = most.max(p.worker_pids(&name).len());
        let done = p.wait_final(id, Duration::from_secs(30)).await;
        assert_eq!(done["status"], "succeeded", "{done}");
    }
    assert!(most <= 3, "{most} workers for a max of 3");

    // Idle: after the 2 s window back to min (1), and no further without scale to zero.
    let f = wait_workers(&p, &name, 1, Duration::from_secs(15)).await;
    assert_eq!(f["scaling"]["scaleToZero"], false, "{f}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    wait_workers(&p, &name, 1, Duration::from_secs(2)).await;
}

#[tokio::test]
async fn manual_scaling_holds_until_backlog_needs_more() {
    let p = Platform::start().await;
    let name = unique("manual");
    p.deploy_spec(with_labels(
        &name,
        "echo",
        &[("com.openfaas.scale.max", "4")],
    ))
    .await;
    let scale = |replicas: Value, service: &str| {
        p.admin(Method::POST, &format!("/system/scale-function/{name}"))
            .json(&json!({"serviceName": service, "replicas": replicas}))
            .send()
    };
    // Nobody spawns workers yet (as on Kubernetes, where KEDA does).
    let (status, code) = error_code(scale(json!(2), &name).await.unwrap()).await;
    assert_eq!((status, code.as_str()), (503, "autoscaler_unavailable"));

    p.start_autoscaler(INTERVAL);
    wait_workers(&p, &name, 1, Duration::from_secs(10)).await;
    let r = scale(json!(3), &name).await.unwrap();
    assert_eq!(r.status(), 202);
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        (body["replicas"].clone(), body["manual"].clone()),
        (json!(3), json!(3))
    );
    wait_workers(&p, &name, 3, Duration::from_secs(10)).await;
    // It holds: min is 1 and nothing is queued, yet three keep running.
    tokio::time::sleep(Duration::from_secs(1)).await;
    wait_workers(&p, &name, 3, Duration::from_secs(2)).await;

    for (replicas, service, want) in [
        (json!(5), name.as_str(), (400, "invalid_definition")),
        (json!(-1), name.as_str(), (400, "invalid_definition")),
        (json!(2), "other", (400, "invalid_definition")),
    ] {
        let got = error_code(scale(replicas.clone(), service).await.unwrap()).await;
        assert_eq!((got.0, got.1.as_str()), want, "{replicas} for {service}");
    }
    let r = p
        .admin(Method::POST, "/system/scale-function/nope")
        .json(&json!({"serviceName": "nope", "replicas": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r).await, (404, "function_not_found".to_owned()));

    // Down to zero by hand; a call is backlog that needs a worker, so one starts.
    assert_eq!(scale(json!(0), &name).await.unwrap().status(), 202);
    wait_workers(&p, &name, 0, Duration::from_secs(15)).await;
    let id = p.call_async(&name, "hi").await;
    let done = p.wait_final(&id, Duration::from_secs(20)).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    let f = wait_workers(&p, &name, 1, Duration::from_secs(5)).await;
    assert_eq!(f["scaling"]["manual"], Value::Null, "{f}");
}

#[tokio::test]
async fn crashed_workers_are_replaced_and_a_crash_loop_shows() {
    let p = Platform::start().await;
    let name = unique("crash");
    p.deploy_spec(with_labels(
        &name,
        "echo",
        &[("com.openfaas.scale.min", "2")],
    ))
    .await;
    // A built-in no worker has: deployed straight into the registry (the gateway would refuse
    // it), so its workers exit with an error as soon as they start.
    let broken = unique("broken");
    p.deploy_spec(spec(&broken, "no-such-builtin")).await;
    p.start_autoscaler(INTERVAL);
    wait_workers(&p, &name, 2, Duration::from_secs(10)).await;

    let victim = p.worker_pids(&name)[0];
    kill(Pid::from_raw(victim), Signal::SIGKILL).unwrap();
    let f = wait_for(
        "the killed worker's replacement",
        Duration::from_secs(10),
        || async {
            let f = function(&p, &name).await;
            let pids = p.worker_pids(&name);
            (pids.len() == 2 && !pids.contains(&victim) && f["availableReplicas"] == 2).then_some(f)
        },
    )
    .await;
    assert_eq!(f["scaling"]["crashes"], 1, "{f}");
    assert_eq!(f["scaling"]["crashLoop"], false, "{f}");
    let id = p.call_async(&name, "still served").await;
    assert_eq!(
        p.wait_final(&id, Duration::from_secs(20)).await["status"],
        "succeeded"
    );

    let f = wait_for(
        "the crash loop to show",
        Duration::from_secs(15),
        || async {
            let f = function(&p, &broken).await;
            (f["scaling"]["crashLoop"] == true).then_some(f)
        },
    )
    .await;
    assert!(f["scaling"]["lastExit"].as_str().is_some(), "{f}");
    // Backing off, not spinning: 250 ms, 500 ms, 1 s, 2 s, 4 s ... between attempts.
    let before = f["scaling"]["crashes"].as_u64().unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = function(&p, &broken).await["scaling"]["crashes"]
        .as_u64()
        .unwrap();
    assert!(after - before <= 2, "{} crashes in 3 s", after - before);
    assert_eq!(function(&p, &broken).await["availableReplicas"], 0);
}
