//! GP Connect Send Document as ITK3 (FHIR STU3): the message Signpost sends for an outcome
//! letter, the MESH metadata that goes with it, and the ITK3 Responses (`ITK008M`) that come
//! back.
//!
//! The letter arrives from the gateway as an R4 DocumentReference ([`Letter::parse`] reads it
//! once, at the edge) with the PDF attached, the patient and the sending organisation
//! `contained`, the referral in `context.related`, and `relatesTo replaces` on a replacement.
//! From it this module builds (standards.md §2, §8.4):
//!
//! ```text
//! Bundle (ITK-Message-Bundle-1, message)
//!  ├ MessageHeader (ITK-MessageHeader-2) event ITK007C, Extension-ITK-MessageHandling-2,
//!  │   source.endpoint = Signpost's mailbox, sender → Organization, focus → document Bundle
//!  ├ Organization (the sender: the scheme)
//!  └ Bundle (ITK-Document-Bundle-1, document)
//!      Composition (final, 371531000, custodian the sender, section.entry[0] → Binary)
//!      Patient, Organization, Device (Signpost, the author), Binary (the PDF)
//! ```
//!
//! The MessageHeader id is the bus message id of the letter, the same on every retry, so an ITK3
//! receiver recognises a resend (`20007 Duplicate Message received`) and files it once; its
//! SenderReference is the referral id, which every acknowledgement carries back.

use serde_json::{json, Value};
use signpost_bus::uris::{NHS_NUMBER, ODS_ORGANIZATION, REFERRAL_ID_SYSTEM};

pub const EVENT_SYSTEM: &str = "https://fhir.nhs.uk/STU3/CodeSystem/ITK-MessageEvent-2";
pub const MESSAGE_HANDLING: &str =
    "https://fhir.nhs.uk/STU3/StructureDefinition/Extension-ITK-MessageHandling-2";
pub const RESPONSE_CODES: &str = "https://fhir.nhs.uk/STU3/CodeSystem/ITK-ResponseCodes-1";
pub const SEND_DOCUMENT_DEFINITION: &str =
    "https://fhir.nhs.uk/STU3/MessageDefinition/ITK-GPConnectSendDocument-MessageDefinition-1";
/// The MESH workflow of Send Document, and of its acknowledgements.
pub const WORKFLOW: &str = "GPFED_CONSULT_REPORT";
pub const ACK_WORKFLOW: &str = "GPFED_CONSULT_REPORT_ACK";
/// The name of the report, in `Mex-Subject` and `Composition.text`.
pub const REPORT_NAME: &str = "Social prescribing outcome";
const RFC4122: &str = "https://tools.ietf.org/html/rfc4122";
const SNOMED: &str = "http://snomed.info/sct";

/// The patient, as MESH routing and the ITK3 Patient need them.
#[derive(Debug, Clone, PartialEq)]
pub struct Patient {
    pub nhs_number: String,
    pub family: String,
    pub given: Vec<String>,
    /// `YYYY-MM-DD`.
    pub birth_date: String,
}

impl Patient {
    pub fn full_name(&self) -> String {
        let mut parts = self.given.clone();
        parts.push(self.family.clone());
        parts.join(" ")
    }
}

/// The sending organisation (the scheme).
#[derive(Debug, Clone, PartialEq)]
pub struct Sender {
    pub ods: Option<String>,
    pub name: String,
}

/// An outcome letter, read from the gateway's DocumentReference.
#[derive(Debug, Clone, PartialEq)]
pub struct Letter {
    /// The document's UUID (its `masterIdentifier`, also the Composition identifier).
    pub document_id: String,
    pub referral_id: String,
    /// The UUID of the letter this one replaces.
    pub replaces: Option<String>,
    pub title: String,
    /// When the letter was written (RFC 3339).
    pub date: String,
    /// The PDF, base64.
    pub pdf_base64: String,
    pub patient: Patient,
    pub sender: Sender,
}

fn s<'a>(v: &'a Value, pointer: &str) -> Option<&'a str> {
    v.pointer(pointer).and_then(Value::as_str)
}

