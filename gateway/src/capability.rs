//! The CapabilityStatement at `GET /fhir/metadata`: what this gateway really implements, and
//! the BaRS MessageDefinitions it receives and sends.

use serde_json::{json, Value};

use crate::fhir;

pub fn capability_statement(date: &str) -> Value {
    let read_search = |t: &str, params: Value, doc: &str| {
        json!({
            "type": t,
            "interaction": [{"code": "read"}, {"code": "search-type"}],
            "searchParam": params,
            "documentation": doc,
        })
    };
    json!({
        "resourceType": "CapabilityStatement",
        "id": "signpost",
        "url": "https://signpost.example.org/fhir/CapabilityStatement/signpost",
        "name": "SignpostGateway",
        "title": "Signpost social prescribing gateway",
        "status": "active",
        "date": date,
        "publisher": "Signpost",
        "kind": "instance",
        "software": {"name": "Signpost", "version": env!("CARGO_PKG_VERSION")},
        "implementation": {"description": "Signpost: GP record events and BaRS referrals to social prescribing schemes over RabbitMQ, with status updates and outcome letters filed back to the GP record"},
        "fhirVersion": "4.0.1",
        "format": ["application/fhir+json", "json"],
        "rest": [{
            "mode": "server",
            "resource": [
                read_search("ServiceRequest", json!([{"name": "patient:identifier", "type": "token",
                    "documentation": "https://fhir.nhs.uk/Id/nhs-number|<NHS number>"}]),
                    "Referrals. GET [base]/ServiceRequest/{id}/$timeline gives the referral's timeline as a List."),
                read_search("Task", json!([{"name": "focus", "type": "reference",
                    "documentation": "ServiceRequest/<id>"}]),
                    "The referral lifecycle. GET [base]/Task/{id}/$timeline gives the timeline as a List."),
                read_search("HealthcareService", json!([]), "The directory's schemes, read-only."),
                read_search("Endpoint", json!([]), "The directory's endpoints, read-only."),
                {
                    "type": "AuditEvent",
                    "interaction": [{"code": "search-type"}],
                    "searchParam": [
                        {"name": "date", "type": "date", "documentation": "ge/gt/le/lt/eq prefixes; a day or an instant; repeatable"},
                        {"name": "agent", "type": "token", "documentation": "the client (directory Device id)"},
                        {"name": "entity", "type": "reference", "documentation": "ServiceRequest/<id>"},
                        {"name": "_count", "type": "number", "documentation": "1 to 1000"}
                    ],
                    "documentation": "The audit trail: every request, refused handshake and delivery. Operators only."
                },
            ],
            "security": {
                "cors": false,
                "description": "Mutual TLS: each client presents a certificate the directory lists (a Device per GP system, scheme or operator); what it may do follows its role. Refusals are 403 REC_FORBIDDEN, unlisted certificates 401 REC_UNAUTHORIZED."
            },
            "operation": [
                {"name": "process-message", "definition": "http://hl7.org/fhir/OperationDefinition/MessageHeader-process-message"},
                {"name": "timeline", "definition": "https://signpost.example.org/fhir/OperationDefinition/timeline"}
            ],
        }],
        "messaging": [{
            "documentation": "POST [base]/$process-message. X-Request-Id and X-Correlation-Id (UUIDs) are required and echoed; a repeated X-Request-Id gets 409 REC_CONFLICT (duplicate).",
            "supportedMessage": [
                {"mode": "receiver", "definition": fhir::DEF_REQUEST_REFERRAL},
                {"mode": "receiver", "definition": fhir::DEF_REQUEST_CANCELLED},
                {"mode": "receiver", "definition": fhir::DEF_RESPONSE_REFERRAL},
                {"mode": "sender", "definition": fhir::DEF_REQUEST_REFERRAL},
                {"mode": "sender", "definition": fhir::DEF_REQUEST_CANCELLED}
            ]
        }]
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_capability_statement_is_valid_r4() {
        let profiles = signpost_profiles::Profiles::load().unwrap();
        let outcome = profiles
            .validate(&capability_statement("2026-12-02T10:00:00Z"), None)
            .unwrap();
        assert!(outcome.is_valid(), "{:?}", outcome.issues);
    }
}
