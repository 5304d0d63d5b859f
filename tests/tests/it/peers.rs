//! Signpost's validator against FHIR that others wrote, and Signpost's fixtures against a FHIR
//! reader that others wrote:
//! - the official HL7 R4 examples (`SIGNPOST_TEST_R4_EXAMPLES`, fetched by
//!   `tests/peers/fetch_r4_examples.sh`): accepted, except the ones HL7 got wrong, which are
//!   listed with their reasons in `r4-known-invalid.txt`;
//! - the UK Core R4 examples (`../shared/corpora/ukcore-examples`): valid R4, and each Patient
//!   gets the `sp-patient` verdict written down here;
//! - the SMART on FHIR Python client's R4 models (`SIGNPOST_TEST_PYTHON`, a venv with
//!   `tests/requirements.txt`): every valid fixture loads strictly.
//!
//! `cargo xtask test` sets both variables. Without them these tests fail rather than skip, so a
//! run that did not check against the peers never looks green.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use signpost_tests::env::{fixture, workspace};

use crate::validation::{errors, first_diagnostics, first_error, is_valid, run_validate};

/// The CLI takes many files at once; this many per run keeps command lines short.
const BATCH: usize = 400;

fn required_env(name: &str, what: &str) -> String {
    match std::env::var(name) {
        Ok(v) if !v.is_empty() => v,
        _ => panic!(
            "{name} is not set: it names {what}. Run the tests with `cargo xtask test`, which \
             prepares it, or set it by hand (see tests/tests/it/peers.rs)"
        ),
    }
}

fn json_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    files
}

fn name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// `r4-known-invalid.txt`: file names, each with `# why` after it.
fn known_invalid() -> BTreeSet<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/r4-known-invalid.txt");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut names = BTreeSet::new();
    for line in text.lines() {
        let (entry, why) = line.split_once('#').unwrap_or((line, ""));
        let entry = entry.trim();
        if entry.is_empty() {
            continue;
        }
        assert!(
            !why.trim().is_empty(),
            "r4-known-invalid.txt: {entry} needs a `# why it is invalid R4` comment"
        );
        assert!(
            names.insert(entry.to_owned()),
            "r4-known-invalid.txt lists {entry} twice"
        );
    }
    names
}

