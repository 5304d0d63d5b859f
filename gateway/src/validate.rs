//! `signpost validate [--profile ID] FILE...`: the same checks as `$validate`, offline, for
//! integrators. One line per file, `FILE: <OperationOutcome>`; the exit code is 0 when every
//! file is valid, 1 when any is not (a file that is not JSON is simply invalid), 2 when a file
//! cannot be read or the profile is unknown.

use std::io::Write;

use signpost_profiles::{Profiles, PROFILES};

pub const EXIT_VALID: u8 = 0;
pub const EXIT_INVALID: u8 = 1;
pub const EXIT_TROUBLE: u8 = 2;

/// Validate `files` and write the report to `out`; returns the exit code.
pub fn run(profile: Option<&str>, files: &[String], out: &mut impl Write) -> u8 {
    if let Some(p) = profile {
        if signpost_profiles::signpost::find(p).is_none() {
            let known: Vec<&str> = PROFILES.iter().map(|p| p.id).collect();
            let _ = writeln!(out, "unknown profile {p:?}; known: {}", known.join(", "));
            return EXIT_TROUBLE;
        }
    }
    let profiles = match Profiles::load() {
        Ok(p) => p,
        Err(e) => {
            let _ = writeln!(out, "cannot compile the profiles: {e}");
            return EXIT_TROUBLE;
        }
    };
    let mut code = EXIT_VALID;
    for file in files {
        let bytes = match std::fs::read(file) {
            Ok(b) => b,
            Err(e) => {
                let oo = crate::error::ApiError::structure(format!(
                    "The file cannot be read: {}",
                    e.kind()
                ))
                .to_operation_outcome();
                let _ = writeln!(out, "{file}: {oo}");
                code = EXIT_TROUBLE;
                continue;
            }
        };
        // The profile was checked above, so this cannot be an unknown-profile error.
        let Ok(outcome) = profiles.validate_bytes(&bytes, profile) else {
            continue;
        };
        if !outcome.is_valid() && code == EXIT_VALID {
            code = EXIT_INVALID;
        }
        let _ = writeln!(out, "{file}: {}", outcome.sorted().to_operation_outcome());
    }
    code
}
