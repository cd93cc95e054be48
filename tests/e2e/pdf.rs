//! The built-in `pdf` through the real platform: an invoice rendered synchronously and
//! asynchronously and read back with `pdftotext`; an invalid document answers 400 with the JSON
//! path at fault, and fails the async call with function status 400.

use std::time::Duration;

use fjord_tests::{Platform, available, unique};
use serde_json::{Value, json};

const NORWEGIAN: &str = "Blåbærsyltetøy – Ærlig Øl på Åsen";

fn invoice() -> String {
    let rows: Vec<Value> = (1..=25)
        .map(|i| {
            json!([
                format!("VARE-{i:03}"),
                NORWEGIAN,
                i,
                format!("{}.00", 10 * i)
            ])
        })
        .collect();
    json!({
        "title": "Faktura 7",
        "author": "Fjord",
        "footer": "Side {page} av {pages}",
        "blocks": [
            {"type": "heading", "text": "Faktura 7"},
            {"type": "table", "columns": ["Nr.", "Vare", "Antall", "Sum"],
             "align": ["left", "left", "right", "right"], "rows": rows},
        ],
    })
    .to_string()
}

/// `pdftotext` of `pdf`, or `None` when poppler-utils is missing (the test skips, or fails
/// under `FJORD_REQUIRE_ALL=1`).
fn pdftotext(pdf: &[u8]) -> Option<String> {
    let present = std::process::Command::new("pdftotext")
        .arg("-v")
        .output()
        .is_ok();
    if !available(present, "pdftotext (Debian package poppler-utils)") {
        return None;
    }
    let path = std::env::temp_dir().join(format!("{}.pdf", unique("fjord-e2e-pdf-")));
    std::fs::write(&path, pdf).unwrap();
    let out = std::process::Command::new("pdftotext")
        .arg("-layout")
        .arg(&path)
        .arg("-")
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&path);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(String::from_utf8(out.stdout).unwrap())
}

#[tokio::test]
async fn renders_an_invoice_and_rejects_an_invalid_document_with_its_path() {
    let mut p = Platform::start().await;
    let spec = p.deploy("pdf", "pdf").await;
    p.start_worker(&spec).await;

    // Synchronously.
    let r = p
        .post("/function/pdf")
        .header("Content-Type", "application/json")
        .body(invoice())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/pdf");
    let pdf = r.bytes().await.unwrap();
    assert!(pdf.starts_with(b"%PDF-"));
    if let Some(text) = pdftotext(&pdf) {
        assert!(text.contains(NORWEGIAN), "{text}");
        assert!(text.contains("VARE-025"), "{text}");
        assert!(text.contains("Side 1 av 1"), "{text}");
    }

    // Asynchronously: the same document, kept as the call's result.
    let id = p.call_async("pdf", invoice()).await;
    let s = p.wait_final(&id, Duration::from_secs(20)).await;
    assert_eq!(s["status"], "succeeded", "{s}");
    assert_eq!(s["function_status"], 200);
    let r = p
        .system(&format!("/system/invocations/{id}/result"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/pdf");
    let pdf = r.bytes().await.unwrap();
    if let Some(text) = pdftotext(&pdf) {
        assert!(text.contains(NORWEGIAN), "{text}");
    }

    // An invalid document: a ragged table row.
    let bad = json!({"blocks": [
        {"type": "heading", "text": "x"},
        {"type": "table", "columns": ["a", "b"], "rows": [["1", "2"], ["3"]]},
    ]})
    .to_string();
    let r = p
        .post("/function/pdf")
        .header("Content-Type", "application/json")
        .body(bad.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(r.headers()["content-type"], "application/json");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["code"], "invalid_document", "{v}");
    assert_eq!(v["path"], "$.blocks[1].rows[1]", "{v}");
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("$.blocks[1].rows[1]"),
        "{v}"
    );

    let id = p.call_async("pdf", bad).await;
    let s = p.wait_final(&id, Duration::from_secs(20)).await;
    assert_eq!(s["status"], "failed", "{s}");
    assert_eq!(s["function_status"], 400, "{s}");
    let r = p
        .system(&format!("/system/invocations/{id}/result"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-function-status"], "400");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["path"], "$.blocks[1].rows[1]", "{v}");

    // Not JSON at all.
    let r = p
        .post("/function/pdf")
        .body("{\"blocks\": [")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["code"], "invalid_json", "{v}");
    assert_eq!(v["line"], 1, "{v}");
}
