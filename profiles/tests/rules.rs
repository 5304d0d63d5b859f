//! Each rule with an example that breaks it, against the compiled profiles.

use std::sync::OnceLock;

use serde_json::{json, Value};
use signpost_profiles::{Class, Outcome, Profiles};

fn profiles() -> &'static Profiles {
    static P: OnceLock<Profiles> = OnceLock::new();
    P.get_or_init(|| Profiles::load().expect("the schemas compile"))
}

fn referral() -> Value {
    serde_json::from_str(include_str!("../../fixtures/gp-system/referral-new.json")).unwrap()
}

fn check(v: &Value, profile: Option<&str>) -> Outcome {
    profiles().validate(v, profile).unwrap()
}

fn first(o: &Outcome) -> (&str, &str, &str) {
    let i = o.issues.first().expect("an issue");
    (i.code, i.rec(), i.expression.as_str())
}

#[test]
fn the_fixture_referral_is_valid_base_r4_and_meets_the_referral_message_profile() {
    let o = check(&referral(), Some("sp-referral-message"));
    assert!(o.is_valid(), "{:#?}", o.issues);
    assert!(check(&referral(), None).is_valid());
}

#[test]
fn base_r4_reports_unknown_elements_wrong_types_and_bad_dates_with_their_location() {
    let mut b = referral();
    b["entry"][2]["resource"]["birthDate"] = json!("2021-02-30");
    let o = check(&b, None);
    assert_eq!(
        first(&o),
        (
            "value",
            "REC_BAD_REQUEST",
            "Bundle.entry[2].resource.birthDate"
        )
    );
    let mut b = referral();
    b["entry"][2]["resource"]["favouriteColour"] = json!("blue");
    assert_eq!(
        first(&check(&b, None)),
        (
            "structure",
            "REC_BAD_REQUEST",
            "Bundle.entry[2].resource.favouriteColour"
        )
    );
    let mut b = referral();
    b["entry"][2]["resource"]["birthDate"] = json!(1990);
    assert_eq!(
        first(&check(&b, None)).2,
        "Bundle.entry[2].resource.birthDate"
    );
}

#[test]
fn base_r4_requires_the_primitives_the_schema_leaves_optional() {
    let mut b = referral();
    b["entry"][1]["resource"]
        .as_object_mut()
        .unwrap()
        .remove("status");
    assert_eq!(
        first(&check(&b, None)),
        (
            "required",
            "REC_BAD_REQUEST",
            "Bundle.entry[1].resource.status"
        )
    );
    // The extension-only form counts as present.
    b["entry"][1]["resource"]["_status"] =
        json!({"extension": [{"url": "http://example.org/x", "valueString": "y"}]});
    assert!(profiles().check_base(&b).is_empty());
}

#[test]
fn base_r4_enforces_bundle_invariants() {
    let mut b = referral();
    let dup = b["entry"][1]["fullUrl"].clone();
    b["entry"][2]["fullUrl"] = dup;
    let o = check(&b, None);
    assert!(
        o.issues.iter().any(
            |i| i.diagnostics.starts_with("bdl-7") && i.expression == "Bundle.entry[2].fullUrl"
        ),
        "{:#?}",
        o.issues
    );
    let mut b = referral();
    b["entry"].as_array_mut().unwrap().swap(0, 1);
    assert!(check(&b, None)
        .issues
        .iter()
        .any(|i| i.diagnostics.starts_with("bdl-12")));
    let mut b = referral();
    b["total"] = json!(3);
    assert!(check(&b, None)
        .issues
        .iter()
        .any(|i| i.diagnostics.starts_with("bdl-1")));
}

#[test]
fn an_nhs_number_with_a_bad_check_digit_is_a_400_value_error_without_the_number() {
    let mut b = referral();
    b["entry"][2]["resource"]["identifier"][0]["value"] = json!("9990000019");
    let o = check(&b, Some("sp-referral-message"));
    assert_eq!(
        first(&o),
        (
            "value",
            "REC_BAD_REQUEST",
            "Bundle.entry[2].resource.identifier[0].value"
        )
    );
    assert_eq!(o.issues[0].class, Class::Value);
    assert!(!format!("{:?}", o.to_operation_outcome()).contains("9990000019"));
}

