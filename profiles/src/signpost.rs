//! The Signpost social prescribing profiles. Each is a JSON Schema in `profiles/signpost/`
//! with a canonical URL and a version, for what a schema can say about one resource; the rules
//! a schema cannot say are here in Rust beside it: the NHS number's Modulus 11 check digit, that
//! references resolve inside the Bundle (by `fullUrl`, and relative references against an
//! absolute `fullUrl` as the FHIR Bundle rules say), resource counts per message, the status
//! reason a closing Task needs, and the profiles of the resources a message carries.

use std::collections::HashMap;

use jsonschema::{Draft, Validator};
use serde_json::Value;

use crate::issue::{Class, Issue};
use crate::path::{child, index, join};
use crate::LoadError;

/// A Signpost profile: short id, canonical URL, version, the resource it constrains.
#[derive(Debug, PartialEq, Eq)]
pub struct ProfileInfo {
    pub id: &'static str,
    pub url: &'static str,
    pub version: &'static str,
    pub resource_type: &'static str,
    pub title: &'static str,
    schema: &'static str,
}

macro_rules! profile {
    ($id:literal, $ty:literal, $title:literal) => {
        ProfileInfo {
            id: $id,
            url: concat!(
                "https://signpost.example.org/fhir/StructureDefinition/",
                $id
            ),
            version: "0.1.0",
            resource_type: $ty,
            title: $title,
            schema: include_str!(concat!("../signpost/", $id, ".schema.json")),
        }
    };
}

pub static PROFILES: &[ProfileInfo] = &[
    profile!("sp-referral-message", "Bundle", "SP referral message"),
    profile!("sp-referral", "ServiceRequest", "SP referral"),
    profile!("sp-patient", "Patient", "SP patient"),
    profile!("sp-organization", "Organization", "SP organization"),
    profile!("sp-practitioner", "Practitioner", "SP practitioner"),
    profile!("sp-task", "Task", "SP task"),
    profile!("sp-scheme-response", "Bundle", "SP scheme response message"),
    profile!("sp-outcome-letter", "Composition", "SP outcome letter"),
];

/// A profile by id, canonical URL, or `url|version`.
pub fn find(key: &str) -> Option<&'static ProfileInfo> {
    let (url, version) = key.split_once('|').unwrap_or((key, ""));
    PROFILES
        .iter()
        .find(|p| (p.id == url || p.url == url) && (version.is_empty() || version == p.version))
}

fn by_id(id: &str) -> &'static ProfileInfo {
    // Only called with the ids in PROFILES.
    PROFILES.iter().find(|p| p.id == id).unwrap_or(&PROFILES[0])
}

pub struct Signpost {
    validators: HashMap<&'static str, Validator>,
}

const NHS_NUMBER: [&str; 2] = [
    "https://fhir.nhs.uk/Id/nhs-number",
    "https://fhir.nhs.uk/id/nhs-number",
];

impl Signpost {
    pub fn load() -> Result<Self, LoadError> {
        let mut validators = HashMap::new();
        for p in PROFILES {
            let schema: Value = serde_json::from_str(p.schema)
                .map_err(|e| LoadError::Schema(p.id.into(), e.to_string()))?;
            let v = jsonschema::options()
                .with_draft(Draft::Draft202012)
                .build(&schema)
                .map_err(|e| LoadError::Schema(p.id.into(), e.to_string()))?;
            validators.insert(p.id, v);
        }
        Ok(Signpost { validators })
    }

    /// Problems with `resource` against profile `p`.
    pub fn validate(&self, p: &'static ProfileInfo, resource: &Value) -> Vec<Issue> {
        let mut issues = Vec::new();
        let expr = resource
            .get("resourceType")
            .and_then(Value::as_str)
            .unwrap_or(p.resource_type)
            .to_owned();
        self.check(p, resource, &expr, None, &mut issues);
        issues
    }

