//! Shrink-on-load for the common JPEG: baseline (or extended sequential, 8-bit, Huffman),
//! grayscale or YCbCr, one interleaved scan, sampling factors 1 or 2, decoded straight to 1/8
//! or 1/4 of its size.
//!
//! At those scales a block becomes 1×1 or 2×2 pixels, each the exact mean of the pixels the
//! full inverse DCT would give for its quarter of the block (before clamping). That mean
//! depends only on the DC coefficient (1/8) or on the 25 coefficients whose frequencies are 0
//! or odd on both axes (1/4): every coefficient must still be Huffman-decoded, but the rest are
//! never dequantised or transformed, and a block costs four fixed-point sums instead of an
//! IDCT. For pixels, chroma is brought to the luma grid with the triangle ("fancy")
//! upsampling, then converted with the JFIF equations; a JPEG that becomes a JPEG takes the
//! planes as they are ([`decode_planes`]).
//!
//! Anything else — progressive, arithmetic, 12-bit, CMYK or Adobe RGB, odd sampling, several
//! scans, a damaged stream — returns `None`, and the general decoder (`jpeg-decoder`) reads
//! the file as before.

mod entropy;
mod planes;
#[cfg(test)]
mod tests;

use entropy::{AcTable, Bits, Malformed, Table};
use planes::Plane;

use super::pixels::{Layout, Pixels};
use super::planar::Planes;

/// Natural (row-major) index of each zigzag position.
const ZIGZAG: [u8; 64] = [
    0, 1, 8, 16, 9, 2, 3, 10, 17, 24, 32, 25, 18, 11, 4, 5, 12, 19, 26, 33, 40, 48, 41, 34, 27, 20,
    13, 6, 7, 14, 21, 28, 35, 42, 49, 56, 57, 50, 43, 36, 29, 22, 15, 23, 30, 37, 44, 51, 58, 59,
    52, 45, 38, 31, 39, 46, 53, 60, 61, 54, 47, 55, 62, 63,
];

struct Component {
    id: u8,
    h: usize,
    v: usize,
    quant: usize,
}

struct Frame {
    width: usize,
    height: usize,
    components: Vec<Component>,
}

/// Decodes `input` at `eighths`/8 of its size (1 or 2), or `None` when this decoder does not
/// read it.
pub fn decode(input: &[u8], eighths: u8) -> Option<Pixels> {
    read(input, scale_of(eighths)?).ok()?.into_pixels().ok()
}

/// Decodes a colour `input` at `eighths`/8 of its size (1 or 2) to its YCbCr planes, each at
/// its own sampling, or `None` when this decoder does not read it or it is grayscale.
pub fn decode_planes(input: &[u8], eighths: u8) -> Option<Planes> {
    read(input, scale_of(eighths)?).ok()?.into_planes()
}

fn scale_of(eighths: u8) -> Option<usize> {
    match eighths {
        1 => Some(1),
        2 => Some(2),
        _ => None,
    }
}

/// A scan's reduced planes and the visible size of the luma one.
struct Decoded {
    width: usize,
    height: usize,
    planes: Vec<Plane>,
}

impl Decoded {
    fn into_pixels(mut self) -> Result<Pixels, Malformed> {
        let (width, height) = (self.width, self.height);
        let (layout, data) = match self.planes.as_mut_slice() {
            [y] => (Layout::L8, y.take_cropped(width, height)),
            [y, cb, cr] => (Layout::Rgb8, planes::ycbcr_to_rgb(y, cb, cr, width, height)),
            _ => return Err(Malformed),
        };
        Pixels::new(width as u32, height as u32, layout, data).map_err(|_| Malformed)
    }

    fn into_planes(mut self) -> Option<Planes> {
        let [y, cb, cr] = self.planes.as_mut_slice() else {
            return None;
        };
        // Luma on the full grid, both chroma planes sampled alike.
        let factor = cb.up();
        if y.up() != (1, 1) || cr.up() != factor {
            return None;
        }
        let (width, height) = (self.width, self.height);
        let plane = |p: &mut Plane, (fx, fy): (usize, usize)| {
            let (w, h) = (width.div_ceil(fx), height.div_ceil(fy));
            Pixels::new(w as u32, h as u32, Layout::L8, p.take_cropped(w, h)).ok()
        };
        Some(Planes {
            y: plane(y, (1, 1))?,
            cb: plane(cb, factor)?,
            cr: plane(cr, factor)?,
            chroma_factor: (factor.0 as u32, factor.1 as u32),
        })
    }
}

