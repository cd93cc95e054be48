//! [`Pixels`], the 8-bit buffer between decoder and encoder, and what is done to it: resampling
//! (fast_image_resize, behind one non-generic function so its generic code is compiled once,
//! here), orientation, padding and flattening transparency.

use std::cell::RefCell;

use fast_image_resize as fir;
use image::metadata::Orientation;
use image::{DynamicImage, ImageBuffer};

use super::ResizeError;
use super::geometry::Resample;

/// The channel layouts kept through the pipeline (8 bits a channel).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    L8,
    La8,
    Rgb8,
    Rgba8,
}

impl Layout {
    pub fn channels(self) -> usize {
        match self {
            Layout::L8 => 1,
            Layout::La8 => 2,
            Layout::Rgb8 => 3,
            Layout::Rgba8 => 4,
        }
    }

    fn pixel_type(self) -> fir::PixelType {
        match self {
            Layout::L8 => fir::PixelType::U8,
            Layout::La8 => fir::PixelType::U8x2,
            Layout::Rgb8 => fir::PixelType::U8x3,
            Layout::Rgba8 => fir::PixelType::U8x4,
        }
    }
}

/// An image in memory, rows top to bottom, channels interleaved.
#[derive(Clone, Debug)]
pub struct Pixels {
    pub width: u32,
    pub height: u32,
    pub layout: Layout,
    pub data: Vec<u8>,
}

fn internal(e: impl std::fmt::Display) -> ResizeError {
    ResizeError::Internal(e.to_string())
}

thread_local! {
    /// The resampler keeps scratch buffers between calls; one per thread (the blocking pool's
    /// threads are reused) saves allocating them for every image.
    static RESIZER: RefCell<fir::Resizer> = RefCell::new(fir::Resizer::new());
}

impl Pixels {
    pub fn new(
        width: u32,
        height: u32,
        layout: Layout,
        data: Vec<u8>,
    ) -> Result<Self, ResizeError> {
        if data.len() != width as usize * height as usize * layout.channels() {
            return Err(ResizeError::Undecodable(
                "the decoder returned a short pixel buffer".to_owned(),
            ));
        }
        Ok(Pixels {
            width,
            height,
            layout,
            data,
        })
    }

    /// Any decoded image as 8-bit grey or RGB, with alpha when it has one.
    pub fn from_dynamic(image: DynamicImage) -> Pixels {
        let (width, height) = (image.width(), image.height());
        let colour = image.color();
        let (layout, data) = match (colour.has_color(), colour.has_alpha()) {
            (false, false) => (Layout::L8, image.into_luma8().into_raw()),
            (false, true) => (Layout::La8, image.into_luma_alpha8().into_raw()),
            (true, false) => (Layout::Rgb8, image.into_rgb8().into_raw()),
            (true, true) => (Layout::Rgba8, image.into_rgba8().into_raw()),
        };
        Pixels {
            width,
            height,
            layout,
            data,
        }
    }

    fn into_dynamic(self) -> DynamicImage {
        let (w, h, data) = (self.width, self.height, self.data);
        // The length was checked when the pixels were made.
        let e = "pixel buffer matches its size";
        match self.layout {
            Layout::L8 => DynamicImage::ImageLuma8(ImageBuffer::from_raw(w, h, data).expect(e)),
            Layout::La8 => DynamicImage::ImageLumaA8(ImageBuffer::from_raw(w, h, data).expect(e)),
            Layout::Rgb8 => DynamicImage::ImageRgb8(ImageBuffer::from_raw(w, h, data).expect(e)),
            Layout::Rgba8 => DynamicImage::ImageRgba8(ImageBuffer::from_raw(w, h, data).expect(e)),
        }
    }

