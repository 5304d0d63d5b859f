//! The directory: which scheme serves which practice, and how every scheme and GP system is
//! reached. It is FHIR: a Bundle of Organization, HealthcareService and Endpoint resources,
//! loaded from a file at start (`deploy/directory.example.json` shows the shape) and served
//! read-only by the gateway.
//!
//! - An **Endpoint** is a target on the bus: its `id` names the queue (`sp.referrals.<id>` or
//!   `sp.records.<id>`), its `connectionType` says which adapter delivers (`hl7-fhir-msg`: BaRS
//!   messaging to a scheme; `hl7-fhir-rest`: document filing at a GP system), `address` is the
//!   FHIR base URL. Plain `http` is accepted only for loopback addresses.
//! - A **practice** is an Organization with an ODS code whose `endpoint` names its GP system.
//! - A **scheme** is a HealthcareService (`providedBy` its Organization, `endpoint` its
//!   Endpoint) with one `served-practice` extension per practice (ODS code) it takes referrals
//!   from.

use std::collections::HashMap;
use std::path::Path;

use serde_json::Value;

use crate::uris::{self, ENDPOINT_CONNECTION_TYPE, ODS_ORGANIZATION, SERVED_PRACTICE_EXT};

#[derive(Debug, thiserror::Error)]
pub enum DirectoryError {
    #[error("cannot read the directory {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("the directory is not JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("the directory is invalid: {0}")]
    Invalid(String),
}

fn invalid(msg: impl Into<String>) -> DirectoryError {
    DirectoryError::Invalid(msg.into())
}

/// How an endpoint is reached, which decides the adapter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndpointKind {
    /// BaRS-shaped FHIR messaging (`$process-message`): the `fhir-messaging` adapter.
    FhirMessaging,
    /// FHIR REST create of a DocumentReference: the `fhir-document` adapter.
    FhirRest,
    /// The envelope as a signed webhook: the `webhook` adapter.
    Webhook,
    /// The scheme consumes its own queue with its own broker user; no adapter delivers.
    QueuePull,
    /// A GP system taking MDM^T02 letters over MLLP (`mllp://host:port`): the `hl7v2` adapter.
    Hl7v2Mllp,
    /// A GP system reached by GP Connect Send Document over MESH: the `mesh` adapter. The
    /// address is `mesh:<MAILBOX>` (a practice mailbox) or `mesh:gpprovider` (MESH routes to
    /// the patient's registered GP by NHS number, date of birth and surname).
    Mesh,
}

/// Signpost's own Endpoint connection types (the HL7 code system has none for these).
pub const SIGNPOST_CONNECTION_TYPE: &str =
    "https://signpost.example.org/fhir/CodeSystem/endpoint-connection-type";

impl EndpointKind {
    /// Whether referrals (to schemes) go this way.
    pub fn is_referral_side(self) -> bool {
        matches!(
            self,
            EndpointKind::FhirMessaging | EndpointKind::Webhook | EndpointKind::QueuePull
        )
    }

    /// Whether letters (to GP systems) go this way.
    pub fn is_records_side(self) -> bool {
        matches!(
            self,
            EndpointKind::FhirRest | EndpointKind::Hl7v2Mllp | EndpointKind::Mesh
        )
    }
}

/// The MESH address of an endpoint: `mesh:gpprovider` routes by the patient's demographics.
pub const MESH_GP_PROVIDER: &str = "gpprovider";

/// `mesh:<MAILBOX>` → the mailbox id (or [`MESH_GP_PROVIDER`]), if the address is well formed:
/// MESH mailbox ids are letters and digits.
pub fn mesh_mailbox(address: &str) -> Option<&str> {
    let m = address.strip_prefix("mesh:")?;
    (!m.is_empty() && m.len() <= 32 && m.chars().all(|c| c.is_ascii_alphanumeric())).then_some(m)
}