    /// Check one resource at `expr`; `bundle` gives the message it travels in, for references.
    fn check(
        &self,
        p: &'static ProfileInfo,
        resource: &Value,
        expr: &str,
        bundle: Option<&Entries<'_>>,
        issues: &mut Vec<Issue>,
    ) {
        if let Some(v) = self.validators.get(p.id) {
            // As in `base`: listing errors only for a resource that has some.
            let errors = (!v.is_valid(resource)).then(|| v.iter_errors(resource));
            for e in errors.into_iter().flatten() {
                let (code, diagnostics) = describe(&e, p);
                issues.push(Issue::profile(
                    code,
                    crate::path::of_error(expr, &e),
                    diagnostics,
                ));
            }
        }
        match p.id {
            "sp-patient" => nhs_number(resource, expr, issues),
            "sp-task" => task_reason(resource, expr, issues),
            "sp-referral" if bundle.is_none() => {
                literal_type(
                    resource.get("subject"),
                    &["Patient"],
                    &child(expr, "subject"),
                    issues,
                );
                literal_type(
                    resource.get("requester"),
                    &["Practitioner", "PractitionerRole", "Organization"],
                    &child(expr, "requester"),
                    issues,
                );
            }
            "sp-referral" => {
                if let Some(b) = bundle {
                    expect_target(
                        b,
                        resource.get("subject"),
                        &["Patient"],
                        &child(expr, "subject"),
                        issues,
                    );
                    expect_target(
                        b,
                        resource.get("requester"),
                        &["Practitioner", "PractitionerRole", "Organization"],
                        &child(expr, "requester"),
                        issues,
                    );
                }
            }
            "sp-referral-message" => self.referral_message(resource, expr, issues),
            "sp-scheme-response" => self.scheme_response(resource, expr, issues),
            _ => {}
        }
    }

    fn referral_message(&self, bundle: &Value, expr: &str, issues: &mut Vec<Issue>) {
        let entries = Entries::of(bundle, expr);
        entries.references_resolve(true, issues);
        let header = entries.list.first().filter(|e| {
            e.resource.get("resourceType").and_then(Value::as_str) == Some("MessageHeader")
        });
        let Some(header) = header else { return };
        let counts = |t: &str| entries.list.iter().filter(|e| e.type_() == t).count();
        for (t, min, max) in [
            ("ServiceRequest", 1, Some(1)),
            ("Patient", 1, Some(1)),
            ("Organization", 1, None),
        ] {
            let n = counts(t);
            if n < min || max.is_some_and(|m| n > m) {
                let want = match max {
                    Some(m) if m == min => format!("exactly {m}"),
                    _ => format!("at least {min}"),
                };
                issues.push(Issue::profile(
                    "invariant",
                    child(expr, "entry"),
                    format!("A referral message carries {want} {t} (found {n})"),
                ));
            }
        }
        match header
            .resource
            .pointer("/focus/0")
            .and_then(|f| entries.resolve(f, header))
        {
            Some(focus) if focus.type_() == "ServiceRequest" => {
                self.check(
                    by_id("sp-referral"),
                    focus.resource,
                    &focus.expr,
                    Some(&entries),
                    issues,
                );
                if let Some(patient) = focus
                    .resource
                    .get("subject")
                    .and_then(|s| entries.resolve(s, focus))
                    .filter(|e| e.type_() == "Patient")
                {
                    self.check(
                        by_id("sp-patient"),
                        patient.resource,
                        &patient.expr,
                        Some(&entries),
                        issues,
                    );
                }
            }
            Some(_) => issues.push(Issue::profile(
                "invariant",
                child(&header.expr, "focus[0]"),
                "MessageHeader.focus must be the ServiceRequest",
            )),
            None => {}
        }
        match header
            .resource
            .get("sender")
            .and_then(|s| entries.resolve(s, header))
        {
            Some(org) if org.type_() == "Organization" => self.check(
                by_id("sp-organization"),
                org.resource,
                &org.expr,
                Some(&entries),
                issues,
            ),
            Some(_) => issues.push(Issue::profile(
                "invariant",
                child(&header.expr, "sender"),
                "MessageHeader.sender must be the sending Organization",
            )),
            None => {}
        }
        for e in entries.list.iter().filter(|e| e.type_() == "Practitioner") {
            self.check(
                by_id("sp-practitioner"),
                e.resource,
                &e.expr,
                Some(&entries),
                issues,
            );
        }
    }

