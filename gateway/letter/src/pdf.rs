//! The letter laid out on A4 and written as PDF 1.7: title, the header block of facts, the
//! outcome, then the other sections; text wrapped by the real Helvetica widths; a running
//! header on every page after the first (whose letter it is) and a footer on every page
//! (page N of M, the referral reference). At most [`MAX_PAGES`] pages.
//!
//! Layout is a single top-to-bottom pass with a cursor; the footers are added once the page
//! count is known. The file syntax is [`crate::pdf_file`]'s job.

use std::fmt::Write as _;

use crate::fonts::{self, Font};
use crate::pdf_file::{literal, num, text_string, PdfFile};
use crate::{Block, Cell, Letter, Section};

/// Pages a letter may take; beyond this it ends with a "... truncated" line. Real letters
/// take one or two pages; fifty is room for anything a scheme could reasonably send.
pub(crate) const MAX_PAGES: usize = 50;

const PAGE_W: f32 = 595.0;
const PAGE_H: f32 = 842.0;
const MARGIN_X: f32 = 56.0;
const CONTENT_W: f32 = PAGE_W - 2.0 * MARGIN_X;
/// Top of the content on the first page (the title starts here).
const TOP_FIRST: f32 = PAGE_H - 52.0;
/// Top of the content on later pages, below the running header.
const TOP_LATER: f32 = PAGE_H - 76.0;
/// The content stops above this, clear of the footer.
const BOTTOM: f32 = 64.0;
/// Space kept free on the last allowed page for the truncation line.
const TRUNCATION_RESERVE: f32 = 2.0 * LEAD;

const TITLE_SIZE: f32 = 20.0;
const BODY: f32 = 11.0;
const LEAD: f32 = 15.0;
const SECTION_SIZE: f32 = 14.0;
const SECTION_LEAD: f32 = 18.0;
const SUBHEADING_SIZE: f32 = 12.0;
const SMALL: f32 = 9.0;
const LABEL_W: f32 = 100.0;
const LIST_INDENT: f32 = 18.0;
const CELL_PAD_X: f32 = 5.0;
const CELL_PAD_Y: f32 = 3.0;
const PARA_GAP: f32 = 6.0;
const SECTION_GAP: f32 = 14.0;

/// Light grey for rules: visible on screen and on a mono laser printer, never mistaken for
/// text. All text is black.
const RULE_GREY: f32 = 0.72;
const RULE_DARK: f32 = 0.35;

/// Renders the letter to PDF bytes.
pub(crate) fn render(letter: &Letter) -> Vec<u8> {
    let pages = Composer::layout(letter);
    let page_count = pages.len();
    let mut file = PdfFile::new();
    let (catalog, tree, regular, bold, info) = (1, 2, 3, 4, 5);
    let page_num = |i: usize| 6 + 2 * i;
    file.object(
        catalog,
        &format!(
            "<< /Type /Catalog /Pages {tree} 0 R /Lang {} /ViewerPreferences << /DisplayDocTitle true >> >>",
            text_string("en-GB")
        ),
    );
    let kids: Vec<String> = (0..page_count)
        .map(|i| format!("{} 0 R", page_num(i)))
        .collect();
    file.object(
        tree,
        &format!(
            "<< /Type /Pages /Kids [{}] /Count {page_count} >>",
            kids.join(" ")
        ),
    );
    for (num, font) in [(regular, Font::Regular), (bold, Font::Bold)] {
        file.object(
            num,
            &format!(
                "<< /Type /Font /Subtype /Type1 /BaseFont /{} /Encoding /WinAnsiEncoding >>",
                font.base_font()
            ),
        );
    }
    let mut info_dict = format!(
        "<< /Title {} /Author {} /Subject {} /Creator (Signpost) /Producer (signpost-letter)",
        text_string(letter.document_title()),
        text_string(&letter.author),
        text_string(&letter.subject),
    );
    if let Some((y, m, d)) = letter.letter_date {
        // The letter's own date, not the clock: the same letter is always the same bytes.
        let _ = write!(info_dict, " /CreationDate (D:{y:04}{m:02}{d:02})");
    }
    info_dict.push_str(" >>");
    file.object(info, &info_dict);
    for (i, content) in pages.iter().enumerate() {
        let page = page_num(i);
        file.object(
            page,
            &format!(
                "<< /Type /Page /Parent {tree} 0 R /MediaBox [0 0 {} {}] /Resources << /Font << /F1 {regular} 0 R /F2 {bold} 0 R >> >> /Contents {} 0 R >>",
                num(PAGE_W),
                num(PAGE_H),
                page + 1
            ),
        );
        file.stream(page + 1, content.as_bytes());
    }
    file.finish(catalog, info)
}

