//! The JSON document `pdf` renders, checked by hand from a `serde_json::Value` so that every
//! problem is reported with the JSON path of the value at fault (`$.blocks[3].rows[2]`), and
//! the checked model ([`Document`]) that layout works from. Strings are borrowed from the
//! parsed JSON; images are decoded here, so a broken picture is a 400 with its path too.
//!
//! Lengths in the JSON are millimetres; the model holds PDF points.

use std::borrow::Cow;
use std::fmt;

use base64::Engine;
use serde_json::{Map, Value};

use super::image::{self, Image};

/// Points per millimetre.
pub const MM: f32 = 72.0 / 25.4;

const DEFAULT_MARGIN_MM: f32 = 20.0;
/// The smallest content box (between the margins) a document may leave, in mm.
const MIN_CONTENT_MM: f32 = 30.0;

/// Why a body could not be rendered.
#[derive(Debug, thiserror::Error)]
pub enum DocumentError {
    /// The body is not JSON at all.
    #[error("the body is not valid JSON: {message}")]
    Json {
        message: String,
        line: usize,
        column: usize,
    },
    /// JSON, but not a document this function renders; `message` starts with `path`.
    #[error("{message}")]
    Invalid { path: String, message: String },
    /// Writing failed for a reason that is not the document's fault.
    #[error("could not write the PDF: {0}")]
    Internal(String),
}

impl DocumentError {
    /// The HTTP status this error answers with.
    pub fn status(&self) -> u16 {
        match self {
            DocumentError::Json { .. } | DocumentError::Invalid { .. } => 400,
            DocumentError::Internal(_) => 500,
        }
    }

    /// The stable error code of the JSON answer.
    pub fn code(&self) -> &'static str {
        match self {
            DocumentError::Json { .. } => "invalid_json",
            DocumentError::Invalid { .. } => "invalid_document",
            DocumentError::Internal(_) => "internal",
        }
    }

    /// The JSON path of the value at fault (`$` for the whole body).
    pub fn path(&self) -> &str {
        match self {
            DocumentError::Invalid { path, .. } => path,
            _ => "$",
        }
    }

    /// The answer's body: `{"code", "message", "path"}` (plus `line`, `column` for bad JSON).
    pub fn to_json(&self) -> String {
        let mut v = serde_json::json!({
            "code": self.code(),
            "message": self.to_string(),
            "path": self.path(),
        });
        if let DocumentError::Json { line, column, .. } = self {
            v["line"] = (*line).into();
            v["column"] = (*column).into();
        }
        v.to_string()
    }
}

/// A checked document.
pub struct Document<'v> {
    pub title: Option<&'v str>,
    pub author: Option<&'v str>,
    /// Page width and height in points.
    pub page: (f32, f32),
    pub margins: Margins,
    pub header: Option<&'v str>,
    pub footer: Option<&'v str>,
    pub blocks: Vec<Block<'v>>,
}

/// Page margins in points.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Margins {
    pub top: f32,
    pub right: f32,
    pub bottom: f32,
    pub left: f32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Align {
    Left,
    Right,
    Center,
    Justified,
}

pub enum Block<'v> {
    Heading {
        level: u8,
        text: &'v str,
    },
    Paragraph {
        text: &'v str,
        align: Align,
    },
    Table(Table<'v>),
    Image {
        image: Image,
        /// Wanted width in points; `None` = the picture's size at 96 dpi. Layout shrinks it
        /// to the content box, keeping the aspect ratio.
        width: Option<f32>,
    },
    /// Vertical space in points.
    Spacer {
        height: f32,
    },
    PageBreak,
}

pub struct Table<'v> {
    pub columns: Vec<&'v str>,
    pub rows: Vec<Vec<Cow<'v, str>>>,
    /// Relative column widths (any positive numbers; the table always spans the content
    /// width). `None` = sized from the content.
    pub widths: Option<Vec<f32>>,
    pub align: Vec<Align>,
}

/// Parses the body; bad JSON is reported with serde's line and column.
pub fn parse_json(body: &[u8]) -> Result<Value> {
    serde_json::from_slice(body).map_err(|e| DocumentError::Json {
        message: e.to_string(),
        line: e.line(),
        column: e.column(),
    })
}

/// A JSON path, built on the stack while descending and formatted only for an error.
#[derive(Clone, Copy)]
enum Path<'a> {
    Root,
    Key(&'a Path<'a>, &'a str),
    Index(&'a Path<'a>, usize),
}

