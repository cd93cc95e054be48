//! The pictures of `image` blocks, made ready for the PDF without losing quality: a JPEG goes in
//! as it came (its header read for size and colour model, the data untouched, `DCTDecode`); a
//! PNG is decoded to 8-bit samples (palette, grey, 16-bit expanded or stripped) that the writer
//! compresses with Flate, with any alpha channel split off as a soft mask.

/// A decoded image, ready to be written as an image XObject.
pub struct Image {
    pub width: u32,
    pub height: u32,
    pub data: ImageData,
}

pub enum ImageData {
    Jpeg {
        bytes: Vec<u8>,
        components: u8,
        /// Adobe CMYK JPEGs store inverted values; the PDF then needs a `Decode` array.
        inverted_cmyk: bool,
    },
    Raw {
        /// 1 (grey) or 3 (RGB) samples per pixel, 8 bits each.
        channels: u8,
        samples: Vec<u8>,
        alpha: Option<Vec<u8>>,
    },
}

/// Decoded PNGs may not need more memory than this.
const MAX_DECODED_BYTES: usize = 256 << 20;

/// Reads a PNG or JPEG file; the error says what is wrong with it.
pub fn decode(bytes: Vec<u8>) -> Result<Image, String> {
    if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        decode_png(&bytes)
    } else if bytes.starts_with(&[0xFF, 0xD8]) {
        jpeg(bytes)
    } else {
        Err("is neither a PNG nor a JPEG image".into())
    }
}

fn decode_png(bytes: &[u8]) -> Result<Image, String> {
    let bad = |e: png::DecodingError| format!("is not a readable PNG image: {e}");
    let mut decoder = png::Decoder::new_with_limits(
        std::io::Cursor::new(bytes),
        png::Limits {
            bytes: MAX_DECODED_BYTES,
        },
    );
    decoder.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
    let mut reader = decoder.read_info().map_err(bad)?;
    let size = reader
        .output_buffer_size()
        .filter(|&n| n <= MAX_DECODED_BYTES)
        .ok_or_else(|| "is too large a PNG image".to_owned())?;
    let mut buf = vec![0; size];
    let info = reader.next_frame(&mut buf).map_err(bad)?;
    buf.truncate(info.buffer_size());
    if info.bit_depth != png::BitDepth::Eight {
        return Err(format!(
            "is a PNG image of unsupported depth {:?}",
            info.bit_depth
        ));
    }
    let (channels, has_alpha) = match info.color_type {
        png::ColorType::Grayscale => (1, false),
        png::ColorType::GrayscaleAlpha => (1, true),
        png::ColorType::Rgb => (3, false),
        png::ColorType::Rgba => (3, true),
        png::ColorType::Indexed => return Err("is a PNG image that did not expand".into()),
    };
    let (samples, alpha) = if has_alpha {
        let stride = usize::from(channels) + 1;
        let pixels = buf.len() / stride;
        let mut color = Vec::with_capacity(pixels * usize::from(channels));
        let mut alpha = Vec::with_capacity(pixels);
        for px in buf.chunks_exact(stride) {
            color.extend_from_slice(&px[..stride - 1]);
            alpha.push(px[stride - 1]);
        }
        // An alpha channel that is opaque everywhere needs no mask.
        let alpha = alpha.iter().any(|&a| a != 255).then_some(alpha);
        (color, alpha)
    } else {
        (buf, None)
    };
    Ok(Image {
        width: info.width,
        height: info.height,
        data: ImageData::Raw {
            channels,
            samples,
            alpha,
        },
    })
}

