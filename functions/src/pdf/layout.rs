//! Line breaking, pagination and tables: turns a checked [`Document`] into pages of positioned
//! glyph runs, filled rectangles and placed images (PDF points, origin bottom-left), recording
//! which glyphs of each face were used so the writer can subset the fonts. Header and footer
//! are added last, once the page count for `{pages}` is known.
//!
//! Text is measured with the fonts' advance widths (no kerning or ligatures) and broken
//! greedily at spaces; a word wider than its line is broken between characters. Runs of
//! spaces collapse to one; `\n` starts a new line. Headings keep with what follows, a
//! paragraph does not leave a single line at the bottom of a page, and a table that continues
//! on the next page repeats its header row (a row taller than a page is split between lines).

use super::document::{Align, Block, Document, Table};
use super::fonts::{FontId, Glyph, GlyphSet};
use super::image::Image;

/// Everything the writer needs.
pub struct Layout<'d> {
    pub pages: Vec<Page>,
    /// Per face (indexed by `FontId as usize`).
    pub used: [GlyphSet; 2],
    /// Images in the order `PlacedImage::index` refers to.
    pub images: Vec<&'d Image>,
}

#[derive(Default)]
pub struct Page {
    pub fills: Vec<Fill>,
    pub images: Vec<PlacedImage>,
    pub runs: Vec<Run>,
}

/// One line of text: glyph ids of the full font, drawn from the baseline point (`x`, `y`).
pub struct Run {
    pub font: FontId,
    pub size: f32,
    pub x: f32,
    pub y: f32,
    pub gray: f32,
    pub glyphs: Vec<u16>,
    /// Extra advance after each space glyph, in points (justified lines).
    pub word_space: f32,
}

/// A filled rectangle (backgrounds and rules).
pub struct Fill {
    pub x: f32,
    pub y: f32,
    pub w: f32,
    pub h: f32,
    pub gray: f32,
}

pub struct PlacedImage {
    pub index: usize,
    pub x: f32,
    pub y: f32,
    pub w: f32,
    pub h: f32,
}

#[derive(Clone, Copy)]
struct Style {
    font: FontId,
    size: f32,
    /// Line height as a multiple of the size.
    leading: f32,
}

impl Style {
    fn line_height(self) -> f32 {
        self.size * self.leading
    }

    /// From the top of a line box down to its baseline (the glyphs' extent centred in the box).
    fn baseline(self) -> f32 {
        let f = self.font.font();
        let s = f.scale(self.size);
        (self.line_height() - (f.ascender - f.descender) * s) / 2.0 + f.ascender * s
    }
}

const BODY: Style = Style {
    font: FontId::Regular,
    size: 10.5,
    leading: 1.45,
};
const PARAGRAPH_AFTER: f32 = 6.0;
/// Per heading level: style, space before, space after (points).
const HEADINGS: [(Style, f32, f32); 3] = [
    (
        Style {
            font: FontId::Bold,
            size: 20.0,
            leading: 1.25,
        },
        14.0,
        6.0,
    ),
    (
        Style {
            font: FontId::Bold,
            size: 15.0,
            leading: 1.25,
        },
        12.0,
        5.0,
    ),
    (
        Style {
            font: FontId::Bold,
            size: 12.5,
            leading: 1.25,
        },
        10.0,
        4.0,
    ),
];
const CELL: Style = Style {
    font: FontId::Regular,
    size: 9.5,
    leading: 1.25,
};
const HEAD_CELL: Style = Style {
    font: FontId::Bold,
    ..CELL
};
const CELL_PAD_X: f32 = 4.0;
const CELL_PAD_Y: f32 = 2.0;
const HEADER_ROW_GRAY: f32 = 0.9;
const TABLE_BEFORE: f32 = 2.0;
const TABLE_AFTER: f32 = 10.0;
const IMAGE_AFTER: f32 = 8.0;
const MARGIN_TEXT: Style = Style {
    font: FontId::Regular,
    size: 8.5,
    leading: 1.3,
};
const MARGIN_TEXT_GRAY: f32 = 0.35;
/// Rounding slack when comparing heights.
const EPS: f32 = 0.01;

/// Text shaped once: glyphs of the words in order, and where each word is.
struct Shaped {
    font: FontId,
    glyphs: Vec<u16>,
    words: Vec<Word>,
    space: Glyph,
}

