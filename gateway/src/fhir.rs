//! Small helpers over FHIR JSON: message Bundles and reference resolution, identifiers, the NHS
//! number check, and the shapes the gateway answers with (searchset Bundles, the timeline List).
//!
//! Resources stay `serde_json::Value`; this module gives typed views of the few fields the
//! gateway reads. Full profile validation is `profiles/`' job, not this module's.

use serde_json::{json, Value};
use signpost_bus::uris;

pub const SNOMED: &str = "http://snomed.info/sct";
/// SNOMED CT 871731000000106 |Referral to social prescribing service|.
pub const SP_REFERRAL_CODE: &str = "871731000000106";
pub const EVENTS_BARS: &str = "https://fhir.nhs.uk/CodeSystem/message-events-bars";
/// Seen in some BaRS API examples; accepted on input, never emitted (standards.md §1.13).
pub const EVENTS_BARS_ALT: &str = "https://fhir.nhs.uk/CodeSystem/message-event-servicerequest";
pub const REASON_BARS: &str = "https://fhir.nhs.uk/CodeSystem/message-reason-bars";
pub const MESSAGE_DEFINITION_BASE: &str = "https://fhir.nhs.uk/MessageDefinition/";
pub const DEF_REQUEST_REFERRAL: &str =
    "https://fhir.nhs.uk/MessageDefinition/bars-message-servicerequest-request-referral";
pub const DEF_REQUEST_CANCELLED: &str =
    "https://fhir.nhs.uk/MessageDefinition/bars-message-servicerequest-request-cancelled";
pub const DEF_RESPONSE_REFERRAL: &str =
    "https://fhir.nhs.uk/MessageDefinition/bars-message-servicerequest-response-referral";
pub const BARS_BUNDLE_PROFILE: &str = "https://fhir.nhs.uk/StructureDefinition/BARSBundleMessage";
pub const TASK_CODE: &str = "http://hl7.org/fhir/CodeSystem/task-code";
/// Signpost's code system for timeline steps.
pub const TIMELINE_STEPS: &str = "https://signpost.example.org/fhir/CodeSystem/timeline-step";

/// A message or document Bundle's entries, with reference resolution inside the Bundle.
pub struct Entries<'a> {
    entries: Vec<(Option<&'a str>, &'a Value)>,
}

impl<'a> Entries<'a> {
    pub fn of(bundle: &'a Value) -> Self {
        let entries = bundle
            .get("entry")
            .and_then(Value::as_array)
            .map(|es| {
                es.iter()
                    .filter_map(|e| {
                        let r = e.get("resource")?;
                        Some((e.get("fullUrl").and_then(Value::as_str), r))
                    })
                    .collect()
            })
            .unwrap_or_default();
        Entries { entries }
    }

    pub fn iter(&self) -> impl Iterator<Item = (Option<&'a str>, &'a Value)> + '_ {
        self.entries.iter().copied()
    }

    pub fn first(&self) -> Option<&'a Value> {
        self.entries.first().map(|(_, r)| *r)
    }

    /// The first resource of a type.
    pub fn of_type(&self, resource_type: &str) -> Option<(Option<&'a str>, &'a Value)> {
        self.iter().find(|(_, r)| type_of(r) == Some(resource_type))
    }

    /// Resolve a `Reference` (the object) to `(fullUrl, resource)` inside the Bundle: by
    /// `fullUrl`, or by `Type/id` (relative or at the end of an absolute URL).
    pub fn resolve(&self, reference: &Value) -> Option<(Option<&'a str>, &'a Value)> {
        let r = reference.get("reference")?.as_str()?;
        self.iter().find(|(full_url, res)| {
            if *full_url == Some(r) {
                return true;
            }
            let (Some(t), Some(id)) = (type_of(res), res.get("id").and_then(Value::as_str)) else {
                return false;
            };
            let typed = format!("{t}/{id}");
            r == typed || r.ends_with(&format!("/{typed}"))
        })
    }
}

/// `v` as compact JSON text: what `to_string` gives, written straight into a buffer rather than
/// through `Display`'s formatter.
pub fn json_text(v: &Value) -> String {
    // A `Value` always serialises.
    serde_json::to_string(v).unwrap_or_default()
}

pub fn type_of(resource: &Value) -> Option<&str> {
    resource.get("resourceType").and_then(Value::as_str)
}

pub fn str_at<'a>(v: &'a Value, pointer: &str) -> Option<&'a str> {
    v.pointer(pointer).and_then(Value::as_str)
}

/// The value of the first identifier in `system` (NHS `Id`/`id` spellings both match).
pub fn identifier_value<'a>(resource: &'a Value, system: &str) -> Option<&'a str> {
    resource
        .get("identifier")?
        .as_array()?
        .iter()
        .find(|i| str_at(i, "/system").is_some_and(|s| uris::is_system(s, system)))
        .and_then(|i| str_at(i, "/value"))
}

