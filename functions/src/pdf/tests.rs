//! Renders documents and reads them back with poppler's tools (`pdftotext`, `pdfinfo`,
//! `pdffonts`, `pdfimages`) as a user would; skipped with a reason when poppler-utils is not
//! installed, failing instead under `FJORD_REQUIRE_ALL=1`.

use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

use base64::Engine;
use serde_json::{Value, json};

use super::*;
use crate::Function;

const NORWEGIAN: &str = "Blåbærsyltetøy – Ærlig Øl på Åsen";

fn poppler() -> bool {
    let present = ["pdftotext", "pdfinfo", "pdffonts", "pdfimages"]
        .iter()
        .all(|t| Command::new(t).arg("-v").output().is_ok());
    if present {
        return true;
    }
    assert!(
        std::env::var("FJORD_REQUIRE_ALL").as_deref() != Ok("1"),
        "poppler-utils (pdftotext, pdfinfo) is required (FJORD_REQUIRE_ALL=1) but missing"
    );
    eprintln!("skipping: poppler-utils (pdftotext, pdfinfo) is missing");
    false
}

/// A PDF in a file of its own, removed when dropped.
struct PdfFile(std::path::PathBuf);

impl PdfFile {
    fn new(bytes: &[u8]) -> PdfFile {
        static N: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "fjord-pdf-test-{}-{}.pdf",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::write(&path, bytes).unwrap();
        PdfFile(path)
    }

