//! A validation problem, and the OperationOutcome it becomes.

use serde_json::{json, Value};

pub const HTTP_ERROR_CODES: &str = "https://fhir.nhs.uk/CodeSystem/http-error-codes";

/// What kind of rule was broken, which decides the answer: structure and bad values are 400
/// `REC_BAD_REQUEST`; profile and business rules 422 `REC_UNPROCESSABLE_ENTITY` (standards.md
/// §7; a bad NHS number is 400 `value` by §8.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Not valid FHIR R4.
    Structure,
    /// A value that cannot be right whatever the profile (an NHS number failing Modulus 11).
    Value,
    /// Valid R4 that does not meet a Signpost profile.
    Profile,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Severity {
    Error,
    Warning,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issue {
    pub severity: Severity,
    pub class: Class,
    /// FHIR IssueType code.
    pub code: &'static str,
    /// Where: `Bundle.entry[2].resource.subject`.
    pub expression: String,
    /// What is wrong, in words, without patient data.
    pub diagnostics: String,
}

impl Issue {
    pub fn new(
        class: Class,
        code: &'static str,
        expression: impl Into<String>,
        diagnostics: impl Into<String>,
    ) -> Self {
        Issue {
            severity: Severity::Error,
            class,
            code,
            expression: expression.into(),
            diagnostics: diagnostics.into(),
        }
    }
    pub fn structure(
        code: &'static str,
        expression: impl Into<String>,
        diagnostics: impl Into<String>,
    ) -> Self {
        Self::new(Class::Structure, code, expression, diagnostics)
    }
    pub fn profile(
        code: &'static str,
        expression: impl Into<String>,
        diagnostics: impl Into<String>,
    ) -> Self {
        Self::new(Class::Profile, code, expression, diagnostics)
    }

    pub fn rec(&self) -> &'static str {
        match self.class {
            Class::Structure | Class::Value => "REC_BAD_REQUEST",
            Class::Profile => "REC_UNPROCESSABLE_ENTITY",
        }
    }

    pub fn to_json(&self) -> Value {
        let mut issue = json!({
            "severity": match self.severity { Severity::Error => "error", Severity::Warning => "warning" },
            "code": self.code,
            "details": {"coding": [{"system": HTTP_ERROR_CODES, "code": self.rec()}]},
            "diagnostics": self.diagnostics,
        });
        if !self.expression.is_empty() {
            issue["expression"] = json!([self.expression]);
        }
        issue
    }
}

/// The result of a validation.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Outcome {
    pub issues: Vec<Issue>,
}

impl Outcome {
    pub fn of(issues: Vec<Issue>) -> Self {
        Outcome { issues }
    }

    pub fn is_valid(&self) -> bool {
        !self.issues.iter().any(|i| i.severity == Severity::Error)
    }

    /// 400 when any error is structural or a bad value, else 422; `None` when valid.
    pub fn http_status(&self) -> Option<u16> {
        let errors = self.issues.iter().filter(|i| i.severity == Severity::Error);
        let mut status = None;
        for i in errors {
            match i.class {
                Class::Structure | Class::Value => return Some(400),
                Class::Profile => status = Some(422),
            }
        }
        status
    }

    /// Errors first: structure and value problems before profile ones, so the first issue says
    /// what the HTTP status says.
    pub fn sorted(mut self) -> Self {
        self.issues.sort_by_key(|i| match (&i.severity, i.class) {
            (Severity::Error, Class::Structure | Class::Value) => 0,
            (Severity::Error, Class::Profile) => 1,
            (Severity::Warning, _) => 2,
        });
        self
    }

    pub fn to_operation_outcome(&self) -> Value {
        let issues: Vec<Value> = if self.issues.is_empty() {
            vec![
                json!({"severity": "information", "code": "informational", "diagnostics": "No problems found"}),
            ]
        } else {
            self.issues.iter().map(Issue::to_json).collect()
        };
        json!({
            "resourceType": "OperationOutcome",
            "meta": {"profile": ["https://fhir.hl7.org.uk/StructureDefinition/UKCore-OperationOutcome"]},
            "issue": issues,
        })
    }
}
