//! HL7 v2 acknowledgements in original mode: building the ACK Signpost answers an inbound
//! message with, and reading the ACK a GP system answers an MDM with.
//!
//! This module owns the ACK's shape: MSH (sender and receiver swapped, a new control id,
//! `ACK^<trigger>^ACK`), MSA (MSA-1 `AA`/`AE`/`AR`, MSA-2 = the inbound MSH-10) and one ERR per
//! problem (HL7 2.5: ERR-2 location `SEG^1^FIELD`, ERR-3 `code^text^HL70357`, ERR-4 `E`, ERR-8
//! the text for a person; ERR-1 as well when the inbound message is older than 2.5). It does
//! not decide whether a message is accepted: that is the caller's, after the referral is
//! durable.
//!
//! # Which code
//! - `AA`: the message was accepted and is durable (a referral already accepted earlier, a
//!   resend, is `AA` too).
//! - `AE`: the content is wrong (a missing field, a bad NHS number): do not resend unchanged.
//!   [`ErrorCode`]s 100–199 and 205.
//! - `AR`: the message was refused without reading its content (message type or event not
//!   supported, MSH unreadable), or Signpost could not take it now (207 application internal
//!   error): the sender may resend later.
//!
//! [`ErrorCode::ack_code`] gives that choice. ERR texts never carry patient data: build them
//! from [`crate::message::ParseError`] and [`crate::ref_i12::MapError`], which quote no values.

use time::OffsetDateTime;

use crate::datetime;
use crate::message::{
    Component, Delimiters, Field, Location, Message, ParseError, Repetition, Segment,
};

/// MSA-1 in original mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckCode {
    /// `AA`, application accept.
    Accept,
    /// `AE`, application error.
    Error,
    /// `AR`, application reject.
    Reject,
}

impl AckCode {
    pub fn as_str(self) -> &'static str {
        match self {
            AckCode::Accept => "AA",
            AckCode::Error => "AE",
            AckCode::Reject => "AR",
        }
    }

    /// Read MSA-1. Enhanced-mode commit codes (`CA`, `CE`, `CR`) count as their application
    /// counterparts: a commit accept means the receiver has the message safely.
    pub fn parse(code: &str) -> Option<AckCode> {
        match code.trim() {
            "AA" | "CA" => Some(AckCode::Accept),
            "AE" | "CE" => Some(AckCode::Error),
            "AR" | "CR" => Some(AckCode::Reject),
            _ => None,
        }
    }
}

/// HL7 table 0357, message error condition codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    SegmentSequenceError,
    RequiredFieldMissing,
    DataTypeError,
    TableValueNotFound,
    UnsupportedMessageType,
    UnsupportedEventCode,
    UnsupportedProcessingId,
    UnsupportedVersionId,
    DuplicateKeyIdentifier,
    ApplicationInternalError,
}

impl ErrorCode {
    pub fn code(self) -> u16 {
        match self {
            ErrorCode::SegmentSequenceError => 100,
            ErrorCode::RequiredFieldMissing => 101,
            ErrorCode::DataTypeError => 102,
            ErrorCode::TableValueNotFound => 103,
            ErrorCode::UnsupportedMessageType => 200,
            ErrorCode::UnsupportedEventCode => 201,
            ErrorCode::UnsupportedProcessingId => 202,
            ErrorCode::UnsupportedVersionId => 203,
            ErrorCode::DuplicateKeyIdentifier => 205,
            ErrorCode::ApplicationInternalError => 207,
        }
    }

    /// The table's own wording.
    pub fn text(self) -> &'static str {
        match self {
            ErrorCode::SegmentSequenceError => "Segment sequence error",
            ErrorCode::RequiredFieldMissing => "Required field missing",
            ErrorCode::DataTypeError => "Data type error",
            ErrorCode::TableValueNotFound => "Table value not found",
            ErrorCode::UnsupportedMessageType => "Unsupported message type",
            ErrorCode::UnsupportedEventCode => "Unsupported event code",
            ErrorCode::UnsupportedProcessingId => "Unsupported processing id",
            ErrorCode::UnsupportedVersionId => "Unsupported version id",
            ErrorCode::DuplicateKeyIdentifier => "Duplicate key identifier",
            ErrorCode::ApplicationInternalError => "Application internal error",
        }
    }

    /// `AE` for content errors, `AR` for refusals and for failures on Signpost's side (see
    /// the module doc).
    pub fn ack_code(self) -> AckCode {
        match self.code() {
            100..=199 | 205 => AckCode::Error,
            _ => AckCode::Reject,
        }
    }
}

