//! The fault-injection suite: faults injected under a load of calls long enough that they land
//! mid-call, then the 202'd ids compared with the final records. Each scenario prints a row of
//! the README's table. Scenarios so far: workers SIGKILLed repeatedly mid-call; the control
//! process (recorder, retrier, callback dispatcher) SIGKILLed and restarted; the gateway
//! SIGKILLed under load and restarted.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use fjord_tests::receiver::Receiver;
use fjord_tests::{Options, Platform, script_spec, shared_dir, wait_for};
use futures::StreamExt;

/// What a scenario found; `lost` and `recorded_twice` must be 0, `retried` above 0.
#[derive(Debug)]
struct Tally {
    accepted: usize,
    final_: usize,
    lost: usize,
    recorded_twice: usize,
    extra_executions: usize,
    extra_callbacks: usize,
    retried: usize,
    recovery: Duration,
}

impl Tally {
    fn print(&self, scenario: &str) {
        println!(
            "| {scenario} | {} | {} | {} | {} | {} | {} | {} | {:.1} s |",
            self.accepted,
            self.final_,
            self.lost,
            self.recorded_twice,
            self.extra_executions,
            self.extra_callbacks,
            self.retried,
            self.recovery.as_secs_f64()
        );
    }

    fn check(&self) {
        assert_eq!(self.lost, 0, "{self:?}");
        assert_eq!(self.recorded_twice, 0, "{self:?}");
        assert!(self.retried > 0, "no fault landed mid-call: {self:?}");
    }
}

/// Compares the accepted ids with the records, the executions the function logged (one line
/// per run in `executions`) and the callbacks the receiver got.
async fn tally(
    p: &Platform,
    accepted: &[String],
    executions: &std::path::Path,
    receiver: &Receiver,
    recovery: Duration,
) -> Tally {
    let rows: Vec<(uuid::Uuid, String, i32)> =
        sqlx::query_as("SELECT call_id, status, attempts FROM invocations")
            .fetch_all(p.store.pool())
            .await
            .unwrap();
    let status: HashMap<String, (String, i32)> = rows
        .into_iter()
        .map(|(id, s, a)| (id.to_string(), (s, a)))
        .collect();
    let finals = ["succeeded", "failed", "dead", "cancelled"];
    let final_ = accepted
        .iter()
        .filter(|id| {
            status
                .get(*id)
                .is_some_and(|(s, _)| finals.contains(&s.as_str()))
        })
        .count();
    let mut runs: HashMap<String, usize> = HashMap::new();
    for line in std::fs::read_to_string(executions)
        .unwrap_or_default()
        .lines()
    {
        *runs.entry(line.trim().to_owned()).or_default() += 1;
    }
    let mut webhooks: HashMap<String, std::collections::HashSet<String>> = HashMap::new();
    let mut deliveries: HashMap<String, usize> = HashMap::new();
    for r in receiver.received() {
        let id = r.header("x-call-id");
        webhooks
            .entry(id.clone())
            .or_default()
            .insert(r.header("webhook-id"));
        *deliveries.entry(id).or_default() += 1;
    }
    Tally {
        accepted: accepted.len(),
        final_,
        lost: accepted.len() - final_,
        // A call whose final state was recorded twice would have sent two distinct callbacks.
        recorded_twice: webhooks.values().filter(|w| w.len() > 1).count(),
        extra_executions: runs.values().map(|n| n.saturating_sub(1)).sum(),
        extra_callbacks: deliveries.values().map(|n| n.saturating_sub(1)).sum(),
        retried: status.values().filter(|(_, a)| *a > 1).count(),
        recovery,
    }
}

/// An exec function that logs each run's call id, then works for `work` seconds.
/// `fail_first`: every call's first attempt fails (500) and is retried after 100 ms.
fn logging_function(
    name: &str,
    work: &str,
    fail_first: bool,
) -> (fjord_common::stack::FunctionSpec, std::path::PathBuf) {
    let dir = shared_dir("fjord-faults-");
    let fail = if fail_first {
        "[ \"$Http_X_Retry\" = 1 ] && exit 1\n"
    } else {
        ""
    };
    let body = format!(
        "echo \"$Http_X_Call_Id\" >> {dir}/executions\nsleep {work}\n{fail}cat",
        dir = dir.display()
    );
    let mut s = script_spec(name, &dir, &body);
    s.environment.insert("max_inflight".into(), "16".into());
    for (k, v) in [
        ("attempts", "10"),
        ("min_wait", "100ms"),
        ("max_wait", "500ms"),
    ] {
        s.annotations
            .insert(format!("com.openfaas.retry.{k}"), v.into());
    }
    (s, dir)
}

