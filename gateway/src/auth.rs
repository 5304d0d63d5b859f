//! Who is calling, and what they may do. Deny by default.
//!
//! Callers are identified by the client certificate of their mutual-TLS connection: the
//! directory lists each client as a `Device` with the SHA-256 fingerprints of its certificates
//! (extension `client-certificate`), its role (`type`: `gp-system`, `scheme` or `operator`,
//! Signpost's `client-role` code system) and what it acts for (extension `acts-for`: a GP
//! system's practices by ODS code, a scheme's HealthcareServices by reference). The rules:
//!
//! - a GP system sends referrals and record events only as practices it acts for, cancels and
//!   reads only those practices' referrals;
//! - a scheme responds to, and reads, only referrals routed to its services, and makes only the
//!   Task changes a performer may make (standards.md §6): never `draft`, `requested` or
//!   `entered-in-error`, which are the requester's;
//! - an operator reads everything and alone uses the admin API and the audit trail;
//! - the directory, `$validate` and the CapabilityStatement are for any known caller.
//!
//! On plain HTTP (development on loopback only) every caller is [`Caller::Development`], which
//! may do everything. The checks themselves are here; the API and the pipeline call them.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use serde_json::Value;
use signpost_bus::uris::{self, ODS_ORGANIZATION};
use signpost_bus::Directory;

use crate::error::ApiError;
use crate::store::ReferralRow;

pub const CLIENT_CERTIFICATE_EXT: &str =
    "https://signpost.example.org/fhir/StructureDefinition/client-certificate";
pub const ACTS_FOR_EXT: &str = "https://signpost.example.org/fhir/StructureDefinition/acts-for";
pub const CLIENT_ROLE_SYSTEM: &str = "https://signpost.example.org/fhir/CodeSystem/client-role";

/// What a known client is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// A GP system, acting for these practices (ODS codes).
    GpSystem {
        practices: HashSet<String>,
    },
    /// A scheme, acting for these HealthcareServices (ids).
    Scheme {
        services: HashSet<String>,
    },
    Operator,
}

/// A known client: its directory `Device` id and role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub id: String,
    pub role: Role,
}

/// Who made a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// Plain HTTP on loopback: development, no identities, everything allowed.
    Development,
    Known(Arc<Identity>),
    /// A certificate the client CA signed but the directory does not list.
    Unknown {
        fingerprint: String,
    },
}

impl Caller {
    /// The agent's name for the audit trail and for per-client limits.
    pub fn agent(&self) -> String {
        match self {
            Caller::Development => "development".to_owned(),
            Caller::Known(i) => i.id.clone(),
            Caller::Unknown { fingerprint } => format!("unknown-certificate:{fingerprint}"),
        }
    }
}

/// SHA-256 of a certificate's DER, lower-case hex: how the directory names certificates.
pub fn fingerprint(der: &[u8]) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, der);
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

fn normalise_fingerprint(text: &str) -> String {
    let t = text.trim();
    let t = t
        .strip_prefix("sha256:")
        .or_else(|| t.strip_prefix("SHA256:"))
        .unwrap_or(t);
    t.chars()
        .filter(|c| *c != ':')
        .collect::<String>()
        .to_ascii_lowercase()
}

/// The known clients, by certificate fingerprint.
#[derive(Debug, Default)]
pub struct Identities {
    by_fingerprint: HashMap<String, Arc<Identity>>,
}

fn str_at<'a>(v: &'a Value, pointer: &str) -> Option<&'a str> {
    v.pointer(pointer).and_then(Value::as_str)
}

impl Identities {
    /// Read the `Device` clients of the directory. A malformed one stops the start.
    pub fn from_directory(directory: &Directory) -> Result<Self, String> {
        let mut by_fingerprint = HashMap::new();
        for device in directory.resources("Device") {
            let id = str_at(device, "/id").ok_or("a Device without an id")?;
            let extensions: Vec<&Value> = device
                .get("extension")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .collect();
            let fingerprints: Vec<String> = extensions
                .iter()
                .filter(|e| str_at(e, "/url") == Some(CLIENT_CERTIFICATE_EXT))
                .filter_map(|e| str_at(e, "/valueString"))
                .map(normalise_fingerprint)
                .collect();
            if fingerprints.is_empty() {
                continue;
            }
            if let Some(bad) = fingerprints
                .iter()
                .find(|f| f.len() != 64 || !f.chars().all(|c| c.is_ascii_hexdigit()))
            {
                return Err(format!(
                    "Device/{id}: client-certificate {bad:?} is not a SHA-256 fingerprint"
                ));
            }
            let role_code = device
                .pointer("/type/coding")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .find(|c| str_at(c, "/system") == Some(CLIENT_ROLE_SYSTEM))
                .and_then(|c| str_at(c, "/code"))
                .ok_or_else(|| format!("Device/{id}: type needs a {CLIENT_ROLE_SYSTEM} code"))?;
            let acts_for = extensions
                .iter()
                .filter(|e| str_at(e, "/url") == Some(ACTS_FOR_EXT));
            let role = match role_code {
                "gp-system" => Role::GpSystem {
                    practices: acts_for
                        .filter(|e| {
                            str_at(e, "/valueIdentifier/system")
                                .is_some_and(|s| uris::is_system(s, ODS_ORGANIZATION))
                        })
                        .filter_map(|e| str_at(e, "/valueIdentifier/value"))
                        .map(str::to_owned)
                        .collect(),
                },
                "scheme" => Role::Scheme {
                    services: acts_for
                        .filter_map(|e| str_at(e, "/valueReference/reference"))
                        .filter_map(|r| r.strip_prefix("HealthcareService/"))
                        .map(str::to_owned)
                        .collect(),
                },
                "operator" => Role::Operator,
                other => return Err(format!("Device/{id}: unknown client role {other:?}")),
            };
            let identity = Arc::new(Identity {
                id: id.to_owned(),
                role,
            });
            for f in fingerprints {
                if by_fingerprint.insert(f, identity.clone()).is_some() {
                    return Err(format!(
                        "Device/{id}: a certificate fingerprint is listed twice"
                    ));
                }
            }
        }
        Ok(Identities { by_fingerprint })
    }

