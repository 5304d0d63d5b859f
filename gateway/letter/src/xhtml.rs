//! A small, tolerant reader for the XHTML narrative FHIR carries in `text.div`, turning it
//! into the [`Block`]s the letter lays out: paragraphs, lists, tables and headings.
//!
//! It is not a validating parser. Schemes send what their systems generate, so the reader
//! accepts unclosed and misnested tags, unknown elements and attributes (ignored, their text
//! kept), stray `<` and `&`, and never panics. Work is linear in the input, the input read is
//! capped at [`MAX_INPUT_BYTES`], and the text kept is capped by the caller's budget.

use crate::{Block, Cell};

/// Bytes of one narrative read; the rest is dropped and reported as truncated.
pub const MAX_INPUT_BYTES: usize = 256 * 1024;

/// Cells kept per table row; further cells are joined into the last one, so nothing is lost
/// but a hostile row cannot make columns narrower than a word.
pub const MAX_COLUMNS: usize = 8;

/// The blocks read from one narrative.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Fragment {
    /// The blocks, in document order.
    pub blocks: Vec<Block>,
    /// Whether input or text was cut to stay within the limits.
    pub truncated: bool,
}

/// Reads `div` with no limit on the text kept beyond [`MAX_INPUT_BYTES`] of input.
pub fn read(div: &str) -> Vec<Block> {
    read_limited(div, usize::MAX).blocks
}

/// Reads `div`, keeping at most `max_chars` characters of text.
pub fn read_limited(div: &str, max_chars: usize) -> Fragment {
    let mut input = div;
    let mut truncated = false;
    if input.len() > MAX_INPUT_BYTES {
        let mut end = MAX_INPUT_BYTES;
        while !input.is_char_boundary(end) {
            end -= 1;
        }
        input = &input[..end];
        truncated = true;
    }
    let mut builder = Builder::new(max_chars);
    tokenize(input, &mut builder);
    let mut fragment = builder.finish();
    fragment.truncated |= truncated;
    fragment
}

/// Splits the input into text, start tags and end tags and feeds them to the builder.
///
/// A tag ends at the first `>` outside quotes, or just before a `<` outside quotes (a tag
/// never closed). A quote never closed falls back to the first `>` after the tag name. That
/// fallback rescans to the end of the input at most once per quote character, because no
/// such quote character follows it, so the whole stays linear.
fn tokenize(s: &str, builder: &mut Builder) {
    let b = s.as_bytes();
    let mut i = 0;
    let mut text_start = 0;
    while i < b.len() {
        if builder.truncated {
            return;
        }
        if b[i] != b'<' {
            i += 1;
            continue;
        }
        let next = b.get(i + 1).copied();
        let tag_like = matches!(next, Some(c) if c.is_ascii_alphabetic() || c == b'/' || c == b'!' || c == b'?');
        if !tag_like {
            i += 1;
            continue;
        }
        builder.text(&s[text_start..i], true);
        if s[i..].starts_with("<!--") {
            i = find(b, i + 4, b"-->").map_or(b.len(), |p| p + 3);
        } else if s[i..].starts_with("<![CDATA[") {
            let start = i + 9;
            let end = find(b, start, b"]]>").unwrap_or(b.len());
            builder.text(&s[start..end], false);
            i = (end + 3).min(b.len());
        } else if next == Some(b'!') || next == Some(b'?') {
            i = find(b, i, b">").map_or(b.len(), |p| p + 1);
        } else if next == Some(b'/') {
            let name = tag_name(b, i + 2);
            builder.end(&name);
            i = find(b, i, b">").map_or(b.len(), |p| p + 1);
        } else {
            let name = tag_name(b, i + 1);
            let (close, resume) = tag_end(b, i + 1);
            let self_closing = close > i + 1 && b[close - 1] == b'/';
            builder.start(&name, self_closing);
            i = resume;
        }
        text_start = i;
    }
    builder.text(&s[text_start.min(s.len())..], true);
}

