//! The referral: the Task lifecycle a scheme moves it through, and the resources and messages
//! Signpost builds for it (the canonical ServiceRequest and Task, the BaRS message to the scheme,
//! the cancellation, the letter for the GP system).
//!
//! Pure functions over JSON: no I/O here. The pipeline decides when to call them.

use std::borrow::Cow;

use base64::Engine;
use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::{json, Value};
use signpost_bus::uris::{self, REFERRAL_ID_SYSTEM};

use crate::fhir::{self, str_at};

/// Task statuses of the closed-loop lifecycle (standards.md §6).
pub const TASK_STATUSES: &[&str] = &[
    "requested",
    "accepted",
    "rejected",
    "in-progress",
    "on-hold",
    "completed",
    "failed",
    "cancelled",
];

/// Whether a status ends the referral.
pub fn is_terminal(status: &str) -> bool {
    matches!(
        status,
        "rejected" | "completed" | "failed" | "cancelled" | "entered-in-error"
    )
}

/// Whether the performer (the scheme) may move a Task from `from` to `to`:
/// requested → accepted | rejected; accepted → in-progress | on-hold | completed | failed;
/// in-progress ↔ on-hold; in-progress | on-hold → completed | failed; any open state → cancelled.
pub fn performer_may(from: &str, to: &str) -> bool {
    if is_terminal(from) {
        return false;
    }
    matches!(
        (from, to),
        ("requested", "accepted" | "rejected" | "cancelled")
            | (
                "accepted",
                "in-progress" | "on-hold" | "completed" | "failed" | "cancelled"
            )
            | (
                "in-progress",
                "on-hold" | "completed" | "failed" | "cancelled"
            )
            | (
                "on-hold",
                "in-progress" | "completed" | "failed" | "cancelled"
            )
    )
}

/// The ServiceRequest status that goes with a Task status.
pub fn service_request_status(task_status: &str, current: &str) -> String {
    match task_status {
        "completed" => "completed".to_owned(),
        "rejected" | "failed" | "cancelled" => "revoked".to_owned(),
        _ => current.to_owned(),
    }
}

/// Ids Signpost assigns to a new referral.
pub struct NewIds {
    pub referral: String,
    pub task: String,
    pub message_bundle: String,
}

impl NewIds {
    /// Time-ordered UUIDs (version 7), as for every key the gateway makes (timeline steps,
    /// documents, outbox messages, audit records): a new key goes at the end of its index, on a
    /// page the last commit touched, rather than on a random page of an ever larger index that
    /// each commit would write in full.
    pub fn fresh() -> Self {
        NewIds {
            referral: uuid::Uuid::now_v7().to_string(),
            task: uuid::Uuid::now_v7().to_string(),
            message_bundle: uuid::Uuid::now_v7().to_string(),
        }
    }
}

fn urn() -> String {
    format!("urn:uuid:{}", uuid::Uuid::new_v4())
}

fn add_identifier(resource: &mut Value, system: &str, value: &str) {
    let ids = resource
        .as_object_mut()
        .map(|o| o.entry("identifier").or_insert_with(|| json!([])));
    if let Some(Value::Array(ids)) = ids {
        if !ids.iter().any(|i| str_at(i, "/system") == Some(system)) {
            ids.push(json!({"system": system, "value": value}));
        }
    }
}

/// What the pipeline read from a referral request, to build from.
pub struct ReferralInput<'a> {
    pub message: &'a Value,
    pub service_request: (Option<&'a str>, &'a Value),
    pub patient: &'a Value,
    pub practice: (Option<&'a str>, &'a Value),
    pub nhs_number: &'a str,
    pub scheme: &'a signpost_bus::directory::Scheme,
    pub scheme_endpoint: &'a signpost_bus::directory::Endpoint,
    pub source_endpoint: &'a str,
    pub now: &'a str,
}

/// The referral as built: the message for the scheme, and the ServiceRequest and Task as the
/// gateway serves them (with logical references, since the Bundle's `urn:uuid`s mean nothing
/// outside it).
pub struct Built<'a> {
    pub message: MessageOut<'a>,
    pub service_request: Value,
    pub task: Value,
}

