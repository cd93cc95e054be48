//! Cancelling calls with `DELETE /async-function/{call_id}`: a queued call never runs, a
//! running exec call's processes are killed, a built-in stops, and the callback says so.

use std::time::Duration;

use fjord_tests::receiver::Receiver;
use fjord_tests::{
    PASSWORD, Platform, USER, error_code, process_gone, script_spec, shared_dir, spec, wait_for,
};

async fn cancel(p: &Platform, id: &str) -> reqwest::Response {
    p.http
        .delete(format!("{}/async-function/{id}", p.url))
        .basic_auth(USER, Some(PASSWORD))
        .send()
        .await
        .unwrap()
}

/// An exec function that leaves a mark for every run and records its process id.
fn marking(name: &str, dir: &std::path::Path) -> fjord_common::stack::FunctionSpec {
    script_spec(
        name,
        dir,
        &format!(
            "echo run >> {dir}/runs\necho $$ > {dir}/pid\nsleep 30",
            dir = dir.display()
        ),
    )
}

#[tokio::test]
async fn a_queued_call_that_is_cancelled_never_runs() {
    let dir = shared_dir("fjord-cancel-");
    let mut p = Platform::start().await;
    let f = p.deploy_spec(marking("later", &dir)).await;
    let receiver = Receiver::start().await;
    let r = p
        .post("/async-function/later")
        .header("X-Callback-Url", &receiver.url)
        .send()
        .await
        .unwrap();
    let id = r.headers()["x-call-id"].to_str().unwrap().to_owned();
    // No worker yet: the call waits in the queue.
    let r = cancel(&p, &id).await;
    assert_eq!(r.status(), 202);
    let s = p.wait_final(&id, Duration::from_secs(10)).await;
    assert_eq!(s["status"], "cancelled", "{s}");
    let got = receiver.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(got[0].header("x-fjord-status"), "cancelled");
    assert_eq!(got[0].header("x-function-status"), "503");

    // A worker that starts now takes the message and drops it without running it.
    p.start_worker(&f).await;
    let consumer = p
        .queue
        .function_consumer(&"later".parse().unwrap())
        .await
        .unwrap();
    wait_for(
        "the worker to take the message",
        Duration::from_secs(10),
        || async {
            let info = consumer.get_info().await.unwrap();
            (info.num_pending == 0 && info.num_ack_pending == 0).then_some(())
        },
    )
    .await;
    assert!(!dir.join("runs").exists(), "the cancelled call ran");
    assert_eq!(p.status(&id).await["status"], "cancelled");
    assert_eq!(receiver.received().len(), 1, "one callback per final state");
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn a_running_exec_call_is_stopped_and_its_processes_killed() {
    let dir = shared_dir("fjord-cancel-");
    let mut p = Platform::start().await;
    let f = p.deploy_spec(marking("long", &dir)).await;
    p.start_worker(&f).await;
    let id = p.call_async("long", "").await;
    let pid: i32 = wait_for("the call to start", Duration::from_secs(10), || async {
        std::fs::read_to_string(dir.join("pid"))
            .ok()?
            .trim()
            .parse()
            .ok()
    })
    .await;
    let r = cancel(&p, &id).await;
    assert_eq!(r.status(), 202);
    wait_for(
        "the process to be killed",
        Duration::from_secs(5),
        || async { process_gone(pid).then_some(()) },
    )
    .await;
    let s = p.wait_final(&id, Duration::from_secs(10)).await;
    assert_eq!(s["status"], "cancelled", "{s}");
    assert_eq!(
        std::fs::read_to_string(dir.join("runs"))
            .unwrap()
            .lines()
            .count(),
        1,
        "run once, never retried"
    );
    let again = cancel(&p, &id).await;
    assert_eq!(error_code(again).await, (409, "already_final".into()));
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn a_running_built_in_stops_and_frees_its_slot() {
    let mut p = Platform::start().await;
    let mut f = spec("nap", "sleep");
    f.environment.insert("max_inflight".into(), "1".into());
    let f = p.deploy_spec(f).await;
    p.start_worker(&f).await;
    let r = p
        .post("/async-function/nap?ms=600000")
        .send()
        .await
        .unwrap();
    let id = r.headers()["x-call-id"].to_str().unwrap().to_owned();
    wait_for("the call to run", Duration::from_secs(10), || async {
        (p.status(&id).await["status"] == "running").then_some(())
    })
    .await;
    assert_eq!(cancel(&p, &id).await.status(), 202);
    assert_eq!(
        p.wait_final(&id, Duration::from_secs(10)).await["status"],
        "cancelled"
    );
    // The one slot is free again.
    let next = p.call_async("nap", "after").await;
    assert_eq!(
        p.wait_final(&next, Duration::from_secs(10)).await["status"],
        "succeeded"
    );
}

#[tokio::test]
async fn cancelling_needs_credentials_and_a_known_call() {
    let p = Platform::start().await;
    let unknown = cancel(&p, &uuid::Uuid::new_v4().to_string()).await;
    assert_eq!(
        error_code(unknown).await,
        (404, "invocation_not_found".into())
    );
    let bad = cancel(&p, "not-a-uuid").await;
    assert_eq!(error_code(bad).await, (400, "invalid_call_id".into()));
    let anonymous = p
        .http
        .delete(format!("{}/async-function/{}", p.url, uuid::Uuid::new_v4()))
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(anonymous).await, (401, "unauthorized".into()));
}
