//! HL7 v2 messages in ER7 ("pipe and hat") text: parsing into an owned, typed [`Message`], and
//! encoding one back to text with correct escaping.
//!
//! This module owns the syntax only: delimiters (read from MSH-1 and MSH-2), segments, fields,
//! repetitions, components and subcomponents, escape sequences, and where something is
//! ([`Location`], as an ERR segment reports it). It does not know what any message means: the
//! REF^I12 mapping is in [`crate::ref_i12`], ACKs in [`crate::ack`], MDM in [`crate::mdm`], and
//! MLLP framing (bytes on a socket) in [`crate::mllp`].
//!
//! # Numbering
//! Positions are 1-based, as HL7 counts them. In MSH, field 1 is the field separator itself and
//! field 2 the encoding characters, so `msg.get("MSH", 9)` is the message type as everywhere
//! else in HL7. Values are stored decoded: escape sequences are resolved once, here, and
//! [`Message::encode`] escapes again.
//!
//! # What the parser accepts
//! - Segment terminators `\r`, `\n` and `\r\n`, mixed freely; blank lines are skipped.
//! - MSH-2 of four characters (`^~\&`) or five (HL7 2.7's truncation character). The separators
//!   must be distinct and none may be a letter, a digit, a space or a line break.
//! - Escapes `\F\ \S\ \T\ \R\ \E\` (and `\P\` when MSH-2 names a truncation character),
//!   `\Xhh..\` (hex bytes, read as UTF-8 when they are UTF-8, else as ISO 8859-1), `\.br\` and
//!   `\.sp n\` (line breaks), `\H\` and `\N\` (highlighting, dropped). Any other escape
//!   (`\C..\`, `\M..\`, `\Z..\`, other formatting commands) and an escape that never closes are
//!   kept literally, escape characters included.
//! - Batches (FHS/BHS) are not messages and are rejected as not starting with MSH.

use std::fmt;

/// The five separators of a message, read from MSH-1 and MSH-2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delimiters {
    field: char,
    component: char,
    repetition: char,
    escape: char,
    subcomponent: char,
    truncation: Option<char>,
}

impl Default for Delimiters {
    /// `|^~\&`, what nearly every sender uses.
    fn default() -> Self {
        Delimiters {
            field: '|',
            component: '^',
            repetition: '~',
            escape: '\\',
            subcomponent: '&',
            truncation: None,
        }
    }
}

impl Delimiters {
    pub fn field(&self) -> char {
        self.field
    }
    pub fn component(&self) -> char {
        self.component
    }
    pub fn repetition(&self) -> char {
        self.repetition
    }
    pub fn escape(&self) -> char {
        self.escape
    }
    pub fn subcomponent(&self) -> char {
        self.subcomponent
    }

    /// MSH-2 as it is written: component, repetition, escape, subcomponent (and truncation).
    pub fn encoding_characters(&self) -> String {
        let mut s: String = [
            self.component,
            self.repetition,
            self.escape,
            self.subcomponent,
        ]
        .iter()
        .collect();
        s.extend(self.truncation);
        s
    }

    fn from_msh(field: char, encoding: &str) -> Result<Self, ParseError> {
        let chars: Vec<char> = encoding.chars().collect();
        if !(4..=5).contains(&chars.len()) {
            return Err(ParseError::BadEncodingCharacters);
        }
        let mut all = chars.clone();
        all.push(field);
        for (i, c) in all.iter().enumerate() {
            if !is_separator_char(*c) || all[i + 1..].contains(c) {
                return Err(ParseError::BadEncodingCharacters);
            }
        }
        Ok(Delimiters {
            field,
            component: chars[0],
            repetition: chars[1],
            escape: chars[2],
            subcomponent: chars[3],
            truncation: chars.get(4).copied(),
        })
    }
}

fn is_separator_char(c: char) -> bool {
    !c.is_alphanumeric() && !c.is_whitespace() && !c.is_control()
}

