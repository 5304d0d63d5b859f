//! Base FHIR R4 validation.
//!
//! The structure comes from HL7's R4 JSON Schema (`profiles/r4/fhir.schema.json`, see
//! `profiles/r4/PROVENANCE.md`), loaded once into a registry; each resource type gets its own
//! compiled validator. The schema's `ResourceList` (any resource, a `oneOf` over all 146 types)
//! is replaced by "an object", and nested resources (Bundle entries, `contained`, Parameters) are
//! validated on their own with their type's validator: exact, and far cheaper than trying every
//! type.
//!
//! What the schema cannot say is checked here in Rust:
//! - elements R4 requires that the schema leaves optional (primitives with `min = 1`, such as
//!   `ServiceRequest.status` and `intent`, and `MessageHeader.event[x]`), accepting the
//!   extension-only `_element` form;
//! - Bundle invariants bdl-1..4, 7, 11, 12 (`total` and `search` only in search sets, `request`
//!   and `response` only where they belong, unique `fullUrl`s, a document starts with a
//!   Composition, a message with a MessageHeader);
//! - dates are real calendar dates (`2021-02-30` matches the schema's pattern but is not a date);
//! - a narrative has its `status` and `div`.

use std::collections::{HashMap, HashSet};
use std::sync::OnceLock;

use jsonschema::{Draft, Registry, Validator};
use serde_json::{json, Value};

use crate::issue::Issue;
use crate::path::{child, index};
use crate::LoadError;

const SCHEMA_URI: &str = "http://hl7.org/fhir/json-schema/4.0";

pub struct Base {
    registry: Registry<'static>,
    /// Every R4 resource type, with its validator once compiled.
    validators: HashMap<String, OnceLock<Result<Validator, String>>>,
}

/// The resource types in Signpost's own messages (referral, scheme response, cancellation,
/// outcome letter, record event), compiled at load.
const EAGER: &[&str] = &[
    "Bundle",
    "MessageHeader",
    "ServiceRequest",
    "Task",
    "Patient",
    "Organization",
    "Practitioner",
    "PractitionerRole",
    "HealthcareService",
    "Condition",
    "Observation",
    "QuestionnaireResponse",
    "Consent",
    "Composition",
    "DocumentReference",
    "Binary",
    "OperationOutcome",
    "Parameters",
];

/// R4 elements with `min = 1` that are primitives (or a choice), so the JSON Schema does not
/// require them. Each entry: resource type, then its required elements (`a|b` means one of).
const REQUIRED_PRIMITIVES: &[(&str, &[&str])] = &[
    ("Bundle", &["type"]),
    ("MessageHeader", &["eventCoding|eventUri"]),
    ("ServiceRequest", &["status", "intent"]),
    ("Task", &["status", "intent"]),
    ("Composition", &["status", "date", "title"]),
    ("DocumentReference", &["status"]),
    ("Observation", &["status"]),
    ("Encounter", &["status"]),
    ("Consent", &["status"]),
    ("CarePlan", &["status", "intent"]),
    ("Communication", &["status"]),
    ("CommunicationRequest", &["status"]),
    ("Procedure", &["status"]),
    ("QuestionnaireResponse", &["status"]),
    ("Questionnaire", &["status"]),
    ("Endpoint", &["status", "address"]),
    ("List", &["status", "mode"]),
    ("AuditEvent", &["recorded"]),
    ("Appointment", &["status"]),
    ("MedicationStatement", &["status"]),
    ("MedicationRequest", &["status", "intent"]),
    ("Flag", &["status"]),
    ("Goal", &["lifecycleStatus"]),
    ("EpisodeOfCare", &["status"]),
    ("DiagnosticReport", &["status"]),
    ("Immunization", &["status"]),
    ("CodeSystem", &["status", "content"]),
    ("ValueSet", &["status"]),
    (
        "CapabilityStatement",
        &["status", "date", "kind", "fhirVersion"],
    ),
    (
        "OperationDefinition",
        &[
            "name", "status", "kind", "code", "system", "type", "instance",
        ],
    ),
    (
        "StructureDefinition",
        &["url", "name", "status", "kind", "abstract", "type"],
    ),
    (
        "SearchParameter",
        &["url", "name", "status", "description", "code", "type"],
    ),
    (
        "MessageDefinition",
        &["status", "date", "eventCoding|eventUri"],
    ),
];

