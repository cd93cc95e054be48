//! The reduced component planes: written a block at a time, brought to the luma grid, and
//! converted to RGB.

pub struct Plane {
    width: usize,
    height: usize,
    data: Vec<u8>,
    /// How many times each axis must be doubled to reach the luma grid (1 or 2).
    up: (usize, usize),
}

use super::FRACTION;

/// A reduced sample from a fixed-point sum: the level shift and rounding, clamped to 0..=255.
#[inline]
fn sample(v: i64) -> u8 {
    const OFFSET: i64 = (128 << FRACTION) + (1 << (FRACTION - 1));
    ((v + OFFSET) >> FRACTION).clamp(0, 255) as u8
}

impl Plane {
    pub fn new(width: usize, height: usize, up_x: usize, up_y: usize) -> Plane {
        Plane {
            width,
            height,
            data: vec![0; width * height],
            up: (up_x, up_y),
        }
    }

    /// Writes one block's `scale`×`scale` pixels at (`x`, `y`) from its parity sums (see
    /// `Recipe`): odd horizontal frequencies change sign in the right half, odd vertical ones
    /// in the bottom half.
    #[inline]
    pub fn put(&mut self, x: usize, y: usize, scale: usize, [ee, oe, eo, oo]: &[i64; 4]) {
        let at = y * self.width + x;
        if scale == 1 {
            self.data[at] = sample(*ee);
            return;
        }
        let (top, bottom) = (ee + eo, ee - eo);
        let (top_odd, bottom_odd) = (oe + oo, oe - oo);
        self.data[at] = sample(top + top_odd);
        self.data[at + 1] = sample(top - top_odd);
        self.data[at + self.width] = sample(bottom + bottom_odd);
        self.data[at + self.width + 1] = sample(bottom - bottom_odd);
    }

    /// The plane on the luma grid, each doubled axis by triangle interpolation (3/4 of the
    /// nearer sample, 1/4 of the next), which keeps chroma centred between luma samples.
    pub fn upsampled(self) -> Plane {
        let mut p = self;
        if p.up.0 == 2 {
            let mut data = vec![0; p.data.len() * 2];
            for (row, out) in p
                .data
                .chunks_exact(p.width)
                .zip(data.chunks_exact_mut(p.width * 2))
            {
                for (i, pair) in out.chunks_exact_mut(2).enumerate() {
                    let near = 3 * u16::from(row[i]);
                    pair[0] = blend(near, row[i.saturating_sub(1)], 2);
                    pair[1] = blend(near, row[(i + 1).min(row.len() - 1)], 1);
                }
            }
            p = Plane {
                width: p.width * 2,
                data,
                up: (1, p.up.1),
                ..p
            };
        }
        if p.up.1 == 2 {
            let w = p.width;
            let mut data = vec![0; p.data.len() * 2];
            let row = |y: usize| &p.data[y * w..(y + 1) * w];
            for (y, out) in data.chunks_exact_mut(2 * w).enumerate() {
                let (above, here, below) = (
                    row(y.saturating_sub(1)),
                    row(y),
                    row((y + 1).min(p.height - 1)),
                );
                let (top, bottom) = out.split_at_mut(w);
                for x in 0..w {
                    let near = 3 * u16::from(here[x]);
                    top[x] = blend(near, above[x], 2);
                    bottom[x] = blend(near, below[x], 1);
                }
            }
            p = Plane {
                height: p.height * 2,
                data,
                up: (1, 1),
                ..p
            };
        }
        p
    }

    /// The top-left `width`×`height` samples, rows packed.
    pub fn cropped(&self, width: usize, height: usize) -> Vec<u8> {
        self.data
            .chunks_exact(self.width)
            .take(height)
            .flat_map(|row| &row[..width])
            .copied()
            .collect()
    }
}

/// A quarter of `far` added to `near` (three quarters, already tripled), with `bias` rounding.
#[inline]
fn blend(near: u16, far: u8, bias: u16) -> u8 {
    ((near + u16::from(far) + bias) / 4) as u8
}

/// Interleaved RGB of the top-left `width`×`height` of three planes on the luma grid, by the
/// JFIF equations (16-bit fixed point).
pub fn ycbcr_to_rgb<'a>(
    y: &'a Plane,
    cb: &'a Plane,
    cr: &'a Plane,
    width: usize,
    height: usize,
) -> Vec<u8> {
    const R_CR: i32 = 91_881; // 1.402
    const G_CB: i32 = 22_554; // 0.344136
    const G_CR: i32 = 46_802; // 0.714136
    const B_CB: i32 = 116_130; // 1.772
    let clamp = |v: i32| ((v + 32_768) >> 16).clamp(0, 255) as u8;
    let mut rgb = vec![0; width * height * 3];
    for (row, out) in rgb.chunks_exact_mut(width * 3).enumerate() {
        let at = row * y.width;
        let line = |p: &'a Plane| &p.data[at..at + width];
        let pixels = out
            .chunks_exact_mut(3)
            .zip(line(y))
            .zip(line(cb))
            .zip(line(cr));
        for (((px, &l), &b), &r) in pixels {
            let l = i32::from(l) << 16;
            let (b, r) = (i32::from(b) - 128, i32::from(r) - 128);
            px[0] = clamp(l + R_CR * r);
            px[1] = clamp(l - G_CB * b - G_CR * r);
            px[2] = clamp(l + B_CB * b);
        }
    }
    rgb
}