/// Where something is in a message, as ERR-2 (HL7 2.5 ERL) reports it: `PID^1^3`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// Segment id, e.g. `PID`.
    pub segment: String,
    /// Which occurrence of that segment, 1-based.
    pub sequence: usize,
    /// Field position, 1-based, when the problem is in one field.
    pub field: Option<usize>,
    /// Component position, 1-based, when the problem is in one component.
    pub component: Option<usize>,
}

impl Location {
    /// A whole segment (its first occurrence).
    pub fn segment(segment: &str) -> Self {
        Location {
            segment: segment.to_owned(),
            sequence: 1,
            field: None,
            component: None,
        }
    }

    /// A field of a segment's first occurrence.
    pub fn field(segment: &str, field: usize) -> Self {
        Location {
            field: Some(field),
            ..Location::segment(segment)
        }
    }
}

impl fmt::Display for Location {
    /// The way people write it: `PID-3`, `PID-3.1`, `OBX(2)-5`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.segment)?;
        if self.sequence > 1 {
            write!(f, "({})", self.sequence)?;
        }
        if let Some(field) = self.field {
            write!(f, "-{field}")?;
            if let Some(c) = self.component {
                write!(f, ".{c}")?;
            }
        }
        Ok(())
    }
}

/// Why text is not an HL7 v2 message. Nothing here quotes the message, so it can be logged and
/// sent back in an ACK.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("the message is empty")]
    Empty,
    #[error("the message does not start with an MSH segment")]
    NotMsh,
    #[error("MSH-1 (field separator) is missing or is not a usable separator")]
    BadFieldSeparator,
    #[error("MSH-2 (encoding characters) must be four or five distinct separator characters")]
    BadEncodingCharacters,
    #[error("segment {line} does not start with a segment id (three capitals or digits)")]
    BadSegmentId { line: usize },
    #[error("MSH-9 (message type) is missing")]
    MissingMessageType,
    #[error("MSH-9 (message type) is not a message code and trigger event")]
    BadMessageType,
}

impl ParseError {
    /// Where the problem is, when it can be named.
    pub fn location(&self) -> Option<Location> {
        match self {
            ParseError::Empty | ParseError::NotMsh => Some(Location::segment("MSH")),
            ParseError::BadFieldSeparator => Some(Location::field("MSH", 1)),
            ParseError::BadEncodingCharacters => Some(Location::field("MSH", 2)),
            ParseError::BadSegmentId { .. } => None,
            ParseError::MissingMessageType | ParseError::BadMessageType => {
                Some(Location::field("MSH", 9))
            }
        }
    }
}

/// A parsed message: its delimiters and its segments, in order, with decoded values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    delimiters: Delimiters,
    segments: Vec<Segment>,
}

/// MSH-9: message code, trigger event and message structure (`REF^I12^REF_I12`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageType {
    pub code: String,
    pub trigger: String,
    pub structure: String,
}

impl fmt::Display for MessageType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.code)?;
        if !self.trigger.is_empty() {
            write!(f, "^{}", self.trigger)?;
        }
        Ok(())
    }
}

impl Message {
    /// Parse ER7 text. The message must start with MSH and carry a message type in MSH-9;
    /// everything else is syntax, and what a message must contain is for its reader to say.
    pub fn parse(text: &str) -> Result<Message, ParseError> {
        let text = text.trim_start_matches('\u{feff}');
        if text.trim().is_empty() {
            return Err(ParseError::Empty);
        }
        let mut lines = lines(text)
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty());
        let (_, msh) = lines.next().ok_or(ParseError::Empty)?;
        let rest = msh.strip_prefix("MSH").ok_or(ParseError::NotMsh)?;
        let mut chars = rest.chars();
        let field_sep = chars.next().ok_or(ParseError::BadFieldSeparator)?;
        if !is_separator_char(field_sep) {
            return Err(ParseError::BadFieldSeparator);
        }
        let after = chars.as_str();
        let (encoding, msh_fields) = match after.split_once(field_sep) {
            Some((enc, fields)) => (enc, Some(fields)),
            None => (after, None),
        };
        let delimiters = Delimiters::from_msh(field_sep, encoding)?;