/// Where a start tag beginning at `from` ends: the index of its `>` (or where it was cut
/// off) and where reading resumes.
fn tag_end(b: &[u8], from: usize) -> (usize, usize) {
    let mut quote: Option<u8> = None;
    let mut k = from;
    while k < b.len() {
        let c = b[k];
        match quote {
            None if c == b'"' || c == b'\'' => quote = Some(c),
            None if c == b'>' => return (k, k + 1),
            None if c == b'<' => return (k, k),
            None => {}
            Some(q) if c == q => quote = None,
            Some(_) => {}
        }
        k += 1;
    }
    match b[from..].iter().position(|&x| x == b'>') {
        Some(p) => (from + p, from + p + 1),
        None => (b.len(), b.len()),
    }
}

/// The element name at `from`, lower-cased, without a namespace prefix (`xhtml:p` is `p`).
/// Names are short; a long one is cut, which makes it unknown and so ignored.
fn tag_name(b: &[u8], from: usize) -> String {
    let mut name = String::new();
    for &c in b.iter().skip(from) {
        if c == b':' {
            name.clear();
            continue;
        }
        if !(c.is_ascii_alphanumeric() || c == b'-' || c == b'_') || name.len() >= 16 {
            break;
        }
        name.push(char::from(c.to_ascii_lowercase()));
    }
    name
}

fn find(b: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    if from >= b.len() {
        return None;
    }
    b[from..]
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|p| p + from)
}

/// Decodes the character reference starting at `&` in `s`: the character and the bytes
/// consumed, or `None` to keep the `&` as written.
fn entity(s: &str) -> Option<(char, usize)> {
    let end = s.bytes().take(34).position(|c| c == b';')?;
    let name = &s[1..end];
    let c = if let Some(num) = name.strip_prefix('#') {
        let value = if let Some(hex) = num.strip_prefix(['x', 'X']) {
            parse_radix(hex, 16)?
        } else {
            parse_radix(num, 10)?
        };
        match char::from_u32(value) {
            Some('\0') | None => '\u{FFFD}',
            Some(c) => c,
        }
    } else {
        match name {
            "amp" => '&',
            "lt" => '<',
            "gt" => '>',
            "quot" => '"',
            "apos" => '\'',
            "nbsp" => '\u{A0}',
            "pound" => '£',
            "euro" => '€',
            "ndash" => '–',
            "mdash" => '—',
            "lsquo" => '‘',
            "rsquo" => '’',
            "ldquo" => '“',
            "rdquo" => '”',
            "bull" => '•',
            "hellip" => '…',
            "copy" => '©',
            "deg" => '°',
            "eacute" => 'é',
            "frac12" => '½',
            "middot" => '·',
            "times" => '×',
            _ => return None,
        }
    };
    Some((c, end + 1))
}

fn parse_radix(digits: &str, radix: u32) -> Option<u32> {
    if digits.is_empty() || digits.len() > 8 {
        return None;
    }
    u32::from_str_radix(digits, radix).ok()
}

/// Inline text being gathered for one block: whitespace collapsed as HTML does, `<br>` kept
/// as `\n`.
#[derive(Default)]
struct TextBuf {
    text: String,
    space: bool,
}

impl TextBuf {
    fn push(&mut self, c: char) {
        if c.is_whitespace() {
            self.space = true;
            return;
        }
        if self.space && !self.text.is_empty() && !self.text.ends_with('\n') {
            self.text.push(' ');
        }
        self.space = false;
        self.text.push(c);
    }

    fn push_str(&mut self, s: &str) {
        s.chars().for_each(|c| self.push(c));
    }

    /// A line break; at most one blank line in a row.
    fn newline(&mut self) {
        self.text.truncate(self.text.trim_end_matches(' ').len());
        if !self.text.is_empty() && !self.text.ends_with("\n\n") {
            self.text.push('\n');
        }
        self.space = false;
    }

    fn take(&mut self) -> String {
        let out = self.text.trim_matches([' ', '\n']).to_string();
        self.text.clear();
        self.space = false;
        out
    }

    fn is_blank(&self) -> bool {
        self.text.trim_matches([' ', '\n']).is_empty()
    }
}

