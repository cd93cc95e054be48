//! Backpressure: a full function queue (`com.fjord.queue.max`) or a nearly full stream answers
//! 429 with `Retry-After`; nothing answered 202 is ever dropped.

use std::time::Duration;

use fjord_tests::{Options, Platform, error_code, spec, wait_for};

#[tokio::test]
async fn a_function_at_its_queue_cap_refuses_calls_until_it_drains() {
    let mut p = Platform::start().await;
    let mut f = spec("capped", "echo");
    f.annotations
        .insert("com.fjord.queue.max".into(), "5".into());
    let f = p.deploy_spec(f).await;
    p.deploy("free", "echo").await;
    let mut accepted = Vec::new();
    let mut refused = 0;
    for i in 0..12 {
        let r = p
            .post("/async-function/capped")
            .body(format!("{i}"))
            .send()
            .await
            .unwrap();
        if r.status() == 202 {
            accepted.push(r.headers()["x-call-id"].to_str().unwrap().to_owned());
        } else {
            assert_eq!(r.headers()["retry-after"], "1");
            assert_eq!(error_code(r).await, (429, "queue_full".into()));
            refused += 1;
        }
    }
    // Never more than the cap. One fewer when a refresh of the queue figures overlapped a
    // publish: a call whose publish was in flight is counted, whether or not the figures
    // already held it.
    assert!(
        (4..=5).contains(&accepted.len()),
        "the cap is kept: {} accepted",
        accepted.len()
    );
    assert_eq!(refused, 12 - accepted.len());
    // Other functions are not affected.
    p.call_async("free", "x").await;
    // Everything accepted runs; then there is room again.
    p.start_worker(&f).await;
    for id in &accepted {
        assert_eq!(
            p.wait_final(id, Duration::from_secs(10)).await["status"],
            "succeeded"
        );
    }
    wait_for("room in the queue", Duration::from_secs(5), || async {
        let r = p.post("/async-function/capped").send().await.ok()?;
        (r.status() == 202).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_stream_near_its_byte_cap_refuses_calls_and_loses_none() {
    let mut p = Platform::start_with(Options {
        stream_max_bytes: 2_000_000,
        ..Default::default()
    })
    .await;
    let f = p.deploy("bulky", "echo").await;
    let body = vec![b'x'; 100_000];
    let mut accepted = Vec::new();
    let mut refused = 0;
    for _ in 0..40 {
        let r = p
            .post("/async-function/bulky")
            .body(body.clone())
            .send()
            .await
            .unwrap();
        match r.status().as_u16() {
            202 => accepted.push(r.headers()["x-call-id"].to_str().unwrap().to_owned()),
            _ => {
                assert_eq!(error_code(r).await, (429, "queue_full".into()));
                refused += 1;
            }
        }
    }
    let info = p.queue.stream().await.unwrap().get_info().await.unwrap();
    assert!(
        refused > 0,
        "the cap was reached: {:?} {:?}",
        info.config.max_bytes,
        info.state
    );
    assert!(
        accepted.len() >= 10 && accepted.len() <= 18,
        "{} accepted under a 2 MB cap with 10% headroom",
        accepted.len()
    );
    // Every 202 is honoured: the worker can still publish outcomes into the headroom.
    p.start_worker(&f).await;
    for id in &accepted {
        assert_eq!(
            p.wait_final(id, Duration::from_secs(20)).await["status"],
            "succeeded"
        );
    }
    wait_for("room in the stream", Duration::from_secs(10), || async {
        let r = p
            .post("/async-function/bulky")
            .body("small")
            .send()
            .await
            .ok()?;
        (r.status() == 202).then_some(())
    })
    .await;
}