    fn scheme_response(&self, bundle: &Value, expr: &str, issues: &mut Vec<Issue>) {
        let entries = Entries::of(bundle, expr);
        entries.references_resolve(false, issues);
        let tasks: Vec<&Entry<'_>> = entries
            .list
            .iter()
            .filter(|e| e.type_() == "Task")
            .collect();
        let letters: Vec<&Entry<'_>> = entries
            .list
            .iter()
            .filter(|e| matches!(e.type_(), "Composition" | "DocumentReference"))
            .collect();
        if tasks.is_empty() && letters.is_empty() {
            issues.push(Issue::profile("required", child(expr, "entry"), "A scheme response carries a Task with the referral's status, an outcome letter, or both"));
        }
        for t in tasks {
            self.check(
                by_id("sp-task"),
                t.resource,
                &t.expr,
                Some(&entries),
                issues,
            );
        }
        for l in letters {
            self.check(
                by_id("sp-outcome-letter"),
                l.resource,
                &l.expr,
                Some(&entries),
                issues,
            );
        }
    }
}

/// An issue code and a sentence for a profile error, never quoting the instance's value:
/// - a message event or referral code Signpost does not take: `not-supported` (it says what kind
///   of message this is, and Signpost does not handle that kind);
/// - a code outside the allowed ones (fixed codes, enumerations, codings): `code-invalid`;
/// - something missing (elements, items, an identifier of the required system): `required`;
/// - anything else: `value`.
fn describe(e: &jsonschema::ValidationError<'_>, p: &ProfileInfo) -> (&'static str, String) {
    use jsonschema::error::ValidationErrorKind as K;
    let at = e.instance_path().to_string();
    let kind_of_message = at.ends_with("/eventCoding/code")
        || (p.id == "sp-referral" || p.id == "sp-referral-message") && at.ends_with("/code/coding");
    let on_coding = e.schema_path().to_string().contains("/coding/");
    let (code, what) = match e.kind() {
        K::Required { property } => ("required", format!("{property} is required")),
        K::Contains if on_coding => (
            "code-invalid",
            "no coding here has the required system and code".to_owned(),
        ),
        K::Contains => (
            "required",
            "no element here has the required system and value".to_owned(),
        ),
        K::MinItems { .. } => ("required", "at least one item is required".to_owned()),
        K::AnyOf { .. } => ("required", "an attachment needs data or a url".to_owned()),
        K::Constant { expected_value } => (
            "code-invalid",
            format!("the value must be {expected_value}"),
        ),
        K::Enum { options } => (
            "code-invalid",
            format!("the value must be one of {options}"),
        ),
        K::Pattern { .. } => (
            "value",
            "the value does not have the required format".to_owned(),
        ),
        _ => ("value", e.masked().to_string()),
    };
    let code = if kind_of_message {
        "not-supported"
    } else {
        code
    };
    (code, format!("{}: {what}", p.title))
}

/// Mod 11: 10 digits, weights 10..2 on the first nine, check digit 11 − (sum mod 11), 11 → 0,
/// 10 → invalid (standards.md §4).
pub fn nhs_number_is_valid(n: &str) -> bool {
    let d: Vec<u32> = n.chars().filter_map(|c| c.to_digit(10)).collect();
    if d.len() != 10 || n.len() != 10 {
        return false;
    }
    let sum: u32 = d[..9].iter().zip((2..=10).rev()).map(|(d, w)| d * w).sum();
    match 11 - sum % 11 {
        11 => d[9] == 0,
        10 => false,
        c => d[9] == c,
    }
}