/// Whether a CodeableConcept has `system|code`.
pub fn has_coding(concept: Option<&Value>, system: &str, code: &str) -> bool {
    concept
        .and_then(|c| c.get("coding"))
        .and_then(Value::as_array)
        .is_some_and(|codings| {
            codings
                .iter()
                .any(|c| str_at(c, "/system") == Some(system) && str_at(c, "/code") == Some(code))
        })
}

/// NHS number: 10 digits, Modulus 11 check digit (standards.md §4).
pub fn nhs_number_is_valid(n: &str) -> bool {
    let digits: Vec<u32> = n.chars().filter_map(|c| c.to_digit(10)).collect();
    if digits.len() != 10 || n.len() != 10 {
        return false;
    }
    let sum: u32 = digits[..9]
        .iter()
        .zip((2..=10).rev())
        .map(|(d, w)| d * w)
        .sum();
    let check = match 11 - (sum % 11) {
        11 => 0,
        10 => return false,
        c => c,
    };
    check == digits[9]
}

/// A logical reference to `resource`: `{type, identifier}` from its first identifier, else a
/// `Type/id` literal reference, else a bare display.
pub fn logical_reference(resource: &Value) -> Value {
    let t = type_of(resource).unwrap_or("Resource");
    let mut r = json!({"type": t});
    if let Some(id) = resource.pointer("/identifier/0") {
        let system = str_at(id, "/system").map(uris::canonical_nhs_system);
        let value = str_at(id, "/value");
        if let (Some(system), Some(value)) = (system, value) {
            r["identifier"] = json!({"system": system, "value": value});
        }
    } else if let Some(id) = resource.get("id").and_then(Value::as_str) {
        r["reference"] = json!(format!("{t}/{id}"));
    }
    if let Some(name) = resource.get("name").and_then(Value::as_str) {
        r["display"] = json!(name);
    }
    r
}

/// A `searchset` Bundle of `resources`.
pub fn searchset(base: &str, resources: Vec<Value>) -> Value {
    let entry: Vec<Value> = resources
        .into_iter()
        .map(|r| {
            let full_url = format!(
                "{base}/{}/{}",
                type_of(&r).unwrap_or(""),
                r.get("id").and_then(Value::as_str).unwrap_or("")
            );
            json!({"fullUrl": full_url, "resource": r, "search": {"mode": "match"}})
        })
        .collect();
    json!({
        "resourceType": "Bundle",
        "id": uuid::Uuid::new_v4().to_string(),
        "type": "searchset",
        "total": entry.len(),
        "entry": entry,
    })
}

/// RFC 3339 from unix milliseconds.
pub fn instant(ms: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    signpost_bus::envelope::format_rfc3339(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nhs_numbers_are_checked_with_modulus_11() {
        assert!(nhs_number_is_valid("9434765919"));
        assert!(nhs_number_is_valid("9000000009"));
        assert!(!nhs_number_is_valid("9434765918"), "wrong check digit");
        assert!(
            !nhs_number_is_valid("9912003890"),
            "UK Core baby example has a bad check digit"
        );
        assert!(!nhs_number_is_valid("943476591"), "nine digits");
        assert!(!nhs_number_is_valid("94347659190"), "eleven digits");
        assert!(!nhs_number_is_valid("943 476 591"), "spaces");
        assert!(
            !nhs_number_is_valid("１２３４５６７８９０"),
            "non-ASCII digits"
        );
    }

    #[test]
    fn references_resolve_by_full_url_and_by_type_and_id() {
        let b = json!({"entry": [
            {"fullUrl": "urn:uuid:1", "resource": {"resourceType": "Patient", "id": "p"}},
            {"resource": {"resourceType": "Organization", "id": "o"}}
        ]});
        let e = Entries::of(&b);
        assert_eq!(
            e.resolve(&json!({"reference": "urn:uuid:1"})).unwrap().1["id"],
            "p"
        );
        assert_eq!(
            e.resolve(&json!({"reference": "Patient/p"})).unwrap().1["id"],
            "p"
        );
        assert_eq!(
            e.resolve(&json!({"reference": "https://x/fhir/Organization/o"}))
                .unwrap()
                .1["id"],
            "o"
        );
        assert!(e.resolve(&json!({"reference": "Patient/q"})).is_none());
    }

    #[test]
    fn identifiers_match_either_nhs_spelling() {
        let p = json!({"identifier": [{"system": "https://fhir.nhs.uk/id/nhs-number", "value": "9434765919"}]});
        assert_eq!(identifier_value(&p, uris::NHS_NUMBER), Some("9434765919"));
    }
}