#[derive(Clone, Copy)]
struct Word {
    start: usize,
    end: usize,
    /// In font units.
    width: u32,
    /// The word starts a new line (`\n` before it).
    hard_break: bool,
}

impl Shaped {
    fn new(text: &str, font: FontId, used: &mut GlyphSet) -> Shaped {
        let f = font.font();
        let space = f.glyph(' ').unwrap_or(f.replacement.0);
        used.insert(space.id, ' ');
        let mut glyphs = Vec::with_capacity(text.len());
        let mut words = Vec::new();
        for (n, line) in text.split('\n').enumerate() {
            let mut first = true;
            for word in line.split([' ', '\t', '\r']).filter(|w| !w.is_empty()) {
                let start = glyphs.len();
                let mut width = 0;
                for c in word.chars().filter(|c| !c.is_control()) {
                    let (g, c) = match f.glyph(c) {
                        Some(g) => (g, c),
                        None => f.replacement,
                    };
                    used.insert(g.id, c);
                    glyphs.push(g.id);
                    width += u32::from(g.advance);
                }
                words.push(Word {
                    start,
                    end: glyphs.len(),
                    width,
                    hard_break: n > 0 && first,
                });
                first = false;
            }
            if first {
                words.push(Word {
                    start: glyphs.len(),
                    end: glyphs.len(),
                    width: 0,
                    hard_break: n > 0,
                });
            }
        }
        Shaped {
            font,
            glyphs,
            words,
            space,
        }
    }

    /// Width of the widest line if nothing were wrapped, and of the widest word (font units).
    fn natural_and_min_width(&self) -> (u32, u32) {
        let (mut natural, mut min, mut line) = (0, 0, 0);
        for (i, w) in self.words.iter().enumerate() {
            if w.hard_break || i == 0 {
                line = w.width;
            } else {
                line += u32::from(self.space.advance) + w.width;
            }
            natural = natural.max(line);
            min = min.max(w.width);
        }
        (natural, min)
    }

    /// Greedy line breaking into lines at most `max` points wide at `size`.
    fn wrap(&self, size: f32, max: f32) -> Vec<Line> {
        let f = self.font.font();
        let max = (max / f.scale(size)).max(1.0) as u32;
        let space = u32::from(self.space.advance);
        let mut lines = Vec::new();
        let mut cur = Line::default();
        let mut words_in_line = 0;
        for (i, w) in self.words.iter().enumerate() {
            let glyphs = &self.glyphs[w.start..w.end];
            if w.hard_break && i > 0 {
                cur.last = true;
                lines.push(std::mem::take(&mut cur));
                words_in_line = 0;
            }
            if words_in_line > 0 && cur.width + space + w.width <= max {
                cur.glyphs.push(self.space.id);
                cur.glyphs.extend_from_slice(glyphs);
                cur.width += space + w.width;
                cur.spaces += 1;
                words_in_line += 1;
                continue;
            }
            if words_in_line > 0 {
                lines.push(std::mem::take(&mut cur));
            }
            words_in_line = 1;
            if w.width <= max {
                cur.glyphs.extend_from_slice(glyphs);
                cur.width = w.width;
            } else {
                for &g in glyphs {
                    let adv = u32::from(f.advance(g));
                    if !cur.glyphs.is_empty() && cur.width + adv > max {
                        lines.push(std::mem::take(&mut cur));
                    }
                    cur.glyphs.push(g);
                    cur.width += adv;
                }
            }
        }
        cur.last = true;
        lines.push(cur);
        lines
    }
}

#[derive(Clone, Default)]
struct Line {
    glyphs: Vec<u16>,
    /// In font units.
    width: u32,
    spaces: u32,
    /// Ends a paragraph or a `\n` line: never justified.
    last: bool,
}

