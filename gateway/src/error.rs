//! The one place a failure becomes an HTTP answer: an OperationOutcome with the HTTP status,
//! the FHIR issue code and the NHS `REC_*` code (standards.md §1.10).
//!
//! Policy: the caller gets a short, fixed sentence that says what to fix and carries no patient
//! data and no internals; internal errors are logged with their whole cause chain under an error
//! id that the caller also sees.

use http::StatusCode;
use serde_json::{json, Value};

pub const HTTP_ERROR_CODES: &str = "https://fhir.nhs.uk/CodeSystem/http-error-codes";
pub const ISSUE_TYPE: &str = "http://hl7.org/fhir/issue-type";

/// A refusal or failure, ready to be answered.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub status: StatusCode,
    /// FHIR IssueType code (`invalid`, `required`, `duplicate`, ...).
    pub issue: &'static str,
    /// NHS http-error-codes code (`REC_BAD_REQUEST`, ...).
    pub rec: &'static str,
    /// What went wrong, for the caller. Never patient data.
    pub diagnostics: String,
    /// FHIRPath-ish locations of the problem.
    pub expression: Vec<String>,
    /// Further issues, already in OperationOutcome form (validation reports every problem).
    pub more: Vec<Value>,
}

impl ApiError {
    fn new(
        status: StatusCode,
        issue: &'static str,
        rec: &'static str,
        msg: impl Into<String>,
    ) -> Self {
        ApiError {
            status,
            issue,
            rec,
            diagnostics: msg.into(),
            expression: Vec::new(),
            more: Vec::new(),
        }
    }

    pub fn at(mut self, expression: impl Into<String>) -> Self {
        self.expression.push(expression.into());
        self
    }

    /// 400 `REC_BAD_REQUEST` with the given issue code.
    pub fn bad_request(issue: &'static str, msg: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, issue, "REC_BAD_REQUEST", msg)
    }
    pub fn required(msg: impl Into<String>) -> Self {
        Self::bad_request("required", msg)
    }
    pub fn invalid(msg: impl Into<String>) -> Self {
        Self::bad_request("invalid", msg)
    }
    pub fn value(msg: impl Into<String>) -> Self {
        Self::bad_request("value", msg)
    }
    pub fn structure(msg: impl Into<String>) -> Self {
        Self::bad_request("structure", msg)
    }
    pub fn invariant(msg: impl Into<String>) -> Self {
        Self::bad_request("invariant", msg)
    }
    /// 415: the body is not in a media type we read. BaRS has no 415 code; `REC_BAD_REQUEST`
    /// with `not-supported` is its nearest.
    pub fn unsupported_media_type(msg: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "not-supported",
            "REC_BAD_REQUEST",
            msg,
        )
    }
    pub fn not_acceptable(msg: impl Into<String>) -> Self {
        Self::new(
            StatusCode::NOT_ACCEPTABLE,
            "not-supported",
            "REC_NOT_ACCEPTABLE",
            msg,
        )
    }
    /// 401: a client certificate the directory does not list.
    pub fn unauthorized(msg: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "security",
            "REC_UNAUTHORIZED",
            msg,
        )
    }
    /// 403: a known client asking for what it may not do.
    pub fn forbidden(msg: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", "REC_FORBIDDEN", msg)
    }
    /// 429: the client is over its request rate.
    pub fn too_many_requests(msg: impl Into<String>) -> Self {
        Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "throttled",
            "REC_TOO_MANY_REQUESTS",
            msg,
        )
    }
    pub fn not_found(msg: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not-found", "REC_NOT_FOUND", msg)
    }
    pub fn method_not_allowed(msg: impl Into<String>) -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "not-supported",
            "REC_METHOD_NOT_ALLOWED",
            msg,
        )
    }
    /// 409 `REC_CONFLICT` + `duplicate`: reserved for a message already processed.
    pub fn duplicate(msg: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "duplicate", "REC_CONFLICT", msg)
    }
    /// 422: a well-formed message that Signpost does not support.
    pub fn not_supported(msg: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "not-supported",
            "REC_UNPROCESSABLE_ENTITY",
            msg,
        )
    }
    /// 422: a well-formed message that breaks a business rule (no route, a status change the
    /// lifecycle does not allow).
    pub fn business_rule(msg: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "business-rule",
            "REC_UNPROCESSABLE_ENTITY",
            msg,
        )
    }
    pub fn too_large(msg: impl Into<String>) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too-costly",
            "REC_UNPROCESSABLE_ENTITY",
            msg,
        )
    }
    pub fn timeout() -> Self {
        Self::new(
            StatusCode::REQUEST_TIMEOUT,
            "timeout",
            "REC_TIMEOUT",
            "The request was not processed within the time limit; retry with the same X-Request-Id",
        )
    }
    /// 503: the store cannot take the write now; nothing was accepted.
    pub fn unavailable(msg: impl Into<String>) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "transient",
            "REC_SERVICE_UNAVAILABLE",
            msg,
        )
    }
    /// 500, logging `cause` (with its chain) under an id the caller sees.
    pub fn internal(cause: &(dyn std::error::Error + 'static)) -> Self {
        let id = uuid::Uuid::new_v4();
        tracing::error!(error_id = %id, error = %signpost_bus::http::error_chain(cause), "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "exception",
            "REC_SERVER_ERROR",
            format!("Unexpected error; reference {id}"),
        )
    }

    pub fn to_operation_outcome(&self) -> Value {
        let mut issue = json!({
            "severity": "error",
            "code": self.issue,
            "details": {"coding": [{
                "system": HTTP_ERROR_CODES,
                "code": self.rec,
                "display": rec_display(self.rec),
            }]},
            "diagnostics": self.diagnostics,
        });
        if !self.expression.is_empty() {
            issue["expression"] = json!(self.expression);
        }
        let mut issues = vec![issue];
        issues.extend(self.more.iter().cloned());
        json!({
            "resourceType": "OperationOutcome",
            "meta": {"profile": ["https://fhir.hl7.org.uk/StructureDefinition/UKCore-OperationOutcome"]},
            "issue": issues,
        })
    }

    /// Every problem a validation found: 400 when any is structural or a bad value, else 422;
    /// the first issue is the one the status speaks for. `None` when the outcome is valid.
    pub fn from_outcome(outcome: signpost_profiles::Outcome) -> Option<Self> {
        let status = outcome.http_status()?;
        let outcome = outcome.sorted();
        let mut issues = outcome.issues.into_iter();
        let first = issues.next()?;
        Some(ApiError {
            status: StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST),
            issue: first.code,
            rec: first.rec(),
            diagnostics: first.diagnostics,
            expression: if first.expression.is_empty() {
                Vec::new()
            } else {
                vec![first.expression]
            },
            more: issues.map(|i| i.to_json()).collect(),
        })
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {} {}: {}",
            self.status.as_u16(),
            self.rec,
            self.issue,
            self.diagnostics
        )
    }
}

