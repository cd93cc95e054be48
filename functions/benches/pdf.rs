//! `cargo bench -p fjord-functions --bench pdf`: how long `pdf::render` takes, warm (fonts
//! parsed once), for a one-page invoice with a 40-row table and a 400-paragraph report of about
//! 50 pages. Prints median and p90 milliseconds and the output size.
//! Targets: invoice ≤ 1 ms and ≤ 60 KB, report ≤ 40 ms.

use std::time::{Duration, Instant};

use fjord_functions::pdf;
use serde_json::{Value, json};

fn invoice() -> Value {
    let rows: Vec<Value> = (1..=40)
        .map(|i| {
            json!([
                format!("VARE-{i:04}"),
                format!("Blåbærsyltetøy, glass {i} – Ærlig Øl på Åsen"),
                i % 5 + 1,
                format!("{}.00", 49 + i),
                format!("{}.00", (49 + i) * (i % 5 + 1)),
            ])
        })
        .collect();
    json!({
        "title": "Faktura 2024-117",
        "author": "Fjordkraft AS",
        "margins": {"top": 15, "right": 15, "bottom": 15, "left": 15},
        "footer": "Side {page} av {pages}",
        "blocks": [
            {"type": "heading", "text": "Faktura 2024-117", "level": 1},
            {"type": "paragraph", "text": "Kunde: Ærlig Øl på Åsen AS, Storgata 1, 0155 Oslo\nForfall: 14 dager"},
            {"type": "table", "columns": ["Varenr.", "Beskrivelse", "Antall", "Pris", "Sum"],
             "widths": [2, 7, 1.2, 1.6, 1.8], "align": ["left", "left", "right", "right", "right"],
             "rows": rows},
            {"type": "paragraph", "text": "Sum å betale: 12 345,00 kr", "align": "left"},
        ],
    })
}

fn report() -> Value {
    let mut blocks = Vec::new();
    for i in 0..400 {
        if i % 40 == 0 {
            blocks.push(
                json!({"type": "heading", "level": 1, "text": format!("Kapittel {}", i / 40 + 1)}),
            );
        }
        blocks.push(
            json!({"type": "paragraph", "align": "justified", "text": format!(
            "Avsnitt {i}. Fjorden ligger stille mens båtene går ut om morgenen, og på kaia står \
             fiskerne og snakker om været. Blåbærsyltetøy – Ærlig Øl på Åsen selger godt i år. \
             The quick brown fox jumps over the lazy dog, again and again, until the line is \
             long enough to wrap several times across the width of the page and to make the \
             justification work for its living, with some more words to reach the length of a \
             typical paragraph in a report like this one.")}),
        );
    }
    json!({
        "title": "Årsrapport",
        "author": "Åse Øvrebø",
        "header": "Årsrapport 2024",
        "footer": "Side {page} av {pages}",
        "blocks": blocks,
    })
}

fn pages(pdf: &[u8]) -> usize {
    pdf.windows(12)
        .filter(|w| w.starts_with(b"/Type /Page") && w[11] != b's')
        .count()
}

fn bench(name: &str, doc: &Value, iterations: usize) {
    let body = doc.to_string();
    for _ in 0..10 {
        pdf::render(body.as_bytes()).expect("renders");
    }
    let mut times: Vec<Duration> = Vec::with_capacity(iterations);
    let mut out = Vec::new();
    for _ in 0..iterations {
        let start = Instant::now();
        out = pdf::render(body.as_bytes()).expect("renders");
        times.push(start.elapsed());
    }
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "{name:<8} input {:>7} B  median {:>7.3} ms  p90 {:>7.3} ms  min {:>7.3} ms  output {:>7} B  pages {:>3}  ({iterations} runs)",
        body.len(),
        ms(times[iterations / 2]),
        ms(times[iterations * 9 / 10]),
        ms(times[0]),
        out.len(),
        pages(&out),
    );
}

fn main() {
    let start = Instant::now();
    pdf::preload();
    println!(
        "fonts parsed once in {:.2} ms",
        start.elapsed().as_secs_f64() * 1000.0
    );
    bench("invoice", &invoice(), 500);
    bench("report", &report(), 60);
}
