//! `/metrics` on the gateway and the control process: OpenFaaS's names and Fjord's own, read
//! back through a real Prometheus parser (the Python `prometheus-client` package's), with
//! counts and histogram buckets checked against calls of known durations.

use std::collections::HashMap;
use std::time::Duration;

use fjord_tests::receiver::Receiver;
use fjord_tests::{Platform, available, spec, wait_for};
use serde_json::Value;

const PYTHON: &str = "/usr/bin/python3";

/// Parses an exposition with `prometheus_client.parser` (which rejects malformed text) and
/// returns each family's type and samples.
const PARSE: &str = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
out = {}
for f in text_string_to_metric_families(sys.stdin.read()):
    out[f.name] = {"type": f.type, "samples": [[s.name, s.labels, s.value] for s in f.samples]}
print(json.dumps(out))
"#;

fn parser_available() -> bool {
    let present = std::process::Command::new(PYTHON)
        .args(["-c", "import prometheus_client"])
        .output()
        .is_ok_and(|o| o.status.success());
    available(present, "the Python prometheus-client package")
}

/// Families by name (a counter's family drops its `_total`), as the parser read them.
struct Parsed(HashMap<String, Value>);

impl Parsed {
    fn of(text: &str) -> Parsed {
        use std::io::Write;
        let mut child = std::process::Command::new(PYTHON)
            .args(["-c", PARSE])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "the exposition does not parse: {}\n{text}",
            String::from_utf8_lossy(&out.stderr)
        );
        Parsed(serde_json::from_slice(&out.stdout).unwrap())
    }

    fn kind(&self, family: &str) -> &str {
        self.0
            .get(family)
            .and_then(|f| f["type"].as_str())
            .unwrap_or_else(|| panic!("no family {family}"))
    }

    /// The value of the sample `name` whose labels include `labels`.
    fn value(&self, family: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let samples = self.0.get(family)?["samples"].as_array()?;
        samples.iter().find_map(|s| {
            let matches = s[0] == name && labels.iter().all(|(k, v)| s[1][*k] == *v);
            matches.then(|| s[2].as_f64()).flatten()
        })
    }

    fn sample_count(&self, family: &str) -> usize {
        self.0
            .get(family)
            .and_then(|f| f["samples"].as_array())
            .map_or(0, Vec::len)
    }
}