/// One problem, as an ERR segment reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorDetail {
    pub code: ErrorCode,
    pub location: Option<Location>,
    /// For a person (ERR-8): what is wrong, never patient data.
    pub text: String,
}

impl From<&ParseError> for ErrorDetail {
    fn from(e: &ParseError) -> Self {
        let code = match e {
            ParseError::Empty | ParseError::NotMsh | ParseError::BadSegmentId { .. } => {
                ErrorCode::SegmentSequenceError
            }
            ParseError::BadFieldSeparator | ParseError::BadEncodingCharacters => {
                ErrorCode::DataTypeError
            }
            ParseError::MissingMessageType => ErrorCode::RequiredFieldMissing,
            ParseError::BadMessageType => ErrorCode::UnsupportedMessageType,
        };
        ErrorDetail {
            code,
            location: e.location(),
            text: e.to_string(),
        }
    }
}

/// The ACK for `inbound`: `code` in MSA-1, one ERR per entry of `errors`. `control_id` is
/// the ACK's own MSH-10 and `at` its MSH-7. Written with the inbound message's delimiters and
/// version.
pub fn build(
    inbound: &Message,
    code: AckCode,
    errors: &[ErrorDetail],
    control_id: &str,
    at: OffsetDateTime,
) -> String {
    let msh = inbound.segment("MSH");
    let field = |n| msh.and_then(|s| s.field(n)).cloned().unwrap_or_default();
    let header = InboundHeader {
        sending_application: field(3),
        sending_facility: field(4),
        receiving_application: field(5),
        receiving_facility: field(6),
        control_id: inbound.control_id().to_owned(),
        trigger: inbound.message_type().trigger,
        processing_id: field(11),
        version: inbound.version().to_owned(),
    };
    write(*inbound.delimiters(), &header, code, errors, control_id, at)
}

/// The ACK for text that did not parse: `AR` with the parse error. What can still be read of
/// the MSH (applications, facilities, control id, processing id, version) is echoed; the rest
/// is left empty. Written with the standard delimiters.
pub fn reject_unparsable(
    raw: &str,
    error: &ParseError,
    control_id: &str,
    at: OffsetDateTime,
) -> String {
    let header = salvage(raw);
    write(
        Delimiters::default(),
        &header,
        AckCode::Reject,
        &[ErrorDetail::from(error)],
        control_id,
        at,
    )
}

/// What an ACK copies from the message it answers.
#[derive(Default)]
struct InboundHeader {
    sending_application: Field,
    sending_facility: Field,
    receiving_application: Field,
    receiving_facility: Field,
    control_id: String,
    trigger: String,
    processing_id: Field,
    version: String,
}

/// Best-effort MSH fields from text that would not parse: the first line, split on the
/// character after `MSH`, each field taken as plain text up to its first `^`.
fn salvage(raw: &str) -> InboundHeader {
    let line = raw
        .trim_start_matches('\u{feff}')
        .split(['\r', '\n'])
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    let Some(rest) = line.strip_prefix("MSH") else {
        return InboundHeader::default();
    };
    let Some(sep) = rest
        .chars()
        .next()
        .filter(|c| !c.is_alphanumeric() && !c.is_whitespace())
    else {
        return InboundHeader::default();
    };
    // rest = "|^~\&|APP|FAC|..." so piece n is MSH-(n+1).
    let pieces: Vec<&str> = rest.split(sep).collect();
    let plain = |n: usize| -> String {
        pieces
            .get(n - 1)
            .map(|p| {
                p.chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || " .-_:/".contains(*c))
                    .take(64)
                    .collect()
            })
            .unwrap_or_default()
    };
    let text = |n| Field::text(&plain(n));
    InboundHeader {
        sending_application: text(3),
        sending_facility: text(4),
        receiving_application: text(5),
        receiving_facility: text(6),
        control_id: plain(10),
        trigger: String::new(),
        processing_id: text(11),
        version: plain(12),
    }
}

/// Whether `version` is older than 2.5, when ERR-2..8 did not exist yet.
fn before_2_5(version: &str) -> bool {
    let mut parts = version.trim().split('.');
    match (
        parts.next(),
        parts.next().and_then(|m| m.parse::<u32>().ok()),
    ) {
        (Some("2"), Some(minor)) => minor < 5,
        _ => false,
    }
}

