//! `fjord deploy -f stack.yml`, `fjord list` and `fjord remove` against a running platform:
//! handler folders are packed, uploaded to NATS and installed by the workers (dependencies
//! once per version), for a built-in, an exec function and the node18 / python3-http
//! templates.

use std::path::{Path, PathBuf};
use std::time::Duration;

use fjord_tests::{Platform, unique, wait_for};
use serde_json::Value;

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../functions/examples")
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// A stack folder with the README's example functions.
fn stack_dir(installs: &Path) -> PathBuf {
    let dir = std::env::temp_dir().join(unique("stack"));
    for name in ["payment-processor", "thumbnail-webhook", "wordcount"] {
        copy_dir(&examples().join(name), &dir.join(name));
    }
    // A lifecycle script that leaves a trace of each dependency installation.
    let package = format!(
        r#"{{"name": "payment-processor", "version": "1.0.0", "dependencies": {{}},
            "scripts": {{"postinstall": "echo installed >> {}"}}}}"#,
        installs.display()
    );
    std::fs::write(dir.join("payment-processor/package.json"), package).unwrap();
    // A Python function whose requirements.txt names a wheel shipped in its folder (pip then
    // needs no index).
    let pydep = dir.join("pydep");
    std::fs::create_dir_all(&pydep).unwrap();
    std::fs::write(
        pydep.join("handler.py"),
        "import fjordtestdep\n\ndef handle(event, context):\n    return fjordtestdep.VALUE\n",
    )
    .unwrap();
    std::fs::write(
        pydep.join("requirements.txt"),
        "./fjordtestdep-1.0-py3-none-any.whl\n",
    )
    .unwrap();
    let wheel = std::process::Command::new("/usr/bin/python3")
        .arg("-c")
        .arg(WHEEL)
        .arg(pydep.join("fjordtestdep-1.0-py3-none-any.whl"))
        .status()
        .unwrap();
    assert!(wheel.success());
    std::fs::write(
        dir.join("env.yml"),
        "environment:\n  from_file: yes-it-is\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("stack.yml"),
        r#"version: 1.0
provider:
  name: openfaas
  gateway: ${STACK_GATEWAY:-http://127.0.0.1:1}
functions:
  cli-echo:
    lang: builtin
    handler: echo
    environment_file:
      - env.yml
  wordcount:
    lang: exec
    handler: ./wordcount
    environment:
      fprocess: sh handler.sh
  payment-processor:
    lang: node18
    handler: ./payment-processor
    image: registry.example.internal/payment:latest
    labels: {com.openfaas.scale.min: "1", com.openfaas.scale.max: "20"}
    annotations: {com.openfaas.health.http.path: "/health"}
  thumbs:
    lang: python3-http
    handler: ./thumbnail-webhook
  pydep:
    lang: python3-http
    handler: ./pydep
"#,
    )
    .unwrap();
    dir
}

/// Writes a minimal pure-Python wheel (module `fjordtestdep`) to the path in argv[1].
const WHEEL: &str = r#"
import sys, zipfile
files = {
    "fjordtestdep.py": "VALUE = 'from a wheel'\n",
    "fjordtestdep-1.0.dist-info/METADATA": "Metadata-Version: 2.1\nName: fjordtestdep\nVersion: 1.0\n",
    "fjordtestdep-1.0.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: fjord-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
}
record = "".join(f"{name},,\n" for name in files) + "fjordtestdep-1.0.dist-info/RECORD,,\n"
with zipfile.ZipFile(sys.argv[1], "w") as z:
    for name, text in files.items():
        z.writestr(name, text)
    z.writestr("fjordtestdep-1.0.dist-info/RECORD", record)
"#;

