//! The query parameters of `image-resize`, parsed once into [`Params`]; every malformed value is
//! an [`ResizeError::InvalidParameter`] naming its parameter.

use super::ResizeError;

/// The largest `w` or `h` (also the largest computed output side): WebP's limit, below JPEG's.
pub const MAX_SIDE: u32 = 16_383;

/// How the image fits the `w`×`h` box.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Fit {
    /// Fills the box exactly, cropping what overflows (centred).
    Cover,
    /// Fits inside the box, then pads it to exactly `w`×`h` with `bg`.
    Contain,
    /// Stretches to exactly `w`×`h`, ignoring the aspect ratio.
    Fill,
    /// Fits inside the box; the output may be smaller than the box on one side.
    #[default]
    Inside,
}

/// The encoding of the output.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Jpeg,
    Png,
    WebP,
}

impl Format {
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Jpeg => "image/jpeg",
            Format::Png => "image/png",
            Format::WebP => "image/webp",
        }
    }
}

/// What the caller asked for. Build it with [`Params::from_query`], or by hand (the benchmark
/// does); at least one of `width` and `height` must be set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Params {
    pub width: Option<u32>,
    pub height: Option<u32>,
    pub fit: Fit,
    /// `None`: the input's format (PNG for a GIF).
    pub format: Option<Format>,
    /// JPEG quality, 1..=100. PNG and WebP output is lossless and ignores it.
    pub quality: u8,
    /// Padding colour for `contain`, and the backdrop when transparency is dropped (JPEG).
    pub background: [u8; 3],
    /// Whether an image smaller than the box may be enlarged.
    pub upscale: bool,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            width: None,
            height: None,
            fit: Fit::Inside,
            format: None,
            quality: 85,
            background: [255, 255, 255],
            upscale: false,
        }
    }
}

fn invalid(param: &'static str, message: String) -> ResizeError {
    ResizeError::InvalidParameter { param, message }
}

fn side(param: &'static str, v: &str) -> Result<u32, ResizeError> {
    match v.parse::<u32>() {
        Ok(n) if (1..=MAX_SIDE).contains(&n) => Ok(n),
        _ => Err(invalid(
            param,
            format!("{param}={v:?} is not a whole number of pixels in 1..={MAX_SIDE}"),
        )),
    }
}

fn hex_colour(v: &str) -> Option<[u8; 3]> {
    let v = v.strip_prefix('#').unwrap_or(v);
    if v.len() != 6 || !v.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let byte = |i: usize| u8::from_str_radix(&v[i..i + 2], 16).ok();
    Some([byte(0)?, byte(2)?, byte(4)?])
}

impl Params {
    /// Parses a raw query string (`w=800&fit=cover`, no `?`). The first occurrence of a
    /// parameter counts; unknown parameters are ignored. Values are taken as they are (no
    /// percent-decoding: none of the valid ones needs it).
    pub fn from_query(query: &str) -> Result<Params, ResizeError> {
        let get = |name: &str| {
            query
                .split('&')
                .filter_map(|kv| kv.split_once('=').or(Some((kv, ""))))
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v)
        };
        let mut p = Params::default();
        if let Some(v) = get("w") {
            p.width = Some(side("w", v)?);
        }
        if let Some(v) = get("h") {
            p.height = Some(side("h", v)?);
        }
        if p.width.is_none() && p.height.is_none() {
            return Err(invalid(
                "w",
                "w or h is required (give one to keep the aspect ratio)".to_owned(),
            ));
        }
        if let Some(v) = get("fit") {
            p.fit = match v {
                "cover" => Fit::Cover,
                "contain" => Fit::Contain,
                "fill" => Fit::Fill,
                "inside" => Fit::Inside,
                _ => {
                    return Err(invalid(
                        "fit",
                        format!("fit={v:?} is not one of cover, contain, fill, inside"),
                    ));
                }
            };
        }
        if let Some(v) = get("format") {
            p.format = Some(match v {
                "jpeg" | "jpg" => Format::Jpeg,
                "png" => Format::Png,
                "webp" => Format::WebP,
                _ => {
                    return Err(invalid(
                        "format",
                        format!("format={v:?} is not one of jpeg, png, webp"),
                    ));
                }
            });
        }
        if let Some(v) = get("q") {
            p.quality = match v.parse::<u8>() {
                Ok(q) if (1..=100).contains(&q) => q,
                _ => {
                    return Err(invalid("q", format!("q={v:?} is not a quality in 1..=100")));
                }
            };
        }
        if let Some(v) = get("bg") {
            p.background = hex_colour(v)
                .ok_or_else(|| invalid("bg", format!("bg={v:?} is not a colour written RRGGBB")))?;
        }
        if let Some(v) = get("upscale") {
            p.upscale = match v {
                "true" | "1" => true,
                "false" | "0" => false,
                _ => {
                    return Err(invalid(
                        "upscale",
                        format!("upscale={v:?} is not true or false"),
                    ));
                }
            };
        }
        Ok(p)
    }
}
