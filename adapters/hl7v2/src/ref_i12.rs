//! REF^I12 (patient referral) to the canonical FHIR R4 referral message that Signpost's
//! `POST /fhir/$process-message` takes: the BaRS-shaped Bundle of
//! `fixtures/gp-system/referral-new.json`.
//!
//! This module owns the mapping and its rules, and the [`NhsNumber`] type (a 10-digit number
//! with a good Modulus 11 check digit; nothing else can be one). It does not post the Bundle,
//! de-duplicate, or answer the sender: the caller posts [`MappedReferral::bundle`] with
//! [`MappedReferral::request_id`] and [`MappedReferral::correlation_id`] and answers with
//! [`crate::ack`].
//!
//! # Rules
//! - MSH-9 must be `REF^I12` (another message code is 200, another REF event 201).
//! - Segments are found by id, in any order, and any others (EVN, SFT, DG1, OBR, OBX, NTE, Z
//!   segments) are tolerated. PID is required (100 when missing).
//! - **NHS number**: the first PID-3 repetition whose identifier type (CX.5) is `NH` or whose
//!   assigning authority (CX.4) is `NHS`; it must be 10 digits with a good check digit. None is
//!   101 at PID-3, a bad one 102 at PID-3. PID-32 (identity reliability code), when it is an
//!   NHS number status `01`–`08`, becomes the UK Core verification-status extension; without
//!   it there is no extension (Signpost does not claim a verification it was not told of).
//! - **Patient**: PID-5 (the legal-name repetition, type `L`, else the first) is required, as
//!   is PID-7 (a real date); PID-8 maps through HL7 table 0001 (103 when not in it); PID-11 (the
//!   home-address repetition, type `H`, else the first) gives line, city, district, postal code
//!   and country.
//! - **Referring clinician**: the PRD whose role (PRD-1) is `RP`. PRD-2 gives the name; a PRD-7
//!   repetition of type `SDS` gives the SDS user id (digits; 102 at PRD-7 otherwise). Without
//!   such a PRD, or one naming nobody, the requester is the practice Organization.
//! - **Practice ODS code**, the first of: the RP PRD's organisation (PRD-10, XON.10 else
//!   XON.3, named by XON.1); a PRD-7 repetition of type `ODS`; MSH-4, the sending facility
//!   (HD.2 when HD.3 is `ODS`, else HD.1). It must be 3–10 letters or digits (102 otherwise;
//!   101 at MSH-4 when there is none).
//! - **ServiceRequest**: identifier `https://signpost.example.org/fhir/Id/hl7v2-referral` with
//!   value `<ODS>:<id>`, the id being RF1-6 (originating referral identifier), else RF1-11,
//!   else MSH-10. authoredOn is RF1-7 (effective date), else MSH-7; occurrencePeriod is RF1-7
//!   to RF1-8 (expiration) as dates when given. priority from RF1-2 (table 0280: `S` stat, `A`
//!   asap, `R` routine). reasonCode: the NTE texts (joined by line breaks), RF1-10's text, and
//!   each DG1-3 (with its SNOMED CT coding when DG1-3.3 is `SCT`). Status is always `active`
//!   and the code always SNOMED CT 871731000000106: Signpost's MLLP endpoint takes social
//!   prescribing referrals only.
//! - **Consent**: implied consent for direct care, as the FHIR route carries it.
//! - **MessageHeader.source**: SFT (vendor, product, version) when sent, else MSH-3.
//! - **Ids**: Bundle.id is a UUID v5 of MSH-4 and MSH-10, so the same REF^I12 sent twice gives
//!   the same Bundle (and the gateway answers the second with 409 `duplicate`, which means it
//!   already has it: acknowledge `AA`). Every other id is a UUID v5 of the Bundle.id; times come
//!   from the message, never from the clock, so the whole Bundle is the same each time.
//! - Dates and times: see the `datetime` rules (a time without an offset is UK local time).
//!
//! Error texts name fields, never their values.

