//! `signpost validate`: the gateway's message checks, offline, one OperationOutcome per file.
//!
//! Profile ids are the fixed names in design.md. This build checks `sp-referral-message` (the
//! envelope rules of `$process-message` and the referral rules: SNOMED code, Patient with a valid
//! NHS number, sending Organization with an ODS code) and the envelope rules of
//! `sp-scheme-response`; the other profiles are named but not yet checked, and say so.

use serde_json::{json, Value};

use crate::error::ApiError;
use crate::message::{self, Event};
use crate::pipeline::referral_parts;

pub const PROFILES: &[&str] = &[
    "sp-referral-message",
    "sp-referral",
    "sp-patient",
    "sp-task",
    "sp-scheme-response",
    "sp-outcome-letter",
];

/// Check `body` against `profile` (or the profile its event implies). `Ok` carries an
/// informational OperationOutcome, `Err` the error one.
pub fn validate(profile: Option<&str>, body: &[u8]) -> Result<Value, ApiError> {
    if let Some(p) = profile {
        if !PROFILES.contains(&p) {
            return Err(ApiError::not_supported(format!(
                "Unknown profile {p:?}; known: {}",
                PROFILES.join(", ")
            )));
        }
        if !matches!(p, "sp-referral-message" | "sp-scheme-response") {
            return Err(ApiError::not_supported(format!(
                "Profile {p} is not checked by this build yet"
            )));
        }
    }
    let msg = message::parse(body)?;
    match (profile, msg.event) {
        (Some("sp-scheme-response"), Event::Request) => {
            return Err(
                ApiError::invalid("A scheme response needs event servicerequest-response")
                    .at("MessageHeader.eventCoding"),
            )
        }
        (Some("sp-referral-message"), Event::Response) => {
            return Err(
                ApiError::invalid("A referral message needs event servicerequest-request")
                    .at("MessageHeader.eventCoding"),
            )
        }
        (_, Event::Request) => {
            referral_parts(&msg)?;
        }
        (_, Event::Response) => {}
    }
    Ok(json!({
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "information", "code": "informational", "diagnostics": "No problems found"}]
    }))
}