fn strip_urn(v: &str) -> &str {
    v.strip_prefix("urn:uuid:").unwrap_or(v)
}

fn contained<'a>(doc: &'a Value, reference: Option<&str>) -> Option<&'a Value> {
    let id = reference?.strip_prefix('#')?;
    doc.get("contained")?
        .as_array()?
        .iter()
        .find(|r| s(r, "/id") == Some(id))
}

impl Letter {
    /// Read what Send Document needs from the gateway's DocumentReference; the error says what
    /// is missing (never a value from the letter).
    pub fn parse(doc: &Value) -> Result<Letter, String> {
        if s(doc, "/resourceType") != Some("DocumentReference") {
            return Err("the letter is not a DocumentReference".into());
        }
        let document_id = s(doc, "/masterIdentifier/value")
            .map(strip_urn)
            .or_else(|| s(doc, "/id"))
            .ok_or("the letter has no masterIdentifier")?
            .to_owned();
        let referral_id = doc
            .pointer("/context/related")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .find(|r| s(r, "/identifier/system") == Some(REFERRAL_ID_SYSTEM))
            .and_then(|r| s(r, "/identifier/value"))
            .ok_or("the letter names no referral in context.related")?
            .to_owned();
        let replaces = doc
            .get("relatesTo")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .find(|r| s(r, "/code") == Some("replaces"))
            .and_then(|r| s(r, "/target/identifier/value"))
            .map(|v| strip_urn(v).to_owned());
        let pdf_base64 = doc
            .get("content")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .find(|c| s(c, "/attachment/contentType") == Some("application/pdf"))
            .and_then(|c| s(c, "/attachment/data"))
            .ok_or("the letter has no PDF attachment")?
            .to_owned();
        let p = contained(doc, s(doc, "/subject/reference"))
            .ok_or("the letter has no contained Patient as its subject")?;
        let nhs_number = p
            .get("identifier")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .find(|i| s(i, "/system") == Some(NHS_NUMBER))
            .and_then(|i| s(i, "/value"))
            .ok_or("the patient has no NHS number")?
            .to_owned();
        let name = p
            .get("name")
            .and_then(Value::as_array)
            .and_then(|names| {
                names
                    .iter()
                    .find(|n| s(n, "/use") == Some("official"))
                    .or_else(|| names.first())
            })
            .ok_or("the patient has no name")?;
        let family = s(name, "/family")
            .ok_or("the patient has no family name")?
            .to_owned();
        let given = name
            .get("given")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect();
        let birth_date = s(p, "/birthDate")
            .filter(|d| d.len() == 10)
            .ok_or("the patient has no full date of birth")?
            .to_owned();
        let author = doc
            .get("author")
            .and_then(Value::as_array)
            .and_then(|a| a.first());
        let org = author.and_then(|a| contained(doc, s(a, "/reference")));
        let sender = Sender {
            ods: org
                .and_then(|o| o.get("identifier"))
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .find(|i| s(i, "/system") == Some(ODS_ORGANIZATION))
                .and_then(|i| s(i, "/value"))
                .map(str::to_owned),
            name: org
                .and_then(|o| s(o, "/name"))
                .or_else(|| author.and_then(|a| s(a, "/display")))
                .unwrap_or("Social prescribing scheme")
                .to_owned(),
        };
        Ok(Letter {
            document_id,
            referral_id,
            replaces,
            title: s(doc, "/description")
                .unwrap_or("Social prescribing outcome letter")
                .to_owned(),
            date: s(doc, "/date").unwrap_or_default().to_owned(),
            pdf_base64,
            patient: Patient {
                nhs_number,
                family,
                given,
                birth_date,
            },
            sender,
        })
    }
}