use serde_json::{json, Map, Value};
use uuid::Uuid;

use crate::ack::{ErrorCode, ErrorDetail};
use crate::datetime;
use crate::message::{Location, Message, Repetition, Segment};

const NHS_NUMBER: &str = "https://fhir.nhs.uk/Id/nhs-number";
const ODS_ORGANIZATION: &str = "https://fhir.nhs.uk/Id/ods-organization-code";
const SDS_USER: &str = "https://fhir.nhs.uk/Id/sds-user-id";
const SNOMED: &str = "http://snomed.info/sct";
/// ServiceRequest.identifier system for referrals that came in over HL7 v2.
pub const REFERRAL_ID_SYSTEM: &str = "https://signpost.example.org/fhir/Id/hl7v2-referral";
/// The default MessageHeader.destination endpoint: the gateway, as `source_endpoint`
/// defaults in Signpost's configuration.
pub const DEFAULT_DESTINATION: &str = "https://signpost.example.org/fhir/Id/gateway|signpost";

/// A valid NHS number: 10 digits whose last is the Modulus 11 check digit of the first nine.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NhsNumber(String);

/// Why text is not an NHS number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NhsNumberError {
    #[error("an NHS number is 10 digits")]
    NotTenDigits,
    #[error("the NHS number's check digit is wrong")]
    BadCheckDigit,
}

impl NhsNumber {
    /// Spaces are allowed between digits (`999 000 0018`) and removed.
    pub fn parse(text: &str) -> Result<NhsNumber, NhsNumberError> {
        let compact: String = text.chars().filter(|c| *c != ' ').collect();
        if compact.len() != 10 || !compact.bytes().all(|b| b.is_ascii_digit()) {
            return Err(NhsNumberError::NotTenDigits);
        }
        let d: Vec<u32> = compact.bytes().map(|b| u32::from(b - b'0')).collect();
        let sum: u32 = d[..9].iter().zip((2..=10).rev()).map(|(x, w)| x * w).sum();
        let check = match 11 - sum % 11 {
            11 => 0,
            10 => return Err(NhsNumberError::BadCheckDigit),
            c => c,
        };
        if check != d[9] {
            return Err(NhsNumberError::BadCheckDigit);
        }
        Ok(NhsNumber(compact))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Settings of the mapping.
#[derive(Debug, Clone)]
pub struct MapOptions {
    /// `MessageHeader.destination[0].endpoint`.
    pub destination_endpoint: String,
}

impl Default for MapOptions {
    fn default() -> Self {
        MapOptions {
            destination_endpoint: DEFAULT_DESTINATION.to_owned(),
        }
    }
}

/// A REF^I12 as the referral message to post, with what posting it needs.
#[derive(Debug, Clone, PartialEq)]
pub struct MappedReferral {
    /// The message Bundle, shaped as `fixtures/gp-system/referral-new.json`.
    pub bundle: Value,
    /// Bundle.id (a UUID v5 of MSH-4 and MSH-10).
    pub bundle_id: String,
    /// MSH-10, for MSA-2 of the ACK.
    pub message_control_id: String,
    /// `X-Request-Id` to post with: the same for a resent REF^I12.
    pub request_id: String,
    /// `X-Correlation-Id` to post with: one per referral.
    pub correlation_id: String,
    /// The practice's ODS code (routing key in the directory).
    pub practice_ods: String,
}

/// Why a message cannot become a referral: an HL7 error code (table 0357) and location for the
/// ACK's ERR segment. The texts quote no values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MapError {
    #[error("message type {found} is not supported here (only REF^I12)")]
    UnsupportedMessageType { found: String },
    #[error("trigger event {found} is not supported here (only REF^I12)")]
    UnsupportedEvent { found: String },
    #[error("the {segment} segment is required")]
    MissingSegment { segment: &'static str },
    #[error("{location} ({what}) is required")]
    MissingField {
        location: Location,
        what: &'static str,
    },
    #[error("{location} ({what}) is not valid")]
    BadValue {
        location: Location,
        what: &'static str,
    },
    #[error("{location} ({what}) is not a value of HL7 table {table}")]
    UnknownCode {
        location: Location,
        what: &'static str,
        table: &'static str,
    },
    #[error(
        "PID-3 has no NHS number (a repetition with identifier type NH or assigning authority NHS)"
    )]
    NoNhsNumber,
    #[error("PID-3: {0}")]
    BadNhsNumber(NhsNumberError),
}