#[derive(Debug, Clone)]
pub struct Endpoint {
    pub id: String,
    pub kind: EndpointKind,
    pub address: String,
    /// The endpoint's own retry policy (extension `retry-policy`), if it has one.
    pub retry: crate::RetryPolicy,
    pub resource: Value,
}

/// Extension on an Endpoint: its retry policy, with sub-extensions `maxAttempts`
/// (valuePositiveInt) and `horizon` (valueDuration, UCUM `s`, `min`, `h` or `d`).
pub const RETRY_POLICY_EXT: &str =
    "https://signpost.example.org/fhir/StructureDefinition/retry-policy";

fn retry_policy(endpoint: &Value, id: &str) -> Result<crate::RetryPolicy, DirectoryError> {
    let mut policy = crate::RetryPolicy::default();
    let exts = endpoint
        .get("extension")
        .and_then(Value::as_array)
        .into_iter()
        .flatten();
    for ext in exts.filter(|e| str_at(e, "/url") == Some(RETRY_POLICY_EXT)) {
        for sub in ext
            .get("extension")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            match str_at(sub, "/url") {
                Some("maxAttempts") => {
                    let n = ["valuePositiveInt", "valueUnsignedInt", "valueInteger"]
                        .iter()
                        .find_map(|k| sub.get(*k).and_then(Value::as_u64))
                        .filter(|n| *n >= 1)
                        .ok_or_else(|| invalid(format!("Endpoint/{id}: retry-policy maxAttempts must be a positive integer")))?;
                    policy.max_attempts = Some(u32::try_from(n).unwrap_or(u32::MAX));
                }
                Some("horizon") => {
                    let value = sub.pointer("/valueDuration/value").and_then(Value::as_f64);
                    let unit = str_at(sub, "/valueDuration/code");
                    let seconds = match (value, unit) {
                        (Some(v), Some("s")) => v,
                        (Some(v), Some("min")) => v * 60.0,
                        (Some(v), Some("h")) => v * 3600.0,
                        (Some(v), Some("d")) => v * 86400.0,
                        _ => return Err(invalid(format!("Endpoint/{id}: retry-policy horizon must be a Duration in s, min, h or d"))),
                    };
                    if !(seconds > 0.0 && seconds.is_finite()) {
                        return Err(invalid(format!(
                            "Endpoint/{id}: retry-policy horizon must be positive"
                        )));
                    }
                    policy.horizon = Some(std::time::Duration::from_secs_f64(seconds));
                }
                _ => {}
            }
        }
    }
    Ok(policy)
}

#[derive(Debug, Clone)]
pub struct Practice {
    pub ods: String,
    pub name: String,
    /// The Endpoint id of the practice's GP system, where letters are filed.
    pub gp_endpoint: Option<String>,
    pub resource: Value,
}

#[derive(Debug, Clone)]
pub struct Scheme {
    /// The HealthcareService id.
    pub id: String,
    pub name: String,
    /// ODS code of the providing organisation, when it has one.
    pub ods: Option<String>,
    /// `system`/`value` of the service identifier (for `NHSD-Target-Identifier`).
    pub service_identifier: Option<(String, String)>,
    /// The Endpoint id referrals go to.
    pub endpoint: String,
    /// ODS codes of the practices it serves.
    pub serves: Vec<String>,
    pub organization: Value,
    pub service: Value,
}

#[derive(Debug, Clone)]
pub struct Directory {
    endpoints: HashMap<String, Endpoint>,
    practices: HashMap<String, Practice>,
    schemes: Vec<Scheme>,
    resources: Vec<Value>,
}

fn str_at<'a>(v: &'a Value, pointer: &str) -> Option<&'a str> {
    v.pointer(pointer).and_then(Value::as_str)
}

fn ods_code(org: &Value) -> Option<String> {
    org.get("identifier")?
        .as_array()?
        .iter()
        .find(|i| str_at(i, "/system").is_some_and(|s| uris::is_system(s, ODS_ORGANIZATION)))
        .and_then(|i| str_at(i, "/value"))
        .map(str::to_owned)
}

