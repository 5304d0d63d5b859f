use serde_json::{json, Value};
use signpost_adapter_hl7v2::ack::ErrorCode;
use signpost_adapter_hl7v2::message::{Location, Message};
use signpost_adapter_hl7v2::ref_i12::{self, MapError, MapOptions, MappedReferral, NhsNumberError};

use crate::helpers::{fixture, profiles, resource, shape, without_ids, workspace_fixture};

fn map_text(text: &str) -> Result<MappedReferral, MapError> {
    ref_i12::map(&Message::parse(text).unwrap(), &MapOptions::default())
}

fn map_fixture(name: &str) -> Result<MappedReferral, MapError> {
    map_text(&fixture(name))
}

#[test]
fn the_emis_referral_becomes_the_fhir_fixture_referral() {
    let mapped = map_fixture("ref-i12-emis.hl7").unwrap();
    let want = workspace_fixture("gp-system/referral-new.json");
    let got = &mapped.bundle;

    // The same resources, in the same order, each with the same structure.
    assert_eq!(shape(&got["meta"]), shape(&want["meta"]));
    let types = |b: &Value| -> Vec<Value> {
        b["entry"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["resource"]["resourceType"].clone())
            .collect()
    };
    assert_eq!(types(got), types(&want));
    for (g, w) in got["entry"]
        .as_array()
        .unwrap()
        .iter()
        .zip(want["entry"].as_array().unwrap())
    {
        assert_eq!(shape(g), shape(w), "{}", w["resource"]["resourceType"]);
        assert_eq!(
            g["fullUrl"],
            format!("urn:uuid:{}", g["resource"]["id"].as_str().unwrap())
        );
    }
    // And the same content, ids and the identifier system aside.
    for t in ["Patient", "Practitioner", "Organization", "Consent"] {
        assert_eq!(
            without_ids(resource(got, t)),
            without_ids(resource(&want, t)),
            "{t}"
        );
    }
    let (mut g, mut w) = (
        without_ids(resource(got, "MessageHeader")),
        without_ids(resource(&want, "MessageHeader")),
    );
    assert_eq!(g, w);
    g = without_ids(resource(got, "ServiceRequest"));
    w = without_ids(resource(&want, "ServiceRequest"));
    assert_eq!(
        g["identifier"],
        json!([{"system": "https://signpost.example.org/fhir/Id/hl7v2-referral", "value": "A81001:REF-0a0001"}])
    );
    g.as_object_mut().unwrap().remove("identifier");
    w.as_object_mut().unwrap().remove("identifier");
    assert_eq!(g, w);
    assert_eq!(got["timestamp"], "2026-11-20T09:30:00+00:00");
    assert_eq!(got["type"], "message");

    // The references point where they must.
    let url_of = |t: &str| {
        got["entry"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["resource"]["resourceType"] == t)
            .unwrap()["fullUrl"]
            .clone()
    };
    let header = resource(got, "MessageHeader");
    assert_eq!(header["sender"]["reference"], url_of("Organization"));
    assert_eq!(header["focus"][0]["reference"], url_of("ServiceRequest"));
    let sr = resource(got, "ServiceRequest");
    assert_eq!(sr["subject"]["reference"], url_of("Patient"));
    assert_eq!(sr["requester"]["reference"], url_of("Practitioner"));

    assert_eq!(mapped.message_control_id, "EMIS-000123");
    assert_eq!(mapped.practice_ods, "A81001");
    assert_eq!(mapped.bundle_id, got["id"]);
}

#[test]
fn both_valid_fixtures_pass_the_signpost_referral_message_profile() {
    for name in ["ref-i12-emis.hl7", "ref-i12-systmone.hl7"] {
        let mapped = map_fixture(name).unwrap();
        let outcome = profiles().validate(&mapped.bundle, None).unwrap();
        assert!(
            outcome.is_valid() && outcome.issues.is_empty(),
            "{name}: {}",
            serde_json::to_string_pretty(&outcome.to_operation_outcome()).unwrap()
        );
    }
}

