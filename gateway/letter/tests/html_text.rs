//! The HTML and plain-text renderings: complete and accessible HTML, text within 80
//! columns, both in the same order as the PDF (facts, then the outcome), and hostile
//! narrative never becoming markup.

mod common;

use common::{composition, context, section, OUTCOME_TEXT};
use signpost_letter::{Letter, LetterContext};

#[test]
fn html_is_a_complete_accessible_document() {
    let html = Letter::new(&composition(), &context()).to_html();
    assert!(html.starts_with("<!DOCTYPE html>\n<html lang=\"en-GB\">"));
    assert!(html.contains("<meta charset=\"utf-8\">"));
    assert!(html.contains("<title>Social prescribing outcome: Jane Example</title>"));
    assert!(html.trim_end().ends_with("</html>"));
    assert_eq!(html.matches("<h1>").count(), 1);
    assert_eq!(html.matches("<h2 ").count(), 6);
    assert!(html.contains("<dt>NHS number</dt><dd>943 476 5919</dd>"));
    assert!(html.contains("<dt>Date of birth</dt><dd>14 Feb 2001</dd>"));
    assert!(html.contains("<th scope=\"col\">Before</th>"));
    assert!(html.contains("<li>Loneliness</li>"));
    assert!(!html.contains("<script"));
    let outcome = html.find(OUTCOME_TEXT).expect("outcome");
    assert!(html.find("<dt>Status</dt>").unwrap() < outcome);
    assert!(outcome < html.find("Needs and concerns").unwrap());
    assert!(html.contains("<section class=\"outcome\" aria-labelledby=\"section-1\">\n<h2 id=\"section-1\">Outcome</h2>"));
}

#[test]
fn html_escapes_everything_from_the_scheme_and_the_context() {
    let comp = serde_json::json!({
        "title": "<b>x</b>",
        "section": [section("<img src=x onerror=alert(1)>", "<p>&lt;script&gt;alert(1)&lt;/script&gt; \"quoted\"</p><script>alert(2)</script>")]
    });
    let mut ctx = context();
    ctx.given_name = "<i>Jane".into();
    ctx.status_reason = Some("a & b".into());
    let html = Letter::new(&comp, &ctx).to_html();
    assert!(!html.contains("<script"));
    assert!(!html.contains("<img"));
    assert!(!html.contains("<i>"));
    assert!(!html.contains("alert(2)"));
    assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt; &quot;quoted&quot;"));
    assert!(html.contains("&lt;i&gt;Jane Example"));
    assert!(html.contains(
        "<dt>Status</dt><dd>Completed</dd></div>\n<div><dt>Reason</dt><dd>a &amp; b</dd>"
    ));
}

#[test]
fn text_has_the_facts_then_the_outcome_within_80_columns() {
    let text = Letter::new(&composition(), &context()).to_text();
    assert!(text.starts_with("SOCIAL PRESCRIBING OUTCOME\n"));
    assert!(text.contains("\nNHS number:     943 476 5919\n"));
    assert!(text.contains("\nScheme:         Stand-in Community Link Workers\n"));
    assert!(text.contains("\nOUTCOME\n=======\nSeen three times"));
    assert!(text.contains("\n- Loneliness\n- Money worries\n"));
    assert!(text.contains("Life satisfaction  3       6"));
    let outcome = text.find("\nOUTCOME\n").unwrap();
    assert!(text.find("Status:").unwrap() < outcome);
    assert!(outcome < text.find("NEEDS AND CONCERNS").unwrap());
    for line in text.lines() {
        assert!(line.chars().count() <= 80, "{line:?}");
        assert_eq!(line, line.trim_end(), "no trailing spaces");
    }
}

#[test]
fn text_wraps_long_content_and_long_words() {
    let mut ctx = context();
    ctx.practice_name = "The Very Long Named Practice ".repeat(8);
    ctx.status = "rejected".into();
    ctx.status_reason = Some("Outside our area. ".repeat(10));
    let comp = serde_json::json!({"section": [
        section("Outcome", &format!("<p>{}</p><p>{}</p>", "word ".repeat(100), "x".repeat(500))),
        section("Numbered", "<ol><li>one</li><li>two</li><li>three</li><li>four</li><li>five</li><li>six</li><li>seven</li><li>eight</li><li>nine</li><li>ten is a long item that wraps onto the next line because it goes on and on</li></ol>"),
        section("Wide", &format!("<table><tr><th>Name</th><th>Notes</th></tr><tr><td>Group</td><td>{}</td></tr></table>", "note ".repeat(40))),
    ]});
    let text = Letter::new(&comp, &ctx).to_text();
    for line in text.lines() {
        assert!(line.chars().count() <= 80, "{line:?}");
    }
    assert!(
        text.contains("Status:         Rejected by the scheme\nReason:         Outside our area.")
    );
    assert!(text.contains("\n 9. nine\n10. ten is a long item"));
    assert!(text.contains("\nNotes: note note"));
}

#[test]
fn a_context_with_nothing_in_it_still_renders_clearly() {
    let letter = Letter::new(&serde_json::json!({}), &LetterContext::default());
    let text = letter.to_text();
    assert!(text.contains("Patient:        Name not recorded"));
    assert!(text.contains("NHS number:     Not recorded"));
    assert!(text.contains("The scheme sent no further details"));
    assert!(letter.to_html().contains("<dd>Not recorded</dd>"));
    assert!(!letter.to_pdf().is_empty());
}