/// Reads the frame header of a JPEG (baseline or progressive, 8-bit, 1/3/4 components).
fn jpeg(bytes: Vec<u8>) -> Result<Image, String> {
    let truncated = || "is a truncated JPEG image".to_owned();
    let mut pos = 2;
    let mut inverted_cmyk = false;
    loop {
        // Markers may be padded with any number of 0xFF bytes.
        while bytes.get(pos) == Some(&0xFF) && bytes.get(pos + 1) == Some(&0xFF) {
            pos += 1;
        }
        let (&ff, &marker) = bytes
            .get(pos)
            .zip(bytes.get(pos + 1))
            .ok_or_else(truncated)?;
        if ff != 0xFF {
            return Err("is not a well-formed JPEG image".into());
        }
        pos += 2;
        if marker == 0x01 || (0xD0..=0xD7).contains(&marker) {
            continue;
        }
        let len = bytes
            .get(pos..pos + 2)
            .map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])))
            .ok_or_else(truncated)?;
        let segment = bytes.get(pos + 2..pos + len).ok_or_else(truncated)?;
        match marker {
            0xEE if segment.starts_with(b"Adobe") => inverted_cmyk = true,
            0xC0..=0xCF if ![0xC4, 0xC8, 0xCC].contains(&marker) => {
                if segment.len() < 6 {
                    return Err(truncated());
                }
                if segment[0] != 8 {
                    return Err(format!(
                        "is a {}-bit JPEG image; PDF takes 8-bit ones",
                        segment[0]
                    ));
                }
                let height = u32::from(u16::from_be_bytes([segment[1], segment[2]]));
                let width = u32::from(u16::from_be_bytes([segment[3], segment[4]]));
                let components = segment[5];
                if width == 0 || height == 0 {
                    return Err("is a JPEG image without a size".into());
                }
                if ![1, 3, 4].contains(&components) {
                    return Err(format!("is a JPEG image with {components} components"));
                }
                return Ok(Image {
                    width,
                    height,
                    data: ImageData::Jpeg {
                        bytes,
                        components,
                        inverted_cmyk: inverted_cmyk && components == 4,
                    },
                });
            }
            0xDA | 0xD9 => return Err("is a JPEG image without a frame header".into()),
            _ => {}
        }
        pos += len;
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A small RGBA PNG with a transparent corner, encoded here.
    pub(crate) fn png_rgba(width: u32, height: u32) -> Vec<u8> {
        let mut out = Vec::new();
        let mut enc = png::Encoder::new(&mut out, width, height);
        enc.set_color(png::ColorType::Rgba);
        enc.set_depth(png::BitDepth::Eight);
        let mut w = enc.write_header().unwrap();
        let mut px = Vec::new();
        for y in 0..height {
            for x in 0..width {
                let a = if x < 2 && y < 2 { 0 } else { 255 };
                px.extend_from_slice(&[(x * 20) as u8, (y * 20) as u8, 128, a]);
            }
        }
        w.write_image_data(&px).unwrap();
        w.finish().unwrap();
        out
    }

    /// The header of an 8-bit, 3-component baseline JPEG of 640×480 (no scan data: enough
    /// for reading the size, not for viewing).
    pub(crate) fn jpeg_header() -> Vec<u8> {
        let mut j = vec![0xFF, 0xD8, 0xFF, 0xE0, 0, 16];
        j.extend_from_slice(b"JFIF\0\x01\x01\0\0\x01\0\x01\0\0");
        j.extend_from_slice(&[0xFF, 0xC0, 0, 17, 8, 0x01, 0xE0, 0x02, 0x80, 3]);
        j.extend_from_slice(&[1, 0x22, 0, 2, 0x11, 1, 3, 0x11, 1]);
        j.extend_from_slice(&[0xFF, 0xD9]);
        j
    }

    #[test]
    fn png_splits_alpha() {
        let img = decode(png_rgba(5, 4)).unwrap();
        assert_eq!((img.width, img.height), (5, 4));
        let ImageData::Raw {
            channels,
            samples,
            alpha,
        } = img.data
        else {
            panic!("raw expected")
        };
        assert_eq!(channels, 3);
        assert_eq!(samples.len(), 5 * 4 * 3);
        assert_eq!(alpha.unwrap()[0], 0);
    }

    #[test]
    fn jpeg_header_is_read_and_kept() {
        let bytes = jpeg_header();
        let img = decode(bytes.clone()).unwrap();
        assert_eq!((img.width, img.height), (640, 480));
        assert!(
            matches!(img.data, ImageData::Jpeg { bytes: ref b, components: 3, .. } if *b == bytes)
        );
    }

    #[test]
    fn garbage_is_refused() {
        assert!(decode(b"GIF89a".to_vec()).is_err());
        assert!(decode(b"\x89PNG\r\n\x1a\nshort".to_vec()).is_err());
        assert!(decode(vec![0xFF, 0xD8, 0xFF]).is_err());
    }
}