    fn run(&self, tool: &str, args: &[&str]) -> String {
        let mut c = Command::new(tool);
        c.args(args).arg(&self.0);
        if tool == "pdftotext" {
            c.arg("-");
        }
        let out = c.output().unwrap();
        assert!(
            out.status.success(),
            "{tool}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    fn text(&self, args: &[&str]) -> String {
        self.run("pdftotext", args)
    }

    fn info(&self, key: &str) -> String {
        self.run("pdfinfo", &[])
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{key}:")))
            .unwrap_or_else(|| panic!("pdfinfo has no {key}"))
            .trim()
            .to_owned()
    }
}

impl Drop for PdfFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn render_json(doc: &Value) -> Vec<u8> {
    render(doc.to_string().as_bytes()).unwrap_or_else(|e| panic!("{e}"))
}

fn invoice(rows: usize) -> Value {
    let rows: Vec<Value> = (1..=rows)
        .map(|i| {
            json!([
                format!("Item {i:04}"),
                if i == 3 {
                    NORWEGIAN.to_owned()
                } else {
                    format!("Line item number {i}")
                },
                i % 7 + 1,
                format!("{}.50", i * 10),
            ])
        })
        .collect();
    json!({
        "title": "Faktura 2024-117",
        "author": "Fjordkraft AS",
        "margins": 15,
        "header": "Fjordkraft AS — Faktura 2024-117",
        "footer": "Side {page} av {pages}",
        "blocks": [
            {"type": "heading", "text": "Faktura 2024-117", "level": 1},
            {"type": "paragraph", "text": "Kunde: Ærlig Øl på Åsen AS\nStorgata 1, 0155 Oslo"},
            {"type": "table", "columns": ["Item", "Description", "Qty", "Amount"],
             "widths": [2, 6, 1, 2], "align": ["left", "left", "right", "right"],
             "rows": rows},
            {"type": "paragraph", "text": "Betales innen 14 dager.", "align": "justified"},
        ],
    })
}

fn report(sections: usize) -> Value {
    let mut blocks = Vec::new();
    for s in 1..=sections {
        if s > 1 {
            blocks.push(json!({"type": "page_break"}));
        }
        blocks.push(json!({"type": "heading", "text": format!("Section {s}"), "level": 1}));
        blocks.push(json!({"type": "heading", "text": "Background", "level": 2}));
        for p in 0..3 {
            blocks.push(
                json!({"type": "paragraph", "align": "justified", "text": format!(
                "Paragraph {p} of section {s}. {} The quick brown fox jumps over the lazy dog \
                 while the fjord keeps its calm, and every line here is justified so both \
                 margins stay straight. {NORWEGIAN}.", "Lorem ipsum dolor sit amet.".repeat(3))}),
            );
        }
        blocks.push(json!({"type": "spacer", "height": 5}));
        blocks.push(json!({"type": "heading", "text": "Details", "level": 3}));
    }
    json!({
        "title": "Årsrapport",
        "author": "Åse Øvrebø",
        "page_size": "Letter",
        "margins": {"top": 25, "right": 20, "bottom": 25, "left": 20},
        "header": "Årsrapport {page}/{pages}",
        "footer": "Page {page} of {pages}",
        "blocks": blocks,
    })
}

#[test]
fn invoice_reads_back_with_its_text_and_metadata() {
    let pdf = render_json(&invoice(40));
    assert!(pdf.len() <= 60_000, "{} bytes", pdf.len());
    if !poppler() {
        return;
    }
    let f = PdfFile::new(&pdf);
    let text = f.text(&["-layout"]);
    assert!(text.contains(NORWEGIAN), "{text}");
    assert!(text.contains("Kunde: Ærlig Øl på Åsen AS"), "{text}");
    assert!(text.contains("Item 0040"), "{text}");
    assert!(text.contains("Side 1 av 1"), "{text}");
    assert!(text.contains("Betales innen 14 dager."), "{text}");
    assert_eq!(f.info("Title"), "Faktura 2024-117");
    assert_eq!(f.info("Author"), "Fjordkraft AS");
    assert_eq!(f.info("Pages"), "1");
    assert!(
        f.info("Page size").contains("(A4)"),
        "{}",
        f.info("Page size")
    );
    let year = chrono::Datelike::year(&chrono::Utc::now()).to_string();
    assert!(
        f.info("CreationDate").contains(&year),
        "{}",
        f.info("CreationDate")
    );
    // Both faces embedded as subsets with a ToUnicode map.
    let fonts = f.run("pdffonts", &[]);
    let embedded: Vec<&str> = fonts.lines().filter(|l| l.contains("DejaVuSans")).collect();
    assert_eq!(embedded.len(), 2, "{fonts}");
    for l in embedded {
        assert!(
            l.contains("CID TrueType") && l.contains("yes yes yes"),
            "{l}"
        );
    }
}

#[test]
fn report_numbers_its_pages_in_header_and_footer() {
    let pdf = render_json(&report(5));
    if !poppler() {
        return;
    }
    let f = PdfFile::new(&pdf);
    assert_eq!(f.info("Pages"), "5");
    assert!(
        f.info("Page size").starts_with("612 x 792 pts"),
        "{}",
        f.info("Page size")
    );
    assert_eq!(f.info("Title"), "Årsrapport");
    assert_eq!(f.info("Author"), "Åse Øvrebø");
    let page2 = f.text(&["-f", "2", "-l", "2"]);
    assert!(page2.contains("Page 2 of 5"), "{page2}");
    assert!(page2.contains("Årsrapport 2/5"), "{page2}");
    assert!(page2.contains("Section 2"), "{page2}");
    // Justified lines keep their words apart and in order.
    let flat = page2.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(
        flat.contains("The quick brown fox jumps over the lazy dog while the fjord"),
        "{flat}"
    );
    assert!(flat.contains(NORWEGIAN), "{flat}");
}

#[test]
fn long_report_flows_over_many_pages() {
    let blocks: Vec<Value> = (0..400)
        .map(|i| json!({"type": "paragraph", "text": format!("Paragraph {i}. {}", "Words that wrap across the line. ".repeat(8))}))
        .collect();
    let pdf = render_json(&json!({"footer": "{page}/{pages}", "blocks": blocks}));
    if !poppler() {
        return;
    }
    let f = PdfFile::new(&pdf);
    let pages: usize = f.info("Pages").parse().unwrap();
    assert!((20..=80).contains(&pages), "{pages} pages");
    let last = f.text(&["-f", &pages.to_string(), "-l", &pages.to_string()]);
    assert!(last.contains("Paragraph 399."), "{last}");
    assert!(last.contains(&format!("{pages}/{pages}")), "{last}");
}

#[test]
fn long_table_repeats_its_header_row_on_the_next_page() {
    let pdf = render_json(&invoice(120));
    if !poppler() {
        return;
    }
    let f = PdfFile::new(&pdf);
    let pages: usize = f.info("Pages").parse().unwrap();
    assert!(pages >= 2, "{pages}");
    let page2 = f.text(&["-layout", "-f", "2", "-l", "2"]);
    let header_line = page2
        .lines()
        .find(|l| l.contains("Description"))
        .unwrap_or_else(|| panic!("no header row on page 2: {page2}"));
    for label in ["Item", "Qty", "Amount"] {
        assert!(header_line.contains(label), "{header_line}");
    }
    // The header comes before the rows, and no row is lost or doubled across the break.
    let first_row = page2.find("Item 0").expect("rows on page 2");
    assert!(page2.find("Description").unwrap() < first_row);
    let all = f.text(&["-layout"]);
    for i in 1..=120 {
        assert_eq!(
            all.matches(&format!("Item {i:04} ")).count(),
            1,
            "Item {i:04}"
        );
    }
}

#[test]
fn a_row_taller_than_a_page_is_split() {
    let long = "word ".repeat(3000);
    let pdf = render_json(&json!({"blocks": [
        {"type": "table", "columns": ["Key", "Text"], "widths": [1, 4],
         "rows": [["first", "short"], ["long", long], ["last", "end of table"]]},
    ]}));
    if !poppler() {
        return;
    }
    let f = PdfFile::new(&pdf);
    let pages: usize = f.info("Pages").parse().unwrap();
    assert!(pages >= 2, "{pages}");
    let all = f.text(&[]);
    assert_eq!(all.matches("word").count(), 3000);
    assert!(all.contains("end of table"));
}

#[test]
fn images_keep_their_pixels_and_aspect() {
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let png = image::tests::png_rgba(40, 20);
    let jpeg = image::tests::jpeg_header();
    let pdf = render_json(&json!({"blocks": [
        {"type": "image", "data": b64(&png), "width": 80},
        {"type": "image", "data": format!("data:image/jpeg;base64,{}", b64(&jpeg)), "width": 50},
        {"type": "paragraph", "text": "after the images"},
    ]}));
    let s = String::from_utf8_lossy(&pdf);
    assert!(s.contains("/DCTDecode"), "JPEG passed through");
    assert!(s.contains("/SMask"), "alpha kept as a soft mask");
    assert!(
        pdf.windows(jpeg.len()).any(|w| w == jpeg),
        "JPEG bytes unchanged"
    );
    if !poppler() {
        return;
    }
    let f = PdfFile::new(&pdf);
    let list = f.run("pdfimages", &["-list"]);
    let rows: Vec<Vec<&str>> = list
        .lines()
        .skip(2)
        .map(|l| l.split_whitespace().collect())
        .collect();
    // page num type width height color comp bpc enc ...
    assert_eq!(rows.len(), 3, "{list}");
    assert_eq!(
        &rows[0][2..10],
        ["image", "40", "20", "rgb", "3", "8", "image", "no"]
    );
    assert_eq!(rows[1][2], "smask");
    assert_eq!(
        &rows[2][2..9],
        ["image", "640", "480", "rgb", "3", "8", "jpeg"]
    );
    assert!(f.text(&[]).contains("after the images"));
}

/// The function's answer to a body.
fn call(body: &str) -> Response {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(Pdf.call(Request {
        method: "POST".into(),
        body: body.to_owned().into(),
        ..Default::default()
    }))
}

fn rejected(body: &str) -> Value {
    let r = call(body);
    assert_eq!(r.status, 400, "{body}");
    assert_eq!(r.headers[0].1, "application/json");
    serde_json::from_slice(&r.body).unwrap()
}

#[test]
fn the_function_answers_pdf_or_a_400_with_the_path() {
    let r = call(&invoice(3).to_string());
    assert_eq!(r.status, 200);
    assert_eq!(
        r.headers[0],
        ("Content-Type".into(), "application/pdf".into())
    );
    assert!(r.body.starts_with(b"%PDF-"));

    let bad_png = base64::engine::general_purpose::STANDARD.encode(b"\x89PNG\r\n\x1a\nnot really");
    let cases = [
        (
            r#"{"blocks":[{"type":"paragraph","text":"a"},{"type":"video"}]}"#,
            "$.blocks[1].type",
        ),
        (r#"{"blocks":[{"type":"heading"}]}"#, "$.blocks[0].text"),
        (
            r#"{"blocks":[{"type":"heading","text":"x","level":0}]}"#,
            "$.blocks[0].level",
        ),
        (
            r#"{"blocks":[{"type":"paragraph","text":5}]}"#,
            "$.blocks[0].text",
        ),
        (
            r#"{"blocks":[{"type":"paragraph","text":"a","align":"full"}]}"#,
            "$.blocks[0].align",
        ),
        (r#"{"page_size":"A3","blocks":[]}"#, "$.page_size"),
        (r#"{"margins":{"top":-3},"blocks":[]}"#, "$.margins.top"),
        (r#"{"blocks":{}}"#, "$.blocks"),
        (
            r#"{"blocks":[{"type":"image","data":"not base64!"}]}"#,
            "$.blocks[0].data",
        ),
        (
            r#"{"blocks":[{"type":"image","data":"aGVsbG8gd29ybGQ="}]}"#,
            "$.blocks[0].data",
        ),
        (r#"{"blocks":[{"type":"image"}]}"#, "$.blocks[0].data"),
        (r#"{"blocks":[{"type":"spacer"}]}"#, "$.blocks[0].height"),
        (
            r#"{"blocks":[{"type":"spacer","height":1},{"type":"spacer","height":1},{"type":"spacer","height":1},
               {"type":"table","columns":["a","b"],"rows":[["1","2"],["3","4"],["5"]]}]}"#,
            "$.blocks[3].rows[2]",
        ),
        (
            r#"{"blocks":[{"type":"table","columns":["a"],"rows":[[true]]}]}"#,
            "$.blocks[0].rows[0][0]",
        ),
        (
            r#"{"blocks":[{"type":"table","columns":[],"rows":[]}]}"#,
            "$.blocks[0].columns",
        ),
        (
            r#"{"blocks":[{"type":"table","columns":["a"],"widths":[0]}]}"#,
            "$.blocks[0].widths[0]",
        ),
        (
            r#"{"blocks":[{"type":"page_break","height":3}]}"#,
            "$.blocks[0].height",
        ),
    ];
    for (body, path) in cases {
        let v = rejected(body);
        assert_eq!(v["code"], "invalid_document", "{body}: {v}");
        assert_eq!(v["path"], path, "{body}: {v}");
        let message = v["message"].as_str().unwrap();
        assert!(message.starts_with(path), "{message}");
    }
    let v = rejected(&json!({"blocks": [{"type": "image", "data": bad_png}]}).to_string());
    assert_eq!(v["path"], "$.blocks[0].data");
    assert!(v["message"].as_str().unwrap().contains("PNG"), "{v}");

    let v = rejected("{\"blocks\": [\n  {\"type\": \"paragraph\",}\n]}");
    assert_eq!(v["code"], "invalid_json");
    assert_eq!(
        (v["line"].as_u64(), v["column"].as_u64()),
        (Some(2), Some(24))
    );
    assert!(
        v["message"].as_str().unwrap().contains("line 2 column 24"),
        "{v}"
    );
    assert_eq!(rejected("")["code"], "invalid_json");
}

#[test]
fn odd_text_still_renders() {
    // Characters the font lacks, control characters, empty texts, words wider than a line,
    // an empty table, a trailing page break and headings at the foot of a page.
    let mut blocks = vec![
        json!({"type": "paragraph", "text": "emoji \u{1F980} and a\u{7}bell, tab\tand\r\nCRLF"}),
        json!({"type": "paragraph", "text": ""}),
        json!({"type": "paragraph", "text": "x".repeat(500)}),
        json!({"type": "table", "columns": ["only"], "rows": []}),
        json!({"type": "spacer", "height": 0}),
    ];
    for i in 0..60 {
        blocks.push(json!({"type": "heading", "text": format!("H{i}"), "level": 1 + i % 3}));
    }
    blocks.push(json!({"type": "page_break"}));
    let pdf = render_json(&json!({"blocks": blocks}));
    if !poppler() {
        return;
    }
    let f = PdfFile::new(&pdf);
    let text = f.text(&[]);
    assert!(text.contains("emoji \u{FFFD} and abell, tab and"), "{text}");
    assert!(text.contains("H59"));
    let pages: usize = f.info("Pages").parse().unwrap();
    let last = f.text(&["-f", &pages.to_string(), "-l", &pages.to_string()]);
    assert!(
        last.contains("H59"),
        "no blank page after a trailing page break"
    );
}
