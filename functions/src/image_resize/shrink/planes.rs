//! The reduced component planes: written a block at a time, then brought to the luma grid a
//! row at a time as they are converted to RGB, so no upsampled plane is ever stored.

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

    /// How many times each axis must be doubled to reach the luma grid (1 or 2).
    pub fn up(&self) -> (usize, usize) {
        self.up
    }

    /// The top-left `width`×`height` samples, rows packed, taken out of the plane (its own
    /// buffer when its rows are that wide already).
    pub fn take_cropped(&mut self, width: usize, height: usize) -> Vec<u8> {
        let mut data = std::mem::take(&mut self.data);
        if width == self.width {
            data.truncate(width * height);
            return data;
        }
        let mut out = Vec::with_capacity(width * height);
        for row in data.chunks_exact(self.width).take(height) {
            out.extend_from_slice(&row[..width]);
        }
        out
    }
}

/// A quarter of `far` added to `near` (three quarters, already tripled), with `bias` rounding.
#[inline]
fn blend(near: u16, far: u8, bias: u16) -> u8 {
    ((near + u16::from(far) + bias) / 4) as u8
}

/// A row doubled across by triangle interpolation (3/4 of the nearer sample, 1/4 of the next),
/// which keeps chroma centred between luma samples.
fn widen(row: &[u8], out: &mut [u8]) {
    for (i, pair) in out.chunks_exact_mut(2).enumerate() {
        let near = 3 * u16::from(row[i]);
        pair[0] = blend(near, row[i.saturating_sub(1)], 2);
        pair[1] = blend(near, row[(i + 1).min(row.len() - 1)], 1);
    }
}

/// A plane's rows on the luma grid, made one at a time in ascending order: each doubled axis
/// by triangle interpolation, across first, then down between the widened rows.
struct GridRows<'a> {
    plane: &'a Plane,
    /// Widened source rows, the row `r` in slot `r % 3` (`held` says which row a slot holds),
    /// so a row and its two neighbours are widened once each.
    wide: [Vec<u8>; 3],
    held: [Option<usize>; 3],
    out: Vec<u8>,
}

impl<'a> GridRows<'a> {
    fn new(plane: &'a Plane) -> GridRows<'a> {
        let width = plane.width * plane.up.0;
        GridRows {
            plane,
            wide: std::array::from_fn(|_| vec![0; width]),
            held: [None; 3],
            out: vec![0; width],
        }
    }

    /// Source row `r` on the luma grid's width, widened into its slot if it is not there.
    fn widened(&mut self, r: usize) -> usize {
        let slot = r % 3;
        if self.held[slot] != Some(r) {
            let w = self.plane.width;
            let row = &self.plane.data[r * w..(r + 1) * w];
            if self.plane.up.0 == 2 {
                widen(row, &mut self.wide[slot]);
            } else {
                self.wide[slot].copy_from_slice(row);
            }
            self.held[slot] = Some(r);
        }
        slot
    }

    /// Row `y` of the luma grid.
    fn row(&mut self, y: usize) -> &[u8] {
        let (w, last) = (self.plane.width, self.plane.height - 1);
        match self.plane.up {
            (1, 1) => &self.plane.data[y * w..(y + 1) * w],
            (2, 1) => {
                widen(&self.plane.data[y * w..(y + 1) * w], &mut self.out);
                &self.out
            }
            _ => {
                // Output row 2r leans on the row above, 2r + 1 on the row below.
                let r = y / 2;
                let (far, bias) = if y.is_multiple_of(2) {
                    (r.saturating_sub(1), 2)
                } else {
                    ((r + 1).min(last), 1)
                };
                let (here, far) = (self.widened(r), self.widened(far));
                for ((o, &n), &f) in self
                    .out
                    .iter_mut()
                    .zip(&self.wide[here])
                    .zip(&self.wide[far])
                {
                    *o = blend(3 * u16::from(n), f, bias);
                }
                &self.out
            }
        }
    }
}

/// Interleaved RGB of the top-left `width`×`height` of three planes, brought to the luma grid
/// row by row, by the JFIF equations (16-bit fixed point).
pub fn ycbcr_to_rgb(y: &Plane, cb: &Plane, cr: &Plane, width: usize, height: usize) -> Vec<u8> {
    const R_CR: i32 = 91_881; // 1.402
    const G_CB: i32 = 22_554; // 0.344136
    const G_CR: i32 = 46_802; // 0.714136
    const B_CB: i32 = 116_130; // 1.772
    let clamp = |v: i32| ((v + 32_768) >> 16).clamp(0, 255) as u8;
    let (mut y, mut cb, mut cr) = (GridRows::new(y), GridRows::new(cb), GridRows::new(cr));
    let mut rgb = vec![0; width * height * 3];
    for (row, out) in rgb.chunks_exact_mut(width * 3).enumerate() {
        let pixels = out
            .chunks_exact_mut(3)
            .zip(&y.row(row)[..width])
            .zip(&cb.row(row)[..width])
            .zip(&cr.row(row)[..width]);
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
