//! The outcome letter as an MDM^T02 (original document notification and content), the way
//! Signpost files a letter at a GP system that speaks HL7 v2; and reading one back.
//!
//! This module owns the MDM's shape. Its input is the DocumentReference Signpost files at GP
//! systems (`gateway/src/referral.rs::letter_document`: `subject.identifier` the NHS number,
//! `content[0].attachment` with `contentType`, base64 `data` and `title`, `date`, `author`),
//! and, when the caller has it, the Patient for demographics. It does not send the message or
//! wait for the ACK ([`crate::mllp::send`], [`crate::ack::parse`]).
//!
//! # Segments
//! - `MSH`: `MDM^T02^MDM_T02`, version 2.5, `UNICODE UTF-8` in MSH-18, original-mode ACK.
//! - `EVN`: `T02` and the time of the message.
//! - `PID`: PID-3 `<NHS number>^^^NHS^NH`; name, birth date, sex and address from the Patient
//!   when given.
//! - `PV1`: patient class `N` (not applicable).
//! - `TXA`: TXA-2 the document type's SNOMED CT code (DocumentReference.type, default
//!   `371531000` Report of clinical encounter), TXA-3 `TX` or `AP`, TXA-4 the document date,
//!   TXA-6 the attachment's creation time, TXA-9 the author (identifier ^ display), TXA-12 the
//!   DocumentReference id, TXA-17 `AU` (authenticated), TXA-19 `AV` (available).
//! - `OBX`: the letter. OBX-3 is `<type code>^<title>^SCT`.
//!   - `text/plain` that is UTF-8: value type `TX`, one OBX per line (split on line feeds; a
//!     carriage return is kept, escaped as `\X0D\`), so receivers that show TX lines show the
//!     letter as written.
//!   - Anything else (HTML, PDF, ...): value type `ED`, `^<type>^<subtype>^Base64^<data>`, the
//!     MIME type split at `/` (parameters such as `charset` are not carried).
//!
//! [`read_letter`] reverses this, so the letter's bytes survive the trip exactly.

use base64::Engine;
use serde_json::Value;
use time::OffsetDateTime;

use crate::datetime;
use crate::message::{Delimiters, Field, Message, Repetition, Segment};
use crate::ref_i12::NhsNumber;

const DEFAULT_TYPE: (&str, &str) = ("371531000", "Report of clinical encounter");

/// Who sends the MDM to whom, and its identity.
#[derive(Debug, Clone)]
pub struct MdmHeader {
    /// MSH-3, e.g. `SIGNPOST`.
    pub sending_application: String,
    /// MSH-4.
    pub sending_facility: String,
    /// MSH-5, the GP system.
    pub receiving_application: String,
    /// MSH-6, the practice (ODS code).
    pub receiving_facility: String,
    /// MSH-10. Use the same id when resending the same letter.
    pub control_id: String,
    /// MSH-7 and EVN-2.
    pub at: OffsetDateTime,
}

/// Why a letter cannot become an MDM, or an MDM cannot be read as a letter.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MdmError {
    #[error("not a DocumentReference")]
    NotADocumentReference,
    #[error("{0} is required")]
    Missing(&'static str),
    #[error("the subject's NHS number is not valid")]
    BadNhsNumber,
    #[error("the attachment's data is not base64")]
    BadData,
    #[error("the MDM has no {0} segment")]
    MissingSegment(&'static str),
    #[error("OBX-5 is not a letter this module can read (value type or encoding)")]
    UnreadableContent,
}

/// A letter read back from an MDM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Letter {
    /// TXA-12.
    pub document_id: String,
    /// `type/subtype`, lower case (`text/plain` for TX lines).
    pub content_type: String,
    pub data: Vec<u8>,
    /// OBX-3's text.
    pub title: Option<String>,
}

fn str_at<'a>(v: &'a Value, pointer: &str) -> Option<&'a str> {
    v.pointer(pointer)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

