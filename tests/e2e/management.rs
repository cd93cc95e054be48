//! The OpenFaaS management API (`/system/functions`, `/system/function/{name}`,
//! `/system/info`, `/system/secrets`) and what deploying, updating and removing do to calls.

use std::time::Duration;

use fjord_tests::{Platform, wait_for};
use reqwest::Method;
use serde_json::{Value, json};

fn echo(name: &str) -> Value {
    json!({"service": name, "lang": "builtin", "handler": "echo",
           "labels": {"team": "billing"}, "annotations": {"note": "first"}})
}

#[tokio::test]
async fn functions_are_deployed_listed_updated_and_removed_by_the_api() {
    let mut p = Platform::start().await;
    let r = p
        .admin(Method::POST, "/system/functions")
        .json(&echo("api-echo"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202, "{:?}", r.text().await);
    let again = p
        .admin(Method::POST, "/system/functions")
        .json(&echo("api-echo"))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 409);
    assert_eq!(
        again.json::<Value>().await.unwrap()["code"],
        "function_exists"
    );

    // Unknown functions are 404 on PUT, so clients fall back to POST.
    let r = p
        .admin(Method::PUT, "/system/functions")
        .json(&echo("nobody"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(
        r.json::<Value>().await.unwrap()["code"],
        "function_not_found"
    );

    let spec = wait_for("the definition", Duration::from_secs(5), || async {
        p.queue_spec("api-echo").await
    })
    .await;
    p.start_worker(&spec).await;
    for _ in 0..3 {
        let id = p.call_async("api-echo", "hi").await;
        assert_eq!(
            p.wait_final(&id, Duration::from_secs(10)).await["status"],
            "succeeded"
        );
    }

    let list: Value = p
        .system("/system/functions")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let entry = list
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == "api-echo")
        .unwrap()
        .clone();
    assert_eq!(entry["labels"]["team"], "billing");
    assert_eq!(entry["annotations"]["note"], "first");
    assert_eq!(entry["invocationCount"], 3);
    assert_eq!(entry["replicas"], 1);
    assert_eq!(entry["availableReplicas"], 1);
    assert_eq!(entry["lang"], "builtin");

    let mut updated = echo("api-echo");
    updated["annotations"]["note"] = json!("second");
    let r = p
        .admin(Method::PUT, "/system/functions")
        .json(&updated)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let one: Value = p
        .system("/system/function/api-echo")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(one["annotations"]["note"], "second");
    assert_eq!(one["name"], "api-echo");
    let r = p.system("/system/function/nobody").send().await.unwrap();
    assert_eq!(r.status(), 404);

    let info: Value = p
        .system("/system/info")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(info["provider"]["provider"], "fjord");
    assert!(info["version"]["release"].is_string());
    assert_eq!(
        p.http
            .get(format!("{}/healthz", p.url))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    // The management API is behind basic auth.
    let open = p
        .http
        .get(format!("{}/system/functions", p.url))
        .send()
        .await
        .unwrap();
    assert_eq!(open.status(), 401);

    let r = p
        .admin(Method::DELETE, "/system/functions")
        .json(&json!({"functionName": "api-echo"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let r = p
        .admin(Method::DELETE, "/system/functions")
        .json(&json!({"functionName": "api-echo"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    wait_for("calls to be refused", Duration::from_secs(5), || async {
        let r = p
            .post("/async-function/api-echo")
            .body("x")
            .send()
            .await
            .unwrap();
        (r.status() == 404).then_some(())
    })
    .await;
}

#[tokio::test]
async fn invalid_definitions_answer_400_naming_the_field() {
    let p = Platform::start().await;
    let cases = [
        (json!({"lang": "builtin", "handler": "echo"}), "service"),
        (
            json!({"service": "Bad_Name", "lang": "builtin", "handler": "echo"}),
            "service",
        ),
        (json!({"service": "f", "handler": "echo"}), "lang"),
        (
            json!({"service": "f", "lang": "cobol", "handler": "x"}),
            "lang",
        ),
        (
            json!({"service": "f", "lang": "builtin", "handler": "nope"}),
            "handler",
        ),
        (
            json!({"service": "f", "lang": "builtin", "handler": "echo", "labels": 5}),
            "labels",
        ),
        (
            json!({"service": "f", "lang": "exec"}),
            "environment.fprocess",
        ),
        (
            json!({"service": "f", "lang": "node18", "handler": "./f"}),
            "package",
        ),
        (
            json!({"service": "f", "lang": "exec", "envProcess": "cat", "secrets": ["missing-one"]}),
            "secrets[0]",
        ),
        (
            json!({"service": "f", "lang": "exec", "envProcess": "cat", "limits": {"memory": "lots"}}),
            "limits.memory",
        ),
        (
            json!({"service": "f", "lang": "exec", "envProcess": "cat", "envVars": {"exec_timeout": "soon"}}),
            "environment.exec_timeout",
        ),
        (
            json!({"service": "f", "lang": "builtin", "handler": "echo", "labels": {"com.openfaas.scale.min": "x"}}),
            "com.openfaas.scale.min",
        ),
        (
            json!({"service": "f", "lang": "builtin", "handler": "echo", "labels": {"com.openfaas.scale.min": "5", "com.openfaas.scale.max": "2"}}),
            "com.openfaas.scale.min",
        ),
        (
            json!({"service": "f", "lang": "builtin", "handler": "echo", "annotations": {"com.openfaas.scale.zero": "yes"}}),
            "com.openfaas.scale.zero",
        ),
        (
            json!({"service": "f", "lang": "builtin", "handler": "echo", "labels": {"com.openfaas.scale.zero-duration": "soon"}}),
            "com.openfaas.scale.zero-duration",
        ),
        (
            json!({"service": "f", "lang": "exec", "envProcess": "cat", "package": "abc"}),
            "package",
        ),
    ];
    for (body, field) in cases {
        let r = p
            .admin(Method::POST, "/system/functions")
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{body}");
        let e: Value = r.json().await.unwrap();
        assert_eq!(e["code"], "invalid_definition", "{body}: {e}");
        assert_eq!(e["field"], field, "{body}: {e}");
        assert!(e["message"].as_str().unwrap().contains(field), "{e}");
    }
    let r = p
        .admin(Method::POST, "/system/functions")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    // Nothing was deployed by any of them.
    let list: Value = p
        .system("/system/functions")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list, json!([]));
}

#[tokio::test]
async fn removing_a_function_cancels_its_queued_calls_and_a_redeploy_never_runs_them() {
    let mut p = Platform::start().await;
    let body = json!({"service": "doomed", "lang": "builtin", "handler": "echo"});
    let r = p
        .admin(Method::POST, "/system/functions")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let mut queued = Vec::new();
    for i in 0..20 {
        queued.push(p.call_async("doomed", format!("call {i}")).await);
    }
    let r = p
        .admin(Method::DELETE, "/system/functions")
        .json(&json!({"functionName": "doomed"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    // Deployed again at once: whether the control process or the new worker gets to them
    // first, calls accepted for the old deployment end cancelled and never run.
    let r = p
        .admin(Method::POST, "/system/functions")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202, "{:?}", r.text().await);
    let spec = p.queue_spec("doomed").await.unwrap();
    p.start_worker(&spec).await;
    for id in &queued {
        let s = p.wait_final(id, Duration::from_secs(20)).await;
        assert_eq!(s["status"], "cancelled", "{s}");
        assert!(s["started_at"].is_null(), "{s}");
        assert!(s["error"].as_str().unwrap().contains("removed"), "{s}");
    }
    let fresh = p.call_async("doomed", "new").await;
    assert_eq!(
        p.wait_final(&fresh, Duration::from_secs(10)).await["status"],
        "succeeded"
    );
}

#[tokio::test]
async fn removal_without_redeploy_cancels_queued_calls_and_deletes_the_queue() {
    let p = Platform::start().await;
    let body = json!({"service": "gone", "lang": "builtin", "handler": "sleep"});
    p.admin(Method::POST, "/system/functions")
        .json(&body)
        .send()
        .await
        .unwrap();
    let ids: Vec<String> =
        futures::future::join_all((0..10).map(|_| p.call_async("gone", ""))).await;
    p.admin(Method::DELETE, "/system/functions")
        .json(&json!({"functionName": "gone"}))
        .send()
        .await
        .unwrap();
    for id in &ids {
        assert_eq!(
            p.wait_final(id, Duration::from_secs(20)).await["status"],
            "cancelled"
        );
    }
    let name = "gone".parse().unwrap();
    wait_for(
        "the consumer to be deleted",
        Duration::from_secs(10),
        || async {
            p.queue
                .function_consumer(&name)
                .await
                .is_err()
                .then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn an_update_applies_to_queued_calls_that_start_after_it() {
    let mut p = Platform::start().await;
    let mut body = json!({"service": "morph", "lang": "builtin", "handler": "echo"});
    p.admin(Method::POST, "/system/functions")
        .json(&body)
        .send()
        .await
        .unwrap();
    let ids: Vec<String> =
        futures::future::join_all((0..5).map(|_| p.call_async("morph", "payload"))).await;
    body["handler"] = json!("inspect");
    let r = p
        .admin(Method::PUT, "/system/functions")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let spec = p.queue_spec("morph").await.unwrap();
    assert_eq!(spec.handler, "inspect");
    p.start_worker(&spec).await;
    for id in &ids {
        let s = p.wait_final(id, Duration::from_secs(10)).await;
        assert_eq!(s["status"], "succeeded");
        let result = p
            .system(&format!("/system/invocations/{id}/result"))
            .send()
            .await
            .unwrap();
        assert_eq!(
            result.headers()["content-type"],
            "application/json",
            "ran as inspect"
        );
    }
}

#[tokio::test]
async fn secrets_are_created_listed_updated_and_deleted_without_showing_values() {
    let p = Platform::start().await;
    let r = p
        .admin(Method::POST, "/system/secrets")
        .json(&json!({"name": "db-password", "value": "hunter2"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let r = p
        .admin(Method::POST, "/system/secrets")
        .json(&json!({"name": "db-password", "value": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    let r = p
        .admin(Method::POST, "/system/secrets")
        .json(&json!({"name": "api.key", "rawValue": "AAEC"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let r = p.system("/system/secrets").send().await.unwrap();
    let text = r.text().await.unwrap();
    assert!(!text.contains("hunter2"), "{text}");
    let list: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(list, json!([{"name": "api.key"}, {"name": "db-password"}]));
    let r = p
        .admin(Method::PUT, "/system/secrets")
        .json(&json!({"name": "db-password", "value": "new"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = p
        .admin(Method::PUT, "/system/secrets")
        .json(&json!({"name": "nope", "value": "new"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    for bad in [
        json!({"name": "Bad Name", "value": "x"}),
        json!({"name": "ok"}),
        json!({"name": "ok", "rawValue": "%%%"}),
    ] {
        let r = p
            .admin(Method::POST, "/system/secrets")
            .json(&bad)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{bad}");
    }
    let r = p
        .admin(Method::DELETE, "/system/secrets")
        .json(&json!({"name": "db-password"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = p
        .admin(Method::DELETE, "/system/secrets")
        .json(&json!({"name": "db-password"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn a_name_that_would_share_a_deployed_functions_user_is_refused() {
    let p = Platform::start().await;
    // Two names whose derived user ids collide (a birthday search over a few thousand names).
    let mut seen = std::collections::HashMap::new();
    let (first, second) = (0..)
        .find_map(|i| {
            let name: fjord_common::FunctionName = format!("fn-{i}").parse().unwrap();
            seen.insert(name.user_id(), name.clone())
                .map(|earlier| (earlier.to_string(), name.to_string()))
        })
        .unwrap();
    let deploy = |name: &str| {
        p.admin(Method::POST, "/system/functions")
            .json(&json!({"service": name, "lang": "builtin", "handler": "echo"}))
            .send()
    };
    assert_eq!(deploy(&first).await.unwrap().status(), 202);
    let r = deploy(&second).await.unwrap();
    assert_eq!(r.status(), 400);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["field"], "service");
    assert!(e["message"].as_str().unwrap().contains(&first), "{e}");
}
