//! GP clinical-record events: a coded entry becomes a referral (871731000000106), a repeated
//! event makes nothing new, and "declined" (871711000000103) cancels the open referral.

use serde_json::Value;
use signpost_tests::env::read_fixture;

use crate::assert_eventually;
use crate::helpers::{new_id, steps, Gateway, World};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coded_entry_becomes_one_referral_and_declined_cancels_it() {
    let world = World::new(None).await;
    let gw = Gateway::start(|addr| world.settings(addr)).await;
    let c = &world.client;
    let event = read_fixture("gp-system/record-event-referral.json");
    let r = c
        .process_message(&gw.fhir, &new_id(), &new_id(), event.clone())
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    let referral = signpost_tests::messages::referral_id(&r.body).expect("a referral was made");
    assert_eventually!(
        20,
        "the scheme receives the referral",
        world.scheme.accepted().len() == 1
    );
    let sent = &world.scheme.accepted()[0].body;
    let resources: Vec<&Value> = sent["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["resource"])
        .collect();
    let sr = resources
        .iter()
        .find(|r| r["resourceType"] == "ServiceRequest")
        .unwrap();
    assert_eq!(sr["code"]["coding"][0]["code"], "871731000000106");
    assert_eq!(
        sr["identifier"][0]["system"],
        "https://signpost.example.org/fhir/Id/record-event"
    );
    let patient = resources
        .iter()
        .find(|r| r["resourceType"] == "Patient")
        .unwrap();
    assert_eq!(patient["identifier"][0]["value"], "9990000042");
    assert!(
        resources
            .iter()
            .any(|r| r["resourceType"] == "Practitioner"),
        "the recording clinician travels with it"
    );

    // The same event again (a resend under a new request id) makes nothing new.
    let again = c
        .process_message(&gw.fhir, &new_id(), &new_id(), event)
        .await
        .unwrap();
    assert_eq!(again.status, 409);
    assert_eq!(again.outcome_codes().0, "duplicate");
    let found = c
        .get(&format!(
            "{}/ServiceRequest?patient:identifier=https://fhir.nhs.uk/Id/nhs-number|9990000042",
            gw.fhir
        ))
        .await
        .unwrap();
    assert_eq!(found.body["total"], 1);

    // Declined: the open referral is cancelled and the scheme told.
    let declined = c
        .process_message(
            &gw.fhir,
            &new_id(),
            &new_id(),
            read_fixture("gp-system/record-event-declined.json"),
        )
        .await
        .unwrap();
    assert_eq!(declined.status, 200, "{}", declined.body);
    assert!(
        declined.body["issue"][0]["diagnostics"]
            .as_str()
            .unwrap()
            .contains("1 open referral"),
        "{}",
        declined.body
    );
    assert_eventually!(
        20,
        "the scheme receives the cancellation",
        world.scheme.accepted().len() == 2
    );
    assert_eq!(
        world.scheme.accepted()[1].body["entry"][0]["resource"]["definition"],
        "https://fhir.nhs.uk/MessageDefinition/bars-message-servicerequest-request-cancelled"
    );
    let task = c
        .get(&format!("{}/Task?focus={referral}", gw.fhir))
        .await
        .unwrap();
    assert_eq!(task.body["entry"][0]["resource"]["status"], "cancelled");
    assert!(steps(c, &gw.fhir, &referral)
        .await
        .contains(&"cancelled".to_owned()));
    gw.stop().await;
}