    /// Crops and resamples with Lanczos3 (alpha-weighted when there is alpha).
    pub fn resample(self, step: &Resample) -> Result<Pixels, ResizeError> {
        if step.is_identity() {
            return Ok(self);
        }
        let pixel_type = self.layout.pixel_type();
        let src = fir::images::ImageRef::new(self.width, self.height, &self.data, pixel_type)
            .map_err(internal)?;
        let mut dst = fir::images::Image::new(step.dst.0, step.dst.1, pixel_type);
        // The resampler refuses a crop that overshoots the image by a rounding error.
        let (w, h) = (f64::from(self.width), f64::from(self.height));
        let left = step.crop.left.clamp(0.0, w - 1.0);
        let top = step.crop.top.clamp(0.0, h - 1.0);
        let options = fir::ResizeOptions::new()
            .resize_alg(fir::ResizeAlg::Convolution(fir::FilterType::Lanczos3))
            .crop(
                left,
                top,
                step.crop.width.min(w - left),
                step.crop.height.min(h - top),
            );
        RESIZER
            .with_borrow_mut(|r| r.resize(&src, &mut dst, &options))
            .map_err(internal)?;
        Ok(Pixels {
            width: step.dst.0,
            height: step.dst.1,
            layout: self.layout,
            data: dst.into_vec(),
        })
    }

    /// Turns the stored pixels into their displayed orientation.
    pub fn orient(self, orientation: Orientation) -> Pixels {
        if orientation == Orientation::NoTransforms {
            return self;
        }
        let layout = self.layout;
        let mut image = self.into_dynamic();
        image.apply_orientation(orientation);
        Pixels {
            width: image.width(),
            height: image.height(),
            layout,
            data: image.into_bytes(),
        }
    }

    /// The same pixels with colour channels (grey repeated), keeping alpha if any.
    fn into_colour(self) -> Pixels {
        let layout = match self.layout {
            Layout::L8 => Layout::Rgb8,
            Layout::La8 => Layout::Rgba8,
            other => {
                return Pixels {
                    layout: other,
                    ..self
                };
            }
        };
        let alpha = self.layout == Layout::La8;
        let mut data =
            Vec::with_capacity(self.data.len() / self.layout.channels() * layout.channels());
        for p in self.data.chunks_exact(self.layout.channels()) {
            data.extend_from_slice(&[p[0], p[0], p[0]]);
            if alpha {
                data.push(p[1]);
            }
        }
        Pixels {
            layout,
            data,
            ..self
        }
    }

    /// Places the image at `offset` on a `canvas`-sized background of `bg` (opaque).
    pub fn pad(self, canvas: (u32, u32), offset: (u32, u32), bg: [u8; 3]) -> Pixels {
        if canvas == (self.width, self.height) {
            return self;
        }
        let grey = bg[0] == bg[1] && bg[1] == bg[2];
        let src = if grey { self } else { self.into_colour() };
        let fill: &[u8] = match src.layout {
            Layout::L8 => &bg[..1],
            Layout::La8 => &[bg[0], 255],
            Layout::Rgb8 => &bg,
            Layout::Rgba8 => &[bg[0], bg[1], bg[2], 255],
        };
        let n = src.layout.channels();
        let mut data = fill.repeat(canvas.0 as usize * canvas.1 as usize);
        let row = src.width as usize * n;
        let stride = canvas.0 as usize * n;
        for (y, line) in src.data.chunks_exact(row).enumerate() {
            let at = (offset.1 as usize + y) * stride + offset.0 as usize * n;
            data[at..at + row].copy_from_slice(line);
        }
        Pixels {
            width: canvas.0,
            height: canvas.1,
            layout: src.layout,
            data,
        }
    }

    /// Drops alpha by compositing over `bg` (for JPEG); grey stays grey when `bg` is grey.
    pub fn flatten(self, bg: [u8; 3]) -> Pixels {
        let grey = bg[0] == bg[1] && bg[1] == bg[2];
        let src = match self.layout {
            Layout::L8 | Layout::Rgb8 => return self,
            Layout::La8 if grey => self,
            _ => self.into_colour(),
        };
        let blend = |c: u8, b: u8, a: u8| {
            let (c, b, a) = (u32::from(c), u32::from(b), u32::from(a));
            ((c * a + b * (255 - a) + 127) / 255) as u8
        };
        let (layout, data) = match src.layout {
            Layout::La8 => (
                Layout::L8,
                src.data
                    .chunks_exact(2)
                    .map(|p| blend(p[0], bg[0], p[1]))
                    .collect(),
            ),
            _ => {
                let mut out = Vec::with_capacity(src.data.len() / 4 * 3);
                for p in src.data.chunks_exact(4) {
                    for c in 0..3 {
                        out.push(blend(p[c], bg[c], p[3]));
                    }
                }
                (Layout::Rgb8, out)
            }
        };
        Pixels {
            layout,
            data,
            ..src
        }
    }
}