fn nhs_number(patient: &Value, expr: &str, issues: &mut Vec<Issue>) {
    for (i, id) in patient
        .get("identifier")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        let system = id.get("system").and_then(Value::as_str).unwrap_or("");
        if !NHS_NUMBER.contains(&system) {
            continue;
        }
        let value = id.get("value").and_then(Value::as_str).unwrap_or("");
        if !nhs_number_is_valid(value) {
            issues.push(Issue::new(
                Class::Value,
                "value",
                child(&index(&child(expr, "identifier"), i), "value"),
                "The NHS number is not 10 digits with a valid Modulus 11 check digit",
            ));
        }
    }
}

fn task_reason(task: &Value, expr: &str, issues: &mut Vec<Issue>) {
    let status = task.get("status").and_then(Value::as_str).unwrap_or("");
    if matches!(status, "rejected" | "cancelled" | "on-hold" | "failed")
        && task.get("statusReason").is_none()
    {
        issues.push(Issue::profile(
            "required",
            child(expr, "statusReason"),
            format!("A Task that is {status} needs a statusReason"),
        ));
    }
}

/// Outside a Bundle, a literal `Type/id` reference must name one of `types` (`urn:` and
/// logical references cannot be checked and pass).
fn literal_type(reference: Option<&Value>, types: &[&str], expr: &str, issues: &mut Vec<Issue>) {
    let Some(r) = reference
        .and_then(|r| r.get("reference"))
        .and_then(Value::as_str)
    else {
        return;
    };
    if r.starts_with("urn:") || r.starts_with('#') {
        return;
    }
    let mut parts = r.rsplit('/');
    let t = match (parts.next(), parts.next()) {
        (Some(_id), Some(t)) => t,
        _ => return,
    };
    if !types.contains(&t) {
        issues.push(Issue::profile(
            "invariant",
            expr.to_owned(),
            format!("must reference a {}", types.join(" or ")),
        ));
    }
}

fn expect_target(
    b: &Entries<'_>,
    reference: Option<&Value>,
    types: &[&str],
    expr: &str,
    issues: &mut Vec<Issue>,
) {
    let Some(reference) = reference else { return };
    match b.resolve_anywhere(reference) {
        Some(e) if types.contains(&e.type_()) => {}
        Some(_) => issues.push(Issue::profile(
            "invariant",
            expr.to_owned(),
            format!("must reference a {} in the Bundle", types.join(" or ")),
        )),
        None => issues.push(Issue::profile(
            "invariant",
            expr.to_owned(),
            format!("must reference a {} in the Bundle", types.join(" or ")),
        )),
    }
}

/// A Bundle's entries, with FHIR's reference-resolution rules.
struct Entries<'a> {
    list: Vec<Entry<'a>>,
}

struct Entry<'a> {
    full_url: Option<&'a str>,
    resource: &'a Value,
    expr: String,
}

impl Entry<'_> {
    fn type_(&self) -> &str {
        self.resource
            .get("resourceType")
            .and_then(Value::as_str)
            .unwrap_or("")
    }
}

impl<'a> Entries<'a> {
    fn of(bundle: &'a Value, expr: &str) -> Self {
        let list = bundle
            .get("entry")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
            .filter_map(|(i, e)| {
                Some(Entry {
                    full_url: e.get("fullUrl").and_then(Value::as_str),
                    resource: e.get("resource")?,
                    expr: child(&index(&child(expr, "entry"), i), "resource"),
                })
            })
            .collect();
        Entries { list }
    }

