//! The letter as one self-contained, accessible HTML5 document: `lang="en-GB"`, one `h1`,
//! a section with an `h2` per part of the letter, the header facts as a description list,
//! tables with `th scope`, and inline CSS only (no scripts, no external resources), so it
//! can be shown in a GP system's viewer or printed as it is.

use std::fmt::Write as _;

use crate::{Block, Cell, Letter};

/// Styles: readable line length, clear hierarchy, black on white, and a print layout.
const STYLE: &str = "\
body{margin:0;background:#fff;color:#0b0c0c;font-family:Arial,Helvetica,sans-serif;font-size:1.0625rem;line-height:1.5}
main{max-width:46rem;margin:0 auto;padding:1.5rem 1rem 2rem}
h1{font-size:1.75rem;margin:0 0 .25rem}
.subject{margin:0 0 1rem;color:#505a5f}
.facts{display:grid;grid-template-columns:max-content 1fr;gap:.2rem 1.25rem;margin:0 0 1.5rem;padding:.75rem 0;border-top:2px solid #0b0c0c;border-bottom:2px solid #0b0c0c}
.facts dt{font-weight:bold}
.facts dd{margin:0}
.facts div{display:contents}
h2{font-size:1.3rem;margin:1.5rem 0 .5rem;padding-bottom:.2rem;border-bottom:1px solid #b1b4b6}
.outcome h2{border-bottom:3px solid #0b0c0c}
h3{font-size:1.1rem;margin:1rem 0 .25rem}
p{margin:0 0 .6rem}
table{border-collapse:collapse;margin:0 0 1rem}
th,td{text-align:left;vertical-align:top;padding:.25rem .75rem .25rem 0;border-bottom:1px solid #b1b4b6}
thead th{border-bottom:2px solid #505a5f}
footer{max-width:46rem;margin:0 auto;padding:0 1rem 2rem;color:#505a5f;font-size:.9rem}
@media print{main{padding:0}body{font-size:11pt}}
";

/// Renders the complete document.
pub(crate) fn render(letter: &Letter) -> String {
    let mut out = String::with_capacity(16 * 1024);
    out.push_str("<!DOCTYPE html>\n<html lang=\"en-GB\">\n<head>\n<meta charset=\"utf-8\">\n");
    out.push_str("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n");
    let _ = writeln!(out, "<title>{}</title>", escape(letter.document_title()));
    let _ = writeln!(out, "<style>\n{STYLE}</style>\n</head>\n<body>\n<main>");
    let _ = writeln!(out, "<h1>{}</h1>", escape(letter.title()));
    let _ = writeln!(out, "<p class=\"subject\">{}</p>", escape(&letter.subject));
    out.push_str("<dl class=\"facts\">\n");
    for fact in &letter.facts {
        let _ = writeln!(
            out,
            "<div><dt>{}</dt><dd>{}</dd></div>",
            escape(fact.label),
            escape(&fact.value)
        );
    }
    out.push_str("</dl>\n");
    for (i, section) in letter.sections.iter().enumerate() {
        let id = format!("section-{}", i + 1);
        let class = if section.is_outcome {
            " class=\"outcome\""
        } else {
            ""
        };
        let _ = writeln!(
            out,
            "<section{class} aria-labelledby=\"{id}\">\n<h2 id=\"{id}\">{}</h2>",
            escape(&section.title)
        );
        for block in &section.blocks {
            block_html(&mut out, block);
        }
        out.push_str("</section>\n");
    }
    out.push_str("</main>\n<footer>\n");
    let _ = writeln!(
        out,
        "<p>Referral reference: {}</p>",
        escape(&letter.reference)
    );
    let _ = writeln!(
        out,
        "<p>Sent on behalf of {} by Signpost.</p>",
        escape(&letter.author)
    );
    out.push_str("</footer>\n</body>\n</html>\n");
    out
}

fn block_html(out: &mut String, block: &Block) {
    match block {
        Block::Heading(text) => {
            let _ = writeln!(out, "<h3>{}</h3>", escape(text));
        }
        Block::Paragraph(text) => {
            let _ = writeln!(out, "<p>{}</p>", with_breaks(text));
        }
        Block::List { ordered, items } => {
            let tag = if *ordered { "ol" } else { "ul" };
            let _ = writeln!(out, "<{tag}>");
            for item in items {
                let _ = writeln!(out, "<li>{}</li>", with_breaks(item));
            }
            let _ = writeln!(out, "</{tag}>");
        }
        Block::Table(rows) => table_html(out, rows),
    }
}

/// A table whose leading all-header rows become `thead` with column headers; a header cell
/// in a body row heads its row. An empty header cell (the corner) is a plain `td`, since a
/// header with no name would be announced as nothing.
fn table_html(out: &mut String, rows: &[Vec<Cell>]) {
    let header_rows = rows
        .iter()
        .take_while(|r| r.iter().all(|c| c.header))
        .count();
    out.push_str("<table>\n");
    if header_rows > 0 {
        out.push_str("<thead>\n");
        for row in &rows[..header_rows] {
            row_html(out, row, "col");
        }
        out.push_str("</thead>\n");
    }
    if rows.len() > header_rows {
        out.push_str("<tbody>\n");
        for row in &rows[header_rows..] {
            row_html(out, row, "row");
        }
        out.push_str("</tbody>\n");
    }
    out.push_str("</table>\n");
}

fn row_html(out: &mut String, row: &[Cell], scope: &str) {
    out.push_str("<tr>");
    for cell in row {
        if cell.header && !cell.text.is_empty() {
            let _ = write!(
                out,
                "<th scope=\"{scope}\">{}</th>",
                with_breaks(&cell.text)
            );
        } else {
            let _ = write!(out, "<td>{}</td>", with_breaks(&cell.text));
        }
    }
    out.push_str("</tr>\n");
}

/// Escaped text with the scheme's line breaks kept as `<br>`.
fn with_breaks(text: &str) -> String {
    text.split('\n')
        .map(escape)
        .collect::<Vec<_>>()
        .join("<br>")
}

/// Text made safe inside HTML elements and attribute values.
pub(crate) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup() {
        assert_eq!(
            escape("<script>\"a\" & 'b'</script>"),
            "&lt;script&gt;&quot;a&quot; &amp; &#39;b&#39;&lt;/script&gt;"
        );
    }

    #[test]
    fn tables_get_scoped_headers() {
        let cell = |t: &str, header| Cell {
            text: t.into(),
            header,
        };
        let mut out = String::new();
        table_html(
            &mut out,
            &[
                vec![cell("", true), cell("Before", true)],
                vec![cell("Anxiety", true), cell("8", false)],
            ],
        );
        assert_eq!(
            out,
            "<table>\n<thead>\n<tr><td></td><th scope=\"col\">Before</th></tr>\n</thead>\n\
             <tbody>\n<tr><th scope=\"row\">Anxiety</th><td>8</td></tr>\n</tbody>\n</table>\n"
        );
    }

    #[test]
    fn line_breaks_become_br() {
        assert_eq!(with_breaks("a<\nb"), "a&lt;<br>b");
    }
}
