use base64::Engine;
use serde_json::{json, Value};
use signpost_adapter_hl7v2::mdm::{self, Letter, MdmError, MdmHeader};
use signpost_adapter_hl7v2::message::Message;

use crate::helpers::{resource, workspace_fixture, AT};

fn header() -> MdmHeader {
    MdmHeader {
        sending_application: "SIGNPOST".into(),
        sending_facility: "SIGNPOST".into(),
        receiving_application: "EMIS".into(),
        receiving_facility: "A81001".into(),
        control_id: "MDM-0001".into(),
        at: AT,
    }
}

/// A DocumentReference shaped as the gateway's `letter_document` makes it.
fn letter_document(content_type: &str, data: &[u8], title: &str) -> Value {
    json!({
        "resourceType": "DocumentReference",
        "id": "0d1e2f30-4a5b-4c6d-8e9f-0a1b2c3d4e5f",
        "meta": {"profile": ["https://fhir.hl7.org.uk/StructureDefinition/UKCore-DocumentReference"], "lastUpdated": "2026-11-21T09:59:00+00:00"},
        "masterIdentifier": {"system": "urn:ietf:rfc:3986", "value": "urn:uuid:0d1e2f30-4a5b-4c6d-8e9f-0a1b2c3d4e5f"},
        "status": "current",
        "docStatus": "final",
        "type": {"coding": [{"system": "http://snomed.info/sct", "code": "371531000", "display": "Report of clinical encounter"}]},
        "subject": {"type": "Patient", "identifier": {"system": "https://fhir.nhs.uk/Id/nhs-number", "value": "9990000018"}},
        "date": "2026-11-21T09:59:00+00:00",
        "author": [{"type": "Organization", "identifier": {"system": "https://fhir.nhs.uk/Id/ods-organization-code", "value": "X12345"}, "display": "Riverside Social Prescribing & Wellbeing"}],
        "description": "Social prescribing outcome letter",
        "content": [{"attachment": {
            "contentType": content_type,
            "language": "en-GB",
            "data": base64::engine::general_purpose::STANDARD.encode(data),
            "title": title,
            "creation": "2026-11-21T09:58:00+00:00"
        }}],
        "context": {"related": [{"type": "ServiceRequest", "identifier": {"system": "https://signpost.example.org/fhir/Id/referral", "value": "R-1"}}]}
    })
}

fn round_trip(doc: &Value) -> (String, Letter) {
    let text = mdm::build(doc, None, &header()).unwrap();
    let letter = mdm::read_letter(&Message::parse(&text).unwrap()).unwrap();
    (text, letter)
}

const HTML: &str = "<!DOCTYPE html><html lang=\"en-GB\"><head><meta charset=\"utf-8\"><title>Outcome | Joan</title></head><body><h1>Outcome</h1><p>Met 3&times; ~ walking group ^ lunch club \\ choir.</p>\r\n<p>£20 voucher</p></body></html>";

#[test]
fn an_html_letter_survives_the_round_trip_byte_for_byte() {
    let doc = letter_document(
        "text/html; charset=utf-8",
        HTML.as_bytes(),
        "Social prescribing outcome",
    );
    let (text, letter) = round_trip(&doc);
    assert_eq!(letter.data, HTML.as_bytes());
    assert_eq!(letter.content_type, "text/html");
    assert_eq!(letter.document_id, "0d1e2f30-4a5b-4c6d-8e9f-0a1b2c3d4e5f");
    assert_eq!(letter.title.as_deref(), Some("Social prescribing outcome"));
    let msg = Message::parse(&text).unwrap();
    let obx = msg.segment("OBX").unwrap();
    assert_eq!(obx.value(2, 1), "ED");
    let ed = &obx.get(5)[0];
    assert_eq!(
        (ed.component(2), ed.component(3), ed.component(4)),
        ("text", "html", "Base64")
    );
}

#[test]
fn a_pdf_with_every_byte_value_survives_the_round_trip() {
    let mut pdf = b"%PDF-1.7\n".to_vec();
    pdf.extend((0..=255u8).cycle().take(4096));
    pdf.extend_from_slice(&[0x0B, 0x1C, 0x0D, b'|', b'^', b'\\']);
    let doc = letter_document("application/pdf", &pdf, "Outcome letter");
    let (text, letter) = round_trip(&doc);
    assert_eq!(letter.data, pdf);
    assert_eq!(letter.content_type, "application/pdf");
    assert!(
        !text.bytes().any(|b| b == 0x0B || b == 0x1C),
        "nothing in the text could break MLLP framing"
    );
}