impl MapError {
    /// The HL7 table 0357 code for ERR-3.
    pub fn code(&self) -> ErrorCode {
        match self {
            MapError::UnsupportedMessageType { .. } => ErrorCode::UnsupportedMessageType,
            MapError::UnsupportedEvent { .. } => ErrorCode::UnsupportedEventCode,
            MapError::MissingSegment { .. } => ErrorCode::SegmentSequenceError,
            MapError::MissingField { .. } | MapError::NoNhsNumber => {
                ErrorCode::RequiredFieldMissing
            }
            MapError::BadValue { .. } | MapError::BadNhsNumber(_) => ErrorCode::DataTypeError,
            MapError::UnknownCode { .. } => ErrorCode::TableValueNotFound,
        }
    }

    /// Where the problem is, for ERR-2.
    pub fn location(&self) -> Location {
        match self {
            MapError::UnsupportedMessageType { .. } | MapError::UnsupportedEvent { .. } => {
                Location::field("MSH", 9)
            }
            MapError::MissingSegment { segment } => Location::segment(segment),
            MapError::MissingField { location, .. }
            | MapError::BadValue { location, .. }
            | MapError::UnknownCode { location, .. } => location.clone(),
            MapError::NoNhsNumber | MapError::BadNhsNumber(_) => Location::field("PID", 3),
        }
    }
}

impl From<&MapError> for ErrorDetail {
    fn from(e: &MapError) -> Self {
        ErrorDetail {
            code: e.code(),
            location: Some(e.location()),
            text: e.to_string(),
        }
    }
}

/// A value with HL7's explicit null (`""`) and surrounding spaces taken as nothing.
fn clean(s: &str) -> &str {
    let s = s.trim();
    if s == "\"\"" {
        ""
    } else {
        s
    }
}

fn some(s: &str) -> Option<&str> {
    Some(clean(s)).filter(|s| !s.is_empty())
}

fn first_rep(segment: &Segment, field: usize) -> Option<&Repetition> {
    segment.get(field).first()
}

/// The namespace every id of an HL7 v2 referral is made in.
fn namespace() -> Uuid {
    Uuid::new_v5(
        &Uuid::NAMESPACE_URL,
        b"https://signpost.example.org/fhir/Id/hl7v2",
    )
}