/// Lays out the document.
pub fn lay_out<'d>(doc: &'d Document<'_>) -> Layout<'d> {
    let m = doc.margins;
    let mut flow = Flow {
        left: m.left,
        width: doc.page.0 - m.left - m.right,
        top: doc.page.1 - m.top,
        bottom: m.bottom,
        y: doc.page.1 - m.top,
        pages: Vec::new(),
        page: Page::default(),
        has_content: false,
        used: FontId::ALL.map(|f| GlyphSet::new(f.font())),
        images: Vec::new(),
    };
    for (i, block) in doc.blocks.iter().enumerate() {
        match block {
            Block::Heading { level, text } => {
                let next = doc.blocks.get(i + 1);
                let keep = match next {
                    None | Some(Block::PageBreak) => 0.0,
                    Some(_) => 2.0 * BODY.line_height(),
                };
                flow.heading(usize::from(*level), text, keep);
            }
            Block::Paragraph { text, align } => flow.paragraph(text, *align),
            Block::Table(t) => flow.table(t),
            Block::Image { image, width } => flow.image(image, *width),
            Block::Spacer { height } => flow.spacer(*height),
            Block::PageBreak => {
                if flow.has_content {
                    flow.new_page();
                }
            }
        }
    }
    if flow.has_content || flow.pages.is_empty() {
        flow.new_page();
    }
    if doc.header.is_some() || doc.footer.is_some() {
        flow.margin_texts(doc);
    }
    Layout {
        pages: flow.pages,
        used: flow.used,
        images: flow.images,
    }
}

struct Flow<'d> {
    left: f32,
    width: f32,
    top: f32,
    bottom: f32,
    /// Top of the next thing on the current page.
    y: f32,
    pages: Vec<Page>,
    page: Page,
    has_content: bool,
    used: [GlyphSet; 2],
    images: Vec<&'d Image>,
}

impl<'d> Flow<'d> {
    fn new_page(&mut self) {
        self.pages.push(std::mem::take(&mut self.page));
        self.y = self.top;
        self.has_content = false;
    }

    fn room(&self) -> f32 {
        self.y - self.bottom
    }

    /// Starts a new page unless `h` fits on this one (or this one is still empty).
    fn ensure(&mut self, h: f32) {
        if h > self.room() + EPS && self.has_content {
            self.new_page();
        }
    }

    /// Vertical space between blocks; none at the top of a page.
    fn gap(&mut self, h: f32) {
        if self.has_content {
            self.y -= h;
        }
    }

    fn shape(&mut self, text: &str, font: FontId) -> Shaped {
        Shaped::new(text, font, &mut self.used[font as usize])
    }

    /// Draws `line` with its box top at `top`, aligned within [`x`, `x + width`].
    fn line_at(&mut self, line: Line, style: Style, top: f32, x: f32, width: f32, align: Align) {
        self.page
            .runs
            .extend(run(line, style, top, x, width, align));
    }

    /// Flows lines down the page, breaking pages between lines.
    fn lines(&mut self, lines: Vec<Line>, style: Style, align: Align) {
        let lh = style.line_height();
        for line in lines {
            self.ensure(lh);
            self.line_at(line, style, self.y, self.left, self.width, align);
            self.y -= lh;
            self.has_content = true;
        }
    }

    fn heading(&mut self, level: usize, text: &str, keep: f32) {
        let (style, before, after) = HEADINGS[level - 1];
        let shaped = self.shape(text, style.font);
        let lines = shaped.wrap(style.size, self.width);
        let h = lines.len() as f32 * style.line_height();
        if self.has_content {
            if before + h + keep > self.room() + EPS {
                self.new_page();
            } else {
                self.y -= before;
            }
        }
        self.lines(lines, style, Align::Left);
        self.gap(after);
    }

    fn paragraph(&mut self, text: &str, align: Align) {
        let shaped = self.shape(text, BODY.font);
        let lines = shaped.wrap(BODY.size, self.width);
        // No lone first line at the foot of a page.
        if lines.len() >= 2 {
            self.ensure(2.0 * BODY.line_height());
        }
        self.lines(lines, BODY, align);
        self.gap(PARAGRAPH_AFTER);
    }

    fn spacer(&mut self, height: f32) {
        if height > self.room() + EPS {
            if self.has_content {
                self.new_page();
            }
        } else {
            self.y -= height;
            self.has_content = true;
        }
    }

