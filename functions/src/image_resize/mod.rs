//! `image-resize`: resizes a JPEG, PNG, WebP or GIF (first frame) sent as the body, as the query
//! says (`w`, `h`, `fit`, `bg`, `format`, `q`, `upscale`: see [`Params`]), honouring its EXIF
//! orientation, and answers the encoded image with `X-Image-Width` / `X-Image-Height`.
//!
//! This module owns the whole pipeline: header check (`header`: an image over the pixel limit
//! is refused with 413 before it is decoded), decode with JPEG shrink-on-load (`decode`, and
//! `shrink` for the common JPEG at 1/8 and 1/4), the
//! sizes (`geometry`), resampling and orientation (`pixels`) and encoding (`encode`); a JPEG
//! that becomes a JPEG with no turn or padding stays in YCbCr planes throughout (`planar`).
//! [`resize`] is the synchronous whole, bytes in to bytes out; the [`Function`] runs it on a
//! blocking thread. Bad parameters answer 400, an undecodable body 422, a too-large image 413,
//! each with a JSON body `{"code": "...", "message": "..."}`; all of them are final.

mod decode;
mod encode;
mod geometry;
mod header;
mod params;
mod pixels;
mod planar;
mod shrink;
#[cfg(test)]
mod tests;

use std::fmt::Write;

use image::metadata::Orientation;

pub use params::{Fit, Format, MAX_SIDE, Params};

use crate::{BoxFuture, Function, Request, Response};

/// The pixel limit when `FJORD_IMAGE_MAX_PIXELS` is not set: 100 megapixels.
pub const DEFAULT_MAX_PIXELS: u64 = 100_000_000;

/// Why an image could not be resized; each maps to one HTTP status ([`ResizeError::status`]).
#[derive(Debug, thiserror::Error)]
pub enum ResizeError {
    /// The query is wrong: 400.
    #[error("{message}")]
    InvalidParameter {
        param: &'static str,
        message: String,
    },
    /// The image has more pixels than allowed: 413, found from its header alone.
    #[error("the image is {width}x{height}, over the limit of {max_pixels} pixels")]
    TooLarge {
        width: u32,
        height: u32,
        max_pixels: u64,
    },
    /// The body is not an image this function reads: 422.
    #[error("the body is not a decodable JPEG, PNG, WebP or GIF image: {0}")]
    Undecodable(String),
    /// A fault of ours (an encoder or the resampler refused): 500.
    #[error("{0}")]
    Internal(String),
}

impl ResizeError {
    pub fn status(&self) -> u16 {
        match self {
            ResizeError::InvalidParameter { .. } => 400,
            ResizeError::TooLarge { .. } => 413,
            ResizeError::Undecodable(_) => 422,
            ResizeError::Internal(_) => 500,
        }
    }

    /// The stable `code` of the JSON error body.
    pub fn code(&self) -> &'static str {
        match self {
            ResizeError::InvalidParameter { .. } => "invalid_parameter",
            ResizeError::TooLarge { .. } => "image_too_large",
            ResizeError::Undecodable(_) => "invalid_image",
            ResizeError::Internal(_) => "internal",
        }
    }

    fn into_response(self) -> Response {
        let mut body = format!("{{\"code\":\"{}\",\"message\":", self.code());
        json_string(&mut body, &self.to_string());
        if let ResizeError::InvalidParameter { param, .. } = &self {
            body.push_str(",\"parameter\":");
            json_string(&mut body, param);
        }
        body.push('}');
        Response::new(self.status(), "application/json", body)
    }
}

fn json_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// An encoded output image.
#[derive(Clone, Debug)]
pub struct Output {
    pub bytes: Vec<u8>,
    pub format: Format,
    pub width: u32,
    pub height: u32,
}

fn transposes(o: Orientation) -> bool {
    matches!(
        o,
        Orientation::Rotate90
            | Orientation::Rotate270
            | Orientation::Rotate90FlipH
            | Orientation::Rotate270FlipH
    )
}

/// The shrink-on-load JPEG decoder alone, at `eighths`/8 (1 or 2): the decoded size, or `None`
/// when it leaves the file to `jpeg-decoder`. For the benchmark's stages.
pub fn decode_reduced_jpeg(input: &[u8], eighths: u8) -> Option<(u32, u32)> {
    shrink::decode(input, eighths).map(|p| (p.width, p.height))
}