    /// The caller presenting this certificate (DER).
    pub fn identify(&self, der: &[u8]) -> Caller {
        let f = fingerprint(der);
        match self.by_fingerprint.get(&f) {
            Some(i) => Caller::Known(i.clone()),
            None => Caller::Unknown { fingerprint: f },
        }
    }

    pub fn len(&self) -> usize {
        self.by_fingerprint.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_fingerprint.is_empty()
    }
}

fn forbidden(what: &str) -> ApiError {
    ApiError::forbidden(format!("This client may not {what}"))
}

/// Any known caller (the directory, `$validate`).
pub fn known(caller: &Caller) -> Result<(), ApiError> {
    match caller {
        Caller::Unknown { .. } => Err(ApiError::unauthorized(
            "The client certificate is not registered in the directory",
        )),
        _ => Ok(()),
    }
}

/// The admin API, the audit trail, metrics: operators.
pub fn operator(caller: &Caller) -> Result<(), ApiError> {
    known(caller)?;
    match caller {
        Caller::Development => Ok(()),
        Caller::Known(i) if i.role == Role::Operator => Ok(()),
        _ => Err(forbidden("use the operators' API")),
    }
}

/// Send a referral or a record event as practice `ods`.
pub fn send_as(caller: &Caller, ods: &str) -> Result<(), ApiError> {
    known(caller)?;
    match caller {
        Caller::Development => Ok(()),
        Caller::Known(i) => match &i.role {
            Role::GpSystem { practices } if practices.contains(ods) => Ok(()),
            _ => Err(forbidden("send referrals for this practice")),
        },
        Caller::Unknown { .. } => Err(forbidden("send referrals")),
    }
}

/// Read a referral (and its Task and timeline).
pub fn may_read(caller: &Caller, r: &ReferralRow) -> bool {
    match caller {
        Caller::Development => true,
        Caller::Known(i) => match &i.role {
            Role::Operator => true,
            Role::GpSystem { practices } => practices.contains(&r.practice_ods),
            Role::Scheme { services } => services.contains(&r.scheme_id),
        },
        Caller::Unknown { .. } => false,
    }
}

pub fn read(caller: &Caller, r: &ReferralRow) -> Result<(), ApiError> {
    known(caller)?;
    if may_read(caller, r) {
        Ok(())
    } else {
        Err(forbidden("read this referral"))
    }
}

/// Cancel a referral: the GP system of the practice that made it.
pub fn cancel(caller: &Caller, r: &ReferralRow) -> Result<(), ApiError> {
    known(caller)?;
    match caller {
        Caller::Development => Ok(()),
        Caller::Known(i) => match &i.role {
            Role::GpSystem { practices } if practices.contains(&r.practice_ods) => Ok(()),
            _ => Err(forbidden("cancel this referral")),
        },
        Caller::Unknown { .. } => Err(forbidden("cancel referrals")),
    }
}

/// Respond to (update) a referral: the scheme it was routed to.
pub fn respond(caller: &Caller, r: &ReferralRow) -> Result<(), ApiError> {
    known(caller)?;
    match caller {
        Caller::Development => Ok(()),
        Caller::Known(i) => match &i.role {
            Role::Scheme { services } if services.contains(&r.scheme_id) => Ok(()),
            _ => Err(forbidden("update this referral")),
        },
        Caller::Unknown { .. } => Err(forbidden("update referrals")),
    }
}

/// Task statuses only the requester sets (standards.md §6): a scheme setting one is refused.
pub const REQUESTER_ONLY: &[&str] = &["draft", "requested", "entered-in-error"];