/// Lays the letter out page by page. `y` is the top of the next line; a line is drawn with
/// its baseline one font size below it.
struct Composer<'a> {
    letter: &'a Letter,
    pages: Vec<String>,
    y: f32,
    /// Set once the page cap is hit: everything after is dropped.
    truncated: bool,
}

impl<'a> Composer<'a> {
    fn layout(letter: &'a Letter) -> Vec<String> {
        let mut c = Composer {
            letter,
            pages: vec![String::from("0 g\n")],
            y: TOP_FIRST,
            truncated: false,
        };
        c.first_page_head();
        for (i, section) in letter.sections.iter().enumerate() {
            if c.truncated {
                break;
            }
            c.section(section, i == 0);
        }
        c.footers();
        c.pages
    }

    // ----- drawing primitives -------------------------------------------------------------

    fn page(&mut self) -> &mut String {
        if self.pages.is_empty() {
            self.pages.push(String::new());
        }
        let last = self.pages.len() - 1;
        &mut self.pages[last]
    }

    fn text_at(&mut self, x: f32, baseline: f32, font: Font, size: f32, text: &str) {
        let op = text_op(x, baseline, font, size, text);
        self.page().push_str(&op);
    }

    fn rule(&mut self, x1: f32, x2: f32, y: f32, width: f32, grey: f32) {
        let op = rule_op(x1, x2, y, width, grey);
        self.page().push_str(&op);
    }

    fn bottom(&self) -> f32 {
        if self.pages.len() >= MAX_PAGES {
            BOTTOM + TRUNCATION_RESERVE
        } else {
            BOTTOM
        }
    }

    fn at_page_top(&self) -> bool {
        self.y >= TOP_LATER && self.pages.len() > 1
    }

    /// Makes room for `height` points, starting a page if needed. False once truncated.
    fn ensure(&mut self, height: f32) -> bool {
        if self.truncated {
            return false;
        }
        if self.y - height >= self.bottom() {
            return true;
        }
        self.new_page()
    }

    /// Starts the next page with its running header, or, at the cap, writes the truncation
    /// line into the space kept for it and stops the layout.
    fn new_page(&mut self) -> bool {
        if self.pages.len() >= MAX_PAGES {
            let baseline = (self.y - BODY - 4.0).max(BOTTOM);
            self.text_at(
                MARGIN_X,
                baseline,
                Font::Bold,
                BODY,
                "... truncated: this letter is longer than 50 pages; the scheme holds the full message.",
            );
            self.truncated = true;
            return false;
        }
        self.pages.push(String::from("0 g\n"));
        self.running_header();
        self.y = TOP_LATER;
        true
    }

    /// One wrapped line of text at `x`, moving the cursor down by `lead`.
    fn line(&mut self, x: f32, font: Font, size: f32, lead: f32, text: &str) -> bool {
        if !self.ensure(lead) {
            return false;
        }
        let baseline = self.y - size;
        self.text_at(x, baseline, font, size, text);
        self.y -= lead;
        true
    }

    // ----- page furniture -----------------------------------------------------------------