fn be16(data: &[u8], at: usize) -> Result<usize, Malformed> {
    super::header::be16(data, at)
        .map(|v| v as usize)
        .ok_or(Malformed)
}

fn read(input: &[u8], scale: usize) -> Result<Decoded, Malformed> {
    if input.get(..2) != Some(&[0xFF, 0xD8]) {
        return Err(Malformed);
    }
    let mut quant = [[0u16; 64]; 4];
    let mut dc: [Option<Table>; 4] = Default::default();
    let mut ac: [Option<AcTable>; 4] = Default::default();
    let mut frame: Option<Frame> = None;
    let mut restart_interval = 0usize;
    let mut adobe_transform: Option<u8> = None;
    let mut pos = 2;
    loop {
        // Fill bytes (FF FF ...) may precede a marker.
        while input.get(pos + 1) == Some(&0xFF) && input[pos] == 0xFF {
            pos += 1;
        }
        if input.get(pos) != Some(&0xFF) {
            return Err(Malformed);
        }
        let marker = *input.get(pos + 1).ok_or(Malformed)?;
        let len = be16(input, pos + 2)?;
        if len < 2 {
            return Err(Malformed);
        }
        let body = input.get(pos + 4..pos + 2 + len).ok_or(Malformed)?;
        match marker {
            // Baseline and extended sequential DCT, Huffman coded.
            0xC0 | 0xC1 if frame.is_none() => frame = Some(read_frame(body)?),
            // Every other frame type (progressive, lossless, hierarchical, arithmetic), or a
            // second frame.
            0xC0..=0xC3 | 0xC5..=0xC7 | 0xC9..=0xCB | 0xCD..=0xCF => return Err(Malformed),
            0xC4 => read_huffman(body, &mut dc, &mut ac)?,
            0xDB => read_quant(body, &mut quant)?,
            0xDD => restart_interval = be16(body, 0)?,
            0xEE if body.starts_with(b"Adobe") => adobe_transform = body.get(11).copied(),
            0xDA => {
                let frame = frame.ok_or(Malformed)?;
                colour_model(&frame, adobe_transform)?;
                let scan = Scan::new(&frame, body, &quant, &dc, &ac, scale)?;
                return scan.decode(input, pos + 2 + len, restart_interval);
            }
            // APPn, COM and the rest are skipped.
            _ => {}
        }
        pos += 2 + len;
    }
}