#[test]
fn the_systmone_referral_maps_its_own_habits() {
    let mapped = map_fixture("ref-i12-systmone.hl7").unwrap();
    let b = &mapped.bundle;
    assert_eq!(mapped.practice_ods, "A81002");
    let patient = resource(b, "Patient");
    assert_eq!(
        patient["identifier"],
        json!([{"system": "https://fhir.nhs.uk/Id/nhs-number", "value": "9990000026"}]),
        "the NHS number is found by assigning authority alone, and no verification is claimed"
    );
    assert_eq!(
        patient["name"],
        json!([{"use": "official", "family": "Sample", "given": ["Ravi", "Kumar"], "prefix": ["Mr"]}])
    );
    assert_eq!(patient["gender"], "male");
    assert_eq!(patient["birthDate"], "1990-07-02");
    assert_eq!(
        patient["address"],
        json!([{"line": ["Flat 2^3 Mill Lane", "Hillview Estate"], "city": "Hillview", "district": "Exampleshire", "postalCode": "ZZ99 4BB", "country": "GBR"}])
    );
    let practitioner = resource(b, "Practitioner");
    assert!(
        practitioner.get("identifier").is_none(),
        "a GMC number is not an SDS user id"
    );
    assert_eq!(practitioner["name"][0]["family"], "Shah");
    let sr = resource(b, "ServiceRequest");
    assert_eq!(sr["priority"], "asap");
    assert_eq!(
        sr["authoredOn"], "2026-07-02T10:00:00+01:00",
        "a time without offset in July is BST"
    );
    assert_eq!(
        sr["identifier"][0]["value"], "A81002:S1-REF-42",
        "RF1-11 when RF1-6 is empty"
    );
    assert_eq!(sr["occurrencePeriod"], json!({"start": "2026-07-02"}));
    assert_eq!(
        sr["reasonCode"],
        json!([
            {"text": "Money worries: owes £300 rent & council tax\nLonely since moving\nAsked about: walking group|gardening \\ choir ^ lunch club"},
            {"text": "Provider ordered"},
            {"text": "Social isolation"}
        ])
    );
    let header = resource(b, "MessageHeader");
    assert_eq!(
        header["source"],
        json!({"name": "SystmOne", "software": "SystmOne", "endpoint": "https://fhir.nhs.uk/Id/ods-organization-code|A81002"})
    );
    assert_eq!(b["timestamp"], "2026-07-02T10:15:00+01:00");
    let org = resource(b, "Organization");
    assert_eq!(org["identifier"][0]["value"], "A81002");
    assert!(org.get("name").is_none());
}