        let mut fields = vec![Field::text(&field_sep.to_string()), Field::text(encoding)];
        if let Some(f) = msh_fields {
            fields.extend(f.split(field_sep).map(|raw| parse_field(raw, &delimiters)));
        }
        let mut segments = vec![Segment {
            name: "MSH".to_owned(),
            fields,
        }];
        for (index, line) in lines {
            let mut parts = line.split(field_sep);
            let name = parts.next().unwrap_or_default();
            if !is_segment_id(name) {
                return Err(ParseError::BadSegmentId { line: index + 1 });
            }
            segments.push(Segment {
                name: name.to_owned(),
                fields: parts.map(|raw| parse_field(raw, &delimiters)).collect(),
            });
        }
        let message = Message {
            delimiters,
            segments,
        };
        let kind = message.message_type();
        if kind.code.is_empty() {
            return Err(ParseError::MissingMessageType);
        }
        let code_like = |s: &str| s.len() == 3 && s.bytes().all(|b| b.is_ascii_alphanumeric());
        if !code_like(&kind.code) || !(kind.trigger.is_empty() || code_like(&kind.trigger)) {
            return Err(ParseError::BadMessageType);
        }
        Ok(message)
    }

    /// An empty message to build, with these delimiters. Push an MSH first.
    pub fn new(delimiters: Delimiters) -> Message {
        Message {
            delimiters,
            segments: Vec::new(),
        }
    }

    /// Append a segment. For MSH, fields 1 and 2 are written from the delimiters, whatever
    /// the segment holds there.
    pub fn push(&mut self, segment: Segment) -> &mut Self {
        self.segments.push(segment);
        self
    }

    pub fn delimiters(&self) -> &Delimiters {
        &self.delimiters
    }

    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }

    /// The first segment with this id.
    pub fn segment(&self, name: &str) -> Option<&Segment> {
        self.segments.iter().find(|s| s.name == name)
    }

    /// Every segment with this id, in order.
    pub fn segments_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Segment> + 'a {
        self.segments.iter().filter(move |s| s.name == name)
    }

    /// The repetitions of field `field` of the first `segment`; empty when either is absent.
    pub fn get(&self, segment: &str, field: usize) -> &[Repetition] {
        self.segment(segment).map(|s| s.get(field)).unwrap_or(&[])
    }

    /// MSH-9.
    pub fn message_type(&self) -> MessageType {
        let msh = self.segment("MSH");
        let part = |c| msh.map(|s| s.value(9, c)).unwrap_or("").trim().to_owned();
        MessageType {
            code: part(1),
            trigger: part(2),
            structure: part(3),
        }
    }

    /// MSH-10, the message control id (empty when the sender left it out).
    pub fn control_id(&self) -> &str {
        self.segment("MSH").map(|s| s.value(10, 1)).unwrap_or("")
    }

    /// MSH-12.1, the HL7 version (`2.5`).
    pub fn version(&self) -> &str {
        self.segment("MSH").map(|s| s.value(12, 1)).unwrap_or("")
    }

    /// ER7 text with `\r` after every segment, values escaped with this message's delimiters.
    /// Trailing empty fields, repetitions, components and subcomponents are left out.
    pub fn encode(&self) -> String {
        let d = &self.delimiters;
        let mut out = String::new();
        for segment in &self.segments {
            out.push_str(&segment.name);
            let skip = if segment.name == "MSH" {
                out.push(d.field);
                out.push_str(&d.encoding_characters());
                2
            } else {
                0
            };
            let fields = &segment.fields[skip.min(segment.fields.len())..];
            let written: Vec<String> = fields.iter().map(|f| f.encode(d)).collect();
            let keep = written
                .iter()
                .rposition(|f| !f.is_empty())
                .map_or(0, |i| i + 1);
            for f in &written[..keep] {
                out.push(d.field);
                out.push_str(f);
            }
            out.push('\r');
        }
        out
    }
}

