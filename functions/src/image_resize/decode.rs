//! Decoding to 8-bit [`Pixels`]. A JPEG reduced to 1/8 or 1/4 goes through `shrink` when it is
//! the common kind (baseline YCbCr or grayscale); every other JPEG goes through `jpeg-decoder`,
//! whose reduced-size IDCT (1/2, 1/4, 1/8) also decodes close to the output size ("shrink on
//! load"). PNG, WebP and GIF (first frame) go through `image`.

use std::io::Cursor;

use image::metadata::Orientation;
use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader};

use super::ResizeError;
use super::header::Kind;
use super::pixels::{Layout, Pixels};
use super::planar::Planes;

fn undecodable(e: impl std::fmt::Display) -> ResizeError {
    ResizeError::Undecodable(e.to_string())
}

/// An input whose header has been read: its size and orientation are known, its pixels not
/// yet decoded.
pub enum Opened<'a> {
    Jpeg(Box<jpeg_decoder::Decoder<&'a [u8]>>, (u32, u32), &'a [u8]),
    Other(Box<dyn ImageDecoder + 'a>),
}

impl<'a> Opened<'a> {
    pub fn new(input: &'a [u8], kind: Kind) -> Result<Opened<'a>, ResizeError> {
        let format = match kind {
            Kind::Jpeg => {
                let mut d = Box::new(jpeg_decoder::Decoder::new(input));
                d.read_info().map_err(undecodable)?;
                let info = d
                    .info()
                    .ok_or_else(|| undecodable("no JPEG frame header"))?;
                let size = (u32::from(info.width), u32::from(info.height));
                return Ok(Opened::Jpeg(d, size, input));
            }
            Kind::Png => ImageFormat::Png,
            Kind::WebP => ImageFormat::WebP,
            Kind::Gif => ImageFormat::Gif,
        };
        let decoder = ImageReader::with_format(Cursor::new(input), format)
            .into_decoder()
            .map_err(undecodable)?;
        Ok(Opened::Other(Box::new(decoder)))
    }

    /// The stored size, before orientation.
    pub fn size(&self) -> (u32, u32) {
        match self {
            Opened::Jpeg(_, size, _) => *size,
            Opened::Other(d) => d.dimensions(),
        }
    }

    /// The EXIF orientation (an unreadable one counts as none).
    pub fn orientation(&mut self) -> Orientation {
        let o = match self {
            Opened::Jpeg(d, _, _) => d.exif_data().and_then(Orientation::from_exif_chunk),
            Opened::Other(d) => d.orientation().ok(),
        };
        o.unwrap_or(Orientation::NoTransforms)
    }

    /// Decodes, a JPEG at `eighths`/8 of its size (rounded up); other formats always whole.
    pub fn decode(self, eighths: u8) -> Result<Pixels, ResizeError> {
        match self {
            Opened::Jpeg(d, size, input) => match super::shrink::decode(input, eighths) {
                // Both decoders read the same frame header; should they ever disagree, the
                // size checked against the pixel limit is `jpeg-decoder`'s.
                Some(pixels) if (pixels.width, pixels.height) == reduced(size, eighths) => {
                    Ok(pixels)
                }
                _ => decode_jpeg(d, size, eighths),
            },
            Opened::Other(d) => {
                let image = DynamicImage::from_decoder(d).map_err(undecodable)?;
                Ok(Pixels::from_dynamic(image))
            }
        }
    }
}

impl Opened<'_> {
    /// A colour JPEG at `eighths`/8 of its size as its YCbCr planes, when the shrink-on-load
    /// decoder reads it (`None` otherwise: decode it to pixels instead).
    pub fn decode_planes(&self, eighths: u8) -> Option<Planes> {
        let Opened::Jpeg(_, size, input) = self else {
            return None;
        };
        let planes = super::shrink::decode_planes(input, eighths)?;
        // As for pixels: the size checked against the pixel limit is `jpeg-decoder`'s.
        ((planes.y.width, planes.y.height) == reduced(*size, eighths)).then_some(planes)
    }
}

/// The size of an image of `size` decoded at `eighths`/8, rounded up as the decoders do.
fn reduced((w, h): (u32, u32), eighths: u8) -> (u32, u32) {
    let n = u32::from(eighths);
    ((w * n).div_ceil(8), (h * n).div_ceil(8))
}

fn decode_jpeg(
    mut d: Box<jpeg_decoder::Decoder<&[u8]>>,
    (w, h): (u32, u32),
    eighths: u8,
) -> Result<Pixels, ResizeError> {
    if eighths < 8 {
        // The decoder picks the smallest reduction that reaches the request on either axis:
        // ask on the larger axis for exactly the size `eighths` gives, the other one unreachable.
        let (rw, rh) = reduced((w, h), eighths);
        let want = |len: u32| u16::try_from(len).unwrap_or(u16::MAX);
        let request = if w >= h {
            (want(rw), u16::MAX)
        } else {
            (u16::MAX, want(rh))
        };
        d.scale(request.0, request.1).map_err(undecodable)?;
    }
    let data = d.decode().map_err(undecodable)?;
    let info = d
        .info()
        .ok_or_else(|| undecodable("no JPEG frame header"))?;
    let (width, height) = (u32::from(info.width), u32::from(info.height));
    let (layout, data) = match info.pixel_format {
        jpeg_decoder::PixelFormat::L8 => (Layout::L8, data),
        jpeg_decoder::PixelFormat::RGB24 => (Layout::Rgb8, data),
        jpeg_decoder::PixelFormat::L16 => (
            Layout::L8,
            // Big-endian 16-bit samples: keep the high byte.
            data.chunks_exact(2).map(|s| s[0]).collect(),
        ),
        jpeg_decoder::PixelFormat::CMYK32 => (Layout::Rgb8, cmyk_to_rgb(&data)),
    };
    Pixels::new(width, height, layout, data)
}

fn cmyk_to_rgb(cmyk: &[u8]) -> Vec<u8> {
    let mut rgb = Vec::with_capacity(cmyk.len() / 4 * 3);
    for p in cmyk.chunks_exact(4) {
        let k = 255 - u16::from(p[3]);
        for &c in &p[..3] {
            rgb.push(((255 - u16::from(c)) * k / 255) as u8);
        }
    }
    rgb
}
