//! The built-in `image-resize` through the real platform: synchronous and asynchronous calls,
//! a resized image, an undecodable body.

use std::io::Cursor;
use std::time::Duration;

use fjord_tests::Platform;
use image::{ImageFormat, Rgb, RgbImage};
use serde_json::Value;

fn jpeg(w: u32, h: u32) -> Vec<u8> {
    let img = RgbImage::from_fn(w, h, |x, y| Rgb([(x % 256) as u8, (y % 256) as u8, 90]));
    let mut out = Vec::new();
    img.write_to(&mut Cursor::new(&mut out), ImageFormat::Jpeg)
        .unwrap();
    out
}

#[tokio::test]
async fn resizes_through_the_sync_and_async_routes_and_fails_garbage_with_422() {
    let mut p = Platform::start().await;
    let spec = p.deploy("thumbs", "image-resize").await;
    p.start_worker(&spec).await;

    let r = p
        .post("/function/thumbs?w=100&fit=cover")
        .header("Content-Type", "image/jpeg")
        .body(jpeg(640, 480))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "image/jpeg");
    assert_eq!(r.headers()["x-image-width"], "100");
    assert_eq!(r.headers()["x-image-height"], "75");
    let img = image::load_from_memory_with_format(&r.bytes().await.unwrap(), ImageFormat::Jpeg)
        .expect("the answer is a JPEG");
    assert_eq!((img.width(), img.height()), (100, 75));

    // A body that is no image: 422 with a JSON error, synchronously...
    let r = p
        .post("/function/thumbs?w=100")
        .body("certainly not a picture")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    assert_eq!(r.headers()["content-type"], "application/json");
    assert_eq!(r.json::<Value>().await.unwrap()["code"], "invalid_image");

    // ...and asynchronously: a final failure, not retried, with the function's answer kept.
    let r = p
        .post("/async-function/thumbs?w=100")
        .body("certainly not a picture")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let id = r.headers()["x-call-id"].to_str().unwrap().to_owned();
    let s = p.wait_final(&id, Duration::from_secs(20)).await;
    assert_eq!(s["status"], "failed", "{s}");
    assert_eq!(s["function_status"], 422, "{s}");
    assert_eq!(s["attempts"], 1, "{s}");
    let r = p
        .system(&format!("/system/invocations/{id}/result"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-function-status"], "422");
    assert_eq!(r.json::<Value>().await.unwrap()["code"], "invalid_image");

    // An async resize succeeds and its result is the image.
    let r = p
        .post("/async-function/thumbs?h=48&format=png")
        .body(jpeg(640, 480))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let id = r.headers()["x-call-id"].to_str().unwrap().to_owned();
    let s = p.wait_final(&id, Duration::from_secs(20)).await;
    assert_eq!(s["status"], "succeeded", "{s}");
    let r = p
        .system(&format!("/system/invocations/{id}/result"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "image/png");
    let img =
        image::load_from_memory_with_format(&r.bytes().await.unwrap(), ImageFormat::Png).unwrap();
    assert_eq!((img.width(), img.height()), (64, 48));
}
