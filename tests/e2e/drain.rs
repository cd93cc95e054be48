//! Graceful stops: SIGTERM on a worker lets running calls finish within `FJORD_DRAIN_GRACE`, then
//! hands the rest back for immediate redelivery as the same attempt; SIGTERM on the gateway
//! finishes the requests in flight.

use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use fjord_tests::{Platform, wait_for};

fn terminate(child: &tokio::process::Child) {
    kill(Pid::from_raw(child.id().unwrap() as i32), Signal::SIGTERM).unwrap();
}

async fn post_sleep(p: &Platform, function: &str, ms: u64) -> String {
    let r = p
        .post(&format!("/async-function/{function}?ms={ms}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    r.headers()["x-call-id"].to_str().unwrap().to_owned()
}

async fn wait_running(p: &Platform, id: &str) {
    wait_for("the call to run", Duration::from_secs(30), || async {
        (p.status(id).await["status"] == "running").then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_stopping_worker_finishes_its_running_calls_and_takes_no_new_ones() {
    let p = Platform::start().await;
    p.deploy("nap", "sleep").await;
    let mut worker = p.spawn_worker("nap");
    let id = post_sleep(&p, "nap", 4000).await;
    wait_running(&p, &id).await;
    terminate(&worker);
    // Once its last pull request has lapsed the stopping worker asks for nothing more.
    let consumer = p
        .queue
        .function_consumer(&"nap".parse().unwrap())
        .await
        .unwrap();
    wait_for(
        "the worker to stop pulling",
        Duration::from_secs(5),
        || async { (consumer.get_info().await.unwrap().num_waiting == 0).then_some(()) },
    )
    .await;
    let later = post_sleep(&p, "nap", 0).await;
    let exit = tokio::time::timeout(Duration::from_secs(10), worker.wait())
        .await
        .expect("the worker exits after its call")
        .unwrap();
    assert!(exit.success(), "{exit:?}");
    let s = p.wait_final(&id, Duration::from_secs(5)).await;
    assert_eq!(s["status"], "succeeded", "{s}");
    assert_eq!(s["attempts"], 1, "{s}");
    // The call posted after SIGTERM was left for the next worker, with no attempt spent.
    assert_eq!(p.status(&later).await["status"], "queued");
    let mut next = p.spawn_worker("nap");
    let s = p.wait_final(&later, Duration::from_secs(20)).await;
    assert_eq!(s["status"], "succeeded", "{s}");
    assert_eq!(s["attempts"], 1, "{s}");
    next.start_kill().unwrap();
}

#[tokio::test]
async fn calls_unfinished_at_the_end_of_the_grace_run_again_at_once_as_the_same_attempt() {
    let p = Platform::start().await;
    p.deploy("nap", "sleep").await;
    let mut worker = p
        .worker_command()
        .env("FJORD_DRAIN_GRACE", "1s")
        .args(["run", "--function", "nap"])
        .spawn()
        .unwrap();
    let id = post_sleep(&p, "nap", 5000).await;
    wait_running(&p, &id).await;
    let stopped = Instant::now();
    terminate(&worker);
    tokio::time::timeout(Duration::from_secs(10), worker.wait())
        .await
        .expect("the worker exits at the end of its grace")
        .unwrap();
    assert!(
        stopped.elapsed() < Duration::from_secs(5),
        "{:?}",
        stopped.elapsed()
    );
    let mut next = p.spawn_worker("nap");
    let s = p.wait_final(&id, Duration::from_secs(25)).await;
    // Not after the 30 s lease: handed back, run again, and the interrupted run cost no attempt.
    assert!(
        stopped.elapsed() < Duration::from_secs(25),
        "{:?}",
        stopped.elapsed()
    );
    assert_eq!(s["status"], "succeeded", "{s}");
    assert_eq!(s["attempts"], 1, "{s}");
    next.start_kill().unwrap();
}

#[tokio::test]
async fn a_stopping_gateway_answers_the_requests_in_flight() {
    let mut p = Platform::start().await;
    let f = p.deploy("nap", "sleep").await;
    p.start_worker(&f).await;
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut gateway = p.gateway_command(addr).spawn().unwrap();
    let url = format!("http://{addr}");
    wait_for("the gateway to serve", Duration::from_secs(20), || async {
        let r = p.http.get(format!("{url}/healthz")).send().await.ok()?;
        (r.status() == 200).then_some(())
    })
    .await;
    let http = p.http.clone();
    let sync_url = format!("{url}/function/nap?ms=1500");
    let in_flight = tokio::spawn(async move { http.post(sync_url).body("kept").send().await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    terminate(&gateway);
    let r = in_flight
        .await
        .unwrap()
        .expect("the request in flight is answered");
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "kept");
    let exit = tokio::time::timeout(Duration::from_secs(10), gateway.wait())
        .await
        .expect("the gateway exits")
        .unwrap();
    assert!(exit.success(), "{exit:?}");
}
