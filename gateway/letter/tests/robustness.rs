//! Hostile and garbage input never panics and never produces unbounded output: thousands of
//! generated narratives, compositions and contexts (a fixed-seed xorshift generator, so a
//! failure reproduces), plus hand-made worst cases for size and nesting.

mod common;

use std::time::{Duration, Instant};

use common::{content_streams, context, xref, XorShift};
use serde_json::{json, Value};
use signpost_letter::{xhtml, Letter, LetterContext};

const FRAGMENTS: &[&str] = &[
    "<p>",
    "</p>",
    "<div>",
    "</div>",
    "<br/>",
    "<br>",
    "<ul>",
    "</ul>",
    "<ol>",
    "</ol>",
    "<li>",
    "</li>",
    "<table>",
    "</table>",
    "<tr>",
    "</tr>",
    "<td>",
    "</td>",
    "<th>",
    "</th>",
    "<thead>",
    "<tbody>",
    "<caption>",
    "<h1>",
    "</h2>",
    "<h6>",
    "<b>",
    "</i>",
    "<span class=\"x\">",
    "<a href='>'>",
    "<script>",
    "</script>",
    "<style>",
    "<!--",
    "-->",
    "<![CDATA[",
    "]]>",
    "<?xml?>",
    "<!DOCTYPE",
    "&amp;",
    "&lt;",
    "&#x",
    "&#",
    ";",
    "&nbsp;",
    "&bogus;",
    "&",
    "<",
    ">",
    "\"",
    "'",
    "/",
    "=",
    " ",
    "\n",
    "\t",
    "text",
    "word ",
    "Jane",
    "£",
    "é",
    "—",
    "•",
    "日本",
    "😀",
    "\u{0}",
    "\u{7}",
    "\u{200B}",
    "\u{FEFF}",
    "<xhtml:p>",
    "</",
    "<1>",
    "<p <b>",
];

fn garbage(rng: &mut XorShift, tokens: usize) -> String {
    let mut s = String::new();
    for _ in 0..rng.below(tokens) {
        match rng.below(10) {
            0 => {
                // A raw char from anywhere in Unicode's scalar range.
                let c = char::from_u32((rng.next() % 0x11_0000) as u32).unwrap_or('\u{FFFD}');
                s.push(c);
            }
            1 => s.push_str(&"W".repeat(rng.below(300))),
            _ => {
                let fragment: &&str = rng.pick(FRAGMENTS);
                s.push_str(fragment);
            }
        }
    }
    s
}

fn random_value(rng: &mut XorShift, depth: usize) -> Value {
    match rng.below(if depth > 3 { 5 } else { 8 }) {
        0 => Value::Null,
        1 => json!(rng.next() % 2 == 0),
        2 => json!(rng.next() as i64),
        3 => json!(-1.5e300),
        4 => json!(garbage(rng, 20)),
        5 => Value::Array(
            (0..rng.below(4))
                .map(|_| random_value(rng, depth + 1))
                .collect(),
        ),
        _ => random_section(rng, depth + 1),
    }
}

fn random_section(rng: &mut XorShift, depth: usize) -> Value {
    let mut section = serde_json::Map::new();
    if rng.below(4) > 0 {
        let title = if rng.below(3) == 0 {
            json!("Outcome")
        } else {
            random_scalar(rng)
        };
        section.insert("title".into(), title);
    }
    if rng.below(4) > 0 {
        let div = if rng.below(5) > 0 {
            json!(garbage(rng, 200))
        } else {
            random_scalar(rng)
        };
        section.insert("text".into(), json!({"status": "generated", "div": div}));
    }
    if rng.below(3) == 0 {
        section.insert(
            "code".into(),
            json!({"coding": [{"display": random_scalar(rng)}], "text": random_scalar(rng)}),
        );
    }
    if rng.below(4) == 0 && depth < 6 {
        let children = (0..rng.below(4))
            .map(|_| random_value(rng, depth + 1))
            .collect();
        section.insert("section".into(), Value::Array(children));
    }
    if rng.below(8) == 0 {
        section.insert("emptyReason".into(), json!({"text": random_scalar(rng)}));
    }
    Value::Object(section)
}

fn random_scalar(rng: &mut XorShift) -> Value {
    match rng.below(4) {
        0 => json!(garbage(rng, 10)),
        1 => json!(42),
        2 => Value::Null,
        _ => json!(["not", "a", "string"]),
    }
}

fn random_composition(rng: &mut XorShift) -> Value {
    match rng.below(10) {
        0 => random_value(rng, 0),
        _ => {
            let sections: Vec<Value> = (0..rng.below(8)).map(|_| random_value(rng, 1)).collect();
            let mut c = json!({"resourceType": "Composition", "section": sections});
            if rng.below(3) == 0 {
                c["text"] = json!({"div": garbage(rng, 100)});
            }
            if rng.below(3) == 0 {
                c["title"] = random_scalar(rng);
            }
            c
        }
    }
}

fn random_context(rng: &mut XorShift) -> LetterContext {
    let field = |rng: &mut XorShift| match rng.below(4) {
        0 => String::new(),
        1 => garbage(rng, 30),
        2 => "9434765919".to_string(),
        _ => "2026-02-29T10:00:00Z".to_string(),
    };
    LetterContext {
        given_name: field(rng),
        family_name: field(rng),
        nhs_number: field(rng),
        birth_date: field(rng),
        practice_name: field(rng),
        practice_ods: field(rng),
        scheme_name: field(rng),
        referral_date: field(rng),
        outcome_date: field(rng),
        status: field(rng),
        status_reason: if rng.below(2) == 0 {
            Some(field(rng))
        } else {
            None
        },
        referral_id: field(rng),
    }
}

