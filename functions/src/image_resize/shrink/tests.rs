//! The reduced decode against `jpeg-decoder`'s full decode averaged over the same pixels, on
//! every layout this decoder takes, and the files it must leave to the general decoder.

use jpeg_encoder::{ColorType, Encoder, SamplingFactor};

use super::decode;
use crate::image_resize::pixels::Layout;

/// Smooth gradients, a soft ring and noise, kept within 40..=215 so no pixel of the full decode
/// is clamped (a reduced pixel is the mean before clamping).
fn picture(w: usize, h: usize, channels: usize) -> Vec<u8> {
    let mut seed = 0x2545_F491_4F6C_DD1Du64;
    let mut out = Vec::with_capacity(w * h * channels);
    for y in 0..h {
        for x in 0..w {
            let (fx, fy) = (x as f64 / w as f64, y as f64 / h as f64);
            let ring = (((fx - 0.5).powi(2) + (fy - 0.4).powi(2)).sqrt() * 40.0).sin();
            for c in 0..channels {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let noise = (seed % 21) as f64 - 10.0;
                let v = 127.0 + 50.0 * (fx - fy + c as f64 * 0.3).sin() + 25.0 * ring + noise;
                out.push(v.clamp(40.0, 215.0) as u8);
            }
        }
    }
    out
}

struct Case {
    width: usize,
    height: usize,
    colour: ColorType,
    sampling: SamplingFactor,
    quality: u8,
    restart: u16,
}

impl Case {
    fn new(width: usize, height: usize, sampling: SamplingFactor) -> Case {
        Case {
            width,
            height,
            colour: ColorType::Rgb,
            sampling,
            quality: 90,
            restart: 0,
        }
    }

    fn channels(&self) -> usize {
        if matches!(self.colour, ColorType::Luma) {
            1
        } else {
            3
        }
    }

    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let mut e = Encoder::new(&mut out, self.quality);
        e.set_sampling_factor(self.sampling);
        e.set_restart_interval(self.restart);
        let pixels = picture(self.width, self.height, self.channels());
        e.encode(&pixels, self.width as u16, self.height as u16, self.colour)
            .unwrap();
        out
    }
}

/// The largest and the mean difference between the reduced decode and the mean of the full
/// decode over each reduced pixel's `8 / scale` square, on the squares inside the image.
fn compare(jpeg: &[u8], eighths: u8) -> (u32, f64) {
    let reduced = decode(jpeg, eighths).expect("the shrink decoder reads it");
    let mut full = jpeg_decoder::Decoder::new(jpeg);
    let pixels = full.decode().unwrap();
    let info = full.info().unwrap();
    let (w, h) = (usize::from(info.width), usize::from(info.height));
    let channels = pixels.len() / (w * h);
    assert_eq!(reduced.layout.channels(), channels);
    let side = 8 / usize::from(eighths);
    assert_eq!(
        (reduced.width as usize, reduced.height as usize),
        (w.div_ceil(side), h.div_ceil(side))
    );
    let (mut worst, mut total, mut n) = (0u32, 0u64, 0u64);
    for ry in 0..h / side {
        for rx in 0..w / side {
            for c in 0..channels {
                let mut sum = 0u32;
                for y in ry * side..(ry + 1) * side {
                    for x in rx * side..(rx + 1) * side {
                        sum += u32::from(pixels[(y * w + x) * channels + c]);
                    }
                }
                let mean = (sum as f64 / (side * side) as f64).round() as i32;
                let got =
                    i32::from(reduced.data[(ry * reduced.width as usize + rx) * channels + c]);
                let d = mean.abs_diff(got);
                worst = worst.max(d);
                total += u64::from(d);
                n += 1;
            }
        }
    }
    (worst, total as f64 / n as f64)
}

