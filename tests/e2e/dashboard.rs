//! The dashboard: its figures (`/system/dashboard`, `/system/dashboard/history`) checked
//! against calls of known durations, and the page itself driven in Debian's headless Chromium
//! (through `tests/ui/dashboard.mjs` and playwright-core): it loads behind basic auth, shows the
//! same p50/p99, updates without a reload when calls are made, fits a phone's width, and opens a
//! call's page. Screenshots are kept in `target/ui-screenshots/`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use fjord_tests::receiver::Receiver;
use fjord_tests::{PASSWORD, Platform, USER, available, script_spec, shared_dir, spec, wait_for};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

fn ui_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("ui")
}

fn browser_available() -> bool {
    let node = std::process::Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    available(
        node && Path::new("/usr/bin/chromium").exists()
            && ui_dir().join("node_modules/playwright-core").exists(),
        "Node.js, Debian's chromium and tests/ui's playwright-core (npm ci in tests/ui)",
    )
}

/// PostgreSQL's `percentile_cont`: linear interpolation at `q * (n - 1)` of the sorted values.
fn percentile(sorted: &[f64], q: f64) -> f64 {
    let at = q * (sorted.len() - 1) as f64;
    let (lo, hi) = (at.floor() as usize, at.ceil() as usize);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (at - lo as f64)
}