    fn image(&mut self, image: &'d Image, width: Option<f32>) {
        let natural = image.width as f32 * 0.75;
        let mut w = width.unwrap_or(natural).min(self.width);
        let mut h = w * image.height as f32 / image.width as f32;
        let max_h = self.top - self.bottom;
        if h > max_h {
            w *= max_h / h;
            h = max_h;
        }
        self.ensure(h);
        self.page.images.push(PlacedImage {
            index: self.images.len(),
            x: self.left,
            y: self.y - h,
            w,
            h,
        });
        self.images.push(image);
        self.y -= h;
        self.has_content = true;
        self.gap(IMAGE_AFTER);
    }

    fn table(&mut self, t: &Table<'_>) {
        let header: Vec<Shaped> = t
            .columns
            .iter()
            .map(|c| self.shape(c, HEAD_CELL.font))
            .collect();
        let body: Vec<Vec<Shaped>> = t
            .rows
            .iter()
            .map(|r| r.iter().map(|c| self.shape(c, CELL.font)).collect())
            .collect();
        let widths = self.column_widths(t, &header, &body);
        let mut xs = Vec::with_capacity(widths.len());
        let mut x = self.left;
        for w in &widths {
            xs.push(x);
            x += w;
        }
        let wrap_row = |cells: &[Shaped], style: Style| -> Vec<Vec<Line>> {
            cells
                .iter()
                .zip(&widths)
                .map(|(s, w)| s.wrap(style.size, w - 2.0 * CELL_PAD_X))
                .collect()
        };
        let header = wrap_row(&header, HEAD_CELL);
        let header_lines = header.iter().map(Vec::len).max().unwrap_or(1);
        let header_h = header_lines as f32 * HEAD_CELL.line_height() + 2.0 * CELL_PAD_Y;
        let lh = CELL.line_height();
        let geometry = Columns {
            xs: &xs,
            widths: &widths,
            align: &t.align,
        };

        self.gap(TABLE_BEFORE);
        // The header row and the first line of the first row stay together.
        let first = if t.rows.is_empty() {
            0.0
        } else {
            lh + 2.0 * CELL_PAD_Y
        };
        self.ensure(header_h + first);
        self.row(&geometry, header.clone(), header_h, true);
        let mut fresh = true;
        for cells in &body {
            let mut cells = wrap_row(cells, CELL);
            loop {
                let lines = cells.iter().map(Vec::len).max().unwrap_or(1);
                let h = lines as f32 * lh + 2.0 * CELL_PAD_Y;
                if h <= self.room() + EPS {
                    self.row(&geometry, cells, h, false);
                    fresh = false;
                    break;
                }
                let fit = ((self.room() - 2.0 * CELL_PAD_Y) / lh + EPS).floor();
                if fresh && fit >= 1.0 {
                    // Taller than a page: as many lines as fit here, the rest below.
                    let fit = fit as usize;
                    let rest: Vec<Vec<Line>> = cells
                        .iter_mut()
                        .map(|c| c.split_off(fit.min(c.len())))
                        .collect();
                    self.row(&geometry, cells, fit as f32 * lh + 2.0 * CELL_PAD_Y, false);
                    cells = rest;
                }
                self.new_page();
                self.row(&geometry, header.clone(), header_h, true);
                fresh = true;
            }
        }
        self.gap(TABLE_AFTER);
    }

    /// Draws one table row (`h` points tall) at the current position.
    fn row(&mut self, cols: &Columns<'_>, cells: Vec<Vec<Line>>, h: f32, header: bool) {
        let style = if header { HEAD_CELL } else { CELL };
        let top = self.y;
        let width: f32 = cols.widths.iter().sum();
        if header {
            self.page.fills.push(Fill {
                x: self.left,
                y: top - h,
                w: width,
                h,
                gray: HEADER_ROW_GRAY,
            });
        }
        let (rule, gray) = if header { (0.8, 0.3) } else { (0.4, 0.75) };
        self.page.fills.push(Fill {
            x: self.left,
            y: top - h - rule / 2.0,
            w: width,
            h: rule,
            gray,
        });
        for (i, lines) in cells.into_iter().enumerate() {
            let x = cols.xs[i] + CELL_PAD_X;
            let w = cols.widths[i] - 2.0 * CELL_PAD_X;
            for (k, line) in lines.into_iter().enumerate() {
                let line_top = top - CELL_PAD_Y - k as f32 * style.line_height();
                self.line_at(line, style, line_top, x, w, cols.align[i]);
            }
        }
        self.y -= h;
        self.has_content = true;
    }

