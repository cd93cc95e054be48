//! Hostile and broken requests at the gateway, over raw TCP where a client library would refuse
//! to send them: each gets a clear 4xx or a clean close, nothing half-received is queued, and
//! the gateway keeps serving everyone else.

use std::time::Duration;

use fjord_tests::{Platform, error_code};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Sends raw bytes (then shuts the write side if `close`) and returns what came back before the
/// gateway closed the connection or went quiet for 5 s.
async fn raw(p: &Platform, bytes: &[u8], close: bool) -> String {
    let addr = p.url.trim_start_matches("http://");
    let mut stream = TcpStream::connect(addr).await.unwrap();
    // The gateway may answer (and close) before it has read everything: ignore write errors.
    let _ = stream.write_all(bytes).await;
    if close {
        let _ = stream.shutdown().await;
    }
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

fn status_line(response: &str) -> &str {
    response.lines().next().unwrap_or("")
}

async fn still_serving(p: &Platform) {
    let r = p
        .post("/async-function/echo")
        .body("still here")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
}

async fn recorded(p: &Platform) -> i64 {
    // Everything accepted so far is recorded once the recorder has caught up with the stream.
    fjord_tests::wait_for(
        "the recorder to catch up",
        Duration::from_secs(10),
        || async {
            let (last, floor) = p.queue.recorder_progress().await.ok()?;
            (floor >= last).then_some(())
        },
    )
    .await;
    sqlx::query_scalar("SELECT count(*) FROM invocations")
        .fetch_one(p.store.pool())
        .await
        .unwrap()
}

#[tokio::test]
async fn ten_thousand_headers_are_refused_and_the_gateway_carries_on() {
    let p = Platform::start().await;
    p.deploy("echo", "echo").await;
    let mut request = b"POST /async-function/echo HTTP/1.1\r\nHost: x\r\n".to_vec();
    for i in 0..10_000 {
        request.extend_from_slice(format!("X-H-{i}: v\r\n").as_bytes());
    }
    request.extend_from_slice(b"Content-Length: 0\r\n\r\n");
    let answer = raw(&p, &request, false).await;
    let line = status_line(&answer);
    assert!(
        line.is_empty() || line.contains(" 431 ") || line.contains(" 400 "),
        "{line}"
    );
    still_serving(&p).await;
    assert_eq!(recorded(&p).await, 1, "only the good call was queued");
}

#[tokio::test]
async fn a_truncated_body_or_a_client_gone_mid_upload_queues_nothing() {
    let p = Platform::start().await;
    p.deploy("echo", "echo").await;
    // Declares 1000 bytes, sends 10 and closes.
    let truncated = raw(
        &p,
        b"POST /async-function/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n0123456789",
        true,
    )
    .await;
    assert!(!truncated.contains(" 202 "), "{truncated}");
    // A large upload abandoned halfway.
    let mut upload =
        b"POST /async-function/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4000000\r\n\r\n"
            .to_vec();
    upload.extend(std::iter::repeat_n(b'x', 1_000_000));
    let gone = raw(&p, &upload, true).await;
    assert!(!gone.contains(" 202 "), "{gone}");
    // A chunked body cut short.
    let chunked = raw(
        &p,
        b"POST /async-function/echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel",
        true,
    )
    .await;
    assert!(!chunked.contains(" 202 "), "{chunked}");
    still_serving(&p).await;
    assert_eq!(recorded(&p).await, 1, "no partial body was queued");
}

#[tokio::test]
async fn garbage_in_every_header_fjord_reads_gets_a_clear_error() {
    let p = Platform::start().await;
    p.deploy("echo", "echo").await;
    // Bytes that are not UTF-8 (or not even visible ASCII) in the headers Fjord reads.
    for (header, code) in [
        ("X-Call-Id", "invalid_call_id"),
        ("X-Callback-Url", "invalid_callback_url"),
        ("Idempotency-Key", "invalid_idempotency_key"),
    ] {
        let mut request =
            b"POST /async-function/echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\n".to_vec();
        request.extend_from_slice(header.as_bytes());
        request.extend_from_slice(b": \xff\xfe\x80bad\r\nContent-Length: 0\r\n\r\n");
        let answer = raw(&p, &request, false).await;
        assert!(status_line(&answer).contains(" 400 "), "{header}: {answer}");
        assert!(answer.contains(code), "{header}: {answer}");
        assert!(answer.contains("\"message\""), "{header}: {answer}");
    }
    // A garbage traceparent is not an error: the call starts a trace of its own.
    let r = p
        .post("/async-function/echo")
        .header("traceparent", "garbage")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    // A path that is not UTF-8, percent-encoded and raw.
    let r = p.post("/async-function/%FF%FE").send().await.unwrap();
    assert_eq!(error_code(r).await, (400, "invalid_path".into()));
    let raw_path = raw(
        &p,
        b"POST /async-function/\xff\xfe HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
        false,
    )
    .await;
    let line = status_line(&raw_path);
    assert!(
        line.is_empty() || line.contains(" 400 ") || line.contains(" 404 "),
        "{line}"
    );
    // A request line that is not HTTP at all.
    let nonsense = raw(&p, b"\x00\x01\x02 hello\r\n\r\n", false).await;
    let line = status_line(&nonsense);
    assert!(line.is_empty() || line.contains(" 400 "), "{nonsense}");
    still_serving(&p).await;
}
