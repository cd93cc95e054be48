//! Sizes only, no pixels: from the displayed source size and the [`Params`], which region of
//! the source is resampled to which size, and on what canvas it lands.

use super::ResizeError;
use super::params::{Fit, MAX_SIDE, Params};

/// A source region in pixels (fractional: the resampler takes sub-pixel crops).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Region {
    pub left: f64,
    pub top: f64,
    pub width: f64,
    pub height: f64,
}

/// What to do with a `src`-sized image, in its displayed orientation.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Plan {
    pub src: (u32, u32),
    /// The part of the source that is kept (all of it, except for `cover`).
    pub crop: Region,
    /// The size `crop` is resampled to.
    pub scaled: (u32, u32),
    /// The output size: `scaled`, or larger when `contain` pads.
    pub canvas: (u32, u32),
    /// Where the scaled image sits on the canvas.
    pub offset: (u32, u32),
}

fn px(v: f64) -> u32 {
    v.round().max(1.0) as u32
}

impl Plan {
    /// Fails when the output would exceed [`MAX_SIDE`] a side or `max_pixels` in all (a
    /// parameter error: the caller asked for it).
    pub fn new(src: (u32, u32), p: &Params, max_pixels: u64) -> Result<Plan, ResizeError> {
        let (sw, sh) = (f64::from(src.0), f64::from(src.1));
        let cap = |s: f64| if p.upscale { s } else { s.min(1.0) };
        let full = Region {
            left: 0.0,
            top: 0.0,
            width: sw,
            height: sh,
        };
        let (crop, scaled, canvas) = match (p.width, p.height) {
            (None, None) => {
                return Err(ResizeError::InvalidParameter {
                    param: "w",
                    message: "w or h is required".to_owned(),
                });
            }
            (Some(w), None) => {
                let s = cap(f64::from(w) / sw);
                let scaled = (px(sw * s), px(sh * s));
                (full, scaled, scaled)
            }
            (None, Some(h)) => {
                let s = cap(f64::from(h) / sh);
                let scaled = (px(sw * s), px(sh * s));
                (full, scaled, scaled)
            }
            (Some(w), Some(h)) => {
                let (fw, fh) = (f64::from(w), f64::from(h));
                match p.fit {
                    Fit::Inside | Fit::Contain => {
                        let s = cap((fw / sw).min(fh / sh));
                        let scaled = (px(sw * s).min(w), px(sh * s).min(h));
                        let canvas = if p.fit == Fit::Contain {
                            (w, h)
                        } else {
                            scaled
                        };
                        (full, scaled, canvas)
                    }
                    Fit::Fill => {
                        let scaled = (px(sw * cap(fw / sw)), px(sh * cap(fh / sh)));
                        (full, scaled, scaled)
                    }
                    Fit::Cover => {
                        let s = cap((fw / sw).max(fh / sh));
                        let scaled = (px(sw * s).min(w), px(sh * s).min(h));
                        let width = (f64::from(scaled.0) / s).min(sw);
                        let height = (f64::from(scaled.1) / s).min(sh);
                        let crop = Region {
                            left: (sw - width) / 2.0,
                            top: (sh - height) / 2.0,
                            width,
                            height,
                        };
                        (crop, scaled, scaled)
                    }
                }
            }
        };
        let param = if p.width.is_some() { "w" } else { "h" };
        if canvas.0 > MAX_SIDE || canvas.1 > MAX_SIDE {
            return Err(ResizeError::InvalidParameter {
                param,
                message: format!(
                    "the output would be {}x{}, over {MAX_SIDE} pixels a side",
                    canvas.0, canvas.1
                ),
            });
        }
        if u64::from(canvas.0) * u64::from(canvas.1) > max_pixels {
            return Err(ResizeError::InvalidParameter {
                param,
                message: format!(
                    "the output would be {}x{}, over the limit of {max_pixels} pixels",
                    canvas.0, canvas.1
                ),
            });
        }
        Ok(Plan {
            src,
            crop,
            scaled,
            canvas,
            offset: ((canvas.0 - scaled.0) / 2, (canvas.1 - scaled.1) / 2),
        })
    }
}

/// A resampling step in the stored (not yet oriented) orientation of the pixels.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Resample {
    pub src: (u32, u32),
    pub crop: Region,
    pub dst: (u32, u32),
}

impl Resample {
    /// The plan's resampling step for pixels stored transposed (`transpose`: the orientation
    /// swaps width and height). The crop is centred, so flips do not move it.
    pub fn stored(plan: &Plan, transpose: bool) -> Resample {
        let Plan {
            src, crop, scaled, ..
        } = *plan;
        if !transpose {
            return Resample {
                src,
                crop,
                dst: scaled,
            };
        }
        Resample {
            src: (src.1, src.0),
            crop: Region {
                left: crop.top,
                top: crop.left,
                width: crop.height,
                height: crop.width,
            },
            dst: (scaled.1, scaled.0),
        }
    }

    /// The largest JPEG IDCT reduction (8 = none, 4, 2, 1 eighths) whose decoded image still
    /// has at least as many pixels across the crop as the output, on both axes.
    pub fn idct_eighths(&self) -> u8 {
        let need =
            (f64::from(self.dst.0) / self.crop.width).max(f64::from(self.dst.1) / self.crop.height);
        // Tiny images: the decoder rounds sizes up, which a reduction would not make up for.
        if self.src.0.min(self.src.1) < 16 {
            return 8;
        }
        [1u8, 2, 4]
            .into_iter()
            .find(|&n| f64::from(n) / 8.0 >= need * (1.0 - 1e-9))
            .unwrap_or(8)
    }

    /// The same step for the source decoded at `size` instead of `self.src`.
    pub fn rescaled(&self, size: (u32, u32)) -> Resample {
        let fx = f64::from(size.0) / f64::from(self.src.0);
        let fy = f64::from(size.1) / f64::from(self.src.1);
        Resample {
            src: size,
            crop: Region {
                left: self.crop.left * fx,
                top: self.crop.top * fy,
                width: (self.crop.width * fx).min(f64::from(size.0)),
                height: (self.crop.height * fy).min(f64::from(size.1)),
            },
            dst: self.dst,
        }
    }

    /// Whether the step changes nothing (no crop, same size).
    pub fn is_identity(&self) -> bool {
        self.dst == self.src
            && self.crop.left == 0.0
            && self.crop.top == 0.0
            && self.crop.width == f64::from(self.src.0)
            && self.crop.height == f64::from(self.src.1)
    }
}