impl<'a> Path<'a> {
    fn key(&'a self, key: &'a str) -> Path<'a> {
        Path::Key(self, key)
    }

    fn index(&'a self, i: usize) -> Path<'a> {
        Path::Index(self, i)
    }

    fn error(&self, what: impl fmt::Display) -> DocumentError {
        let path = self.to_string();
        DocumentError::Invalid {
            message: format!("{path}: {what}"),
            path,
        }
    }
}

impl fmt::Display for Path<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Path::Root => f.write_str("$"),
            Path::Index(parent, i) => write!(f, "{parent}[{i}]"),
            Path::Key(parent, key) => {
                let plain = key
                    .chars()
                    .next()
                    .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                    && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
                if plain {
                    write!(f, "{parent}.{key}")
                } else {
                    write!(f, "{parent}[{}]", Value::from(*key))
                }
            }
        }
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

type Result<T> = std::result::Result<T, DocumentError>;

/// An object's fields, read by name; [`Fields::finish`] refuses the names nobody asked for.
struct Fields<'v, 'p> {
    map: &'v Map<String, Value>,
    path: &'p Path<'p>,
    known: &'static [&'static str],
}

impl<'v, 'p> Fields<'v, 'p> {
    fn new(v: &'v Value, path: &'p Path<'p>, known: &'static [&'static str]) -> Result<Self> {
        match v {
            Value::Object(map) => Ok(Fields { map, path, known }),
            other => Err(path.error(format_args!("expected an object, found {}", kind(other)))),
        }
    }

    /// A field that may be absent (or null).
    fn optional(&self, key: &'static str) -> Option<&'v Value> {
        self.map.get(key).filter(|v| !v.is_null())
    }

    fn required(&self, key: &'static str, what: &str) -> Result<&'v Value> {
        self.optional(key).ok_or_else(|| {
            self.path
                .key(key)
                .error(format_args!("missing; expected {what}"))
        })
    }

    fn finish(&self) -> Result<()> {
        match self.map.keys().find(|k| !self.known.contains(&k.as_str())) {
            None => Ok(()),
            Some(k) => Err(self.path.key(k).error(format_args!(
                "unknown field; expected one of {}",
                self.known.join(", ")
            ))),
        }
    }
}

fn string<'v>(v: &'v Value, path: &Path) -> Result<&'v str> {
    v.as_str()
        .ok_or_else(|| path.error(format_args!("expected a string, found {}", kind(v))))
}

fn optional_string<'v>(f: &Fields<'v, '_>, key: &'static str) -> Result<Option<&'v str>> {
    f.optional(key)
        .map(|v| string(v, &f.path.key(key)))
        .transpose()
}

/// A finite number at least `min`.
fn number(v: &Value, path: &Path, min: f64, what: &str) -> Result<f32> {
    match v.as_f64() {
        Some(n) if n.is_finite() && n >= min && n <= 1e6 => Ok(n as f32),
        Some(n) => Err(path.error(format_args!("{n} is out of range; expected {what}"))),
        None => Err(path.error(format_args!("expected {what}, found {}", kind(v)))),
    }
}

fn array<'v>(v: &'v Value, path: &Path) -> Result<&'v [Value]> {
    v.as_array()
        .map(Vec::as_slice)
        .ok_or_else(|| path.error(format_args!("expected an array, found {}", kind(v))))
}

fn one_of<T: Copy>(v: &Value, path: &Path, choices: &[(&str, T)]) -> Result<T> {
    let s = string(v, path)?;
    choices
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(s))
        .map(|(_, t)| *t)
        .ok_or_else(|| {
            let names: Vec<String> = choices.iter().map(|(n, _)| format!("{n:?}")).collect();
            path.error(format_args!("{s:?} is not one of {}", names.join(", ")))
        })
}