/// `Type/id` → `id` when the type matches.
fn reference_id<'a>(reference: &'a Value, resource_type: &str) -> Option<&'a str> {
    let r = str_at(reference, "/reference")?;
    let (t, id) = r.split_once('/')?;
    (t == resource_type).then_some(id)
}

/// Whether an `http://` address names a loopback host (plain HTTP is allowed only there).
pub fn is_loopback(address: &str) -> bool {
    let rest = address.strip_prefix("http://").unwrap_or("");
    let host = rest.split(['/', '?']).next().unwrap_or("");
    let host = if host.starts_with('[') {
        host.split(']').next().unwrap_or("").trim_start_matches('[')
    } else {
        host.split(':').next().unwrap_or("")
    };
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Endpoint ids become queue names: keep them to a safe alphabet.
fn valid_target_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
}

impl Directory {
    pub fn load(path: &Path) -> Result<Self, DirectoryError> {
        let text = std::fs::read_to_string(path).map_err(|source| DirectoryError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_value(serde_json::from_str(&text)?)
    }

    pub fn from_value(bundle: Value) -> Result<Self, DirectoryError> {
        if str_at(&bundle, "/resourceType") != Some("Bundle") {
            return Err(invalid("it must be a FHIR Bundle"));
        }
        let resources: Vec<Value> = bundle
            .get("entry")
            .and_then(Value::as_array)
            .map(|entries| {
                entries
                    .iter()
                    .filter_map(|e| e.get("resource").cloned())
                    .collect()
            })
            .unwrap_or_default();
        fn of_type<'a>(resources: &'a [Value], t: &'a str) -> impl Iterator<Item = &'a Value> {
            resources
                .iter()
                .filter(move |r| str_at(r, "/resourceType") == Some(t))
        }
        let id_of = |r: &Value| -> Result<String, DirectoryError> {
            str_at(r, "/id")
                .map(str::to_owned)
                .ok_or_else(|| invalid("every resource needs an id"))
        };

        let mut endpoints = HashMap::new();
        for r in of_type(&resources, "Endpoint") {
            let id = id_of(r)?;
            if !valid_target_id(&id) {
                return Err(invalid(format!(
                    "Endpoint id {id:?} must be 1-64 letters, digits, '-' or '.'"
                )));
            }
            if str_at(r, "/status").unwrap_or("active") != "active" {
                continue;
            }
            let system = str_at(r, "/connectionType/system").unwrap_or("");
            let code = str_at(r, "/connectionType/code").unwrap_or("");
            let kind = match (system, code) {
                (ENDPOINT_CONNECTION_TYPE, "hl7-fhir-msg") => EndpointKind::FhirMessaging,
                (ENDPOINT_CONNECTION_TYPE, "hl7-fhir-rest") => EndpointKind::FhirRest,
                (SIGNPOST_CONNECTION_TYPE, "signed-webhook") => EndpointKind::Webhook,
                (SIGNPOST_CONNECTION_TYPE, "queue-pull") => EndpointKind::QueuePull,
                (SIGNPOST_CONNECTION_TYPE, "hl7v2-mllp") => EndpointKind::Hl7v2Mllp,
                (SIGNPOST_CONNECTION_TYPE, "mesh") => EndpointKind::Mesh,
                _ => {
                    return Err(invalid(format!(
                    "Endpoint/{id}: connectionType {system}|{code} is not one Signpost delivers to"
                )))
                }
            };
            let address = str_at(r, "/address")
                .ok_or_else(|| invalid(format!("Endpoint/{id} has no address")))?
                .to_owned();
            // Plain MLLP carries patient data unencrypted: loopback only (a TLS sidecar) until
            // MLLP over TLS is wired in.
            if kind == EndpointKind::Hl7v2Mllp
                && !is_loopback(&address.replacen("mllp://", "http://", 1))
            {
                return Err(invalid(format!(
                    "Endpoint/{id}: an hl7v2-mllp address must be mllp:// on loopback"
                )));
            }
            if kind == EndpointKind::Mesh && mesh_mailbox(&address).is_none() {
                return Err(invalid(format!(
                    "Endpoint/{id}: a mesh address is mesh:<MAILBOX> or mesh:{MESH_GP_PROVIDER}"
                )));
            }
            let http_kind = !matches!(
                kind,
                EndpointKind::QueuePull | EndpointKind::Hl7v2Mllp | EndpointKind::Mesh
            );
            let safe = address.starts_with("https://") || is_loopback(&address);
            if http_kind && !safe {
                return Err(invalid(format!(
                    "Endpoint/{id}: address must be https (plain http only on loopback)"
                )));
            }
            let retry = retry_policy(r, &id)?;
            endpoints.insert(
                id.clone(),
                Endpoint {
                    id,
                    kind,
                    address,
                    retry,
                    resource: r.clone(),
                },
            );
        }

        let mut organizations = HashMap::new();
        let mut practices = HashMap::new();
        for r in of_type(&resources, "Organization") {
            let id = id_of(r)?;
            organizations.insert(id.clone(), r.clone());
            let Some(ods) = ods_code(r) else { continue };
            let gp_endpoint = r
                .get("endpoint")
                .and_then(Value::as_array)
                .and_then(|refs| refs.iter().find_map(|e| reference_id(e, "Endpoint")))
                .map(str::to_owned);
            if let Some(ep) = &gp_endpoint {
                match endpoints.get(ep) {
                    Some(e) if e.kind.is_records_side() => {}
                    Some(_) => {
                        return Err(invalid(format!(
                            "Organization/{id}: its GP system Endpoint/{ep} must be hl7-fhir-rest, hl7v2-mllp or mesh"
                        )))
                    }
                    None => {
                        return Err(invalid(format!(
                            "Organization/{id} names Endpoint/{ep}, which is not an active endpoint"
                        )))
                    }
                }
            }
            practices.insert(
                ods.clone(),
                Practice {
                    ods,
                    name: str_at(r, "/name").unwrap_or("").to_owned(),
                    gp_endpoint,
                    resource: r.clone(),
                },
            );
        }

        let mut schemes = Vec::new();
        for r in of_type(&resources, "HealthcareService") {
            let id = id_of(r)?;
            if r.get("active").and_then(Value::as_bool) == Some(false) {
                continue;
            }
            let org_id = r
                .get("providedBy")
                .and_then(|p| reference_id(p, "Organization"))
                .ok_or_else(|| invalid(format!("HealthcareService/{id} needs providedBy")))?;
            let organization = organizations.get(org_id).cloned().ok_or_else(|| {
                invalid(format!(
                    "HealthcareService/{id}: Organization/{org_id} is not in the directory"
                ))
            })?;
            let endpoint = r
                .get("endpoint")
                .and_then(Value::as_array)
                .and_then(|refs| refs.iter().find_map(|e| reference_id(e, "Endpoint")))
                .ok_or_else(|| invalid(format!("HealthcareService/{id} needs an endpoint")))?
                .to_owned();
            match endpoints.get(&endpoint) {
                Some(e) if e.kind.is_referral_side() => {}
                _ => {
                    return Err(invalid(format!(
                        "HealthcareService/{id}: Endpoint/{endpoint} must be an active hl7-fhir-msg, signed-webhook or queue-pull endpoint"
                    )))
                }
            }
            let serves = r
                .get("extension")
                .and_then(Value::as_array)
                .map(|exts| {
                    exts.iter()
                        .filter(|e| str_at(e, "/url") == Some(SERVED_PRACTICE_EXT))
                        .filter_map(|e| str_at(e, "/valueIdentifier/value"))
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default();
            let service_identifier = r.pointer("/identifier/0").and_then(|i| {
                Some((
                    str_at(i, "/system")?.to_owned(),
                    str_at(i, "/value")?.to_owned(),
                ))
            });
            schemes.push(Scheme {
                id,
                name: str_at(r, "/name").unwrap_or("").to_owned(),
                ods: ods_code(&organization),
                service_identifier,
                endpoint,
                serves,
                organization,
                service: r.clone(),
            });
        }

        Ok(Directory {
            endpoints,
            practices,
            schemes,
            resources,
        })
    }

    /// The scheme that takes referrals from the practice with this ODS code.
    pub fn scheme_for_practice(&self, ods: &str) -> Option<&Scheme> {
        self.schemes
            .iter()
            .find(|s| s.serves.iter().any(|p| p.eq_ignore_ascii_case(ods)))
    }

    pub fn practice(&self, ods: &str) -> Option<&Practice> {
        self.practices.get(ods)
    }

    pub fn scheme(&self, id: &str) -> Option<&Scheme> {
        self.schemes.iter().find(|s| s.id == id)
    }

    /// The scheme whose Endpoint is `endpoint_id`.
    pub fn scheme_by_endpoint(&self, endpoint_id: &str) -> Option<&Scheme> {
        self.schemes.iter().find(|s| s.endpoint == endpoint_id)
    }

    pub fn endpoint(&self, id: &str) -> Option<&Endpoint> {
        self.endpoints.get(id)
    }

    /// Endpoint ids of one kind, sorted.
    pub fn targets(&self, kind: EndpointKind) -> Vec<String> {
        let mut ids: Vec<String> = self
            .endpoints
            .values()
            .filter(|e| e.kind == kind)
            .map(|e| e.id.clone())
            .collect();
        ids.sort();
        ids
    }

    /// One consumer per endpoint of `kind`, with the endpoint's retry policy, for an adapter.
    pub fn queues_for(
        &self,
        kind: EndpointKind,
        handler: std::sync::Arc<dyn crate::Handler>,
    ) -> Vec<crate::QueueConsumer> {
        let side = if kind.is_records_side() {
            crate::topology::Side::Records
        } else {
            crate::topology::Side::Referrals
        };
        self.targets(kind)
            .into_iter()
            .map(|t| crate::QueueConsumer {
                queue: crate::topology::queue(side, &t),
                handler: handler.clone(),
                policy: self.endpoints.get(&t).map(|e| e.retry).unwrap_or_default(),
            })
            .collect()
    }

    /// Endpoint ids that take referrals (FHIR messaging, webhook, queue pull), sorted.
    pub fn referral_targets(&self) -> Vec<String> {
        let mut ids: Vec<String> = self
            .endpoints
            .values()
            .filter(|e| e.kind.is_referral_side())
            .map(|e| e.id.clone())
            .collect();
        ids.sort();
        ids
    }

    /// Endpoint ids of GP systems that take letters (FHIR REST, HL7 v2 or MESH), sorted.
    pub fn record_targets(&self) -> Vec<String> {
        let mut ids: Vec<String> = self
            .endpoints
            .values()
            .filter(|e| e.kind.is_records_side())
            .map(|e| e.id.clone())
            .collect();
        ids.sort();
        ids
    }

    /// Every scheme.
    pub fn schemes(&self) -> &[Scheme] {
        &self.schemes
    }

    /// Resources of one type, as loaded.
    pub fn resources<'a>(&'a self, resource_type: &'a str) -> impl Iterator<Item = &'a Value> {
        self.resources
            .iter()
            .filter(move |r| str_at(r, "/resourceType") == Some(resource_type))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sample() -> Value {
        json!({"resourceType": "Bundle", "type": "collection", "entry": [
            {"resource": {"resourceType": "Endpoint", "id": "scheme-a", "status": "active",
              "connectionType": {"system": ENDPOINT_CONNECTION_TYPE, "code": "hl7-fhir-msg"},
              "payloadType": [{"text": "BaRS"}], "address": "http://127.0.0.1:9000/fhir"}},
            {"resource": {"resourceType": "Endpoint", "id": "gp-1", "status": "active",
              "connectionType": {"system": ENDPOINT_CONNECTION_TYPE, "code": "hl7-fhir-rest"},
              "payloadType": [{"text": "documents"}], "address": "https://gp.example.org/fhir"}},
            {"resource": {"resourceType": "Organization", "id": "p1", "name": "Practice One",
              "identifier": [{"system": "https://fhir.nhs.uk/id/ods-organization-code", "value": "A12345"}],
              "endpoint": [{"reference": "Endpoint/gp-1"}]}},
            {"resource": {"resourceType": "Organization", "id": "s1", "name": "Scheme Org",
              "identifier": [{"system": ODS_ORGANIZATION, "value": "X1"}]}},
            {"resource": {"resourceType": "HealthcareService", "id": "hs1", "name": "Link workers",
              "providedBy": {"reference": "Organization/s1"},
              "endpoint": [{"reference": "Endpoint/scheme-a"}],
              "extension": [{"url": SERVED_PRACTICE_EXT,
                "valueIdentifier": {"system": ODS_ORGANIZATION, "value": "A12345"}}]}}
        ]})
    }

    #[test]
    fn a_practice_is_routed_to_the_scheme_that_serves_it() {
        let d = Directory::from_value(sample()).unwrap();
        let s = d.scheme_for_practice("A12345").unwrap();
        assert_eq!((s.id.as_str(), s.endpoint.as_str()), ("hs1", "scheme-a"));
        assert_eq!(
            d.practice("A12345").unwrap().gp_endpoint.as_deref(),
            Some("gp-1")
        );
        assert!(d.scheme_for_practice("Z99999").is_none());
        assert_eq!(d.targets(EndpointKind::FhirMessaging), vec!["scheme-a"]);
        assert_eq!(d.targets(EndpointKind::FhirRest), vec!["gp-1"]);
    }

    #[test]
    fn an_endpoint_carries_its_retry_policy() {
        let mut v = sample();
        v["entry"][0]["resource"]["extension"] = json!([{"url": RETRY_POLICY_EXT, "extension": [
            {"url": "maxAttempts", "valuePositiveInt": 5},
            {"url": "horizon", "valueDuration": {"value": 2, "unit": "hours", "system": "http://unitsofmeasure.org", "code": "h"}}]}]);
        let d = Directory::from_value(v.clone()).unwrap();
        let p = d.endpoint("scheme-a").unwrap().retry;
        assert_eq!(
            (p.max_attempts, p.horizon),
            (Some(5), Some(std::time::Duration::from_secs(7200)))
        );
        assert_eq!(
            d.endpoint("gp-1").unwrap().retry,
            crate::RetryPolicy::default()
        );
        v["entry"][0]["resource"]["extension"][0]["extension"][1]["valueDuration"]["code"] =
            json!("fortnight");
        assert!(Directory::from_value(v).is_err());
    }

    #[test]
    fn plain_http_to_a_remote_host_is_refused() {
        let mut v = sample();
        v["entry"][0]["resource"]["address"] = json!("http://scheme.example.org/fhir");
        let err = Directory::from_value(v).unwrap_err().to_string();
        assert!(err.contains("https"), "{err}");
    }

    #[test]
    fn a_scheme_pointing_at_a_missing_endpoint_is_refused() {
        let mut v = sample();
        v["entry"][4]["resource"]["endpoint"][0]["reference"] = json!("Endpoint/nope");
        assert!(Directory::from_value(v).is_err());
    }

    #[test]
    fn loopback_detection_covers_names_v4_and_v6() {
        assert!(is_loopback("http://localhost:8080/fhir"));
        assert!(is_loopback("http://127.0.0.1/fhir"));
        assert!(is_loopback("http://[::1]:80/x"));
        assert!(!is_loopback("http://10.0.0.1/fhir"));
        assert!(!is_loopback("https://127.0.0.1/fhir"));
    }
}
