//! Validation seen from outside: `signpost validate` and `POST /fhir/$validate` on the profile
//! fixtures (`fixtures/profiles/`, whose `manifest.json` says the verdict each must get and,
//! for the invalid ones, the issue code, REC code and expression of the first error), and the
//! rules every OperationOutcome keeps: `REC_*` codes, FHIRPath-style expressions, and no
//! patient data in diagnostics.
//!
//! Not here: the engine's own unit tests (`profiles/`), and FHIR material and readers written by
//! others (`peers.rs`, which uses the helpers below to run the CLI).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{json, Value};
use signpost_tests::client::Reply;
use signpost_tests::env::{fixture, signpost_bin, TempDir};

use crate::helpers::{new_id, Gateway, World};

pub const HTTP_ERROR_CODES: &str = "https://fhir.nhs.uk/CodeSystem/http-error-codes";
pub const CANONICAL_BASE: &str = "https://signpost.example.org/fhir/StructureDefinition/";

/// The profiles the fixtures cover (sp-practitioner has no fixtures of its own; it is checked
/// through the referral message's Practitioners and in `every_profile_id_is_known_to_the_cli`).
const FIXTURE_PROFILES: [&str; 7] = [
    "sp-referral-message",
    "sp-referral",
    "sp-patient",
    "sp-organization",
    "sp-task",
    "sp-scheme-response",
    "sp-outcome-letter",
];

/// One entry of `fixtures/profiles/manifest.json`.
#[derive(Debug, Clone)]
pub struct Case {
    pub file: String,
    pub profile: Option<String>,
    pub valid: bool,
    pub issue: Option<String>,
    pub rec: Option<String>,
    pub expression: Option<String>,
}

impl Case {
    pub fn path(&self) -> PathBuf {
        fixture(&self.file)
    }
}

fn opt_str(v: &Value) -> Option<String> {
    v.as_str().map(str::to_owned)
}

pub fn manifest() -> Vec<Case> {
    let path = fixture("profiles/manifest.json");
    let text = std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (written by fixtures/profiles/make_profile_fixtures.py)",
            path.display()
        )
    });
    let list: Value = serde_json::from_slice(&text).expect("the manifest is JSON");
    list.as_array()
        .expect("the manifest is a list")
        .iter()
        .map(|e| Case {
            file: e["file"].as_str().expect("file").to_owned(),
            profile: opt_str(&e["profile"]),
            valid: e["valid"].as_bool().expect("valid"),
            issue: opt_str(&e["issue"]),
            rec: opt_str(&e["rec"]),
            expression: opt_str(&e["expression"]),
        })
        .collect()
}

/// What one `signpost validate` run said.
#[derive(Debug)]
pub struct CliRun {
    pub code: Option<i32>,
    /// The OperationOutcome printed for each file, by the file name as given.
    pub outcomes: HashMap<String, Value>,
    pub stdout: String,
    pub stderr: String,
}

impl CliRun {
    pub fn outcome(&self, file: &Path) -> Option<&Value> {
        self.outcomes.get(file.to_string_lossy().as_ref())
    }
}