/// Required primitives inside backbone elements: (resource type, element, required children).
const REQUIRED_NESTED: &[(&str, &str, &[&str])] = &[
    ("MessageHeader", "response", &["identifier", "code"]),
    ("MessageHeader", "source", &["endpoint"]),
    ("MessageHeader", "destination", &["endpoint"]),
    ("OperationOutcome", "issue", &["severity", "code"]),
    ("Bundle", "link", &["relation", "url"]),
    ("Composition", "relatesTo", &["code"]),
    ("Composition", "attester", &["mode"]),
    ("Questionnaire", "item", &["linkId", "type"]),
    ("QuestionnaireResponse", "item", &["linkId"]),
];

impl Base {
    pub fn load() -> Result<Self, LoadError> {
        let err = |e: &dyn std::fmt::Display| LoadError::Schema("R4 base".into(), e.to_string());
        let mut schema: Value =
            serde_json::from_str(include_str!(concat!(env!("OUT_DIR"), "/fhir.schema.json")))
                .map_err(|e| err(&e))?;
        let types: Vec<String> = schema
            .pointer("/discriminator/mapping")
            .and_then(Value::as_object)
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        if types.is_empty() {
            return Err(err(&"the schema lists no resource types"));
        }
        // Nested resources are validated on their own (see the module docs).
        schema["definitions"]["ResourceList"] = json!({"type": "object"});
        if let Some(o) = schema.as_object_mut() {
            o.remove("oneOf");
            o.remove("discriminator");
        }
        patch_known_gaps(&mut schema);
        for (def, format) in [
            ("date", "fhir-date"),
            ("dateTime", "fhir-date"),
            ("instant", "fhir-date"),
        ] {
            schema["definitions"][def]["format"] = json!(format);
        }
        let registry = Registry::new()
            .draft(Draft::Draft6)
            .add(SCHEMA_URI, schema)
            .and_then(|b| b.prepare())
            .map_err(|e| err(&e))?;
        let base = Base {
            registry,
            validators: types.into_iter().map(|t| (t, OnceLock::new())).collect(),
        };
        // The types of Signpost's own messages are compiled now, so that neither the first
        // referral nor the first reply waits for them; any other type on its first use.
        let (left, right) = EAGER.split_at(EAGER.len() / 2);
        std::thread::scope(|s| {
            let h = s.spawn(|| left.iter().try_for_each(|t| base.validator(t).map(drop)));
            let b = right.iter().try_for_each(|t| base.validator(t).map(drop));
            h.join()
                .map_err(|_| err(&"a schema-compiling thread panicked"))?
                .and(b)
        })?;
        Ok(base)
    }

    /// The compiled validator for resource type `ty` (compiled on first use), or `None` if R4
    /// has no such type.
    fn validator(&self, ty: &str) -> Result<Option<&Validator>, LoadError> {
        let Some(cell) = self.validators.get(ty) else {
            return Ok(None);
        };
        cell.get_or_init(|| {
            let root = json!({"$ref": format!("{SCHEMA_URI}#/definitions/{ty}")});
            jsonschema::options()
                .with_draft(Draft::Draft6)
                .with_registry(&self.registry)
                .with_format("fhir-date", real_calendar_date)
                .should_validate_formats(true)
                .build(&root)
                .map_err(|e| e.to_string())
        })
        .as_ref()
        .map(Some)
        .map_err(|e| LoadError::Schema(ty.to_owned(), e.clone()))
    }

    /// Every base R4 problem in `resource` and the resources nested in it.
    pub fn validate(&self, resource: &Value) -> Vec<Issue> {
        let mut issues = Vec::new();
        let ty = resource
            .get("resourceType")
            .and_then(Value::as_str)
            .unwrap_or("");
        self.walk(resource, ty, &mut issues);
        issues
    }

