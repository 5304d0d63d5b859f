//! The PDF as real tools read it: `pdftotext -layout` (poppler-utils) must find the patient,
//! the NHS number as displayed, the scheme and the outcome, and `qpdf --check` must find no
//! structural error. These tools are required: a missing one fails the test with the
//! package to install, so a green run always means the PDF was really read.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{composition, context, long_composition, OUTCOME_TEXT};
use signpost_letter::Letter;

/// A PDF written to the temp directory for a tool to read, removed again when dropped.
struct TempPdf(PathBuf);

impl Drop for TempPdf {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn temp_pdf(name: &str, bytes: &[u8]) -> TempPdf {
    let unique = format!("signpost-letter-{}-{name}", std::process::id());
    let path = std::env::temp_dir().join(unique);
    std::fs::write(&path, bytes).expect("write pdf");
    TempPdf(path)
}

fn run(tool: &str, package: &str, args: &[&std::ffi::OsStr]) -> std::process::Output {
    match Command::new(tool).args(args).output() {
        Ok(output) => output,
        Err(e) => panic!(
            "`{tool}` could not be run ({e}): install it with `apt-get install -y {package}`"
        ),
    }
}

fn pdftotext(path: &Path) -> String {
    let output = run(
        "pdftotext",
        "poppler-utils",
        &["-layout".as_ref(), path.as_os_str(), "-".as_ref()],
    );
    assert!(
        output.status.success(),
        "pdftotext failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("pdftotext prints UTF-8")
}

/// Words of `text` as pdftotext lays them out: whitespace runs collapsed, so a line wrap in
/// the PDF does not hide a phrase.
fn words(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[test]
fn pdftotext_reads_patient_nhs_number_scheme_and_outcome() {
    let path = temp_pdf(
        "example.pdf",
        &Letter::new(&composition(), &context()).to_pdf(),
    );
    let text = pdftotext(&path.0);
    let flat = words(&text);
    for expected in [
        "Social prescribing outcome",
        "Jane Example",
        "943 476 5919",
        "14 Feb 2001",
        "Riverside Medical Practice (A81001)",
        "Stand-in Community Link Workers",
        "30 Nov 2026",
        "Completed",
        OUTCOME_TEXT,
        "Life satisfaction 3 6",
        "Page 1 of 1",
        "SP-2026-000417",
    ] {
        assert!(
            flat.contains(expected),
            "pdftotext lacks {expected:?}:\n{text}"
        );
    }
    let outcome = flat.find("Seen three times").unwrap();
    assert!(
        outcome < flat.find("Needs and concerns").unwrap(),
        "outcome first"
    );
    assert!(
        flat.find("Status").unwrap() < outcome,
        "facts before the outcome"
    );
    assert!(text.contains('•'), "bullets survive as U+2022");
}

#[test]
fn pdftotext_finds_whose_letter_it_is_on_every_page() {
    let pdf = Letter::new(&long_composition(80), &context()).to_pdf();
    let path = temp_pdf("long.pdf", &pdf);
    let text = pdftotext(&path.0);
    let pages: Vec<&str> = text
        .split('\u{c}')
        .filter(|p| !p.trim().is_empty())
        .collect();
    assert!(pages.len() >= 3);
    for (i, page) in pages.iter().enumerate() {
        let flat = words(page);
        assert!(
            flat.contains("Jane Example"),
            "page {} lacks the name",
            i + 1
        );
        assert!(
            flat.contains("943 476 5919"),
            "page {} lacks the NHS number",
            i + 1
        );
        assert!(flat.contains(&format!("Page {} of {}", i + 1, pages.len())));
    }
}

#[test]
fn pdftotext_decodes_winansi_characters() {
    let comp = serde_json::json!({"section": [common::section(
        "Outcome",
        "<p>Caf&eacute; &pound;5 &lsquo;ok&rsquo; &ldquo;yes&rdquo; a&ndash;b c&mdash;d</p>",
    )]});
    let path = temp_pdf("winansi.pdf", &Letter::new(&comp, &context()).to_pdf());
    let text = pdftotext(&path.0);
    assert!(
        words(&text).contains("Café £5 ‘ok’ “yes” a–b c—d"),
        "{text}"
    );
}

#[test]
fn qpdf_finds_no_structural_errors() {
    let cases = [
        (
            "example-check.pdf",
            Letter::new(&composition(), &context()).to_pdf(),
        ),
        (
            "long-check.pdf",
            Letter::new(&long_composition(2_000), &context()).to_pdf(),
        ),
        (
            "empty-check.pdf",
            Letter::new(&serde_json::json!(null), &Default::default()).to_pdf(),
        ),
    ];
    for (name, pdf) in cases {
        let path = temp_pdf(name, &pdf);
        let output = run("qpdf", "qpdf", &["--check".as_ref(), path.0.as_os_str()]);
        let report = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success() && report.contains("No syntax or stream encoding errors"),
            "qpdf --check {name}:\n{report}{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}
