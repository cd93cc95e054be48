//! The fault-injection suite: faults injected under a load of calls long enough that they land
//! mid-call, then the 202'd ids compared with the final records. Each scenario prints a row of
//! the README's table: workers SIGKILLed repeatedly mid-call; nats-server and PostgreSQL
//! killed and restarted under load; the control process (recorder, retrier, callback
//! dispatcher) SIGKILLed and restarted; the gateway SIGKILLed under load and restarted; a
//! worker paused past its lease; a worker on another network namespace cut off mid-call.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use fjord_common::services::{LocalNats, LocalPostgres};
use fjord_tests::netns::{self, PrivateNet};
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

    /// [`Tally::check`] for a NATS crash: nats-server writes consumer state behind its acks, so
    /// after a SIGKILL a call can be delivered again as if for the first time (attempt 1 once
    /// more). That the fault landed mid-call then shows as calls run twice.
    fn check_after_nats_crash(&self) {
        assert_eq!(self.lost, 0, "{self:?}");
        assert_eq!(self.recorded_twice, 0, "{self:?}");
        assert!(
            self.retried + self.extra_executions > 0,
            "no fault landed mid-call: {self:?}"
        );
    }
}

/// Compares the accepted ids with the records, the executions the function logged (one line
/// per run in `dir/executions`) and the callbacks the receiver got.
async fn tally(
    p: &Platform,
    accepted: &[String],
    dir: &std::path::Path,
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
    let finals = fjord_common::invocation::FINAL_STATUSES;
    let final_ = accepted
        .iter()
        .filter(|id| {
            status
                .get(*id)
                .is_some_and(|(s, _)| finals.contains(&s.as_str()))
        })
        .count();
    let runs = executions(dir);
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
    let Load {
        accepted, refused, ..
    } = posting.await.unwrap();
    assert!(refused.is_empty(), "{refused:?}");
    wait_all_final(&p, &accepted).await;
    let recovery = last_kill.elapsed();
    // Callbacks lag the records a little.
    receiver
        .wait_for(accepted.len(), Duration::from_secs(60))
        .await;
    let t = tally(&p, &accepted, &dir, &receiver, recovery).await;
    t.print("workers SIGKILLed every 400 ms for 6 s (2 workers, 0.2 s calls, lease 2 s)");
    t.check();
    for mut w in workers {
        let _ = w.start_kill();
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// What a load got: the ids answered 202; the other answers by status and code (`none`: the
/// connection failed or was cut); and the ids of calls answered `503 publish_unconfirmed`,
/// which may run.
struct Load {
    accepted: Vec<String>,
    refused: BTreeMap<String, usize>,
    unconfirmed: Vec<String>,
}

/// Posts `calls` async calls with a callback to `url`, 16 at a time.
async fn post_load(url: String, hook: String, calls: usize) -> Load {
    let http = fjord_tests::http_client();
    let answers: Vec<Result<String, (String, Option<String>)>> = futures::stream::iter(0..calls)
        .map(|i| {
            let (http, url, hook) = (http.clone(), url.clone(), hook.clone());
            async move {
                let r = http
                    .post(format!("{url}/async-function/work"))
                    .header("X-Callback-Url", hook)
                    .body(format!("{i}"))
                    .send()
                    .await
                    .map_err(|_| ("none".to_owned(), None))?;
                let id = r
                    .headers()
                    .get("x-call-id")
                    .map(|v| v.to_str().unwrap().to_owned());
                if r.status() == 202 {
                    return Ok(id.unwrap());
                }
                let status = r.status().as_u16();
                let code = r
                    .json::<serde_json::Value>()
                    .await
                    .ok()
                    .and_then(|v| v["code"].as_str().map(str::to_owned))
                    .unwrap_or_default();
                Err((format!("{status} {code}"), id))
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    let mut load = Load {
        accepted: Vec::new(),
        refused: BTreeMap::new(),
        unconfirmed: Vec::new(),
    };
    for a in answers {
        match a {
            Ok(id) => load.accepted.push(id),
            Err((code, id)) => {
                if code == "503 publish_unconfirmed" {
                    load.unconfirmed.extend(id);
                }
                *load.refused.entry(code).or_default() += 1;
            }
        }
    }
    load
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
    let Load {
        accepted, refused, ..
    } = posting.await.unwrap();
    assert!(
        refused.is_empty(),
        "intake does not depend on the control process: {refused:?}"
    );
    wait_all_final(&p, &accepted).await;
    let recovery = last_kill.elapsed();
    receiver
        .wait_for(accepted.len(), Duration::from_secs(60))
        .await;
    let t = tally(&p, &accepted, &dir, &receiver, recovery).await;
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
    let Load {
        accepted, refused, ..
    } = posting.await.unwrap();
    let refused: usize = refused.values().sum();
    assert!(refused > 0, "the kills landed during intake");
    wait_all_final(&p, &accepted).await;
    let recovery = last_kill.elapsed();
    receiver
        .wait_for(accepted.len(), Duration::from_secs(60))
        .await;
    let t = tally(&p, &accepted, &dir, &receiver, recovery).await;
    t.print(&format!(
        "gateway SIGKILLed 3 times under load ({refused} requests refused or cut, none lost)"
    ));
    t.check();
    running.start_kill().unwrap();
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn nats_server_killed_and_restarted_under_load_loses_no_202() {
    if !fjord_tests::can_start_servers() {
        return;
    }
    let dir = shared_dir("fjord-nats-fault-");
    let mut nats = LocalNats::start(&dir.join("nats"), 0)
        .await
        .expect("starting nats-server");
    // Leases shorter than the outage: calls running when NATS went away are stopped and run
    // again, instead of being trusted to have kept a lease nobody could confirm.
    let p = Platform::start_with(Options {
        nats_url: Some(nats.url()),
        ack_wait: Duration::from_secs(2),
        ..Default::default()
    })
    .await;
    let (f, fdir) = logging_function("work", "0.2", false);
    p.deploy_spec(f).await;
    let receiver = Receiver::start().await;
    let workers = [p.spawn_worker("work"), p.spawn_worker("work")];
    let posting = tokio::spawn(post_load(p.url.clone(), receiver.url.clone(), 3000));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    nats.kill().await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    nats.restart().await.expect("restarting nats-server");
    let back = Instant::now();
    let Load {
        mut accepted,
        mut refused,
        mut unconfirmed,
    } = posting.await.unwrap();
    // Intake resumes once the gateway has reconnected; then more load, while the calls
    // accepted before the outage catch up (the time to recover).
    let first = wait_for("intake to resume", Duration::from_secs(20), || async {
        let r = p
            .post("/async-function/work")
            .header("X-Callback-Url", &receiver.url)
            .send()
            .await
            .ok()?;
        (r.status() == 202).then(|| r.headers()["x-call-id"].to_str().unwrap().to_owned())
    })
    .await;
    let resumed = back.elapsed();
    accepted.push(first);
    let more = tokio::spawn(post_load(p.url.clone(), receiver.url.clone(), 1000));
    wait_all_final(&p, &accepted).await;
    let recovery = back.elapsed();
    let after = more.await.unwrap();
    assert!(
        !after.accepted.is_empty(),
        "intake resumed: {:?}",
        after.refused
    );
    accepted.extend(after.accepted);
    unconfirmed.extend(after.unconfirmed);
    for (code, n) in after.refused {
        *refused.entry(code).or_default() += n;
    }
    assert!(
        refused.keys().all(|code| code.starts_with("503 ")),
        "only 503 while NATS is down: {refused:?}"
    );
    let answered_503: usize = refused.values().sum();
    assert!(answered_503 > 0, "the outage landed during intake");
    wait_all_final(&p, &accepted).await;
    receiver
        .wait_for(accepted.len(), Duration::from_secs(60))
        .await;
    let t = tally(&p, &accepted, &fdir, &receiver, recovery).await;
    t.print(&format!(
        "nats-server SIGKILLed under load, down 3 s, then more load ({} answered 503; intake back {:.1} s after the server; lease 2 s)",
        answered_503,
        resumed.as_secs_f64()
    ));
    t.check_after_nats_crash();
    // A call answered 503 runs only if the answer said it might (publish_unconfirmed, with
    // its id); then it runs once and is recorded like any other.
    let ran: Vec<String> = sqlx::query_scalar::<_, uuid::Uuid>("SELECT call_id FROM invocations")
        .fetch_all(p.store.pool())
        .await
        .unwrap()
        .into_iter()
        .map(|id| id.to_string())
        .collect();
    let accepted_set: std::collections::HashSet<&String> = accepted.iter().collect();
    let phantoms: Vec<&String> = ran.iter().filter(|id| !accepted_set.contains(id)).collect();
    assert!(
        phantoms.iter().all(|id| unconfirmed.contains(id)),
        "a call answered 503 queue_unavailable ran: {phantoms:?}"
    );
    println!(
        "  {} of {} calls answered 503 publish_unconfirmed ran anyway",
        phantoms.len(),
        unconfirmed.len()
    );
    drop(workers);
    drop(p);
    nats.stop().await;
    let _ = std::fs::remove_dir_all(dir);
    let _ = std::fs::remove_dir_all(fdir);
}

#[tokio::test]
async fn postgres_killed_and_restarted_under_load_loses_nothing() {
    if !fjord_tests::can_start_servers() {
        return;
    }
    let dir = shared_dir("fjord-pg-fault-");
    let mut pg = LocalPostgres::start(&dir.join("pg"), 0)
        .await
        .expect("starting PostgreSQL");
    let p = Platform::start_with(Options {
        admin_database_url: Some(pg.url("postgres")),
        ..Default::default()
    })
    .await;
    let (f, fdir) = logging_function("work", "0.05", true);
    p.deploy_spec(f).await;
    let receiver = Receiver::start().await;
    let workers = [p.spawn_worker("work"), p.spawn_worker("work")];
    let posting = tokio::spawn(post_load(p.url.clone(), receiver.url.clone(), 2000));
    tokio::time::sleep(Duration::from_secs(1)).await;
    pg.kill().await;
    // Intake goes on without the database, retries and all.
    let during = post_load(p.url.clone(), receiver.url.clone(), 50).await;
    assert_eq!(
        during.accepted.len(),
        50,
        "intake continues: {:?}",
        during.refused
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    pg.restart().await.expect("restarting PostgreSQL");
    let back = Instant::now();
    let Load {
        mut accepted,
        refused,
        ..
    } = posting.await.unwrap();
    assert!(refused.is_empty(), "{refused:?}");
    accepted.extend(during.accepted);
    wait_all_final(&p, &accepted).await;
    let recovery = back.elapsed();
    receiver
        .wait_for(accepted.len(), Duration::from_secs(60))
        .await;
    let t = tally(&p, &accepted, &fdir, &receiver, recovery).await;
    t.print(
        "PostgreSQL SIGKILLed under load, down 3 s (first attempts fail, retried after 100 ms)",
    );
    t.check();
    drop(workers);
    drop(p);
    pg.stop().await;
    let _ = std::fs::remove_dir_all(dir);
    let _ = std::fs::remove_dir_all(fdir);
}

/// An exec function whose attempts run `work` seconds each, log their call id to `executions`
/// and answer with the network namespace they ran in; an attempt that does not run in
/// `succeed_in` (a namespace, as `readlink /proc/self/ns/net` names it) fails with a
/// retryable 500. So a stale attempt's outcome, were it let through, would queue its call
/// once more.
fn fenced_function(
    work: &str,
    succeed_in: &str,
) -> (fjord_common::stack::FunctionSpec, std::path::PathBuf) {
    let dir = shared_dir("fjord-fence-");
    let body = format!(
        "echo \"$Http_X_Call_Id\" >> {dir}/executions\nsleep {work}\nns=$(readlink /proc/self/ns/net)\n\
         [ \"$ns\" = \"{succeed_in}\" ] || exit 1\necho \"$ns\"",
        dir = dir.display()
    );
    let mut s = script_spec("work", &dir, &body);
    s.environment.insert("max_inflight".into(), "16".into());
    for (k, v) in [
        ("attempts", "5"),
        ("min_wait", "100ms"),
        ("max_wait", "200ms"),
    ] {
        s.annotations
            .insert(format!("com.openfaas.retry.{k}"), v.into());
    }
    (s, dir)
}

fn executions(dir: &std::path::Path) -> HashMap<String, usize> {
    let mut runs = HashMap::new();
    for line in std::fs::read_to_string(dir.join("executions"))
        .unwrap_or_default()
        .lines()
    {
        *runs.entry(line.trim().to_owned()).or_default() += 1;
    }
    runs
}

/// Checks a fencing scenario's end: each call succeeded once, on `side`, after exactly one
/// superseded run (a stale outcome let through would have queued it a third time), with one
/// callback.
async fn check_fenced(
    p: &Platform,
    ids: &[String],
    dir: &std::path::Path,
    side: &str,
    receiver: &Receiver,
) {
    let runs = executions(dir);
    for id in ids {
        let s = p.status(id).await;
        assert_eq!(s["status"], "succeeded", "{s}");
        let result = p
            .system(&format!("/system/invocations/{id}/result"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert_eq!(result.trim(), side, "the outcome is the replacement's");
        assert_eq!(
            runs.get(id),
            Some(&2),
            "one stale run and one that counted: {runs:?}"
        );
    }
    let mut per_call: HashMap<String, usize> = HashMap::new();
    for r in receiver.received() {
        *per_call.entry(r.header("x-call-id")).or_default() += 1;
    }
    assert!(per_call.values().all(|n| *n == 1), "{per_call:?}");
}

fn own_netns() -> String {
    std::fs::read_link("/proc/thread-self/ns/net")
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

/// A worker process logging to a file.
fn logged_worker(p: &Platform, log: &std::path::Path) -> tokio::process::Command {
    let mut c = p.worker_command();
    c.args(["run", "--function", "work"])
        .env("RUST_LOG", "info")
        .stderr(std::fs::File::create(log).unwrap())
        .stdout(std::process::Stdio::null());
    c
}

fn fenced_in_log(log: &std::path::Path) -> usize {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("fenced"))
        .count()
}

#[tokio::test]
async fn a_worker_paused_past_its_lease_is_fenced() {
    let p = Platform::start_with(Options {
        ack_wait: Duration::from_secs(2),
        ..Default::default()
    })
    .await;
    // The paused worker runs every first attempt, which fails (retryable): were its outcome
    // let through after the pause, the call would be queued and run a third time.
    let dir = shared_dir("fjord-pause-");
    let body = format!(
        "echo \"$Http_X_Call_Id\" >> {dir}/executions\nsleep 2\n\
         [ \"$Http_X_Retry\" = 1 ] && exit 1\necho replacement",
        dir = dir.display()
    );
    let mut f = script_spec("work", &dir, &body);
    f.environment.insert("max_inflight".into(), "16".into());
    for (k, v) in [
        ("attempts", "5"),
        ("min_wait", "100ms"),
        ("max_wait", "200ms"),
    ] {
        f.annotations
            .insert(format!("com.openfaas.retry.{k}"), v.into());
    }
    p.deploy_spec(f).await;
    let receiver = Receiver::start().await;
    let log = dir.join("stale.log");
    let mut stale = logged_worker(&p, &log).spawn().unwrap();
    let Load {
        accepted: ids,
        refused,
        ..
    } = post_load(p.url.clone(), receiver.url.clone(), 8).await;
    assert!(refused.is_empty(), "{refused:?}");
    wait_for(
        "all calls running on the first worker",
        Duration::from_secs(20),
        || async { (executions(&dir).len() == ids.len()).then_some(()) },
    )
    .await;
    let pid = nix::unistd::Pid::from_raw(stale.id().unwrap() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).unwrap();
    let fresh = p.spawn_worker("work");
    wait_all_final(&p, &ids).await;
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT).unwrap();
    wait_for(
        "the resumed worker to fence its outcomes",
        Duration::from_secs(20),
        || async { (fenced_in_log(&log) >= ids.len()).then_some(()) },
    )
    .await;
    // Anything it still let through would be recorded or re-queued by now.
    tokio::time::sleep(Duration::from_secs(2)).await;
    check_fenced(&p, &ids, &dir, "replacement", &receiver).await;
    println!(
        "| a worker SIGSTOPped mid-call for longer than its 2 s lease, then resumed | {n} | {n} | 0 | 0 | {n} | 0 | {n} | fenced {f} of {n} |",
        n = ids.len(),
        f = fenced_in_log(&log)
    );
    let _ = stale.start_kill();
    drop(fresh);
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn a_worker_cut_off_by_the_network_is_fenced_and_its_calls_complete_on_the_other_side() {
    if !fjord_tests::available(netns::possible(), "root and iproute2 (network namespaces)")
        || !fjord_tests::can_start_servers()
    {
        return;
    }
    // Built while the host's network is still this thread's.
    fjord_tests::bin("fjord-worker");
    let net = PrivateNet::create();
    net.enter_a();
    let near_ns = own_netns();
    let dir = shared_dir("fjord-netns-");
    let mut pg = LocalPostgres::start(&dir.join("pg"), 0)
        .await
        .expect("starting PostgreSQL in namespace a");
    let mut nats = LocalNats::start_on(&dir.join("nats"), 0, IpAddr::V4(Ipv4Addr::UNSPECIFIED))
        .await
        .expect("starting nats-server in namespace a");
    let p = Platform::start_with(Options {
        nats_url: Some(nats.url()),
        admin_database_url: Some(pg.url("postgres")),
        ack_wait: Duration::from_secs(2),
        ..Default::default()
    })
    .await;
    let (f, fdir) = fenced_function("2", &near_ns);
    p.deploy_spec(f).await;
    let receiver = Receiver::start().await;
    let log = fdir.join("far.log");
    let mut far = p.worker_command();
    far.args(["run", "--function", "work"]).env(
        "NATS_URL",
        format!("nats://{}:{}", netns::A_ADDR, nats.port()),
    );
    let mut far = net
        .in_b(&far)
        .env("RUST_LOG", "info")
        .stderr(std::fs::File::create(&log).unwrap())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let Load {
        accepted: ids,
        refused,
        ..
    } = post_load(p.url.clone(), receiver.url.clone(), 16).await;
    assert!(refused.is_empty(), "{refused:?}");
    wait_for(
        "every call running on the far worker",
        Duration::from_secs(20),
        || async { (executions(&fdir).len() == ids.len()).then_some(()) },
    )
    .await;
    net.cut();
    let cut = Instant::now();
    let near = p.spawn_worker("work");
    wait_all_final(&p, &ids).await;
    let recovery = cut.elapsed();
    net.restore();
    // Once the far worker answers pings again, whatever it sent while cut off has reached NATS
    // (one TCP connection, in order): a stale outcome let through would be applied by now.
    wait_for(
        "the far worker to be reachable again",
        Duration::from_secs(60),
        || async {
            let rows: serde_json::Value = p
                .system("/system/queues")
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            (rows[0]["workers"] == 2).then_some(())
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    check_fenced(&p, &ids, &fdir, &near_ns, &receiver).await;
    println!(
        "| a worker in another network namespace cut off mid-call (veth down), link back after all were final | {n} | {n} | 0 | 0 | {n} | 0 | {n} | {:.1} s (fenced at the worker: {f}) |",
        recovery.as_secs_f64(),
        n = ids.len(),
        f = fenced_in_log(&log)
    );
    let _ = far.start_kill();
    let _ = far.wait().await;
    drop(near);
    drop(p);
    nats.stop().await;
    pg.stop().await;
    drop(net);
    let _ = std::fs::remove_dir_all(dir);
    let _ = std::fs::remove_dir_all(fdir);
}