/// The message Bundle for the scheme, holding the referrer's resources by reference: it is only
/// ever written out, so nothing of the incoming message is copied (copying every resource, and
/// dropping the copies, was about 4% of the gateway's CPU under load).
pub struct MessageOut<'a> {
    /// The Bundle's own members but `entry` (`resourceType`, `id`, `meta`, ...).
    bundle: serde_json::Map<String, Value>,
    entries: Vec<EntryOut<'a>>,
}

struct EntryOut<'a> {
    full_url: Option<String>,
    resource: Cow<'a, Value>,
}

impl MessageOut<'_> {
    /// `Bundle/<id>`.
    pub fn reference(&self) -> String {
        format!(
            "Bundle/{}",
            self.bundle.get("id").and_then(Value::as_str).unwrap_or("")
        )
    }
}

/// Written as the same Bundle as a `Value` would be, members in the same (sorted) order:
/// `entry` first, then the Bundle's others.
impl Serialize for MessageOut<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        debug_assert!(self.bundle.keys().all(|k| k.as_str() > "entry"));
        let mut map = serializer.serialize_map(Some(self.bundle.len() + 1))?;
        map.serialize_entry("entry", &self.entries)?;
        for (k, v) in &self.bundle {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

impl Serialize for EntryOut<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(1 + usize::from(self.full_url.is_some())))?;
        if let Some(u) = &self.full_url {
            map.serialize_entry("fullUrl", u)?;
        }
        map.serialize_entry("resource", &self.resource)?;
        map.end()
    }
}

/// Build the canonical referral: the BaRS message for the scheme, and the stored resources.
pub fn build_referral<'a>(input: &ReferralInput<'a>, ids: &NewIds) -> Built<'a> {
    let sr_url = input
        .service_request
        .0
        .map(str::to_owned)
        .unwrap_or_else(|| format!("ServiceRequest/{}", ids.referral));
    let org_url = urn();
    let hs_url = urn();
    let task_url = urn();
    let practice_ref = match input.practice.0 {
        Some(u) => json!({"reference": u}),
        None => fhir::logical_reference(input.practice.1),
    };
    let meta = json!({"versionId": "1", "lastUpdated": input.now});

    let mut sr = input.service_request.1.clone();
    sr["id"] = json!(ids.referral);
    sr["meta"] = meta.clone();
    sr["status"] = json!("active");
    add_identifier(&mut sr, REFERRAL_ID_SYSTEM, &ids.referral);
    sr["performer"] = json!([{"reference": hs_url}]);

    let patient_ref = json!({"type": "Patient", "identifier": {"system": uris::NHS_NUMBER, "value": input.nhs_number}});
    let mut task = json!({
        "resourceType": "Task",
        "id": ids.task,
        "meta": meta,
        "identifier": [{"system": REFERRAL_ID_SYSTEM, "value": ids.referral}],
        "status": "requested",
        "intent": "order",
        "code": {"coding": [{"system": fhir::TASK_CODE, "code": "fulfill"}]},
        "focus": {"reference": sr_url},
        "for": patient_ref,
        "authoredOn": input.now,
        "lastModified": input.now,
        "requester": practice_ref,
        "owner": {"reference": org_url},
    });

    // The message: our MessageHeader, then what the referrer sent (its header excepted, its
    // ServiceRequest replaced by ours), then the Task, scheme Organization and service.
    let header = json!({
        "resourceType": "MessageHeader",
        "id": uuid::Uuid::new_v4().to_string(),
        "meta": {"lastUpdated": input.now},
        "eventCoding": {"system": fhir::EVENTS_BARS, "code": "servicerequest-request"},
        "reason": {"coding": [{"system": fhir::REASON_BARS, "code": "new"}]},
        "definition": fhir::DEF_REQUEST_REFERRAL,
        "destination": [{
            "endpoint": destination_endpoint(input.scheme, input.scheme_endpoint),
            "receiver": {"reference": org_url},
        }],
        "sender": practice_ref,
        "source": {
            "name": "Signpost",
            "software": "Signpost",
            "version": env!("CARGO_PKG_VERSION"),
            "endpoint": input.source_endpoint,
        },
        "focus": [{"reference": sr_url}],
    });
    // The referrer's resources go in by reference, its ServiceRequest as ours.
    let mut entries = vec![EntryOut {
        full_url: Some(urn()),
        resource: Cow::Owned(header),
    }];
    for (full_url, resource) in fhir::Entries::of(input.message).iter().skip(1) {
        let resource = if std::ptr::eq(resource, input.service_request.1) {
            Cow::Owned(sr.clone())
        } else {
            Cow::Borrowed(resource)
        };
        entries.push(EntryOut {
            full_url: full_url.map(str::to_owned),
            resource,
        });
    }
    let mut scheme_org = input.scheme.organization.clone();
    scheme_org
        .as_object_mut()
        .map(|o| o.insert("meta".into(), json!({"lastUpdated": input.now})));
    let mut service = input.scheme.service.clone();
    service["providedBy"] = json!({"reference": org_url});
    if let Some(o) = service.as_object_mut() {
        o.remove("endpoint");
        o.remove("extension");
    }
    for (full_url, resource) in [
        (task_url, task.clone()),
        (org_url, scheme_org),
        (hs_url, service),
    ] {
        entries.push(EntryOut {
            full_url: Some(full_url),
            resource: Cow::Owned(resource),
        });
    }
    let bundle = serde_json::Map::from_iter([
        ("resourceType".to_owned(), json!("Bundle")),
        ("id".to_owned(), json!(ids.message_bundle)),
        (
            "meta".to_owned(),
            json!({"profile": [fhir::BARS_BUNDLE_PROFILE], "lastUpdated": input.now}),
        ),
        ("type".to_owned(), json!("message")),
        ("timestamp".to_owned(), json!(input.now)),
    ]);
    let message = MessageOut { bundle, entries };

    // What the gateway serves: the same resources with references that mean something alone.
    let mut stored_sr = sr;
    stored_sr["subject"] = patient_ref;
    stored_sr["performer"] = json!([{"reference": format!("HealthcareService/{}", input.scheme.id), "display": input.scheme.name}]);
    if let Some(req) = stored_sr.get("requester").cloned() {
        if let Some((_, r)) = fhir::Entries::of(input.message).resolve(&req) {
            stored_sr["requester"] = fhir::logical_reference(r);
        }
    }
    if let Some(o) = stored_sr.as_object_mut() {
        // Encounter and CarePlan references point into the message only.
        o.remove("encounter");
        o.remove("basedOn");
    }
    task["focus"] = json!({"reference": format!("ServiceRequest/{}", ids.referral)});
    task["requester"] = fhir::logical_reference(input.practice.1);
    task["owner"] = fhir::logical_reference(&input.scheme.organization);

    Built {
        message,
        service_request: stored_sr,
        task,
    }
}

