//! Functions' own output, kept per call: `GET /system/logs` (NDJSON, with `call`, `tail`,
//! `follow`), the per-call bound, and `fjord logs`.

use std::time::Duration;

use fjord_tests::{Platform, error_code, script_spec, shared_dir, unique, wait_for};
use serde_json::Value;

/// Writes two stderr lines naming its body, or a flood of them for `flood`; echoes the body.
const SCRIPT: &str = r#"body=$(cat)
if [ "$body" = flood ]; then
  yes 'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx' | head -n 3000 >&2
fi
echo "working on $body" >&2
echo "done with $body" >&2
printf '%s' "$body""#;

async fn lines(p: &Platform, query: &str) -> Vec<Value> {
    let r = p
        .system(&format!("/system/logs?{query}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{query}");
    assert_eq!(r.headers()["content-type"], "application/x-ndjson");
    r.text()
        .await
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn texts(lines: &[Value]) -> Vec<&str> {
    lines.iter().map(|l| l["text"].as_str().unwrap()).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn function_output_is_kept_per_call_bounded_and_followed() {
    let mut p = Platform::start().await;
    let name = unique("talk");
    let dir = shared_dir("fjord-logs-");
    let f = p.deploy_spec(script_spec(&name, &dir, SCRIPT)).await;
    p.start_worker(&f).await;

    let one = p.call_async(&name, "one").await;
    p.wait_final(&one, Duration::from_secs(20)).await;
    let two = p.call_async(&name, "two").await;
    p.wait_final(&two, Duration::from_secs(20)).await;

    let all = wait_for("four lines", Duration::from_secs(10), || async {
        let all = lines(&p, &format!("name={name}")).await;
        (all.len() == 4).then_some(all)
    })
    .await;
    assert_eq!(
        texts(&all),
        [
            "working on one",
            "done with one",
            "working on two",
            "done with two"
        ]
    );
    for (line, call) in all.iter().zip([&one, &one, &two, &two]) {
        assert_eq!(line["call_id"], call.as_str(), "{line}");
        assert_eq!(line["name"], name.as_str());
        assert_eq!(line["stream"], "stderr");
        assert!(line["instance"].as_str().unwrap().contains('-'), "{line}");
        assert!(line["timestamp"].is_string());
    }
    let only_two = lines(&p, &format!("name={name}&call={two}")).await;
    assert_eq!(texts(&only_two), ["working on two", "done with two"]);
    let last = lines(&p, &format!("name={name}&tail=1")).await;
    assert_eq!(texts(&last), ["done with two"]);
    let later = lines(&p, &format!("name={name}&since=2999-01-01T00:00:00Z")).await;
    assert!(later.is_empty());

    // A call that prints 213 KB keeps 64 KiB of it and says so.
    let flood = p.call_async(&name, "flood").await;
    p.wait_final(&flood, Duration::from_secs(20)).await;
    let kept = wait_for("the flood's note", Duration::from_secs(10), || async {
        let kept = lines(&p, &format!("name={name}&call={flood}")).await;
        kept.last()
            .is_some_and(|l| l["stream"] == "fjord")
            .then_some(kept)
    })
    .await;
    let bytes: usize = texts(&kept[..kept.len() - 1]).iter().map(|t| t.len()).sum();
    assert!(
        (60_000..=65_536).contains(&bytes),
        "{bytes} bytes kept of the flood"
    );
    assert!(
        texts(&kept)
            .last()
            .unwrap()
            .contains("output beyond 65536 bytes is not kept")
    );

    // Following: a line printed after the request started arrives on it.
    let mut follow = p
        .system(&format!("/system/logs?name={name}&tail=1&follow=true"))
        .send()
        .await
        .unwrap();
    assert_eq!(follow.status(), 200);
    let three = p.call_async(&name, "three").await;
    let mut seen = String::new();
    tokio::time::timeout(Duration::from_secs(10), async {
        while !seen.contains("done with three") {
            let chunk = follow.chunk().await.unwrap().expect("the follow goes on");
            seen.push_str(&String::from_utf8_lossy(&chunk));
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no followed line in 10 s: {seen}"));
    assert!(seen.contains(&three), "{seen}");
    drop(follow);

    // `fjord logs`.
    let out = p
        .cli()
        .args(["logs", &name, "--call", &one])
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let printed: Vec<&str> = text.lines().collect();
    assert_eq!(printed.len(), 2, "{text}");
    assert!(
        printed[0].ends_with(&format!("{one} stderr working on one")),
        "{text}"
    );

    // Bad requests.
    let r = p.system("/system/logs?name=ghost").send().await.unwrap();
    assert_eq!(error_code(r).await, (404, "function_not_found".into()));
    let r = p
        .system(&format!("/system/logs?name={name}&tail=0"))
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r).await.0, 400);
    let r = p
        .system(&format!("/system/logs?name={name}&call=nope"))
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r).await.0, 400);
    let r = p
        .http
        .get(format!("{}/system/logs?name={name}", p.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}

/// `FJORD_LOG_FORMAT=json`: a real worker process writes one JSON object per line, and a line
/// about a call carries its `call.id` and `function`.
#[tokio::test(flavor = "multi_thread")]
async fn json_log_lines_about_a_call_carry_its_id_and_function() {
    use tokio::io::AsyncBufReadExt;
    let p = Platform::start().await;
    let name = unique("fails");
    let dir = shared_dir("fjord-logs-");
    p.deploy_spec(script_spec(&name, &dir, "echo broken >&2; exit 3"))
        .await;
    let mut worker = p
        .worker_command()
        .args(["run", "--function", &name])
        .env("FJORD_LOG_FORMAT", "json")
        .env("RUST_LOG", "info")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = tokio::io::BufReader::new(worker.stderr.take().unwrap()).lines();
    let id = p.call_async(&name, "x").await;
    let line = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let line = stderr
                .next_line()
                .await
                .unwrap()
                .expect("worker stderr open");
            let v: Value = serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
            assert!(v["timestamp"].is_string() && v["level"].is_string(), "{v}");
            if v["message"] == "function process failed" {
                return v;
            }
        }
    })
    .await
    .expect("the failure is logged");
    assert_eq!(line["call.id"], id.as_str(), "{line}");
    assert_eq!(line["function"], name.as_str(), "{line}");
    assert_eq!(line["level"], "WARN");
    assert!(
        line["stderr"].as_str().unwrap().contains("broken"),
        "{line}"
    );
    let _ = worker.kill().await;
}
