//! `cargo bench -p fjord-functions --bench image_resize`: the `image-resize` pipeline, bytes in to
//! bytes out (decode, orientation, resize, encode), one call at a time on this thread, warm.
//! Prints median and p90 wall time per case, and the process CPU time per call (which also
//! counts helper threads, should a decoder start any). Images are synthesised in memory:
//! gradients, soft shapes and sensor-like noise, so they do not compress trivially; the
//! entropy-coded size drives JPEG decoding time, hence the cases at three noise levels.
//! A name filter picks cases (`-- jpeg`, `-- stages`, `-- png`, `-- webp`);
//! `IMAGE_RESIZE_BENCH_DUMP=dir` writes the inputs there, to run other tools on the same files.

use std::hint::black_box;
use std::time::Instant;

use fjord_functions::image_resize::{DEFAULT_MAX_PIXELS, Params, decode_reduced_jpeg, resize};
use image::codecs::png::PngEncoder;
use image::codecs::webp::WebPEncoder;
use image::{ExtendedColorType, ImageEncoder};

const WARMUP: usize = 5;
const ITERATIONS: usize = 60;

/// xorshift64*: reproducible noise without a dependency.
struct Noise(u64);

impl Noise {
    fn next(&mut self) -> u32 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 32) as u32
    }
}

/// An RGB "photo": a sky-to-ground gradient, a few soft blobs, fine texture and noise.
fn photo(w: u32, h: u32, noise_amplitude: u32) -> Vec<u8> {
    let mut noise = Noise(0x9E37_79B9_7F4A_7C15);
    let mut out = Vec::with_capacity(w as usize * h as usize * 3);
    let blobs = [
        (0.3, 0.6, 0.15, [180.0, 60.0, 40.0]),
        (0.7, 0.4, 0.2, [40.0, 140.0, 60.0]),
        (0.5, 0.8, 0.1, [60.0, 60.0, 170.0]),
    ];
    for y in 0..h {
        let fy = f64::from(y) / f64::from(h);
        for x in 0..w {
            let fx = f64::from(x) / f64::from(w);
            let mut c = [
                90.0 + 120.0 * (1.0 - fy),
                110.0 + 90.0 * (1.0 - fy),
                200.0 - 120.0 * fy,
            ];
            for (bx, by, r, colour) in blobs {
                let d2 = ((fx - bx).powi(2) + (fy - by).powi(2)) / (r * r);
                let a = (-d2).exp();
                for i in 0..3 {
                    c[i] = c[i] * (1.0 - a) + colour[i] * a;
                }
            }
            let texture = 14.0 * ((fx * 300.0).sin() * (fy * 220.0).cos());
            for v in c {
                let n = f64::from(noise.next() % (2 * noise_amplitude + 1))
                    - f64::from(noise_amplitude);
                out.push((v + texture + n).clamp(0.0, 255.0) as u8);
            }
        }
    }
    out
}

fn jpeg(w: u32, h: u32, noise: u32, sampling: jpeg_encoder::SamplingFactor) -> Vec<u8> {
    let mut out = Vec::new();
    let mut e = jpeg_encoder::Encoder::new(&mut out, 90);
    e.set_sampling_factor(sampling);
    e.encode(
        &photo(w, h, noise),
        w as u16,
        h as u16,
        jpeg_encoder::ColorType::Rgb,
    )
    .unwrap();
    out
}

fn png(w: u32, h: u32) -> Vec<u8> {
    let mut out = Vec::new();
    PngEncoder::new(&mut out)
        .write_image(&photo(w, h, 12), w, h, ExtendedColorType::Rgb8)
        .unwrap();
    out
}

fn webp(w: u32, h: u32) -> Vec<u8> {
    let mut out = Vec::new();
    WebPEncoder::new_lossless(&mut out)
        .write_image(&photo(w, h, 12), w, h, ExtendedColorType::Rgb8)
        .unwrap();
    out
}

/// User plus system CPU time of this process so far, in milliseconds (Linux; `None` elsewhere).
fn cpu_ms() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesised command name; utime and stime are the 14th and 15th.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    // USER_HZ is 100 on Linux.
    Some(ticks * 10.0)
}

fn case(name: &str, input: &[u8], query: &str) {
    // To compare with other tools on the very same input.
    if let Ok(dir) = std::env::var("IMAGE_RESIZE_BENCH_DUMP") {
        let file: String = name
            .split(" -> ")
            .next()
            .unwrap_or(name)
            .replace([' ', ':'], "_");
        std::fs::write(std::path::Path::new(&dir).join(file), input).unwrap();
    }
    let params = Params::from_query(query).unwrap();
    let mut out = None;
    for _ in 0..WARMUP {
        out = Some(resize(black_box(input), &params, DEFAULT_MAX_PIXELS).unwrap());
    }
    let out = out.unwrap();
    let cpu_before = cpu_ms();
    let mut times: Vec<f64> = (0..ITERATIONS)
        .map(|_| {
            let started = Instant::now();
            black_box(resize(black_box(input), &params, DEFAULT_MAX_PIXELS).unwrap());
            started.elapsed().as_secs_f64() * 1000.0
        })
        .collect();
    let cpu = match (cpu_before, cpu_ms()) {
        (Some(a), Some(b)) => format!("{:6.1}", (b - a) / ITERATIONS as f64),
        _ => "     ?".to_owned(),
    };
    times.sort_by(f64::total_cmp);
    let at = |q: f64| times[((times.len() - 1) as f64 * q).round() as usize];
    println!(
        "{name:<56} {:>6} KiB -> {:>4}x{:<4} {:>4} KiB   median {:6.1} ms   p90 {:6.1} ms   cpu {cpu} ms",
        input.len() / 1024,
        out.width,
        out.height,
        out.bytes.len() / 1024,
        at(0.5),
        at(0.9),
    );
}

