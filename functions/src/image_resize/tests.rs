//! Unit tests of `image-resize` on images generated here.

use std::io::Cursor;
use std::time::{Duration, Instant};

use image::codecs::gif::GifEncoder;
use image::codecs::webp::WebPEncoder;
use image::{DynamicImage, ExtendedColorType, ImageEncoder, ImageFormat, Rgb, RgbImage, Rgba};

use super::*;
use crate::Request;

const LIMIT: u64 = DEFAULT_MAX_PIXELS;

/// A gradient with a red top-left corner block, so orientation shows.
fn photo(w: u32, h: u32) -> RgbImage {
    RgbImage::from_fn(w, h, |x, y| {
        if x < w / 4 && y < h / 4 {
            Rgb([255, 0, 0])
        } else {
            Rgb([(x * 255 / w) as u8, (y * 255 / h) as u8, 128])
        }
    })
}

fn jpeg(img: &RgbImage) -> Vec<u8> {
    let mut out = Vec::new();
    jpeg_encoder::Encoder::new(&mut out, 90)
        .encode(
            img.as_raw(),
            img.width() as u16,
            img.height() as u16,
            jpeg_encoder::ColorType::Rgb,
        )
        .unwrap();
    out
}

fn png(img: &DynamicImage) -> Vec<u8> {
    let mut out = Vec::new();
    img.write_to(&mut Cursor::new(&mut out), ImageFormat::Png)
        .unwrap();
    out
}

fn webp(img: &RgbImage) -> Vec<u8> {
    let mut out = Vec::new();
    WebPEncoder::new_lossless(&mut out)
        .write_image(
            img.as_raw(),
            img.width(),
            img.height(),
            ExtendedColorType::Rgb8,
        )
        .unwrap();
    out
}

fn gif(img: &RgbImage) -> Vec<u8> {
    let mut out = Vec::new();
    let rgba = DynamicImage::ImageRgb8(img.clone()).into_rgba8();
    GifEncoder::new(&mut out)
        .encode(
            rgba.as_raw(),
            rgba.width(),
            rgba.height(),
            ExtendedColorType::Rgba8,
        )
        .unwrap();
    out
}

fn q(query: &str) -> Params {
    Params::from_query(query).unwrap()
}

fn run(input: &[u8], query: &str) -> Output {
    resize(input, &q(query), LIMIT).unwrap()
}

/// Decodes an output and checks it says its own size right.
fn decoded(out: &Output) -> DynamicImage {
    let format = match out.format {
        Format::Jpeg => ImageFormat::Jpeg,
        Format::Png => ImageFormat::Png,
        Format::WebP => ImageFormat::WebP,
    };
    let img = image::load_from_memory_with_format(&out.bytes, format).unwrap();
    assert_eq!((img.width(), img.height()), (out.width, out.height));
    img
}

fn size(out: &Output) -> (u32, u32) {
    let img = decoded(out);
    (img.width(), img.height())
}

#[test]
fn every_format_in_and_out() {
    let img = photo(300, 200);
    let inputs = [
        ("jpeg", jpeg(&img), Format::Jpeg),
        (
            "png",
            png(&DynamicImage::ImageRgb8(img.clone())),
            Format::Png,
        ),
        ("webp", webp(&img), Format::WebP),
        ("gif", gif(&img), Format::Png),
    ];
    for (name, input, default_out) in &inputs {
        let out = run(input, "w=150");
        assert_eq!(out.format, *default_out, "{name} in, no format");
        assert_eq!(size(&out), (150, 100), "{name}");
        for (format, expect) in [
            ("jpeg", Format::Jpeg),
            ("png", Format::Png),
            ("webp", Format::WebP),
        ] {
            let out = run(input, &format!("w=60&format={format}"));
            assert_eq!(out.format, expect);
            assert_eq!(size(&out), (60, 40), "{name} to {format}");
        }
    }
}

#[test]
fn resampled_content_is_the_image() {
    let out = run(&jpeg(&photo(400, 400)), "w=40");
    let img = decoded(&out).into_rgb8();
    let corner = img.get_pixel(2, 2);
    assert!(corner[0] > 200 && corner[1] < 60, "red corner: {corner:?}");
    let far = img.get_pixel(37, 37);
    assert!(
        far[0] > 150 && far[1] > 150 && far[2] > 90,
        "gradient: {far:?}"
    );
}