    fn walk(&self, resource: &Value, expr: &str, issues: &mut Vec<Issue>) {
        let Some(ty) = resource.get("resourceType").and_then(Value::as_str) else {
            issues.push(Issue::structure(
                "structure",
                expr,
                "A resource needs a resourceType",
            ));
            return;
        };
        let validator = match self.validator(ty) {
            Ok(Some(v)) => v,
            Ok(None) => {
                issues.push(Issue::structure(
                    "structure",
                    child(expr, "resourceType"),
                    format!(
                        "'{}' is not an R4 resource type",
                        ty.chars().take(64).collect::<String>()
                    ),
                ));
                return;
            }
            // Not seen: a unit test compiles every type's schema.
            Err(e) => {
                issues.push(Issue::structure("exception", expr, e.to_string()));
                return;
            }
        };
        // `is_valid` stops at the first problem and builds no error: the common case, a valid
        // resource, costs about half as much as listing its (no) errors.
        let errors = (!validator.is_valid(resource)).then(|| validator.iter_errors(resource));
        for e in errors.into_iter().flatten() {
            let (code, diagnostics) = describe(&e);
            issues.push(Issue::structure(
                code,
                crate::path::of_error(expr, &e),
                diagnostics,
            ));
        }
        required_primitives(ty, resource, expr, issues);
        required_nested(ty, resource, expr, issues);
        narrative(resource, expr, issues);
        if ty == "Bundle" {
            bundle_invariants(resource, expr, issues);
        }
        // Nested resources.
        for (i, c) in resource
            .get("contained")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            self.walk(c, &index(&child(expr, "contained"), i), issues);
        }
        if ty == "Bundle" {
            for (i, e) in resource
                .get("entry")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .enumerate()
            {
                if let Some(r) = e.get("resource").filter(|r| r.is_object()) {
                    self.walk(
                        r,
                        &child(&index(&child(expr, "entry"), i), "resource"),
                        issues,
                    );
                }
                if let Some(r) = e.pointer("/response/outcome").filter(|r| r.is_object()) {
                    self.walk(
                        r,
                        &child(&index(&child(expr, "entry"), i), "response.outcome"),
                        issues,
                    );
                }
            }
        }
        if ty == "Parameters" {
            self.parameters(resource.get("parameter"), &child(expr, "parameter"), issues);
        }
    }

    fn parameters(&self, params: Option<&Value>, expr: &str, issues: &mut Vec<Issue>) {
        for (i, p) in params
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            let at = index(expr, i);
            if let Some(r) = p.get("resource").filter(|r| r.is_object()) {
                self.walk(r, &child(&at, "resource"), issues);
            }
            self.parameters(p.get("part"), &child(&at, "part"), issues);
        }
    }
}

/// Mend two known faults of HL7's 4.0.0 schema in memory (the vendored file stays as HL7
/// published it): its `fhirVersion` enumerations lack "4.0.1", the version R4 was published as;
/// and `canonical` elements have no `_element` sibling for their extensions, which R4 JSON
/// allows as for every primitive.
fn patch_known_gaps(schema: &mut Value) {
    fn add_401(v: &mut Value) {
        match v {
            Value::Object(o) => {
                if let Some(Value::Array(options)) = o.get_mut("enum") {
                    let has = |x: &str| options.iter().any(|o| o.as_str() == Some(x));
                    if has("4.0.0") && !has("4.0.1") {
                        options.push(json!("4.0.1"));
                    }
                }
                o.values_mut().for_each(add_401);
            }
            Value::Array(a) => a.iter_mut().for_each(add_401),
            _ => {}
        }
    }
    add_401(schema);
    let canonical = "#/definitions/canonical";
    if let Some(Value::Object(defs)) = schema.get_mut("definitions") {
        for def in defs.values_mut() {
            let Some(Value::Object(props)) = def.get_mut("properties") else {
                continue;
            };
            let missing: Vec<(String, bool)> = props
                .iter()
                .filter_map(|(name, p)| {
                    let single = p.get("$ref").and_then(Value::as_str) == Some(canonical);
                    let many = p.pointer("/items/$ref").and_then(Value::as_str) == Some(canonical);
                    ((single || many) && !props.contains_key(&format!("_{name}")))
                        .then(|| (name.clone(), many))
                })
                .collect();
            for (name, many) in missing {
                let element = json!({"$ref": "#/definitions/Element"});
                let sibling = if many {
                    json!({"type": "array", "items": element})
                } else {
                    element
                };
                props.insert(format!("_{name}"), sibling);
            }
        }
    }
}

