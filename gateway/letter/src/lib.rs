//! The outcome letter a GP reads: a social prescribing scheme's "message back to GP and
//! referrer" (PRSB), a FHIR R4 Composition, turned into a letter that can be read in ten
//! seconds: who the patient is, which scheme, the dates, and the outcome first.
//!
//! This module owns the model: [`LetterContext`] (what the gateway already knows about the
//! referral), [`Letter`] (parsed once: the header facts and the ordered sections of blocks)
//! and the rules that pick and order what the GP sees. Rendering lives in `pdf` (layout on
//! A4) with `pdf_file` (PDF 1.7 syntax) and `fonts` (Helvetica metrics), `html` (accessible
//! HTML5) and `text` (plain text at 80 columns), all reading the same [`Letter`] so the three
//! always agree; [`xhtml`] reads the scheme's narrative into blocks.
//!
//! Everything is bounded and panic-free for hostile input, and nothing here logs: the content
//! is patient data.

mod fonts;
mod html;
mod pdf;
mod pdf_file;
mod text;
mod wrap;
pub mod xhtml;

use serde_json::Value;

/// The heading of every letter, so a GP recognises the kind of letter before reading it.
pub const LETTER_HEADING: &str = "Social prescribing outcome";

/// The subject used when the Composition has no usable title of its own.
const DEFAULT_SUBJECT: &str = "Social prescribing: message back to GP and referrer";

/// Most sections read from one Composition; a real message has fewer than ten.
pub const MAX_SECTIONS: usize = 64;

/// How deep nested `section.section` are followed; deeper ones are ignored.
const MAX_SECTION_DEPTH: usize = 3;

/// Characters of narrative read across the whole letter. Far beyond any real message, small
/// enough that the HTML and text renderings stay bounded (the PDF is also capped by pages).
pub const MAX_LETTER_CHARS: usize = 200_000;

/// Characters kept from one header fact or section title (names, ODS codes, dates).
const MAX_FIELD_CHARS: usize = 200;

/// Characters kept from the status reason, which is free text from the scheme.
const MAX_REASON_CHARS: usize = 1_000;

/// What the gateway knows about the referral, independent of what the scheme sent: the
/// letter's header facts come from here, not from the Composition, so a scheme cannot
/// relabel whose letter it is.
///
/// Dates are `YYYY-MM-DD` (a longer FHIR dateTime is accepted; its date part is shown).
/// Deliberately no `Debug`: the fields are patient data and must not reach a log by accident.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct LetterContext {
    /// Patient's given name(s), e.g. `Jane`.
    pub given_name: String,
    /// Patient's family name, e.g. `Example`.
    pub family_name: String,
    /// NHS number, 10 digits (spaces tolerated); shown as `943 476 5919`.
    pub nhs_number: String,
    /// Date of birth, `YYYY-MM-DD`; shown as `14 Feb 2001`.
    pub birth_date: String,
    /// The patient's registered GP practice.
    pub practice_name: String,
    /// The practice's ODS code, e.g. `A81001`.
    pub practice_ods: String,
    /// The social prescribing scheme that sent the outcome.
    pub scheme_name: String,
    /// When the referral was made.
    pub referral_date: String,
    /// When the outcome was sent: the letter's date.
    pub outcome_date: String,
    /// The referral's final Task status: `completed`, `rejected`, `cancelled`, `failed`, ...
    pub status: String,
    /// Why, where the scheme gave a reason (typically for `rejected` or `cancelled`).
    pub status_reason: Option<String>,
    /// The referral id, printed on every page so the letter can be traced.
    pub referral_id: String,
}

impl std::fmt::Debug for LetterContext {
    /// Redacted: the context is patient data.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LetterContext { .. }")
    }
}

/// One labelled fact of the header block ("NHS number" → "943 476 5919").
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fact {
    /// The label, always one of a fixed set so the block reads the same in every letter.
    pub label: &'static str,
    /// The value as displayed.
    pub value: String,
}