#[test]
fn the_referral_profile_needs_the_sp_code_and_its_elements() {
    let mut b = referral();
    b["entry"][1]["resource"]["code"]["coding"][0]["code"] = json!("3457005");
    assert_eq!(
        first(&check(&b, Some("sp-referral-message"))),
        (
            "not-supported",
            "REC_UNPROCESSABLE_ENTITY",
            "Bundle.entry[1].resource.code.coding"
        )
    );
    let mut b = referral();
    b["entry"][1]["resource"]
        .as_object_mut()
        .unwrap()
        .remove("authoredOn");
    assert_eq!(
        first(&check(&b, Some("sp-referral-message"))).2,
        "Bundle.entry[1].resource.authoredOn"
    );
}

#[test]
fn references_must_resolve_inside_the_message() {
    let mut b = referral();
    b["entry"][1]["resource"]["subject"]["reference"] =
        json!("urn:uuid:00000000-0000-0000-0000-000000000000");
    let o = check(&b, Some("sp-referral-message"));
    assert!(
        o.issues
            .iter()
            .any(|i| i.expression == "Bundle.entry[1].resource.subject" && i.code == "invariant"),
        "{:#?}",
        o.issues
    );
    // The requester must be a person or organisation, not the Patient.
    let mut b = referral();
    b["entry"][1]["resource"]["requester"] = b["entry"][1]["resource"]["subject"].clone();
    assert!(check(&b, Some("sp-referral-message"))
        .issues
        .iter()
        .any(|i| i.expression == "Bundle.entry[1].resource.requester"));
}

#[test]
fn relative_references_resolve_against_an_absolute_full_url() {
    let mut b = referral();
    let base = "https://gp.example.org/fhir";
    for (i, t) in [
        (1, "ServiceRequest"),
        (2, "Patient"),
        (3, "Practitioner"),
        (4, "Organization"),
        (5, "Consent"),
    ] {
        let id = b["entry"][i]["resource"]["id"].as_str().unwrap().to_owned();
        b["entry"][i]["fullUrl"] = json!(format!("{base}/{t}/{id}"));
    }
    let sr = b["entry"][1]["resource"].clone();
    let pid = b["entry"][2]["resource"]["id"].as_str().unwrap().to_owned();
    b["entry"][1]["resource"]["subject"] = json!({"reference": format!("Patient/{pid}")});
    b["entry"][5]["resource"]["patient"] = json!({"reference": format!("Patient/{pid}")});
    b["entry"][1]["resource"]["requester"] = json!({"reference": format!("Practitioner/{}", b["entry"][3]["resource"]["id"].as_str().unwrap())});
    b["entry"][0]["resource"]["focus"] =
        json!([{"reference": format!("{base}/ServiceRequest/{}", sr["id"].as_str().unwrap())}]);
    b["entry"][0]["resource"]["sender"] = json!({"reference": format!("{base}/Organization/{}", b["entry"][4]["resource"]["id"].as_str().unwrap())});
    let o = check(&b, Some("sp-referral-message"));
    assert!(o.is_valid(), "{:#?}", o.issues);
    b["entry"][1]["resource"]["subject"] = json!({"reference": "Patient/somebody-else"});
    assert!(!check(&b, Some("sp-referral-message")).is_valid());
}

#[test]
fn a_message_carries_exactly_one_patient_and_one_service_request() {
    let mut b = referral();
    let mut extra = b["entry"][2].clone();
    extra["fullUrl"] = json!("urn:uuid:11111111-1111-4111-8111-111111111111");
    b["entry"].as_array_mut().unwrap().push(extra);
    let o = check(&b, Some("sp-referral-message"));
    assert!(
        o.issues
            .iter()
            .any(|i| i.diagnostics.contains("exactly 1 Patient")),
        "{:#?}",
        o.issues
    );
}

#[test]
fn the_message_header_must_have_the_bars_request_event_and_a_reason() {
    let mut b = referral();
    b["entry"][0]["resource"]["eventCoding"]["code"] = json!("booking-request");
    assert_eq!(
        first(&check(&b, Some("sp-referral-message"))),
        (
            "not-supported",
            "REC_UNPROCESSABLE_ENTITY",
            "Bundle.entry[0].resource.eventCoding.code"
        )
    );
    let mut b = referral();
    b["entry"][0]["resource"]
        .as_object_mut()
        .unwrap()
        .remove("reason");
    assert_eq!(first(&check(&b, Some("sp-referral-message"))).0, "required");
}