/// `MessageHeader.destination.endpoint`: the scheme's `system|value` service id when it has
/// one, else its Endpoint address.
fn destination_endpoint(
    scheme: &signpost_bus::directory::Scheme,
    endpoint: &signpost_bus::directory::Endpoint,
) -> String {
    match &scheme.service_identifier {
        Some((system, value)) => format!("{system}|{value}"),
        None => endpoint.address.clone(),
    }
}

/// The BaRS cancellation message for the scheme: same Bundle id as the referral message, the
/// cancelled definition, the ServiceRequest `revoked`/`entered-in-error`, the Task `cancelled`.
pub fn build_cancellation(
    message_bundle_id: &str,
    reason: &str,
    service_request: &Value,
    task: &Value,
    source_endpoint: &str,
    now: &str,
) -> Value {
    let sr_url = urn();
    let mut task = task.clone();
    task["focus"] = json!({"reference": sr_url});
    json!({
        "resourceType": "Bundle",
        "id": message_bundle_id,
        "meta": {"profile": [fhir::BARS_BUNDLE_PROFILE], "lastUpdated": now},
        "type": "message",
        "timestamp": now,
        "entry": [
            {"fullUrl": urn(), "resource": {
                "resourceType": "MessageHeader",
                "id": uuid::Uuid::new_v4().to_string(),
                "eventCoding": {"system": fhir::EVENTS_BARS, "code": "servicerequest-request"},
                "reason": {"coding": [{"system": fhir::REASON_BARS, "code": reason}]},
                "definition": fhir::DEF_REQUEST_CANCELLED,
                "source": {"name": "Signpost", "software": "Signpost", "endpoint": source_endpoint},
                "focus": [{"reference": sr_url}],
            }},
            {"fullUrl": sr_url, "resource": service_request},
            {"fullUrl": urn(), "resource": task},
        ],
    })
}