/// Checks a parsed body and builds the model; the first problem found is returned.
pub fn validate(v: &Value) -> Result<Document<'_>> {
    let root = Path::Root;
    let f = Fields::new(
        v,
        &root,
        &[
            "title",
            "author",
            "page_size",
            "margins",
            "header",
            "footer",
            "blocks",
        ],
    )?;
    f.finish()?;
    let page = match f.optional("page_size") {
        None => (595.2756, 841.8898),
        Some(v) => one_of(
            v,
            &root.key("page_size"),
            &[("A4", (595.2756, 841.8898)), ("Letter", (612.0, 792.0))],
        )?,
    };
    let margins = match f.optional("margins") {
        None => Margins {
            top: DEFAULT_MARGIN_MM * MM,
            right: DEFAULT_MARGIN_MM * MM,
            bottom: DEFAULT_MARGIN_MM * MM,
            left: DEFAULT_MARGIN_MM * MM,
        },
        Some(v) => margins(v, &root.key("margins"), page)?,
    };
    let blocks_path = root.key("blocks");
    let raw_blocks = array(f.required("blocks", "an array of blocks")?, &blocks_path)?;
    let content_width = page.0 - margins.left - margins.right;
    let mut blocks = Vec::with_capacity(raw_blocks.len());
    for (i, b) in raw_blocks.iter().enumerate() {
        blocks.push(block(b, &blocks_path.index(i), content_width)?);
    }
    Ok(Document {
        title: optional_string(&f, "title")?,
        author: optional_string(&f, "author")?,
        page,
        margins,
        header: optional_string(&f, "header")?,
        footer: optional_string(&f, "footer")?,
        blocks,
    })
}

fn margins(v: &Value, path: &Path, page: (f32, f32)) -> Result<Margins> {
    const WHAT: &str = "a margin in mm (a number, 0 or more)";
    let m = if v.is_number() {
        let all = number(v, path, 0.0, WHAT)? * MM;
        Margins {
            top: all,
            right: all,
            bottom: all,
            left: all,
        }
    } else if v.is_object() {
        let f = Fields::new(v, path, &["top", "right", "bottom", "left"])?;
        f.finish()?;
        let side = |key: &'static str| -> Result<f32> {
            match f.optional(key) {
                None => Ok(DEFAULT_MARGIN_MM * MM),
                Some(v) => Ok(number(v, &path.key(key), 0.0, WHAT)? * MM),
            }
        };
        Margins {
            top: side("top")?,
            right: side("right")?,
            bottom: side("bottom")?,
            left: side("left")?,
        }
    } else {
        return Err(path.error(format_args!(
            "expected a number (mm, all sides) or an object {{top, right, bottom, left}}, found {}",
            kind(v)
        )));
    };
    let (w, h) = (page.0 - m.left - m.right, page.1 - m.top - m.bottom);
    if w < MIN_CONTENT_MM * MM || h < MIN_CONTENT_MM * MM {
        return Err(path.error(format_args!(
            "leave {:.0} × {:.0} mm between them; at least {MIN_CONTENT_MM} × {MIN_CONTENT_MM} mm are needed",
            w.max(0.0) / MM,
            h.max(0.0) / MM
        )));
    }
    Ok(m)
}

const BLOCK_TYPES: &str = "heading, paragraph, table, image, spacer, page_break";

fn block<'v>(v: &'v Value, path: &Path, content_width: f32) -> Result<Block<'v>> {
    let Value::Object(map) = v else {
        return Err(path.error(format_args!("expected a block object, found {}", kind(v))));
    };
    let type_path = path.key("type");
    let ty = match map.get("type") {
        None => {
            return Err(type_path.error(format_args!("missing; expected one of {BLOCK_TYPES}")));
        }
        Some(t) => string(t, &type_path)?,
    };
    let block = match ty {
        "heading" => {
            let f = Fields::new(v, path, &["type", "text", "level"])?;
            f.finish()?;
            let level = match f.optional("level") {
                None => 1,
                Some(l) => match l.as_u64() {
                    Some(n @ 1..=3) => n as u8,
                    _ => {
                        return Err(path.key("level").error(format_args!(
                            "{l} is not a heading level; expected 1, 2 or 3"
                        )));
                    }
                },
            };
            Block::Heading {
                level,
                text: text(&f, path)?,
            }
        }
        "paragraph" => {
            let f = Fields::new(v, path, &["type", "text", "align"])?;
            f.finish()?;
            let align = match f.optional("align") {
                None => Align::Left,
                Some(a) => one_of(
                    a,
                    &path.key("align"),
                    &[
                        ("left", Align::Left),
                        ("justified", Align::Justified),
                        ("justify", Align::Justified),
                        ("right", Align::Right),
                        ("center", Align::Center),
                    ],
                )?,
            };
            Block::Paragraph {
                text: text(&f, path)?,
                align,
            }
        }
        "table" => Block::Table(table(v, path)?),
        "image" => {
            let f = Fields::new(v, path, &["type", "data", "width"])?;
            f.finish()?;
            let data_path = path.key("data");
            let data = string(
                f.required("data", "a base64-encoded PNG or JPEG")?,
                &data_path,
            )?;
            let bytes = decode_base64(data).map_err(|e| data_path.error(e))?;
            let image = image::decode(bytes).map_err(|e| data_path.error(e))?;
            let width = match f.optional("width") {
                None => None,
                Some(w) => {
                    let mm = number(w, &path.key("width"), 0.0, "a width in mm")?;
                    if mm <= 0.0 {
                        return Err(path.key("width").error("must be more than 0 mm"));
                    }
                    Some((mm * MM).min(content_width))
                }
            };
            Block::Image { image, width }
        }
        "spacer" => {
            let f = Fields::new(v, path, &["type", "height"])?;
            f.finish()?;
            let h = f.required("height", "a height in mm")?;
            Block::Spacer {
                height: number(h, &path.key("height"), 0.0, "a height in mm (0 or more)")? * MM,
            }
        }
        "page_break" => {
            Fields::new(v, path, &["type"])?.finish()?;
            Block::PageBreak
        }
        other => {
            return Err(type_path.error(format_args!(
                "unknown block type {other:?}; expected one of {BLOCK_TYPES}"
            )));
        }
    };
    Ok(block)
}

