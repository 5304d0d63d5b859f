//! The letter as plain text for systems that cannot show PDF or HTML: the same order (title,
//! facts, outcome, other sections), no line longer than [`WIDTH`] characters, ASCII rules
//! and markers so it survives any terminal or message field.

use crate::wrap::wrap;
use crate::{Block, Cell, Letter};

/// The longest line, in characters.
pub const WIDTH: usize = 80;

/// The column where fact values start ("Outcome date:" plus two spaces).
const LABEL_COLUMN: usize = 16;

/// Renders the letter.
pub(crate) fn render(letter: &Letter) -> String {
    let mut out = Vec::new();
    let title = letter.title().to_uppercase();
    push_wrapped(&mut out, &title, "", "");
    push_wrapped(&mut out, &letter.subject, "", "");
    out.push("=".repeat(WIDTH));
    for fact in &letter.facts {
        let label = format!("{}:", fact.label);
        let first = format!("{label:<LABEL_COLUMN$}");
        push_wrapped(&mut out, &fact.value, &first, &" ".repeat(LABEL_COLUMN));
    }
    out.push("=".repeat(WIDTH));
    for section in &letter.sections {
        out.push(String::new());
        let start = out.len();
        push_wrapped(&mut out, &section.title.to_uppercase(), "", "");
        let longest = out[start..]
            .iter()
            .map(|l| l.chars().count())
            .max()
            .unwrap_or(0);
        let mark = if section.is_outcome { '=' } else { '-' };
        out.push(mark.to_string().repeat(longest.max(3)));
        for (i, block) in section.blocks.iter().enumerate() {
            if i > 0 {
                out.push(String::new());
            }
            block_text(&mut out, block);
        }
    }
    out.push(String::new());
    out.push("-".repeat(WIDTH));
    push_wrapped(
        &mut out,
        &format!("Referral reference: {}", letter.reference),
        "",
        "",
    );
    push_wrapped(
        &mut out,
        &format!("Sent on behalf of {} by Signpost.", letter.author),
        "",
        "",
    );
    let mut text = out.join("\n");
    text.push('\n');
    text
}

/// Wraps `text` to the width left after the prefixes: `first` before the first line,
/// `rest` before the others (a hanging indent).
fn push_wrapped(out: &mut Vec<String>, text: &str, first: &str, rest: &str) {
    let indent = first.chars().count().max(rest.chars().count());
    let width = WIDTH.saturating_sub(indent).max(1) as u64;
    for (i, line) in wrap(text, width, |_| 1).into_iter().enumerate() {
        let prefix = if i == 0 { first } else { rest };
        out.push(format!("{prefix}{line}").trim_end().to_string());
    }
}

fn block_text(out: &mut Vec<String>, block: &Block) {
    match block {
        Block::Heading(text) => {
            push_wrapped(out, text, "", "");
            let longest = text.chars().count().min(WIDTH);
            out.push("~".repeat(longest.max(3)));
        }
        Block::Paragraph(text) => push_wrapped(out, text, "", ""),
        Block::List { ordered, items } => {
            let digits = items.len().to_string().len();
            for (i, item) in items.iter().enumerate() {
                let marker = if *ordered {
                    format!("{:>digits$}. ", i + 1)
                } else {
                    "- ".to_string()
                };
                let rest = " ".repeat(marker.len());
                push_wrapped(out, item, &marker, &rest);
            }
        }
        Block::Table(rows) => table_text(out, rows),
    }
}

/// A table as aligned columns when it fits in 80 characters; otherwise each row as
/// "Heading: value" lines, which stays readable however wide the table is.
fn table_text(out: &mut Vec<String>, rows: &[Vec<Cell>]) {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    if columns == 0 {
        return;
    }
    let flat = |c: &Cell| c.text.replace('\n', "; ");
    let mut widths = vec![0usize; columns];
    for row in rows {
        for (c, cell) in row.iter().enumerate() {
            widths[c] = widths[c].max(flat(cell).chars().count());
        }
    }
    let header_rows = rows
        .iter()
        .take_while(|r| r.iter().all(|c| c.header))
        .count();
    let total: usize = widths.iter().sum::<usize>() + 2 * (columns - 1);
    if total <= WIDTH {
        for (r, row) in rows.iter().enumerate() {
            let cells: Vec<String> = (0..columns)
                .map(|c| {
                    let text = row.get(c).map(flat).unwrap_or_default();
                    format!("{text:<width$}", width = widths[c])
                })
                .collect();
            out.push(cells.join("  ").trim_end().to_string());
            if r + 1 == header_rows {
                let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
                out.push(rule.join("  "));
            }
        }
        return;
    }
    let headers: Vec<String> = match rows.first() {
        Some(first) if header_rows > 0 => (0..columns)
            .map(|c| first.get(c).map(flat).unwrap_or_default())
            .collect(),
        _ => Vec::new(),
    };
    for (r, row) in rows.iter().enumerate().skip(header_rows) {
        if r > header_rows {
            out.push(String::new());
        }
        for (c, cell) in row.iter().enumerate() {
            let label = headers
                .get(c)
                .filter(|h| !h.is_empty())
                .cloned()
                .unwrap_or_else(|| format!("Column {}", c + 1));
            if label.chars().count() > WIDTH / 3 {
                push_wrapped(out, &format!("{label}:"), "", "");
                push_wrapped(out, &flat(cell), "    ", "    ");
            } else {
                push_wrapped(out, &flat(cell), &format!("{label}: "), "    ");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cell(t: &str, header: bool) -> Cell {
        Cell {
            text: t.into(),
            header,
        }
    }

    #[test]
    fn narrow_tables_are_aligned_columns() {
        let mut out = Vec::new();
        table_text(
            &mut out,
            &[
                vec![cell("", true), cell("Before", true), cell("After", true)],
                vec![
                    cell("Life satisfaction", false),
                    cell("3", false),
                    cell("6", false),
                ],
            ],
        );
        assert_eq!(
            out,
            [
                "                   Before  After",
                "-----------------  ------  -----",
                "Life satisfaction  3       6",
            ]
        );
    }

    #[test]
    fn wide_tables_become_labelled_lines() {
        let long = "word ".repeat(30);
        let mut out = Vec::new();
        table_text(
            &mut out,
            &[
                vec![cell("Service", true), cell("Notes", true)],
                vec![cell("Walking group", false), cell(&long, false)],
            ],
        );
        assert_eq!(out[0], "Service: Walking group");
        assert!(out[1].starts_with("Notes: word word"));
        assert!(out.iter().all(|l| l.chars().count() <= WIDTH));
    }

    #[test]
    fn hanging_indent_keeps_within_width() {
        let mut out = Vec::new();
        push_wrapped(
            &mut out,
            &"abc ".repeat(50),
            "Label:         ",
            &" ".repeat(16),
        );
        assert!(out.len() > 1);
        assert!(out.iter().all(|l| l.chars().count() <= WIDTH));
        assert!(out[1].starts_with(&" ".repeat(16)));
    }
}