/// One cell of a narrative table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cell {
    /// The cell text; `\n` marks a line break the scheme put there.
    pub text: String,
    /// Whether the scheme marked it as a header (`th`).
    pub header: bool,
}

/// A block of narrative, the unit the renderers lay out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Block {
    /// A heading inside a section (`h1`-`h6`, or a nested section's title).
    Heading(String),
    /// Running text; `\n` marks a line break (`br`).
    Paragraph(String),
    /// A bulleted (`ul`) or numbered (`ol`) list; nested lists are flattened into it.
    List {
        /// Numbered rather than bulleted.
        ordered: bool,
        /// The items' text.
        items: Vec<String>,
    },
    /// A table: rows of cells, at most [`xhtml::MAX_COLUMNS`] per row.
    Table(Vec<Vec<Cell>>),
}

/// One section of the letter, in the order the GP reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Section {
    /// The scheme's title for it (or one derived from its code).
    pub title: String,
    /// The narrative.
    pub blocks: Vec<Block>,
    /// Whether this is the outcome, which is always shown first.
    pub is_outcome: bool,
}

/// The letter, parsed once from the Composition and the context; render it with
/// [`Letter::to_pdf`], [`Letter::to_html`] or [`Letter::to_text`].
#[derive(Clone, PartialEq)]
pub struct Letter {
    pub(crate) document_title: String,
    pub(crate) subject: String,
    pub(crate) author: String,
    pub(crate) patient_name: String,
    pub(crate) nhs_number: String,
    pub(crate) facts: Vec<Fact>,
    pub(crate) sections: Vec<Section>,
    pub(crate) reference: String,
    pub(crate) letter_date: Option<(u16, u8, u8)>,
}

impl std::fmt::Debug for Letter {
    /// Redacted: the letter is patient data.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Letter { .. }")
    }
}

impl Letter {
    /// Reads the Composition (tolerantly: anything missing or of the wrong type is skipped)
    /// and takes the header facts from `ctx`. Never panics; work and size are bounded.
    pub fn new(composition: &Value, ctx: &LetterContext) -> Letter {
        let patient_name = {
            let name = clean(
                &format!("{} {}", ctx.given_name, ctx.family_name),
                MAX_FIELD_CHARS,
            );
            if name.is_empty() {
                "Name not recorded".to_string()
            } else {
                name
            }
        };
        let nhs_number = display_nhs_number(&ctx.nhs_number);
        let scheme = or_not_recorded(clean(&ctx.scheme_name, MAX_FIELD_CHARS));
        let practice = {
            let name = clean(&ctx.practice_name, MAX_FIELD_CHARS);
            let ods = clean(&ctx.practice_ods, MAX_FIELD_CHARS);
            match (name.is_empty(), ods.is_empty()) {
                (false, false) => format!("{name} ({ods})"),
                (false, true) => name,
                (true, false) => ods,
                (true, true) => "Not recorded".to_string(),
            }
        };
        let mut facts = vec![
            fact("Patient", patient_name.clone()),
            fact("NHS number", nhs_number.clone()),
            fact("Date of birth", display_date(&ctx.birth_date)),
            fact("GP practice", practice),
            fact("Scheme", scheme.clone()),
            fact("Referred", display_date(&ctx.referral_date)),
            fact("Outcome date", display_date(&ctx.outcome_date)),
            fact("Status", display_status(&ctx.status)),
        ];
        // The reason gets its own row: the status stays a few words a GP takes in at a
        // glance, and the scheme's explanation can run to several lines under it.
        if let Some(reason) = ctx.status_reason.as_deref() {
            let reason = clean(reason, MAX_REASON_CHARS);
            if !reason.is_empty() {
                facts.push(fact("Reason", reason));
            }
        }
        let subject = composition
            .get("title")
            .and_then(Value::as_str)
            .map(|t| clean(t, MAX_FIELD_CHARS))
            .filter(|t| !t.is_empty())
            .unwrap_or_else(|| DEFAULT_SUBJECT.to_string());
        let reference = or_not_recorded(clean(&ctx.referral_id, MAX_FIELD_CHARS));
        Letter {
            document_title: format!("{LETTER_HEADING}: {patient_name}"),
            subject,
            author: scheme,
            patient_name,
            nhs_number,
            facts,
            sections: read_sections(composition),
            reference,
            letter_date: parse_date(&ctx.outcome_date),
        }
    }

