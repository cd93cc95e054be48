//! The two embedded faces (DejaVu Sans and DejaVu Sans Bold, `functions/fonts/`, licence in
//! `LICENSE-DejaVu.txt` there), their metrics parsed once per process, and the subsetting that
//! puts only the glyphs a document uses into its PDF.
//!
//! Layout measures text through [`Font::glyph`]; the writer asks [`GlyphSet`] which glyphs were
//! used and [`Font::subset`] for the font program that holds exactly those.

use std::collections::HashMap;
use std::sync::LazyLock;

static REGULAR: &[u8] = include_bytes!("../../fonts/DejaVuSans.ttf");
static BOLD: &[u8] = include_bytes!("../../fonts/DejaVuSans-Bold.ttf");

/// Which of the embedded faces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FontId {
    Regular = 0,
    Bold = 1,
}

impl FontId {
    pub const ALL: [FontId; 2] = [FontId::Regular, FontId::Bold];

    pub fn font(self) -> &'static Font {
        &FONTS[self as usize]
    }
}

/// Both faces, parsed on first use (about a millisecond) and kept for the process.
static FONTS: LazyLock<[Font; 2]> = LazyLock::new(|| {
    [
        Font::parse(REGULAR, "DejaVuSans"),
        Font::parse(BOLD, "DejaVuSans-Bold"),
    ]
});

/// Parses the fonts now rather than in the first request (for benchmarks and warm-up).
pub fn preload() {
    LazyLock::force(&FONTS);
}

/// A glyph as layout needs it: its id in the full font and its advance in font units.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Glyph {
    pub id: u16,
    pub advance: u16,
}

/// One face's metrics, in font units unless said otherwise.
pub struct Font {
    pub data: &'static [u8],
    pub postscript_name: &'static str,
    pub units_per_em: f32,
    pub ascender: f32,
    pub descender: f32,
    pub cap_height: f32,
    pub bbox: [f32; 4],
    pub italic_angle: f32,
    pub weight: u16,
    pub num_glyphs: u16,
    /// Glyphs of the Basic Multilingual Plane, indexed by code point; id 0 = not in the font.
    bmp: Box<[Glyph]>,
    /// The few mapped code points above U+FFFF.
    astral: HashMap<u32, Glyph>,
    /// Advance of every glyph id, for the PDF's width array.
    advances: Box<[u16]>,
    /// What a character the font lacks is drawn with (U+FFFD where the font has it).
    pub replacement: (Glyph, char),
}

impl Font {
    fn parse(data: &'static [u8], postscript_name: &'static str) -> Font {
        let face = ttf_parser::Face::parse(data, 0).expect("embedded font parses");
        let num_glyphs = face.number_of_glyphs();
        let advances: Box<[u16]> = (0..num_glyphs)
            .map(|g| face.glyph_hor_advance(ttf_parser::GlyphId(g)).unwrap_or(0))
            .collect();
        let mut bmp = vec![Glyph::default(); 0x1_0000].into_boxed_slice();
        let mut astral = HashMap::new();
        if let Some(cmap) = face.tables().cmap {
            for sub in cmap.subtables.into_iter().filter(|s| s.is_unicode()) {
                sub.codepoints(|cp| {
                    let Some(id) = sub.glyph_index(cp) else {
                        return;
                    };
                    let glyph = Glyph {
                        id: id.0,
                        advance: advances.get(usize::from(id.0)).copied().unwrap_or(0),
                    };
                    match bmp.get_mut(cp as usize) {
                        Some(slot) if slot.id == 0 => *slot = glyph,
                        Some(_) => {}
                        None => {
                            astral.entry(cp).or_insert(glyph);
                        }
                    }
                });
            }
        }
        let replacement = match bmp[0xFFFD] {
            g if g.id != 0 => (g, '\u{FFFD}'),
            _ => (bmp[usize::from(b'?')], '?'),
        };
        let bbox = face.global_bounding_box();
        Font {
            data,
            postscript_name,
            units_per_em: f32::from(face.units_per_em()),
            ascender: f32::from(face.ascender()),
            descender: f32::from(face.descender()),
            cap_height: f32::from(face.capital_height().unwrap_or(face.ascender())),
            bbox: [
                f32::from(bbox.x_min),
                f32::from(bbox.y_min),
                f32::from(bbox.x_max),
                f32::from(bbox.y_max),
            ],
            italic_angle: face.italic_angle(),
            weight: face.weight().to_number(),
            num_glyphs,
            bmp,
            astral,
            advances,
            replacement,
        }
    }