/// `Mex-To` for a letter: the endpoint's mailbox, or for `gpprovider` MESH's automatic routing
/// to the registered GP, `GPPROVIDER_<NHS number>_<DDMMYYYY>_<surname>`.
pub fn mesh_to(mailbox: &str, patient: &Patient) -> String {
    if mailbox != signpost_bus::directory::MESH_GP_PROVIDER {
        return mailbox.to_owned();
    }
    let dob = match patient.birth_date.split('-').collect::<Vec<_>>()[..] {
        [y, m, d] => format!("{d}{m}{y}"),
        _ => String::new(),
    };
    let surname: String = patient
        .family
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '\'')
        .collect();
    format!("GPPROVIDER_{}_{dob}_{surname}", patient.nhs_number)
}

/// `Mex-Subject`: "{report} report for {patient}, NHS Number {n}, ODS Code {ods}".
pub fn mesh_subject(letter: &Letter, ods: &str) -> String {
    let subject = format!(
        "{REPORT_NAME} report for {}, NHS Number {}, ODS Code {ods}",
        letter.patient.full_name(),
        letter.patient.nhs_number
    );
    // HTTP header values: printable ASCII only.
    subject
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .collect()
}

fn urn() -> String {
    format!("urn:uuid:{}", uuid::Uuid::new_v4())
}

fn meta(profile: &str, now: &str) -> Value {
    json!({"profile": [profile], "lastUpdated": now})
}