/// What goes into the letter for the GP system besides the scheme's own letter.
pub struct LetterFor<'a> {
    /// The document's id (also its `masterIdentifier` UUID).
    pub doc_id: &'a str,
    pub referral_id: &'a str,
    pub nhs_number: &'a str,
    /// The patient as the GP system sent it with the referral, when the ledger has it.
    pub patient: Option<&'a Value>,
    pub scheme_organization: &'a Value,
    /// The letter rendered for people (PDF, HTML, plain text), for a Composition.
    pub rendered: Option<Rendered>,
    /// The id of the earlier letter this one replaces.
    pub replaces: Option<&'a str>,
    pub now: &'a str,
}

/// A letter rendered for people.
pub struct Rendered {
    pub title: String,
    pub pdf: Vec<u8>,
    pub html: String,
    pub text: String,
}

/// The patient as the letter carries it: the NHS number, the official name and the date of
/// birth that GP systems and MESH routing match on, and nothing more.
fn minimal_patient(patient: &Value) -> Value {
    let name = patient
        .get("name")
        .and_then(Value::as_array)
        .and_then(|names| {
            names
                .iter()
                .find(|n| str_at(n, "/use") == Some("official"))
                .or_else(|| names.first())
        });
    let mut p = json!({
        "resourceType": "Patient",
        "id": "patient",
        "identifier": patient.get("identifier").and_then(Value::as_array).map(|ids| {
            ids.iter()
                .filter(|i| str_at(i, "/system").is_some_and(|s| uris::is_system(s, uris::NHS_NUMBER)))
                .map(|i| json!({"system": uris::NHS_NUMBER, "value": str_at(i, "/value")}))
                .collect::<Vec<_>>()
        }),
    });
    if let Some(name) = name {
        p["name"] =
            json!([{"use": "official", "family": name.get("family"), "given": name.get("given")}]);
    }
    if let Some(dob) = patient.get("birthDate") {
        p["birthDate"] = dob.clone();
    }
    p
}