    /// The glyph for `c`, or `None` when the font does not have it.
    #[inline]
    pub fn glyph(&self, c: char) -> Option<Glyph> {
        let g = match self.bmp.get(c as usize) {
            Some(g) => *g,
            None => self.astral.get(&(c as u32)).copied()?,
        };
        (g.id != 0).then_some(g)
    }

    /// Advance of glyph `id` in font units.
    pub fn advance(&self, id: u16) -> u16 {
        self.advances.get(usize::from(id)).copied().unwrap_or(0)
    }

    /// Points per font unit at `size` points.
    #[inline]
    pub fn scale(&self, size: f32) -> f32 {
        size / self.units_per_em
    }

    /// A font program with only the glyphs in `used` (plus `.notdef` and the components of
    /// composite glyphs), renumbered in the order of [`GlyphSet::new_ids`].
    pub fn subset(&self, used: &GlyphSet) -> Result<Vec<u8>, String> {
        let mut remapper = subsetter::GlyphRemapper::new();
        for (old, _) in used.iter() {
            remapper.remap(old);
        }
        subsetter::subset(self.data, 0, &remapper).map_err(|e| e.to_string())
    }
}

/// The glyphs of one face a document uses, each with the character it stands for (for the
/// PDF's `ToUnicode` map, which is what makes the text extractable).
pub struct GlyphSet {
    /// Indexed by glyph id; `'\0'` = unused.
    chars: Vec<char>,
}

impl GlyphSet {
    pub fn new(font: &Font) -> GlyphSet {
        GlyphSet {
            chars: vec!['\0'; usize::from(font.num_glyphs)],
        }
    }

    #[inline]
    pub fn insert(&mut self, id: u16, c: char) {
        if let Some(slot) = self.chars.get_mut(usize::from(id))
            && *slot == '\0'
        {
            *slot = c;
        }
    }

    pub fn is_empty(&self) -> bool {
        self.iter().next().is_none()
    }

    /// Used glyphs other than `.notdef`, by ascending id.
    pub fn iter(&self) -> impl Iterator<Item = (u16, char)> + '_ {
        self.chars
            .iter()
            .enumerate()
            .skip(1)
            .filter(|(_, c)| **c != '\0')
            .map(|(id, c)| (id as u16, *c))
    }

    /// Old glyph id → id in the subset (`.notdef` stays 0, used glyphs count up from 1 in
    /// ascending order of their old ids, as [`Font::subset`] numbers them).
    pub fn new_ids(&self) -> Vec<u16> {
        let mut map = vec![0u16; self.chars.len()];
        for (n, (old, _)) in self.iter().enumerate() {
            map[usize::from(old)] = n as u16 + 1;
        }
        map
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn norwegian_letters_and_metrics() {
        let f = FontId::Regular.font();
        for c in "æøåÆØÅ–€".chars() {
            assert!(f.glyph(c).is_some(), "{c} missing");
        }
        assert_eq!(f.units_per_em, 2048.0);
        assert!(f.glyph('\u{10FFFD}').is_none(), "plane 16 is private use");
        assert!(f.replacement.0.id != 0);
        let b = FontId::Bold.font();
        assert!(b.glyph('W').unwrap().advance > 0);
    }

    #[test]
    fn subset_is_small_and_numbered_as_announced() {
        let f = FontId::Regular.font();
        let mut used = GlyphSet::new(f);
        for c in "Blåbærsyltetøy".chars() {
            used.insert(f.glyph(c).unwrap().id, c);
        }
        let bytes = f.subset(&used).unwrap();
        assert!(bytes.len() < 40_000, "{} bytes", bytes.len());
        let sub = ttf_parser::Face::parse(&bytes, 0).unwrap();
        let ids = used.new_ids();
        let b = f.glyph('B').unwrap();
        assert_eq!(
            sub.glyph_hor_advance(ttf_parser::GlyphId(ids[usize::from(b.id)])),
            Some(b.advance)
        );
    }
}