fn read_frame(body: &[u8]) -> Result<Frame, Malformed> {
    let [precision, ..] = *body else {
        return Err(Malformed);
    };
    let height = be16(body, 1)?;
    let width = be16(body, 3)?;
    let n = usize::from(*body.get(5).ok_or(Malformed)?);
    // Height 0 (a DNL marker gives it later) is left to the general decoder.
    if precision != 8 || width == 0 || height == 0 || !(n == 1 || n == 3) {
        return Err(Malformed);
    }
    let components = (0..n)
        .map(|i| {
            let c = body.get(6 + 3 * i..9 + 3 * i).ok_or(Malformed)?;
            let (h, v) = (usize::from(c[1] >> 4), usize::from(c[1] & 15));
            if !(1..=2).contains(&h) || !(1..=2).contains(&v) || c[2] > 3 {
                return Err(Malformed);
            }
            Ok(Component {
                id: c[0],
                h,
                v,
                quant: usize::from(c[2]),
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Frame {
        width,
        height,
        components,
    })
}

/// Only grayscale and YCbCr are converted here: three components named R, G, B, or an Adobe
/// marker that says no transform, mean RGB.
fn colour_model(frame: &Frame, adobe_transform: Option<u8>) -> Result<(), Malformed> {
    let ids: Vec<u8> = frame.components.iter().map(|c| c.id).collect();
    if frame.components.len() == 3 && (adobe_transform == Some(0) || ids == b"RGB") {
        return Err(Malformed);
    }
    Ok(())
}

fn read_huffman(
    mut body: &[u8],
    dc: &mut [Option<Table>; 4],
    ac: &mut [Option<AcTable>; 4],
) -> Result<(), Malformed> {
    while let [class_id, rest @ ..] = body {
        let counts: [u8; 16] = rest.get(..16).ok_or(Malformed)?.try_into().unwrap();
        let n: usize = counts.iter().map(|&c| usize::from(c)).sum();
        let symbols = rest.get(16..16 + n).ok_or(Malformed)?;
        let table = Table::new(&counts, symbols)?;
        let id = usize::from(class_id & 15);
        match (class_id >> 4, id) {
            (0, 0..=3) => dc[id] = Some(table),
            (1, 0..=3) => ac[id] = Some(AcTable::new(table)),
            _ => return Err(Malformed),
        }
        body = &rest[16 + n..];
    }
    Ok(())
}

fn read_quant(mut body: &[u8], quant: &mut [[u16; 64]; 4]) -> Result<(), Malformed> {
    while let [pq_id, rest @ ..] = body {
        let id = usize::from(pq_id & 15);
        let wide = pq_id >> 4 == 1;
        if id > 3 || pq_id >> 4 > 1 {
            return Err(Malformed);
        }
        let size = if wide { 128 } else { 64 };
        let values = rest.get(..size).ok_or(Malformed)?;
        for (k, q) in quant[id].iter_mut().enumerate() {
            *q = if wide {
                u16::from_be_bytes([values[2 * k], values[2 * k + 1]])
            } else {
                u16::from(values[k])
            };
        }
        body = &rest[size..];
    }
    Ok(())
}

/// The mean over `8 / scale` samples of the 1-D DCT basis function of frequency `u`, with the
/// IDCT's normalisation (C(0) = 1/√2, halved): the weight of that frequency in a reduced pixel.
fn weight(u: usize, scale: usize) -> f64 {
    let c = if u == 0 {
        std::f64::consts::FRAC_1_SQRT_2
    } else {
        1.0
    };
    let n = 8 / scale;
    let sum: f64 = (0..n)
        .map(|x| ((2 * x + 1) as f64 * u as f64 * std::f64::consts::PI / 16.0).cos())
        .sum();
    c / 2.0 * sum / n as f64
}

/// The fraction bits of the recipe's weights and of the sums they give.
pub const FRACTION: u32 = 16;

/// The zigzag position of the coefficient of horizontal frequency `u`, vertical `v`.
const fn zigzag_of(u: usize, v: usize) -> usize {
    let mut k = 0;
    while ZIGZAG[k] as usize != u + 8 * v {
        k += 1;
    }
    k
}

const ODD: [usize; 4] = [1, 3, 5, 7];

/// The coefficients a 2×2 reduction reads besides DC, by parity class: odd horizontal
/// frequency with vertical 0, the reverse, and both odd (zigzag positions).
const ODD_ACROSS: [usize; 4] = {
    let mut k = [0; 4];
    let mut i = 0;
    while i < 4 {
        k[i] = zigzag_of(ODD[i], 0);
        i += 1;
    }
    k
};
const ODD_DOWN: [usize; 4] = {
    let mut k = [0; 4];
    let mut i = 0;
    while i < 4 {
        k[i] = zigzag_of(0, ODD[i]);
        i += 1;
    }
    k
};
const ODD_BOTH: [usize; 16] = {
    let mut k = [0; 16];
    let mut i = 0;
    while i < 16 {
        k[i] = zigzag_of(ODD[i % 4], ODD[i / 4]);
        i += 1;
    }
    k
};

/// A component's decoding recipe: for each zigzag position, the weight (fixed point) that
/// turns its quantised coefficient into its share of the top-left reduced pixel; zero for the
/// coefficients no reduced pixel depends on.
struct Recipe {
    weights: [i64; 64],
    scale: usize,
}

impl Recipe {
    fn new(quant: &[u16; 64], scale: usize) -> Recipe {
        let mut weights = [0; 64];
        for (k, w) in weights.iter_mut().enumerate() {
            let z = usize::from(ZIGZAG[k]);
            let exact = weight(z % 8, scale) * weight(z / 8, scale);
            *w = (exact * f64::from(quant[k]) * f64::from(1 << FRACTION)).round() as i64;
        }
        Recipe { weights, scale }
    }

    /// The four parity-class sums of a block's weighted coefficients (DC; odd across; odd
    /// down; odd both ways). A pixel of the block is their sum with the odd classes' signs
    /// flipped in the right half (across) and the bottom half (down).
    #[inline]
    fn sums(&self, coefs: &Coefficients) -> [i64; 4] {
        let term = |k: usize| i64::from(coefs[k]) * self.weights[k];
        if self.scale == 1 {
            return [term(0), 0, 0, 0];
        }
        [
            term(0),
            ODD_ACROSS.iter().map(|&k| term(k)).sum(),
            ODD_DOWN.iter().map(|&k| term(k)).sum(),
            ODD_BOTH.iter().map(|&k| term(k)).sum(),
        ]
    }
}

/// The table a scan selects, which an earlier DHT must have defined.
fn installed<T>(tables: &[Option<T>; 4], id: u8) -> Result<&T, Malformed> {
    tables
        .get(usize::from(id))
        .and_then(Option::as_ref)
        .ok_or(Malformed)
}

struct ScanComponent<'t> {
    h: usize,
    v: usize,
    dc: &'t Table,
    ac: &'t AcTable,
    recipe: Recipe,
    plane: Plane,
}

struct Scan<'t> {
    width: usize,
    height: usize,
    scale: usize,
    mcus_across: usize,
    mcus_down: usize,
    components: Vec<ScanComponent<'t>>,
}

impl<'t> Scan<'t> {
    fn new(
        frame: &Frame,
        body: &[u8],
        quant: &[[u16; 64]; 4],
        dc: &'t [Option<Table>; 4],
        ac: &'t [Option<AcTable>; 4],
        scale: usize,
    ) -> Result<Scan<'t>, Malformed> {
        let n = usize::from(*body.first().ok_or(Malformed)?);
        // One scan with every component, the whole spectrum, no successive approximation.
        let spectral = body.get(1 + 2 * n..4 + 2 * n).ok_or(Malformed)?;
        if n != frame.components.len() || spectral != [0, 63, 0] {
            return Err(Malformed);
        }
        let single = n == 1;
        let hmax = frame.components.iter().map(|c| c.h).max().unwrap();
        let vmax = frame.components.iter().map(|c| c.v).max().unwrap();
        // A lone component is not interleaved: its blocks cover the image, whatever its factors.
        let (hmax, vmax) = if single { (1, 1) } else { (hmax, vmax) };
        let mcus_across = frame.width.div_ceil(8 * hmax);
        let mcus_down = frame.height.div_ceil(8 * vmax);
        let mut components = Vec::with_capacity(n);
        for (i, fc) in frame.components.iter().enumerate() {
            let sel = body.get(1 + 2 * i..3 + 2 * i).ok_or(Malformed)?;
            if sel[0] != fc.id {
                return Err(Malformed);
            }
            let (h, v) = if single { (1, 1) } else { (fc.h, fc.v) };
            // The triangle upsampling doubles; other ratios are left to the general decoder.
            if hmax % h != 0 || vmax % v != 0 {
                return Err(Malformed);
            }
            components.push(ScanComponent {
                h,
                v,
                dc: installed(dc, sel[1] >> 4)?,
                ac: installed(ac, sel[1] & 15)?,
                recipe: Recipe::new(&quant[fc.quant], scale),
                plane: Plane::new(
                    mcus_across * h * scale,
                    mcus_down * v * scale,
                    hmax / h,
                    vmax / v,
                ),
            });
        }
        Ok(Scan {
            width: frame.width,
            height: frame.height,
            scale,
            mcus_across,
            mcus_down,
            components,
        })
    }

    fn decode(
        mut self,
        input: &[u8],
        mut pos: usize,
        restart_interval: usize,
    ) -> Result<Decoded, Malformed> {
        let mcus = self.mcus_across * self.mcus_down;
        let interval = if restart_interval == 0 {
            mcus
        } else {
            restart_interval
        };
        let mut mcu = 0;
        let mut restarts = 0u8;
        while mcu < mcus {
            let mut bits = Bits::new(input, pos);
            let mut predictors = [0i32; 3];
            let mut coefs = [0i32; COEFFICIENT_SLOTS];
            let end = (mcu + interval).min(mcus);
            for m in mcu..end {
                let (mx, my) = (m % self.mcus_across, m / self.mcus_across);
                for (c, pred) in self.components.iter_mut().zip(&mut predictors) {
                    for by in 0..c.v {
                        for bx in 0..c.h {
                            let sums = block(&mut bits, c, pred, &mut coefs)?;
                            c.plane.put(
                                (mx * c.h + bx) * self.scale,
                                (my * c.v + by) * self.scale,
                                self.scale,
                                &sums,
                            );
                        }
                    }
                }
                // A stream cut short is noticed by the end of the row, not of the image.
                if mx + 1 == self.mcus_across && bits.overran() {
                    return Err(Malformed);
                }
            }
            if bits.overran() {
                return Err(Malformed);
            }
            mcu = end;
            if mcu < mcus {
                pos = bits.restart(restarts)?;
                restarts = restarts.wrapping_add(1);
            }
        }
        Ok(Decoded {
            width: (self.width * self.scale).div_ceil(8),
            height: (self.height * self.scale).div_ceil(8),
            planes: self.components.into_iter().map(|c| c.plane).collect(),
        })
    }
}

