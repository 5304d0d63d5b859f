//! Patient data never reaches the logs, the traces or the metrics. The whole loop runs as a
//! separate `signpost run` at the most verbose logging (every Signpost event and span at
//! `trace`), its output captured to files; referrals for known and made-up patients go round
//! to filed letters, some error paths are taken, and then every captured line, every trace span
//! exported (over OTLP to a stand-in collector) and the metrics are searched for each patient's
//! names, NHS number, birth date, address and phone number.

use std::fs::File;
use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};
use signpost_tests::client::Client;
use signpost_tests::env::{fixture, read_fixture, workspace};
use signpost_tests::standin::OtlpCollector;

use crate::assert_eventually;
use crate::helpers::{free_port, new_id, referral_id, steps, Process, World};

/// The most verbose Signpost logging; the libraries that would only add noise stay at info.
const LOG_FILTER: &str = "trace,lapin=info,amq_protocol=info,sqlx=info,hyper=info,h2=info";

/// What identifies one patient, as sent.
#[derive(Debug, Default)]
struct Identity {
    /// Where it came from, for the report.
    whose: String,
    given: Vec<String>,
    family: Vec<String>,
    nhs_numbers: Vec<String>,
    birth_date: Option<String>,
    /// Address lines, city, postcode; phone numbers; free text about them.
    other: Vec<String>,
}

fn identities_in(message: &Value, whose: &str) -> Vec<Identity> {
    patients(message)
        .map(|p| {
            let strings = |v: &Value| -> Vec<String> {
                match v {
                    Value::String(s) => vec![s.clone()],
                    Value::Array(a) => a
                        .iter()
                        .filter_map(|s| s.as_str().map(str::to_owned))
                        .collect(),
                    _ => Vec::new(),
                }
            };
            let names = p["name"].as_array().cloned().unwrap_or_default();
            let mut other = Vec::new();
            for a in p["address"].as_array().into_iter().flatten() {
                other.extend(strings(&a["line"]));
                other.extend(strings(&a["city"]));
                other.extend(strings(&a["postalCode"]));
            }
            for t in p["telecom"].as_array().into_iter().flatten() {
                other.extend(strings(&t["value"]));
            }
            Identity {
                whose: whose.to_owned(),
                given: names.iter().flat_map(|n| strings(&n["given"])).collect(),
                family: names.iter().flat_map(|n| strings(&n["family"])).collect(),
                nhs_numbers: p["identifier"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|i| i["value"].as_str().map(str::to_owned))
                    .collect(),
                birth_date: p["birthDate"].as_str().map(str::to_owned),
                other,
            }
        })
        .collect()
}

fn patients(message: &Value) -> impl Iterator<Item = &Value> {
    message["entry"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| &e["resource"])
        .filter(|r| r["resourceType"] == "Patient")
}

/// A made-up patient with names found nowhere else.
struct MadeUp {
    family: &'static str,
    given: &'static [&'static str],
    nhs: &'static str,
    birth: &'static str,
    line: &'static str,
    city: &'static str,
    postcode: &'static str,
    phone: &'static str,
    /// The reason for the referral: health information about them, as free text.
    reason: &'static str,
}

const MADE_UP: &[MadeUp] = &[
    MadeUp {
        family: "Zyxquorth",
        given: &["Pelagia"],
        nhs: "9997654323",
        birth: "1937-02-11",
        line: "42 Quillon Wharf",
        city: "Marrowgate",
        postcode: "ZZ99 4QX",
        phone: "07700 900461",
        reason: "Misses her choir at Saint Ebbsworth since the fall",
    },
    MadeUp {
        family: "Ombrevale",
        given: &["Thaddeus", "Ixworth"],
        nhs: "9992468017",
        birth: "1962-09-27",
        line: "Flat 3, Vellacott House",
        city: "Dunmarrow",
        postcode: "ZZ99 5VB",
        phone: "07700 900572",
        reason: "Gambling debts after redundancy from the Trellick plant",
    },
    MadeUp {
        family: "Kestrelmoor",
        given: &["Ysolde"],
        nhs: "9993141593",
        birth: "2004-12-08",
        line: "7 Brindlecombe Lane",
        city: "Harrowdene",
        postcode: "ZZ99 6KY",
        phone: "07700 900683",
        reason: "Lonely after moving to Harrowdene for university",
    },
];