#[test]
fn a_plain_text_letter_is_sent_as_tx_lines_and_read_back_exactly() {
    let body = "Dear Dr Okafor,\r\n\r\nJoan met her link worker 3 times | walking group ^ choir ~ lunch club & \\ café.\n\nOutcome: ONS4 improved.\n";
    let doc = letter_document("text/plain; charset=utf-8", body.as_bytes(), "Outcome");
    let (text, letter) = round_trip(&doc);
    assert_eq!(String::from_utf8(letter.data).unwrap(), body);
    assert_eq!(letter.content_type, "text/plain");
    let msg = Message::parse(&text).unwrap();
    let obx: Vec<_> = msg.segments_named("OBX").collect();
    assert_eq!(
        obx.len(),
        6,
        "one OBX per line, the empty last line included"
    );
    assert!(obx.iter().all(|o| o.value(2, 1) == "TX"));
    assert_eq!(obx[0].value(5, 1), "Dear Dr Okafor,\r");
    assert_eq!(msg.segment("TXA").unwrap().value(3, 1), "TX");
}

#[test]
fn the_mdm_has_the_documented_segments() {
    let referral = workspace_fixture("gp-system/referral-new.json");
    let patient = resource(&referral, "Patient");
    let doc = letter_document("text/html", b"<p>Hello</p>", "Social prescribing outcome");
    let text = mdm::build(&doc, Some(patient), &header()).unwrap();
    insta::assert_snapshot!(text.replace('\r', "\n"), @r"
    MSH|^~\&|SIGNPOST|SIGNPOST|EMIS|A81001|20261121100000+0000||MDM^T02^MDM_T02|MDM-0001|P|2.5|||||GBR|UNICODE UTF-8
    EVN|T02|20261121100000+0000
    PID|1||9990000018^^^NHS^NH||Example^Joan^^^^^L||19480314|F|||1 Example Street^^Exampleton^^ZZ99 3AA^^H
    PV1|1|N
    TXA|1|371531000|AP|20261121095900+0000||20261121095800+0000|||X12345^Riverside Social Prescribing \T\ Wellbeing|||0d1e2f30-4a5b-4c6d-8e9f-0a1b2c3d4e5f|||||AU||AV
    OBX|1|ED|371531000^Social prescribing outcome^SCT||^text^html^Base64^PHA+SGVsbG88L3A+||||||F
    ");
}

#[test]
fn letters_that_cannot_be_sent_say_why() {
    let good = letter_document("text/html", b"<p>x</p>", "t");
    let with = |pointer: &str, value: Value| {
        let mut d = good.clone();
        *d.pointer_mut(pointer).unwrap() = value;
        d
    };
    let cases = [
        (
            json!({"resourceType": "Composition"}),
            MdmError::NotADocumentReference,
        ),
        (
            with("/id", json!("")),
            MdmError::Missing("DocumentReference.id"),
        ),
        (
            with("/subject/identifier/value", json!("9990000019")),
            MdmError::BadNhsNumber,
        ),
        (
            with("/content", json!([])),
            MdmError::Missing("DocumentReference.content[0].attachment"),
        ),
        (
            with("/content/0/attachment/data", json!("not base64!")),
            MdmError::BadData,
        ),
        (
            with("/content/0/attachment/contentType", json!(null)),
            MdmError::Missing("DocumentReference.content[0].attachment.contentType"),
        ),
    ];
    for (doc, want) in cases {
        assert_eq!(mdm::build(&doc, None, &header()), Err(want));
    }
}

#[test]
fn mdms_from_elsewhere_are_read_too() {
    let hex = "MSH|^~\\&|X|Y|Z|W|1||MDM^T02|1|P|2.5\rTXA|1|CN|AP|||||||||DOC-9\rOBX|1|ED|X^Letter||^application^pdf^Hex^255044460A\r";
    let letter = mdm::read_letter(&Message::parse(hex).unwrap()).unwrap();
    assert_eq!(letter.data, b"%PDF\n");
    assert_eq!(letter.document_id, "DOC-9");
    let lines = "MSH|^~\\&|X|Y|Z|W|1||MDM^T02|1|P|2.5\rTXA|1|CN|TX|||||||||DOC-10\rOBX|1|TX|||one~two\rOBX|2|FT|||three\\.br\\four\r";
    let letter = mdm::read_letter(&Message::parse(lines).unwrap()).unwrap();
    assert_eq!(letter.data, b"one\ntwo\nthree\nfour");
    let no_txa = "MSH|^~\\&|X|Y|Z|W|1||MDM^T02|1|P|2.5\rOBX|1|TX|||one\r";
    assert_eq!(
        mdm::read_letter(&Message::parse(no_txa).unwrap()),
        Err(MdmError::MissingSegment("TXA"))
    );
    let numeric = "MSH|^~\\&|X|Y|Z|W|1||MDM^T02|1|P|2.5\rTXA|1\rOBX|1|NM|||1\r";
    assert_eq!(
        mdm::read_letter(&Message::parse(numeric).unwrap()),
        Err(MdmError::UnreadableContent)
    );
}
