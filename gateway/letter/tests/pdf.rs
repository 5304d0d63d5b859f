//! The PDF's structure: a valid cross-reference table, the metadata and viewer settings a
//! GP system relies on, deterministic bytes, page flow with footers and running headers,
//! and the page cap.

mod common;

use common::{composition, content_streams, context, long_composition, xref};
use signpost_letter::Letter;

fn example_pdf() -> Vec<u8> {
    Letter::new(&composition(), &context()).to_pdf()
}

#[test]
fn header_and_trailer() {
    let pdf = example_pdf();
    assert!(pdf.starts_with(b"%PDF-1.7\n%"));
    assert!(pdf.ends_with(b"%%EOF\n"));
    let xref = xref(&pdf);
    assert!(xref.trailer.contains("/Root 1 0 R"));
    assert!(xref.trailer.contains("/Info 5 0 R"));
    assert!(xref.trailer.contains("/ID [<"));
    let size = format!("/Size {}", xref.offsets.len() + 1);
    assert!(xref.trailer.contains(&size), "{}", xref.trailer);
}

#[test]
fn xref_offsets_point_exactly_at_their_objects() {
    for pdf in [
        example_pdf(),
        Letter::new(&long_composition(80), &context()).to_pdf(),
    ] {
        let xref = xref(&pdf);
        assert!(xref.offsets.len() >= 7);
        for (num, offset) in &xref.offsets {
            let expected = format!("{num} 0 obj\n");
            assert!(
                pdf[*offset..].starts_with(expected.as_bytes()),
                "object {num} is not at {offset}"
            );
        }
        // The xref follows the last object directly.
        assert!(pdf[..xref.startxref].ends_with(b"endobj\n"));
    }
}

#[test]
fn stream_lengths_are_exact() {
    let pdf = example_pdf();
    let text = String::from_utf8_lossy(&pdf).into_owned();
    let mut checked = 0;
    for (i, _) in text.match_indices("<< /Length ") {
        let rest = &text[i + 11..];
        let len: usize = rest[..rest.find(' ').unwrap()].parse().unwrap();
        let data_start = i + 11 + rest.find("stream\n").unwrap() + 7;
        assert_eq!(
            &text[data_start + len..data_start + len + 10],
            "\nendstream"
        );
        checked += 1;
    }
    assert_eq!(checked, 1);
}

#[test]
fn metadata_fonts_and_viewer_settings() {
    let pdf = example_pdf();
    let text = String::from_utf8_lossy(&pdf).into_owned();
    for expected in [
        "/Title (Social prescribing outcome: Jane Example)",
        "/Author (Stand-in Community Link Workers)",
        "/Subject (Social prescribing: message back to GP and referrer)",
        "/Creator (Signpost)",
        "/CreationDate (D:20261130)",
        "/Lang (en-GB)",
        "/ViewerPreferences << /DisplayDocTitle true >>",
        "/MediaBox [0 0 595 842]",
        "/BaseFont /Helvetica /Encoding /WinAnsiEncoding",
        "/BaseFont /Helvetica-Bold /Encoding /WinAnsiEncoding",
    ] {
        assert!(text.contains(expected), "missing {expected}");
    }
    assert!(!text.contains("FontFile"), "no embedded fonts");
}

#[test]
fn same_input_same_bytes() {
    let a = example_pdf();
    let b = example_pdf();
    assert_eq!(a, b);
    let mut other = context();
    other.referral_id = "SP-2026-000418".into();
    let c = Letter::new(&composition(), &other).to_pdf();
    assert_ne!(a, c);
    // Different content, different file identifier.
    assert_ne!(xref(&a).trailer, xref(&c).trailer);
}

#[test]
fn outcome_comes_first_on_page_one() {
    let pdf = example_pdf();
    let page = &content_streams(&pdf)[0];
    let at = |s: &str| page.find(s).unwrap_or_else(|| panic!("{s} not on page 1"));
    assert!(at("(Social prescribing outcome)") < at("(Patient)"));
    assert!(at("(Patient)") < at("(Status)"));
    assert!(at("(Status)") < at("(Outcome)"));
    assert!(at("(Outcome)") < at("(Needs and concerns)"));
    assert!(page.contains("(Jane Example)"));
    assert!(page.contains("(943 476 5919)"));
    assert!(page.contains("(14 Feb 2001)"));
    assert!(page.contains("(Riverside Medical Practice \\(A81001\\))"));
    assert!(page.contains("(\\225)"), "bullets are WinAnsi 0x95");
    assert!(page.contains("(Page 1 of 1)"));
    assert!(page.contains("(Referral reference: SP-2026-000417)"));
    assert!(!page.contains("continued"));
}