/// A made-up patient whose NHS number fails its check digit (should be 9997654323).
const MADE_UP_BAD_NUMBER: MadeUp = MadeUp {
    family: "Quillfeather",
    given: &["Bartholomew"],
    nhs: "9997654324",
    birth: "1951-04-19",
    line: "11 Sorrowby Close",
    city: "Wendlecote",
    postcode: "ZZ99 7QF",
    phone: "07700 900794",
    reason: "Carer for a wife with dementia in Wendlecote",
};

/// Modulus 11, as the NHS defines it: the made-up numbers must be valid (or not) on purpose.
fn nhs_number_is_valid(n: &str) -> bool {
    let d: Vec<u32> = n.chars().filter_map(|c| c.to_digit(10)).collect();
    if d.len() != 10 {
        return false;
    }
    let sum: u32 = d[..9].iter().zip((2..=10).rev()).map(|(x, w)| x * w).sum();
    match 11 - sum % 11 {
        11 => d[9] == 0,
        10 => false,
        c => d[9] == c,
    }
}

/// The fixture referral about `p` instead of its own patient, under a fresh Bundle.id.
fn made_up_referral(p: &MadeUp) -> Value {
    let mut b: Value =
        serde_json::from_slice(&read_fixture("gp-system/referral-new.json")).expect("fixture");
    b["id"] = json!(new_id());
    for e in b["entry"].as_array_mut().expect("entries") {
        let r = &mut e["resource"];
        if r["resourceType"] == "Patient" {
            r["name"] = json!([{"use": "official", "family": p.family, "given": p.given}]);
            r["identifier"][0]["value"] = json!(p.nhs);
            r["birthDate"] = json!(p.birth);
            r["address"] = json!([{"line": [p.line], "city": p.city, "postalCode": p.postcode}]);
            r["telecom"] = json!([{"system": "phone", "value": p.phone, "use": "mobile"}]);
        }
        if r["resourceType"] == "ServiceRequest" {
            r["reasonCode"] = json!([{"text": p.reason}]);
        }
    }
    b
}

/// One thing that must not appear, and whose it is.
#[derive(Debug)]
struct Needle {
    text: String,
    what: String,
    /// Match whole words only (names); otherwise any occurrence (numbers, dates).
    word: bool,
}

/// `1948-03-14` as it might be written: ISO, `14/03/1948`, `14 March 1948`, `14-Mar-1948`.
fn date_forms(iso: &str) -> Vec<String> {
    const MONTHS: [&str; 12] = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ];
    let mut forms = vec![iso.to_owned()];
    let parts: Vec<&str> = iso.split('-').collect();
    if let [y, m, d] = parts[..] {
        let month = m
            .parse::<usize>()
            .ok()
            .and_then(|m| MONTHS.get(m.wrapping_sub(1)));
        forms.push(format!("{d}/{m}/{y}"));
        if let Some(month) = month {
            let day = d.trim_start_matches('0');
            forms.push(format!("{day} {month} {y}"));
            forms.push(format!("{d}-{}-{y}", &month[..3]));
        }
    }
    forms
}

