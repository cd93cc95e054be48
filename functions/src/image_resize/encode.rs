//! Encoding [`Pixels`]: JPEG with `jpeg-encoder` (baseline, 4:2:0 below q90), PNG and WebP
//! (lossless: `image`'s pure-Rust WebP encoder has no lossy mode) with `image`.

use image::codecs::png::{CompressionType, FilterType, PngEncoder};
use image::codecs::webp::WebPEncoder;
use image::{ExtendedColorType, ImageEncoder};

use super::ResizeError;
use super::params::Format;
use super::pixels::{Layout, Pixels};

fn internal(e: impl std::fmt::Display) -> ResizeError {
    ResizeError::Internal(format!("encoding: {e}"))
}

/// Encodes `pixels`; JPEG drops transparency over `bg`.
pub fn encode(
    pixels: Pixels,
    format: Format,
    quality: u8,
    bg: [u8; 3],
) -> Result<Vec<u8>, ResizeError> {
    let mut out = Vec::new();
    match format {
        Format::Jpeg => {
            let p = pixels.flatten(bg);
            let colour = match p.layout {
                Layout::L8 => jpeg_encoder::ColorType::Luma,
                _ => jpeg_encoder::ColorType::Rgb,
            };
            // Sides are at most MAX_SIDE, well within JPEG's u16.
            let (w, h) = (p.width as u16, p.height as u16);
            jpeg_encoder::Encoder::new(&mut out, quality)
                .encode(&p.data, w, h, colour)
                .map_err(internal)?;
        }
        Format::Png | Format::WebP => {
            let colour = match pixels.layout {
                Layout::L8 => ExtendedColorType::L8,
                Layout::La8 => ExtendedColorType::La8,
                Layout::Rgb8 => ExtendedColorType::Rgb8,
                Layout::Rgba8 => ExtendedColorType::Rgba8,
            };
            let (w, h, data) = (pixels.width, pixels.height, &pixels.data);
            if format == Format::Png {
                PngEncoder::new_with_quality(&mut out, CompressionType::Fast, FilterType::Adaptive)
                    .write_image(data, w, h, colour)
                    .map_err(internal)?;
            } else {
                WebPEncoder::new_lossless(&mut out)
                    .write_image(data, w, h, colour)
                    .map_err(internal)?;
            }
        }
    }
    Ok(out)
}