#[test]
fn long_letters_flow_onto_pages_with_footers_and_running_headers() {
    let pdf = Letter::new(&long_composition(80), &context()).to_pdf();
    let pages = content_streams(&pdf);
    assert!(pages.len() >= 3, "{} pages", pages.len());
    let text = String::from_utf8_lossy(&pdf).into_owned();
    assert!(text.contains(&format!("/Count {}", pages.len())));
    for (i, page) in pages.iter().enumerate() {
        let footer = format!("(Page {} of {})", i + 1, pages.len());
        assert!(page.contains(&footer), "page {} lacks {footer}", i + 1);
        assert!(page.contains("(Referral reference: SP-2026-000417)"));
        if i > 0 {
            assert!(
                page.contains("(Jane Example \\267 NHS number 943 476 5919)"),
                "page {} has no running header",
                i + 1
            );
            assert!(page.contains("(Social prescribing outcome \\(continued\\))"));
        }
    }
    // Every visit made it, in order, none lost at a page break.
    let mut last = 0;
    for i in 0..80 {
        let needle = format!("Visit {i}.");
        let (page, at) = pages
            .iter()
            .enumerate()
            .find_map(|(p, s)| s.find(&needle).map(|a| (p, a)))
            .unwrap_or_else(|| panic!("{needle} missing"));
        let position = page * 10_000_000 + at;
        assert!(position > last, "{needle} out of order");
        last = position;
    }
}

#[test]
fn page_count_is_capped_with_a_truncation_line() {
    let pdf = Letter::new(&long_composition(2_000), &context()).to_pdf();
    let pages = content_streams(&pdf);
    assert_eq!(pages.len(), 50);
    assert!(pages[49].contains("(... truncated: this letter is longer than 50 pages"));
    assert!(pages[49].contains("(Page 50 of 50)"));
    let xref = xref(&pdf);
    for (num, offset) in &xref.offsets {
        assert!(pdf[*offset..].starts_with(format!("{num} 0 obj\n").as_bytes()));
    }
}

#[test]
fn tables_that_break_repeat_their_header_row() {
    let rows: String = (0..120)
        .map(|i| format!("<tr><td>Session {i}</td><td>attended</td></tr>"))
        .collect();
    let comp = serde_json::json!({"section": [common::section(
        "Outcome",
        &format!("<table><tr><th>Session</th><th>Attendance</th></tr>{rows}</table>"),
    )]});
    let pdf = Letter::new(&comp, &context()).to_pdf();
    let pages = content_streams(&pdf);
    assert!(pages.len() >= 2);
    for page in &pages {
        assert!(page.contains("/F2 11 Tf") && page.contains("(Attendance)"));
    }
}

#[test]
fn text_that_is_not_winansi_is_shown_as_question_marks_not_dropped() {
    let comp = serde_json::json!({"section": [common::section(
        "Outcome",
        "<p>Caf\u{e9} \u{a3}5 \u{2018}ok\u{2019} \u{2014} \u{65e5}\u{672c} (x) back\\slash</p>",
    )]});
    let pdf = Letter::new(&comp, &context()).to_pdf();
    let page = &content_streams(&pdf)[0];
    assert!(
        page.contains("(Caf\\351 \\2435 \\221ok\\222 \\227 ?? \\(x\\) back\\\\slash)"),
        "{page}"
    );
}

/// `fixtures/letters/` holds the reference letter that was checked by eye (the PNG). If the
/// rendering changes, this fails until the fixtures are made again and looked at again
/// (`fixtures/letters/README.md`).
#[test]
fn the_reference_letter_in_the_fixtures_is_what_the_crate_renders() {
    let letter = signpost_letter::Letter::new(&common::composition(), &common::context());
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/letters");
    for (name, rendered) in [
        ("outcome-letter.pdf", letter.to_pdf()),
        ("outcome-letter.html", letter.to_html().into_bytes()),
        ("outcome-letter.txt", letter.to_text().into_bytes()),
    ] {
        let kept = std::fs::read(fixtures.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(
            kept == rendered,
            "{name} differs from what the crate renders now"
        );
    }
}