    /// The letter's heading, the same for every letter: [`LETTER_HEADING`].
    pub fn title(&self) -> &str {
        LETTER_HEADING
    }

    /// The document title (PDF `/Title`, HTML `<title>`): the heading plus the patient's name,
    /// so a GP with several letters open can tell the windows apart.
    pub fn document_title(&self) -> &str {
        &self.document_title
    }

    /// The header facts in display order: Patient, NHS number, Date of birth, GP practice,
    /// Scheme, Referred, Outcome date, Status, and Reason when the scheme gave one.
    pub fn facts(&self) -> &[Fact] {
        &self.facts
    }

    /// The sections in reading order; the first is the outcome.
    pub fn sections(&self) -> &[Section] {
        &self.sections
    }

    /// The patient's name as shown (also in the running header of later pages).
    pub fn patient_name(&self) -> &str {
        &self.patient_name
    }

    /// The NHS number as shown, `943 476 5919`.
    pub fn nhs_number(&self) -> &str {
        &self.nhs_number
    }

    /// The referral reference printed in every page's footer.
    pub fn reference(&self) -> &str {
        &self.reference
    }

    /// A PDF 1.7 document, A4, standard Helvetica fonts; the same bytes for the same input.
    pub fn to_pdf(&self) -> Vec<u8> {
        pdf::render(self)
    }

    /// A complete, accessible HTML5 document (`lang="en-GB"`, headings, tables with `scope`).
    pub fn to_html(&self) -> String {
        html::render(self)
    }

    /// Plain text, no line longer than 80 characters, for systems that prefer it.
    pub fn to_text(&self) -> String {
        text::render(self)
    }
}

fn fact(label: &'static str, value: String) -> Fact {
    Fact { label, value }
}

fn or_not_recorded(s: String) -> String {
    if s.is_empty() {
        "Not recorded".to_string()
    } else {
        s
    }
}

/// Reads the Composition's sections, the outcome moved first. A Composition with no
/// sections still yields one, from its own narrative or a sentence saying there was none,
/// so the letter never starts with an empty space where the outcome belongs.
fn read_sections(composition: &Value) -> Vec<Section> {
    let mut budget = MAX_LETTER_CHARS;
    let mut truncated = false;
    let mut sections = Vec::new();
    if let Some(list) = composition.get("section").and_then(Value::as_array) {
        for raw in list.iter().take(MAX_SECTIONS) {
            if !raw.is_object() {
                continue;
            }
            let title = section_title(raw).unwrap_or_else(|| "Details".to_string());
            let mut blocks = Vec::new();
            read_section_body(raw, 0, &mut blocks, &mut budget, &mut truncated);
            if blocks.is_empty() {
                blocks.push(Block::Paragraph(empty_section_text(raw)));
            }
            sections.push(Section {
                title,
                blocks,
                is_outcome: false,
            });
        }
        if list.len() > MAX_SECTIONS {
            truncated = true;
        }
    }
    if sections.is_empty() {
        let mut blocks = Vec::new();
        if let Some(div) = narrative(composition) {
            let fragment = xhtml::read_limited(div, budget);
            truncated |= fragment.truncated;
            blocks = fragment.blocks;
        }
        let title = if blocks.is_empty() {
            blocks.push(Block::Paragraph(
                "The scheme sent no further details with this outcome.".to_string(),
            ));
            "Outcome"
        } else {
            "Message from the scheme"
        };
        sections.push(Section {
            title: title.to_string(),
            blocks,
            is_outcome: true,
        });
    } else {
        let outcome = outcome_index(&sections);
        let mut first = sections.remove(outcome);
        first.is_outcome = true;
        sections.insert(0, first);
    }
    if truncated {
        if let Some(last) = sections.last_mut() {
            last.blocks.push(Block::Paragraph(
                "... truncated: the scheme's message is longer than this letter can show."
                    .to_string(),
            ));
        }
    }
    sections
}