/// `signpost validate [--profile P] FILES...`, its exit code and one OperationOutcome per line.
pub fn run_validate(profile: Option<&str>, files: &[PathBuf]) -> CliRun {
    let mut cmd = Command::new(signpost_bin());
    cmd.arg("validate");
    if let Some(p) = profile {
        cmd.args(["--profile", p]);
    }
    cmd.args(files);
    let out = cmd.output().unwrap_or_else(|e| {
        panic!(
            "running {}: {e} (build it with cargo build --bins)",
            signpost_bin().display()
        )
    });
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut outcomes = HashMap::new();
    for line in stdout.lines() {
        // `FILE: {json}`; the fixtures' paths have no ": {" in them.
        if let Some((file, json)) = line.split_once(": {") {
            if let Ok(v) = serde_json::from_str::<Value>(&format!("{{{json}")) {
                outcomes.insert(file.to_owned(), v);
            }
        }
    }
    CliRun {
        code: out.status.code(),
        outcomes,
        stdout,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The issues with severity `error` or `fatal`.
pub fn errors(oo: &Value) -> Vec<&Value> {
    oo["issue"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|i| matches!(i["severity"].as_str(), Some("error" | "fatal")))
        .collect()
}

/// A valid verdict: an OperationOutcome with no `error` or `fatal` issue.
pub fn is_valid(oo: &Value) -> bool {
    oo["resourceType"] == "OperationOutcome" && errors(oo).is_empty()
}

/// `(issue code, REC code, expression[0])` of an issue.
pub fn summary(issue: &Value) -> (String, String, Option<String>) {
    (
        issue["code"].as_str().unwrap_or("").to_owned(),
        issue["details"]["coding"][0]["code"]
            .as_str()
            .unwrap_or("")
            .to_owned(),
        opt_str(&issue["expression"][0]),
    )
}

/// The first error, summarised; `None` for a valid outcome.
pub fn first_error(oo: &Value) -> Option<(String, String, Option<String>)> {
    errors(oo).first().map(|i| summary(i))
}

/// The first error's diagnostics (and where), on one line.
pub fn first_diagnostics(oo: &Value) -> String {
    match errors(oo).first() {
        Some(i) => format!(
            "{} [{} {} at {}]",
            i["diagnostics"]
                .as_str()
                .unwrap_or("")
                .lines()
                .next()
                .unwrap_or(""),
            i["code"].as_str().unwrap_or(""),
            i["details"]["coding"][0]["code"].as_str().unwrap_or(""),
            i["expression"][0].as_str().unwrap_or("-"),
        ),
        None => "valid".to_owned(),
    }
}

/// `Bundle.entry[2].resource.subject`: a resource type, then dotted element names, each with
/// optional `[n]` indexes.
pub fn expression_is_well_formed(expr: &str) -> bool {
    let mut parts = expr.split('.');
    let head = parts.next().unwrap_or("");
    head.starts_with(|c: char| c.is_ascii_uppercase())
        && head.chars().all(|c| c.is_ascii_alphanumeric())
        && parts.all(element_is_well_formed)
}

/// `name`, `_name`, `name[0]`, `name[0][1]`.
fn element_is_well_formed(part: &str) -> bool {
    let (name, mut rest) = part.split_at(part.find('[').unwrap_or(part.len()));
    let name_ok = name.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    while let Some(r) = rest.strip_prefix('[') {
        let Some((digits, after)) = r.split_once(']') else {
            return false;
        };
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return false;
        }
        rest = after;
    }
    name_ok && rest.is_empty()
}

/// What is wrong with one error issue's shape (REC coding, code, diagnostics, expression).
pub fn error_shape_problems(issue: &Value, need_expression: bool) -> Vec<String> {
    let mut p = Vec::new();
    if issue["code"].as_str().is_none_or(str::is_empty) {
        p.push(format!("no issue code: {issue}"));
    }
    if issue["details"]["coding"][0]["system"] != HTTP_ERROR_CODES {
        p.push(format!(
            "details.coding[0].system is not {HTTP_ERROR_CODES}: {issue}"
        ));
    }
    let rec = issue["details"]["coding"][0]["code"].as_str().unwrap_or("");
    if !matches!(rec, "REC_BAD_REQUEST" | "REC_UNPROCESSABLE_ENTITY") {
        p.push(format!(
            "REC code {rec:?} is neither REC_BAD_REQUEST nor REC_UNPROCESSABLE_ENTITY"
        ));
    }
    if issue["diagnostics"].as_str().is_none_or(str::is_empty) {
        p.push(format!("no diagnostics: {issue}"));
    }
    match issue["expression"][0].as_str() {
        Some(e) if !expression_is_well_formed(e) => p.push(format!(
            "expression {e:?} is not like Bundle.entry[2].resource.subject"
        )),
        None if need_expression => p.push(format!("no expression: {issue}")),
        _ => {}
    }
    p
}

/// Where `oo` differs from what the manifest says `case` must get.
pub fn mismatches(case: &Case, oo: &Value) -> Vec<String> {
    let mut m = Vec::new();
    if oo["resourceType"] != "OperationOutcome" {
        return vec![format!("not an OperationOutcome: {oo}")];
    }
    let info = oo["issue"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|i| i["severity"] == "information")
        .count();
    match (case.valid, first_error(oo)) {
        (true, None) => {
            if info != 1 {
                m.push(format!(
                    "a valid result carries one information issue: {oo}"
                ));
            }
        }
        (true, Some(_)) => m.push(format!("expected valid, got {}", first_diagnostics(oo))),
        (false, None) => m.push("expected invalid, got valid".to_owned()),
        (false, Some((code, rec, expr))) => {
            if Some(&code) != case.issue.as_ref() {
                m.push(format!(
                    "first error code {code:?}, expected {:?} ({})",
                    case.issue.as_deref().unwrap_or(""),
                    first_diagnostics(oo)
                ));
            }
            if Some(&rec) != case.rec.as_ref() {
                m.push(format!(
                    "first error REC {rec:?}, expected {:?} ({})",
                    case.rec.as_deref().unwrap_or(""),
                    first_diagnostics(oo)
                ));
            }
            if let Some(want) = &case.expression {
                if expr.as_ref() != Some(want) {
                    m.push(format!(
                        "first error expression {:?}, expected {want:?} ({})",
                        expr.as_deref().unwrap_or("-"),
                        first_diagnostics(oo)
                    ));
                }
            }
        }
    }
    for e in errors(oo) {
        m.extend(error_shape_problems(e, true));
    }
    m
}

/// Patient data in a fixture: NHS numbers (as written, and without spaces), and each Patient's
/// names, birth date and address lines and postcode.
pub fn patient_data(doc: &Value) -> Vec<String> {
    fn walk(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(o) => {
                let system = o.get("system").and_then(Value::as_str).unwrap_or("");
                if system.to_ascii_lowercase().ends_with("/id/nhs-number") {
                    if let Some(n) = o.get("value").and_then(Value::as_str) {
                        out.push(n.to_owned());
                        out.push(n.split_whitespace().collect());
                    }
                }
                if o.get("resourceType").and_then(Value::as_str) == Some("Patient") {
                    for name in o
                        .get("name")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                    {
                        out.extend(name["family"].as_str().map(str::to_owned));
                        for g in name["given"].as_array().into_iter().flatten() {
                            out.extend(g.as_str().map(str::to_owned));
                        }
                    }
                    match o.get("birthDate") {
                        Some(Value::String(b)) => out.push(b.clone()),
                        Some(Value::Number(b)) => out.push(b.to_string()),
                        _ => {}
                    }
                    for a in o
                        .get("address")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                    {
                        for l in a["line"].as_array().into_iter().flatten() {
                            out.extend(l.as_str().map(str::to_owned));
                        }
                        out.extend(a["postalCode"].as_str().map(str::to_owned));
                    }
                }
                o.values().for_each(|c| walk(c, out));
            }
            Value::Array(a) => a.iter().for_each(|c| walk(c, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(doc, &mut out);
    out.retain(|s| s.len() >= 4);
    out.sort();
    out.dedup();
    out
}

/// The patient data of `doc` that `oo` repeats.
pub fn leaked(doc: &Value, oo: &Value) -> Vec<String> {
    let text = oo.to_string();
    patient_data(doc)
        .into_iter()
        .filter(|p| text.contains(p.as_str()))
        .collect()
}

fn read_json(path: &Path) -> Value {
    serde_json::from_slice(
        &std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
    )
    .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn fail_if_any(what: &str, failures: &[String]) {
    assert!(
        failures.is_empty(),
        "{what}: {} problem(s)\n  {}",
        failures.len(),
        failures.join("\n  ")
    );
}

/// The manifest's cases grouped by (profile, valid), in a stable order.
fn groups(cases: &[Case]) -> BTreeMap<(Option<String>, bool), Vec<&Case>> {
    let mut g: BTreeMap<(Option<String>, bool), Vec<&Case>> = BTreeMap::new();
    for c in cases {
        g.entry((c.profile.clone(), c.valid)).or_default().push(c);
    }
    g
}

/// Each group of fixtures through the CLI in one run: the run's exit code and each file's
/// outcome, checked against the manifest.
fn cli_outcomes(cases: &[Case], failures: &mut Vec<String>) -> HashMap<String, Value> {
    let mut all = HashMap::new();
    for ((profile, valid), group) in groups(cases) {
        let files: Vec<PathBuf> = group.iter().map(|c| c.path()).collect();
        let run = run_validate(profile.as_deref(), &files);
        let want = if valid { 0 } else { 1 };
        let label = profile.as_deref().unwrap_or("(no profile)");
        if run.code != Some(want) {
            failures.push(format!(
                "--profile {label}, {} {} file(s): exit {:?}, expected {want}; stderr: {}",
                files.len(),
                if valid { "valid" } else { "invalid" },
                run.code,
                run.stderr.trim()
            ));
        }
        for c in group {
            match run.outcome(&c.path()) {
                Some(oo) => {
                    for m in mismatches(c, oo) {
                        failures.push(format!("{} ({label}): {m}", c.file));
                    }
                    all.insert(c.file.clone(), oo.clone());
                }
                None => failures.push(format!(
                    "{} ({label}): no `FILE: OperationOutcome` line; stdout: {}",
                    c.file,
                    run.stdout.trim()
                )),
            }
        }
    }
    all
}

#[test]
fn the_profile_fixtures_cover_every_profile_and_are_all_in_the_manifest() {
    let cases = manifest();
    for p in FIXTURE_PROFILES {
        let valid = cases
            .iter()
            .filter(|c| c.profile.as_deref() == Some(p) && c.valid)
            .count();
        let invalid = cases
            .iter()
            .filter(|c| c.profile.as_deref() == Some(p) && !c.valid)
            .count();
        assert!(
            valid >= 2 && invalid >= 4,
            "{p}: {valid} valid, {invalid} invalid fixtures"
        );
    }
    for c in &cases {
        assert!(
            c.path().is_file(),
            "{} is in the manifest but not on disk",
            c.file
        );
        assert_eq!(
            c.valid,
            c.file.contains("/valid/"),
            "{}: the folder says the verdict",
            c.file
        );
        if !c.valid {
            assert!(
                c.issue.is_some() && c.rec.is_some(),
                "{}: an invalid fixture names its first error's issue and REC codes",
                c.file
            );
        }
    }
    let listed: Vec<&str> = cases.iter().map(|c| c.file.as_str()).collect();
    let root = fixture("profiles");
    for dir in std::fs::read_dir(&root)
        .expect("fixtures/profiles")
        .flatten()
    {
        for verdict in ["valid", "invalid"] {
            let Ok(files) = std::fs::read_dir(dir.path().join(verdict)) else {
                continue;
            };
            for f in files.flatten() {
                let rel = format!(
                    "profiles/{}/{verdict}/{}",
                    dir.file_name().to_string_lossy(),
                    f.file_name().to_string_lossy()
                );
                assert!(
                    listed.contains(&rel.as_str()),
                    "{rel} is not in fixtures/profiles/manifest.json (rerun make_profile_fixtures.py)"
                );
            }
        }
    }
}

#[test]
fn every_profile_fixture_gets_its_verdict_from_signpost_validate() {
    let cases = manifest();
    let mut failures = Vec::new();
    let outcomes = cli_outcomes(&cases, &mut failures);
    println!(
        "signpost validate: {} fixtures, {} outcomes, {} problem(s)",
        cases.len(),
        outcomes.len(),
        failures.len()
    );
    fail_if_any("signpost validate on fixtures/profiles", &failures);
}

#[test]
fn diagnostics_never_carry_patient_data() {
    let cases = manifest();
    let mut ignored = Vec::new();
    let outcomes = cli_outcomes(&cases, &mut ignored);
    let mut failures = Vec::new();
    let mut checked = 0;
    let mut looked_for = Vec::new();
    for c in &cases {
        let doc = read_json(&c.path());
        looked_for.extend(patient_data(&doc));
        if let Some(oo) = outcomes.get(&c.file) {
            checked += 1;
            let leaks = leaked(&doc, oo);
            if !leaks.is_empty() {
                failures.push(format!("{}: repeats {leaks:?}: {oo}", c.file));
            }
        }
    }
    assert!(checked > 0, "no outcomes to check: {ignored:?}");
    for p in [
        "9990000019",
        "999 000 0069",
        "9990000069",
        "Adeyemi-Price",
        "1990-07-02",
    ] {
        assert!(
            looked_for.iter().any(|l| l == p),
            "{p} is among the data looked for"
        );
    }
    fail_if_any("patient data in OperationOutcomes", &failures);
}

#[test]
fn one_invalid_file_makes_the_whole_run_exit_1_and_each_file_keeps_its_own_verdict() {
    let good = fixture("profiles/sp-patient/valid/patient-nhs-number-verified.json");
    let bad = fixture("profiles/sp-patient/invalid/patient-nhs-number-bad-check-digit.json");
    let run = run_validate(Some("sp-patient"), &[good.clone(), bad.clone()]);
    assert_eq!(run.code, Some(1), "{run:?}");
    assert!(
        is_valid(run.outcome(&good).expect("a line for the valid file")),
        "{run:?}"
    );
    assert!(
        !is_valid(run.outcome(&bad).expect("a line for the invalid file")),
        "{run:?}"
    );
    let run = run_validate(Some("sp-patient"), std::slice::from_ref(&good));
    assert_eq!(run.code, Some(0), "{run:?}");
}

#[test]
fn a_file_that_cannot_be_read_exits_2() {
    let dir = TempDir::new("signpost-validate");
    let missing = dir.path().join("no-such-file.json");
    let run = run_validate(None, std::slice::from_ref(&missing));
    assert_eq!(run.code, Some(2), "{run:?}");
    let good = fixture("profiles/sp-patient/valid/patient-nhs-number-verified.json");
    let run = run_validate(Some("sp-patient"), &[good, missing]);
    assert_eq!(
        run.code,
        Some(2),
        "an unreadable file wins over a valid one: {run:?}"
    );
}

#[test]
fn an_unknown_profile_exits_2() {
    let good = fixture("profiles/sp-patient/valid/patient-nhs-number-verified.json");
    for p in [
        "sp-nope",
        "Patient",
        "https://signpost.example.org/fhir/StructureDefinition/sp-nope",
    ] {
        let run = run_validate(Some(p), std::slice::from_ref(&good));
        assert_eq!(run.code, Some(2), "--profile {p}: {run:?}");
    }
}

#[test]
fn a_file_that_is_not_json_is_simply_invalid_and_exits_1() {
    let dir = TempDir::new("signpost-validate");
    let file = dir.path().join("not-json.json");
    std::fs::write(&file, "this is not JSON {").unwrap();
    for profile in [None, Some("sp-patient")] {
        let run = run_validate(profile, std::slice::from_ref(&file));
        assert_eq!(run.code, Some(1), "{profile:?}: {run:?}");
        let oo = run.outcome(&file).expect("a line for the file");
        assert!(!is_valid(oo), "{oo}");
        let (_, rec, _) = first_error(oo).unwrap();
        assert_eq!(rec, "REC_BAD_REQUEST", "{oo}");
        for e in errors(oo) {
            let p = error_shape_problems(e, false);
            assert!(p.is_empty(), "{p:?}");
        }
    }
}

#[test]
fn every_profile_id_is_known_to_the_cli() {
    let dir = TempDir::new("signpost-validate");
    let message = read_json(&fixture("gp-system/referral-new.json"));
    let practitioner = dir.path().join("practitioner.json");
    std::fs::write(&practitioner, message["entry"][3]["resource"].to_string()).unwrap();
    let mut samples: Vec<(&str, PathBuf)> = vec![("sp-practitioner", practitioner)];
    let cases = manifest();
    for p in FIXTURE_PROFILES {
        let c = cases
            .iter()
            .find(|c| c.profile.as_deref() == Some(p) && c.valid)
            .expect("a valid fixture per profile");
        samples.push((p, c.path()));
    }
    for (p, file) in samples {
        let run = run_validate(Some(p), std::slice::from_ref(&file));
        assert_eq!(
            run.code,
            Some(0),
            "--profile {p} {}: {run:?}",
            file.display()
        );
    }
}

// --- POST /fhir/$validate -------------------------------------------------------------------

async fn post_validate(world: &World, url: &str, body: Vec<u8>) -> Reply {
    world
        .client
        .send(
            "POST",
            url,
            &[
                ("content-type", "application/fhir+json; charset=utf-8"),
                ("accept", "application/fhir+json"),
                ("x-request-id", &new_id()),
                ("x-correlation-id", &new_id()),
            ],
            body,
        )
        .await
        .unwrap_or_else(|e| panic!("POST {url}: {e}"))
}

fn with_profile(base: &str, profile: Option<&str>) -> String {
    match profile {
        Some(p) => {
            let encoded: String = p
                .chars()
                .map(|c| match c {
                    ':' => "%3A".to_owned(),
                    '/' => "%2F".to_owned(),
                    '|' => "%7C".to_owned(),
                    c => c.to_string(),
                })
                .collect();
            format!("{base}?profile={encoded}")
        }
        None => base.to_owned(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_validate_endpoint_gives_every_fixture_the_same_verdict_as_the_cli() {
    let cases = manifest();
    let mut cli_failures = Vec::new();
    let cli = cli_outcomes(&cases, &mut cli_failures);

    let world = World::new(None).await;
    let gw = Gateway::start(|addr| world.settings(addr)).await;
    let mut failures = Vec::new();
    for c in &cases {
        let url = with_profile(&format!("{}/$validate", gw.fhir), c.profile.as_deref());
        let body = std::fs::read(c.path()).unwrap();
        let r = post_validate(&world, &url, body).await;
        if r.status != 200 {
            failures.push(format!(
                "{}: HTTP {} from {url}: {}",
                c.file, r.status, r.body
            ));
            continue;
        }
        // The verdict here; the first error's codes and expression through parity with the CLI,
        // whose test checks them against the manifest.
        if r.body["resourceType"] != "OperationOutcome" {
            failures.push(format!("{}: not an OperationOutcome: {}", c.file, r.body));
            continue;
        }
        if is_valid(&r.body) != c.valid {
            failures.push(format!(
                "{}: expected {}, got {}",
                c.file,
                if c.valid { "valid" } else { "invalid" },
                first_diagnostics(&r.body)
            ));
        }
        for e in errors(&r.body) {
            for p in error_shape_problems(e, true) {
                failures.push(format!("{}: {p}", c.file));
            }
        }
        let leaks = leaked(&read_json(&c.path()), &r.body);
        if !leaks.is_empty() {
            failures.push(format!("{}: repeats patient data {leaks:?}", c.file));
        }
        match cli.get(&c.file) {
            Some(oo) => {
                let (http, cli) = (
                    (is_valid(&r.body), first_error(&r.body)),
                    (is_valid(oo), first_error(oo)),
                );
                if http != cli {
                    failures.push(format!(
                        "{}: $validate says {http:?}, signpost validate says {cli:?}",
                        c.file
                    ));
                }
            }
            None => failures.push(format!("{}: no CLI outcome to compare with", c.file)),
        }
    }
    gw.stop().await;
    println!(
        "$validate: {} fixtures, {} problem(s) (signpost validate had {} against the manifest)",
        cases.len(),
        failures.len(),
        cli_failures.len()
    );
    fail_if_any("POST /fhir/$validate on fixtures/profiles", &failures);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_validate_endpoint_takes_parameters_type_level_calls_and_canonical_urls() {
    let world = World::new(None).await;
    let gw = Gateway::start(|addr| world.settings(addr)).await;
    let good = read_json(&fixture(
        "profiles/sp-patient/valid/patient-nhs-number-verified.json",
    ));
    let bad = read_json(&fixture(
        "profiles/sp-patient/invalid/patient-nhs-number-bad-check-digit.json",
    ));
    let no_nhs = read_json(&fixture(
        "profiles/base/valid/patient-without-nhs-number-claims-no-profile.json",
    ));
    let canonical = format!("{CANONICAL_BASE}sp-patient");
    type First = Option<(String, String, Option<String>)>;
    let first = |code: &str, rec: &str, expr: &str| -> First {
        Some((code.to_owned(), rec.to_owned(), Some(expr.to_owned())))
    };
    let bad_nhs = first("value", "REC_BAD_REQUEST", "Patient.identifier[0].value");
    let params = |resource: &Value, profile: Option<Value>| {
        let mut p = vec![json!({"name": "resource", "resource": resource})];
        p.extend(profile);
        serde_json::to_vec(&json!({"resourceType": "Parameters", "parameter": p})).unwrap()
    };
    let raw = |v: &Value| serde_json::to_vec(v).unwrap();
    let fhir = &gw.fhir;
    let at_root = format!("{fhir}/$validate");
    let at_type = format!("{fhir}/Patient/$validate");
    let by_id = json!({"name": "profile", "valueString": "sp-patient"});
    let by_url = json!({"name": "profile", "valueUri": canonical});
    // (what, URL, body, the first error expected, None for valid)
    let cases: Vec<(&str, String, Vec<u8>, First)> = vec![
        (
            "?profile=<canonical URL>",
            with_profile(&at_root, Some(&canonical)),
            raw(&bad),
            bad_nhs.clone(),
        ),
        (
            "?profile=<canonical URL>, valid",
            with_profile(&at_root, Some(&canonical)),
            raw(&good),
            None,
        ),
        (
            "?profile=<canonical URL>|0.1.0",
            with_profile(&at_root, Some(&format!("{canonical}|0.1.0"))),
            raw(&bad),
            bad_nhs.clone(),
        ),
        (
            "type level",
            with_profile(&at_type, Some("sp-patient")),
            raw(&bad),
            bad_nhs.clone(),
        ),
        (
            "type level, valid",
            with_profile(&at_type, Some("sp-patient")),
            raw(&good),
            None,
        ),
        (
            "Parameters, profile valueString",
            at_root.clone(),
            params(&bad, Some(by_id.clone())),
            bad_nhs.clone(),
        ),
        (
            "Parameters, profile valueUri",
            at_root.clone(),
            params(&bad, Some(by_url.clone())),
            bad_nhs.clone(),
        ),
        (
            "Parameters, profile valueUri, valid",
            at_root.clone(),
            params(&good, Some(by_url)),
            None,
        ),
        (
            "Parameters, type level",
            at_type.clone(),
            params(&bad, Some(by_id)),
            bad_nhs.clone(),
        ),
        (
            "Parameters without a profile: base R4 only",
            at_root.clone(),
            params(&no_nhs, None),
            None,
        ),
        (
            "no profile: base R4 only",
            at_root.clone(),
            raw(&no_nhs),
            None,
        ),
        (
            "the Patient without an NHS number against sp-patient",
            with_profile(&at_root, Some("sp-patient")),
            raw(&no_nhs),
            first("required", "REC_UNPROCESSABLE_ENTITY", "Patient.identifier"),
        ),
    ];
    let mut failures = Vec::new();
    for (what, url, body, want) in cases {
        let r = post_validate(&world, &url, body).await;
        if r.status != 200 || r.body["resourceType"] != "OperationOutcome" {
            failures.push(format!("{what}: HTTP {} {}", r.status, r.body));
            continue;
        }
        let got = first_error(&r.body);
        if got != want {
            failures.push(format!("{what}: first error {got:?}, expected {want:?}"));
        }
    }
    gw.stop().await;
    fail_if_any("$validate forms", &failures);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_validate_endpoint_refuses_unknown_profiles_and_bodies_that_are_not_json() {
    let world = World::new(None).await;
    let gw = Gateway::start(|addr| world.settings(addr)).await;
    let good = std::fs::read(fixture(
        "profiles/sp-patient/valid/patient-nhs-number-verified.json",
    ))
    .unwrap();
    let fhir = &gw.fhir;
    let unknown_in_params = serde_json::to_vec(&json!({"resourceType": "Parameters", "parameter": [
        {"name": "resource", "resource": read_json(&fixture("profiles/sp-patient/valid/patient-nhs-number-verified.json"))},
        {"name": "profile", "valueString": "sp-nope"},
    ]}))
    .unwrap();
    let cases: Vec<(&str, String, Vec<u8>, &str)> = vec![
        (
            "unknown profile id",
            format!("{fhir}/$validate?profile=sp-nope"),
            good.clone(),
            "not-supported",
        ),
        (
            "unknown canonical URL",
            with_profile(
                &format!("{fhir}/$validate"),
                Some(&format!("{CANONICAL_BASE}sp-nope")),
            ),
            good.clone(),
            "not-supported",
        ),
        (
            "unknown profile in Parameters",
            format!("{fhir}/$validate"),
            unknown_in_params,
            "not-supported",
        ),
        (
            "body not JSON",
            format!("{fhir}/$validate"),
            b"this is not JSON {".to_vec(),
            "structure",
        ),
        (
            "body not JSON, with a profile",
            format!("{fhir}/$validate?profile=sp-patient"),
            b"this is not JSON {".to_vec(),
            "structure",
        ),
    ];
    let mut failures = Vec::new();
    for (what, url, body, issue) in cases {
        let r = post_validate(&world, &url, body).await;
        let (code, rec) = r.outcome_codes();
        if r.status != 400 || rec != "REC_BAD_REQUEST" || code != issue {
            failures.push(format!(
                "{what}: HTTP {} {code:?} {rec:?}, expected 400 {issue:?} REC_BAD_REQUEST: {}",
                r.status, r.body
            ));
        }
        if r.body["resourceType"] != "OperationOutcome" {
            failures.push(format!("{what}: not an OperationOutcome: {}", r.body));
        }
    }
    gw.stop().await;
    fail_if_any("$validate refusals", &failures);
}

#[test]
fn expressions_are_recognised_as_well_formed_or_not() {
    for ok in [
        "Bundle",
        "Bundle.entry[2].resource.subject",
        "Patient.identifier[0].value",
        "Patient._birthDate",
        "Questionnaire.item[0].item[12].linkId",
        "Bundle.entry[0].resource.focus[0]",
    ] {
        assert!(expression_is_well_formed(ok), "{ok}");
    }
    for bad in [
        "",
        "patient.name",
        "/entry/2/resource",
        "Bundle.entry.2",
        "Bundle.entry[]",
        "Bundle.entry[x]",
        "Bundle..entry",
        "Bundle.entry[2",
        "Bundle.entry[2]x",
        "Patient.identifier.where(system='x')",
    ] {
        assert!(!expression_is_well_formed(bad), "{bad}");
    }
}