/// Words Signpost writes without reading them from a patient: its own code (tests left out),
/// the directory, and the parts of every message sent that are not about the patient (not the
/// Patient, not the reason for referral). A patient's
/// name that is such a word ("Example" of example.org, "Digit" of "check digit") proves
/// nothing alone, so it is searched only as part of the full name.
fn ordinary_text(sent: &[Value], directory: &Path) -> String {
    let mut text = String::new();
    let mut stack: Vec<std::path::PathBuf> = ["gateway/src", "gateway/letter/src", "profiles/src"]
        .iter()
        .map(|r| workspace().join(r))
        .collect();
    for adapter in std::fs::read_dir(workspace().join("adapters"))
        .into_iter()
        .flatten()
        .flatten()
    {
        stack.push(adapter.path().join("src"));
    }
    while let Some(p) = stack.pop() {
        if p.is_dir() {
            for e in std::fs::read_dir(&p).into_iter().flatten().flatten() {
                stack.push(e.path());
            }
        } else if p.extension().is_some_and(|e| e == "rs") {
            let src = std::fs::read_to_string(&p).unwrap_or_default();
            let code = src.split("#[cfg(test)]").next().unwrap_or("");
            text.push_str(code);
            text.push('\n');
        }
    }
    text.push_str(&std::fs::read_to_string(directory).unwrap_or_default());
    for m in sent {
        let mut m = m.clone();
        for e in m["entry"].as_array_mut().into_iter().flatten() {
            let r = &mut e["resource"];
            if r["resourceType"] == "Patient" {
                *r = Value::Null;
            } else if let Some(sr) = r.as_object_mut() {
                // The reason for a referral is about the patient too.
                sr.remove("reasonCode");
            }
        }
        text.push_str(&m.to_string());
        text.push('\n');
    }
    text.to_ascii_lowercase()
}

fn has_word(haystack: &str, word: &str) -> bool {
    find_all(haystack, word, true).next().is_some()
}

/// Byte offsets of `needle` in `haystack` (both lower case); whole words only if `word`.
fn find_all<'a>(
    haystack: &'a str,
    needle: &'a str,
    word: bool,
) -> impl Iterator<Item = usize> + 'a {
    let bytes = haystack.as_bytes();
    haystack
        .match_indices(needle)
        .map(|(i, _)| i)
        .filter(move |&i| {
            let before = i.checked_sub(1).map(|j| bytes[j]);
            let after = bytes.get(i + needle.len()).copied();
            !word
                || !(before.is_some_and(|b| b.is_ascii_alphanumeric())
                    || after.is_some_and(|b| b.is_ascii_alphanumeric()))
        })
}

fn needles(identities: &[Identity], ordinary: &str, skipped: &mut Vec<String>) -> Vec<Needle> {
    let mut out = Vec::new();
    let mut push = |text: String, what: String, word: bool| {
        if !text.trim().is_empty() {
            out.push(Needle {
                text: text.to_ascii_lowercase(),
                what,
                word,
            });
        }
    };
    for id in identities {
        let whose = &id.whose;
        for name in id.given.iter().chain(&id.family) {
            if has_word(ordinary, &name.to_ascii_lowercase()) {
                skipped.push(format!(
                    "{name} ({whose}): an ordinary word here; full name only"
                ));
            } else {
                push(name.clone(), format!("name {name:?} of {whose}"), true);
            }
        }
        for family in &id.family {
            let all_given = id.given.join(" ");
            let mut forms = vec![format!("{all_given} {family}")];
            for given in &id.given {
                forms.push(format!("{given} {family}"));
                forms.push(format!("{family} {given}"));
                forms.push(format!("{family}, {given}"));
            }
            forms.dedup();
            for f in forms {
                push(f.clone(), format!("full name {f:?} of {whose}"), true);
            }
        }
        for n in &id.nhs_numbers {
            push(n.clone(), format!("NHS number {n} of {whose}"), false);
            if n.len() == 10 {
                for spaced in [
                    format!("{} {} {}", &n[..3], &n[3..6], &n[6..]),
                    format!("{}-{}-{}", &n[..3], &n[3..6], &n[6..]),
                ] {
                    push(
                        spaced.clone(),
                        format!("NHS number {spaced:?} of {whose}"),
                        false,
                    );
                }
            }
        }
        if let Some(b) = &id.birth_date {
            for f in date_forms(b) {
                push(f.clone(), format!("birth date {f:?} of {whose}"), false);
            }
        }
        for o in &id.other {
            if ordinary.contains(&o.to_ascii_lowercase()) {
                skipped.push(format!(
                    "{o:?} ({whose}): also outside the Patient; not searched"
                ));
            } else {
                push(
                    o.clone(),
                    format!("{o:?} (address, phone or reason) of {whose}"),
                    true,
                );
            }
        }
    }
    out
}