async fn run(mut command: tokio::process::Command) -> String {
    let output = command.output().await.expect("running fjord");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "fjord failed: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

#[tokio::test]
async fn fjord_deploy_runs_a_stack_of_every_runtime_and_installs_dependencies_once() {
    let p = Platform::start().await;
    let installs = std::env::temp_dir().join(unique("installs"));
    std::fs::write(&installs, "").unwrap();
    // The function's own user appends to it.
    std::fs::set_permissions(
        &installs,
        std::os::unix::fs::PermissionsExt::from_mode(0o666),
    )
    .unwrap();
    let dir = stack_dir(&installs);

    // No --gateway and no variables: the stack's provider.gateway is used.
    let mut deploy = p.cli();
    deploy
        .env_remove("FJORD_GATEWAY_URL")
        .env("STACK_GATEWAY", &p.url)
        .arg("deploy")
        .arg("-f")
        .arg(dir.join("stack.yml"));
    let out = run(deploy).await;
    for name in ["cli-echo", "wordcount", "payment-processor", "thumbs"] {
        assert!(out.contains(&format!("deployed {name}")), "{out}");
    }
    let fetched: Value = p
        .system("/system/function/payment-processor")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(fetched["image"], "registry.example.internal/payment:latest");
    assert_eq!(fetched["lang"], "node18");
    assert!(
        fetched["package"].as_str().unwrap().len() == 64,
        "{fetched}"
    );
    let echo: Value = p
        .system("/system/function/cli-echo")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(echo["envVars"]["from_file"], "yes-it-is");

    let mut workers = Vec::new();
    for name in [
        "cli-echo",
        "wordcount",
        "payment-processor",
        "payment-processor",
        "thumbs",
        "pydep",
    ] {
        workers.push(p.spawn_worker(name));
    }
    let sync = |path: &str, content_type: &'static str, body: &'static str| {
        let request = p
            .http
            .post(format!("{}/function/{path}", p.url))
            .header("Content-Type", content_type)
            .body(body);
        async move { request.send().await.unwrap() }
    };
    let r = wait_for("wordcount to answer", Duration::from_secs(60), || async {
        let r = sync("wordcount", "text/plain", "one two three").await;
        (r.status() == 200).then_some(r)
    })
    .await;
    assert_eq!(r.text().await.unwrap().trim(), "3");
    let r = wait_for(
        "payment-processor to answer",
        Duration::from_secs(60),
        || async {
            let r = sync(
                "payment-processor",
                "application/json",
                r#"{"amount": 12.5, "currency": "nok"}"#,
            )
            .await;
            (r.status() != 502 && r.status() != 504).then_some(r)
        },
    )
    .await;
    // NOK is not one of the example's currencies: its own 400.
    assert_eq!(r.status(), 400);
    let r = sync(
        "payment-processor",
        "application/json",
        r#"{"amount": 12.5, "currency": "EUR"}"#,
    )
    .await;
    assert_eq!(r.status(), 201);
    let receipt: Value = r.json().await.unwrap();
    assert_eq!(receipt["currency"], "EUR");
    let r = wait_for("thumbs to answer", Duration::from_secs(60), || async {
        let r = sync(
            "thumbs/uploads?size=small",
            "application/json",
            r#"{"key": "cat.jpg"}"#,
        )
        .await;
        (r.status() == 200).then_some(r)
    })
    .await;
    let summary: Value = r.json().await.unwrap();
    assert_eq!(summary["object"], "cat.jpg");
    assert_eq!(summary["path"], "/uploads");
    assert_eq!(summary["query"]["size"], "small");
    let r = wait_for("pydep to answer", Duration::from_secs(60), || async {
        let r = sync("pydep", "text/plain", "").await;
        (r.status() == 200).then_some(r)
    })
    .await;
    assert_eq!(r.text().await.unwrap(), "from a wheel");
    let r = sync("cli-echo", "text/plain", "hello").await;
    assert_eq!(r.text().await.unwrap(), "hello");

    // Two workers of payment-processor started together: the dependencies were installed once.
    assert_eq!(
        std::fs::read_to_string(&installs).unwrap().lines().count(),
        1
    );
    // A worker started after the installation uses it as it is (the function cannot change it).
    workers.push(p.spawn_worker("payment-processor"));
    wait_for(
        "a third payment-processor worker",
        Duration::from_secs(60),
        || async {
            let f: Value = p
                .system("/system/function/payment-processor")
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            (f["availableReplicas"] == 3).then_some(())
        },
    )
    .await;
    assert_eq!(
        std::fs::read_to_string(&installs).unwrap().lines().count(),
        1
    );

    let list = {
        let mut c = p.cli();
        c.arg("list");
        run(c).await
    };
    for name in ["cli-echo", "wordcount", "payment-processor", "thumbs"] {
        assert!(list.contains(name), "{list}");
    }
    let mut remove = p.cli();
    remove.args(["remove", "wordcount"]);
    run(remove).await;
    wait_for("wordcount to be gone", Duration::from_secs(5), || async {
        (sync("wordcount", "text/plain", "x").await.status() == 404).then_some(())
    })
    .await;
    let mut missing = p.cli();
    missing.args(["remove", "wordcount"]);
    let output = missing.output().await.unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("404"));
    drop(workers);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn fjord_deploy_reports_an_invalid_stack_naming_the_field() {
    let p = Platform::start().await;
    let dir = std::env::temp_dir().join(unique("badstack"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("stack.yml"),
        "functions:\n  f:\n    lang: exec\n    handler: ./f\n",
    )
    .unwrap();
    let mut deploy = p.cli();
    deploy.arg("deploy").arg("-f").arg(dir.join("stack.yml"));
    let output = deploy.output().await.unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("functions.f.environment.fprocess"),
        "{stderr}"
    );
}