#[test]
fn the_patient_profile_checks_the_verification_status_code() {
    let mut p = referral()["entry"][2]["resource"].clone();
    assert!(check(&p, Some("sp-patient")).is_valid());
    p["identifier"][0]["extension"][0]["valueCodeableConcept"]["coding"][0]["code"] = json!("99");
    assert!(!check(&p, Some("sp-patient")).is_valid());
    let mut p = referral()["entry"][2]["resource"].clone();
    p.as_object_mut().unwrap().remove("birthDate");
    assert_eq!(
        first(&check(&p, Some("sp-patient"))),
        ("required", "REC_UNPROCESSABLE_ENTITY", "Patient.birthDate")
    );
}

#[test]
fn a_closing_task_needs_a_reason_and_the_lifecycle_statuses_only() {
    let t = json!({"resourceType": "Task", "status": "rejected", "intent": "order", "focus": {"reference": "ServiceRequest/1"}});
    assert_eq!(
        first(&check(&t, Some("sp-task"))),
        ("required", "REC_UNPROCESSABLE_ENTITY", "Task.statusReason")
    );
    let t = json!({"resourceType": "Task", "status": "ready", "intent": "order", "focus": {"reference": "ServiceRequest/1"}});
    assert_eq!(
        first(&check(&t, Some("sp-task"))),
        ("code-invalid", "REC_UNPROCESSABLE_ENTITY", "Task.status")
    );
    let t = json!({"resourceType": "Task", "status": "accepted", "intent": "order", "focus": {"reference": "ServiceRequest/1"}});
    assert!(check(&t, Some("sp-task")).is_valid());
}

#[test]
fn a_standalone_referral_names_a_patient_and_a_person_or_organisation() {
    let mut sr = referral()["entry"][1]["resource"].clone();
    sr["subject"] = json!({"reference": "Patient/p1"});
    sr["requester"] = json!({"reference": "https://gp.example.org/fhir/Practitioner/d1"});
    assert!(
        check(&sr, Some("sp-referral")).is_valid(),
        "{:#?}",
        check(&sr, Some("sp-referral")).issues
    );
    sr["subject"] = json!({"reference": "Group/g1"});
    assert_eq!(
        first(&check(&sr, Some("sp-referral"))),
        (
            "invariant",
            "REC_UNPROCESSABLE_ENTITY",
            "ServiceRequest.subject"
        )
    );
}

#[test]
fn base_r4_requires_elements_inside_backbone_elements() {
    let h = json!({"resourceType": "MessageHeader", "eventCoding": {"system": "x", "code": "y"},
        "source": {"endpoint": "http://a"}, "response": {"code": "ok"}});
    assert_eq!(
        first(&check(&h, None)),
        (
            "required",
            "REC_BAD_REQUEST",
            "MessageHeader.response.identifier"
        )
    );
}

#[test]
fn an_outcome_letter_is_a_titled_composition_or_an_attached_document() {
    let c = json!({"resourceType": "Composition", "status": "final", "type": {"text": "letter"}, "subject": {"display": "x"},
        "date": "2026-01-01", "title": "Outcome", "author": [{"display": "Scheme"}],
        "section": [{"title": "Support offered", "text": {"status": "generated", "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\">x</div>"}}]});
    assert!(
        check(&c, Some("sp-outcome-letter")).is_valid(),
        "{:#?}",
        check(&c, Some("sp-outcome-letter")).issues
    );
    let mut no_title = c.clone();
    no_title["section"][0]
        .as_object_mut()
        .unwrap()
        .remove("title");
    assert_eq!(
        first(&check(&no_title, Some("sp-outcome-letter"))).2,
        "Composition.section[0].title"
    );
    let d = json!({"resourceType": "DocumentReference", "status": "current", "subject": {"display": "x"},
        "content": [{"attachment": {"contentType": "application/pdf"}}]});
    assert_eq!(
        first(&check(&d, Some("sp-outcome-letter"))).2,
        "DocumentReference.content[0].attachment"
    );
}

#[test]
fn meta_profile_selects_known_profiles_and_unknown_ids_are_refused() {
    let mut p = referral()["entry"][2]["resource"].clone();
    p["meta"] =
        json!({"profile": ["https://signpost.example.org/fhir/StructureDefinition/sp-patient"]});
    p.as_object_mut().unwrap().remove("name");
    assert!(
        !check(&p, None).is_valid(),
        "meta.profile brings sp-patient in"
    );
    assert!(profiles().validate(&p, Some("sp-nothing")).is_err());
    assert!(profiles().validate_bytes(b"not json", None).unwrap().issues[0].code == "structure");
}