fn is_ods(code: &str) -> bool {
    (3..=10).contains(&code.len()) && code.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// Map a parsed REF^I12 to the referral message (see the module doc for every rule).
pub fn map(message: &Message, options: &MapOptions) -> Result<MappedReferral, MapError> {
    let kind = message.message_type();
    if kind.code != "REF" {
        return Err(MapError::UnsupportedMessageType {
            found: kind.to_string(),
        });
    }
    if kind.trigger != "I12" {
        return Err(MapError::UnsupportedEvent {
            found: kind.to_string(),
        });
    }
    let msh = message
        .segment("MSH")
        .ok_or(MapError::MissingSegment { segment: "MSH" })?;
    let control_id = some(message.control_id())
        .ok_or(MapError::MissingField {
            location: Location::field("MSH", 10),
            what: "message control id",
        })?
        .to_owned();
    let sent_at = some(msh.value(7, 1)).ok_or(MapError::MissingField {
        location: Location::field("MSH", 7),
        what: "date/time of message",
    })?;
    let timestamp = instant(sent_at).ok_or(MapError::BadValue {
        location: Location::field("MSH", 7),
        what: "date/time of message",
    })?;
    let pid = message
        .segment("PID")
        .ok_or(MapError::MissingSegment { segment: "PID" })?;
    let rp = message
        .segments_named("PRD")
        .find(|prd| clean(prd.value(1, 1)).eq_ignore_ascii_case("RP"));
    let rf1 = message.segment("RF1");

    // Ids.
    let facility: Vec<&str> = first_rep(msh, 4)
        .map(|r| r.components().iter().map(|c| c.text()).collect())
        .unwrap_or_default();
    let bundle_uuid = Uuid::new_v5(
        &namespace(),
        format!("{}|{}", facility.join("^"), control_id).as_bytes(),
    );
    let id_of = |role: &str| Uuid::new_v5(&bundle_uuid, role.as_bytes()).to_string();
    let bundle_id = bundle_uuid.to_string();
    let header_id = id_of("MessageHeader");
    let sr_id = id_of("ServiceRequest");
    let patient_id = id_of("Patient");
    let practitioner_id = id_of("Practitioner");
    let org_id = id_of("Organization");
    let consent_id = id_of("Consent");
    let urn = |id: &str| format!("urn:uuid:{id}");

    let patient = patient(pid)?;
    let practice = practice(msh, rp)?;
    let practitioner = match rp {
        Some(prd) => practitioner(prd)?,
        None => None,
    };
    let service_request = service_request(message, rf1, &practice.ods, &control_id)?;

    // ServiceRequest.
    let mut sr = Map::new();
    sr.insert("resourceType".into(), json!("ServiceRequest"));
    sr.insert("id".into(), json!(sr_id));
    sr.insert(
        "identifier".into(),
        json!([{"system": REFERRAL_ID_SYSTEM, "value": service_request.identifier}]),
    );
    sr.insert("status".into(), json!("active"));
    sr.insert("intent".into(), json!("plan"));
    sr.insert(
        "category".into(),
        json!([{"coding": [{
            "system": "https://fhir.nhs.uk/CodeSystem/message-category-servicerequest",
            "code": "referral",
            "display": "Transfer of Care"
        }]}]),
    );
    if let Some(p) = service_request.priority {
        sr.insert("priority".into(), json!(p));
    }
    sr.insert(
        "code".into(),
        json!({"coding": [{"system": SNOMED, "code": "871731000000106", "display": "Referral to social prescribing service"}]}),
    );
    sr.insert("subject".into(), json!({"reference": urn(&patient_id)}));
    sr.insert(
        "authoredOn".into(),
        json!(service_request
            .authored_on
            .unwrap_or_else(|| timestamp.clone())),
    );
    let requester = if practitioner.is_some() {
        &practitioner_id
    } else {
        &org_id
    };
    sr.insert("requester".into(), json!({"reference": urn(requester)}));
    if !service_request.reasons.is_empty() {
        sr.insert("reasonCode".into(), Value::Array(service_request.reasons));
    }
    if let Some(period) = service_request.period {
        sr.insert("occurrencePeriod".into(), period);
    }

    // MessageHeader.
    let mut source = Map::new();
    let software = software(message, msh);
    if let Some(name) = software.name {
        source.insert("name".into(), json!(name));
    }
    if let Some(product) = software.product {
        source.insert("software".into(), json!(product));
    }
    if let Some(version) = software.version {
        source.insert("version".into(), json!(version));
    }
    source.insert(
        "endpoint".into(),
        json!(format!("{ODS_ORGANIZATION}|{}", practice.ods)),
    );
    let header = json!({
        "resourceType": "MessageHeader",
        "id": header_id,
        "eventCoding": {
            "system": "https://fhir.nhs.uk/CodeSystem/message-events-bars",
            "code": "servicerequest-request",
            "display": "ServiceRequest Request"
        },
        "reason": {"coding": [{
            "system": "https://fhir.nhs.uk/CodeSystem/message-reason-bars",
            "code": "new",
            "display": "New"
        }]},
        "definition": "https://fhir.nhs.uk/MessageDefinition/bars-message-servicerequest-request-referral",
        "destination": [{"endpoint": options.destination_endpoint}],
        "sender": {"reference": urn(&org_id)},
        "source": Value::Object(source),
        "focus": [{"reference": urn(&sr_id)}]
    });

    let mut patient_json = patient;
    patient_json.insert("id".into(), json!(patient_id));
    let mut org = Map::new();
    org.insert("resourceType".into(), json!("Organization"));
    org.insert("id".into(), json!(org_id));
    org.insert(
        "identifier".into(),
        json!([{"system": ODS_ORGANIZATION, "value": practice.ods}]),
    );
    if let Some(name) = &practice.name {
        org.insert("name".into(), json!(name));
    }
    let consent = json!({
        "resourceType": "Consent",
        "id": consent_id,
        "status": "active",
        "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "patient-privacy"}]},
        "category": [{"coding": [{"system": "https://fhir.nhs.uk/CodeSystem/consent-categories-bars", "code": "DRC", "display": "Direct Care"}]}],
        "patient": {"reference": urn(&patient_id)},
        "policyRule": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "IMPLIED"}]}
    });

    let entry = |id: &str, resource: Value| json!({"fullUrl": urn(id), "resource": resource});
    let mut entries = vec![
        entry(&header_id, header),
        entry(&sr_id, Value::Object(sr)),
        entry(&patient_id, Value::Object(patient_json)),
    ];
    if let Some(mut p) = practitioner {
        p.insert("id".into(), json!(practitioner_id));
        entries.push(entry(&practitioner_id, Value::Object(p)));
    }
    entries.push(entry(&org_id, Value::Object(org)));
    entries.push(entry(&consent_id, consent));

    let bundle = json!({
        "resourceType": "Bundle",
        "id": bundle_id,
        "meta": {
            "profile": [
                "https://fhir.nhs.uk/StructureDefinition/BARSBundleMessage",
                "https://signpost.example.org/fhir/StructureDefinition/sp-referral-message"
            ],
            "lastUpdated": timestamp
        },
        "type": "message",
        "timestamp": timestamp,
        "entry": entries
    });

    Ok(MappedReferral {
        bundle,
        request_id: id_of("X-Request-Id"),
        correlation_id: id_of("X-Correlation-Id"),
        bundle_id,
        message_control_id: control_id,
        practice_ods: practice.ods,
    })
}

