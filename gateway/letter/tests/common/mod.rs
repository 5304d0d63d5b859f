//! Shared by the integration tests: the reference letter's inputs and a small reader of the
//! PDF structure the crate writes (xref, trailer, page content streams).

#![allow(dead_code)]

use serde_json::{json, Value};
use signpost_letter::LetterContext;

/// The made-up test patient of the reference letter.
pub fn context() -> LetterContext {
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

pub fn section(title: &str, body: &str) -> Value {
    json!({
        "title": title,
        "text": {"status": "generated", "div": format!("<div xmlns=\"http://www.w3.org/1999/xhtml\">{body}</div>")}
    })
}

pub const OUTCOME_TEXT: &str = "Seen three times; referral completed. Now attends a weekly walking group and has a debt-advice plan.";

/// The example message from the brief, sections in the order schemes send them except the
/// outcome, which is put last to prove it is moved first.
pub fn composition() -> Value {
    json!({
        "resourceType": "Composition",
        "status": "final",
        "title": "Social prescribing: message back to GP and referrer",
        "section": [
            section("Needs and concerns", "<ul><li>Loneliness</li><li>Money worries</li></ul>"),
            section("What matters to the person", "<p>Getting out of the house and meeting people.</p>"),
            section("Support offered", "<ul><li>Community walking group (taken up)</li><li>Citizens Advice debt service (taken up)</li></ul>"),
            section("Wellbeing (ONS4)", "<table><tr><th></th><th>Before</th><th>After</th></tr><tr><td>Life satisfaction</td><td>3</td><td>6</td></tr><tr><td>Anxiety</td><td>8</td><td>5</td></tr></table>"),
            section("Link worker", "<p>Stand-in link worker, 01234 567890</p>"),
            section("Outcome", &format!("<p>{OUTCOME_TEXT}</p>")),
        ]
    })
}

/// A composition long enough to take several pages.
pub fn long_composition(paragraphs: usize) -> Value {
    let para = "The link worker met the person at home and then at the library. They talked about \
                what matters to them, the groups nearby and how to get there; they agreed a plan. ";
    let body: String = (0..paragraphs)
        .map(|i| format!("<p>Visit {i}. {para}{para}</p>"))
        .collect();
    json!({"section": [
        section("Outcome", &format!("<p>{OUTCOME_TEXT}</p>")),
        section("Contact notes", &body),
    ]})
}

/// The xref table's offsets by object number, and the startxref value.
pub struct Xref {
    pub offsets: Vec<(usize, usize)>,
    pub startxref: usize,
    pub trailer: String,
}

fn find(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    hay.get(from..)?
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|p| p + from)
}

fn rfind(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).rposition(|w| w == needle)
}

/// Reads the xref table the way a PDF reader does: from `startxref` at the end.
pub fn xref(pdf: &[u8]) -> Xref {
    let at = rfind(pdf, b"startxref\n").expect("startxref");
    let tail = std::str::from_utf8(&pdf[at + 10..]).expect("ascii tail");
    let startxref: usize = tail
        .lines()
        .next()
        .unwrap()
        .parse()
        .expect("startxref number");
    let table = std::str::from_utf8(&pdf[startxref..]).expect("ascii xref");
    assert!(
        table.starts_with("xref\n0 "),
        "startxref must point at the xref keyword"
    );
    let mut lines = table.lines();
    lines.next();
    let header = lines.next().unwrap();
    let count: usize = header.split(' ').nth(1).unwrap().parse().unwrap();
    let mut offsets = Vec::new();
    for num in 0..count {
        let line = lines.next().expect("xref entry");
        assert_eq!(
            line.len(),
            19,
            "entries are 20 bytes with the EOL: {line:?}"
        );
        if line.ends_with(" n ") {
            offsets.push((num, line[..10].parse().unwrap()));
        }
    }
    let trailer_at = find(pdf, b"trailer", startxref).expect("trailer");
    let trailer = String::from_utf8_lossy(&pdf[trailer_at..]).into_owned();
    Xref {
        offsets,
        startxref,
        trailer,
    }
}

/// The page content streams, in order (the only streams the crate writes).
pub fn content_streams(pdf: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(start) = find(pdf, b"stream\n", from) {
        if pdf[..start].ends_with(b"end") {
            from = start + 7;
            continue;
        }
        let end = find(pdf, b"\nendstream", start).expect("endstream");
        out.push(String::from_utf8_lossy(&pdf[start + 7..end]).into_owned());
        from = end + 10;
    }
    out
}

/// Tiny xorshift64* generator: reproducible randomness without the rand crate.
pub struct XorShift(pub u64);

impl XorShift {
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}