    /// On pages after the first: whose letter this is, so a loose page 2 is still
    /// attributable, with the letter's kind on the right.
    fn running_header(&mut self) {
        let right = "Social prescribing outcome (continued)";
        let right_w = fonts::width(Font::Regular, SMALL, right);
        let left = format!(
            "{} · NHS number {}",
            self.letter.patient_name, self.letter.nhs_number
        );
        let left = fonts::fit(Font::Bold, SMALL, &left, CONTENT_W - right_w - 12.0);
        let baseline = PAGE_H - 44.0;
        self.text_at(MARGIN_X, baseline, Font::Bold, SMALL, &left);
        self.text_at(
            PAGE_W - MARGIN_X - right_w,
            baseline,
            Font::Regular,
            SMALL,
            right,
        );
        self.rule(MARGIN_X, PAGE_W - MARGIN_X, baseline - 7.0, 0.5, RULE_GREY);
    }

    /// Every page: the referral reference (to trace the letter) and "Page N of M".
    fn footers(&mut self) {
        let total = self.pages.len();
        let reference = format!("Referral reference: {}", self.letter.reference);
        for i in 0..total {
            let page_label = format!("Page {} of {total}", i + 1);
            let page_w = fonts::width(Font::Regular, SMALL, &page_label);
            let left = fonts::fit(Font::Regular, SMALL, &reference, CONTENT_W - page_w - 12.0);
            let baseline = 36.0;
            let mut ops = rule_op(MARGIN_X, PAGE_W - MARGIN_X, baseline + 12.0, 0.5, RULE_GREY);
            ops.push_str(&text_op(MARGIN_X, baseline, Font::Regular, SMALL, &left));
            ops.push_str(&text_op(
                PAGE_W - MARGIN_X - page_w,
                baseline,
                Font::Regular,
                SMALL,
                &page_label,
            ));
            self.pages[i].push_str(&ops);
        }
    }

    // ----- the letter -----------------------------------------------------------------------

    /// Title, subject line and the header block of labelled facts.
    fn first_page_head(&mut self) {
        let title = self.letter.title().to_string();
        self.line(MARGIN_X, Font::Bold, TITLE_SIZE, 26.0, &title);
        let subject = fonts::fit(Font::Regular, 10.0, &self.letter.subject, CONTENT_W);
        self.line(MARGIN_X, Font::Regular, 10.0, 14.0, &subject);
        self.y -= 8.0;
        self.rule(MARGIN_X, PAGE_W - MARGIN_X, self.y, 1.0, RULE_DARK);
        self.y -= 6.0;
        let facts = self.letter.facts.clone();
        for fact in &facts {
            let value_font = if fact.label == "Status" {
                Font::Bold
            } else {
                Font::Regular
            };
            let lines = fonts::wrap(value_font, BODY, &fact.value, CONTENT_W - LABEL_W);
            for (i, line) in lines.iter().enumerate() {
                if !self.ensure(LEAD) {
                    return;
                }
                let baseline = self.y - BODY;
                if i == 0 {
                    self.text_at(MARGIN_X, baseline, Font::Bold, 10.0, fact.label);
                }
                self.text_at(MARGIN_X + LABEL_W, baseline, value_font, BODY, line);
                self.y -= LEAD;
            }
        }
        self.y -= 5.0;
        self.rule(MARGIN_X, PAGE_W - MARGIN_X, self.y, 1.0, RULE_DARK);
        self.y -= 8.0;
    }

    fn section(&mut self, section: &Section, first: bool) {
        if !first && !self.at_page_top() {
            self.y -= SECTION_GAP;
        }
        // Keep the heading with at least two lines of what follows.
        if !self.ensure(SECTION_LEAD + 6.0 + 2.0 * LEAD) {
            return;
        }
        let lines = fonts::wrap(Font::Bold, SECTION_SIZE, &section.title, CONTENT_W);
        for line in &lines {
            if !self.line(MARGIN_X, Font::Bold, SECTION_SIZE, SECTION_LEAD, line) {
                return;
            }
        }
        let (width, grey) = if section.is_outcome {
            (1.5, 0.0)
        } else {
            (0.5, RULE_GREY)
        };
        // Clear of the heading's descenders (g, y, brackets reach 0.21 em below the line).
        self.y -= 1.5;
        self.rule(MARGIN_X, PAGE_W - MARGIN_X, self.y, width, grey);
        self.y -= 5.0;
        for block in &section.blocks {
            if self.truncated {
                return;
            }
            match block {
                Block::Heading(text) => self.subheading(text),
                Block::Paragraph(text) => self.paragraph(text),
                Block::List { ordered, items } => self.list(*ordered, items),
                Block::Table(rows) => self.table(rows),
            }
        }
    }