/// The section shown first: the first whose title (its own, else its code's display) starts
/// with "Outcome" in any case, else the first section.
fn outcome_index(sections: &[Section]) -> usize {
    sections
        .iter()
        .position(|s| starts_with_outcome(&s.title))
        .unwrap_or(0)
}

fn starts_with_outcome(s: &str) -> bool {
    s.trim_start()
        .get(..7)
        .is_some_and(|p| p.eq_ignore_ascii_case("outcome"))
}

/// The title a section is shown under: its own, or else its code's text or display, so a
/// coded section without a title still says what it is.
fn section_title(section: &Value) -> Option<String> {
    let own = section
        .get("title")
        .and_then(Value::as_str)
        .map(|t| clean(t, MAX_FIELD_CHARS))
        .filter(|t| !t.is_empty());
    own.or_else(|| code_display(section.get("code")?))
}

/// A CodeableConcept's text, else its first coding's display.
fn code_display(code: &Value) -> Option<String> {
    let text = code.get("text").and_then(Value::as_str);
    let display = || {
        code.get("coding")?
            .as_array()?
            .iter()
            .take(16)
            .find_map(|c| c.get("display").and_then(Value::as_str))
    };
    text.or_else(display)
        .map(|t| clean(t, MAX_FIELD_CHARS))
        .filter(|t| !t.is_empty())
}

/// The XHTML narrative of a resource or section, when it is a string.
fn narrative(v: &Value) -> Option<&str> {
    v.get("text")?.get("div")?.as_str()
}

fn read_section_body(
    section: &Value,
    depth: usize,
    blocks: &mut Vec<Block>,
    budget: &mut usize,
    truncated: &mut bool,
) {
    if let Some(div) = narrative(section) {
        let fragment = xhtml::read_limited(div, *budget);
        *budget = budget.saturating_sub(chars_in(&fragment.blocks));
        *truncated |= fragment.truncated;
        blocks.extend(fragment.blocks);
    }
    if depth + 1 >= MAX_SECTION_DEPTH {
        return;
    }
    let Some(children) = section.get("section").and_then(Value::as_array) else {
        return;
    };
    for child in children.iter().take(MAX_SECTIONS) {
        if *budget == 0 {
            *truncated = true;
            return;
        }
        if !child.is_object() {
            continue;
        }
        if let Some(title) = section_title(child) {
            *budget = budget.saturating_sub(title.chars().count());
            blocks.push(Block::Heading(title));
        }
        read_section_body(child, depth + 1, blocks, budget, truncated);
    }
}

/// Text for a section with no narrative: its `emptyReason` where given.
fn empty_section_text(section: &Value) -> String {
    match section.get("emptyReason").and_then(code_display) {
        Some(reason) => format!("Nothing recorded ({reason})."),
        None => "Nothing recorded.".to_string(),
    }
}

fn chars_in(blocks: &[Block]) -> usize {
    blocks
        .iter()
        .map(|b| match b {
            Block::Heading(t) | Block::Paragraph(t) => t.chars().count(),
            Block::List { items, .. } => items.iter().map(|i| i.chars().count()).sum(),
            Block::Table(rows) => rows.iter().flatten().map(|c| c.text.chars().count()).sum(),
        })
        .sum()
}