/// A FHIR `instant` from an HL7 date/time: a bare date is taken as its midnight, UK time.
fn instant(ts: &str) -> Option<String> {
    let dt = datetime::to_fhir_datetime(ts)?;
    if dt.contains('T') {
        Some(dt)
    } else if dt.len() == 10 {
        datetime::to_fhir_datetime(&format!("{}000000", ts.get(..8)?))
    } else {
        None
    }
}

fn patient(pid: &Segment) -> Result<Map<String, Value>, MapError> {
    let nhs_rep = pid
        .get(3)
        .iter()
        .find(|cx| {
            clean(cx.component(5)).eq_ignore_ascii_case("NH")
                || clean(cx.component(4)).eq_ignore_ascii_case("NHS")
        })
        .ok_or(MapError::NoNhsNumber)?;
    let nhs = NhsNumber::parse(clean(nhs_rep.component(1))).map_err(MapError::BadNhsNumber)?;
    let mut identifier = Map::new();
    identifier.insert("system".into(), json!(NHS_NUMBER));
    identifier.insert("value".into(), json!(nhs.as_str()));
    if let Some((code, display)) = pid
        .get(32)
        .iter()
        .find_map(|r| nhs_number_status(clean(r.component(1))))
    {
        identifier.insert(
            "extension".into(),
            json!([{
                "url": "https://fhir.hl7.org.uk/StructureDefinition/Extension-UKCore-NHSNumberVerificationStatus",
                "valueCodeableConcept": {"coding": [{
                    "system": "https://fhir.hl7.org.uk/CodeSystem/UKCore-NHSNumberVerificationStatusEngland",
                    "code": code,
                    "display": display
                }]}
            }]),
        );
    }

    let names = pid.get(5);
    let name = names
        .iter()
        .find(|n| clean(n.component(7)).eq_ignore_ascii_case("L") && some(n.component(1)).is_some())
        .or_else(|| names.iter().find(|n| some(n.component(1)).is_some()))
        .and_then(human_name)
        .ok_or(MapError::MissingField {
            location: Location::field("PID", 5),
            what: "patient name",
        })?;

    let dob = some(pid.value(7, 1)).ok_or(MapError::MissingField {
        location: Location::field("PID", 7),
        what: "date of birth",
    })?;
    let birth_date = datetime::to_fhir_date(dob).ok_or(MapError::BadValue {
        location: Location::field("PID", 7),
        what: "date of birth",
    })?;

    let mut patient = Map::new();
    patient.insert("resourceType".into(), json!("Patient"));
    patient.insert(
        "meta".into(),
        json!({"profile": ["https://fhir.hl7.org.uk/StructureDefinition/UKCore-Patient"]}),
    );
    patient.insert("identifier".into(), json!([Value::Object(identifier)]));
    patient.insert("name".into(), json!([name]));
    if let Some(sex) = some(pid.value(8, 1)) {
        let gender = match sex.to_ascii_uppercase().as_str() {
            "M" => "male",
            "F" => "female",
            "O" | "A" => "other",
            "U" | "N" => "unknown",
            _ => {
                return Err(MapError::UnknownCode {
                    location: Location::field("PID", 8),
                    what: "administrative sex",
                    table: "0001",
                })
            }
        };
        patient.insert("gender".into(), json!(gender));
    }
    patient.insert("birthDate".into(), json!(birth_date));
    let addresses = pid.get(11);
    if let Some(address) = addresses
        .iter()
        .find(|a| clean(a.component(7)).eq_ignore_ascii_case("H"))
        .or_else(|| addresses.first())
        .and_then(address)
    {
        patient.insert("address".into(), json!([address]));
    }
    Ok(patient)
}