    fn subheading(&mut self, text: &str) {
        self.y -= 4.0;
        if !self.ensure(LEAD + 2.0 * LEAD) {
            return;
        }
        for line in fonts::wrap(Font::Bold, SUBHEADING_SIZE, text, CONTENT_W) {
            if !self.line(MARGIN_X, Font::Bold, SUBHEADING_SIZE, LEAD + 1.0, &line) {
                return;
            }
        }
        self.y -= 2.0;
    }

    fn paragraph(&mut self, text: &str) {
        for line in fonts::wrap(Font::Regular, BODY, text, CONTENT_W) {
            if !self.line(MARGIN_X, Font::Regular, BODY, LEAD, &line) {
                return;
            }
        }
        self.y -= PARA_GAP;
    }

    fn list(&mut self, ordered: bool, items: &[String]) {
        // Numbers are right-aligned before the text; long lists need a wider indent for
        // "100." than for "9.". All digits are the same width in Helvetica.
        let indent = if ordered {
            let widest = fonts::width(Font::Regular, BODY, &format!("{}.", items.len()));
            LIST_INDENT.max(widest + 8.0)
        } else {
            LIST_INDENT
        };
        let text_x = MARGIN_X + indent;
        for (i, item) in items.iter().enumerate() {
            let lines = fonts::wrap(Font::Regular, BODY, item, CONTENT_W - indent);
            for (j, line) in lines.iter().enumerate() {
                if !self.ensure(LEAD) {
                    return;
                }
                let baseline = self.y - BODY;
                if j == 0 {
                    let marker = if ordered {
                        format!("{}.", i + 1)
                    } else {
                        "•".to_string()
                    };
                    let marker_w = fonts::width(Font::Regular, BODY, &marker);
                    let x = if ordered {
                        text_x - 5.0 - marker_w
                    } else {
                        MARGIN_X + 5.0
                    };
                    self.text_at(x, baseline, Font::Regular, BODY, &marker);
                }
                self.text_at(text_x, baseline, Font::Regular, BODY, line);
                self.y -= LEAD;
            }
            self.y -= 2.0;
        }
        self.y -= PARA_GAP - 2.0;
    }

