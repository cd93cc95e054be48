//! The README's first command: `fjord up` on a machine where neither NATS nor PostgreSQL
//! answers at the configured addresses, so it starts its own; the CLI talks to it; Ctrl-C stops
//! everything; a second run finds the data of the first.

use std::process::Stdio;
use std::time::Duration;

use fjord_tests::{bin, unique, wait_for};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

fn free_port() -> u16 {
    fjord_common::services::free_port().expect("a free port")
}

struct Up {
    child: Child,
    password: String,
}

impl Drop for Up {
    /// `fjord up` runs in its own process group: if the test fails, nothing it started lingers.
    fn drop(&mut self) {
        if let Some(pid) = self.child.id() {
            let _ = nix::sys::signal::killpg(Pid::from_raw(pid as i32), Signal::SIGKILL);
        }
    }
}

struct Setup {
    data_dir: std::path::PathBuf,
    nats_port: u16,
    pg_port: u16,
    gateway: String,
}

fn command(setup: &Setup, exe: &str) -> Command {
    let mut c = Command::new(bin(exe));
    c.current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .env("NATS_URL", format!("nats://127.0.0.1:{}", setup.nats_port))
        .env(
            "DATABASE_URL",
            format!("postgres://postgres@127.0.0.1:{}/fjord", setup.pg_port),
        )
        .env("FJORD_DATA_DIR", &setup.data_dir)
        .env(
            "FJORD_GATEWAY_ADDR",
            setup.gateway.trim_start_matches("http://"),
        )
        .env("FJORD_GATEWAY_URL", &setup.gateway)
        .env_remove("FJORD_BASIC_AUTH_USER")
        .env_remove("FJORD_BASIC_AUTH_PASSWORD")
        .env_remove("FJORD_NATS_PREFIX")
        .env_remove("FJORD_CALLBACK_SECRET")
        .env(
            "FJORD_CALLBACK_ALLOW_NETS",
            fjord_tests::CALLBACK_ALLOW_NETS,
        )
        .kill_on_drop(true);
    c
}

async fn up(setup: &Setup) -> Up {
    let mut child = command(setup, "fjord")
        .arg("up")
        .process_group(0)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut password = String::new();
    let ready = tokio::time::timeout(Duration::from_secs(120), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            println!("fjord up: {line}");
            if let Some(p) = line.trim().strip_prefix("password") {
                password = p.trim().to_owned();
            }
            if line.starts_with("Press Ctrl-C") {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(ready, Ok(true), "fjord up did not come up");
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Up { child, password }
}

async fn stop(mut up: Up) {
    kill(Pid::from_raw(up.child.id().unwrap() as i32), Signal::SIGINT).unwrap();

    let status = tokio::time::timeout(Duration::from_secs(60), up.child.wait())
        .await
        .expect("fjord up stops on Ctrl-C")
        .unwrap();
    assert!(status.success(), "fjord up exited with {status}");
}

async fn cli(setup: &Setup, args: &[&str]) -> String {
    let out = command(setup, "fjord").args(args).output().await.unwrap();
    assert!(
        out.status.success(),
        "fjord {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn fjord_up_starts_everything_and_a_second_run_keeps_the_data() {
    if !fjord_tests::can_start_servers() {
        return;
    }
    let setup = Setup {
        data_dir: std::env::temp_dir().join(unique("fjord-up-")),
        nats_port: free_port(),
        pg_port: free_port(),
        gateway: format!("http://127.0.0.1:{}", free_port()),
    };
    let first = up(&setup).await;
    assert_eq!(first.password.len(), 24, "a generated password is printed");
    let id = cli(
        &setup,
        &["invoke", "echo", "--async", "-d", "kept across restarts"],
    )
    .await
    .trim()
    .to_owned();
    uuid::Uuid::parse_str(&id).expect("fjord invoke --async prints the call id");
    let http = fjord_tests::http_client();
    wait_for("the call to succeed", Duration::from_secs(30), || async {
        let r = http
            .get(format!("{}/system/invocations/{id}", setup.gateway))
            .basic_auth("admin", Some(&first.password))
            .send()
            .await
            .ok()?;
        let v: serde_json::Value = r.json().await.ok()?;
        (v["status"] == "succeeded").then_some(())
    })
    .await;
    let status = cli(&setup, &["status", &id]).await;
    assert!(status.contains("\"succeeded\""), "{status}");
    let receiver = fjord_tests::receiver::Receiver::start().await;
    let hook = format!("{}/done", receiver.url);
    let with_callback = cli(
        &setup,
        &[
            "invoke",
            "echo",
            "--async",
            "--callback",
            &hook,
            "-d",
            "hello",
        ],
    )
    .await;
    let got = receiver.wait_for(1, Duration::from_secs(20)).await;
    assert_eq!(got[0].header("x-call-id"), with_callback.trim());
    assert_eq!(got[0].body, b"hello"[..]);
    // Signed with the secret `fjord up` generated and keeps in its secrets folder.
    let secret = std::fs::read_to_string(setup.data_dir.join("secrets/callback-secret")).unwrap();
    let signer = fjord_common::callback::Signer::parse(&secret).unwrap();
    let expected = signer.sign(
        &got[0].header("webhook-id"),
        got[0].header("webhook-timestamp").parse().unwrap(),
        &got[0].body,
    );
    assert_eq!(Some(got[0].header("webhook-signature")), expected);
    let status = cli(&setup, &["status", with_callback.trim()]).await;
    assert!(status.contains(&hook), "{status}");
    let sync = cli(&setup, &["invoke", "echo", "-d", "right now"]).await;
    assert_eq!(sync, "right now");
    // The example functions of every runtime answer.
    let words = cli(&setup, &["invoke", "wordcount", "-d", "tre små ord"]).await;
    assert_eq!(words.trim(), "3");
    let receipt = cli(
        &setup,
        &[
            "invoke",
            "payment-processor",
            "--content-type",
            "application/json",
            "-d",
            r#"{"amount": 99.5, "currency": "EUR"}"#,
        ],
    )
    .await;
    assert!(receipt.contains("\"accepted\""), "{receipt}");
    let summary = cli(&setup, &["invoke", "thumbnail-webhook", "-d", "abc"]).await;
    assert!(summary.contains("\"bytes\":3"), "{summary}");
    let listed = cli(&setup, &["list"]).await;
    for name in [
        "image-resize",
        "pdf",
        "payment-processor",
        "thumbnail-webhook",
    ] {
        assert!(listed.contains(name), "{listed}");
    }
    let queues = cli(&setup, &["queues"]).await;
    assert!(
        queues.contains("echo") && queues.contains("sleep"),
        "{queues}"
    );
    // Accepted but not yet run when the platform stops: must still be there afterwards.
    let pending = cli(&setup, &["invoke", "sleep", "--async", "-d", "x"])
        .await
        .trim()
        .to_owned();
    stop(first).await;

    let second = up(&setup).await;
    let r = http
        .get(format!("{}/system/invocations/{id}/result", setup.gateway))
        .basic_auth("admin", Some(&second.password))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "kept across restarts");
    wait_for(
        "the call accepted before the restart to finish",
        Duration::from_secs(30),
        || async {
            let v: serde_json::Value = http
                .get(format!("{}/system/invocations/{pending}", setup.gateway))
                .basic_auth("admin", Some(&second.password))
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            (v["status"] == "succeeded").then_some(())
        },
    )
    .await;
    stop(second).await;
    let _ = std::fs::remove_dir_all(&setup.data_dir);
}