/// What every rendering must satisfy, whatever went in.
fn check(letter: &Letter) {
    let pdf = letter.to_pdf();
    assert!(pdf.starts_with(b"%PDF-1.7") && pdf.ends_with(b"%%EOF\n"));
    let table = xref(&pdf);
    for (num, offset) in &table.offsets {
        assert!(pdf[*offset..].starts_with(format!("{num} 0 obj\n").as_bytes()));
    }
    let pages = content_streams(&pdf).len();
    assert!((1..=50).contains(&pages));
    assert!(
        pdf.iter().skip(15).all(|b| b.is_ascii()),
        "PDF body stays 7-bit"
    );
    let html = letter.to_html();
    assert!(html.starts_with("<!DOCTYPE html>") && html.ends_with("</html>\n"));
    assert!(!html.contains("<script") && !html.contains("<style>p"));
    let text = letter.to_text();
    assert!(text.lines().all(|l| l.chars().count() <= 80));
    assert!(!letter.sections().is_empty());
    assert!(letter.sections()[0].is_outcome);
}

#[test]
fn generated_garbage_never_panics() {
    let mut rng = XorShift(0x5EED_1E77_E12D_0001);
    for _ in 0..1_500 {
        let letter = Letter::new(&random_composition(&mut rng), &random_context(&mut rng));
        check(&letter);
    }
}

#[test]
fn generated_narratives_read_without_panicking_and_within_budget() {
    let mut rng = XorShift(0xC0FF_EE00_1234_5678);
    for _ in 0..5_000 {
        let input = garbage(&mut rng, 400);
        let budget = rng.below(2_000);
        let fragment = xhtml::read_limited(&input, budget);
        let kept: usize = fragment.blocks.iter().map(|b| format!("{b:?}").len()).sum();
        assert!(kept <= 40 * (budget + 1) + 200 * fragment.blocks.len());
        let _ = xhtml::read(&input);
    }
}

fn timed(what: &str, limit: Duration, f: impl FnOnce()) {
    let start = Instant::now();
    f();
    let took = start.elapsed();
    assert!(took < limit, "{what} took {took:?}: work must stay linear");
}

fn one_section(div: String) -> Value {
    json!({"section": [{"title": "Outcome", "text": {"div": div}}]})
}

#[test]
fn worst_case_inputs_stay_bounded() {
    let limit = Duration::from_secs(30);
    let cases: Vec<(&str, String)> = vec![
        ("8 MB of text", "lorem ipsum ".repeat(700_000)),
        ("one 2 MB word", "x".repeat(2_000_000)),
        (
            "200k nested divs",
            format!(
                "{}deep{}",
                "<div>".repeat(200_000),
                "</div>".repeat(200_000)
            ),
        ),
        ("100k unclosed tags", "<p class=\"".repeat(100_000)),
        ("100k unclosed quotes", "<a '".repeat(100_000)),
        ("100k comments never closed", "<!-".repeat(100_000)),
        ("100k entities", "&amp;&#x20AC;&bogus".repeat(100_000)),
        (
            "100k-cell row",
            format!("<table><tr>{}</tr></table>", "<td>c</td>".repeat(100_000)),
        ),
        (
            "50k rows",
            format!(
                "<table>{}</table>",
                "<tr><td>a</td><td>b</td></tr>".repeat(50_000)
            ),
        ),
        (
            "50k list items",
            format!("<ul>{}</ul>", "<li>item</li>".repeat(50_000)),
        ),
        ("50k br", format!("<p>{}</p>", "a<br/>".repeat(50_000))),
    ];
    for (what, div) in cases {
        timed(what, limit, || {
            let letter = Letter::new(&one_section(div), &context());
            check(&letter);
        });
    }
    timed("10k sections", limit, || {
        let sections: Vec<Value> = (0..10_000)
            .map(|i| json!({"title": format!("S{i}"), "text": {"div": "<p>x</p>"}}))
            .collect();
        let letter = Letter::new(&json!({ "section": sections }), &context());
        assert!(letter.sections().len() <= signpost_letter::MAX_SECTIONS);
        check(&letter);
    });
    timed("huge context fields", limit, || {
        let mut ctx = context();
        ctx.given_name = "Jane ".repeat(200_000);
        ctx.family_name = "x".repeat(1_000_000);
        ctx.referral_id = "r".repeat(1_000_000);
        ctx.status_reason = Some("because ".repeat(100_000));
        let letter = Letter::new(&json!({}), &ctx);
        assert!(letter.patient_name().chars().count() <= 201);
        check(&letter);
    });
}

#[test]
fn output_size_is_bounded_whatever_the_input() {
    let div = format!("<p>{}</p>", "lorem ipsum ".repeat(700_000));
    let sections: Vec<Value> = (0..64)
        .map(|_| json!({"title": "Outcome", "text": {"div": div.clone()}}))
        .collect();
    let letter = Letter::new(&json!({ "section": sections }), &context());
    assert!(letter.to_pdf().len() < 8 * 1024 * 1024);
    assert!(letter.to_html().len() < 2 * 1024 * 1024);
    assert!(letter.to_text().len() < 2 * 1024 * 1024);
}