    /// A table as aligned columns with light rules; header rows are bold, ruled darker and
    /// repeated at the top of a new page when the table breaks across pages.
    fn table(&mut self, rows: &[Vec<Cell>]) {
        let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
        if columns == 0 {
            return;
        }
        let font_of = |cell: &Cell| {
            if cell.header {
                Font::Bold
            } else {
                Font::Regular
            }
        };
        let mut natural = vec![2.0 * CELL_PAD_X; columns];
        let mut minimum = vec![2.0 * CELL_PAD_X; columns];
        for row in rows {
            for (c, cell) in row.iter().enumerate() {
                let font = font_of(cell);
                let widest_line = cell
                    .text
                    .split('\n')
                    .map(|l| fonts::width(font, BODY, l))
                    .fold(0.0, f32::max);
                let widest_word = cell
                    .text
                    .split_whitespace()
                    .map(|w| fonts::width(font, BODY, w))
                    .fold(0.0, f32::max);
                natural[c] = natural[c].max(widest_line + 2.0 * CELL_PAD_X);
                minimum[c] = minimum[c].max(widest_word + 2.0 * CELL_PAD_X);
            }
        }
        let widths = column_widths(&natural, &minimum, CONTENT_W);
        let mut xs = Vec::with_capacity(columns);
        let mut x = MARGIN_X;
        for w in &widths {
            xs.push(x);
            x += w;
        }
        let right = x.min(PAGE_W - MARGIN_X);
        let header_rows = rows
            .iter()
            .take_while(|r| r.iter().all(|c| c.header))
            .count();
        let wrapped: Vec<Vec<Vec<String>>> = rows
            .iter()
            .map(|row| {
                row.iter()
                    .enumerate()
                    .map(|(c, cell)| {
                        fonts::wrap(
                            font_of(cell),
                            BODY,
                            &cell.text,
                            widths[c] - 2.0 * CELL_PAD_X,
                        )
                    })
                    .collect()
            })
            .collect();
        let height = |r: usize| {
            let lines = wrapped[r].iter().map(Vec::len).max().unwrap_or(1).max(1);
            lines as f32 * LEAD + 2.0 * CELL_PAD_Y
        };
        let header_h: f32 = (0..header_rows).map(height).sum();
        let repeat_header = header_rows > 0 && header_h < (TOP_LATER - BOTTOM) / 3.0;
        // Keep the header rows with the first row of the body.
        let body_first = if rows.len() > header_rows {
            height(header_rows)
        } else {
            0.0
        };
        if !self.ensure((header_h + body_first).min(TOP_LATER - BOTTOM)) {
            return;
        }
        self.y -= 2.0;
        // A header row is underlined darker, which is rule enough; a table without one
        // gets a light rule on top so its first row reads as part of it.
        if header_rows == 0 {
            self.rule(MARGIN_X, right, self.y, 0.5, RULE_GREY);
        }
        for r in 0..rows.len() {
            let h = height(r);
            let fits_a_page = h <= TOP_LATER - BOTTOM - header_h;
            if fits_a_page && self.y - h < self.bottom() {
                if !self.new_page() {
                    return;
                }
                if !repeat_header || r < header_rows {
                    self.rule(MARGIN_X, right, self.y, 0.5, RULE_GREY);
                }
                if repeat_header && r >= header_rows {
                    for hr in 0..header_rows {
                        if !self.table_row(&rows[hr], &wrapped[hr], &xs, right, true) {
                            return;
                        }
                    }
                }
            }
            if !self.table_row(&rows[r], &wrapped[r], &xs, right, r < header_rows) {
                return;
            }
        }
        self.y -= PARA_GAP + 2.0;
    }

    /// One table row, drawn line by line so a row taller than a page still flows.
    fn table_row(
        &mut self,
        row: &[Cell],
        lines: &[Vec<String>],
        xs: &[f32],
        right: f32,
        header: bool,
    ) -> bool {
        let count = lines.iter().map(Vec::len).max().unwrap_or(1).max(1);
        self.y -= CELL_PAD_Y;
        for i in 0..count {
            if !self.ensure(LEAD) {
                return false;
            }
            let baseline = self.y - BODY;
            for (c, cell) in row.iter().enumerate() {
                if let Some(line) = lines.get(c).and_then(|l| l.get(i)) {
                    let font = if cell.header {
                        Font::Bold
                    } else {
                        Font::Regular
                    };
                    // The first column lines up with the body text; the others are padded
                    // away from their neighbour.
                    let pad = if c == 0 { 0.0 } else { CELL_PAD_X };
                    self.text_at(xs[c] + pad, baseline, font, BODY, line);
                }
            }
            self.y -= LEAD;
        }
        self.y -= CELL_PAD_Y;
        let (width, grey) = if header {
            (0.75, RULE_DARK)
        } else {
            (0.5, RULE_GREY)
        };
        self.rule(MARGIN_X, right, self.y, width, grey);
        true
    }
}

/// One line of text as a content-stream operation (nothing for empty text).
fn text_op(x: f32, baseline: f32, font: Font, size: f32, text: &str) -> String {
    if text.is_empty() {
        return String::new();
    }
    format!(
        "BT /{} {} Tf {} {} Td {} Tj ET\n",
        font.resource(),
        num(size),
        num(x),
        num(baseline),
        literal(&fonts::encode(text))
    )
}

/// A horizontal rule as a content-stream operation, in its own graphics state.
fn rule_op(x1: f32, x2: f32, y: f32, width: f32, grey: f32) -> String {
    format!(
        "q {} w {} G {} {} m {} {} l S Q\n",
        num(width),
        num(grey),
        num(x1),
        num(y),
        num(x2),
        num(y)
    )
}