fn nhs_number_status(code: &str) -> Option<(&'static str, &'static str)> {
    Some(match code {
        "01" => ("01", "Number present and verified"),
        "02" => ("02", "Number present but not traced"),
        "03" => ("03", "Trace required"),
        "04" => ("04", "Trace attempted - No match or multiple match found"),
        "05" => (
            "05",
            "Trace needs to be resolved - (NHS Number or patient detail conflict)",
        ),
        "06" => ("06", "Trace in progress"),
        "07" => ("07", "Number not present and trace not required"),
        "08" => ("08", "Trace postponed (baby under six weeks old)"),
        _ => return None,
    })
}

/// An official HumanName from an XPN: family ^ given ^ further given ^ suffix ^ prefix.
fn human_name(xpn: &Repetition) -> Option<Value> {
    let family = some(xpn.component(1))?;
    let mut name = Map::new();
    name.insert("use".into(), json!("official"));
    name.insert("family".into(), json!(family));
    let given: Vec<&str> = [xpn.component(2), xpn.component(3)]
        .into_iter()
        .filter_map(some)
        .collect();
    if !given.is_empty() {
        name.insert("given".into(), json!(given));
    }
    if let Some(prefix) = some(xpn.component(5)) {
        name.insert("prefix".into(), json!([prefix]));
    }
    if let Some(suffix) = some(xpn.component(4)) {
        name.insert("suffix".into(), json!([suffix]));
    }
    Some(Value::Object(name))
}

/// An Address from an XAD: street ^ other designation ^ city ^ county ^ postcode ^ country.
fn address(xad: &Repetition) -> Option<Value> {
    let mut a = Map::new();
    let lines: Vec<&str> = [xad.component(1), xad.component(2)]
        .into_iter()
        .filter_map(some)
        .collect();
    if !lines.is_empty() {
        a.insert("line".into(), json!(lines));
    }
    for (key, n) in [
        ("city", 3),
        ("district", 4),
        ("postalCode", 5),
        ("country", 6),
    ] {
        if let Some(v) = some(xad.component(n)) {
            a.insert(key.into(), json!(v));
        }
    }
    (!a.is_empty()).then_some(Value::Object(a))
}

