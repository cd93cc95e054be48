//! `fjord deploy --k8s`: manifests for a stack with every scaling label combination, validated
//! offline against the Kubernetes schemas and KEDA's ScaledObject fields by
//! `deploy/k3s/validate.py` (kubernetes-validate), together with the NATS and PostgreSQL
//! manifests of `deploy/k3s/` they refer to.

use std::path::PathBuf;
use std::process::Stdio;

use fjord_tests::{available, bin, unique};

const PYTHON: &str = "/usr/bin/python3";

fn validator_present() -> bool {
    std::process::Command::new(PYTHON)
        .args(["-c", "import kubernetes_validate"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

const STACK: &str = r#"
version: 1.0
provider: {name: openfaas, gateway: http://127.0.0.1:8080}
functions:
  defaults:
    lang: builtin
    handler: echo
  min-zero:
    lang: builtin
    handler: sleep
    labels: {com.openfaas.scale.min: "0"}
  zero-keeps-min:
    lang: builtin
    handler: echo
    labels:
      com.openfaas.scale.zero: "true"
      com.openfaas.scale.min: "2"
      com.openfaas.scale.zero-duration: 15m
  bounded:
    lang: builtin
    handler: pdf
    labels:
      com.openfaas.scale.min: "3"
      com.openfaas.scale.max: "3"
      com.openfaas.scale.target: "1"
      com.fjord.scale.down-window: 2m
    annotations:
      com.openfaas.scale.zero: "false"
  resized:
    lang: exec
    handler: ./none
    environment: {fprocess: cat, max_inflight: "4"}
    annotations: {com.openfaas.scale.max: "50", com.openfaas.scale.target: "25"}
    limits: {memory: 256Mi, cpu: "1"}
    requests: {memory: 64Mi, cpu: 250m}
"#;

#[tokio::test]
async fn manifests_for_every_scaling_combination_validate() {
    if !available(
        validator_present(),
        "the kubernetes-validate Python package (pip install kubernetes-validate)",
    ) {
        return;
    }
    let dir = std::env::temp_dir().join(unique("k8s-"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("stack.yml"), STACK).unwrap();
    let out = dir.join("fjord.yaml");
    let generated = tokio::process::Command::new(bin("fjord"))
        .args(["deploy", "--k8s", "-f"])
        .arg(dir.join("stack.yml"))
        .args(["--image", "registry.example.internal/fjord:0.1.0", "-o"])
        .arg(&out)
        .output()
        .await
        .unwrap();
    assert!(
        generated.status.success(),
        "{}",
        String::from_utf8_lossy(&generated.stderr)
    );
    let text = std::fs::read_to_string(&out).unwrap();
    for name in [
        "defaults",
        "min-zero",
        "zero-keeps-min",
        "bounded",
        "resized",
    ] {
        assert!(
            text.contains(&format!("name: fjord-fn-{name}")),
            "{name} missing"
        );
        assert!(
            text.contains(&format!("consumer: fn_{name}")),
            "{name}'s trigger missing"
        );
    }
    let k3s = repo().join("deploy/k3s");
    let validated = tokio::process::Command::new(PYTHON)
        .arg(k3s.join("validate.py"))
        .arg(k3s.join("nats.yaml"))
        .arg(k3s.join("postgres.yaml"))
        .arg(&out)
        .output()
        .await
        .unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&validated.stdout),
        String::from_utf8_lossy(&validated.stderr)
    );
    assert!(validated.status.success(), "{report}");
    assert!(report.contains("ScaledObject"), "{report}");

    // The validator is not a rubber stamp: a ScaledObject KEDA would refuse fails it.
    let broken = text.replacen("maxReplicaCount: 3", "maxReplicaCount: -3", 1);
    assert_ne!(broken, text);
    let broken_file = dir.join("broken.yaml");
    std::fs::write(&broken_file, broken).unwrap();
    let refused = tokio::process::Command::new(PYTHON)
        .arg(k3s.join("validate.py"))
        .arg(k3s.join("nats.yaml"))
        .arg(k3s.join("postgres.yaml"))
        .arg(&broken_file)
        .output()
        .await
        .unwrap();
    assert!(
        !refused.status.success(),
        "a negative maxReplicaCount passed"
    );

    // A stack whose scaling labels are invalid is refused, naming the label.
    std::fs::write(
        dir.join("bad.yml"),
        "functions:\n  f:\n    lang: builtin\n    handler: echo\n    labels: {com.openfaas.scale.min: \"5\", com.openfaas.scale.max: \"2\"}\n",
    )
    .unwrap();
    let bad = tokio::process::Command::new(bin("fjord"))
        .args(["deploy", "--k8s", "-f"])
        .arg(dir.join("bad.yml"))
        .output()
        .await
        .unwrap();
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("com.openfaas.scale.min"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// On Kubernetes the control process runs with two replicas (`FJORD_NO_SPAWN`): both pull the
/// recorder's consumer and both dispatch callbacks. Every call is recorded once and every
/// callback arrives once, whichever replica took it.
#[tokio::test]
async fn two_control_processes_share_the_recorder_and_the_dispatcher() {
    use fjord_tests::receiver::Receiver;
    use fjord_tests::{Options, Platform, dispatch_config, spec, wait_for};
    use std::time::Duration;

    let mut p = Platform::start_with(Options {
        dispatcher: Some(dispatch_config()),
        ..Options::default()
    })
    .await;
    let echo = p.deploy_spec(spec("echo", "echo")).await;
    p.start_worker(&echo).await;
    let mut second = p
        .worker_command()
        .args(["control", "--no-spawn"])
        .spawn()
        .unwrap();
    // Both recorders pull: two pull requests wait on the recorder's consumer.
    wait_for(
        "both recorders to pull",
        Duration::from_secs(60),
        || async {
            let info = p
                .queue
                .stream()
                .await
                .unwrap()
                .consumer_info(p.queue.names.recorder_consumer())
                .await
                .unwrap();
            (info.num_waiting >= 2).then_some(())
        },
    )
    .await;

    let receiver = Receiver::start().await;
    let calls = 300;
    let mut ids = Vec::new();
    for i in 0..calls {
        let r = p
            .post("/async-function/echo")
            .header("X-Callback-Url", format!("{}/cb", receiver.url))
            .body(format!("call {i}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
        ids.push(r.headers()["x-call-id"].to_str().unwrap().to_owned());
    }
    let got = receiver.wait_for(calls, Duration::from_secs(60)).await;
    for id in &ids {
        assert_eq!(
            p.wait_final(id, Duration::from_secs(30)).await["status"],
            "succeeded"
        );
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let got = if receiver.received().len() > got.len() {
        receiver.received()
    } else {
        got
    };
    let distinct: std::collections::BTreeSet<String> =
        got.iter().map(|r| r.header("x-call-id")).collect();
    assert_eq!(distinct.len(), calls, "every call's callback arrived");
    assert_eq!(got.len(), calls, "and none twice");
    let _ = second.start_kill();
}