fn write(
    delimiters: Delimiters,
    inbound: &InboundHeader,
    code: AckCode,
    errors: &[ErrorDetail],
    control_id: &str,
    at: OffsetDateTime,
) -> String {
    let version = if inbound.version.is_empty() {
        "2.5".to_owned()
    } else {
        inbound.version.clone()
    };
    let processing_id = if inbound.processing_id.is_empty() {
        Field::text("P")
    } else {
        inbound.processing_id.clone()
    };
    let mut msh = Segment::new("MSH");
    msh.set(3, inbound.receiving_application.clone())
        .set(4, inbound.receiving_facility.clone())
        .set(5, inbound.sending_application.clone())
        .set(6, inbound.sending_facility.clone())
        .set(7, Field::text(&datetime::to_hl7(at)))
        .set(9, Field::from_components(&["ACK", &inbound.trigger, "ACK"]))
        .set(10, Field::text(control_id))
        .set(11, processing_id)
        .set(12, Field::text(&version));

    let mut msa = Segment::new("MSA");
    msa.set(1, Field::text(code.as_str()))
        .set(2, Field::text(&inbound.control_id));
    if let Some(first) = errors.first() {
        msa.set(3, Field::text(&first.text));
    }

    let mut message = Message::new(delimiters);
    message.push(msh).push(msa);
    let legacy = before_2_5(&version);
    for e in errors {
        let mut err = Segment::new("ERR");
        let number = e.code.code().to_string();
        if let Some(loc) = &e.location {
            let seq = loc.sequence.to_string();
            let field = loc.field.map(|f| f.to_string()).unwrap_or_default();
            let comp = loc.component.map(|c| c.to_string()).unwrap_or_default();
            if legacy {
                err.set(
                    1,
                    Field::from_repetitions(vec![Repetition::from_parts(vec![
                        Component::from(loc.segment.as_str()),
                        Component::from(seq.as_str()),
                        Component::from(field.as_str()),
                        Component::from_subcomponents(&[&number, e.code.text(), "HL70357"]),
                    ])]),
                );
            }
            err.set(
                2,
                Field::from_components(&[&loc.segment, &seq, &field, "", &comp]),
            );
        } else if legacy {
            err.set(
                1,
                Field::from_repetitions(vec![Repetition::from_parts(vec![
                    Component::from(""),
                    Component::from(""),
                    Component::from(""),
                    Component::from_subcomponents(&[&number, e.code.text(), "HL70357"]),
                ])]),
            );
        }
        err.set(
            3,
            Field::from_components(&[&number, e.code.text(), "HL70357"]),
        )
        .set(4, Field::text("E"))
        .set(8, Field::text(&e.text));
        message.push(err);
    }
    message.encode()
}

/// An ACK as read by the sending side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AckReply {
    /// MSA-1.
    pub code: AckCode,
    /// MSA-2: the control id of the message this answers.
    pub acknowledged_control_id: String,
    /// What the receiver says is wrong: ERR-8, else ERR-3's text, else ERR-1's, else MSA-3.
    pub errors: Vec<String>,
}

/// Why a reply could not be read as an ACK.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AckParseError {
    #[error("the reply is not an HL7 v2 message: {0}")]
    Parse(#[from] ParseError),
    #[error("the reply has no MSA segment")]
    NoMsa,
    #[error("MSA-1 is not an acknowledgement code")]
    BadCode,
}

/// Read an ACK. Any message type is read (some receivers answer `MDM^T02` with an `MDM^...`
/// or `ACK^T02` header); what matters is MSA.
pub fn parse(reply: &str) -> Result<AckReply, AckParseError> {
    let message = Message::parse(reply)?;
    let msa = message.segment("MSA").ok_or(AckParseError::NoMsa)?;
    let code = AckCode::parse(msa.value(1, 1)).ok_or(AckParseError::BadCode)?;
    let mut errors: Vec<String> = message
        .segments_named("ERR")
        .filter_map(|err| {
            let code = [
                err.value(3, 1),
                err.get(1).first().map_or("", |r| r.component(4)),
            ]
            .into_iter()
            .find(|c| !c.is_empty())
            .unwrap_or("");
            let text = [
                err.value(8, 1),
                err.value(3, 2),
                err.get(1).first().map_or("", |r| r.subcomponent(4, 2)),
            ]
            .into_iter()
            .find(|t| !t.is_empty())
            .unwrap_or("");
            let loc = match err.value(2, 1) {
                "" => String::new(),
                seg => match err.value(2, 3) {
                    "" => format!(" at {seg}"),
                    f => format!(" at {seg}-{f}"),
                },
            };
            let line = match (code, text) {
                ("", "") => return None,
                ("", t) => format!("{t}{loc}"),
                (c, "") => format!("{c}{loc}"),
                (c, t) => format!("{c} {t}{loc}"),
            };
            Some(line)
        })
        .collect();
    if errors.is_empty() && !msa.value(3, 1).is_empty() {
        errors.push(msa.value(3, 1).to_owned());
    }
    Ok(AckReply {
        code,
        acknowledged_control_id: msa.value(2, 1).to_owned(),
        errors,
    })
}