#[test]
fn grayscale_matches_the_full_decode_averaged() {
    let mut case = Case::new(203, 157, SamplingFactor::F_1_1);
    case.colour = ColorType::Luma;
    let jpeg = case.encode();
    for eighths in [1, 2] {
        let (worst, mean) = compare(&jpeg, eighths);
        // The full decode rounds each pixel; the mean of those may differ by one.
        assert!(worst <= 1 && mean < 0.5, "1/{eighths}: {worst} {mean}");
    }
    assert_eq!(decode(&jpeg, 2).unwrap().layout, Layout::L8);
}

#[test]
fn each_sampling_matches_the_full_decode_averaged() {
    for sampling in [
        SamplingFactor::F_1_1,
        SamplingFactor::F_2_1,
        SamplingFactor::F_1_2,
        SamplingFactor::F_2_2,
    ] {
        for quality in [75, 100] {
            let mut case = Case::new(245, 181, sampling);
            case.quality = quality;
            let jpeg = case.encode();
            for eighths in [1, 2] {
                let (worst, mean) = compare(&jpeg, eighths);
                // Colour conversion and chroma interpolation happen at a different resolution
                // than in the full decode; the difference stays small.
                assert!(
                    worst <= 12 && mean < 1.5,
                    "{sampling:?} q{quality} 1/{eighths}: worst {worst}, mean {mean}"
                );
            }
        }
    }
}

#[test]
fn restart_intervals_give_the_same_pixels() {
    let plain = Case::new(190, 130, SamplingFactor::F_2_2);
    let mut restarts = Case::new(190, 130, SamplingFactor::F_2_2);
    restarts.restart = 3;
    let with = restarts.encode();
    assert!(with.windows(2).any(|m| m == [0xFF, 0xD7]), "RST7 is used");
    for eighths in [1, 2] {
        assert_eq!(
            decode(&with, eighths).unwrap().data,
            decode(&plain.encode(), eighths).unwrap().data
        );
    }
}

#[test]
fn other_files_are_left_to_the_general_decoder() {
    let case = Case::new(120, 90, SamplingFactor::F_2_2);
    let baseline = case.encode();
    assert!(decode(&baseline, 2).is_some());
    assert!(decode(&baseline, 4).is_none(), "only 1/8 and 1/4");

    let mut out = Vec::new();
    let mut e = Encoder::new(&mut out, 90);
    e.set_progressive(true);
    e.encode(&picture(120, 90, 3), 120, 90, ColorType::Rgb)
        .unwrap();
    assert!(decode(&out, 2).is_none(), "progressive");

    let mut out = Vec::new();
    Encoder::new(&mut out, 90)
        .encode(&picture(120, 90, 4), 120, 90, ColorType::Cmyk)
        .unwrap();
    assert!(decode(&out, 2).is_none(), "CMYK");

    // Cut short: the missing data is not read as zeros.
    let sos = baseline.windows(2).position(|m| m == [0xFF, 0xDA]).unwrap();
    let cut = &baseline[..sos + (baseline.len() - sos) / 2];
    assert!(decode(cut, 2).is_none(), "truncated");
    assert!(decode(&baseline[..sos], 2).is_none(), "no scan");
}

#[test]
fn damaged_files_never_panic() {
    let jpeg = Case::new(64, 48, SamplingFactor::F_2_2).encode();
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed as usize
    };
    for _ in 0..2000 {
        let mut damaged = jpeg.clone();
        // Half of the damage lands in the headers (tables, frame, scan), which are short.
        let headers = jpeg.windows(2).position(|m| m == [0xFF, 0xDA]).unwrap() + 14;
        for _ in 0..1 + next() % 4 {
            let span = if next() % 2 == 0 {
                headers
            } else {
                damaged.len()
            };
            let at = next() % span;
            damaged[at] = next() as u8;
        }
        if next() % 4 == 0 {
            damaged.truncate(next() % jpeg.len());
        }
        for eighths in [1, 2] {
            let _ = decode(&damaged, eighths);
        }
    }
}
