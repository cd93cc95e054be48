//! The `exec` and `http` runtimes end to end: real commands and a real upstream process behind
//! the gateway's sync and async routes, with the OpenFaaS watchdog contracts, timeouts, memory
//! limits, function users and restarts.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use fjord_common::stack::{FunctionSpec, Resources};
use fjord_tests::{Platform, available, process_gone, shared_dir, spec, unique, wait_for};
use fjord_worker::runtime::function_user;
use serde_json::Value;

fn write_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// A function of runtime `lang` with these environment settings. 500 is made a final failure
/// so a failing call is `failed` at once, not retried.
fn function(name: &str, lang: &str, env: &[(&str, &str)]) -> FunctionSpec {
    let mut s = spec(name, "");
    s.lang = lang.into();
    s.environment = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    s.annotations
        .insert("com.openfaas.retry.codes".into(), "429".into());
    s
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

const EXEC_SCRIPT: &str = r#"#!/bin/sh
case "$Http_Path" in
  /echo) cat ;;
  /vars) printf 'method=%s\npath=%s\nquery=%s\ncustom=%s\n' "$Http_Method" "$Http_Path" "$Http_Query" "$Http_X_Custom" ;;
  /env) env ;;
  /id) id -u ;;
  /fail) echo "something broke" >&2; exit 3 ;;
  /write) echo "private" > "$HOME/private.txt" && echo "$HOME/private.txt" ;;
  /read) cat "$Http_X_File" ;;
  *) echo "unknown path $Http_Path" >&2; exit 1 ;;
esac
"#;