#[test]
fn fit_modes_give_their_sizes() {
    let input = jpeg(&photo(400, 200));
    let box_ = "w=100&h=100";
    assert_eq!(size(&run(&input, &format!("{box_}&fit=inside"))), (100, 50));
    assert_eq!(size(&run(&input, box_)), (100, 50), "inside is the default");
    assert_eq!(
        size(&run(&input, &format!("{box_}&fit=contain"))),
        (100, 100)
    );
    assert_eq!(size(&run(&input, &format!("{box_}&fit=cover"))), (100, 100));
    assert_eq!(size(&run(&input, &format!("{box_}&fit=fill"))), (100, 100));
    // A large shrink goes through the JPEG decoder's reduced IDCT and still lands exactly.
    let big = jpeg(&photo(1600, 1200));
    assert_eq!(
        size(&run(&big, "w=150&h=150&fit=cover&format=png")),
        (150, 150)
    );
    assert_eq!(size(&run(&big, "w=190&h=30&fit=fill")), (190, 30));
    assert_eq!(size(&run(&big, "w=199")), (199, 149));
}

#[test]
fn cover_crops_the_centre() {
    // Left half black, right half white, in a wide image: covering a square keeps the middle.
    let img = RgbImage::from_fn(300, 100, |x, _| {
        if x < 150 {
            Rgb([0, 0, 0])
        } else {
            Rgb([255; 3])
        }
    });
    let out = run(&png(&DynamicImage::ImageRgb8(img)), "w=50&h=50&fit=cover");
    let img = decoded(&out).into_rgb8();
    assert!(img.get_pixel(2, 25)[0] < 10);
    assert!(img.get_pixel(47, 25)[0] > 245);
}

#[test]
fn one_side_keeps_the_aspect_ratio() {
    let input = png(&DynamicImage::ImageRgb8(photo(400, 300)));
    for fit in ["inside", "contain", "cover", "fill"] {
        assert_eq!(size(&run(&input, &format!("w=200&fit={fit}"))), (200, 150));
        assert_eq!(size(&run(&input, &format!("h=60&fit={fit}"))), (80, 60));
    }
}

#[test]
fn no_upscaling_unless_asked() {
    let input = png(&DynamicImage::ImageRgb8(photo(100, 50)));
    assert_eq!(size(&run(&input, "w=400")), (100, 50));
    assert_eq!(size(&run(&input, "w=400&h=400")), (100, 50));
    assert_eq!(size(&run(&input, "w=400&upscale=true")), (400, 200));
    assert_eq!(
        size(&run(&input, "w=400&h=400&fit=fill&upscale=true")),
        (400, 400)
    );
    // contain keeps the requested canvas but does not enlarge the picture on it.
    let out = run(&input, "w=200&h=200&fit=contain&bg=000000");
    assert_eq!(size(&out), (200, 200));
    let img = decoded(&out).into_rgb8();
    assert_eq!(img.get_pixel(100, 60), &Rgb([0, 0, 0]), "above the picture");
    assert_ne!(img.get_pixel(100, 100), &Rgb([0, 0, 0]), "the picture");
}

/// Splices an APP1 Exif segment with `Orientation = orientation` in after SOI.
fn with_exif_orientation(jpeg: &[u8], orientation: u16) -> Vec<u8> {
    let mut tiff = b"MM\0\x2a\0\0\0\x08".to_vec();
    tiff.extend_from_slice(&1u16.to_be_bytes()); // one IFD entry
    tiff.extend_from_slice(&0x0112u16.to_be_bytes()); // Orientation
    tiff.extend_from_slice(&3u16.to_be_bytes()); // SHORT
    tiff.extend_from_slice(&1u32.to_be_bytes()); // count
    tiff.extend_from_slice(&orientation.to_be_bytes());
    tiff.extend_from_slice(&[0, 0]);
    tiff.extend_from_slice(&0u32.to_be_bytes()); // no next IFD
    let mut payload = b"Exif\0\0".to_vec();
    payload.extend_from_slice(&tiff);
    let mut out = jpeg[..2].to_vec();
    out.extend_from_slice(&[0xFF, 0xE1]);
    out.extend_from_slice(&(payload.len() as u16 + 2).to_be_bytes());
    out.extend_from_slice(&payload);
    out.extend_from_slice(&jpeg[2..]);
    out
}