/// Build the MDM^T02 for `document` (a DocumentReference), with demographics from `patient`
/// when given. The text is ready to frame.
pub fn build(
    document: &Value,
    patient: Option<&Value>,
    header: &MdmHeader,
) -> Result<String, MdmError> {
    if str_at(document, "/resourceType") != Some("DocumentReference") {
        return Err(MdmError::NotADocumentReference);
    }
    let id = str_at(document, "/id").ok_or(MdmError::Missing("DocumentReference.id"))?;
    let nhs = str_at(document, "/subject/identifier/value")
        .ok_or(MdmError::Missing("DocumentReference.subject.identifier"))?;
    let nhs = NhsNumber::parse(nhs).map_err(|_| MdmError::BadNhsNumber)?;
    let attachment = document
        .pointer("/content/0/attachment")
        .ok_or(MdmError::Missing("DocumentReference.content[0].attachment"))?;
    let content_type = str_at(attachment, "/contentType").ok_or(MdmError::Missing(
        "DocumentReference.content[0].attachment.contentType",
    ))?;
    let data = str_at(attachment, "/data").ok_or(MdmError::Missing(
        "DocumentReference.content[0].attachment.data",
    ))?;
    let compact: String = data.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(compact.as_bytes())
        .map_err(|_| MdmError::BadData)?;
    let (type_code, type_display) = match (
        str_at(document, "/type/coding/0/code"),
        str_at(document, "/type/coding/0/display"),
    ) {
        (Some(c), d) => (c, d.unwrap_or("")),
        (None, _) => DEFAULT_TYPE,
    };
    let title = str_at(attachment, "/title")
        .or(str_at(document, "/description"))
        .unwrap_or(type_display);
    let at = datetime::to_hl7(header.at);

    let mut msh = Segment::new("MSH");
    msh.set(3, Field::text(&header.sending_application))
        .set(4, Field::text(&header.sending_facility))
        .set(5, Field::text(&header.receiving_application))
        .set(6, Field::text(&header.receiving_facility))
        .set(7, Field::text(&at))
        .set(9, Field::from_components(&["MDM", "T02", "MDM_T02"]))
        .set(10, Field::text(&header.control_id))
        .set(11, Field::text("P"))
        .set(12, Field::text("2.5"))
        .set(17, Field::text("GBR"))
        .set(18, Field::text("UNICODE UTF-8"));

    let mut evn = Segment::new("EVN");
    evn.set(1, Field::text("T02")).set(2, Field::text(&at));

    let mut pid = Segment::new("PID");
    pid.set(1, Field::text("1")).set(
        3,
        Field::from_components(&[nhs.as_str(), "", "", "NHS", "NH"]),
    );
    if let Some(p) = patient {
        demographics(&mut pid, p);
    }

    let mut pv1 = Segment::new("PV1");
    pv1.set(1, Field::text("1")).set(2, Field::text("N"));

    let lines = text_lines(content_type, &bytes);
    let mut txa = Segment::new("TXA");
    txa.set(1, Field::text("1"))
        .set(2, Field::text(type_code))
        .set(3, Field::text(if lines.is_some() { "TX" } else { "AP" }));
    if let Some(date) = str_at(document, "/date").and_then(datetime::from_fhir) {
        txa.set(4, Field::text(&date));
    }
    if let Some(created) = str_at(attachment, "/creation").and_then(datetime::from_fhir) {
        txa.set(6, Field::text(&created));
    }
    let author_id = str_at(document, "/author/0/identifier/value").unwrap_or("");
    let author = str_at(document, "/author/0/display").unwrap_or("");
    if !author_id.is_empty() || !author.is_empty() {
        txa.set(9, Field::from_components(&[author_id, author]));
    }
    txa.set(12, Field::text(id))
        .set(17, Field::text("AU"))
        .set(19, Field::text("AV"));

    let mut message = Message::new(Delimiters::default());
    message.push(msh).push(evn).push(pid).push(pv1).push(txa);
    let observation = Field::from_components(&[type_code, title, "SCT"]);
    match lines {
        Some(lines) => {
            for (i, line) in lines.iter().enumerate() {
                let mut obx = Segment::new("OBX");
                obx.set(1, Field::text(&(i + 1).to_string()))
                    .set(2, Field::text("TX"))
                    .set(3, observation.clone())
                    .set(5, Field::text(line))
                    .set(11, Field::text("F"));
                message.push(obx);
            }
        }
        None => {
            let mime = content_type
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase();
            let (kind, subtype) = mime
                .split_once('/')
                .unwrap_or(("application", "octet-stream"));
            let encoded = base64::engine::general_purpose::STANDARD.encode(&bytes);
            let mut obx = Segment::new("OBX");
            obx.set(1, Field::text("1"))
                .set(2, Field::text("ED"))
                .set(3, observation)
                .set(
                    5,
                    Field::from_components(&["", kind, subtype, "Base64", &encoded]),
                )
                .set(11, Field::text("F"));
            message.push(obx);
        }
    }
    Ok(message.encode())
}

/// The letter's lines when it is plain text in UTF-8 (sent as TX), else `None` (sent as ED).
fn text_lines(content_type: &str, bytes: &[u8]) -> Option<Vec<String>> {
    let mime = content_type.split(';').next()?.trim();
    if !mime.eq_ignore_ascii_case("text/plain") {
        return None;
    }
    let text = std::str::from_utf8(bytes).ok()?;
    Some(text.split('\n').map(str::to_owned).collect())
}

