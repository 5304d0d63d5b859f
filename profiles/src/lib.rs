//! FHIR validation for Signpost: HL7's R4 JSON Schema for base structure, the checks that close
//! its gaps, and the Signpost social prescribing profiles (JSON Schema beside Rust rules), all
//! compiled once, offline, and shared.
//!
//! # Layout
//! - [`issue`]: what a problem is ([`Issue`]) and the OperationOutcome it becomes.
//! - [`base`]: base R4: the vendored schema (`profiles/r4/fhir.schema.json`), one compiled
//!   validator per resource type, nested resources validated on their own, and the R4 rules the
//!   schema cannot say (required primitives, Bundle invariants, real calendar dates).
//! - [`signpost`]: the Signpost profiles (`profiles/signpost/*.schema.json`) and their rules
//!   (NHS number check digit, references resolving in the Bundle, resource counts, ...).
//! - [`path`]: FHIRPath-style locations (`Bundle.entry[2].resource.subject`).
//!
//! This crate says what is wrong and where. Whether that is a 400 or a 422 follows from the
//! issue's class; answering HTTP is the gateway's job.

#[cfg(test)]
mod annotations;
pub mod base;
pub mod issue;
pub mod path;
pub mod signpost;

use serde_json::Value;

pub use issue::{Class, Issue, Outcome};
pub use signpost::{ProfileInfo, PROFILES};

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("profile {0}: {1}")]
    Schema(String, String),
}

/// Every schema, compiled.
pub struct Profiles {
    base: base::Base,
    signpost: signpost::Signpost,
}

/// A profile named by the caller that Signpost does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown profile {0:?}")]
pub struct UnknownProfile(pub String);

impl Profiles {
    /// Compile the base schema and every Signpost profile. No network access, ever.
    pub fn load() -> Result<Self, LoadError> {
        Ok(Profiles {
            base: base::Base::load()?,
            signpost: signpost::Signpost::load()?,
        })
    }

    /// Validate JSON bytes: base R4, then `profile` if given, else every known profile in
    /// `meta.profile`. Bytes that are not JSON are simply invalid.
    pub fn validate_bytes(
        &self,
        bytes: &[u8],
        profile: Option<&str>,
    ) -> Result<Outcome, UnknownProfile> {
        match serde_json::from_slice::<Value>(bytes) {
            Ok(v) => self.validate(&v, profile),
            Err(_) => {
                self.profile(profile)?;
                Ok(Outcome::of(vec![Issue::structure(
                    "structure",
                    "",
                    "The content is not valid JSON",
                )]))
            }
        }
    }

    /// Validate a resource: base R4, then `profile` (an id or canonical URL) if given, else
    /// every Signpost profile its `meta.profile` names.
    pub fn validate(
        &self,
        resource: &Value,
        profile: Option<&str>,
    ) -> Result<Outcome, UnknownProfile> {
        let explicit = self.profile(profile)?;
        let mut issues = self.base.validate(resource);
        let claimed: Vec<&'static ProfileInfo> = match explicit {
            Some(p) => vec![p],
            None => resource
                .pointer("/meta/profile")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .filter_map(signpost::find)
                .collect(),
        };
        for p in claimed {
            issues.extend(self.signpost.validate(p, resource));
        }
        Ok(Outcome::of(issues))
    }

    /// Check a resource against one Signpost profile only (no base pass).
    pub fn check_profile(&self, profile: &'static ProfileInfo, resource: &Value) -> Vec<Issue> {
        self.signpost.validate(profile, resource)
    }

    /// Base R4 only.
    pub fn check_base(&self, resource: &Value) -> Vec<Issue> {
        self.base.validate(resource)
    }

    fn profile(
        &self,
        profile: Option<&str>,
    ) -> Result<Option<&'static ProfileInfo>, UnknownProfile> {
        match profile {
            None => Ok(None),
            Some(p) => signpost::find(p)
                .map(Some)
                .ok_or_else(|| UnknownProfile(p.to_owned())),
        }
    }
}