impl std::error::Error for ApiError {}

fn rec_display(code: &str) -> &'static str {
    match code {
        "REC_BAD_REQUEST" => "400: The request could not be processed.",
        "REC_UNAUTHORIZED" => "401: The user or system was not able to be authenticated.",
        "REC_FORBIDDEN" => "403: Access denied to resource.",
        "REC_NOT_FOUND" => "404: The resource requested was not found.",
        "REC_METHOD_NOT_ALLOWED" => "405: The method is not allowed.",
        "REC_NOT_ACCEPTABLE" => {
            "406: The receiver cannot produce content acceptable to the sender."
        }
        "REC_TIMEOUT" => "408: The receiver timed out.",
        "REC_CONFLICT" => "409: Conflict.",
        "REC_UNPROCESSABLE_ENTITY" => "422: Unprocessable entity.",
        "REC_TOO_MANY_REQUESTS" => "429: Too many requests.",
        "REC_SERVER_ERROR" => "500: Unexpected internal server error.",
        "REC_NOT_IMPLEMENTED" => "501: Not implemented.",
        "REC_SERVICE_UNAVAILABLE" => "503: The service is unavailable.",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_operation_outcome_carries_status_issue_and_rec_code() {
        let e = ApiError::duplicate("Already processed").at("Bundle.id");
        assert_eq!(e.status, StatusCode::CONFLICT);
        let oo = e.to_operation_outcome();
        assert_eq!(oo["resourceType"], "OperationOutcome");
        assert_eq!(oo["issue"][0]["code"], "duplicate");
        assert_eq!(
            oo["issue"][0]["details"]["coding"][0]["system"],
            HTTP_ERROR_CODES
        );
        assert_eq!(
            oo["issue"][0]["details"]["coding"][0]["code"],
            "REC_CONFLICT"
        );
        assert_eq!(oo["issue"][0]["expression"][0], "Bundle.id");
    }

    #[test]
    fn an_internal_error_shows_a_reference_not_its_cause() {
        let cause = std::io::Error::other("disk path /var/secret/x");
        let e = ApiError::internal(&cause);
        assert_eq!(e.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(!e.diagnostics.contains("secret"));
        assert!(e.diagnostics.starts_with("Unexpected error; reference "));
    }
}
