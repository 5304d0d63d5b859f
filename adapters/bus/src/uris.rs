//! Identifier systems and code systems used on both sides of the bus.

/// Where Signpost's own canonical URLs live (profiles, code systems, extensions, identifiers).
pub const SIGNPOST_BASE: &str = "https://signpost.example.org/fhir";
/// Signpost's identifier system for referrals (ServiceRequest.identifier).
pub const REFERRAL_ID_SYSTEM: &str = "https://signpost.example.org/fhir/Id/referral";
/// Extension on a HealthcareService naming a practice (by ODS code) the scheme serves.
pub const SERVED_PRACTICE_EXT: &str =
    "https://signpost.example.org/fhir/StructureDefinition/served-practice";

pub const NHS_NUMBER: &str = "https://fhir.nhs.uk/Id/nhs-number";
pub const ODS_ORGANIZATION: &str = "https://fhir.nhs.uk/Id/ods-organization-code";
pub const SDS_USER: &str = "https://fhir.nhs.uk/Id/sds-user-id";
pub const DOS_SERVICE: &str = "https://fhir.nhs.uk/Id/dos-service-id";
pub const ENDPOINT_CONNECTION_TYPE: &str =
    "http://terminology.hl7.org/CodeSystem/endpoint-connection-type";

/// NHS identifier systems are `https://fhir.nhs.uk/Id/...`; some BaRS examples write `/id/`.
/// Accept both on input (standards.md §1.13); this gives the canonical form.
pub fn canonical_nhs_system(system: &str) -> String {
    match system.strip_prefix("https://fhir.nhs.uk/id/") {
        Some(rest) => format!("https://fhir.nhs.uk/Id/{rest}"),
        None => system.to_owned(),
    }
}

/// Whether `system` names `wanted`, allowing the lowercase `id` spelling.
pub fn is_system(system: &str, wanted: &str) -> bool {
    system == wanted || canonical_nhs_system(system) == wanted
}
