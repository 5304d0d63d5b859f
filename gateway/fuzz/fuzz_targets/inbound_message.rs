//! Any bytes as a `$process-message` body, through everything the gateway does with one before
//! it needs the ledger or the broker: the depth limit, parsing, the profile checks, reading the
//! referral's parts, building the referral and its message for the scheme, the envelope that
//! carries it (as the outbox stores it and the relay reads it back), a record event's referral,
//! and a scheme response's status change and outcome letter. Nothing may panic.
//!
//! The gateway stops at the first error; here the pure steps after a failed check run anyway
//! (none of them relies on an earlier check), so that mutated inputs reach them. The stronger
//! checks (what the gateway builds reads back as a message for the right ServiceRequest) apply
//! only to what the gateway would accept. Bodies that are JSON but not a message go through
//! `$validate` instead (base R4 and the profiles they claim).
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use serde_json::{json, Value};
use signpost_bus::envelope::{Envelope, Kind};
use signpost_bus::uris;
use signpost_bus::Directory;
use signpost_gateway::error::ApiError;
use signpost_gateway::fhir::{self, identifier_value, str_at, type_of};
use signpost_gateway::message::{self, Event, Message};
use signpost_gateway::pipeline::{referral_parts, ReferralParts};
use signpost_gateway::record_event::{self, Action, Mapping};
use signpost_gateway::referral::{self, LetterFor, NewIds, ReferralInput, Rendered};
use signpost_gateway::{auth, limits};
use signpost_profiles::{Outcome, Profiles};

/// The gateway's default `http.max_json_depth`: deeper bodies are refused before parsing.
const MAX_JSON_DEPTH: usize = 64;
const NOW: &str = "2026-11-20T09:30:00.123Z";
const SOURCE_ENDPOINT: &str = "https://signpost.example.org/fhir";

/// What the gateway loads once at start-up.
struct World {
    profiles: Profiles,
    directory: Directory,
    record_events: Mapping,
}

static WORLD: LazyLock<World> = LazyLock::new(|| {
    let directory: Value =
        serde_json::from_str(include_str!("../../../deploy/directory.example.json"))
            .expect("deploy/directory.example.json is JSON");
    World {
        profiles: Profiles::load().expect("the profiles compile"),
        directory: Directory::from_value(directory).expect("the example directory loads"),
        record_events: Mapping::shipped().expect("profiles/record-events.json loads"),
    }
});

fuzz_target!(|data: &[u8]| {
    let world = &*WORLD;
    if limits::json_depth_exceeds(data, MAX_JSON_DEPTH) {
        return;
    }
    let msg = match message::parse(data) {
        Ok(msg) => msg,
        Err(e) => {
            let _ = e.to_operation_outcome();
            // `$validate`: any resource, against base R4 and the profiles it claims.
            if let Ok(resource) = serde_json::from_slice::<Value>(data) {
                let outcome = world
                    .profiles
                    .validate(&resource, None)
                    .expect("no explicit profile, so none can be unknown");
                let _ = outcome.to_operation_outcome();
            }
            return;
        }
    };
    let accepted = match check_profile(world, &msg) {
        Ok(()) => true,
        Err(e) => {
            let _ = e.to_operation_outcome();
            false
        }
    };
    match msg.event {
        Event::Request => {
            // As `Gateway::process_message`: cancellations need the stored referral; anything
            // else that is a new referral is built.
            let sr = msg.focus().1;
            let cancelling = matches!(str_at(sr, "/status"), Some("revoked" | "entered-in-error"));
            let new = msg.reason.as_deref().unwrap_or("new") == "new";
            new_referral(world, &msg, accepted && !cancelling && new);
        }
        Event::Response => scheme_response(&msg),
        Event::RecordEvent => record(world, &msg, accepted),
    }
});