#[tokio::test]
async fn workers_sigkilled_mid_call_again_and_again_lose_nothing() {
    let p = Platform::start_with(Options {
        ack_wait: Duration::from_secs(2),
        ..Default::default()
    })
    .await;
    let (f, dir) = logging_function("work", "0.2", false);
    p.deploy_spec(f).await;
    let receiver = Receiver::start().await;
    let mut workers = vec![p.spawn_worker("work"), p.spawn_worker("work")];
    let calls = 800;
    let posting = tokio::spawn(post_load(p.url.clone(), receiver.url.clone(), calls));
    // Kill a worker every 400 ms for 6 s, starting a replacement each time.
    for round in 0..15 {
        tokio::time::sleep(Duration::from_millis(400)).await;
        let victim = round % workers.len();
        workers[victim].start_kill().unwrap();
        let _ = workers[victim].wait().await;
        workers[victim] = p.spawn_worker("work");
    }
    let last_kill = Instant::now();
    let (accepted, refused) = posting.await.unwrap();
    assert_eq!(refused, 0);
    wait_all_final(&p, &accepted).await;
    let recovery = last_kill.elapsed();
    // Callbacks lag the records a little.
    receiver
        .wait_for(accepted.len(), Duration::from_secs(60))
        .await;
    let t = tally(&p, &accepted, &dir.join("executions"), &receiver, recovery).await;
    t.print("workers SIGKILLed every 400 ms for 6 s (2 workers, 0.2 s calls, lease 2 s)");
    t.check();
    for mut w in workers {
        let _ = w.start_kill();
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// Posts `calls` async calls with a callback to `url` (16 at a time), keeping the ids of the
/// ones answered 202; other answers (a gateway being down) are counted as refused.
async fn post_load(url: String, hook: String, calls: usize) -> (Vec<String>, usize) {
    let http = fjord_tests::http_client();
    let answers: Vec<Option<String>> = futures::stream::iter(0..calls)
        .map(|i| {
            let (http, url, hook) = (http.clone(), url.clone(), hook.clone());
            async move {
                let r = http
                    .post(format!("{url}/async-function/work"))
                    .header("X-Callback-Url", hook)
                    .body(format!("{i}"))
                    .send()
                    .await
                    .ok()?;
                (r.status() == 202).then(|| r.headers()["x-call-id"].to_str().unwrap().to_owned())
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    let refused = answers.iter().filter(|a| a.is_none()).count();
    (answers.into_iter().flatten().collect(), refused)
}

async fn wait_all_final(p: &Platform, accepted: &[String]) {
    wait_for(
        "every accepted call to be final",
        Duration::from_secs(120),
        || async {
            let n: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM invocations WHERE call_id = ANY($1) \
             AND status IN ('succeeded', 'failed', 'dead', 'cancelled')",
            )
            .bind(
                accepted
                    .iter()
                    .map(|id| id.parse::<uuid::Uuid>().unwrap())
                    .collect::<Vec<_>>(),
            )
            .fetch_one(p.store.pool())
            .await
            .ok()?;
            (n as usize >= accepted.len()).then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn the_control_process_sigkilled_and_restarted_loses_nothing() {
    // Recorder, retrier and dispatcher run only in the control process killed here.
    let mut p = Platform::start_with(Options {
        recorder: false,
        dispatcher: None,
        ..Default::default()
    })
    .await;
    let (f, dir) = logging_function("work", "0.05", true);
    let f = p.deploy_spec(f).await;
    p.start_worker(&f).await;
    let receiver = Receiver::start().await;
    let control = || {
        p.worker_command()
            .args(["control", "--no-spawn"])
            .env("FJORD_CALLBACK_LEASE", "2s")
            .spawn()
            .unwrap()
    };
    let mut running = control();
    let posting = tokio::spawn(post_load(p.url.clone(), receiver.url.clone(), 600));
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(700)).await;
        running.start_kill().unwrap();
        let _ = running.wait().await;
        running = control();
    }
    let last_kill = Instant::now();
    let (accepted, refused) = posting.await.unwrap();
    assert_eq!(refused, 0, "intake does not depend on the control process");
    wait_all_final(&p, &accepted).await;
    let recovery = last_kill.elapsed();
    receiver
        .wait_for(accepted.len(), Duration::from_secs(60))
        .await;
    let t = tally(&p, &accepted, &dir.join("executions"), &receiver, recovery).await;
    t.print("control process SIGKILLed every 700 ms, 4 times (first attempts fail, retried after 100 ms)");
    t.check();
    running.start_kill().unwrap();
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn a_gateway_sigkilled_under_load_honours_every_202_it_sent() {
    let mut p = Platform::start().await;
    let (f, dir) = logging_function("work", "0.05", true);
    let f = p.deploy_spec(f).await;
    p.start_worker(&f).await;
    let receiver = Receiver::start().await;
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let gateway = || p.gateway_command(addr).spawn().unwrap();
    let url = format!("http://{addr}");
    let serving = || async {
        wait_for("the gateway to serve", Duration::from_secs(20), || async {
            let r = p.http.get(format!("{url}/healthz")).send().await.ok()?;
            (r.status() == 200).then_some(())
        })
        .await
    };
    let mut running = gateway();
    serving().await;
    let posting = tokio::spawn(post_load(url.clone(), receiver.url.clone(), 1500));
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        running.start_kill().unwrap();
        let _ = running.wait().await;
        running = gateway();
        serving().await;
    }
    let last_kill = Instant::now();
    let (accepted, refused) = posting.await.unwrap();
    assert!(refused > 0, "the kills landed during intake");
    wait_all_final(&p, &accepted).await;
    let recovery = last_kill.elapsed();
    receiver
        .wait_for(accepted.len(), Duration::from_secs(60))
        .await;
    let t = tally(&p, &accepted, &dir.join("executions"), &receiver, recovery).await;
    t.print(&format!(
        "gateway SIGKILLed 3 times under load ({refused} requests refused or cut, none lost)"
    ));
    t.check();
    running.start_kill().unwrap();
    let _ = std::fs::remove_dir_all(dir);
}
