//! `pdf`: renders a JSON document (title, author, page size, margins, header and footer with
//! `{page}`/`{pages}`, and blocks: headings, paragraphs, tables, images, spacers, page breaks)
//! as a PDF. Answers 200 `application/pdf`; a body that is not a valid document answers 400
//! `application/json` `{"code", "message", "path"}` naming the JSON path at fault.
//!
//! The pipeline is [`document`] (parse and check) → [`layout`] (lines, pages, tables) →
//! [`writer`] (PDF objects), with [`fonts`] (DejaVu Sans, parsed once, subset per document)
//! and [`image`] (PNG/JPEG). [`render`] is the whole of it, synchronous; the function runs it
//! on a blocking thread.
//!
//! Why not printpdf 0.12: with `default-features = false` it cannot subset fonts (its
//! `subset_font` returns the whole font unless the `text_layout` feature, an HTML layout
//! engine, is on). Measured on this machine for a 40-line invoice with both faces: 83 ms and
//! 746 KB, `pdffonts` "sub no". So this writes the PDF with `pdf-writer` and subsets with
//! `subsetter`: 0.6 ms and 26 KB for the same kind of invoice.

mod document;
mod fonts;
mod image;
mod layout;
mod writer;

#[cfg(test)]
mod tests;

pub use document::DocumentError;

use crate::{BoxFuture, Function, Request, Response};

pub struct Pdf;

/// Renders a JSON document to PDF bytes. Fails with [`DocumentError`] when the body is not
/// JSON or not a valid document (400), or in the unlikely case that font subsetting fails
/// (500).
pub fn render(json: &[u8]) -> Result<Vec<u8>, DocumentError> {
    let value = document::parse_json(json)?;
    let doc = document::validate(&value)?;
    let laid = layout::lay_out(&doc);
    writer::write(&doc, &laid)
}

/// Parses the embedded fonts now instead of on the first call.
pub fn preload() {
    fonts::preload();
}

fn respond(result: Result<Vec<u8>, DocumentError>) -> Response {
    match result {
        Ok(pdf) => Response::new(200, "application/pdf", pdf),
        Err(e) => {
            let mut r = Response::new(e.status(), "application/json", e.to_json());
            if let DocumentError::Internal(_) = e {
                r.reason = Some(e.to_string());
            }
            r
        }
    }
}

impl Function for Pdf {
    fn call(&self, request: Request) -> BoxFuture<'_, Response> {
        Box::pin(async move {
            let span = tracing::Span::current();
            let body = request.body;
            match tokio::task::spawn_blocking(move || span.in_scope(|| render(&body))).await {
                Ok(result) => respond(result),
                Err(e) => Response::failure(500, format!("pdf rendering failed: {e}")),
            }
        })
    }
}
