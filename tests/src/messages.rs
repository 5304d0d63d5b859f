//! What a scheme sends back: `servicerequest-response` messages carrying the Task status, and
//! the outcome letter (the PRSB "message back to GP and referrer") as a Composition.

use serde_json::{json, Value};

const EVENTS: &str = "https://fhir.nhs.uk/CodeSystem/message-events-bars";

fn urn() -> String {
    format!("urn:uuid:{}", uuid::Uuid::new_v4())
}

fn now() -> String {
    signpost_bus::envelope::now_rfc3339()
}

/// The Bundle.id of a referral message and the NHS number of its patient.
pub fn referral_facts(message: &Value) -> (String, String) {
    let id = message["id"].as_str().unwrap_or("").to_owned();
    let nhs = message["entry"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e.get("resource"))
        .find(|r| r["resourceType"] == "Patient")
        .and_then(|p| p["identifier"][0]["value"].as_str())
        .unwrap_or("")
        .to_owned();
    (id, nhs)
}

/// The referral (ServiceRequest) id in the gateway's answer to a referral message.
pub fn referral_id(answer: &Value) -> Option<String> {
    answer["entry"]
        .as_array()?
        .iter()
        .map(|e| &e["resource"])
        .find(|r| r["resourceType"] == "ServiceRequest")
        .and_then(|r| r["id"].as_str())
        .map(str::to_owned)
}

/// A `servicerequest-response` about `referral_message` (the BaRS message the scheme received),
/// with a Task in `status` (and a reason when given) for its ServiceRequest and, optionally, a
/// letter.
pub fn scheme_response(
    referral_message: &Value,
    status: &str,
    reason: Option<&str>,
    letter: Option<Value>,
) -> Value {
    let about_bundle_id = referral_message["id"].as_str().unwrap_or("");
    let referral = referral_id(referral_message).unwrap_or_default();
    let task_url = urn();
    let mut task = json!({
        "resourceType": "Task",
        "status": status,
        "intent": "order",
        "code": {"coding": [{"system": "http://hl7.org/fhir/CodeSystem/task-code", "code": "fulfill"}]},
        "focus": {"type": "ServiceRequest", "identifier": {"system": "https://signpost.example.org/fhir/Id/referral", "value": referral}},
        "lastModified": now(),
    });
    if let Some(r) = reason {
        task["statusReason"] = json!({"text": r});
    }
    let mut entries = vec![
        json!({"fullUrl": urn(), "resource": {
            "resourceType": "MessageHeader",
            "eventCoding": {"system": EVENTS, "code": "servicerequest-response"},
            "definition": "https://fhir.nhs.uk/MessageDefinition/bars-message-servicerequest-response-referral",
            "source": {"name": "Stand-in scheme", "endpoint": "https://fhir.nhs.uk/Id/dos-service-id|2000099001"},
            "response": {"identifier": about_bundle_id, "code": "ok"},
            "focus": [{"reference": task_url}],
        }}),
        json!({"fullUrl": task_url, "resource": task}),
    ];
    if let Some(l) = letter {
        entries.push(json!({"fullUrl": urn(), "resource": l}));
    }
    json!({
        "resourceType": "Bundle",
        "id": uuid::Uuid::new_v4().to_string(),
        "type": "message",
        "timestamp": now(),
        "entry": entries,
    })
}

fn section(title: &str, html: &str) -> Value {
    json!({"title": title, "text": {"status": "generated", "div": format!("<div xmlns=\"http://www.w3.org/1999/xhtml\">{html}</div>")}})
}

/// An outcome letter for the patient with `nhs_number`, as a Composition.
pub fn outcome_letter(nhs_number: &str) -> Value {
    json!({
        "resourceType": "Composition",
        "status": "final",
        "type": {"coding": [{"system": "http://snomed.info/sct", "code": "371531000", "display": "Report of clinical encounter"}]},
        "subject": {"identifier": {"system": "https://fhir.nhs.uk/Id/nhs-number", "value": nhs_number}},
        "date": now(),
        "author": [{"display": "Stand-in Community Link Workers"}],
        "title": "Social prescribing: message back to GP and referrer",
        "section": [
            section("Outcome", "<p>Seen three times; referral completed. Now attends a weekly walking group and has a debt-advice plan.</p>"),
            section("Needs and concerns", "<ul><li>Loneliness</li><li>Money worries</li></ul>"),
            section("What matters to the person", "<p>Getting out of the house and meeting people.</p>"),
            section("Support offered", "<ul><li>Community walking group (taken up)</li><li>Citizens Advice debt service (taken up)</li></ul>"),
            section("Wellbeing (ONS4)", "<table><tr><th></th><th>Before</th><th>After</th></tr><tr><td>Life satisfaction</td><td>3</td><td>6</td></tr><tr><td>Anxiety</td><td>8</td><td>5</td></tr></table>"),
            section("Link worker", "<p>Stand-in link worker, 01234 567890</p>"),
        ],
    })
}