/// `Gateway::check_profile`: `sp-referral-message` for a new referral, `sp-scheme-response` for
/// a scheme's update, base R4 for a cancellation or a record event.
fn check_profile(world: &World, msg: &Message) -> Result<(), ApiError> {
    let cancelling = matches!(
        str_at(msg.focus().1, "/status"),
        Some("revoked" | "entered-in-error")
    );
    let profile = match msg.event {
        Event::Request if cancelling => None,
        Event::Request => Some("sp-referral-message"),
        Event::Response => Some("sp-scheme-response"),
        Event::RecordEvent => None,
    };
    let outcome = match profile {
        Some(p) => world
            .profiles
            .validate(&msg.bundle, Some(p))
            .expect("the gateway's profile names are known"),
        None => Outcome::of(world.profiles.check_base(&msg.bundle)),
    };
    match ApiError::from_outcome(outcome) {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// `Gateway::new_referral` up to the ledger write, then the cancellation the referrer could send
/// next. `strict`: the gateway would accept this message, so what it builds must hold up.
fn new_referral(world: &World, msg: &Message, strict: bool) {
    let Ok(ReferralParts {
        service_request: (sr_url, sr),
        patient,
        nhs_number,
        practice: (practice_url, practice),
        ods,
    }) = referral_parts(msg)
    else {
        return;
    };
    // A practice the directory does not route is refused by the gateway; the first scheme
    // stands in so that building is still reached.
    let routed = world.directory.scheme_for_practice(ods);
    let Some(scheme) = routed.or_else(|| world.directory.schemes().first()) else {
        return;
    };
    let Some(endpoint) = world.directory.endpoint(&scheme.endpoint) else {
        return;
    };
    let strict = strict && routed.is_some();
    let ids = NewIds::fresh();
    let built = referral::build_referral(
        &ReferralInput {
            message: &msg.bundle,
            service_request: (sr_url, sr),
            patient,
            practice: (practice_url, practice),
            nhs_number,
            scheme,
            scheme_endpoint: endpoint,
            source_endpoint: SOURCE_ENDPOINT,
            now: NOW,
        },
        &ids,
    );
    assert_eq!(str_at(&built.service_request, "/id"), Some(&*ids.referral));
    assert_eq!(str_at(&built.task, "/id"), Some(&*ids.task));
    assert_eq!(
        built.message.reference(),
        format!("Bundle/{}", ids.message_bundle)
    );
    if strict {
        // What the scheme receives is itself a message for our ServiceRequest.
        let bytes = serde_json::to_vec(&built.message).expect("the message serialises");
        let sent = message::parse(&bytes).expect("the message for the scheme parses");
        assert_eq!(sent.event, Event::Request);
        let focus = sent.focus().1;
        assert_eq!(type_of(focus), Some("ServiceRequest"));
        assert_eq!(str_at(focus, "/id"), Some(&*ids.referral));
    }
    through_the_outbox(
        Kind::ReferralMessage,
        &ids.referral,
        &endpoint.id,
        serde_json::to_value(&built.message).expect("the message serialises"),
    );

    // `Gateway::cancellation`, from the stored resources.
    let mut sr = built.service_request;
    let mut task = built.task;
    sr["status"] = json!("revoked");
    if let Some(reason) = msg.focus().1.get("reasonCode") {
        sr["reasonCode"] = reason.clone();
    }
    task["status"] = json!("cancelled");
    task["statusReason"] = json!({"text": "Cancelled by the referrer"});
    let reason = msg.reason.as_deref().unwrap_or("update");
    let cancellation = referral::build_cancellation(
        &ids.message_bundle,
        reason,
        &sr,
        &task,
        SOURCE_ENDPOINT,
        NOW,
    );
    let bytes = serde_json::to_vec(&cancellation).expect("a Value serialises");
    let sent = message::parse(&bytes).expect("a cancellation parses");
    assert_eq!(type_of(sent.focus().1), Some("ServiceRequest"));
    through_the_outbox(
        Kind::ReferralMessage,
        &ids.referral,
        &endpoint.id,
        cancellation,
    );
}

/// A coded entry added to a GP record (`Gateway::record_event`): `refer` makes a referral
/// message from it and builds that; `decline` reads the patient and the practice.
fn record(world: &World, msg: &Message, accepted: bool) {
    let entry = msg.focus().1;
    if !matches!(
        type_of(entry),
        Some("Procedure" | "Observation" | "ServiceRequest")
    ) {
        return;
    }
    let Some(rule) = world.record_events.rule_for(entry) else {
        return;
    };
    match rule.action {
        Action::Refer => {
            let referral = record_event::referral_message(msg);
            assert_eq!(referral.id, msg.id);
            let bytes = serde_json::to_vec(&referral.bundle).expect("a Value serialises");
            let again = message::parse(&bytes).expect("a record event's referral message parses");
            assert_eq!(again.event, Event::Request);
            assert_eq!(type_of(again.focus().1), Some("ServiceRequest"));
            new_referral(world, &referral, accepted);
        }
        Action::Decline => {
            let entries = msg.entries();
            let patient = record_event::subject(entry)
                .and_then(|s| entries.resolve(s))
                .map(|(_, p)| p)
                .filter(|p| type_of(p) == Some("Patient"));
            if let Some(nhs) = patient.and_then(|p| identifier_value(p, uris::NHS_NUMBER)) {
                let _ = fhir::nhs_number_is_valid(nhs);
            }
            let _ = msg
                .header()
                .get("sender")
                .and_then(|s| entries.resolve(s))
                .and_then(|(_, o)| identifier_value(o, uris::ODS_ORGANIZATION));
        }
    }
}

/// `Gateway::scheme_response` without the ledger: the status change a scheme asks for, the
/// letter's patient, and the letter rendered and wrapped for the GP system.
fn scheme_response(msg: &Message) {
    let header = msg.header();
    let _ = str_at(header, "/response/identifier");
    let _ = str_at(header, "/response/code");
    let entries = msg.entries();
    let nhs_number = "9434765919";
    if let Some((_, task)) = entries.of_type("Task") {
        if let Some(to) = str_at(task, "/status") {
            let _ = auth::performer_status(to);
            for from in referral::TASK_STATUSES {
                if referral::performer_may(from, to) {
                    let _ = referral::service_request_status(to, "active");
                }
            }
        }
    }
    let Some(letter) = entries
        .iter()
        .find(|(_, r)| matches!(type_of(r), Some("Composition" | "DocumentReference")))
        .map(|(_, r)| r)
    else {
        return;
    };
    if let Some(subject) = letter.get("subject") {
        let _ = match entries.resolve(subject) {
            Some((_, patient)) => identifier_value(patient, uris::NHS_NUMBER),
            None => str_at(subject, "/identifier/system")
                .filter(|s| uris::is_system(s, uris::NHS_NUMBER))
                .and_then(|_| str_at(subject, "/identifier/value")),
        };
    }
    // The patient as referred comes from the ledger; the response's own Patient stands in.
    let patient = entries.of_type("Patient").map(|(_, p)| p);
    let rendered = (type_of(letter) == Some("Composition")).then(|| {
        let ctx = letter_context(patient, entries.of_type("Task").map(|(_, t)| t));
        let l = signpost_letter::Letter::new(letter, &ctx);
        Rendered {
            title: l.title().to_owned(),
            pdf: l.to_pdf(),
            html: l.to_html(),
            text: l.to_text(),
        }
    });
    let organization = json!({"resourceType": "Organization", "name": "Scheme"});
    let doc = referral::letter_document(
        letter,
        LetterFor {
            doc_id: "d6a4c1a2-0000-4000-8000-000000000001",
            referral_id: "r-1",
            nhs_number,
            patient,
            scheme_organization: &organization,
            rendered,
            replaces: None,
            now: NOW,
        },
    );
    assert_eq!(type_of(&doc), Some("DocumentReference"));
    through_the_outbox(Kind::LetterFiling, "r-1", "gp-system", doc);
}

/// As `Gateway::letter_context`, with the ledger's facts fixed.
fn letter_context(patient: Option<&Value>, task: Option<&Value>) -> signpost_letter::LetterContext {
    let name = patient
        .and_then(|p| p.get("name"))
        .and_then(Value::as_array)
        .and_then(|names| {
            names
                .iter()
                .find(|n| str_at(n, "/use") == Some("official"))
                .or_else(|| names.first())
        });
    let given = name
        .and_then(|n| n.get("given"))
        .and_then(Value::as_array)
        .map(|g| {
            g.iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default();
    signpost_letter::LetterContext {
        given_name: given,
        family_name: name
            .and_then(|n| str_at(n, "/family"))
            .unwrap_or_default()
            .to_owned(),
        nhs_number: "9434765919".to_owned(),
        birth_date: patient
            .and_then(|p| str_at(p, "/birthDate"))
            .unwrap_or_default()
            .to_owned(),
        practice_name: "Riverside Surgery".to_owned(),
        practice_ods: "A81001".to_owned(),
        scheme_name: "Scheme".to_owned(),
        referral_date: "2026-11-01T09:00:00.000Z".to_owned(),
        outcome_date: NOW.to_owned(),
        status: task
            .and_then(|t| str_at(t, "/status"))
            .unwrap_or("completed")
            .to_owned(),
        status_reason: task
            .and_then(|t| str_at(t, "/statusReason/text"))
            .map(str::to_owned),
        referral_id: "r-1".to_owned(),
    }
}

/// The outbox stores `Envelope::to_bytes` as text and the relay reads it back with
/// `Envelope::from_bytes`: nothing may be lost or changed on the way.
fn through_the_outbox(kind: Kind, referral_id: &str, target: &str, payload: Value) {
    let envelope = Envelope::new(kind, "corr-1", referral_id, target, None, payload);
    let text = String::from_utf8(envelope.to_bytes()).expect("an envelope is UTF-8 text");
    assert!(!text.is_empty(), "an envelope serialises");
    let relayed = Envelope::from_bytes(text.as_bytes()).expect("the relay reads the envelope");
    assert!(relayed == envelope, "the relay reads back what was stored");
}