/// Remove ANSI escape sequences (colour), in case the output is coloured after all.
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' && chars.peek() == Some(&'[') {
            chars.next();
            for c in chars.by_ref() {
                if ('@'..='~').contains(&c) {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Every needle found in `text`, as "what, in `source` line N: the line".
fn leaks_in(source: &str, text: &str, needles: &[Needle]) -> Vec<String> {
    let lower = text.to_ascii_lowercase();
    let line_starts: Vec<usize> = std::iter::once(0)
        .chain(lower.match_indices('\n').map(|(i, _)| i + 1))
        .collect();
    let mut found = Vec::new();
    for n in needles {
        for at in find_all(&lower, &n.text, n.word).take(3) {
            let line = line_starts.partition_point(|&s| s <= at);
            let start = line_starts[line - 1];
            let end = text[start..].find('\n').map_or(text.len(), |e| start + e);
            let shown: String = text[start..end].chars().take(400).collect();
            found.push(format!("{}, in {source} line {line}: {shown}", n.what));
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_patient_name_nhs_number_birth_date_or_address_appears_in_logs_traces_or_metrics() {
    for p in MADE_UP {
        assert!(
            nhs_number_is_valid(p.nhs),
            "{} is a valid test number",
            p.nhs
        );
    }
    assert!(!nhs_number_is_valid(MADE_UP_BAD_NUMBER.nhs));
    assert!(nhs_number_is_valid("9990000018") && !nhs_number_is_valid("9990000019"));

    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let fhir = format!("{base}/fhir");
    let world = World::new(Some(fhir.clone())).await;
    let directory = world.dir.path().join("directory.json");
    let (out_path, err_path) = (
        world.dir.path().join("signpost.stdout"),
        world.dir.path().join("signpost.stderr"),
    );
    let env = vec![
        ("SIGNPOST_AMQP_URL", world.vhost.amqp_url()),
        ("SIGNPOST_DATABASE_URL", world.database_url()),
        ("SIGNPOST_DIRECTORY", directory.display().to_string()),
        ("SIGNPOST_RETRY_DELAYS_MS", "200,400".to_owned()),
    ];
    // Traces go to a stand-in collector, in OTLP's JSON encoding, exported every 100 ms.
    let collector = OtlpCollector::start().await;
    let env: Vec<(&str, String)> = env
        .into_iter()
        .chain([
            ("SIGNPOST_LOG", LOG_FILTER.to_owned()),
            ("NO_COLOR", "1".to_owned()),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", collector.base.clone()),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json".to_owned()),
            ("OTEL_BSP_SCHEDULE_DELAY", "100".to_owned()),
        ])
        .collect();
    let mut signpost = Process::spawn_on(
        port,
        &["run"],
        &env,
        File::create(&out_path).expect("stdout file").into(),
        File::create(&err_path).expect("stderr file").into(),
    );
    let c = Client::new();
    assert_eventually!(30, "signpost run is ready", {
        matches!(c.get(&format!("{}/readyz", signpost.base)).await, Ok(r) if r.status == 200)
    });

    // Every message with a patient in it, kept for the search.
    let mut sent: Vec<Value> = Vec::new();
    let mut identities: Vec<Identity> = Vec::new();
    let post = |body: Vec<u8>| {
        let (c, fhir) = (c.clone(), fhir.clone());
        async move {
            c.process_message(&fhir, &new_id(), &new_id(), body)
                .await
                .expect("the gateway answers")
        }
    };

    // 1. Referrals worked round the loop to a filed letter: the fixtures' patients...
    let mut fixtures: Vec<String> = std::fs::read_dir(fixture("gp-system"))
        .expect("fixtures")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|f| f.ends_with(".json"))
        .map(|f| format!("gp-system/{f}"))
        .collect();
    fixtures.sort();
    // "declined" cancels the open referral: send it once the letters are filed.
    let (declined, fixtures): (Vec<String>, Vec<String>) =
        fixtures.into_iter().partition(|f| f.contains("declined"));
    let mut referrals = Vec::new();
    for f in &fixtures {
        let message: Value = serde_json::from_slice(&read_fixture(f)).expect("fixture");
        identities.extend(identities_in(&message, f));
        let r = post(message.to_string().into_bytes()).await;
        assert_eq!(r.status, 200, "{f}: {}", r.body);
        referrals.push(referral_id(&r.body));
        sent.push(message);
    }
    // ... and made-up patients with names found nowhere else.
    let mut made_up = Vec::new();
    for p in MADE_UP {
        let message = made_up_referral(p);
        identities.extend(identities_in(&message, &format!("made-up {}", p.family)));
        identities
            .last_mut()
            .expect("one patient")
            .other
            .push(p.reason.to_owned());
        let r = post(message.to_string().into_bytes()).await;
        assert_eq!(r.status, 200, "made-up {}: {}", p.family, r.body);
        referrals.push(referral_id(&r.body));
        made_up.push(message.clone());
        sent.push(message);
    }
    assert!(
        identities
            .iter()
            .any(|i| i.family.iter().any(|f| f == "Example")),
        "the fixtures' patients are in the search (Joan Example)"
    );
    assert_eventually!(
        90,
        format!("{} letters filed", referrals.len()),
        world.gp.filed().len() >= referrals.len()
    );
    for r in &referrals {
        assert_eventually!(
            20,
            "letter-filed on each timeline",
            steps(&c, &fhir, r)
                .await
                .contains(&"letter-filed".to_owned())
        );
    }

    // 2. Error paths, each about a patient.
    for f in declined {
        let message: Value = serde_json::from_slice(&read_fixture(&f)).expect("fixture");
        identities.extend(identities_in(&message, &f));
        let r = post(message.to_string().into_bytes()).await;
        assert!(!r.status.is_server_error(), "{f}: {}", r.body);
        sent.push(message);
    }
    for (f, status) in [
        ("invalid/nhs-number-bad-check-digit.json", 400),
        ("invalid/practice-without-route.json", 422),
        ("scheme/response-for-unknown-referral.json", 404),
    ] {
        let message: Value = serde_json::from_slice(&read_fixture(f)).expect("fixture");
        identities.extend(identities_in(&message, f));
        let r = post(message.to_string().into_bytes()).await;
        assert_eq!(r.status, status, "{f}: {}", r.body);
        sent.push(message);
    }
    let bad = made_up_referral(&MADE_UP_BAD_NUMBER);
    identities.extend(identities_in(
        &bad,
        "made-up Quillfeather (bad check digit)",
    ));
    identities
        .last_mut()
        .expect("one patient")
        .other
        .push(MADE_UP_BAD_NUMBER.reason.to_owned());
    let r = post(bad.to_string().into_bytes()).await;
    assert_eq!(r.status, 400, "a bad check digit: {}", r.body);
    // The same text cut short: not JSON any more, with the patient in the part that arrived.
    let text = bad.to_string();
    let cut = text.find("\"birthDate\"").expect("the patient") + 40;
    let r = post(text.as_bytes()[..cut].to_vec()).await;
    assert_eq!(r.status, 400, "a truncated body: {}", r.body);
    sent.push(bad);
    // A made-up referral again under a new request id: a duplicate.
    let r = post(made_up[0].to_string().into_bytes()).await;
    assert_eq!(r.status, 409, "a duplicate: {}", r.body);
    // Searches by NHS number put it in the query string.
    for nhs in ["9990000018", MADE_UP[1].nhs] {
        let r = c
            .get(&format!(
                "{fhir}/ServiceRequest?patient:identifier=https://fhir.nhs.uk/Id/nhs-number|{nhs}"
            ))
            .await
            .expect("search answers");
        assert_eq!(r.status, 200, "search by NHS number: {}", r.body);
        assert!(r.body["total"].as_u64().unwrap_or(1) >= 1, "{}", r.body);
    }

    // 3. Metrics, then stop: everything logged is in the files.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let metrics = c
        .get(&format!("{}/metrics", signpost.base))
        .await
        .expect("metrics answer");
    assert_eq!(metrics.status, 200);
    assert!(
        metrics.text.contains("signpost_"),
        "the metrics are there: {}",
        metrics.text
    );
    signpost.terminate().await;
    let stdout = strip_ansi(&String::from_utf8_lossy(&std::fs::read(&out_path).unwrap()));
    let stderr = strip_ansi(&String::from_utf8_lossy(&std::fs::read(&err_path).unwrap()));

    // The search can fail: the logs are there, at the most verbose level, about these referrals.
    let logs = format!("{stdout}{stderr}");
    assert!(
        logs.contains("referral accepted"),
        "the logs record the referrals (stderr has {} bytes)",
        stderr.len()
    );
    // Debug events show the filter is past info.
    assert!(
        logs.contains(" DEBUG signpost"),
        "the verbose filter is in force: Signpost's debug events are there"
    );
    assert!(
        logs.contains(&referrals[0]),
        "the logs carry referral ids, so they are about these referrals"
    );

    // The trace spans are there, one per request and one per delivery, and a referral's
    // delivery continues the trace of the POST that brought it.
    let spans = collector.spans();
    let named = |prefix: &str| -> Vec<&Value> {
        spans
            .iter()
            .filter(|s| s["name"].as_str().is_some_and(|n| n.starts_with(prefix)))
            .collect()
    };
    let posts = named("POST /fhir/$process-message");
    let deliveries = named("deliver referral-message");
    assert!(
        posts.len() >= referrals.len()
            && !deliveries.is_empty()
            && !named("deliver letter-filing").is_empty(),
        "request and delivery spans were exported: {} spans, names {:?}",
        spans.len(),
        spans
            .iter()
            .map(|s| s["name"].to_string())
            .collect::<std::collections::BTreeSet<_>>()
    );
    assert!(
        deliveries.iter().any(|d| posts
            .iter()
            .any(|p| p["traceId"] == d["traceId"] && d["parentSpanId"] == p["spanId"])),
        "a delivery span is the child of its POST's span"
    );
    let traces = collector.text();

    let ordinary = ordinary_text(&sent, &directory);
    let mut skipped = Vec::new();
    let needles = needles(&identities, &ordinary, &mut skipped);
    assert!(
        needles.iter().any(|n| n.text == "pelagia") && needles.iter().any(|n| n.text == "joan"),
        "made-up and fixture names are searched: {needles:#?}"
    );
    println!(
        "searching {} log lines, {} trace spans and {} metrics lines for {} strings about {} \
         patients; not searched alone: {skipped:#?}",
        logs.lines().count(),
        spans.len(),
        metrics.text.lines().count(),
        needles.len(),
        identities.len()
    );
    let mut leaks = leaks_in("stdout", &stdout, &needles);
    leaks.extend(leaks_in("stderr", &stderr, &needles));
    leaks.extend(leaks_in("metrics", &metrics.text, &needles));
    leaks.extend(leaks_in("traces", &traces, &needles));
    assert!(
        leaks.is_empty(),
        "patient data leaked ({}):\n{}",
        leaks.len(),
        leaks.join("\n")
    );
}

#[test]
fn the_search_finds_planted_patient_data_in_any_case_and_spacing() {
    let id = Identity {
        whose: "planted".to_owned(),
        given: vec!["Pelagia".to_owned()],
        family: vec!["Zyxquorth".to_owned()],
        nhs_numbers: vec!["9997654323".to_owned()],
        birth_date: Some("1937-02-11".to_owned()),
        other: vec!["ZZ99 4QX".to_owned()],
    };
    let mut skipped = Vec::new();
    let needles = needles(&[id], "an ordinary text", &mut skipped);
    assert!(skipped.is_empty());
    let planted = "INFO a: fine\n\
                   DEBUG b: patient=ZYXQUORTH\n\
                   INFO c: nhs=999 765 4323 born 11/02/1937\n\
                   WARN d: \u{1b}[3mpostcode\u{1b}[0m=zz99 4qx\n\
                   INFO e: Pelagiana is not her name; 19370211 is not this format";
    let leaks = leaks_in("planted", &strip_ansi(planted), &needles);
    let lines: Vec<&str> = leaks
        .iter()
        .map(|l| {
            l.split(" line ")
                .nth(1)
                .unwrap_or("")
                .split(':')
                .next()
                .unwrap_or("")
        })
        .collect();
    assert_eq!(lines, ["2", "3", "3", "4"], "{leaks:#?}");
}