#[test]
fn exif_orientation_6_turns_the_image_upright() {
    // Stored landscape 400x200 with the red block top-left; orientation 6 means "rotate 90°
    // clockwise to display", so it shows as 200x400 portrait with the block top-right.
    let input = with_exif_orientation(&jpeg(&photo(400, 200)), 6);
    let out = run(&input, "w=100");
    assert_eq!(size(&out), (100, 200), "portrait");
    let img = decoded(&out).into_rgb8();
    let top_right = img.get_pixel(92, 8);
    assert!(top_right[0] > 200 && top_right[1] < 60, "{top_right:?}");
    let top_left = img.get_pixel(8, 8);
    assert!(top_left[0] < 150, "{top_left:?}");
    // Also through the reduced IDCT, with a box.
    let input = with_exif_orientation(&jpeg(&photo(1600, 800)), 6);
    assert_eq!(size(&run(&input, "w=100&h=100&fit=cover")), (100, 100));
    assert_eq!(size(&run(&input, "h=100")), (50, 100));
    // Orientation 1 changes nothing.
    let input = with_exif_orientation(&jpeg(&photo(400, 200)), 1);
    assert_eq!(size(&run(&input, "w=100")), (100, 50));
}

#[test]
fn contain_pads_with_bg() {
    let input = png(&DynamicImage::ImageRgb8(photo(400, 200)));
    let out = run(&input, "w=100&h=100&fit=contain&bg=00ff00&format=png");
    let img = decoded(&out).into_rgb8();
    assert_eq!(img.get_pixel(50, 2), &Rgb([0, 255, 0]), "top band");
    assert_eq!(img.get_pixel(50, 97), &Rgb([0, 255, 0]), "bottom band");
    assert_ne!(img.get_pixel(50, 50), &Rgb([0, 255, 0]), "picture");
    // The default is white.
    let out = run(&input, "w=100&h=100&fit=contain&format=png");
    assert_eq!(decoded(&out).into_rgb8().get_pixel(50, 2), &Rgb([255; 3]));
    // Grey input, coloured padding.
    let grey = DynamicImage::ImageLuma8(image::GrayImage::from_pixel(40, 20, image::Luma([90])));
    let out = run(&png(&grey), "w=40&h=40&fit=contain&bg=ff0000&format=png");
    let img = decoded(&out).into_rgb8();
    assert_eq!(img.get_pixel(20, 1), &Rgb([255, 0, 0]));
    assert_eq!(img.get_pixel(20, 20), &Rgb([90, 90, 90]));
}

#[test]
fn transparency_survives_png_and_flattens_onto_bg_for_jpeg() {
    let img = image::RgbaImage::from_pixel(40, 40, Rgba([0, 0, 0, 0]));
    let input = png(&DynamicImage::ImageRgba8(img));
    let out = run(&input, "w=20");
    assert_eq!(decoded(&out).into_rgba8().get_pixel(10, 10)[3], 0);
    let out = run(&input, "w=20&format=jpeg&bg=0000ff");
    let p = *decoded(&out).into_rgb8().get_pixel(10, 10);
    assert!(p[2] > 240 && p[0] < 15, "{p:?}");
}

#[test]
fn every_bad_parameter_is_a_400_naming_it() {
    let cases = [
        ("", "w"),
        ("fit=cover", "w"),
        ("w=0", "w"),
        ("w=-5", "w"),
        ("w=abc", "w"),
        ("w=99999", "w"),
        ("w=", "w"),
        ("w=10&h=0", "h"),
        ("h=1.5", "h"),
        ("w=10&fit=stretch", "fit"),
        ("w=10&format=gif", "format"),
        ("w=10&format=", "format"),
        ("w=10&q=0", "q"),
        ("w=10&q=101", "q"),
        ("w=10&q=high", "q"),
        ("w=10&bg=fff", "bg"),
        ("w=10&bg=gggggg", "bg"),
        ("w=10&bg=red", "bg"),
        ("w=10&upscale=yes", "upscale"),
    ];
    for (query, param) in cases {
        match Params::from_query(query) {
            Err(ResizeError::InvalidParameter { param: p, message }) => {
                assert_eq!(p, param, "{query}: {message}");
                assert!(message.contains(param), "{query}: {message}");
            }
            other => panic!("{query}: {other:?}"),
        }
    }
    // An output that would be too large, computed from a single side.
    let tall = png(&DynamicImage::ImageRgb8(photo(10, 1000)));
    let e = resize(&tall, &q("w=1000&upscale=true"), LIMIT).unwrap_err();
    assert_eq!(e.status(), 400);
    assert!(e.to_string().contains("100000"), "{e}");
}