/// Decodes, orients, resizes and encodes `input` as `params` say, refusing images over
/// `max_pixels` (by their header) before decoding them. CPU-bound: tens of milliseconds for a
/// photo; call it from a blocking thread.
pub fn resize(input: &[u8], params: &Params, max_pixels: u64) -> Result<Output, ResizeError> {
    let kind = header::sniff(input)
        .ok_or_else(|| ResizeError::Undecodable("unknown format".to_owned()))?;
    let too_large = |(width, height): (u32, u32)| {
        (u64::from(width) * u64::from(height) > max_pixels).then_some(ResizeError::TooLarge {
            width,
            height,
            max_pixels,
        })
    };
    let stated = header::dimensions(input, kind)
        .ok_or_else(|| ResizeError::Undecodable("unreadable header".to_owned()))?;
    if let Some(e) = too_large(stated) {
        return Err(e);
    }
    let mut opened = decode::Opened::new(input, kind)?;
    let stored = opened.size();
    if let Some(e) = too_large(stored) {
        return Err(e);
    }
    let orientation = opened.orientation();
    let transpose = transposes(orientation);
    let shown = if transpose {
        (stored.1, stored.0)
    } else {
        stored
    };
    let plan = geometry::Plan::new(shown, params, max_pixels)?;
    let step = geometry::Resample::stored(&plan, transpose);
    let eighths = match kind {
        header::Kind::Jpeg => step.idct_eighths(),
        _ => 8,
    };
    let format = params.format.unwrap_or(match kind {
        header::Kind::Jpeg => Format::Jpeg,
        header::Kind::Png | header::Kind::Gif => Format::Png,
        header::Kind::WebP => Format::WebP,
    });
    // A JPEG that stays a JPEG, with no turn and no padding, keeps its YCbCr planes throughout.
    if format == Format::Jpeg
        && orientation == Orientation::NoTransforms
        && plan.canvas == step.dst
        && let Some(planes) = opened.decode_planes(eighths)
    {
        let step = step.rescaled((planes.y.width, planes.y.height));
        let chroma_factor = encode::jpeg_chroma_factor(params.quality);
        let planes = planes.resample(&step, chroma_factor)?;
        return Ok(Output {
            bytes: encode::encode_planes(&planes, params.quality)?,
            format,
            width: planes.y.width,
            height: planes.y.height,
        });
    }
    let decoded = opened.decode(eighths)?;
    let step = step.rescaled((decoded.width, decoded.height));
    let pixels = decoded.resample(&step)?.orient(orientation).pad(
        plan.canvas,
        plan.offset,
        params.background,
    );
    let (width, height) = (pixels.width, pixels.height);
    let bytes = encode::encode(pixels, format, params.quality, params.background)?;
    Ok(Output {
        bytes,
        format,
        width,
        height,
    })
}

/// The built-in `image-resize` function.
pub struct ImageResize {
    max_pixels: u64,
}

impl ImageResize {
    pub fn new(max_pixels: u64) -> Self {
        ImageResize { max_pixels }
    }

    /// With the pixel limit from `FJORD_IMAGE_MAX_PIXELS` (default [`DEFAULT_MAX_PIXELS`]; an
    /// unreadable value is logged and the default used).
    pub fn from_env() -> Self {
        let max_pixels = match std::env::var("FJORD_IMAGE_MAX_PIXELS") {
            Err(_) => DEFAULT_MAX_PIXELS,
            Ok(v) => v.trim().parse::<u64>().unwrap_or_else(|_| {
                tracing::warn!(
                    value = %v,
                    default = DEFAULT_MAX_PIXELS,
                    "FJORD_IMAGE_MAX_PIXELS is not a number of pixels; using the default"
                );
                DEFAULT_MAX_PIXELS
            }),
        };
        ImageResize::new(max_pixels)
    }
}

impl Function for ImageResize {
    fn call(&self, request: Request) -> BoxFuture<'_, Response> {
        let max_pixels = self.max_pixels;
        Box::pin(async move {
            let params = match Params::from_query(&request.query) {
                Ok(p) => p,
                Err(e) => return e.into_response(),
            };
            let span = tracing::Span::current();
            let body = request.body;
            let work = move || span.in_scope(|| resize(&body, &params, max_pixels));
            match tokio::task::spawn_blocking(work).await {
                Ok(Ok(out)) => {
                    let mut r = Response::new(200, out.format.content_type(), out.bytes);
                    r.headers
                        .push(("X-Image-Width".to_owned(), out.width.to_string()));
                    r.headers
                        .push(("X-Image-Height".to_owned(), out.height.to_string()));
                    r
                }
                Ok(Err(e)) => {
                    if e.status() >= 500 {
                        tracing::error!(error = %e, "image-resize failed");
                    }
                    e.into_response()
                }
                Err(e) => Response::failure(500, format!("image-resize crashed: {e}")),
            }
        })
    }
}