fn main() {
    // `cargo bench` passes `--bench`; a name filter would be a further argument.
    let filter: Option<String> = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let wanted = |name: &str| filter.as_deref().is_none_or(|f| name.contains(f));
    println!("image-resize, {ITERATIONS} calls after {WARMUP} warm-up calls, one at a time");
    if wanted("jpeg") {
        let q90 = jpeg(4000, 3000, 12, jpeg_encoder::SamplingFactor::F_1_1);
        case(
            "jpeg 4000x3000 q90 4:4:4 -> 800x600 jpeg q85",
            &q90,
            "w=800&h=600&format=jpeg&q=85",
        );
        for noise in [12, 6, 3] {
            let q90_420 = jpeg(4000, 3000, noise, jpeg_encoder::SamplingFactor::F_2_2);
            case(
                &format!("jpeg 4000x3000 q90 4:2:0 noise {noise} -> 800x600 jpeg q85"),
                &q90_420,
                "w=800&h=600&format=jpeg&q=85",
            );
        }
        case(
            "jpeg 4000x3000 q90 4:4:4 -> 800x600 cover",
            &q90,
            "w=800&h=600&fit=cover",
        );
        case(
            "jpeg 4000x3000 q90 4:4:4 -> 1600x1200 jpeg",
            &q90,
            "w=1600&h=1200",
        );
    }
    if wanted("stages") {
        println!("stages of jpeg 4000x3000 q90 4:4:4 -> 800x600 (medians):");
        stages(&jpeg(4000, 3000, 12, jpeg_encoder::SamplingFactor::F_1_1));
        println!("stages of jpeg 4000x3000 q90 4:2:0 noise 12 -> 800x600 (medians):");
        stages(&jpeg(4000, 3000, 12, jpeg_encoder::SamplingFactor::F_2_2));
    }
    if wanted("png") {
        case(
            "png 2000x1500 -> 400x300 png",
            &png(2000, 1500),
            "w=400&h=300",
        );
    }
    if wanted("webp") {
        case(
            "webp (lossless) 2000x1500 -> 400x300 webp",
            &webp(2000, 1500),
            "w=400&h=300",
        );
    }
}

fn median_ms(mut f: impl FnMut()) -> f64 {
    for _ in 0..WARMUP {
        f();
    }
    let mut t: Vec<f64> = (0..ITERATIONS / 2)
        .map(|_| {
            let s = Instant::now();
            f();
            s.elapsed().as_secs_f64() * 1000.0
        })
        .collect();
    t.sort_by(f64::total_cmp);
    t[t.len() / 2]
}

/// Where the time of the 4000x3000 -> 800x600 JPEG case goes, and the alternatives measured.
fn stages(input: &[u8]) {
    let decode = |eighths: u16| {
        let mut d = jpeg_decoder::Decoder::new(input);
        if eighths < 8 {
            d.scale(4000 * eighths / 8, u16::MAX).unwrap();
        }
        d.decode().unwrap()
    };
    for n in [8, 2, 1] {
        let ms = median_ms(|| {
            black_box(decode(n));
        });
        println!("  decode, jpeg-decoder at {n}/8: {ms:6.1} ms");
    }
    for n in [2, 1] {
        let ms = median_ms(|| {
            black_box(decode_reduced_jpeg(input, n).unwrap());
        });
        println!("  decode, Fjord's shrink-on-load at {n}/8: {ms:6.1} ms");
    }
    let ms = median_ms(|| {
        black_box(image::load_from_memory(input).unwrap());
    });
    println!("  decode, zune-jpeg (image) full size: {ms:6.1} ms");
    let quarter = decode(2);
    let src = fast_image_resize::images::ImageRef::new(
        1000,
        750,
        &quarter,
        fast_image_resize::PixelType::U8x3,
    )
    .unwrap();
    let mut resizer = fast_image_resize::Resizer::new();
    for (name, filter) in [
        ("Lanczos3", fast_image_resize::FilterType::Lanczos3),
        ("CatmullRom", fast_image_resize::FilterType::CatmullRom),
    ] {
        let options = fast_image_resize::ResizeOptions::new()
            .resize_alg(fast_image_resize::ResizeAlg::Convolution(filter));
        let ms = median_ms(|| {
            let mut dst =
                fast_image_resize::images::Image::new(800, 600, fast_image_resize::PixelType::U8x3);
            resizer.resize(&src, &mut dst, &options).unwrap();
            black_box(dst);
        });
        println!("  resize 1000x750 -> 800x600 {name}: {ms:6.1} ms");
    }
    let small = photo(800, 600, 12);
    let ms = median_ms(|| {
        let mut out = Vec::new();
        jpeg_encoder::Encoder::new(&mut out, 85)
            .encode(&small, 800, 600, jpeg_encoder::ColorType::Rgb)
            .unwrap();
        black_box(out);
    });
    println!("  encode 800x600 q85, jpeg-encoder: {ms:6.1} ms");
    let ms = median_ms(|| {
        let mut out = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 85)
            .write_image(&small, 800, 600, ExtendedColorType::Rgb8)
            .unwrap();
        black_box(out);
    });
    println!("  encode 800x600 q85, image's JpegEncoder: {ms:6.1} ms");
}