    /// Resolve `reference` written inside `from`: by `fullUrl`; a relative `Type/id` against
    /// `from`'s absolute `fullUrl` base; else (no RESTful base) by type and id.
    fn resolve(&self, reference: &Value, from: &Entry<'_>) -> Option<&Entry<'a>> {
        let r = reference.get("reference")?.as_str()?;
        if let Some(e) = self.list.iter().find(|e| e.full_url == Some(r)) {
            return Some(e);
        }
        if r.contains(':') {
            return None;
        }
        let base = from
            .full_url
            .filter(|u| u.starts_with("http"))
            .and_then(|u| {
                let mut parts: Vec<&str> = u.trim_end_matches('/').rsplitn(3, '/').collect();
                parts.reverse();
                (parts.len() == 3).then(|| parts[0])
            });
        match base {
            Some(base) => {
                let absolute = format!("{base}/{r}");
                self.list
                    .iter()
                    .find(|e| e.full_url == Some(absolute.as_str()))
            }
            None => self.resolve_by_type_and_id(r),
        }
    }

    fn resolve_by_type_and_id(&self, r: &str) -> Option<&Entry<'a>> {
        let (t, id) = r.split_once('/')?;
        let id = id.split("/_history/").next().unwrap_or(id);
        self.list
            .iter()
            .find(|e| e.type_() == t && e.resource.get("id").and_then(Value::as_str) == Some(id))
    }

    /// Resolve without knowing the referring entry (fullUrl, then type and id).
    fn resolve_anywhere(&self, reference: &Value) -> Option<&Entry<'a>> {
        let r = reference.get("reference")?.as_str()?;
        self.list
            .iter()
            .find(|e| e.full_url == Some(r))
            .or_else(|| self.resolve_by_type_and_id(r))
    }

    /// Every `urn:uuid:`/`urn:oid:` reference in every entry resolves; with `self_contained`
    /// (a new referral, whose receiver has nothing yet to point at) relative ones must too.
    fn references_resolve(&self, self_contained: bool, issues: &mut Vec<Issue>) {
        for e in &self.list {
            let mut found = Vec::new();
            collect_references(e.resource, "", &mut found);
            for (pointer, r) in found {
                let relative = !r.contains(':') && !r.starts_with('#') && r.contains('/');
                let internal = r.starts_with("urn:") || (self_contained && relative);
                if internal
                    && self
                        .resolve(&serde_json::json!({"reference": r}), e)
                        .is_none()
                {
                    issues.push(Issue::structure(
                        "invariant",
                        join(&e.expr, &pointer),
                        "This reference does not resolve to an entry in the Bundle",
                    ));
                }
            }
        }
    }
}

/// `(pointer to the Reference, reference string)` for every Reference in `v` (not descending
/// into nested resources, which are checked in their own right).
fn collect_references(v: &Value, pointer: &str, out: &mut Vec<(String, String)>) {
    match v {
        Value::Object(o) => {
            if let Some(Value::String(r)) = o.get("reference") {
                out.push((pointer.to_owned(), r.clone()));
            }
            for (k, child) in o {
                if k == "contained" || k == "resource" {
                    continue;
                }
                collect_references(child, &format!("{pointer}/{k}"), out);
            }
        }
        Value::Array(a) => {
            for (i, child) in a.iter().enumerate() {
                collect_references(child, &format!("{pointer}/{i}"), out);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profiles_are_found_by_id_url_and_version() {
        assert_eq!(find("sp-patient").unwrap().id, "sp-patient");
        assert_eq!(
            find("https://signpost.example.org/fhir/StructureDefinition/sp-task")
                .unwrap()
                .id,
            "sp-task"
        );
        assert_eq!(
            find("https://signpost.example.org/fhir/StructureDefinition/sp-task|0.1.0")
                .unwrap()
                .id,
            "sp-task"
        );
        assert!(
            find("https://signpost.example.org/fhir/StructureDefinition/sp-task|9.9.9").is_none()
        );
        assert!(find("nope").is_none());
    }

    #[test]
    fn nhs_numbers_use_modulus_11() {
        assert!(nhs_number_is_valid("9990000018"));
        assert!(!nhs_number_is_valid("9990000019"));
        assert!(!nhs_number_is_valid("9912003890"));
        assert!(!nhs_number_is_valid("99900000１8"));
    }
}