/// The letter as the GP system receives it: a DocumentReference with the letter attached (HTML
/// first, then PDF and plain text, for a Composition; the scheme's own attachments for a
/// DocumentReference), for the patient (by NHS number, with the patient and the scheme
/// `contained` for systems that match on demographics, such as MESH routing), linked to the
/// referral, and `relatesTo replaces` the earlier letter on a replacement.
pub fn letter_document(letter: &Value, f: LetterFor<'_>) -> Value {
    let now = f.now;
    let attachment = |content_type: &str, data: &[u8], title: &str| {
        json!({"attachment": {
            "contentType": content_type,
            "language": "en-GB",
            "data": base64::engine::general_purpose::STANDARD.encode(data),
            "title": title,
            "creation": str_at(letter, "/date").unwrap_or(now),
        }})
    };
    let content = match (&f.rendered, fhir::type_of(letter)) {
        (_, Some("DocumentReference")) | (None, _) => {
            letter.get("content").cloned().unwrap_or_else(|| json!([]))
        }
        (Some(r), _) => json!([
            attachment("text/html; charset=utf-8", r.html.as_bytes(), &r.title),
            attachment("application/pdf", &r.pdf, &r.title),
            attachment("text/plain; charset=utf-8", r.text.as_bytes(), &r.title),
        ]),
    };
    let mut author = fhir::logical_reference(f.scheme_organization);
    author["reference"] = json!("#author");
    let mut organization = json!({"resourceType": "Organization", "id": "author"});
    for key in ["identifier", "name", "telecom"] {
        if let Some(v) = f.scheme_organization.get(key) {
            organization[key] = v.clone();
        }
    }
    let mut contained = vec![organization];
    let mut subject = json!({"type": "Patient", "identifier": {"system": uris::NHS_NUMBER, "value": f.nhs_number}});
    if let Some(patient) = f.patient {
        contained.push(minimal_patient(patient));
        subject["reference"] = json!("#patient");
    }
    let mut doc = json!({
        "resourceType": "DocumentReference",
        "id": f.doc_id,
        "meta": {"profile": ["https://fhir.hl7.org.uk/StructureDefinition/UKCore-DocumentReference"], "lastUpdated": now},
        "contained": contained,
        "masterIdentifier": {"system": "urn:ietf:rfc:3986", "value": format!("urn:uuid:{}", f.doc_id)},
        "status": "current",
        "docStatus": "final",
        "type": {"coding": [{"system": fhir::SNOMED, "code": "371531000", "display": "Report of clinical encounter"}]},
        "subject": subject,
        "date": now,
        "author": [author],
        "description": "Social prescribing outcome letter",
        "content": content,
        "context": {"related": [{"type": "ServiceRequest", "identifier": {"system": REFERRAL_ID_SYSTEM, "value": f.referral_id}}]},
    });
    if let Some(original) = f.replaces {
        doc["relatesTo"] = json!([{"code": "replaces", "target": {"type": "DocumentReference", "identifier": {"system": "urn:ietf:rfc:3986", "value": format!("urn:uuid:{original}")}}}]);
    }
    doc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_performer_follows_the_lifecycle() {
        assert!(performer_may("requested", "accepted"));
        assert!(performer_may("requested", "rejected"));
        assert!(performer_may("accepted", "in-progress"));
        assert!(performer_may("in-progress", "on-hold"));
        assert!(performer_may("on-hold", "in-progress"));
        assert!(performer_may("in-progress", "completed"));
        assert!(performer_may("in-progress", "failed"));
        assert!(
            !performer_may("requested", "completed"),
            "must accept first"
        );
        assert!(
            !performer_may("completed", "in-progress"),
            "completed is final"
        );
        assert!(!performer_may("rejected", "accepted"));
        assert!(!performer_may("accepted", "requested"));
        assert!(!performer_may("accepted", "draft"));
    }

    #[test]
    fn the_message_holds_the_referrers_resources_and_writes_out_as_a_bundle_would() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let directory =
            signpost_bus::directory::Directory::load(&root.join("deploy/directory.example.json"))
                .unwrap();
        let incoming: Value = serde_json::from_slice(
            &std::fs::read(root.join("fixtures/gp-system/referral-new.json")).unwrap(),
        )
        .unwrap();
        let entries = fhir::Entries::of(&incoming);
        let sr = entries.of_type("ServiceRequest").unwrap();
        let practice = entries.of_type("Organization").unwrap();
        let ods = practice.1["identifier"][0]["value"].as_str().unwrap();
        let scheme = directory.scheme_for_practice(ods).unwrap();
        let ids = NewIds::fresh();
        let built = build_referral(
            &ReferralInput {
                message: &incoming,
                service_request: sr,
                patient: entries.of_type("Patient").unwrap().1,
                practice,
                nhs_number: "9000000009",
                scheme,
                scheme_endpoint: directory.endpoint(&scheme.endpoint).unwrap(),
                source_endpoint: "https://signpost.example/fhir",
                now: "2026-12-04T10:00:00Z",
            },
            &ids,
        );
        assert_eq!(
            built.message.reference(),
            format!("Bundle/{}", ids.message_bundle)
        );
        let text = serde_json::to_string(&built.message).unwrap();
        let message: Value = serde_json::from_str(&text).unwrap();
        // The same text as the Bundle built as a `Value` and written out.
        assert_eq!(text, serde_json::to_string(&message).unwrap());
        assert_eq!(message["resourceType"], "Bundle");
        assert_eq!(message["id"], json!(ids.message_bundle));
        let out: Vec<&Value> = message["entry"].as_array().unwrap().iter().collect();
        let types: Vec<&str> = out
            .iter()
            .map(|e| e["resource"]["resourceType"].as_str().unwrap())
            .collect();
        assert_eq!(
            types,
            [
                "MessageHeader",
                "ServiceRequest",
                "Patient",
                "Practitioner",
                "Organization",
                "Consent",
                "Task",
                "Organization",
                "HealthcareService"
            ]
        );
        // The referrer's entries but its header, as sent; its ServiceRequest is ours.
        let sent = incoming["entry"].as_array().unwrap();
        for (i, e) in sent.iter().enumerate().skip(1) {
            assert_eq!(out[i]["fullUrl"], e["fullUrl"]);
            if i == 1 {
                assert_eq!(out[i]["resource"]["id"], json!(ids.referral));
                assert_eq!(out[i]["resource"]["status"], "active");
            } else {
                assert_eq!(out[i]["resource"], e["resource"]);
            }
        }
        assert!(out
            .iter()
            .all(|e| e["fullUrl"].as_str().unwrap().starts_with("urn:uuid:")));
    }

    #[test]
    fn the_service_request_follows_the_task() {
        assert_eq!(service_request_status("completed", "active"), "completed");
        assert_eq!(service_request_status("rejected", "active"), "revoked");
        assert_eq!(service_request_status("in-progress", "active"), "active");
    }
}
