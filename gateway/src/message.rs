//! Parsing an inbound `$process-message` body into a [`Message`]: the edge where wire JSON
//! becomes a message the pipeline can act on. Everything a message needs to be read (a Bundle of
//! type `message`, an id, the MessageHeader first, a known event, a focus that resolves) is
//! checked here, once; the pipeline then works on the parsed form.

use serde_json::Value;

use crate::error::ApiError;
use crate::fhir::{self, str_at, type_of, Entries};

/// What the MessageHeader asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// `servicerequest-request`: a new referral (reason `new`) or a cancellation.
    Request,
    /// `servicerequest-response`: a scheme's update on a referral.
    Response,
    /// A coded entry added to a GP record (Signpost's record-event code system).
    RecordEvent,
}

/// A parsed message Bundle.
pub struct Message {
    pub bundle: Value,
    pub id: String,
    pub event: Event,
    /// `MessageHeader.reason` code (`new`, `update`, `delete`) when given.
    pub reason: Option<String>,
}

impl Message {
    pub fn entries(&self) -> Entries<'_> {
        Entries::of(&self.bundle)
    }

    pub fn header(&self) -> &Value {
        // `parse` guarantees the first entry is a MessageHeader.
        self.entries().first().unwrap_or(&Value::Null)
    }

    /// The focus resource, which `parse` guarantees resolves.
    pub fn focus(&self) -> (Option<&str>, &Value) {
        let header = self.header();
        header
            .pointer("/focus/0")
            .and_then(|f| self.entries().resolve(f))
            .unwrap_or((None, &Value::Null))
    }
}

/// Parse and check the envelope-level rules of a message Bundle.
pub fn parse(body: &[u8]) -> Result<Message, ApiError> {
    let bundle: Value = serde_json::from_slice(body)
        .map_err(|_| ApiError::structure("The body is not valid JSON"))?;
    if type_of(&bundle) != Some("Bundle") {
        return Err(ApiError::invalid("The body must be a FHIR Bundle").at("Bundle"));
    }
    if str_at(&bundle, "/type") != Some("message") {
        return Err(
            ApiError::invalid("Bundle.type must be 'message' for $process-message")
                .at("Bundle.type"),
        );
    }
    let id = str_at(&bundle, "/id")
        .filter(|s| !s.is_empty())
        .ok_or_else(|| ApiError::required("Bundle.id is required").at("Bundle.id"))?
        .to_owned();
    let entries = Entries::of(&bundle);
    let header = entries
        .first()
        .filter(|r| type_of(r) == Some("MessageHeader"))
        .ok_or_else(|| {
            ApiError::invalid("The first entry of a message Bundle must be its MessageHeader")
                .at("Bundle.entry[0].resource")
        })?;
    let system = str_at(header, "/eventCoding/system").unwrap_or("");
    let code = str_at(header, "/eventCoding/code").unwrap_or("");
    if system.is_empty() || code.is_empty() {
        return Err(
            ApiError::required("MessageHeader.eventCoding needs a system and a code")
                .at("MessageHeader.eventCoding"),
        );
    }
    let event = match (system, code) {
        (fhir::EVENTS_BARS | fhir::EVENTS_BARS_ALT, "servicerequest-request") => Event::Request,
        (fhir::EVENTS_BARS | fhir::EVENTS_BARS_ALT, "servicerequest-response") => Event::Response,
        (crate::record_event::RECORD_EVENTS, crate::record_event::CODED_ENTRY_ADDED) => Event::RecordEvent,
        _ => {
            return Err(ApiError::not_supported(format!(
                "Event {system}|{code} is not supported; see GET /fhir/metadata for the supported messages"
            ))
            .at("MessageHeader.eventCoding"))
        }
    };
    let focus = header.pointer("/focus/0").ok_or_else(|| {
        ApiError::required("MessageHeader.focus is required").at("MessageHeader.focus")
    })?;
    if entries.resolve(focus).is_none() {
        return Err(ApiError::invariant(
            "MessageHeader.focus does not resolve to a resource in the Bundle",
        )
        .at("MessageHeader.focus"));
    }
    let reason = header
        .pointer("/reason/coding")
        .and_then(Value::as_array)
        .and_then(|codings| {
            codings.iter().find_map(|c| {
                let s = str_at(c, "/system")?;
                (s == fhir::REASON_BARS || s.ends_with("/message-reason-servicerequest"))
                    .then(|| str_at(c, "/code"))
                    .flatten()
            })
        })
        .map(str::to_owned);
    Ok(Message {
        bundle,
        id,
        event,
        reason,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn msg(header: Value) -> Vec<u8> {
        json!({"resourceType": "Bundle", "id": "b1", "type": "message", "entry": [
            {"fullUrl": "urn:uuid:h", "resource": header},
            {"fullUrl": "urn:uuid:sr", "resource": {"resourceType": "ServiceRequest"}}
        ]})
        .to_string()
        .into_bytes()
    }

    fn header(code: &str) -> Value {
        json!({"resourceType": "MessageHeader",
               "eventCoding": {"system": fhir::EVENTS_BARS, "code": code},
               "reason": {"coding": [{"system": fhir::REASON_BARS, "code": "new"}]},
               "focus": [{"reference": "urn:uuid:sr"}]})
    }

    #[test]
    fn a_referral_request_parses_with_its_reason_and_focus() {
        let m = parse(&msg(header("servicerequest-request"))).unwrap();
        assert_eq!(m.event, Event::Request);
        assert_eq!(m.reason.as_deref(), Some("new"));
        assert_eq!(m.focus().1["resourceType"], "ServiceRequest");
    }

    #[test]
    fn each_envelope_fault_has_its_own_issue_code() {
        assert_eq!(parse(b"nope").err().unwrap().issue, "structure");
        assert_eq!(
            parse(b"{\"resourceType\":\"Patient\"}")
                .err()
                .unwrap()
                .issue,
            "invalid"
        );
        let mut h = header("servicerequest-request");
        h["focus"][0]["reference"] = json!("urn:uuid:missing");
        assert_eq!(parse(&msg(h)).err().unwrap().issue, "invariant");
        let e = parse(&msg(header("booking-request"))).err().unwrap();
        assert_eq!((e.status.as_u16(), e.issue), (422, "not-supported"));
    }
}