/// The ITK3 Send Document message for `letter`. `message_id` is the MessageHeader id (the
/// letter's bus message id); `mailbox` is Signpost's MESH mailbox; `now` is RFC 3339.
pub fn send_document(letter: &Letter, message_id: &str, mailbox: &str, now: &str) -> Value {
    let org_id = uuid::Uuid::new_v4().to_string();
    let org_url = format!("urn:uuid:{org_id}");
    let patient_id = uuid::Uuid::new_v4().to_string();
    let patient_url = format!("urn:uuid:{patient_id}");
    let device_id = uuid::Uuid::new_v4().to_string();
    let device_url = format!("urn:uuid:{device_id}");
    let binary_id = uuid::Uuid::new_v4().to_string();
    let binary_url = format!("urn:uuid:{binary_id}");
    let composition_id = uuid::Uuid::new_v4().to_string();
    let document_bundle_id = uuid::Uuid::new_v4().to_string();
    let document_url = format!("urn:uuid:{document_bundle_id}");
    let p = &letter.patient;
    let version = if letter.replaces.is_some() { 2 } else { 1 };

    let mut organization = json!({
        "resourceType": "Organization",
        "id": org_id,
        "meta": meta("https://fhir.nhs.uk/STU3/StructureDefinition/CareConnect-ITK-Header-Organization-1", now),
        "name": letter.sender.name,
    });
    if let Some(ods) = &letter.sender.ods {
        organization["identifier"] =
            json!([{"system": "https://fhir.nhs.uk/Id/ods-organization-code", "value": ods}]);
    }
    let patient = json!({
        "resourceType": "Patient",
        "id": patient_id,
        "meta": meta("https://fhir.hl7.org.uk/STU3/StructureDefinition/CareConnect-Patient-1", now),
        "identifier": [{
            "extension": [{
                "url": "https://fhir.hl7.org.uk/STU3/StructureDefinition/Extension-CareConnect-NHSNumberVerificationStatus-1",
                "valueCodeableConcept": {"coding": [{
                    "system": "https://fhir.hl7.org.uk/STU3/CodeSystem/CareConnect-NHSNumberVerificationStatus-1",
                    "code": "01", "display": "Number present and verified"}]}
            }],
            "system": NHS_NUMBER,
            "value": p.nhs_number,
        }],
        "name": [{"use": "official", "family": p.family, "given": p.given}],
        "birthDate": p.birth_date,
    });
    let device = json!({
        "resourceType": "Device",
        "id": device_id,
        "meta": {"lastUpdated": now},
        "type": {"text": "Social prescribing interoperability gateway"},
        "manufacturer": "Signpost",
        "model": "Signpost",
        "version": env!("CARGO_PKG_VERSION"),
        "owner": {"reference": org_url},
    });
    let binary = json!({
        "resourceType": "Binary",
        "id": binary_id,
        "meta": meta("https://fhir.nhs.uk/STU3/StructureDefinition/ITK-Attachment-Binary-1", now),
        "contentType": "application/pdf",
        "content": letter.pdf_base64,
    });
    let narrative = format!(
        "{REPORT_NAME} report for {}, NHS Number {}, Version {version}",
        p.full_name(),
        p.nhs_number
    );
    let mut composition = json!({
        "resourceType": "Composition",
        "id": composition_id,
        "meta": meta("https://fhir.hl7.org.uk/STU3/StructureDefinition/CareConnect-Composition-1", now),
        "identifier": {"system": RFC4122, "value": letter.document_id},
        "text": {"status": "generated", "div": format!("<div xmlns=\"http://www.w3.org/1999/xhtml\">{}</div>", xml_escape(&narrative))},
        "status": "final",
        "type": {"coding": [{"system": SNOMED, "code": "371531000", "display": "Report of clinical encounter"}]},
        "subject": {"reference": patient_url},
        "date": if letter.date.is_empty() { now } else { &letter.date },
        "author": [{"reference": device_url}],
        "title": letter.title,
        "confidentiality": "N",
        "custodian": {"reference": org_url},
        "section": [{
            "title": REPORT_NAME,
            "code": {"coding": [{"system": SNOMED, "code": "371531000", "display": "Report of clinical encounter"}]},
            "text": {"status": "generated", "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\">The outcome letter is attached as a PDF.</div>"},
            "entry": [{"reference": binary_url}],
        }],
    });
    if let Some(original) = &letter.replaces {
        composition["relatesTo"] = json!([{
            "code": "replaces",
            "targetIdentifier": {"system": RFC4122, "value": original},
        }]);
    }
    let document = json!({
        "resourceType": "Bundle",
        "id": document_bundle_id,
        "meta": meta("https://fhir.nhs.uk/STU3/StructureDefinition/ITK-Document-Bundle-1", now),
        "identifier": {"system": RFC4122, "value": document_bundle_id},
        "type": "document",
        "entry": [
            {"fullUrl": format!("urn:uuid:{composition_id}"), "resource": composition},
            {"fullUrl": patient_url, "resource": patient},
            {"fullUrl": org_url, "resource": organization.clone()},
            {"fullUrl": device_url, "resource": device},
            {"fullUrl": binary_url, "resource": binary},
        ],
    });
    let header = json!({
        "resourceType": "MessageHeader",
        "id": message_id,
        "meta": meta("https://fhir.nhs.uk/STU3/StructureDefinition/ITK-MessageHeader-2", now),
        "extension": [{
            "url": MESSAGE_HANDLING,
            "extension": [
                {"url": "BusAckRequested", "valueBoolean": true},
                {"url": "InfAckRequested", "valueBoolean": true},
                {"url": "RecipientType", "valueCoding": {"system": "https://fhir.nhs.uk/STU3/CodeSystem/ITK-RecipientType-1", "code": "FI", "display": "For Information"}},
                {"url": "MessageDefinition", "valueReference": {"reference": SEND_DOCUMENT_DEFINITION}},
                {"url": "SenderReference", "valueString": letter.referral_id},
                {"url": "LocalExtension", "valueString": "SendDocument-Generic"},
            ],
        }],
        "event": {"system": EVENT_SYSTEM, "code": "ITK007C", "display": "ITK GP Connect Send Document"},
        "sender": {"reference": org_url},
        "timestamp": now,
        "source": {"name": "Signpost", "software": "Signpost", "version": env!("CARGO_PKG_VERSION"), "endpoint": mailbox},
        // STU3 MessageHeader.focus is a list (the ITK3 profile allows one).
        "focus": [{"reference": document_url}],
    });
    let bundle_id = uuid::Uuid::new_v4().to_string();
    json!({
        "resourceType": "Bundle",
        "id": bundle_id,
        "meta": meta("https://fhir.nhs.uk/STU3/StructureDefinition/ITK-Message-Bundle-1", now),
        "identifier": {"system": RFC4122, "value": bundle_id},
        "type": "message",
        "entry": [
            {"fullUrl": urn(), "resource": header},
            {"fullUrl": org_url, "resource": organization},
            {"fullUrl": document_url, "resource": document},
        ],
    })
}