#[test]
fn hl7_r4_examples_are_accepted_except_those_known_to_be_invalid_r4() {
    let dir = PathBuf::from(required_env(
        "SIGNPOST_TEST_R4_EXAMPLES",
        "the folder of HL7 R4 examples written by tests/peers/fetch_r4_examples.sh",
    ));
    let files = json_files(&dir);
    assert!(
        files.len() >= 5000,
        "{}: {} examples; hl7.fhir.r4.examples@4.0.1 has 5,306 (rerun tests/peers/fetch_r4_examples.sh)",
        dir.display(),
        files.len()
    );
    let known = known_invalid();
    let mut accepted = 0usize;
    let mut rejected: BTreeMap<String, String> = BTreeMap::new();
    let mut problems = Vec::new();
    for batch in files.chunks(BATCH) {
        let run = run_validate(None, batch);
        if !matches!(run.code, Some(0 | 1)) {
            problems.push(format!(
                "signpost validate exited {:?} on a batch starting at {}: {}",
                run.code,
                name(&batch[0]),
                run.stderr.trim()
            ));
        }
        for f in batch {
            match run.outcome(f) {
                Some(oo) if is_valid(oo) => accepted += 1,
                Some(oo) => {
                    rejected.insert(name(f), first_diagnostics(oo));
                }
                None => problems.push(format!("{}: no OperationOutcome line", name(f))),
            }
        }
    }
    let total = files.len();
    println!(
        "HL7 R4 examples: {total}, accepted {accepted}, rejected {} ({} known to be invalid R4)",
        rejected.len(),
        rejected.keys().filter(|n| known.contains(*n)).count()
    );
    for (n, why) in &rejected {
        let tag = if known.contains(n) {
            "known"
        } else {
            "UNEXPECTED"
        };
        println!("  rejected ({tag}) {n}: {why}");
    }
    let missed: Vec<&String> = known
        .iter()
        .filter(|n| !rejected.contains_key(*n))
        .collect();
    if !missed.is_empty() {
        println!("  accepted although invalid R4 (the validator does not catch these): {missed:?}");
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    assert!(
        accepted * 100 >= total * 95,
        "only {accepted} of {total} HL7 R4 examples accepted (at least 95% must be)"
    );
    let unexpected: Vec<String> = rejected
        .iter()
        .filter(|(n, _)| !known.contains(*n))
        .map(|(n, why)| format!("{n}: {why}"))
        .collect();
    assert!(
        unexpected.is_empty(),
        "{} valid R4 example(s) rejected (not in r4-known-invalid.txt):\n  {}",
        unexpected.len(),
        unexpected.join("\n  ")
    );
}

/// Every Patient among the UK Core examples and what `--profile sp-patient` must say about it:
/// `[]` for valid, else the expressions of every error it must carry (the first error is one of
/// them). Most are examples of one extension on a bare Patient, with no NHS number, name or
/// birth date; BabyPatient's NHS number 9912003890 fails Modulus 11 (its check digit would be 6).
const UKCORE_PATIENTS: &[(&str, &[&str])] = &[
    ("UKCore-Patient-RichardSmith-Example.json", &[]),
    (
        "UKCore-Patient-BabyPatient-Example.json",
        &["Patient.identifier[0].value"],
    ),
    (
        "UKCore-Patient-Sn-Makaton-Example.json",
        &["Patient.identifier", "Patient.birthDate"],
    ),
    (
        "UKCore-Patient-Sn-MultipleLanguages-Example.json",
        &["Patient.identifier", "Patient.birthDate"],
    ),
    (
        "UKCore-Patient-Sn-SingleLanguage-Example.json",
        &["Patient.identifier", "Patient.birthDate"],
    ),
    (
        "UKCore-Patient-Sn-Photo-Example.json",
        &["Patient.identifier", "Patient.name", "Patient.birthDate"],
    ),
    (
        "Extension-UKCore-NHSNumberUnavailableReason-Example.json",
        &["Patient.identifier", "Patient.birthDate"],
    ),
    // An identifier carrying only the verification-status extension: no system, no value.
    (
        "Extension-UKCore-NHSNumberVerificationStatus-Example.json",
        &["Patient.identifier", "Patient.name", "Patient.birthDate"],
    ),
    (
        "Extension-UKCore-AddressKey-Example.json",
        &["Patient.identifier", "Patient.name", "Patient.birthDate"],
    ),
    (
        "Extension-UKCore-BirthPlace-Example.json",
        &["Patient.identifier", "Patient.name", "Patient.birthDate"],
    ),
    (
        "Extension-UKCore-BirthSex-Example.json",
        &["Patient.identifier", "Patient.name", "Patient.birthDate"],
    ),
    (
        "Extension-UKCore-BirthTime-Example.json",
        &["Patient.identifier", "Patient.name", "Patient.birthDate"],
    ),
    (
        "Extension-UKCore-CadavericDonor-Example.json",
        &["Patient.identifier", "Patient.name", "Patient.birthDate"],
    ),
    (
        "Extension-UKCore-ContactPreference-Example.json",
        &["Patient.identifier", "Patient.name", "Patient.birthDate"],
    ),
    (
        "Extension-UKCore-ContactRank-Example.json",
        &["Patient.identifier", "Patient.name", "Patient.birthDate"],
    ),
    (
        "Extension-UKCore-CopyCorrespondenceIndicator-Example.json",
        &["Patient.identifier", "Patient.name", "Patient.birthDate"],
    ),
    (
        "Extension-UKCore-DeathNotificationStatus-Example.json",
        &["Patient.identifier", "Patient.name", "Patient.birthDate"],
    ),
    (
        "Extension-UKCore-EthnicCategory-Example.json",
        &["Patient.identifier", "Patient.name", "Patient.birthDate"],
    ),
    (
        "Extension-UKCore-InterpreterRequired-Example.json",
        &["Patient.identifier", "Patient.name", "Patient.birthDate"],
    ),
    (
        "Extension-UKCore-MedicalApplianceSupplier-Example.json",
        &["Patient.identifier", "Patient.name", "Patient.birthDate"],
    ),
    (
        "Extension-UKCore-OtherContactSystem-Example.json",
        &["Patient.identifier", "Patient.name", "Patient.birthDate"],
    ),
    (
        "Extension-UKCore-OverseasVisitorChargingCategory-Example.json",
        &["Patient.identifier", "Patient.name", "Patient.birthDate"],
    ),
    (
        "Extension-UKCore-PreferredDispenserOrganization-Example.json",
        &["Patient.identifier", "Patient.name", "Patient.birthDate"],
    ),
    (
        "Extension-UKCore-ResidentialStatus-Example.json",
        &["Patient.identifier", "Patient.name", "Patient.birthDate"],
    ),
];

fn ukcore_dir() -> PathBuf {
    let dir = workspace().join("../shared/corpora/ukcore-examples");
    assert!(
        dir.is_dir(),
        "{}: the UK Core examples corpus (shared/corpora/ukcore-examples) is missing",
        dir.display()
    );
    dir
}

#[test]
fn uk_core_examples_are_valid_r4() {
    let files = json_files(&ukcore_dir());
    assert!(
        files.len() >= 200,
        "{} UK Core examples; the corpus has 215",
        files.len()
    );
    let mut rejected = Vec::new();
    for batch in files.chunks(BATCH) {
        let run = run_validate(None, batch);
        for f in batch {
            match run.outcome(f) {
                Some(oo) if is_valid(oo) => {}
                Some(oo) => rejected.push(format!("{}: {}", name(f), first_diagnostics(oo))),
                None => rejected.push(format!(
                    "{}: no OperationOutcome line ({:?})",
                    name(f),
                    run.code
                )),
            }
        }
        if rejected.is_empty() {
            assert_eq!(run.code, Some(0), "{}", run.stderr);
        }
    }
    println!(
        "UK Core examples: {}, rejected {}",
        files.len(),
        rejected.len()
    );
    assert!(
        rejected.is_empty(),
        "UK Core examples rejected as R4:\n  {}",
        rejected.join("\n  ")
    );
}

#[test]
fn uk_core_patients_get_the_sp_patient_verdicts_written_down_here() {
    let dir = ukcore_dir();
    let patients: BTreeSet<String> = json_files(&dir)
        .iter()
        .filter(|f| {
            let v: serde_json::Value =
                serde_json::from_slice(&std::fs::read(f).unwrap()).unwrap_or_default();
            v["resourceType"] == "Patient"
        })
        .map(|f| name(f))
        .collect();
    let listed: BTreeSet<String> = UKCORE_PATIENTS
        .iter()
        .map(|(n, _)| (*n).to_owned())
        .collect();
    assert_eq!(
        patients, listed,
        "every UK Core Patient example has its expected verdict in UKCORE_PATIENTS"
    );
    let files: Vec<PathBuf> = UKCORE_PATIENTS.iter().map(|(n, _)| dir.join(n)).collect();
    let run = run_validate(Some("sp-patient"), &files);
    assert_eq!(
        run.code,
        Some(1),
        "some UK Core Patients fail sp-patient: {}",
        run.stderr
    );
    let mut failures = Vec::new();
    for (n, want) in UKCORE_PATIENTS {
        let Some(oo) = run.outcome(&dir.join(n)) else {
            failures.push(format!("{n}: no OperationOutcome line"));
            continue;
        };
        let got: Vec<String> = errors(oo)
            .iter()
            .filter_map(|i| i["expression"][0].as_str().map(str::to_owned))
            .collect();
        if want.is_empty() {
            if !is_valid(oo) {
                failures.push(format!(
                    "{n}: expected valid, got {}",
                    first_diagnostics(oo)
                ));
            }
            continue;
        }
        match first_error(oo) {
            None => failures.push(format!("{n}: expected invalid ({want:?}), got valid")),
            Some((_, _, first)) => {
                if !first.as_deref().is_some_and(|f| want.contains(&f)) {
                    failures.push(format!(
                        "{n}: first error at {first:?}, expected one of {want:?} ({})",
                        first_diagnostics(oo)
                    ));
                }
                for w in *want {
                    if !got.iter().any(|g| g == w) {
                        failures.push(format!("{n}: no error at {w} (errors at {got:?})"));
                    }
                }
            }
        }
        if oo.to_string().contains("9912003890") {
            failures.push(format!("{n}: the OperationOutcome repeats the NHS number"));
        }
    }
    // BabyPatient's only fault is its check digit: a bad NHS number is 400 `value`.
    let baby = run.outcome(&dir.join("UKCore-Patient-BabyPatient-Example.json"));
    if let Some(oo) = baby {
        let f = first_error(oo);
        if f.as_ref().map(|(c, r, _)| (c.as_str(), r.as_str()))
            != Some(("value", "REC_BAD_REQUEST"))
        {
            failures.push(format!(
                "BabyPatient: first error {f:?}, expected value REC_BAD_REQUEST"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn every_valid_fixture_loads_in_the_python_fhirclient_r4_models() {
    let python = required_env(
        "SIGNPOST_TEST_PYTHON",
        "a Python with tests/requirements.txt installed (fhirclient)",
    );
    let script = workspace().join("tests/peers/load_fhirclient.py");
    let out = Command::new(&python)
        .arg(&script)
        .arg(fixture(""))
        .output()
        .unwrap_or_else(|e| panic!("running {python} {}: {e}", script.display()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    let failed: Vec<&str> = stdout.lines().filter(|l| l.starts_with("FAIL")).collect();
    let ok = stdout.lines().filter(|l| l.starts_with("OK ")).count();
    assert!(
        out.status.success() && failed.is_empty(),
        "fhirclient could not load every valid fixture (exit {:?}):\n{}\n{stderr}",
        out.status.code(),
        failed.join("\n")
    );
    let expected = std::fs::read_dir(fixture("gp-system")).unwrap().count();
    assert!(
        ok >= expected + 2 * 7,
        "only {ok} fixtures loaded; expected gp-system/*.json and profiles/*/valid/*.json"
    );
}
