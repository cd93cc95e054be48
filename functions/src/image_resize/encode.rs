//! Encoding [`Pixels`]: JPEG with `jpeg-encoder` (baseline, 4:2:0 below q90), PNG and WebP
//! (lossless: `image`'s pure-Rust WebP encoder has no lossy mode) with `image`.

use image::codecs::png::{CompressionType, FilterType, PngEncoder};
use image::codecs::webp::WebPEncoder;
use image::{ExtendedColorType, ImageEncoder};

use jpeg_encoder::{JpegColorType, SamplingFactor};

use super::ResizeError;
use super::params::Format;
use super::pixels::{Layout, Pixels};
use super::planar::Planes;

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
            jpeg_encoder(&mut out, quality)
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

/// Luma samples per chroma sample (across, down) that a JPEG of `quality` is written with: 4:2:0
/// below 90, 4:4:4 from 90 up.
pub fn jpeg_chroma_factor(quality: u8) -> (u32, u32) {
    if quality < 90 { (2, 2) } else { (1, 1) }
}

fn jpeg_encoder(out: &mut Vec<u8>, quality: u8) -> jpeg_encoder::Encoder<&mut Vec<u8>> {
    let mut encoder = jpeg_encoder::Encoder::new(out, quality);
    encoder.set_sampling_factor(match jpeg_chroma_factor(quality) {
        (2, 2) => SamplingFactor::F_2_2,
        _ => SamplingFactor::F_1_1,
    });
    encoder
}

/// Encodes YCbCr planes as a JPEG of `quality`; the chroma planes must already have that
/// quality's sampling ([`jpeg_chroma_factor`]).
pub fn encode_planes(planes: &Planes, quality: u8) -> Result<Vec<u8>, ResizeError> {
    let mut out = Vec::new();
    jpeg_encoder(&mut out, quality)
        .encode_image(PlanarRows(planes))
        .map_err(internal)?;
    Ok(out)
}

/// The encoder's view of [`Planes`]: full-width rows, each chroma sample repeated over the luma
/// samples it covers, which the encoder's subsampling averages back to exactly that sample.
struct PlanarRows<'a>(&'a Planes);

impl jpeg_encoder::ImageBuffer for PlanarRows<'_> {
    fn get_jpeg_color_type(&self) -> JpegColorType {
        JpegColorType::Ycbcr
    }

    // Sides are at most MAX_SIDE, well within JPEG's u16.
    fn width(&self) -> u16 {
        self.0.y.width as u16
    }

    fn height(&self) -> u16 {
        self.0.y.height as u16
    }

    fn fill_buffers(&self, y: u16, buffers: &mut [Vec<u8>; 4]) {
        let p = self.0;
        let width = p.y.width as usize;
        fn row(plane: &Pixels, y: u16, factor: u32) -> &[u8] {
            let w = plane.width as usize;
            let at = usize::from(y) / factor as usize * w;
            &plane.data[at..at + w]
        }
        buffers[0].extend_from_slice(row(&p.y, y, 1));
        let (fx, fy) = p.chroma_factor;
        for (buffer, plane) in buffers[1..3].iter_mut().zip([&p.cb, &p.cr]) {
            let samples = row(plane, y, fy);
            if fx == 1 {
                buffer.extend_from_slice(samples);
            } else {
                let repeated = samples.iter().flat_map(|&s| [s, s]);
                buffer.extend(repeated.take(width));
            }
        }
    }
}