async fn scrape(p: &Platform, url: &str, auth: bool) -> String {
    let mut r = p.http.get(url);
    if auth {
        r = r.basic_auth(fjord_tests::USER, Some(fjord_tests::PASSWORD));
    }
    let r = r.send().await.unwrap();
    assert_eq!(r.status(), 200, "{url}");
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    r.text().await.unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn gateway_and_control_metrics_count_calls_of_known_durations() {
    if !parser_available() {
        return;
    }
    let mut p = Platform::start().await;
    let s = p.deploy_spec(spec("nap", "sleep")).await;
    p.start_worker(&s).await;
    // A function that always fails, with two attempts: one retry, then dead.
    let mut broken = fjord_tests::script_spec(
        "broken",
        &fjord_tests::shared_dir("fjord-metrics-"),
        "exit 1",
    );
    for (k, v) in [
        ("com.openfaas.retry.attempts", "2"),
        ("com.openfaas.retry.min_wait", "50ms"),
    ] {
        broken.labels.insert(k.into(), v.into());
    }
    let broken = p.deploy_spec(broken).await;
    p.start_worker(&broken).await;
    let dead = p.call_async("broken", "x").await;
    assert_eq!(
        p.wait_final(&dead, Duration::from_secs(20)).await["status"],
        "dead"
    );
    let receiver = Receiver::start().await;

    // Five asynchronous calls of known run times (3 × 30 ms, 2 × 300 ms), one the function
    // refuses (400), one synchronous call, and one to a name that is not deployed.
    let mut ids = Vec::new();
    for ms in [30, 30, 30, 300, 300] {
        let r = p
            .post(&format!("/async-function/nap?ms={ms}"))
            .header("X-Callback-Url", format!("{}/hook", receiver.url))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
        ids.push(r.headers()["x-call-id"].to_str().unwrap().to_owned());
    }
    let r = p.post("/async-function/nap?ms=soon").send().await.unwrap();
    assert_eq!(r.status(), 202);
    ids.push(r.headers()["x-call-id"].to_str().unwrap().to_owned());
    let r = p.post("/function/nap").body("now").send().await.unwrap();
    assert_eq!(r.status(), 200);
    let r = p.post("/async-function/ghost").send().await.unwrap();
    assert_eq!(r.status(), 404);
    for id in &ids {
        p.wait_final(id, Duration::from_secs(20)).await;
    }
    receiver.wait_for(5, Duration::from_secs(20)).await;

    // The gateway: what it answered, and the live queue and worker figures.
    let r = p
        .http
        .get(format!("{}/metrics", p.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "/metrics is behind the /system auth");
    let g = Parsed::of(&scrape(&p, &format!("{}/metrics", p.url), true).await);
    let nap = [("function_name", "nap")];
    let count = |code: &str| {
        g.value(
            "gateway_function_invocation",
            "gateway_function_invocation_total",
            &[("function_name", "nap"), ("code", code)],
        )
    };
    assert_eq!(g.kind("gateway_function_invocation"), "counter");
    assert_eq!(count("202"), Some(6.0));
    assert_eq!(count("200"), Some(1.0), "the synchronous call");
    assert_eq!(
        g.value(
            "queue_worker_messages_submitted",
            "queue_worker_messages_submitted_total",
            &nap
        ),
        Some(7.0)
    );
    assert_eq!(g.kind("fjord_intake_seconds"), "histogram");
    assert_eq!(
        g.value("fjord_intake_seconds", "fjord_intake_seconds_count", &nap),
        Some(6.0)
    );
    assert_eq!(
        g.value(
            "gateway_functions_seconds",
            "gateway_functions_seconds_count",
            &nap
        ),
        Some(1.0)
    );
    assert!(
        !g.0.values().any(|f| f.to_string().contains("ghost")),
        "a name that is not deployed gets no series"
    );
    for (family, want) in [
        ("queue_worker_pending_messages", 0.0),
        ("queue_worker_function_invocation_inflight", 0.0),
        ("gateway_service_count", 1.0),
        ("fjord_workers_running", 1.0),
        ("fjord_workers_min", 1.0),
        ("fjord_workers_max", 20.0),
    ] {
        assert_eq!(g.kind(family), "gauge", "{family}");
        assert_eq!(g.value(family, family, &nap), Some(want), "{family}");
    }

    // The control process: final outcomes, run times in the right buckets, queue waits,
    // callback attempts, the recorder's batches.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/metrics", listener.local_addr().unwrap());
    tokio::spawn(fjord_worker::metrics::serve(
        listener,
        p.queue.clone(),
        p.control_metrics.clone(),
        p.shutdown_token(),
    ));
    let c = wait_for(
        "the control process to count every final outcome",
        Duration::from_secs(10),
        || async {
            let c = Parsed::of(&scrape(&p, &url, false).await);
            let processed = c.value(
                "queue_worker_messages_processed",
                "queue_worker_messages_processed_total",
                &nap,
            );
            let delivered = c.value(
                "fjord_callback_attempts",
                "fjord_callback_attempts_total",
                &[("outcome", "delivered")],
            );
            (processed == Some(7.0) && delivered == Some(5.0)).then_some(c)
        },
    )
    .await;
    let finals = |code: &str| {
        c.value(
            "gateway_function_invocation",
            "gateway_function_invocation_total",
            &[("function_name", "nap"), ("code", code)],
        )
    };
    assert_eq!(
        finals("200"),
        Some(6.0),
        "five sleeps and the synchronous call"
    );
    assert_eq!(finals("400"), Some(1.0), "the refused call");
    let bucket = |le: &str| {
        c.value(
            "gateway_functions_seconds",
            "gateway_functions_seconds_bucket",
            &[("function_name", "nap"), ("le", le)],
        )
    };
    assert_eq!(c.kind("gateway_functions_seconds"), "histogram");
    assert_eq!(
        bucket("0.02"),
        Some(2.0),
        "the refused and the synchronous call"
    );
    assert_eq!(bucket("0.25"), Some(5.0), "and the three 30 ms calls");
    assert_eq!(bucket("+Inf"), Some(7.0));
    let sum = c
        .value(
            "gateway_functions_seconds",
            "gateway_functions_seconds_sum",
            &nap,
        )
        .unwrap();
    assert!(
        (0.69..1.5).contains(&sum),
        "3 × 30 ms + 2 × 300 ms, got {sum}"
    );
    assert_eq!(
        c.value(
            "fjord_queue_wait_seconds",
            "fjord_queue_wait_seconds_count",
            &nap
        ),
        Some(7.0)
    );
    assert!(
        c.value(
            "fjord_recorder_batch_messages",
            "fjord_recorder_batch_messages_count",
            &[]
        ) >= Some(1.0)
    );
    assert_eq!(c.kind("fjord_recorder_pending_messages"), "gauge");
    let broken = [("function_name", "broken")];
    assert_eq!(
        c.value("fjord_retries", "fjord_retries_total", &broken),
        Some(1.0)
    );
    assert_eq!(
        c.value("fjord_dead_letters", "fjord_dead_letters_total", &broken),
        Some(1.0)
    );
    assert_eq!(
        c.value(
            "gateway_function_invocation",
            "gateway_function_invocation_total",
            &[("function_name", "broken"), ("code", "500")]
        ),
        Some(1.0),
        "a call counts once, with its final outcome"
    );
    for (family, kind) in [
        ("fjord_cold_start_seconds", "histogram"),
        ("fjord_retries", "counter"),
        ("fjord_dead_letters", "counter"),
        ("fjord_recorder_batch_seconds", "histogram"),
    ] {
        assert_eq!(c.kind(family), kind, "{family}");
    }
    assert!(c.sample_count("fjord_recorder_batch_seconds") > 0);

    // The Grafana dashboard asks only for metrics that exist.
    let dashboard = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/grafana/fjord.json"),
    )
    .unwrap();
    let dashboard: Value = serde_json::from_str(&dashboard).unwrap();
    let mut exprs = Vec::new();
    collect_exprs(&dashboard, &mut exprs);
    assert!(exprs.len() > 20, "{} queries", exprs.len());
    let exists = |metric: &str| {
        [&g, &c].iter().any(|parsed| {
            parsed.0.iter().any(|(family, f)| {
                family == metric
                    || f["samples"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|s| s[0] == metric)
                    || ["_total", "_bucket", "_sum", "_count"]
                        .iter()
                        .any(|suffix| metric.strip_suffix(suffix) == Some(family))
            })
        })
    };
    for expr in &exprs {
        for metric in metric_names(expr) {
            assert!(
                exists(&metric),
                "the dashboard's {metric} is not exported ({expr})"
            );
        }
    }
}

fn collect_exprs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("expr", Value::String(e)) => out.push(e.clone()),
                    _ => collect_exprs(v, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| collect_exprs(v, out)),
        _ => {}
    }
}

/// Names in a PromQL expression that start like Fjord's and OpenFaaS's metrics.
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = expr;
    while let Some(i) = ["gateway_", "queue_worker_", "fjord_"]
        .iter()
        .filter_map(|p| rest.find(p))
        .min()
    {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.push(tail[..end].to_owned());
        rest = &tail[end..];
    }
    names
}