async fn calls(p: &Platform, durations_ms: &[u64]) -> Vec<String> {
    let mut ids = Vec::new();
    for ms in durations_ms {
        let r = p
            .post(&format!("/async-function/napper?ms={ms}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
        ids.push(r.headers()["x-call-id"].to_str().unwrap().to_owned());
    }
    for id in &ids {
        p.wait_final(id, Duration::from_secs(20)).await;
    }
    ids
}

async fn next(
    lines: &mut tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
    tag: &str,
) -> Value {
    let line = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            match lines.next_line().await.unwrap() {
                Some(l) if l.starts_with(tag) => return l,
                Some(_) => continue,
                None => panic!("the browser script ended before {tag}"),
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no {tag} from the browser script in 60 s"));
    serde_json::from_str(line[tag.len()..].trim()).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn dashboard_shows_right_live_figures_and_a_calls_page_in_chromium() {
    if !browser_available() {
        return;
    }
    let mut p = Platform::start().await;
    let f = p.deploy_spec(spec("napper", "sleep")).await;
    p.start_worker(&f).await;

    // Known durations: nine short calls and one long one.
    let ids = calls(&p, &[20, 20, 20, 20, 20, 20, 20, 20, 20, 400]).await;
    let mut durations = Vec::new();
    for id in &ids {
        durations.push(p.status(id).await["duration_seconds"].as_f64().unwrap());
    }
    durations.sort_by(f64::total_cmp);
    let (p50, p99) = (percentile(&durations, 0.5), percentile(&durations, 0.99));
    assert!(p50 < 0.1 && p99 > 0.3, "{durations:?}");

    let figures: Value = p
        .system("/system/dashboard")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let row = figures["functions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["function"] == "napper")
        .unwrap()
        .clone();
    assert_eq!(row["finished_5m"], 10, "{row}");
    assert_eq!(row["error_rate"], 0.0, "{row}");
    assert_eq!(row["pending"], 0);
    assert_eq!(row["workers"]["running"], 1);
    assert_eq!(row["workers"]["min"], 1);
    assert_eq!(row["workers"]["max"], 20);
    assert!(
        (row["p50_seconds"].as_f64().unwrap() - p50).abs() < 1e-6,
        "{row} vs {p50}"
    );
    assert!(
        (row["p99_seconds"].as_f64().unwrap() - p99).abs() < 1e-6,
        "{row} vs {p99}"
    );
    assert!((row["calls_per_second"].as_f64().unwrap() - 10.0 / 60.0).abs() < 1e-9);

    // The chart's samples come from PostgreSQL (the control process samples every second in
    // the tests, every 5 s in production).
    let history = wait_for("a queue sample", Duration::from_secs(10), || async {
        let h: Value = p
            .system("/system/dashboard/history?function=napper")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let points = h["points"].as_array().unwrap().clone();
        points
            .iter()
            .any(|pt| pt["pending"].is_number())
            .then_some(points)
    })
    .await;
    assert_eq!(history.len(), 30);
    let finished: f64 = history
        .iter()
        .map(|pt| pt["finished_per_second"].as_f64().unwrap() * 30.0)
        .sum();
    assert!((finished - 10.0).abs() < 1e-9, "{history:?}");
    let r = p
        .system("/system/dashboard/history?function=ghost")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = p.http.get(format!("{}/ui/", p.url)).send().await.unwrap();
    assert_eq!(r.status(), 401, "the page is behind the /system auth");
    assert!(r.headers().contains_key("www-authenticate"));

    // A call that dies on its only attempt, with a callback: its page shows the delivery log
    // and re-drives it.
    let mut flaky = script_spec("flaky", &shared_dir("fjord-ui-"), "exit 1");
    flaky
        .labels
        .insert("com.openfaas.retry.attempts".into(), "1".into());
    let flaky = p.deploy_spec(flaky).await;
    p.start_worker(&flaky).await;
    let receiver = Receiver::start().await;
    let r = p
        .post("/async-function/flaky")
        .header("X-Callback-Url", format!("{}/hook", receiver.url))
        .send()
        .await
        .unwrap();
    let dead = r.headers()["x-call-id"].to_str().unwrap().to_owned();
    assert_eq!(
        p.wait_final(&dead, Duration::from_secs(20)).await["status"],
        "dead"
    );
    wait_for(
        "the dead call's callback",
        Duration::from_secs(20),
        || async { (p.status(&dead).await["callback"]["state"] == "delivered").then_some(()) },
    )
    .await;

    // The page in Chromium.
    let shots = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/ui-screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let mut browser = tokio::process::Command::new("node")
        .arg(ui_dir().join("dashboard.mjs"))
        .args([&p.url, USER, PASSWORD, "napper"])
        .arg(&shots)
        .arg(&dead)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(browser.stdout.take().unwrap()).lines();
    let ready = next(&mut lines, "READY").await;
    let ms = |s: f64| format!("{:.1} ms", s * 1000.0);
    assert_eq!(ready["p50"], ms(p50), "{ready}");
    assert_eq!(ready["p99"], ms(p99), "{ready}");
    assert_eq!(ready["pending"], "0", "{ready}");
    assert_eq!(ready["finished_5m"], "10", "{ready}");
    assert!(
        ready["workers"].as_str().unwrap().starts_with("1 / 1 / 20"),
        "{ready}"
    );
    assert_eq!(ready["chart_lines"], 2, "{ready}");
    assert_eq!(ready["calls"], 11, "napper's ten and the dead one: {ready}");
    assert_eq!(
        ready["wide"], false,
        "the page fits a phone's width: {ready}"
    );
    assert_eq!(
        ready["dead_only"],
        dead.as_str(),
        "the status filter: {ready}"
    );

    // More calls while the page stays open: its figures change without a reload.
    let newer = calls(&p, &[5, 5, 5]).await;
    let mut stdin = browser.stdin.take().unwrap();
    stdin.write_all(b"go\n").await.unwrap();
    let changed = next(&mut lines, "CHANGED").await;
    assert_eq!(changed["finished_5m"], "13", "{changed}");
    assert_eq!(changed["calls"], 14, "{changed}");

    // The newest call's page.
    let call = next(&mut lines, "CALL").await;
    assert!(
        newer.contains(&call["id"].as_str().unwrap().to_owned()),
        "{call}"
    );
    assert_eq!(
        call["hash"],
        format!("#/call/{}", call["id"].as_str().unwrap())
    );
    assert_eq!(call["status"], "succeeded", "{call}");
    assert_eq!(call["attempts"], "1", "{call}");
    assert_eq!(
        call["download"],
        format!(
            "/system/invocations/{}/result",
            call["id"].as_str().unwrap()
        )
    );
    assert_eq!(call["overview_hidden"], true);
    assert_eq!(
        call["errors"],
        serde_json::json!([]),
        "script errors on the page"
    );
    let redriven = next(&mut lines, "DEAD").await;
    assert_eq!(redriven["callback_rows"], 1, "{redriven}");
    assert_eq!(redriven["first_outcome"], "delivered", "{redriven}");
    assert!(
        redriven["redrive"].as_str().unwrap().contains("queued"),
        "{redriven}"
    );
    assert_eq!(redriven["errors"], serde_json::json!([]));
    wait_for(
        "the redrive to be recorded",
        Duration::from_secs(20),
        || async { (p.status(&dead).await["redrives"] == 1).then_some(()) },
    )
    .await;
    let status = tokio::time::timeout(Duration::from_secs(20), browser.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success());
    for shot in ["dashboard.png", "call.png", "dead-call.png"] {
        assert!(shots.join(shot).metadata().unwrap().len() > 1000, "{shot}");
    }
}