fn text<'v>(f: &Fields<'v, '_>, path: &Path) -> Result<&'v str> {
    string(f.required("text", "a string")?, &path.key("text"))
}

/// Standard base64 (padding optional, line breaks allowed), optionally as a `data:` URI.
fn decode_base64(data: &str) -> std::result::Result<Vec<u8>, String> {
    let data = match data.strip_prefix("data:") {
        Some(uri) => match uri.split_once(";base64,") {
            Some((_, b64)) => b64,
            None => return Err("is a data: URI that is not base64".into()),
        },
        None => data,
    };
    let engine = base64::engine::GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        base64::engine::GeneralPurposeConfig::new()
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
    );
    let result = if data.bytes().any(|b| b.is_ascii_whitespace()) {
        let compact: Vec<u8> = data.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
        engine.decode(compact)
    } else {
        engine.decode(data)
    };
    match result {
        Ok(bytes) if bytes.is_empty() => Err("is empty".into()),
        Ok(bytes) => Ok(bytes),
        Err(e) => Err(format!("is not valid base64: {e}")),
    }
}

fn table<'v>(v: &'v Value, path: &Path) -> Result<Table<'v>> {
    let f = Fields::new(v, path, &["type", "columns", "rows", "widths", "align"])?;
    f.finish()?;
    let columns_path = path.key("columns");
    let raw = array(
        f.required("columns", "an array of column labels")?,
        &columns_path,
    )?;
    if raw.is_empty() {
        return Err(columns_path.error("must name at least one column"));
    }
    let columns = raw
        .iter()
        .enumerate()
        .map(|(i, c)| string(c, &columns_path.index(i)))
        .collect::<Result<Vec<_>>>()?;
    let n = columns.len();

    let per_column = |key: &'static str| -> Result<Option<&'v [Value]>> {
        let Some(v) = f.optional(key) else {
            return Ok(None);
        };
        let p = path.key(key);
        let a = array(v, &p)?;
        if a.len() != n {
            return Err(p.error(format_args!(
                "has {} entries but the table has {n} columns",
                a.len()
            )));
        }
        Ok(Some(a))
    };
    let widths = match per_column("widths")? {
        None => None,
        Some(a) => {
            let p = path.key("widths");
            let mut ws = Vec::with_capacity(n);
            for (i, w) in a.iter().enumerate() {
                let wp = p.index(i);
                let w = number(w, &wp, 0.0, "a relative width (a number above 0)")?;
                if w <= 0.0 {
                    return Err(wp.error("must be above 0 (widths are relative)"));
                }
                ws.push(w);
            }
            Some(ws)
        }
    };
    let align = match per_column("align")? {
        None => vec![Align::Left; n],
        Some(a) => {
            let p = path.key("align");
            a.iter()
                .enumerate()
                .map(|(i, a)| {
                    one_of(
                        a,
                        &p.index(i),
                        &[
                            ("left", Align::Left),
                            ("right", Align::Right),
                            ("center", Align::Center),
                        ],
                    )
                })
                .collect::<Result<Vec<_>>>()?
        }
    };

    let rows_path = path.key("rows");
    let raw_rows = match f.optional("rows") {
        None => &[][..],
        Some(r) => array(r, &rows_path)?,
    };
    let mut rows = Vec::with_capacity(raw_rows.len());
    for (r, row) in raw_rows.iter().enumerate() {
        let row_path = rows_path.index(r);
        let cells = array(row, &row_path)?;
        if cells.len() != n {
            return Err(row_path.error(format_args!(
                "has {} cells but the table has {n} columns",
                cells.len()
            )));
        }
        let mut out = Vec::with_capacity(n);
        for (c, cell) in cells.iter().enumerate() {
            out.push(match cell {
                Value::String(s) => Cow::Borrowed(s.as_str()),
                Value::Number(x) => Cow::Owned(x.to_string()),
                other => {
                    return Err(row_path.index(c).error(format_args!(
                        "expected a string or a number, found {}",
                        kind(other)
                    )));
                }
            });
        }
        rows.push(out);
    }
    Ok(Table {
        columns,
        rows,
        widths,
        align,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path_of(json: &str) -> String {
        let v = parse_json(json.as_bytes()).unwrap();
        match validate(&v) {
            Ok(_) => panic!("{json} was accepted"),
            Err(e) => {
                assert!(e.to_string().starts_with(e.path()), "{e}");
                e.path().to_owned()
            }
        }
    }

    #[test]
    fn paths_name_the_value_at_fault() {
        assert_eq!(path_of(r#"[]"#), "$");
        assert_eq!(path_of(r#"{}"#), "$.blocks");
        assert_eq!(path_of(r#"{"blocks":[],"colour":1}"#), "$.colour");
        assert_eq!(path_of(r#"{"blocks":[],"my key":1}"#), r#"$["my key"]"#);
        assert_eq!(path_of(r#"{"blocks":[],"page_size":"A5"}"#), "$.page_size");
        assert_eq!(
            path_of(r#"{"blocks":[],"margins":{"top":"x"}}"#),
            "$.margins.top"
        );
        assert_eq!(path_of(r#"{"blocks":[],"margins":200}"#), "$.margins");
        assert_eq!(path_of(r#"{"blocks":[],"title":3}"#), "$.title");
        assert_eq!(path_of(r#"{"blocks":[1]}"#), "$.blocks[0]");
        assert_eq!(path_of(r#"{"blocks":[{}]}"#), "$.blocks[0].type");
        assert_eq!(
            path_of(r#"{"blocks":[{"type":"quote"}]}"#),
            "$.blocks[0].type"
        );
        assert_eq!(
            path_of(r#"{"blocks":[{"type":"paragraph"}]}"#),
            "$.blocks[0].text"
        );
        assert_eq!(
            path_of(r#"{"blocks":[{"type":"heading","text":"a","level":4}]}"#),
            "$.blocks[0].level"
        );
        assert_eq!(
            path_of(r#"{"blocks":[{"type":"spacer","height":-1}]}"#),
            "$.blocks[0].height"
        );
        let table = r#"{"blocks":[{"type":"page_break"},{"type":"table","columns":["a","b"],"rows":[["1","2"],[3,4],["x"]]}]}"#;
        assert_eq!(path_of(table), "$.blocks[1].rows[2]");
        assert_eq!(
            path_of(r#"{"blocks":[{"type":"table","columns":["a"],"rows":[[null]]}]}"#),
            "$.blocks[0].rows[0][0]"
        );
        assert_eq!(
            path_of(r#"{"blocks":[{"type":"table","columns":["a"],"align":["middle"]}]}"#),
            "$.blocks[0].align[0]"
        );
        assert_eq!(
            path_of(r#"{"blocks":[{"type":"table","columns":["a"],"widths":[1,2]}]}"#),
            "$.blocks[0].widths"
        );
        assert_eq!(
            path_of(r#"{"blocks":[{"type":"image","data":"@@@"}]}"#),
            "$.blocks[0].data"
        );
        assert_eq!(
            path_of(r#"{"blocks":[{"type":"image","data":"aGVsbG8="}]}"#),
            "$.blocks[0].data"
        );
    }

    #[test]
    fn bad_json_has_a_position() {
        let e = parse_json(b"{\n  \"blocks\": [,]\n}").unwrap_err();
        let DocumentError::Json { line, column, .. } = e else {
            panic!("{e}")
        };
        assert_eq!((line, column), (2, 14));
    }

    #[test]
    fn defaults_and_units() {
        let v = parse_json(
            br#"{"page_size":"letter","margins":{"left":10},"blocks":[{"type":"spacer","height":10}]}"#,
        )
        .unwrap();
        let d = validate(&v).unwrap();
        assert_eq!(d.page, (612.0, 792.0));
        assert!((d.margins.left - 28.346).abs() < 0.01);
        assert!((d.margins.top - 56.69).abs() < 0.01);
        assert!(matches!(d.blocks[0], Block::Spacer { height } if (height - 28.346).abs() < 0.01));
    }
}