fn xml_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Which acknowledgement an ITK3 Response is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckKind {
    /// Technical validation (codes 1xxxx and 2xxxx).
    Infrastructure,
    /// Landed in the GP practice's workflow (codes 3xxxx).
    Business,
}

/// An ITK3 Response (`ITK008M`) as the inbox receives it.
#[derive(Debug, Clone, PartialEq)]
pub struct ItkResponse {
    /// The MessageHeader id of the message it answers (Signpost's letter message id).
    pub answers: String,
    /// The SenderReference it carries back (the referral id).
    pub sender_reference: Option<String>,
    pub kind: AckKind,
    pub code: String,
    /// What the code means, from ITK-ResponseCodes-1 as Signpost knows it (never the far
    /// end's own text, which could carry anything).
    pub display: &'static str,
    /// `ok`, `transient-error` or `fatal-error`.
    pub response_code: String,
}

impl ItkResponse {
    /// Positive: `20013 Success` for an infrastructure acknowledgement, `30001 Patient known
    /// here` for a business one, and `response.code` `ok`.
    pub fn is_positive(&self) -> bool {
        self.response_code == "ok" && matches!(self.code.as_str(), "20013" | "30001")
    }
}

/// The meaning of an ITK-ResponseCodes-1 code (standards.md §2.4).
pub fn response_meaning(code: &str) -> &'static str {
    match code {
        "20006" => "ITK header validation failure",
        "20007" => "Duplicate Message received",
        "20009" => "Payload validation failure",
        "20013" => "Success",
        "20014" => "Unable to Process Replacement Document",
        "20015" => "Message too large",
        "30001" => "Patient known here",
        "30002" => "Patient not known here",
        "30003" => "Patient no longer at this clinical setting",
        c if c.starts_with('1') || c.starts_with('2') => "infrastructure error",
        _ => "business response",
    }
}