struct ListState {
    ordered: bool,
    depth: u32,
    items: Vec<String>,
    item: TextBuf,
}

struct TableState {
    depth: u32,
    rows: Vec<Vec<Cell>>,
    row: Vec<Cell>,
    cell: Option<(TextBuf, bool)>,
    /// Text inside the table but outside any cell (a caption, or stray text): shown before it.
    preamble: TextBuf,
}

/// Builds blocks from the token stream. Flat state rather than a tree: the open paragraph,
/// heading, list and table, with nesting counted, so misnesting can confuse the grouping of
/// some text but never loses it and never recurses.
struct Builder {
    blocks: Vec<Block>,
    para: TextBuf,
    heading: Option<TextBuf>,
    list: Option<ListState>,
    table: Option<TableState>,
    /// Inside `script` or `style`, whose content is not narrative.
    skip: Option<String>,
    budget: usize,
    truncated: bool,
}

const BLOCK_ELEMENTS: &[&str] = &[
    "p",
    "div",
    "blockquote",
    "pre",
    "section",
    "article",
    "header",
    "footer",
    "main",
    "nav",
    "aside",
    "address",
    "figure",
    "figcaption",
    "dl",
    "dt",
    "dd",
    "hr",
    "center",
    "body",
];

fn is_heading(name: &str) -> bool {
    matches!(name, "h1" | "h2" | "h3" | "h4" | "h5" | "h6")
}

impl Builder {
    fn new(budget: usize) -> Builder {
        Builder {
            blocks: Vec::new(),
            para: TextBuf::default(),
            heading: None,
            list: None,
            table: None,
            skip: None,
            budget,
            truncated: false,
        }
    }

    /// Where inline text goes now: the innermost open cell, list item, heading or paragraph.
    fn sink(&mut self) -> &mut TextBuf {
        if let Some(table) = &mut self.table {
            return match &mut table.cell {
                Some((cell, _)) => cell,
                None => &mut table.preamble,
            };
        }
        if let Some(list) = &mut self.list {
            return &mut list.item;
        }
        if let Some(heading) = &mut self.heading {
            return heading;
        }
        &mut self.para
    }

    fn text(&mut self, raw: &str, decode: bool) {
        if self.skip.is_some() || raw.is_empty() {
            return;
        }
        let mut rest = raw;
        while let Some(c) = rest.chars().next() {
            let (c, len) = if decode && c == '&' {
                entity(rest).unwrap_or(('&', 1))
            } else {
                (c, c.len_utf8())
            };
            rest = &rest[len..];
            if c.is_control() && !c.is_whitespace() {
                continue;
            }
            if self.budget == 0 {
                self.truncated = true;
                return;
            }
            self.budget -= 1;
            self.sink().push(c);
        }
    }

    fn start(&mut self, name: &str, self_closing: bool) {
        if self.skip.is_some() {
            return;
        }
        match name {
            "script" | "style" | "head" | "title" if !self_closing => {
                self.skip = Some(name.to_string());
            }
            "br" => self.sink().newline(),
            n if BLOCK_ELEMENTS.contains(&n) => self.block_break(),
            n if is_heading(n) => {
                if self.table.is_some() || self.list.is_some() {
                    self.block_break();
                } else {
                    self.finish_heading();
                    self.flush_para();
                    self.heading = Some(TextBuf::default());
                }
            }
            "ul" | "ol" => {
                if self.table.is_some() {
                    self.block_break();
                } else if let Some(list) = &mut self.list {
                    list.depth = list.depth.saturating_add(1);
                    Self::finish_item(list);
                } else {
                    self.finish_heading();
                    self.flush_para();
                    self.list = Some(ListState {
                        ordered: name == "ol",
                        depth: 1,
                        items: Vec::new(),
                        item: TextBuf::default(),
                    });
                }
            }
            "li" => {
                if let Some(table) = &mut self.table {
                    if let Some((cell, _)) = &mut table.cell {
                        cell.newline();
                        cell.push_str("• ");
                    }
                } else if let Some(list) = &mut self.list {
                    Self::finish_item(list);
                } else {
                    self.finish_heading();
                    self.flush_para();
                    self.list = Some(ListState {
                        ordered: false,
                        depth: 1,
                        items: Vec::new(),
                        item: TextBuf::default(),
                    });
                }
            }
            "table" => {
                if let Some(table) = &mut self.table {
                    table.depth = table.depth.saturating_add(1);
                } else {
                    self.finish_heading();
                    self.close_list();
                    self.flush_para();
                    self.table = Some(TableState {
                        depth: 1,
                        rows: Vec::new(),
                        row: Vec::new(),
                        cell: None,
                        preamble: TextBuf::default(),
                    });
                }
            }
            "tr" => {
                if let Some(table) = &mut self.table {
                    Self::finish_cell(table);
                    Self::finish_row(table);
                }
            }
            "td" | "th" => {
                if let Some(table) = &mut self.table {
                    Self::finish_cell(table);
                    table.cell = Some((TextBuf::default(), name == "th"));
                } else {
                    self.sink().space = true;
                }
            }
            "caption" => {
                if let Some(table) = &mut self.table {
                    table.preamble.newline();
                }
            }
            _ => {}
        }
    }