/// Column widths within `total`, as browsers do it in spirit: natural widths when they fit;
/// else columns that need no more than a fair share (short labels, numbers) keep their
/// natural width so they never wrap, and the rest share what is left, each getting its
/// longest word plus a part of the spare space in proportion to how much more it would
/// like; when even the longest words do not fit, those are scaled down and words break.
fn column_widths(natural: &[f32], minimum: &[f32], total: f32) -> Vec<f32> {
    let natural_sum: f32 = natural.iter().sum();
    if natural_sum <= total {
        return natural.to_vec();
    }
    let mut widths: Vec<Option<f32>> = vec![None; natural.len()];
    let mut remaining = total;
    loop {
        let open: Vec<usize> = (0..natural.len())
            .filter(|&c| widths[c].is_none())
            .collect();
        if open.is_empty() {
            break;
        }
        let fair = remaining / open.len() as f32;
        let narrow: Vec<usize> = open.into_iter().filter(|&c| natural[c] <= fair).collect();
        if narrow.is_empty() {
            break;
        }
        for c in narrow {
            widths[c] = Some(natural[c]);
            remaining -= natural[c];
        }
    }
    let open: Vec<usize> = (0..natural.len())
        .filter(|&c| widths[c].is_none())
        .collect();
    let least = |c: usize| minimum[c].min(natural[c]);
    let minimum_sum: f32 = open.iter().map(|&c| least(c)).sum();
    let natural_open: f32 = open.iter().map(|&c| natural[c]).sum();
    for &c in &open {
        let w = if minimum_sum <= remaining {
            let wanted = natural_open - minimum_sum;
            let share = if wanted > 0.0 {
                (remaining - minimum_sum) * (natural[c] - least(c)) / wanted
            } else {
                0.0
            };
            least(c) + share
        } else {
            least(c) * remaining / minimum_sum.max(1.0)
        };
        widths[c] = Some(w);
    }
    widths.into_iter().map(|w| w.unwrap_or(0.0)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::LetterContext;
    use serde_json::json;

    /// A drawn line of text: its box in page space.
    #[derive(Debug)]
    struct Drawn {
        text: Vec<u8>,
        x0: f32,
        x1: f32,
        bottom: f32,
        top: f32,
    }

    /// Reads back the text operators this module writes.
    fn drawn(page: &str) -> Vec<Drawn> {
        let mut out = Vec::new();
        for line in page.lines().filter(|l| l.starts_with("BT /F")) {
            let mut parts = line.split(' ');
            let font = if parts.nth(1) == Some("/F2") {
                Font::Bold
            } else {
                Font::Regular
            };
            let size: f32 = parts.next().unwrap().parse().unwrap();
            parts.next();
            let x: f32 = parts.next().unwrap().parse().unwrap();
            let y: f32 = parts.next().unwrap().parse().unwrap();
            let literal = &line[line.find(" Td (").unwrap() + 5..line.rfind(") Tj ET").unwrap()];
            let mut text = Vec::new();
            let mut bytes = literal.bytes();
            while let Some(b) = bytes.next() {
                if b != b'\\' {
                    text.push(b);
                    continue;
                }
                let next = bytes.next().unwrap();
                if next.is_ascii_digit() {
                    let octal = [next, bytes.next().unwrap(), bytes.next().unwrap()];
                    let value =
                        u8::from_str_radix(std::str::from_utf8(&octal).unwrap(), 8).unwrap();
                    text.push(value);
                } else {
                    text.push(next);
                }
            }
            let units: u64 = text.iter().map(|&b| fonts::byte_units(font, b)).sum();
            out.push(Drawn {
                x0: x,
                x1: x + units as f32 * size / 1000.0,
                bottom: y - 0.21 * size,
                top: y + 0.72 * size,
                text,
            });
        }
        out
    }

    /// Every line inside the margins, and no two lines overlapping.
    fn assert_clean_layout(letter: &Letter) {
        let pages = Composer::layout(letter);
        for (p, page) in pages.iter().enumerate() {
            let lines = drawn(page);
            for (i, a) in lines.iter().enumerate() {
                let what = format!("page {}: {:?}", p + 1, String::from_utf8_lossy(&a.text));
                assert!(a.x0 >= MARGIN_X - 0.01, "{what} starts left of the margin");
                assert!(
                    a.x1 <= PAGE_W - MARGIN_X + 0.01,
                    "{what} runs past the margin"
                );
                assert!(
                    a.bottom >= 28.0 && a.top <= PAGE_H - 36.0,
                    "{what} is off the page"
                );
                for b in &lines[i + 1..] {
                    let apart =
                        a.x1 <= b.x0 || b.x1 <= a.x0 || a.top <= b.bottom || b.top <= a.bottom;
                    assert!(
                        apart,
                        "{what} overlaps {:?}",
                        String::from_utf8_lossy(&b.text)
                    );
                }
            }
        }
    }

    fn ctx() -> LetterContext {
        LetterContext {
            given_name: "Jane".into(),
            family_name: "Example".into(),
            nhs_number: "9434765919".into(),
            scheme_name: "Stand-in Community Link Workers".into(),
            status: "completed".into(),
            referral_id: "ref".into(),
            ..LetterContext::default()
        }
    }

    #[test]
    fn ordinary_letter_is_inside_the_margins_without_overlaps() {
        let comp = json!({"section": [
            {"title": "Outcome", "text": {"div": "<p>Seen three times; referral completed.</p>"}},
            {"title": "Needs", "text": {"div": "<ul><li>Loneliness</li><li>Money worries</li></ul><ol><li>a</li><li>b</li></ol>"}},
            {"title": "Wellbeing", "text": {"div": "<table><tr><th></th><th>Before</th><th>After</th></tr><tr><td>Life satisfaction</td><td>3</td><td>6</td></tr></table>"}},
        ]});
        assert_clean_layout(&Letter::new(&comp, &ctx()));
    }

    #[test]
    fn hostile_letter_is_inside_the_margins_without_overlaps() {
        let word = "W".repeat(400);
        let cell = format!("<td>{word} {}</td>", "words that wrap ".repeat(20));
        let row = format!("<tr>{}</tr>", cell.repeat(8));
        let comp = json!({"section": [
            {"title": format!("Outcome {}", "very long title ".repeat(20)), "text": {"div": format!("<p>{word}</p><h2>{word}</h2>")}},
            {"title": "Wide", "text": {"div": format!("<table><tr><th>{word}</th><th>b</th></tr>{}</table>", row.repeat(3))}},
            {"title": "Tall cell", "text": {"div": format!("<table><tr><th>H</th></tr><tr><td>{}</td></tr></table>", "line<br/>".repeat(200))}},
            {"title": "List", "text": {"div": format!("<ol>{}</ol>", format!("<li>{word}</li>").repeat(120))}},
        ]});
        let mut context = ctx();
        context.given_name = "Bartholomew-Maximilian ".repeat(12);
        context.practice_name = "Practice ".repeat(30);
        context.referral_id = "R".repeat(300);
        assert_clean_layout(&Letter::new(&comp, &context));
    }

    #[test]
    fn columns_keep_natural_widths_when_they_fit() {
        assert_eq!(
            column_widths(&[50.0, 60.0], &[20.0, 30.0], 200.0),
            [50.0, 60.0]
        );
    }

    #[test]
    fn columns_share_spare_space_beyond_their_longest_word() {
        let w = column_widths(&[300.0, 120.0], &[50.0, 50.0], 200.0);
        assert!((w.iter().sum::<f32>() - 200.0).abs() < 0.01);
        assert!(w[0] > w[1] && w[1] >= 50.0);
    }

    #[test]
    fn narrow_columns_keep_their_natural_width() {
        // A label column, a long text column and a short status column.
        let w = column_widths(&[70.0, 600.0, 60.0], &[50.0, 80.0, 55.0], 483.0);
        assert_eq!(w[0], 70.0);
        assert_eq!(w[2], 60.0);
        assert!((w.iter().sum::<f32>() - 483.0).abs() < 0.01);
    }

    #[test]
    fn columns_scale_down_when_even_words_do_not_fit() {
        let w = column_widths(&[300.0, 300.0], &[200.0, 200.0], 200.0);
        assert!((w.iter().sum::<f32>() - 200.0).abs() < 0.01);
    }
}