#[test]
fn the_same_message_sent_twice_maps_to_the_same_bundle() {
    let a = map_fixture("ref-i12-emis.hl7").unwrap();
    let b = map_fixture("ref-i12-emis.hl7").unwrap();
    assert_eq!(a, b);
    let other =
        map_text(&fixture("ref-i12-emis.hl7").replace("EMIS-000123", "EMIS-000999")).unwrap();
    assert_ne!(a.bundle_id, other.bundle_id);
    assert_ne!(a.request_id, other.request_id);
    let elsewhere =
        map_text(&fixture("ref-i12-emis.hl7").replace("|EMIS|A81001|", "|EMIS|A81009|")).unwrap();
    assert_ne!(
        a.bundle_id, elsewhere.bundle_id,
        "control ids are unique per sending facility only"
    );
    let ids: std::collections::HashSet<&str> = a.bundle["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["resource"]["id"].as_str().unwrap())
        .chain([
            a.bundle_id.as_str(),
            a.request_id.as_str(),
            a.correlation_id.as_str(),
        ])
        .collect();
    assert_eq!(ids.len(), 9, "every id is distinct");
}

#[test]
fn the_destination_endpoint_is_configurable() {
    let msg = Message::parse(&fixture("ref-i12-emis.hl7")).unwrap();
    let options = MapOptions {
        destination_endpoint: "https://example.org/Id/gw|other".into(),
    };
    let mapped = ref_i12::map(&msg, &options).unwrap();
    assert_eq!(
        resource(&mapped.bundle, "MessageHeader")["destination"][0]["endpoint"],
        "https://example.org/Id/gw|other"
    );
}

#[test]
fn without_a_referring_provider_the_practice_is_the_requester() {
    let text: String = fixture("ref-i12-emis.hl7")
        .split('\r')
        .filter(|s| !s.starts_with("PRD|RP"))
        .collect::<Vec<_>>()
        .join("\r");
    let mapped = map_text(&text).unwrap();
    let b = &mapped.bundle;
    let org_url = b["entry"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["resource"]["resourceType"] == "Organization")
        .unwrap()["fullUrl"]
        .clone();
    assert_eq!(
        resource(b, "ServiceRequest")["requester"]["reference"],
        org_url
    );
    assert!(b["entry"]
        .as_array()
        .unwrap()
        .iter()
        .all(|e| e["resource"]["resourceType"] != "Practitioner"));
    assert_eq!(
        mapped.practice_ods, "A81001",
        "from MSH-4 now that PRD-10 is gone"
    );
    assert!(profiles().validate(b, None).unwrap().is_valid());
}

#[test]
fn msh_4_with_an_ods_universal_id_gives_the_practice() {
    let text = fixture("ref-i12-systmone.hl7")
        .replace("|SystmOne|A81002|", "|SystmOne|HILLVIEW^A81002^ODS|");
    assert_eq!(map_text(&text).unwrap().practice_ods, "A81002");
}

fn assert_error(
    result: Result<MappedReferral, MapError>,
    code: ErrorCode,
    location: Location,
) -> MapError {
    let e = result.unwrap_err();
    assert_eq!(e.code(), code, "{e}");
    assert_eq!(e.location(), location, "{e}");
    e
}

#[test]
fn each_invalid_fixture_gets_its_error_code_and_location() {
    let e = assert_error(
        map_fixture("ref-i12-no-nhs-number.hl7"),
        ErrorCode::RequiredFieldMissing,
        Location::field("PID", 3),
    );
    assert_eq!(e, MapError::NoNhsNumber);
    let e = assert_error(
        map_fixture("ref-i12-bad-check-digit.hl7"),
        ErrorCode::DataTypeError,
        Location::field("PID", 3),
    );
    assert_eq!(e, MapError::BadNhsNumber(NhsNumberError::BadCheckDigit));
    assert!(
        !e.to_string().contains("9990000019"),
        "no patient data in the text: {e}"
    );
    let e = assert_error(
        map_fixture("adt-a01.hl7"),
        ErrorCode::UnsupportedMessageType,
        Location::field("MSH", 9),
    );
    assert_eq!(
        e.to_string(),
        "message type ADT^A01 is not supported here (only REF^I12)"
    );
    assert_error(
        map_fixture("ref-i14-cancel.hl7"),
        ErrorCode::UnsupportedEventCode,
        Location::field("MSH", 9),
    );
}

#[test]
fn missing_and_malformed_fields_are_reported_where_they_are() {
    let emis = fixture("ref-i12-emis.hl7");
    let without = |prefix: &str| -> String {
        emis.split('\r')
            .filter(|s| !s.starts_with(prefix))
            .collect::<Vec<_>>()
            .join("\r")
    };
    assert_error(
        map_text(&without("PID|")),
        ErrorCode::SegmentSequenceError,
        Location::segment("PID"),
    );
    assert_error(
        map_text(&emis.replace("|EMIS-000123|", "||")),
        ErrorCode::RequiredFieldMissing,
        Location::field("MSH", 10),
    );
    assert_error(
        map_text(&emis.replace("|19480314|F|", "|19480230|F|")),
        ErrorCode::DataTypeError,
        Location::field("PID", 7),
    );
    assert_error(
        map_text(&emis.replace("|19480314|F|", "||F|")),
        ErrorCode::RequiredFieldMissing,
        Location::field("PID", 7),
    );
    assert_error(
        map_text(&emis.replace("|19480314|F|", "|19480314|X|")),
        ErrorCode::TableValueNotFound,
        Location::field("PID", 8),
    );
    assert_error(
        map_text(&emis.replace("Example^Joan^^^^^L", "")),
        ErrorCode::RequiredFieldMissing,
        Location::field("PID", 5),
    );
    assert_error(
        map_text(&emis.replace("555086689106^SDS", "55508668910X^SDS")),
        ErrorCode::DataTypeError,
        Location::field("PRD", 7),
    );
    assert_error(
        map_text(&emis.replace("^^A81001^^^^^^^A81001", "^^A8-1001")),
        ErrorCode::DataTypeError,
        Location::field("PRD", 10),
    );
    assert_error(
        map_text(&emis.replace("|20261120092500|", "|2026112009250|")),
        ErrorCode::DataTypeError,
        Location::field("RF1", 7),
    );
    assert_error(
        map_text(&emis.replace("|20261120093000||REF", "|||REF")),
        ErrorCode::RequiredFieldMissing,
        Location::field("MSH", 7),
    );
    let s1 = fixture("ref-i12-systmone.hl7");
    assert_error(
        map_text(&s1.replace("A^ASAP^HL70280", "Z")),
        ErrorCode::TableValueNotFound,
        Location::field("RF1", 2),
    );
    assert_error(
        map_text(&s1.replace("|SystmOne|A81002|", "|SystmOne||")),
        ErrorCode::RequiredFieldMissing,
        Location::field("MSH", 4),
    );
    // HL7's explicit null is nothing, too.
    assert_error(
        map_text(&s1.replace("9990000026^^^NHS", "\"\"^^^NHS")),
        ErrorCode::DataTypeError,
        Location::field("PID", 3),
    );
}