    fn end(&mut self, name: &str) {
        if let Some(skipping) = &self.skip {
            if skipping == name {
                self.skip = None;
            }
            return;
        }
        match name {
            n if BLOCK_ELEMENTS.contains(&n) => self.block_break(),
            n if is_heading(n) => {
                if self.heading.is_some() && self.table.is_none() && self.list.is_none() {
                    self.finish_heading();
                } else {
                    self.block_break();
                }
            }
            "ul" | "ol" => {
                if self.table.is_some() {
                    self.block_break();
                } else if let Some(list) = &mut self.list {
                    Self::finish_item(list);
                    list.depth = list.depth.saturating_sub(1);
                    if list.depth == 0 {
                        self.close_list();
                    }
                }
            }
            "li" if self.table.is_none() => {
                if let Some(list) = &mut self.list {
                    Self::finish_item(list);
                }
            }
            "td" | "th" => {
                if let Some(table) = &mut self.table {
                    Self::finish_cell(table);
                }
            }
            "tr" => {
                if let Some(table) = &mut self.table {
                    Self::finish_cell(table);
                    Self::finish_row(table);
                }
            }
            "table" => {
                if let Some(table) = &mut self.table {
                    table.depth = table.depth.saturating_sub(1);
                    if table.depth == 0 {
                        self.close_table();
                    }
                }
            }
            "caption" => {
                if let Some(table) = &mut self.table {
                    table.preamble.newline();
                }
            }
            _ => {}
        }
    }

    /// A block-level boundary: a new paragraph at the top level, a line break inside a cell
    /// or list item (where a new block cannot start).
    fn block_break(&mut self) {
        if self.table.is_some() || self.list.is_some() {
            self.sink().newline();
        } else if let Some(heading) = &mut self.heading {
            heading.space = true;
        } else {
            self.flush_para();
        }
    }

    fn flush_para(&mut self) {
        if !self.para.is_blank() {
            let text = self.para.take();
            self.blocks.push(Block::Paragraph(text));
        } else {
            self.para.take();
        }
    }

    fn finish_heading(&mut self) {
        if let Some(mut heading) = self.heading.take() {
            if !heading.is_blank() {
                // A heading holds one line: a `<br>` inside one reads as a space.
                let text = heading.take().replace('\n', " ");
                self.blocks.push(Block::Heading(text));
            }
        }
    }

    fn finish_item(list: &mut ListState) {
        if !list.item.is_blank() {
            list.items.push(list.item.take());
        } else {
            list.item.take();
        }
    }

    fn close_list(&mut self) {
        if let Some(mut list) = self.list.take() {
            Self::finish_item(&mut list);
            if !list.items.is_empty() {
                self.blocks.push(Block::List {
                    ordered: list.ordered,
                    items: list.items,
                });
            }
        }
    }