/// The text between segment terminators (`\r` or `\n`). Split on bytes: both are ASCII, so
/// every piece is still on character boundaries.
fn lines(text: &str) -> impl Iterator<Item = &str> {
    let mut rest = Some(text);
    std::iter::from_fn(move || {
        let t = rest?;
        match memchr_line_end(t.as_bytes()) {
            Some(i) => {
                rest = Some(&t[i + 1..]);
                Some(&t[..i])
            }
            None => {
                rest = None;
                Some(t)
            }
        }
    })
}

fn memchr_line_end(bytes: &[u8]) -> Option<usize> {
    bytes.iter().position(|&b| b == b'\r' || b == b'\n')
}

fn is_segment_id(name: &str) -> bool {
    let b = name.as_bytes();
    b.len() == 3
        && b[0].is_ascii_uppercase()
        && b[1..]
            .iter()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
}

fn parse_field(raw: &str, d: &Delimiters) -> Field {
    if raw.is_empty() {
        return Field::default();
    }
    // Most fields are one plain value: skip the splitting.
    if !raw.contains(d.repetition)
        && !raw.contains(d.component)
        && !raw.contains(d.subcomponent)
        && !raw.contains(d.escape)
    {
        return Field {
            repetitions: vec![Repetition {
                components: vec![Component {
                    subcomponents: vec![raw.to_owned()],
                }],
            }],
        };
    }
    Field {
        repetitions: raw
            .split(d.repetition)
            .map(|rep| Repetition {
                components: rep
                    .split(d.component)
                    .map(|comp| Component {
                        subcomponents: comp.split(d.subcomponent).map(|s| unescape(s, d)).collect(),
                    })
                    .collect(),
            })
            .collect(),
    }
}

/// One segment: its id and its fields. `fields[0]` is field 1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    name: String,
    fields: Vec<Field>,
}

impl Segment {
    /// An empty segment to fill with [`Segment::set`]. `name` must be a segment id (three
    /// capitals or digits, e.g. `OBX`, `ZXX`).
    pub fn new(name: &str) -> Segment {
        Segment {
            name: name.to_owned(),
            fields: Vec::new(),
        }
    }

    /// The segment id.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Field `n` (1-based), if the segment is that long.
    pub fn field(&self, n: usize) -> Option<&Field> {
        n.checked_sub(1).and_then(|i| self.fields.get(i))
    }

    /// The repetitions of field `n`; empty when it is absent or empty.
    pub fn get(&self, n: usize) -> &[Repetition] {
        self.field(n).map(|f| f.repetitions()).unwrap_or(&[])
    }

    /// The text of component `component` of the first repetition of field `field` (its first
    /// subcomponent), or `""`.
    pub fn value(&self, field: usize, component: usize) -> &str {
        self.get(field)
            .first()
            .map(|r| r.component(component))
            .unwrap_or("")
    }

    /// Set field `n` (1-based), padding with empty fields. Position 0 is ignored.
    pub fn set(&mut self, n: usize, field: Field) -> &mut Self {
        if let Some(i) = n.checked_sub(1) {
            if self.fields.len() <= i {
                self.fields.resize(i + 1, Field::default());
            }
            self.fields[i] = field;
        }
        self
    }
}

/// One field: its repetitions (none when the field is empty).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Field {
    repetitions: Vec<Repetition>,
}

impl Field {
    /// A field holding one plain value.
    pub fn text(value: &str) -> Field {
        Field::from_components(&[value])
    }

    /// A field of one repetition made of these components (each a plain value).
    pub fn from_components(components: &[&str]) -> Field {
        Field {
            repetitions: vec![Repetition::from_components(components)],
        }
    }

    /// A field of several repetitions.
    pub fn from_repetitions(repetitions: Vec<Repetition>) -> Field {
        Field { repetitions }
    }

    pub fn repetitions(&self) -> &[Repetition] {
        &self.repetitions
    }

    pub fn first(&self) -> Option<&Repetition> {
        self.repetitions.first()
    }