/// An issue code and a sentence for a schema error, never quoting the instance's value.
fn describe(e: &jsonschema::ValidationError<'_>) -> (&'static str, String) {
    use jsonschema::error::ValidationErrorKind as K;
    match e.kind() {
        K::Required { property } => ("required", format!("Missing required element {property}")),
        K::AdditionalProperties { unexpected } => (
            "structure",
            format!("Unknown element(s): {}", unexpected.join(", ")),
        ),
        K::Type { kind } => (
            "structure",
            format!("Wrong JSON type; expected {kind:?}")
                .replace("Single(", "")
                .replace(')', ""),
        ),
        K::Pattern { .. } => (
            "value",
            "The value does not have the format this FHIR data type requires".to_owned(),
        ),
        K::Format { .. } => ("value", "The value is not a real calendar date".to_owned()),
        K::Enum { options } => (
            "code-invalid",
            format!(
                "The code is not one of the allowed codes: {}",
                short(options)
            ),
        ),
        K::Constant { expected_value } => (
            "value",
            format!("The value must be {}", short(expected_value)),
        ),
        K::MinItems { limit } => ("required", format!("At least {limit} item(s) are required")),
        K::MinLength { .. } => ("value", "The value is too short".to_owned()),
        K::MaxLength { .. } => ("value", "The value is too long".to_owned()),
        _ => ("invalid", e.masked().to_string()),
    }
}

fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.len() > 200 {
        format!(
            "{}...",
            &s[..s
                .char_indices()
                .take_while(|(i, _)| *i < 200)
                .last()
                .map(|(i, _)| i)
                .unwrap_or(0)]
        )
    } else {
        s
    }
}

fn present(resource: &Value, element: &str) -> bool {
    resource.get(element).is_some_and(|v| !v.is_null())
        || resource
            .get(format!("_{element}"))
            .is_some_and(|v| !v.is_null())
}

fn required_primitives(ty: &str, resource: &Value, expr: &str, issues: &mut Vec<Issue>) {
    let Some((_, required)) = REQUIRED_PRIMITIVES.iter().find(|(t, _)| *t == ty) else {
        return;
    };
    for r in *required {
        if !r.split('|').any(|alt| present(resource, alt)) {
            let name = r.split('|').next().unwrap_or(r);
            let what = if r.contains('|') {
                format!(
                    "{ty}.{} (one of {})",
                    name.trim_end_matches("Coding").trim_end_matches("Uri"),
                    r.replace('|', ", ")
                )
            } else {
                format!("{ty}.{r}")
            };
            issues.push(Issue::structure(
                "required",
                child(expr, name),
                format!("{what} is required in R4"),
            ));
        }
    }
}

fn required_nested(ty: &str, resource: &Value, expr: &str, issues: &mut Vec<Issue>) {
    for (_, element, children) in REQUIRED_NESTED.iter().filter(|(t, _, _)| *t == ty) {
        let values: Vec<(String, &Value)> = match resource.get(*element) {
            Some(Value::Array(items)) => items
                .iter()
                .enumerate()
                .map(|(i, v)| (index(&child(expr, element), i), v))
                .collect(),
            Some(v @ Value::Object(_)) => vec![(child(expr, element), v)],
            _ => continue,
        };
        for (at, v) in values {
            for c in *children {
                if !present(v, c) {
                    issues.push(Issue::structure(
                        "required",
                        child(&at, c),
                        format!("{ty}.{element}.{c} is required in R4"),
                    ));
                }
            }
        }
    }
}

fn narrative(resource: &Value, expr: &str, issues: &mut Vec<Issue>) {
    if let Some(text) = resource.get("text").filter(|t| t.is_object()) {
        for e in ["status", "div"] {
            if text.get(e).is_none() {
                issues.push(Issue::structure(
                    "required",
                    child(&child(expr, "text"), e),
                    format!("Narrative.{e} is required in R4"),
                ));
            }
        }
    }
}

