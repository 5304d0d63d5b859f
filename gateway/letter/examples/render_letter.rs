//! Renders the reference outcome letter (a made-up test patient and the example message a
//! scheme sends) as `outcome-letter.pdf`, `.html` and `.txt` in the directory given as the
//! only argument. `fixtures/letters/README.md` says how the fixtures are regenerated.

use std::path::PathBuf;
use std::process::ExitCode;

use serde_json::json;
use signpost_letter::{Letter, LetterContext};

fn main() -> ExitCode {
    let Some(dir) = std::env::args_os().nth(1).map(PathBuf::from) else {
        eprintln!("usage: render_letter OUTPUT_DIR");
        return ExitCode::from(2);
    };
    let letter = Letter::new(&composition(), &context());
    let outputs = [
        ("outcome-letter.pdf", letter.to_pdf()),
        ("outcome-letter.html", letter.to_html().into_bytes()),
        ("outcome-letter.txt", letter.to_text().into_bytes()),
    ];
    if let Err(e) = std::fs::create_dir_all(&dir) {
        eprintln!("cannot create {}: {e}", dir.display());
        return ExitCode::FAILURE;
    }
    for (name, bytes) in outputs {
        let path = dir.join(name);
        if let Err(e) = std::fs::write(&path, bytes) {
            eprintln!("cannot write {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
        println!("wrote {}", path.display());
    }
    ExitCode::SUCCESS
}

/// A made-up test patient (NHS number 943 476 5919 passes the Modulus 11 check).
fn context() -> LetterContext {
    LetterContext {
        given_name: "Jane".into(),
        family_name: "Example".into(),
        nhs_number: "9434765919".into(),
        birth_date: "2001-02-14".into(),
        practice_name: "Riverside Medical Practice".into(),
        practice_ods: "A81001".into(),
        scheme_name: "Stand-in Community Link Workers".into(),
        referral_date: "2026-09-01".into(),
        outcome_date: "2026-11-30".into(),
        status: "completed".into(),
        status_reason: None,
        referral_id: "SP-2026-000417".into(),
    }
}

fn section(title: &str, body: &str) -> serde_json::Value {
    json!({
        "title": title,
        "text": {
            "status": "generated",
            "div": format!("<div xmlns=\"http://www.w3.org/1999/xhtml\">{body}</div>")
        }
    })
}

/// The scheme's "message back to GP and referrer", as schemes send it.
fn composition() -> serde_json::Value {
    json!({
        "resourceType": "Composition",
        "status": "final",
        "type": {"coding": [{"system": "http://snomed.info/sct", "code": "371531000", "display": "Report of clinical encounter"}]},
        "subject": {"identifier": {"system": "https://fhir.nhs.uk/Id/nhs-number", "value": "9434765919"}},
        "date": "2026-11-30T10:00:00Z",
        "author": [{"display": "Stand-in Community Link Workers"}],
        "title": "Social prescribing: message back to GP and referrer",
        "section": [
            section("Outcome", "<p>Seen three times; referral completed. Now attends a weekly walking group and has a debt-advice plan.</p>"),
            section("Needs and concerns", "<ul><li>Loneliness</li><li>Money worries</li></ul>"),
            section("What matters to the person", "<p>Getting out of the house and meeting people.</p>"),
            section("Support offered", "<ul><li>Community walking group (taken up)</li><li>Citizens Advice debt service (taken up)</li></ul>"),
            section("Wellbeing (ONS4)", "<table><tr><th></th><th>Before</th><th>After</th></tr><tr><td>Life satisfaction</td><td>3</td><td>6</td></tr><tr><td>Anxiety</td><td>8</td><td>5</td></tr></table>"),
            section("Link worker", "<p>Stand-in link worker, 01234 567890</p>"),
        ]
    })
}