    /// Whether the field holds no text at all.
    pub fn is_empty(&self) -> bool {
        self.repetitions.iter().all(Repetition::is_empty)
    }

    fn encode(&self, d: &Delimiters) -> String {
        let reps: Vec<String> = self.repetitions.iter().map(|r| r.encode(d)).collect();
        join_trimmed(&reps, d.repetition)
    }
}

/// One repetition of a field: its components.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Repetition {
    components: Vec<Component>,
}

impl Repetition {
    /// A repetition of plain components.
    pub fn from_components(components: &[&str]) -> Repetition {
        Repetition {
            components: components.iter().map(|c| Component::from(*c)).collect(),
        }
    }

    /// A repetition from components that have subcomponents.
    pub fn from_parts(components: Vec<Component>) -> Repetition {
        Repetition { components }
    }

    pub fn components(&self) -> &[Component] {
        &self.components
    }

    /// Component `n` (1-based): its first subcomponent's text, or `""`.
    pub fn component(&self, n: usize) -> &str {
        self.subcomponent(n, 1)
    }

    /// Subcomponent `s` of component `c` (both 1-based), or `""`.
    pub fn subcomponent(&self, c: usize, s: usize) -> &str {
        c.checked_sub(1)
            .and_then(|i| self.components.get(i))
            .and_then(|comp| s.checked_sub(1).and_then(|j| comp.subcomponents.get(j)))
            .map(String::as_str)
            .unwrap_or("")
    }

    pub fn is_empty(&self) -> bool {
        self.components.iter().all(Component::is_empty)
    }

    fn encode(&self, d: &Delimiters) -> String {
        let comps: Vec<String> = self.components.iter().map(|c| c.encode(d)).collect();
        join_trimmed(&comps, d.component)
    }
}

/// One component: its subcomponents (at least one, possibly empty).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Component {
    subcomponents: Vec<String>,
}

impl Component {
    pub fn from_subcomponents(subcomponents: &[&str]) -> Component {
        Component {
            subcomponents: subcomponents.iter().map(|s| (*s).to_owned()).collect(),
        }
    }

    pub fn subcomponents(&self) -> &[String] {
        &self.subcomponents
    }

    /// The first subcomponent's text.
    pub fn text(&self) -> &str {
        self.subcomponents.first().map(String::as_str).unwrap_or("")
    }

    pub fn is_empty(&self) -> bool {
        self.subcomponents.iter().all(String::is_empty)
    }

    fn encode(&self, d: &Delimiters) -> String {
        let subs: Vec<String> = self.subcomponents.iter().map(|s| escape(s, d)).collect();
        join_trimmed(&subs, d.subcomponent)
    }
}

impl From<&str> for Component {
    fn from(text: &str) -> Component {
        Component {
            subcomponents: vec![text.to_owned()],
        }
    }
}

fn join_trimmed(parts: &[String], sep: char) -> String {
    let keep = parts
        .iter()
        .rposition(|p| !p.is_empty())
        .map_or(0, |i| i + 1);
    let mut out = String::new();
    for (i, p) in parts[..keep].iter().enumerate() {
        if i > 0 {
            out.push(sep);
        }
        out.push_str(p);
    }
    out
}

/// Escape `text` so that it is one value under `delimiters`: separators and the escape
/// character become `\F\ \S\ \T\ \R\ \E\` (and `\P\`), a line feed becomes `\.br\`, and any
/// other control character (carriage return included, which would end the segment) becomes
/// `\Xhh\`, so that [`Message::parse`] gives back exactly `text`.
pub fn escape(text: &str, delimiters: &Delimiters) -> String {
    let d = delimiters;
    let e = d.escape;
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        let code = match c {
            _ if c == d.escape => Some("E"),
            _ if c == d.field => Some("F"),
            _ if c == d.component => Some("S"),
            _ if c == d.subcomponent => Some("T"),
            _ if c == d.repetition => Some("R"),
            _ if Some(c) == d.truncation => Some("P"),
            '\n' => Some(".br"),
            _ => None,
        };
        match code {
            Some(code) => {
                out.push(e);
                out.push_str(code);
                out.push(e);
            }
            None if c.is_control() && c != '\t' => {
                let mut buf = [0u8; 4];
                out.push(e);
                out.push('X');
                for b in c.encode_utf8(&mut buf).bytes() {
                    out.push_str(&format!("{b:02X}"));
                }
                out.push(e);
            }
            None => out.push(c),
        }
    }
    out
}