fn bundle_invariants(bundle: &Value, expr: &str, issues: &mut Vec<Issue>) {
    let ty = bundle.get("type").and_then(Value::as_str).unwrap_or("");
    let entries: Vec<&Value> = bundle
        .get("entry")
        .and_then(Value::as_array)
        .map(|a| a.iter().collect())
        .unwrap_or_default();
    if bundle.get("total").is_some() && !matches!(ty, "searchset" | "history") {
        issues.push(Issue::structure(
            "invariant",
            child(expr, "total"),
            "bdl-1: total only when the Bundle is a search set or a history",
        ));
    }
    let mut seen: HashSet<(String, String)> = HashSet::new();
    for (i, e) in entries.iter().enumerate() {
        let at = index(&child(expr, "entry"), i);
        if e.get("search").is_some() && ty != "searchset" {
            issues.push(Issue::structure(
                "invariant",
                child(&at, "search"),
                "bdl-2: entry.search only when the Bundle is a search set",
            ));
        }
        if e.get("request").is_some() && !matches!(ty, "batch" | "transaction" | "history") {
            issues.push(Issue::structure(
                "invariant",
                child(&at, "request"),
                "bdl-3: entry.request only for a batch, transaction or history",
            ));
        }
        if e.get("response").is_some()
            && !matches!(ty, "batch-response" | "transaction-response" | "history")
        {
            issues.push(Issue::structure(
                "invariant",
                child(&at, "response"),
                "bdl-4: entry.response only for a batch-response, transaction-response or history",
            ));
        }
        if e.get("resource").is_none() && e.get("request").is_none() && e.get("response").is_none()
        {
            issues.push(Issue::structure(
                "invariant",
                at.clone(),
                "bdl-5: an entry needs a resource, a request or a response",
            ));
        }
        if let Some(full_url) = e.get("fullUrl").and_then(Value::as_str) {
            let version = e
                .pointer("/resource/meta/versionId")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned();
            if !seen.insert((full_url.to_owned(), version)) && ty != "history" {
                issues.push(Issue::structure(
                    "invariant",
                    child(&at, "fullUrl"),
                    "bdl-7: fullUrl must be unique in a Bundle (unless the versions differ)",
                ));
            }
        }
    }
    let first = entries
        .first()
        .and_then(|e| e.pointer("/resource/resourceType"))
        .and_then(Value::as_str);
    if ty == "document" && first != Some("Composition") {
        issues.push(Issue::structure(
            "invariant",
            index(&child(expr, "entry"), 0),
            "bdl-11: a document Bundle must start with a Composition",
        ));
    }
    if ty == "message" && first != Some("MessageHeader") {
        issues.push(Issue::structure(
            "invariant",
            index(&child(expr, "entry"), 0),
            "bdl-12: a message Bundle must start with a MessageHeader",
        ));
    }
}

/// A FHIR date, dateTime or instant whose date part is a real calendar date. The schema's
/// pattern has already checked the shape; this checks the day exists in its month.
pub fn real_calendar_date(s: &str) -> bool {
    let mut parts = s.get(..s.len().min(10)).unwrap_or("").split('-');
    let (Some(y), m, d) = (parts.next(), parts.next(), parts.next()) else {
        return true;
    };
    let (Ok(y), Some(Ok(m)), Some(Ok(d))) = (
        y.parse::<u32>(),
        m.map(str::parse::<u32>),
        d.map(|d| d.get(..2).unwrap_or(d).parse::<u32>()),
    ) else {
        return true;
    };
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let days = match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return false,
    };
    (1..=days).contains(&d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calendar_dates_are_checked_to_the_day() {
        assert!(real_calendar_date("2024-02-29"));
        assert!(!real_calendar_date("2023-02-29"));
        assert!(!real_calendar_date("2021-02-30"));
        assert!(!real_calendar_date("2021-04-31T10:00:00Z"));
        assert!(real_calendar_date("2021-04-30T10:00:00Z"));
        assert!(real_calendar_date("2021"));
        assert!(real_calendar_date("2021-04"));
        assert!(!real_calendar_date("1900-02-29"));
        assert!(real_calendar_date("2000-02-29"));
    }

    #[test]
    fn every_r4_resource_type_compiles_and_the_eager_ones_are_compiled_at_load() {
        let base = Base::load().unwrap();
        for ty in EAGER {
            assert!(
                base.validators[*ty].get().is_some(),
                "{ty} compiled at load"
            );
        }
        assert!(
            base.validators["Medication"].get().is_none(),
            "others wait for their first use"
        );
        assert_eq!(base.validators.len(), 146);
        for ty in base.validators.keys() {
            assert!(matches!(base.validator(ty), Ok(Some(_))), "{ty}");
        }
        assert!(matches!(base.validator("Nonsense"), Ok(None)));
    }
}
