//! GP clinical-record events: a coded entry added to a patient's record, sent by a GP system as
//! a FHIR message whose MessageHeader has event
//! `https://signpost.example.org/fhir/CodeSystem/record-event|coded-entry-added` and whose focus
//! is the entry (a Procedure, Observation or ServiceRequest with a SNOMED CT code), with the
//! Patient, the clinician and the practice in the Bundle.
//!
//! What each code does is data, `profiles/record-events.json`: `refer` builds a referral from
//! the event; `decline` records the decision and cancels the patient's open referrals from that
//! practice. This module reads the mapping and builds the referral message; the pipeline acts.

use serde::Deserialize;
use serde_json::{json, Value};

use crate::fhir::{self, str_at, type_of, Entries};
use crate::message::{Event, Message};

pub const RECORD_EVENTS: &str = "https://signpost.example.org/fhir/CodeSystem/record-event";
pub const CODED_ENTRY_ADDED: &str = "coded-entry-added";
/// Identifier system for referrals made from record events: the value is the event's Bundle.id.
pub const RECORD_EVENT_ID_SYSTEM: &str = "https://signpost.example.org/fhir/Id/record-event";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Refer,
    Decline,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Rule {
    pub system: String,
    pub code: String,
    pub display: String,
    pub action: Action,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Mapping {
    pub codes: Vec<Rule>,
}

impl Mapping {
    /// The mapping shipped in `profiles/record-events.json`.
    pub fn shipped() -> Result<Self, serde_json::Error> {
        serde_json::from_str(include_str!("../../profiles/record-events.json"))
    }

    /// The rule for the first coding of `entry.code` that has one.
    pub fn rule_for(&self, entry: &Value) -> Option<&Rule> {
        entry
            .pointer("/code/coding")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .find_map(|c| {
                let (system, code) = (str_at(c, "/system")?, str_at(c, "/code")?);
                self.codes
                    .iter()
                    .find(|r| r.system == system && r.code == code)
            })
    }
}

/// The Patient the entry is about (`subject`).
pub fn subject(entry: &Value) -> Option<&Value> {
    entry.get("subject")
}

/// Who recorded or asked for the entry: ServiceRequest.requester, Procedure.performer.actor,
/// Observation.performer, or the recorder.
fn clinician(entry: &Value) -> Option<Value> {
    entry
        .get("requester")
        .or_else(|| entry.pointer("/performer/0/actor"))
        .or_else(|| {
            entry
                .pointer("/performer/0")
                .filter(|p| p.get("reference").is_some())
        })
        .or_else(|| entry.get("recorder"))
        .or_else(|| entry.get("asserter"))
        .cloned()
}

fn when(entry: &Value, message: &Value) -> String {
    [
        "/authoredOn",
        "/performedDateTime",
        "/performedPeriod/start",
        "/effectiveDateTime",
        "/issued",
    ]
    .iter()
    .find_map(|p| str_at(entry, p))
    .or_else(|| str_at(message, "/timestamp"))
    .map(str::to_owned)
    .unwrap_or_else(signpost_bus::envelope::now_rfc3339)
}

/// A BaRS-shaped referral message built from a record event: a ServiceRequest for social
/// prescribing made from the entry, with the event's other resources, under the event's
/// Bundle.id (so the same event twice is the same referral).
pub fn referral_message(event: &Message) -> Message {
    let header = event.header();
    let (entry_url, entry) = event.focus();
    let sr_url = format!("urn:uuid:{}", uuid::Uuid::new_v4());
    let requester = clinician(entry).or_else(|| header.get("sender").cloned());
    let sr = json!({
        "resourceType": "ServiceRequest",
        "identifier": [{"system": RECORD_EVENT_ID_SYSTEM, "value": event.id}],
        "status": "active",
        "intent": "plan",
        "category": [{"coding": [{"system": "https://fhir.nhs.uk/CodeSystem/message-category-servicerequest", "code": "referral", "display": "Transfer of Care"}]}],
        "code": {"coding": [{"system": fhir::SNOMED, "code": fhir::SP_REFERRAL_CODE, "display": "Referral to social prescribing service"}]},
        "subject": subject(entry).cloned().unwrap_or(Value::Null),
        "requester": requester.unwrap_or(Value::Null),
        "authoredOn": when(entry, &event.bundle),
        "note": [{"text": format!("Made from a coded entry in the GP record ({})", type_of(entry).unwrap_or("entry"))}],
    });
    let mut entries = vec![
        json!({"fullUrl": format!("urn:uuid:{}", uuid::Uuid::new_v4()), "resource": {
            "resourceType": "MessageHeader",
            "eventCoding": {"system": fhir::EVENTS_BARS, "code": "servicerequest-request"},
            "reason": {"coding": [{"system": fhir::REASON_BARS, "code": "new"}]},
            "definition": fhir::DEF_REQUEST_REFERRAL,
            "sender": header.get("sender").cloned().unwrap_or(Value::Null),
            "source": header.get("source").cloned().unwrap_or(json!({"endpoint": "unknown"})),
            "focus": [{"reference": sr_url}],
        }}),
        json!({"fullUrl": sr_url, "resource": sr}),
    ];
    for (i, (full_url, resource)) in Entries::of(&event.bundle).iter().enumerate() {
        if i == 0 || (full_url.is_some() && full_url == entry_url) || std::ptr::eq(resource, entry)
        {
            continue;
        }
        let mut e = json!({"resource": resource});
        if let Some(u) = full_url {
            e["fullUrl"] = json!(u);
        }
        entries.push(e);
    }
    let bundle = json!({
        "resourceType": "Bundle",
        "id": event.id,
        "type": "message",
        "timestamp": str_at(&event.bundle, "/timestamp").map(str::to_owned).unwrap_or_else(signpost_bus::envelope::now_rfc3339),
        "entry": entries,
    });
    Message {
        bundle,
        id: event.id.clone(),
        event: Event::Request,
        reason: Some("new".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_mapping_refers_and_declines_by_snomed_code() {
        let m = Mapping::shipped().unwrap();
        let entry =
            |code: &str| json!({"code": {"coding": [{"system": fhir::SNOMED, "code": code}]}});
        assert_eq!(
            m.rule_for(&entry("871731000000106")).unwrap().action,
            Action::Refer
        );
        assert_eq!(
            m.rule_for(&entry("871711000000103")).unwrap().action,
            Action::Decline
        );
        assert!(m.rule_for(&entry("3457005")).is_none());
    }
}