pub fn performer_status(to: &str) -> Result<(), ApiError> {
    if REQUESTER_ONLY.contains(&to) {
        Err(ApiError::forbidden(format!(
            "Only the referrer may set a Task to '{to}'"
        )))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn directory(devices: Vec<Value>) -> Directory {
        let entries: Vec<Value> = devices
            .into_iter()
            .map(|d| json!({"resource": d}))
            .collect();
        Directory::from_value(
            json!({"resourceType": "Bundle", "type": "collection", "entry": entries}),
        )
        .unwrap()
    }

    fn device(id: &str, role: &str, cert: &[u8], acts_for: Vec<Value>) -> Value {
        let mut ext =
            vec![json!({"url": CLIENT_CERTIFICATE_EXT, "valueString": fingerprint(cert)})];
        ext.extend(acts_for);
        json!({"resourceType": "Device", "id": id, "extension": ext,
               "type": {"coding": [{"system": CLIENT_ROLE_SYSTEM, "code": role}]}})
    }

    fn referral(ods: &str, scheme: &str) -> ReferralRow {
        ReferralRow {
            id: "r".into(),
            task_id: "t".into(),
            source_bundle_id: "s".into(),
            message_bundle_id: "m".into(),
            correlation_id: "c".into(),
            practice_ods: ods.into(),
            scheme_id: scheme.into(),
            scheme_endpoint: "e".into(),
            nhs_number: "9990000018".into(),
            sr_status: "active".into(),
            task_status: "requested".into(),
            service_request: json!({}),
            task: json!({}),
            version: 1,
            created_ms: 0,
            updated_ms: 0,
        }
    }

    fn identities() -> Identities {
        Identities::from_directory(&directory(vec![
            device("gp-a", "gp-system", b"cert-gp-a", vec![json!({"url": ACTS_FOR_EXT, "valueIdentifier": {"system": ODS_ORGANIZATION, "value": "A81001"}})]),
            device("scheme-x", "scheme", b"cert-scheme-x", vec![json!({"url": ACTS_FOR_EXT, "valueReference": {"reference": "HealthcareService/svc-x"}})]),
            device("ops", "operator", b"cert-ops", vec![]),
        ]))
        .unwrap()
    }

    #[test]
    fn certificates_are_known_by_their_fingerprint() {
        let ids = identities();
        assert_eq!(ids.len(), 3);
        assert!(matches!(ids.identify(b"cert-gp-a"), Caller::Known(i) if i.id == "gp-a"));
        assert!(matches!(
            ids.identify(b"someone else"),
            Caller::Unknown { .. }
        ));
        assert_eq!(
            normalise_fingerprint("SHA256:AB:cd"),
            "abcd",
            "colons, case and a prefix are tolerated"
        );
    }

    #[test]
    fn each_role_sees_only_its_own_referrals() {
        let ids = identities();
        let (gp, scheme, ops) = (
            ids.identify(b"cert-gp-a"),
            ids.identify(b"cert-scheme-x"),
            ids.identify(b"cert-ops"),
        );
        let mine = referral("A81001", "svc-x");
        let theirs = referral("B82002", "svc-y");
        assert!(read(&gp, &mine).is_ok() && read(&gp, &theirs).is_err());
        assert!(read(&scheme, &mine).is_ok() && read(&scheme, &theirs).is_err());
        assert!(read(&ops, &theirs).is_ok());
        assert!(send_as(&gp, "A81001").is_ok() && send_as(&gp, "B82002").is_err());
        assert!(send_as(&scheme, "A81001").is_err(), "a scheme cannot refer");
        assert!(respond(&scheme, &mine).is_ok() && respond(&scheme, &theirs).is_err());
        assert!(
            respond(&gp, &mine).is_err(),
            "a GP system cannot act as the scheme"
        );
        assert!(cancel(&gp, &mine).is_ok() && cancel(&scheme, &mine).is_err());
        assert!(operator(&ops).is_ok() && operator(&gp).is_err() && operator(&scheme).is_err());
        assert!(operator(&Caller::Development).is_ok());
    }

    #[test]
    fn refusals_are_403_and_strangers_401() {
        let ids = identities();
        let e = operator(&ids.identify(b"cert-gp-a")).unwrap_err();
        assert_eq!((e.status.as_u16(), e.rec), (403, "REC_FORBIDDEN"));
        let e = operator(&ids.identify(b"nobody")).unwrap_err();
        assert_eq!((e.status.as_u16(), e.rec), (401, "REC_UNAUTHORIZED"));
        let e = performer_status("entered-in-error").unwrap_err();
        assert_eq!(e.status.as_u16(), 403);
        assert!(performer_status("completed").is_ok());
    }

    #[test]
    fn a_malformed_client_stops_the_start() {
        let bad = json!({"resourceType": "Device", "id": "d", "extension": [{"url": CLIENT_CERTIFICATE_EXT, "valueString": "not-hex"}],
            "type": {"coding": [{"system": CLIENT_ROLE_SYSTEM, "code": "operator"}]}});
        assert!(Identities::from_directory(&directory(vec![bad])).is_err());
        let no_role = json!({"resourceType": "Device", "id": "d", "extension": [{"url": CLIENT_CERTIFICATE_EXT, "valueString": fingerprint(b"x")}]});
        assert!(Identities::from_directory(&directory(vec![no_role])).is_err());
    }
}