fn practitioner(prd: &Segment) -> Result<Option<Map<String, Value>>, MapError> {
    let mut p = Map::new();
    p.insert("resourceType".into(), json!("Practitioner"));
    let sds = prd
        .get(7)
        .iter()
        .find(|pln| clean(pln.component(2)).eq_ignore_ascii_case("SDS"))
        .and_then(|pln| some(pln.component(1)));
    if let Some(sds) = sds {
        if !(6..=20).contains(&sds.len()) || !sds.bytes().all(|b| b.is_ascii_digit()) {
            return Err(MapError::BadValue {
                location: Location::field("PRD", 7),
                what: "SDS user id",
            });
        }
        p.insert(
            "identifier".into(),
            json!([{"system": SDS_USER, "value": sds}]),
        );
    }
    if let Some(name) = first_rep(prd, 2).and_then(human_name) {
        p.insert("name".into(), json!([name]));
    }
    Ok((p.len() > 1).then_some(p))
}

struct Practice {
    ods: String,
    name: Option<String>,
}

fn practice(msh: &Segment, rp: Option<&Segment>) -> Result<Practice, MapError> {
    let check = |code: &str, location: Location| -> Result<String, MapError> {
        if is_ods(code) {
            Ok(code.to_ascii_uppercase())
        } else {
            Err(MapError::BadValue {
                location,
                what: "practice ODS code",
            })
        }
    };
    if let Some(prd) = rp {
        if let Some(xon) = first_rep(prd, 10) {
            if let Some(code) = some(xon.component(10)).or_else(|| some(xon.component(3))) {
                return Ok(Practice {
                    ods: check(code, Location::field("PRD", 10))?,
                    name: some(xon.component(1)).map(str::to_owned),
                });
            }
        }
        if let Some(code) = prd
            .get(7)
            .iter()
            .find(|pln| clean(pln.component(2)).eq_ignore_ascii_case("ODS"))
            .and_then(|pln| some(pln.component(1)))
        {
            return Ok(Practice {
                ods: check(code, Location::field("PRD", 7))?,
                name: None,
            });
        }
    }
    let hd = first_rep(msh, 4);
    let code = hd.and_then(|hd| {
        if clean(hd.component(3)).eq_ignore_ascii_case("ODS") {
            some(hd.component(2)).or_else(|| some(hd.component(1)))
        } else {
            some(hd.component(1))
        }
    });
    let code = code.ok_or(MapError::MissingField {
        location: Location::field("MSH", 4),
        what: "sending facility (practice ODS code)",
    })?;
    Ok(Practice {
        ods: check(code, Location::field("MSH", 4))?,
        name: None,
    })
}

struct ServiceRequestParts {
    identifier: String,
    priority: Option<&'static str>,
    authored_on: Option<String>,
    period: Option<Value>,
    reasons: Vec<Value>,
}