#[test]
fn good_parameters_parse() {
    let p = q("w=800&h=600&fit=cover&format=webp&q=70&bg=1a2B3c&upscale=true&other=x");
    assert_eq!(
        p,
        Params {
            width: Some(800),
            height: Some(600),
            fit: Fit::Cover,
            format: Some(Format::WebP),
            quality: 70,
            background: [0x1a, 0x2b, 0x3c],
            upscale: true,
        }
    );
    assert_eq!(
        q("h=5"),
        Params {
            height: Some(5),
            ..Params::default()
        }
    );
}

#[test]
fn garbage_is_422() {
    for body in [
        &b""[..],
        b"hello, world",
        b"\xFF\xD8\xFF\xE0 truncated jpeg",
        b"\x89PNG\r\n\x1a\n\0\0\0\x0dIHDR\0\0\0\x10\0\0\0\x10\x08\x02\0\0\0 broken",
        b"GIF89a\x10\0\x10\0",
        b"RIFF\0\0\0\0WEBPVP8 junk",
    ] {
        let e = resize(body, &q("w=10"), LIMIT).unwrap_err();
        assert_eq!(e.status(), 422, "{body:?}: {e}");
    }
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// A PNG signature and IHDR (valid CRC) claiming `w`×`h`, with no pixel data at all.
fn png_header(w: u32, h: u32) -> Vec<u8> {
    let mut chunk = b"IHDR".to_vec();
    chunk.extend_from_slice(&w.to_be_bytes());
    chunk.extend_from_slice(&h.to_be_bytes());
    chunk.extend_from_slice(&[8, 2, 0, 0, 0]); // 8-bit RGB, deflate, no filter, no interlace
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    png.extend_from_slice(&13u32.to_be_bytes());
    png.extend_from_slice(&chunk);
    png.extend_from_slice(&crc32(&chunk).to_be_bytes());
    png
}

#[test]
fn oversized_image_is_413_before_decoding() {
    assert_eq!(crc32(b"IEND"), 0xAE42_6082, "the CRC is PNG's");
    let started = Instant::now();
    let e = resize(&png_header(20_000, 20_000), &q("w=100"), LIMIT).unwrap_err();
    assert!(
        matches!(
            e,
            ResizeError::TooLarge {
                width: 20_000,
                height: 20_000,
                ..
            }
        ),
        "{e}"
    );
    assert_eq!(e.status(), 413);
    assert!(started.elapsed() < Duration::from_millis(100));
    // The limit is the function's setting; other formats are measured by header too.
    let small = jpeg(&photo(300, 200));
    let e = resize(&small, &q("w=100"), 50_000).unwrap_err();
    assert_eq!(e.status(), 413, "{e}");
    let e = resize(&gif(&photo(300, 200)), &q("w=100"), 50_000).unwrap_err();
    assert_eq!(e.status(), 413, "{e}");
    let e = resize(&webp(&photo(300, 200)), &q("w=100"), 50_000).unwrap_err();
    assert_eq!(e.status(), 413, "{e}");
    assert!(resize(&small, &q("w=100"), 60_000).is_ok());
}

#[test]
fn header_dimensions_match_the_decoders() {
    let img = photo(321, 123);
    for (input, kind) in [
        (jpeg(&img), header::Kind::Jpeg),
        (
            png(&DynamicImage::ImageRgb8(img.clone())),
            header::Kind::Png,
        ),
        (webp(&img), header::Kind::WebP),
        (gif(&img), header::Kind::Gif),
    ] {
        assert_eq!(header::sniff(&input), Some(kind));
        assert_eq!(
            header::dimensions(&input, kind),
            Some((321, 123)),
            "{kind:?}"
        );
    }
    // Lossy WebP (VP8): a minimal frame header as encoders write it.
    let mut vp8 = b"RIFF\0\0\0\0WEBPVP8 \0\0\0\0".to_vec();
    vp8.extend_from_slice(&[0x10, 0x02, 0x00, 0x9D, 0x01, 0x2A]);
    vp8.extend_from_slice(&640u16.to_le_bytes());
    vp8.extend_from_slice(&480u16.to_le_bytes());
    assert_eq!(
        header::dimensions(&vp8, header::Kind::WebP),
        Some((640, 480))
    );
}

async fn call(query: &str, body: Vec<u8>) -> Response {
    let f = ImageResize::new(LIMIT);
    f.call(Request {
        method: "POST".into(),
        query: query.into(),
        body: body.into(),
        ..Default::default()
    })
    .await
}

fn header_of<'r>(r: &'r Response, name: &str) -> Option<&'r str> {
    r.headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