#[tokio::test]
async fn exec_runs_a_command_per_call_with_the_watchdog_contract() {
    let mut p = Platform::start().await;
    let dir = shared_dir("fjord-rt-");
    let script = write_file(&dir, "fn.sh", EXEC_SCRIPT);
    let name = unique("ex");
    let fprocess = format!("sh {}", script.display());
    let f = p
        .deploy_spec(function(
            &name,
            "exec",
            &[
                ("fprocess", &fprocess),
                ("content_type", "application/x-test"),
            ],
        ))
        .await;
    p.start_worker(&f).await;
    let url = |path: &str| format!("{}/function/{name}{path}", p.url);

    // The body goes through stdin and comes back from stdout, whole.
    let big: Vec<u8> = (0..2 * 1024 * 1024).map(|i: u32| (i % 251) as u8).collect();
    let r = p
        .http
        .post(url("/echo"))
        .body(big.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/x-test");
    assert!(
        r.bytes().await.unwrap()[..] == big[..],
        "body changed on the way"
    );

    // The request as Http_* variables.
    let r = p
        .http
        .put(url("/vars?a=1&b=two"))
        .header("X-Custom", "hello")
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.text().await.unwrap(),
        "method=PUT\npath=/vars\nquery=a=1&b=two\ncustom=hello\n"
    );

    // Only the function's environment: nothing of the worker's.
    let r = p.http.get(url("/env")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let env = r.text().await.unwrap();
    let allowed = [
        "PATH",
        "LANG",
        "HOME",
        "TMPDIR",
        "secret_mount_path",
        "content_type",
        "PWD",
        "SHLVL",
        "_",
        "OLDPWD",
    ];
    for line in env.lines().filter(|l| l.contains('=')) {
        let key = line.split_once('=').unwrap().0;
        assert!(
            allowed.contains(&key) || key.starts_with("Http_"),
            "the function sees {key:?}, which it was not given:\n{env}"
        );
    }
    assert!(
        !env.contains("NATS_URL") && !env.contains("DATABASE_URL"),
        "{env}"
    );
    assert!(
        !env.contains("Http_Query="),
        "no query, no Http_Query:\n{env}"
    );
    assert!(env.contains("Http_X_Call_Id="), "{env}");
    let home = p.work_dir.join("fn").join(&name).join("home");
    assert!(
        env.lines().any(|l| l == format!("HOME={}", home.display())),
        "{env}"
    );

    // A non-zero exit is a 500 with the exit code and stderr, sync and async.
    let r = p.http.post(url("/fail")).send().await.unwrap();
    assert_eq!(r.status(), 500);
    let text = r.text().await.unwrap();
    assert!(
        text.contains("exit code 3") && text.contains("something broke"),
        "{text}"
    );
    let id = p.call_async(&format!("{name}/fail"), "").await;
    let s = p.wait_final(&id, Duration::from_secs(20)).await;
    assert_eq!(s["status"], "failed", "{s}");
    let error = s["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("exit code 3") && error.contains("something broke"),
        "{s}"
    );

    // Async success.
    let id = p.call_async(&format!("{name}/echo"), "hi").await;
    let s = p.wait_final(&id, Duration::from_secs(20)).await;
    assert_eq!(s["status"], "succeeded", "{s}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn exec_timeout_kills_the_whole_process_group() {
    let mut p = Platform::start().await;
    let dir = shared_dir("fjord-rt-");
    let pid_file = dir.join("pid");
    let name = unique("slow");
    let fprocess = format!(
        "sh -c 'sleep 1000 & echo $! > {}; wait'",
        pid_file.display()
    );
    let f = p
        .deploy_spec(function(
            &name,
            "exec",
            &[("fprocess", &fprocess), ("exec_timeout", "1s")],
        ))
        .await;
    p.start_worker(&f).await;

    let started = std::time::Instant::now();
    let r = p
        .http
        .post(format!("{}/function/{name}", p.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 504);
    assert!(started.elapsed() < Duration::from_secs(10));
    let text = r.text().await.unwrap();
    assert!(text.contains("timed out after 1s"), "{text}");
    let pid: i32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    wait_for(
        "the background child of the timed-out call to be killed",
        Duration::from_secs(5),
        || async { process_gone(pid).then_some(()) },
    )
    .await;

    let id = p.call_async(&name, "").await;
    let s = p.wait_final(&id, Duration::from_secs(20)).await;
    assert_eq!(s["status"], "failed", "{s}");
    assert!(
        s["error"]
            .as_str()
            .unwrap_or_default()
            .contains("timed out after 1s"),
        "{s}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn exec_functions_run_as_their_own_users_and_cannot_read_each_other() {
    if !available(is_root(), "root (to run functions as their own users)") {
        return;
    }
    let mut p = Platform::start().await;
    let dir = shared_dir("fjord-rt-");
    let script = write_file(&dir, "fn.sh", EXEC_SCRIPT);
    let fprocess = format!("sh {}", script.display());
    let a = unique("usera");
    let b = unique("userb");
    for name in [&a, &b] {
        let f = p
            .deploy_spec(function(name, "exec", &[("fprocess", &fprocess)]))
            .await;
        p.start_worker(&f).await;
    }
    let call = |name: &str, path: &str, file: Option<&str>| {
        let mut r = p.http.post(format!("{}/function/{name}{path}", p.url));
        if let Some(file) = file {
            r = r.header("X-File", file);
        }
        r.send()
    };

    let r = call(&a, "/id", None).await.unwrap();
    assert_eq!(r.status(), 200);
    let uid = function_user(&a.parse().unwrap()).0;
    assert_eq!(r.text().await.unwrap().trim(), uid.to_string());

    let r = call(&b, "/write", None).await.unwrap();
    assert_eq!(r.status(), 200);
    let file = r.text().await.unwrap().trim().to_owned();
    let r = call(&b, "/read", Some(&file)).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "private\n");

    let r = call(&a, "/read", Some(&file)).await.unwrap();
    assert_eq!(r.status(), 500);
    let text = r.text().await.unwrap();
    assert!(text.contains("Permission denied"), "{text}");
    let _ = std::fs::remove_dir_all(&dir);
}

const GREEDY_SCRIPT: &str = r#"#!/bin/sh
if [ "$Http_Path" = /big ]; then
  exec python3 -c 'b = b"x" * (200 * 1024 * 1024); print(len(b))'
fi
echo small
"#;

#[tokio::test]
async fn memory_limit_kills_the_call_not_the_worker() {
    let controller = fjord_common::cgroup::memory_controller();
    if !available(
        controller.is_ok(),
        &format!(
            "a memory cgroup controller ({:?})",
            controller.as_ref().err()
        ),
    ) {
        return;
    }
    let controller = controller.unwrap();
    let mut p = Platform::start().await;
    let dir = shared_dir("fjord-rt-");
    let script = write_file(&dir, "greedy.sh", GREEDY_SCRIPT);
    let name = unique("greedy");
    let fprocess = format!("sh {}", script.display());
    let mut f = function(&name, "exec", &[("fprocess", &fprocess)]);
    f.limits = Some(Resources {
        memory: Some("32Mi".into()),
        cpu: None,
    });
    let f = p.deploy_spec(f).await;
    p.start_worker(&f).await;
    let url = |path: &str| format!("{}/function/{name}{path}", p.url);

    let r = p.http.post(url("/big")).send().await.unwrap();
    assert_eq!(r.status(), 500);
    let text = r.text().await.unwrap();
    assert!(
        text.contains("killed: exceeded the memory limit (32Mi)"),
        "{text}"
    );
    // The worker survived: the next call runs.
    let r = p.http.post(url("/small")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "small\n");

    let id = p.call_async(&format!("{name}/big"), "").await;
    let s = p.wait_final(&id, Duration::from_secs(30)).await;
    assert_eq!(s["status"], "failed", "{s}");
    assert!(
        s["error"]
            .as_str()
            .unwrap_or_default()
            .contains("exceeded the memory limit"),
        "{s}"
    );

    // Each call's cgroup is removed after it.
    wait_for(
        "the calls' memory cgroups to be removed",
        Duration::from_secs(10),
        || async {
            let left = std::fs::read_dir(controller.dir())
                .map(|entries| {
                    entries
                        .flatten()
                        .filter(|e| e.file_name().to_string_lossy().starts_with(&name))
                        .count()
                })
                .unwrap_or(0);
            (left == 0).then_some(())
        },
    )
    .await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// An upstream for the http runtime: answers 503 everywhere for its first half second (so a
/// call that arrives before the health check passed would fail), then describes each request
/// as JSON.
const UPSTREAM: &str = r#"
import http.server, json, os, sys, time

STARTED = time.monotonic()
HEALTH_CHECKS = 0

class Handler(http.server.BaseHTTPRequestHandler):
    def answer(self):
        global HEALTH_CHECKS
        warm = time.monotonic() - STARTED > 0.5
        if self.path == "/healthz":
            HEALTH_CHECKS += 1
            self.send_response(200 if warm else 503)
            self.end_headers()
            return
        if not warm:
            self.send_response(503)
            self.end_headers()
            return
        path, _, query = self.path.partition("?")
        if path == "/sleep":
            time.sleep(5)
        if path == "/hog":
            hog = b"x" * (200 * 1024 * 1024)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode()
        out = json.dumps({
            "method": self.command,
            "path": path,
            "query": query,
            "headers": {k.lower(): v for k, v in self.headers.items()},
            "body": body,
            "pid": os.getpid(),
            "port": os.environ["PORT"],
            "env": sorted(os.environ),
            "health_checks": HEALTH_CHECKS,
        }).encode()
        self.send_response(201 if path == "/created" else 200)
        self.send_header("Content-Type", "application/json")
        self.send_header("X-Upstream", "python")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    do_GET = do_POST = do_PUT = do_DELETE = answer

    def log_message(self, *args):
        pass

http.server.ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
"#;

#[tokio::test]
async fn cancelling_an_http_call_abandons_its_request_and_the_process_serves_on() {
    let mut p = Platform::start().await;
    let dir = shared_dir("fjord-rt-");
    let name = unique("up");
    let f = p.deploy_spec(upstream_function(&dir, &name, &[])).await;
    p.start_worker(&f).await;
    let pid = |p: &Platform| {
        let url = format!("{}/function/{name}/pid", p.url);
        let http = p.http.clone();
        async move {
            let seen: Value = http.get(url).send().await.unwrap().json().await.unwrap();
            seen["pid"].as_i64().unwrap()
        }
    };
    let before = pid(&p).await;
    // The upstream takes 5 s over /sleep.
    let id = p.call_async(&format!("{name}/sleep"), "").await;
    wait_for("the call to run", Duration::from_secs(10), || async {
        (p.status(&id).await["status"] == "running").then_some(())
    })
    .await;
    let asked = std::time::Instant::now();
    let r = p
        .http
        .delete(format!("{}/async-function/{id}", p.url))
        .basic_auth(fjord_tests::USER, Some(fjord_tests::PASSWORD))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let s = p.wait_final(&id, Duration::from_secs(10)).await;
    assert_eq!(s["status"], "cancelled", "{s}");
    assert!(
        asked.elapsed() < Duration::from_secs(4),
        "cancelled before the upstream would have answered: {:?}",
        asked.elapsed()
    );
    // Its request was abandoned, not its process: other calls are still served by it.
    assert_eq!(pid(&p).await, before);
    let _ = std::fs::remove_dir_all(&dir);
}

fn upstream_function(dir: &Path, name: &str, extra: &[(&str, &str)]) -> FunctionSpec {
    let script = write_file(dir, "upstream.py", UPSTREAM);
    let fprocess = format!("python3 {}", script.display());
    let mut env = vec![("fprocess", fprocess.as_str())];
    env.extend_from_slice(extra);
    let mut f = function(name, "http", &env);
    f.annotations
        .insert("com.openfaas.health.http.path".into(), "/healthz".into());
    f
}

#[tokio::test]
async fn http_runtime_forwards_calls_and_restarts_its_process() {
    let mut p = Platform::start().await;
    let dir = shared_dir("fjord-rt-");
    let name = unique("up");
    let f = p
        .deploy_spec(upstream_function(&dir, &name, &[("exec_timeout", "2s")]))
        .await;
    p.start_worker(&f).await;
    let url = |path: &str| format!("{}/function/{name}{path}", p.url);

    let r = p
        .http
        .put(url("/created?a=1&b=2"))
        .header("X-Custom", "yes")
        .header("Content-Type", "text/plain")
        .body("hello upstream")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(r.headers()["x-upstream"], "python");
    let call_id = r.headers()["x-call-id"].to_str().unwrap().to_owned();
    let seen: Value = r.json().await.unwrap();
    assert_eq!(seen["method"], "PUT");
    assert_eq!(seen["path"], "/created");
    assert_eq!(seen["query"], "a=1&b=2");
    assert_eq!(seen["body"], "hello upstream");
    assert_eq!(seen["headers"]["x-custom"], "yes");
    assert_eq!(seen["headers"]["content-type"], "text/plain");
    assert_eq!(seen["headers"]["x-call-id"], call_id.as_str());
    assert!(seen["headers"]["x-start-time"].is_string(), "{seen}");
    // Called only once its health check passed.
    assert!(seen["health_checks"].as_u64().unwrap() >= 1, "{seen}");

    // exec_timeout applies to each call.
    let r = p.http.get(url("/sleep")).send().await.unwrap();
    assert_eq!(r.status(), 504);
    assert!(r.text().await.unwrap().contains("timed out after 2s"));

    // Killed, it is restarted, and calls keep succeeding.
    let old_pid = seen["pid"].as_i64().unwrap() as i32;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(old_pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    // Once it has been reaped, no request can reach it half-way (a call in flight at the
    // moment of death fails, as it should). Not merely a zombie: the leader of a threaded
    // process is one while its other threads still hold the listening socket open.
    wait_for(
        "the killed process to be reaped",
        Duration::from_secs(5),
        || async {
            std::fs::metadata(format!("/proc/{old_pid}"))
                .is_err()
                .then_some(())
        },
    )
    .await;
    let new_pid = wait_for(
        "a call served by the restarted process",
        Duration::from_secs(30),
        || async {
            let r = p.http.post(url("/again")).send().await.unwrap();
            assert_eq!(r.status(), 200, "{:?}", r.text().await);
            let seen: Value = r.json().await.unwrap();
            let pid = seen["pid"].as_i64().unwrap() as i32;
            (pid != old_pid).then_some(pid)
        },
    )
    .await;
    assert_ne!(new_pid, old_pid);

    let id = p.call_async(&format!("{name}/async"), "later").await;
    let s = p.wait_final(&id, Duration::from_secs(20)).await;
    assert_eq!(s["status"], "succeeded", "{s}");

    // The worker's end stops the process.
    p.stop_workers();
    wait_for(
        "the function process to stop with its worker",
        Duration::from_secs(15),
        || async { process_gone(new_pid).then_some(()) },
    )
    .await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn two_http_workers_on_one_host_get_their_own_ports() {
    let p = Platform::start().await;
    let dir = shared_dir("fjord-rt-");
    let name = unique("pair");
    // One call at a time per worker, so concurrent calls spread over both.
    p.deploy_spec(upstream_function(&dir, &name, &[("max_inflight", "1")]))
        .await;
    let _w1 = p.spawn_worker(&name);
    let _w2 = p.spawn_worker(&name);
    let url = format!("{}/function/{name}/where", p.url);

    let seen_ports = std::sync::Mutex::new(std::collections::BTreeSet::new());
    let ports = wait_for(
        "calls served by both workers",
        Duration::from_secs(90),
        || async {
            let answers = futures::future::join_all((0..4).map(|_| p.http.get(&url).send())).await;
            for r in answers {
                let r = r.unwrap();
                if r.status() != 200 {
                    // The workers are still starting (the call waited out the sync timeout).
                    continue;
                }
                let seen: Value = r.json().await.unwrap();
                let env: Vec<String> = serde_json::from_value(seen["env"].clone()).unwrap();
                for secret in ["NATS_URL", "DATABASE_URL", "FJORD_NATS_PREFIX"] {
                    assert!(!env.iter().any(|k| k == secret), "{secret} leaked: {env:?}");
                }
                let port = seen["port"].as_str().unwrap().to_owned();
                seen_ports.lock().unwrap().insert(port);
            }
            let ports = seen_ports.lock().unwrap().clone();
            (ports.len() == 2).then_some(ports)
        },
    )
    .await;
    assert_eq!(ports.len(), 2);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn template_functions_run_their_handler_through_fjords_shims() {
    let mut p = Platform::start().await;
    let handlers = [
        (
            "node20",
            "handler.js",
            "module.exports = async (event, context) => context.status(200).succeed('hello ' + event.body);\n",
        ),
        (
            "python3-http",
            "handler.py",
            "def handle(event, context):\n    return {\"statusCode\": 200, \"body\": \"hello \" + event.body.decode()}\n",
        ),
    ];
    for (lang, file, code) in handlers {
        let name = unique("tpl");
        // No package: the code folder is `code/none`; put the handler there before the worker
        // starts (the worker keeps what it finds).
        let code_dir = p.work_dir.join("fn").join(&name).join("code").join("none");
        std::fs::create_dir_all(&code_dir).unwrap();
        std::fs::write(code_dir.join(file), code).unwrap();
        let f = p.deploy_spec(function(&name, lang, &[])).await;
        p.start_worker(&f).await;
        let r = p
            .http
            .post(format!("{}/function/{name}", p.url))
            .header("Content-Type", "text/plain")
            .body("fjord")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{lang}");
        assert_eq!(r.text().await.unwrap(), "hello fjord", "{lang}");
    }
}

#[tokio::test]
async fn an_http_process_killed_for_its_memory_fails_its_calls_and_is_restarted() {
    let controller = fjord_common::cgroup::memory_controller();
    if !available(
        controller.is_ok(),
        &format!(
            "a memory cgroup controller ({:?})",
            controller.as_ref().err()
        ),
    ) {
        return;
    }
    let mut p = Platform::start().await;
    let dir = shared_dir("fjord-rt-");
    let name = unique("hog");
    let mut f = upstream_function(&dir, &name, &[]);
    f.limits = Some(Resources {
        memory: Some("64Mi".into()),
        cpu: None,
    });
    let f = p.deploy_spec(f).await;
    p.start_worker(&f).await;
    let url = |path: &str| format!("{}/function/{name}{path}", p.url);

    let r = p.http.get(url("/first")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let old_pid = r.json::<Value>().await.unwrap()["pid"].as_i64().unwrap();

    let r = p.http.get(url("/hog")).send().await.unwrap();
    assert_eq!(r.status(), 500);
    let text = r.text().await.unwrap();
    assert!(
        text.contains("killed: exceeded the memory limit (64Mi)"),
        "{text}"
    );

    // Restarted: the next call waits for the new process.
    let r = p.http.get(url("/after")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let new_pid = r.json::<Value>().await.unwrap()["pid"].as_i64().unwrap();
    assert_ne!(new_pid, old_pid);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Secrets reach only the functions that name them, as files under `secret_mount_path`:
/// another function's secret is neither in its folder, nor readable at the other's path, nor
/// in its environment. Deployed through the API, as users do.
#[tokio::test]
async fn a_function_reads_its_own_secrets_and_no_one_elses() {
    if !available(is_root(), "root (to run functions as their own users)") {
        return;
    }
    let mut p = Platform::start().await;
    let scripts = shared_dir("fjord-rt-");
    let script = write_file(
        &scripts,
        "secrets.sh",
        r#"#!/bin/sh
echo "mount=$secret_mount_path"
echo "own=$(cat "$secret_mount_path/$OWN" 2>&1)"
echo "listing=$(ls "$secret_mount_path" | tr '\n' ' ')"
other_dir=$(echo "$secret_mount_path" | sed "s#/fn/$SELF/#/fn/$OTHER/#")
echo "other=$(cat "$other_dir/$OTHER_SECRET" 2>&1)"
echo "env=$(env | grep -c s3cr3t)"
"#,
    );
    for (name, secret, value) in [
        ("alpha", "alpha-key", "s3cr3t-alpha"),
        ("beta", "beta-key", "s3cr3t-beta"),
    ] {
        let r = p
            .admin(reqwest::Method::POST, "/system/secrets")
            .json(&serde_json::json!({"name": secret, "value": value}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        let (other, other_secret) = if name == "alpha" {
            ("beta", "beta-key")
        } else {
            ("alpha", "alpha-key")
        };
        let r = p
            .admin(reqwest::Method::POST, "/system/functions")
            .json(&serde_json::json!({
                "service": name, "lang": "exec", "envProcess": format!("sh {}", script.display()),
                "envVars": {"OWN": secret, "SELF": name, "OTHER": other, "OTHER_SECRET": other_secret},
                "secrets": [secret],
            }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202, "{:?}", r.text().await);
        let spec = p.queue_spec(name).await.unwrap();
        p.start_worker(&spec).await;
    }
    for (name, own, other) in [
        ("alpha", "s3cr3t-alpha", "s3cr3t-beta"),
        ("beta", "s3cr3t-beta", "s3cr3t-alpha"),
    ] {
        let r = wait_for(
            "the function to answer",
            Duration::from_secs(20),
            || async {
                let r = p.post(&format!("/function/{name}")).send().await.unwrap();
                (r.status() == 200).then_some(r)
            },
        )
        .await;
        let out = r.text().await.unwrap();
        assert!(out.contains(&format!("own={own}")), "{out}");
        assert!(out.contains(&format!("listing={name}-key ")), "{out}");
        assert!(!out.contains(other), "{name} saw the other secret: {out}");
        assert!(out.contains("Permission denied"), "{out}");
        assert!(out.contains("env=0"), "{out}");
    }
    // An updated value reaches the running worker's file.
    let r = p
        .admin(reqwest::Method::PUT, "/system/secrets")
        .json(&serde_json::json!({"name": "alpha-key", "value": "s3cr3t-rotated"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    wait_for("the rotated secret", Duration::from_secs(10), || async {
        let out = p
            .post("/function/alpha")
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        out.contains("own=s3cr3t-rotated").then_some(())
    })
    .await;
}