fn service_request(
    message: &Message,
    rf1: Option<&Segment>,
    ods: &str,
    control_id: &str,
) -> Result<ServiceRequestParts, MapError> {
    let referral_id = rf1
        .and_then(|rf1| some(rf1.value(6, 1)).or_else(|| some(rf1.value(11, 1))))
        .unwrap_or(control_id);
    let mut parts = ServiceRequestParts {
        identifier: format!("{ods}:{referral_id}"),
        priority: None,
        authored_on: None,
        period: None,
        reasons: Vec::new(),
    };
    if let Some(rf1) = rf1 {
        if let Some(p) = some(rf1.value(2, 1)) {
            parts.priority = Some(match p.to_ascii_uppercase().as_str() {
                "S" => "stat",
                "A" => "asap",
                "R" => "routine",
                _ => {
                    return Err(MapError::UnknownCode {
                        location: Location::field("RF1", 2),
                        what: "referral priority",
                        table: "0280",
                    })
                }
            });
        }
        let date = |field: usize, what: &'static str| -> Result<Option<&str>, MapError> {
            match some(rf1.value(field, 1)) {
                None => Ok(None),
                Some(ts) if datetime::to_fhir_datetime(ts).is_some() => Ok(Some(ts)),
                Some(_) => Err(MapError::BadValue {
                    location: Location::field("RF1", field),
                    what,
                }),
            }
        };
        let effective = date(7, "effective date")?;
        let expires = date(8, "expiration date")?;
        parts.authored_on = effective.and_then(datetime::to_fhir_datetime);
        let mut period = Map::new();
        if let Some(start) = effective.and_then(datetime::to_fhir_date) {
            period.insert("start".into(), json!(start));
        }
        if let Some(end) = expires.and_then(datetime::to_fhir_date) {
            period.insert("end".into(), json!(end));
        }
        if !period.is_empty() {
            parts.period = Some(Value::Object(period));
        }
    }

    let notes: Vec<String> = message
        .segments_named("NTE")
        .flat_map(|nte| nte.get(3).iter().map(|r| clean(r.component(1)).to_owned()))
        .filter(|t| !t.is_empty())
        .collect();
    if !notes.is_empty() {
        parts.reasons.push(json!({"text": notes.join("\n")}));
    }
    if let Some(reason) = rf1.and_then(|rf1| first_rep(rf1, 10)) {
        if let Some(text) = some(reason.component(2)) {
            parts.reasons.push(json!({"text": text}));
        }
    }
    for dg1 in message.segments_named("DG1") {
        let Some(ce) = first_rep(dg1, 3) else {
            continue;
        };
        let text = some(ce.component(2)).or_else(|| some(dg1.value(4, 1)));
        let mut reason = Map::new();
        let system = clean(ce.component(3)).to_ascii_uppercase();
        if let (Some(code), true) = (
            some(ce.component(1)),
            matches!(system.as_str(), "SCT" | "SNOMED" | "SNOMEDCT"),
        ) {
            let mut coding = json!({"system": SNOMED, "code": code});
            if let Some(t) = text {
                coding["display"] = json!(t);
            }
            reason.insert("coding".into(), json!([coding]));
        }
        if let Some(t) = text {
            reason.insert("text".into(), json!(t));
        }
        if !reason.is_empty() {
            parts.reasons.push(Value::Object(reason));
        }
    }
    Ok(parts)
}

struct Software {
    name: Option<String>,
    product: Option<String>,
    version: Option<String>,
}

fn software(message: &Message, msh: &Segment) -> Software {
    let app = some(msh.value(3, 1)).map(str::to_owned);
    match message.segment("SFT") {
        Some(sft) => {
            let product = some(sft.value(3, 1)).map(str::to_owned).or(app.clone());
            let vendor = some(sft.value(1, 1)).map(str::to_owned);
            Software {
                name: vendor.or(app),
                product,
                version: some(sft.value(2, 1)).map(str::to_owned),
            }
        }
        None => Software {
            name: app.clone(),
            product: app,
            version: None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nhs_numbers_are_checked() {
        for good in [
            "9990000018",
            "9990000026",
            "9990000034",
            "9990000042",
            "943 476 5919",
        ] {
            assert!(NhsNumber::parse(good).is_ok(), "{good}");
        }
        assert_eq!(
            NhsNumber::parse("9990000019"),
            Err(NhsNumberError::BadCheckDigit)
        );
        assert_eq!(
            NhsNumber::parse("999000001"),
            Err(NhsNumberError::NotTenDigits)
        );
        assert_eq!(
            NhsNumber::parse("99900000a8"),
            Err(NhsNumberError::NotTenDigits)
        );
        // Remainder 1: the check would be 10, which no number has.
        assert_eq!(
            NhsNumber::parse("0000000060"),
            Err(NhsNumberError::BadCheckDigit)
        );
    }
}