/// Read an ITK3 Response message. The error says what is missing or unexpected.
pub fn parse_response(body: &[u8]) -> Result<ItkResponse, String> {
    let bundle: Value = serde_json::from_slice(body).map_err(|_| "not JSON".to_owned())?;
    if s(&bundle, "/resourceType") != Some("Bundle") || s(&bundle, "/type") != Some("message") {
        return Err("not a message Bundle".into());
    }
    let entries = bundle
        .get("entry")
        .and_then(Value::as_array)
        .ok_or("a Bundle without entries")?;
    let header = entries
        .first()
        .and_then(|e| e.get("resource"))
        .filter(|r| s(r, "/resourceType") == Some("MessageHeader"))
        .ok_or("the first entry is not a MessageHeader")?;
    let event = s(header, "/event/code").ok_or("the MessageHeader has no event")?;
    if event != "ITK008M" {
        return Err(format!(
            "event {} is not an ITK3 Response",
            event.chars().take(16).collect::<String>()
        ));
    }
    let answers = s(header, "/response/identifier")
        .ok_or("the Response has no response.identifier")?
        .to_owned();
    let response_code = s(header, "/response/code").unwrap_or("ok").to_owned();
    let sender_reference = header
        .get("extension")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|e| s(e, "/url") == Some(MESSAGE_HANDLING))
        .flat_map(|e| {
            e.get("extension")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
        })
        .find(|e| s(e, "/url") == Some("SenderReference"))
        .and_then(|e| s(e, "/valueString"))
        .map(str::to_owned);
    let details = s(header, "/response/details/reference").ok_or("the Response has no details")?;
    let outcome = entries
        .iter()
        .find(|e| {
            s(e, "/fullUrl") == Some(details)
                || s(e, "/resource/id").is_some_and(|id| details.ends_with(&format!("/{id}")))
        })
        .and_then(|e| e.get("resource"))
        .filter(|r| s(r, "/resourceType") == Some("OperationOutcome"))
        .ok_or("response.details does not resolve to an OperationOutcome")?;
    let coding = outcome
        .pointer("/issue/0/details/coding")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find(|c| s(c, "/system") == Some(RESPONSE_CODES))
        .ok_or("the OperationOutcome has no ITK-ResponseCodes-1 code")?;
    let code = s(coding, "/code").ok_or("the response coding has no code")?;
    if code.len() != 5 || !code.chars().all(|c| c.is_ascii_digit()) {
        return Err("the response code is not a five-digit ITK code".into());
    }
    let kind = if code.starts_with('3') {
        AckKind::Business
    } else {
        AckKind::Infrastructure
    };
    Ok(ItkResponse {
        answers,
        sender_reference,
        kind,
        code: code.to_owned(),
        display: response_meaning(code),
        response_code,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    pub fn letter_document() -> Value {
        json!({
            "resourceType": "DocumentReference",
            "id": "d-1",
            "masterIdentifier": {"system": "urn:ietf:rfc:3986", "value": "urn:uuid:0f0e0d0c-0000-4000-8000-000000000001"},
            "contained": [
                {"resourceType": "Patient", "id": "patient",
                 "identifier": [{"system": NHS_NUMBER, "value": "9434765919"}],
                 "name": [{"use": "official", "family": "O'Example", "given": ["Jane", "Ann"]}],
                 "birthDate": "2001-02-14"},
                {"resourceType": "Organization", "id": "author",
                 "identifier": [{"system": ODS_ORGANIZATION, "value": "X00SP1"}],
                 "name": "Community Link Workers"}
            ],
            "status": "current",
            "subject": {"reference": "#patient", "identifier": {"system": NHS_NUMBER, "value": "9434765919"}},
            "date": "2026-11-30T10:00:00Z",
            "author": [{"reference": "#author"}],
            "description": "Social prescribing outcome letter",
            "content": [
                {"attachment": {"contentType": "text/html; charset=utf-8", "data": "PGh0bWw+"}},
                {"attachment": {"contentType": "application/pdf", "data": "JVBERi0xLjc="}}
            ],
            "context": {"related": [{"identifier": {"system": REFERRAL_ID_SYSTEM, "value": "r-1"}}]}
        })
    }

    #[test]
    fn a_letter_is_read_from_the_gateways_document_reference() {
        let l = Letter::parse(&letter_document()).unwrap();
        assert_eq!(l.document_id, "0f0e0d0c-0000-4000-8000-000000000001");
        assert_eq!(l.referral_id, "r-1");
        assert_eq!(l.pdf_base64, "JVBERi0xLjc=");
        assert_eq!(l.patient.full_name(), "Jane Ann O'Example");
        assert_eq!(l.sender.ods.as_deref(), Some("X00SP1"));
        assert_eq!(l.replaces, None);
    }

    #[test]
    fn a_letter_without_a_pdf_or_patient_is_refused_without_quoting_it() {
        let mut d = letter_document();
        d["content"] = json!([]);
        assert_eq!(
            Letter::parse(&d).unwrap_err(),
            "the letter has no PDF attachment"
        );
        let mut d = letter_document();
        d["subject"] = json!({"reference": "#nobody"});
        assert!(Letter::parse(&d).unwrap_err().contains("Patient"));
    }

    #[test]
    fn gp_provider_routing_uses_nhs_number_date_of_birth_and_surname() {
        let l = Letter::parse(&letter_document()).unwrap();
        assert_eq!(
            mesh_to("gpprovider", &l.patient),
            "GPPROVIDER_9434765919_14022001_O'Example"
        );
        assert_eq!(mesh_to("A81001OT001", &l.patient), "A81001OT001");
        assert_eq!(
            mesh_subject(&l, "X00SP1"),
            "Social prescribing outcome report for Jane Ann O'Example, NHS Number 9434765919, ODS Code X00SP1"
        );
    }

    #[test]
    fn the_message_has_the_itk3_send_document_shape() {
        let mut d = letter_document();
        d["relatesTo"] =
            json!([{"code": "replaces", "target": {"identifier": {"value": "urn:uuid:aaaa"}}}]);
        let l = Letter::parse(&d).unwrap();
        let m = send_document(&l, "m-1", "X26ABC001", "2026-12-02T10:00:00Z");
        let header = &m["entry"][0]["resource"];
        assert_eq!(header["id"], "m-1");
        assert_eq!(header["event"]["code"], "ITK007C");
        assert_eq!(header["source"]["endpoint"], "X26ABC001");
        let handling = &header["extension"][0];
        assert_eq!(handling["url"], MESSAGE_HANDLING);
        let sub = |name: &str| {
            handling["extension"]
                .as_array()
                .unwrap()
                .iter()
                .find(|e| e["url"] == name)
                .cloned()
                .unwrap()
        };
        assert_eq!(sub("SenderReference")["valueString"], "r-1");
        assert_eq!(sub("BusAckRequested")["valueBoolean"], true);
        assert_eq!(sub("LocalExtension")["valueString"], "SendDocument-Generic");
        let document = &m["entry"][2]["resource"];
        assert_eq!(header["focus"][0]["reference"], m["entry"][2]["fullUrl"]);
        assert_eq!(document["type"], "document");
        let composition = &document["entry"][0]["resource"];
        assert_eq!(composition["relatesTo"][0]["code"], "replaces");
        assert_eq!(
            composition["relatesTo"][0]["targetIdentifier"]["value"],
            "aaaa"
        );
        let binary_ref = composition["section"][0]["entry"][0]["reference"].clone();
        let binary = document["entry"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["fullUrl"] == binary_ref)
            .unwrap();
        assert_eq!(binary["resource"]["content"], "JVBERi0xLjc=");
        assert!(composition["text"]["div"]
            .as_str()
            .unwrap()
            .contains("NHS Number 9434765919, Version 2"));
    }

    fn response(code: &str, response_code: &str) -> Vec<u8> {
        json!({
            "resourceType": "Bundle", "type": "message",
            "entry": [
                {"fullUrl": "urn:uuid:h", "resource": {
                    "resourceType": "MessageHeader",
                    "extension": [{"url": MESSAGE_HANDLING, "extension": [{"url": "SenderReference", "valueString": "r-1"}]}],
                    "event": {"system": EVENT_SYSTEM, "code": "ITK008M"},
                    "response": {"identifier": "m-1", "code": response_code, "details": {"reference": "urn:uuid:oo"}}}},
                {"fullUrl": "urn:uuid:oo", "resource": {"resourceType": "OperationOutcome", "issue": [
                    {"severity": "information", "code": "informational",
                     "details": {"coding": [{"system": RESPONSE_CODES, "code": code, "display": "x"}]}}]}}
            ]
        })
        .to_string()
        .into_bytes()
    }

    #[test]
    fn acknowledgements_are_read_and_classified() {
        let r = parse_response(&response("30001", "ok")).unwrap();
        assert_eq!((r.kind, r.is_positive()), (AckKind::Business, true));
        assert_eq!(r.answers, "m-1");
        assert_eq!(
            r.display, "Patient known here",
            "our text, not the sender's"
        );
        assert_eq!(r.sender_reference.as_deref(), Some("r-1"));
        let r = parse_response(&response("20013", "ok")).unwrap();
        assert_eq!((r.kind, r.is_positive()), (AckKind::Infrastructure, true));
        let r = parse_response(&response("30002", "fatal-error")).unwrap();
        assert_eq!((r.kind, r.is_positive()), (AckKind::Business, false));
        let r = parse_response(&response("20009", "fatal-error")).unwrap();
        assert_eq!((r.kind, r.is_positive()), (AckKind::Infrastructure, false));
        assert!(parse_response(b"{}").is_err());
        assert!(parse_response(&response("3000", "ok")).is_err());
    }
}
