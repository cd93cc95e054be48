//! [`Planes`]: a JPEG's YCbCr kept as three planes from decoding to encoding, for a JPEG that
//! becomes a JPEG with no turn and no padding. Each plane is resampled at its own sampling, so
//! chroma is never brought to the luma grid, and neither colour conversion is done: the output
//! is the same as through RGB but for rounding, in less time (see the README's figures).

use super::ResizeError;
use super::geometry::{Region, Resample};
use super::pixels::Pixels;

/// Luma and the two chroma planes, each one-channel [`Pixels`]; `chroma_factor` luma samples
/// per chroma sample on each axis (1 or 2; a chroma plane covers `ceil(luma / factor)`).
pub struct Planes {
    pub y: Pixels,
    pub cb: Pixels,
    pub cr: Pixels,
    pub chroma_factor: (u32, u32),
}

impl Planes {
    /// Resamples as `step` says for luma (whose source is `self.y`'s size), the chroma planes to
    /// `chroma_factor` (the output's sampling) over the same region.
    pub fn resample(
        self,
        step: &Resample,
        chroma_factor: (u32, u32),
    ) -> Result<Planes, ResizeError> {
        let (fx, fy) = (
            f64::from(self.chroma_factor.0),
            f64::from(self.chroma_factor.1),
        );
        let chroma_step = Resample {
            src: (self.cb.width, self.cb.height),
            crop: Region {
                left: step.crop.left / fx,
                top: step.crop.top / fy,
                width: step.crop.width / fx,
                height: step.crop.height / fy,
            },
            dst: (
                step.dst.0.div_ceil(chroma_factor.0),
                step.dst.1.div_ceil(chroma_factor.1),
            ),
        };
        Ok(Planes {
            y: self.y.resample(step)?,
            cb: self.cb.resample(&chroma_step)?,
            cr: self.cr.resample(&chroma_step)?,
            chroma_factor,
        })
    }
}