/// A block's coefficients by zigzag position, with room past 63 for the writes of a pair entry
/// that runs over the end (such a block is malformed; the slots past 63 are never read).
const COEFFICIENT_SLOTS: usize = 128;
type Coefficients = [i32; COEFFICIENT_SLOTS];

/// Decodes one block into the four parity sums of its weighted coefficients. Every coefficient
/// is stored in `coefs` (by zigzag position; the first 64 are zero on entry and on return) and
/// only the recipe's are read back, so the decoding loop carries no dependency but the bit
/// position.
#[inline]
fn block(
    bits: &mut Bits,
    c: &ScanComponent,
    pred: &mut i32,
    coefs: &mut Coefficients,
) -> Result<[i64; 4], Malformed> {
    let dc = bits.symbol(c.dc)?;
    if dc.run != 0 || dc.size > 11 {
        return Err(Malformed);
    }
    *pred = pred.wrapping_add(dc.value);
    // A valid stream stays far inside this; a broken one must not overflow the sums.
    coefs[0] = (*pred).clamp(-1 << 16, 1 << 16);
    let mut k = 1;
    while k < 64 {
        // A pair is taken unless its first symbol may end the block at 64 without an end of
        // block: the bits after it then belong to the next block. k <= 63 here, so neither
        // write leaves the slots.
        if let Some(pair) = bits.peek_pair(c.ac)
            && k + pair.first().advance < 64
        {
            bits.take_pair(pair);
            for step in [pair.first(), pair.second()] {
                coefs[(k + step.offset) % COEFFICIENT_SLOTS] = step.value;
                k += step.advance;
            }
            if pair.ends() {
                break;
            }
            continue;
        }
        let s = bits.symbol(&c.ac.single)?;
        if s.size == 0 {
            if s.run != 15 {
                break; // end of block
            }
            k += 16;
            continue;
        }
        k += s.run as usize;
        if k > 63 {
            return Err(Malformed);
        }
        coefs[k] = s.value;
        k += 1;
    }
    if k > 64 {
        return Err(Malformed);
    }
    if k == 1 {
        // DC alone, as in most blocks of smooth regions: one product, one reset.
        let dc = i64::from(coefs[0]) * c.recipe.weights[0];
        coefs[0] = 0;
        return Ok([dc, 0, 0, 0]);
    }
    let sums = c.recipe.sums(coefs);
    coefs[..64].fill(0);
    Ok(sums)
}