/// A header fact made safe to print: control characters dropped, whitespace collapsed,
/// at most `max` characters (an ellipsis marks a cut).
pub(crate) fn clean(s: &str, max: usize) -> String {
    let mut out = String::new();
    let mut count = 0;
    let mut space = false;
    for c in s.chars() {
        if c.is_whitespace() {
            space = true;
            continue;
        }
        if c.is_control() {
            continue;
        }
        let gap = space && !out.is_empty();
        if count + usize::from(gap) >= max {
            out.push('…');
            break;
        }
        if gap {
            out.push(' ');
            count += 1;
        }
        space = false;
        out.push(c);
        count += 1;
    }
    out
}

/// `9434765919` → `943 476 5919`, the grouping NHS staff read and type. Anything that is
/// not 10 digits is shown as given rather than guessed at.
pub fn display_nhs_number(raw: &str) -> String {
    let digits: String = raw.chars().filter(|c| !c.is_whitespace()).collect();
    if digits.len() == 10 && digits.bytes().all(|b| b.is_ascii_digit()) {
        format!("{} {} {}", &digits[..3], &digits[3..6], &digits[6..])
    } else {
        or_not_recorded(clean(raw, MAX_FIELD_CHARS))
    }
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// `2001-02-14` → `14 Feb 2001`: unambiguous to a UK reader (unlike `02/14/2001`).
/// A FHIR dateTime shows its date; a partial date shows what it has; anything else is
/// shown as given.
pub fn display_date(raw: &str) -> String {
    let t = raw.trim();
    if let Some((y, m, d)) = parse_date(t) {
        return format!("{d} {} {y}", MONTHS[usize::from(m) - 1]);
    }
    let b = t.as_bytes();
    let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
    if b.len() == 7 && digits(0..4) && b[4] == b'-' && digits(5..7) {
        let m: usize = t[5..7].parse().unwrap_or(0);
        if (1..=12).contains(&m) {
            return format!("{} {}", MONTHS[m - 1], &t[..4]);
        }
    }
    or_not_recorded(clean(raw, MAX_FIELD_CHARS))
}

/// The date part of `YYYY-MM-DD[...]`, when it is a real calendar date.
pub(crate) fn parse_date(raw: &str) -> Option<(u16, u8, u8)> {
    let t = raw.trim();
    let b = t.as_bytes();
    if b.len() < 10 || b[4] != b'-' || b[7] != b'-' || (b.len() > 10 && b[10] != b'T') {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<u16> {
        let part = &b[r];
        if !part.iter().all(u8::is_ascii_digit) {
            return None;
        }
        part.iter()
            .try_fold(0u16, |acc, d| Some(acc * 10 + u16::from(d - b'0')))
    };
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let days = match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return None,
    };
    if d == 0 || d > days {
        return None;
    }
    Some((y, u8::try_from(m).ok()?, u8::try_from(d).ok()?))
}

/// A Task status as a GP would say it ("rejected" → "Rejected by the scheme").
pub fn display_status(status: &str) -> String {
    let code = clean(status, MAX_FIELD_CHARS);
    match code.to_ascii_lowercase().as_str() {
        "completed" => "Completed".to_string(),
        "rejected" => "Rejected by the scheme".to_string(),
        "cancelled" => "Cancelled".to_string(),
        "failed" => "Not completed".to_string(),
        "in-progress" => "In progress".to_string(),
        "on-hold" => "On hold".to_string(),
        "accepted" => "Accepted".to_string(),
        "requested" => "Requested".to_string(),
        "entered-in-error" => "Entered in error".to_string(),
        "" => "Not recorded".to_string(),
        _ => {
            let spaced = code.replace('-', " ");
            let mut chars = spaced.chars();
            match chars.next() {
                Some(first) => first.to_uppercase().chain(chars).collect(),
                None => spaced,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ctx() -> LetterContext {
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
            referral_id: "ref-123".into(),
        }
    }

    fn section(title: &str, div: &str) -> Value {
        json!({"title": title, "text": {"status": "generated", "div": div}})
    }

    #[test]
    fn nhs_number_is_grouped_3_3_4() {
        assert_eq!(display_nhs_number("9434765919"), "943 476 5919");
        assert_eq!(display_nhs_number("943 476 5919"), "943 476 5919");
        assert_eq!(display_nhs_number("12345"), "12345");
        assert_eq!(display_nhs_number(""), "Not recorded");
        assert_eq!(
            display_nhs_number("９４３４７６５９１９"),
            "９４３４７６５９１９"
        );
    }

    #[test]
    fn dates_read_as_day_month_year() {
        assert_eq!(display_date("2001-02-14"), "14 Feb 2001");
        assert_eq!(display_date("2026-11-30T10:00:00Z"), "30 Nov 2026");
        assert_eq!(display_date("2024-02-29"), "29 Feb 2024");
        assert_eq!(display_date("2023-02-29"), "2023-02-29");
        assert_eq!(display_date("2026-09"), "Sep 2026");
        assert_eq!(display_date("2026-13-01"), "2026-13-01");
        assert_eq!(display_date("é-é-é-é-é"), "é-é-é-é-é");
        assert_eq!(display_date(""), "Not recorded");
        assert_eq!(parse_date("2026-11-30x"), None);
    }

    #[test]
    fn status_reads_as_words_and_the_reason_gets_its_own_row() {
        assert_eq!(display_status("completed"), "Completed");
        assert_eq!(display_status("rejected"), "Rejected by the scheme");
        assert_eq!(display_status("some-new-state"), "Some new state");
        assert_eq!(display_status(" "), "Not recorded");
        let mut rejected = ctx();
        rejected.status = "rejected".into();
        rejected.status_reason = Some("Outside  our area".into());
        let letter = Letter::new(&json!({}), &rejected);
        let last: Vec<_> = letter.facts()[7..]
            .iter()
            .map(|f| (f.label, f.value.as_str()))
            .collect();
        assert_eq!(
            last,
            [
                ("Status", "Rejected by the scheme"),
                ("Reason", "Outside our area")
            ]
        );
        rejected.status_reason = Some(" \n ".into());
        assert_eq!(Letter::new(&json!({}), &rejected).facts().len(), 8);
    }

    #[test]
    fn outcome_section_comes_first_whatever_its_position() {
        let comp = json!({"section": [
            section("Needs", "<div><p>Loneliness</p></div>"),
            section("  OUTCOME of referral", "<div><p>Done.</p></div>"),
            section("Link worker", "<div><p>Sam</p></div>"),
        ]});
        let letter = Letter::new(&comp, &ctx());
        let titles: Vec<_> = letter.sections().iter().map(|s| s.title.as_str()).collect();
        assert_eq!(titles, ["OUTCOME of referral", "Needs", "Link worker"]);
        assert!(letter.sections()[0].is_outcome);
        assert!(!letter.sections()[1].is_outcome);
    }

    #[test]
    fn without_an_outcome_title_the_first_section_leads() {
        let comp = json!({"section": [
            section("Summary", "<div><p>A</p></div>"),
            section("Notes", "<div><p>B</p></div>"),
        ]});
        let letter = Letter::new(&comp, &ctx());
        assert_eq!(letter.sections()[0].title, "Summary");
        assert!(letter.sections()[0].is_outcome);
    }

    #[test]
    fn section_title_falls_back_to_code_display() {
        let comp = json!({"section": [
            {"code": {"coding": [{"system": "http://snomed.info/sct", "code": "1", "display": "Outcome of referral"}]},
             "text": {"div": "<div>ok</div>"}},
        ]});
        let letter = Letter::new(&comp, &ctx());
        assert_eq!(letter.sections()[0].title, "Outcome of referral");
    }

    #[test]
    fn composition_without_sections_uses_its_narrative_or_says_so() {
        let with_text = json!({"text": {"div": "<div><p>All done.</p></div>"}});
        let letter = Letter::new(&with_text, &ctx());
        assert_eq!(
            letter.sections()[0].blocks,
            vec![Block::Paragraph("All done.".into())]
        );
        let empty = Letter::new(&json!({}), &ctx());
        assert_eq!(empty.sections().len(), 1);
        assert_eq!(empty.sections()[0].title, "Outcome");
        let not_object = Letter::new(&json!([1, 2, "x"]), &LetterContext::default());
        assert_eq!(not_object.patient_name(), "Name not recorded");
        assert_eq!(not_object.sections().len(), 1);
    }

    #[test]
    fn wrong_types_are_skipped_not_fatal() {
        let comp = json!({"title": 5, "section": [
            7, null, {"title": ["x"], "text": {"div": 12}},
            {"title": "Outcome", "text": "not an object", "section": "nope"},
        ]});
        let letter = Letter::new(&comp, &ctx());
        assert_eq!(letter.sections().len(), 2);
        assert_eq!(letter.sections()[0].title, "Outcome");
        assert_eq!(
            letter.sections()[0].blocks,
            vec![Block::Paragraph("Nothing recorded.".into())]
        );
        assert_eq!(letter.sections()[1].title, "Details");
        assert_eq!(letter.subject, DEFAULT_SUBJECT);
    }

    #[test]
    fn nested_sections_become_headings_to_a_bounded_depth() {
        let mut inner = json!({"title": "Level 9", "text": {"div": "<div>deep</div>"}});
        for level in (1..9).rev() {
            inner = json!({"title": format!("Level {level}"), "section": [inner]});
        }
        let comp = json!({"section": [inner]});
        let letter = Letter::new(&comp, &ctx());
        let blocks = &letter.sections()[0].blocks;
        assert_eq!(
            blocks,
            &vec![
                Block::Heading("Level 2".into()),
                Block::Heading("Level 3".into())
            ]
        );
    }

    #[test]
    fn header_facts_come_from_the_context() {
        let letter = Letter::new(&json!({}), &ctx());
        let facts: Vec<_> = letter
            .facts()
            .iter()
            .map(|f| (f.label, f.value.as_str()))
            .collect();
        assert_eq!(
            facts,
            [
                ("Patient", "Jane Example"),
                ("NHS number", "943 476 5919"),
                ("Date of birth", "14 Feb 2001"),
                ("GP practice", "Riverside Medical Practice (A81001)"),
                ("Scheme", "Stand-in Community Link Workers"),
                ("Referred", "1 Sep 2026"),
                ("Outcome date", "30 Nov 2026"),
                ("Status", "Completed"),
            ]
        );
        assert_eq!(letter.title(), "Social prescribing outcome");
        assert_eq!(
            letter.document_title(),
            "Social prescribing outcome: Jane Example"
        );
        assert_eq!(format!("{letter:?}"), "Letter { .. }");
        assert_eq!(format!("{:?}", ctx()), "LetterContext { .. }");
    }

    #[test]
    fn fields_are_cleaned_and_capped() {
        assert_eq!(clean("  a\u{0}\tb \n c  ", 10), "a b c");
        let long = "x".repeat(500);
        assert_eq!(clean(&long, 5), "xxxxx…");
    }

    #[test]
    fn narrative_budget_caps_the_letter() {
        let big = format!("<div><p>{}</p></div>", "word ".repeat(30_000));
        let sections: Vec<Value> = (0..5).map(|i| section(&format!("S{i}"), &big)).collect();
        let letter = Letter::new(&json!({ "section": sections }), &ctx());
        let total = chars_in(
            &letter
                .sections
                .iter()
                .flat_map(|s| s.blocks.clone())
                .collect::<Vec<_>>(),
        );
        assert!(total <= MAX_LETTER_CHARS + 200, "{total}");
        let last = letter.sections().last().and_then(|s| s.blocks.last());
        assert!(matches!(last, Some(Block::Paragraph(p)) if p.starts_with("... truncated")));
    }
}