fn demographics(pid: &mut Segment, patient: &Value) {
    let names = patient.get("name").and_then(Value::as_array);
    let name = names.and_then(|n| {
        n.iter()
            .find(|n| str_at(n, "/use") == Some("official"))
            .or_else(|| n.first())
    });
    if let Some(name) = name {
        let given = |i: usize| {
            name.get("given")
                .and_then(|g| g.get(i))
                .and_then(Value::as_str)
                .unwrap_or("")
        };
        pid.set(
            5,
            Field::from_components(&[
                str_at(name, "/family").unwrap_or(""),
                given(0),
                given(1),
                "",
                str_at(name, "/prefix/0").unwrap_or(""),
                "",
                "L",
            ]),
        );
    }
    if let Some(dob) = str_at(patient, "/birthDate").and_then(datetime::from_fhir) {
        pid.set(7, Field::text(&dob));
    }
    let sex = match str_at(patient, "/gender") {
        Some("male") => "M",
        Some("female") => "F",
        Some("other") => "O",
        Some("unknown") => "U",
        _ => "",
    };
    if !sex.is_empty() {
        pid.set(8, Field::text(sex));
    }
    if let Some(a) = patient.pointer("/address/0") {
        pid.set(
            11,
            Field::from_repetitions(vec![Repetition::from_components(&[
                str_at(a, "/line/0").unwrap_or(""),
                str_at(a, "/line/1").unwrap_or(""),
                str_at(a, "/city").unwrap_or(""),
                str_at(a, "/district").unwrap_or(""),
                str_at(a, "/postalCode").unwrap_or(""),
                str_at(a, "/country").unwrap_or(""),
                "H",
            ])]),
        );
    }
}

/// Read the letter out of an MDM (T02, or any MDM carrying TXA and OBX): ED (Base64, Hex or
/// plain `A`) from the first OBX when it is ED, else the TX/FT/ST lines of every OBX joined by
/// line feeds.
pub fn read_letter(message: &Message) -> Result<Letter, MdmError> {
    let txa = message
        .segment("TXA")
        .ok_or(MdmError::MissingSegment("TXA"))?;
    let first = message
        .segment("OBX")
        .ok_or(MdmError::MissingSegment("OBX"))?;
    let title = Some(first.value(3, 2))
        .filter(|t| !t.is_empty())
        .map(str::to_owned);
    let document_id = txa.value(12, 1).to_owned();
    if first.value(2, 1).eq_ignore_ascii_case("ED") {
        let ed = first.get(5).first().ok_or(MdmError::UnreadableContent)?;
        let (kind, subtype) = (ed.component(2), ed.component(3));
        let content_type = if kind.is_empty() {
            "application/octet-stream".to_owned()
        } else {
            format!("{kind}/{subtype}").to_ascii_lowercase()
        };
        let raw = ed.component(5);
        let data = match ed.component(4).to_ascii_lowercase().as_str() {
            "base64" => {
                let compact: String = raw.chars().filter(|c| !c.is_ascii_whitespace()).collect();
                base64::engine::general_purpose::STANDARD
                    .decode(compact.as_bytes())
                    .map_err(|_| MdmError::UnreadableContent)?
            }
            "hex" => {
                let hex: Vec<u8> = raw.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
                if hex.len() % 2 != 0 {
                    return Err(MdmError::UnreadableContent);
                }
                hex.chunks(2)
                    .map(|pair| {
                        std::str::from_utf8(pair)
                            .ok()
                            .and_then(|p| u8::from_str_radix(p, 16).ok())
                    })
                    .collect::<Option<Vec<u8>>>()
                    .ok_or(MdmError::UnreadableContent)?
            }
            "a" | "" => raw.as_bytes().to_vec(),
            _ => return Err(MdmError::UnreadableContent),
        };
        return Ok(Letter {
            document_id,
            content_type,
            data,
            title,
        });
    }
    let mut lines: Vec<String> = Vec::new();
    for obx in message.segments_named("OBX") {
        let kind = obx.value(2, 1).to_ascii_uppercase();
        if !matches!(kind.as_str(), "TX" | "FT" | "ST") {
            return Err(MdmError::UnreadableContent);
        }
        let reps = obx.get(5);
        if reps.is_empty() {
            lines.push(String::new());
        }
        lines.extend(reps.iter().map(|r| r.component(1).to_owned()));
    }
    Ok(Letter {
        document_id,
        content_type: "text/plain".to_owned(),
        data: lines.join("\n").into_bytes(),
        title,
    })
}