    fn finish_cell(table: &mut TableState) {
        let Some((mut buf, header)) = table.cell.take() else {
            return;
        };
        let text = buf.take();
        if table.row.len() < MAX_COLUMNS {
            table.row.push(Cell { text, header });
        } else if let Some(last) = table.row.last_mut() {
            if !text.is_empty() {
                if !last.text.is_empty() {
                    last.text.push_str(" | ");
                }
                last.text.push_str(&text);
            }
        }
    }

    fn finish_row(table: &mut TableState) {
        let row = std::mem::take(&mut table.row);
        if row.iter().any(|c| !c.text.is_empty()) {
            table.rows.push(row);
        }
    }

    fn close_table(&mut self) {
        if let Some(mut table) = self.table.take() {
            Self::finish_cell(&mut table);
            Self::finish_row(&mut table);
            if !table.preamble.is_blank() {
                self.blocks.push(Block::Paragraph(table.preamble.take()));
            }
            if !table.rows.is_empty() {
                self.blocks.push(Block::Table(table.rows));
            }
        }
    }

    fn finish(mut self) -> Fragment {
        self.finish_heading();
        self.close_list();
        self.close_table();
        self.flush_para();
        Fragment {
            blocks: self.blocks,
            truncated: self.truncated,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Block {
        Block::Paragraph(s.to_string())
    }

    fn cell(text: &str, header: bool) -> Cell {
        Cell {
            text: text.to_string(),
            header,
        }
    }

    #[test]
    fn paragraphs_and_whitespace() {
        let div = "<div xmlns=\"http://www.w3.org/1999/xhtml\">\n  <p>Seen   three\n times;\treferral <b>completed</b>.</p><p>Second</p> tail</div>";
        assert_eq!(
            read(div),
            [
                p("Seen three times; referral completed."),
                p("Second"),
                p("tail")
            ]
        );
    }

    #[test]
    fn line_breaks_survive_inside_a_paragraph() {
        assert_eq!(
            read("<p>Sam Link<br/>01234 567890<br><br><br>end</p>"),
            [p("Sam Link\n01234 567890\n\nend")]
        );
    }

    #[test]
    fn inline_elements_join_without_spaces() {
        assert_eq!(
            read("<p><span>a</span><em>b</em> <i>c</i><strong>d</strong></p>"),
            [p("ab cd")]
        );
    }

    #[test]
    fn lists_bulleted_numbered_and_nested() {
        assert_eq!(
            read("<ul><li>Loneliness</li><li> Money   worries </li><li></li></ul>"),
            [Block::List {
                ordered: false,
                items: vec!["Loneliness".into(), "Money worries".into()]
            }]
        );
        assert_eq!(
            read("<ol><li>One<ul><li>One-a</li></ul></li><li>Two</li></ol><p>after</p>"),
            [
                Block::List {
                    ordered: true,
                    items: vec!["One".into(), "One-a".into(), "Two".into()]
                },
                p("after")
            ]
        );
        // Items never closed, list never closed.
        assert_eq!(
            read("<ul><li>a<li>b"),
            [Block::List {
                ordered: false,
                items: vec!["a".into(), "b".into()]
            }]
        );
    }

    #[test]
    fn tables_with_header_cells_and_sections() {
        let div = "<table><caption>ONS4</caption><thead><tr><th></th><th>Before</th><th>After</th></tr></thead>\
                   <tbody><tr><td>Life satisfaction</td><td>3</td><td>6</td></tr>\
                   <tr><th>Anxiety</th><td>8</td><td>5</td></tr><tr><td></td></tr></tbody></table>";
        assert_eq!(
            read(div),
            [
                p("ONS4"),
                Block::Table(vec![
                    vec![cell("", true), cell("Before", true), cell("After", true)],
                    vec![
                        cell("Life satisfaction", false),
                        cell("3", false),
                        cell("6", false)
                    ],
                    vec![cell("Anxiety", true), cell("8", false), cell("5", false)],
                ])
            ]
        );
    }

    #[test]
    fn tables_with_unclosed_cells_and_lists_inside() {
        assert_eq!(
            read("<table><tr><td>a<td><ul><li>x</li><li>y</li></ul><tr><td>b</table>"),
            [Block::Table(vec![
                vec![cell("a", false), cell("• x\n• y", false)],
                vec![cell("b", false)],
            ])]
        );
    }

    #[test]
    fn wide_rows_are_folded_into_the_last_column() {
        let row: String = (0..12).map(|i| format!("<td>{i}</td>")).collect();
        let blocks = read(&format!("<table><tr>{row}</tr></table>"));
        let Block::Table(rows) = &blocks[0] else {
            panic!("not a table: {blocks:?}")
        };
        assert_eq!(rows[0].len(), MAX_COLUMNS);
        assert_eq!(rows[0][7].text, "7 | 8 | 9 | 10 | 11");
    }

    #[test]
    fn headings() {
        assert_eq!(
            read("<h2>Plan</h2><p>Walk</p><h3>Unclosed<p>x"),
            [
                Block::Heading("Plan".into()),
                p("Walk"),
                Block::Heading("Unclosed x".into())
            ]
        );
    }

    #[test]
    fn entities() {
        assert_eq!(
            read("<p>A &amp; B &lt;tag&gt; &quot;q&quot; &apos;s&apos; &#163;5 &#x20AC;3 a&nbsp;b</p>"),
            [p("A & B <tag> \"q\" 's' £5 €3 a b")]
        );
        assert_eq!(
            read("<p>&unknown; &amp &#xZZ; &#99999999; &#0; & x &#x1F600;</p>"),
            [p("&unknown; &amp &#xZZ; \u{FFFD} \u{FFFD} & x \u{1F600}")]
        );
        assert_eq!(read("<p>&#xD800;</p>"), [p("\u{FFFD}")]);
    }

    #[test]
    fn comments_cdata_processing_instructions_and_scripts() {
        assert_eq!(
            read("<?xml version=\"1.0\"?><!DOCTYPE x><p>a<!-- <p>hidden</p> -->b<![CDATA[<c> &amp;]]></p><script>alert(1)</script><style>p{}</style>"),
            [p("ab<c> &amp;")]
        );
    }

    #[test]
    fn attributes_are_ignored_even_with_tricky_quotes() {
        assert_eq!(
            read("<p class=\"a>b\" title='x'>one</p><p data-x=\"<\">two</p><p id=\"unclosed>three</p>"),
            [p("one"), p("two"), p("three")]
        );
    }

    #[test]
    fn malformed_input_is_read_tolerantly() {
        assert_eq!(read("3 < 4 and 5 > 2"), [p("3 < 4 and 5 > 2")]);
        assert_eq!(read("<p>unclosed <b"), [p("unclosed")]);
        assert_eq!(read("<p>a</div></ul></table></li></td>b"), [p("a"), p("b")]);
        assert_eq!(read("<"), [p("<")]);
        assert_eq!(read("<!--"), []);
        assert_eq!(read("<![CDATA[x"), [p("x")]);
        assert_eq!(read(""), []);
        assert_eq!(read("<p <b>x</b>"), [p("x")]);
        assert_eq!(read("<xhtml:p>ns</xhtml:p>"), [p("ns")]);
    }

    #[test]
    fn deep_nesting_is_flat_work() {
        let deep = format!(
            "{}x{}",
            "<div><ul><li><table><tr><td>".repeat(5000),
            "</td></tr></table></li></ul></div>".repeat(5000)
        );
        let blocks = read(&deep);
        assert!(!blocks.is_empty());
    }

    #[test]
    fn text_budget_and_input_cap() {
        let f = read_limited("<p>abcdefghij</p>", 4);
        assert_eq!(f.blocks, [p("abcd")]);
        assert!(f.truncated);
        let huge = "é".repeat(MAX_INPUT_BYTES);
        let f = read_limited(&huge, usize::MAX);
        assert!(f.truncated);
        assert_eq!(chars(&f.blocks), MAX_INPUT_BYTES / 2);
    }

    fn chars(blocks: &[Block]) -> usize {
        blocks
            .iter()
            .map(|b| match b {
                Block::Paragraph(t) | Block::Heading(t) => t.chars().count(),
                _ => 0,
            })
            .sum()
    }
}