/// The most line breaks one `\.sp n\` may stand for: a bound, so that a hostile message cannot
/// make the parser allocate without limit.
const MAX_SP_LINES: usize = 64;

fn unescape(s: &str, d: &Delimiters) -> String {
    let e = d.escape;
    if !s.contains(e) {
        return s.to_owned();
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(start) = rest.find(e) {
        out.push_str(&rest[..start]);
        let after = &rest[start + e.len_utf8()..];
        let Some(end) = after.find(e) else {
            out.push_str(&rest[start..]);
            return out;
        };
        let seq = &after[..end];
        match decode_escape(seq, d) {
            Some(text) => out.push_str(&text),
            None => {
                out.push(e);
                out.push_str(seq);
                out.push(e);
            }
        }
        rest = &after[end + e.len_utf8()..];
    }
    out.push_str(rest);
    out
}

/// What an escape sequence (without its escape characters) stands for, or `None` to keep it
/// literally.
fn decode_escape(seq: &str, d: &Delimiters) -> Option<String> {
    let one = |c: char| Some(c.to_string());
    match seq {
        "F" => one(d.field),
        "S" => one(d.component),
        "T" => one(d.subcomponent),
        "R" => one(d.repetition),
        "E" => one(d.escape),
        "P" => d.truncation.map(|c| c.to_string()),
        "H" | "N" => Some(String::new()),
        ".br" => Some("\n".to_owned()),
        _ => {
            if let Some(n) = seq.strip_prefix(".sp") {
                let n = n.trim();
                let lines = if n.is_empty() {
                    1
                } else {
                    n.parse::<usize>().ok()?.min(MAX_SP_LINES)
                };
                return Some("\n".repeat(lines));
            }
            let hex = seq.strip_prefix('X')?;
            if hex.is_empty() || hex.len() % 2 != 0 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                return None;
            }
            let bytes: Vec<u8> = (0..hex.len())
                .step_by(2)
                .filter_map(|i| u8::from_str_radix(&hex[i..i + 2], 16).ok())
                .collect();
            Some(match String::from_utf8(bytes) {
                Ok(s) => s,
                Err(e) => e.into_bytes().iter().map(|&b| char::from(b)).collect(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_then_unescape_gives_the_text_back() {
        let d = Delimiters::default();
        for text in [
            "plain",
            "a|b^c~d\\e&f",
            "line one\r\nline two\nthree\rfour",
            "tab\there \u{b}\u{1c} £ é",
            "\\.br\\ literally",
        ] {
            assert_eq!(unescape(&escape(text, &d), &d), text, "{text:?}");
        }
    }

    #[test]
    fn unknown_and_unclosed_escapes_are_kept() {
        let d = Delimiters::default();
        assert_eq!(unescape("\\Zabc\\ x", &d), "\\Zabc\\ x");
        assert_eq!(unescape("\\C2842\\", &d), "\\C2842\\");
        assert_eq!(unescape("end \\F", &d), "end \\F");
        assert_eq!(unescape("\\X4\\", &d), "\\X4\\");
        assert_eq!(
            unescape("\\.sp 99999999999999999999\\", &d),
            "\\.sp 99999999999999999999\\"
        );
    }

    #[test]
    fn hex_escapes_read_utf8_then_latin1() {
        let d = Delimiters::default();
        assert_eq!(unescape("\\XC2A3\\5", &d), "£5");
        assert_eq!(unescape("\\XA3\\5", &d), "£5");
        assert_eq!(unescape("a\\X0D0A\\b", &d), "a\r\nb");
    }
}