    /// Column widths in points, spanning the content width: from `widths` (relative) when
    /// given, else from the content (each column gets at least its longest word when it can,
    /// and the rest of the room in proportion to how much more its text would like).
    fn column_widths(&self, t: &Table<'_>, header: &[Shaped], body: &[Vec<Shaped>]) -> Vec<f32> {
        if let Some(ws) = &t.widths {
            let sum: f32 = ws.iter().sum();
            return ws.iter().map(|w| self.width * w / sum).collect();
        }
        let n = header.len();
        let (mut desired, mut min) = (vec![0.0f32; n], vec![0.0f32; n]);
        let pad = 2.0 * CELL_PAD_X;
        for (row, style) in
            std::iter::once((header, HEAD_CELL)).chain(body.iter().map(|r| (r.as_slice(), CELL)))
        {
            let scale = style.font.font().scale(style.size);
            for (i, cell) in row.iter().enumerate() {
                let (nat, mn) = cell.natural_and_min_width();
                desired[i] = desired[i].max((nat as f32 * scale + pad).min(self.width));
                min[i] = min[i].max((mn as f32 * scale + pad).min(self.width));
            }
        }
        let sum_desired: f32 = desired.iter().sum();
        let sum_min: f32 = min.iter().sum();
        if sum_desired <= self.width {
            let extra = self.width - sum_desired;
            desired
                .iter()
                .map(|d| d + extra * d / sum_desired.max(EPS))
                .collect()
        } else if sum_min >= self.width {
            min.iter().map(|m| self.width * m / sum_min).collect()
        } else {
            let flexible = sum_desired - sum_min;
            desired
                .iter()
                .zip(&min)
                .map(|(d, m)| m + (self.width - sum_min) * (d - m) / flexible)
                .collect()
        }
    }

    /// Header and footer on every page, `{page}` and `{pages}` filled in, centred in the
    /// top and bottom margins.
    fn margin_texts(&mut self, doc: &Document<'_>) {
        let total = self.pages.len().to_string();
        let f = MARGIN_TEXT.font.font();
        let cap = f.cap_height * f.scale(MARGIN_TEXT.size);
        let (page_h, m) = (doc.page.1, doc.margins);
        for n in 0..self.pages.len() {
            let number = (n + 1).to_string();
            for (template, baseline) in [
                (doc.header, page_h - m.top / 2.0 - cap / 2.0),
                (doc.footer, m.bottom / 2.0 - cap / 2.0),
            ] {
                let Some(template) = template else { continue };
                let text = template
                    .replace("{page}", &number)
                    .replace("{pages}", &total);
                let shaped = self.shape(&text, MARGIN_TEXT.font);
                let lines = shaped.wrap(MARGIN_TEXT.size, self.width);
                for (k, line) in lines.into_iter().enumerate() {
                    let top =
                        baseline + MARGIN_TEXT.baseline() - k as f32 * MARGIN_TEXT.line_height();
                    let placed = run(line, MARGIN_TEXT, top, self.left, self.width, Align::Center);
                    self.pages[n].runs.extend(placed.map(|r| Run {
                        gray: MARGIN_TEXT_GRAY,
                        ..r
                    }));
                }
            }
        }
    }
}

/// A run for `line` with its box top at `top`, aligned within [`x`, `x + width`]; `None` for
/// an empty line.
fn run(line: Line, style: Style, top: f32, x: f32, width: f32, align: Align) -> Option<Run> {
    if line.glyphs.is_empty() {
        return None;
    }
    let scale = style.font.font().scale(style.size);
    let slack = (width - line.width as f32 * scale).max(0.0);
    let (dx, word_space) = match align {
        Align::Left => (0.0, 0.0),
        Align::Right => (slack, 0.0),
        Align::Center => (slack / 2.0, 0.0),
        Align::Justified if line.last || line.spaces == 0 => (0.0, 0.0),
        Align::Justified => (0.0, slack / line.spaces as f32),
    };
    Some(Run {
        font: style.font,
        size: style.size,
        x: x + dx,
        y: top - style.baseline(),
        gray: 0.0,
        glyphs: line.glyphs,
        word_space,
    })
}

/// Where a table's columns are.
struct Columns<'a> {
    xs: &'a [f32],
    widths: &'a [f32],
    align: &'a [Align],
}