#[tokio::test]
async fn the_function_answers_image_and_size_headers() {
    let r = call("w=50&h=50&fit=cover&format=webp", jpeg(&photo(200, 100))).await;
    assert_eq!(r.status, 200);
    assert_eq!(header_of(&r, "content-type"), Some("image/webp"));
    assert_eq!(header_of(&r, "x-image-width"), Some("50"));
    assert_eq!(header_of(&r, "x-image-height"), Some("50"));
    let img = image::load_from_memory(&r.body).unwrap();
    assert_eq!((img.width(), img.height()), (50, 50));
}

#[tokio::test]
async fn the_function_answers_errors_as_json() {
    for (query, body, status, code) in [
        (
            "w=10&fit=nope",
            jpeg(&photo(20, 20)),
            400,
            "invalid_parameter",
        ),
        ("w=10", b"not an image".to_vec(), 422, "invalid_image"),
        ("w=10", png_header(20_000, 20_000), 413, "image_too_large"),
    ] {
        let r = call(query, body).await;
        assert_eq!(r.status, status, "{query}");
        assert_eq!(header_of(&r, "content-type"), Some("application/json"));
        let text = std::str::from_utf8(&r.body).unwrap();
        assert!(
            text.starts_with(&format!("{{\"code\":\"{code}\",\"message\":\"")),
            "{text}"
        );
    }
    let r = call("w=10&fit=\"x\\", Vec::new()).await;
    let text = std::str::from_utf8(&r.body).unwrap();
    assert!(text.contains(r#"fit=\"\\\"x\\\\\" is"#), "escaped: {text}");
    assert!(text.ends_with(r#","parameter":"fit"}"#), "{text}");
}

/// A 4:2:0 JPEG of `photo`'s picture with fine detail in both colour and brightness.
fn jpeg_420(w: u32, h: u32) -> Vec<u8> {
    let base = photo(w, h);
    let img = RgbImage::from_fn(w, h, |x, y| {
        let wave = ((x as f64 / 7.0).sin() * (y as f64 / 5.0).cos() * 60.0) as i32;
        let base = base.get_pixel(x, y).0;
        Rgb(base.map(|c| (i32::from(c) + wave).clamp(0, 255) as u8))
    });
    let mut out = Vec::new();
    let mut e = jpeg_encoder::Encoder::new(&mut out, 95);
    e.set_sampling_factor(jpeg_encoder::SamplingFactor::F_2_2);
    e.encode(
        img.as_raw(),
        w as u16,
        h as u16,
        jpeg_encoder::ColorType::Rgb,
    )
    .unwrap();
    out
}

/// Mean and largest absolute difference between two images of one size, over RGB.
fn difference(a: &DynamicImage, b: &DynamicImage) -> (f64, u8) {
    let (a, b) = (a.to_rgb8(), b.to_rgb8());
    assert_eq!(a.dimensions(), b.dimensions());
    let diffs: Vec<u8> = a
        .as_raw()
        .iter()
        .zip(b.as_raw())
        .map(|(x, y)| x.abs_diff(*y))
        .collect();
    let mean = diffs.iter().map(|&d| f64::from(d)).sum::<f64>() / diffs.len() as f64;
    (mean, diffs.into_iter().max().unwrap())
}

#[test]
fn jpeg_to_jpeg_through_ycbcr_planes_is_the_rgb_result() {
    // Odd sizes, so chroma planes end in half-covered samples.
    let input = jpeg_420(1203, 907);
    let opened = decode::Opened::new(&input, header::Kind::Jpeg).unwrap();
    assert!(
        opened.decode_planes(2).is_some(),
        "the planes path is taken"
    );
    for (query, max_mean) in [
        ("w=291&q=97", 1.5),
        ("w=291&q=80", 3.0),
        ("w=151&h=151&fit=cover&q=97", 1.5),
    ] {
        let planar = run(&input, query);
        let rgb = run(&input, &format!("{query}&format=png"));
        assert_eq!(
            (planar.width, planar.height),
            (rgb.width, rgb.height),
            "{query}"
        );
        let (mean, max) = difference(&decoded(&planar), &decoded(&rgb));
        println!("{query}: mean {mean:.2}, max {max}");
        assert!(
            mean < max_mean,
            "{query}: mean difference {mean:.2}, max {max}"
        );
    }
}
