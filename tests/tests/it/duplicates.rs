//! BaRS idempotency: a repeated X-Request-Id, or a referral Bundle.id already accepted, gets
//! 409 REC_CONFLICT `duplicate` and causes nothing downstream.

use std::time::Duration;

use signpost_tests::env::read_fixture;

use crate::assert_eventually;
use crate::helpers::{new_id, referral_id, steps, Gateway, World};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_request_id_gets_409_duplicate_and_no_second_delivery() {
    let world = World::new(None).await;
    let gw = Gateway::start(|addr| world.settings(addr)).await;
    let c = &world.client;
    let (rid, cid) = (new_id(), new_id());
    let body = read_fixture("gp-system/referral-new.json");
    let first = c
        .process_message(&gw.fhir, &rid, &cid, body.clone())
        .await
        .unwrap();
    assert_eq!(first.status, 200, "{}", first.body);
    let referral = referral_id(&first.body);

    let again = c
        .process_message(&gw.fhir, &rid, &cid, body.clone())
        .await
        .unwrap();
    assert_eq!(again.status, 409);
    assert_eq!(
        again.outcome_codes(),
        ("duplicate".to_owned(), "REC_CONFLICT".to_owned())
    );
    assert_eq!(again.header("x-request-id"), Some(rid.as_str()));

    // A replay is refused as a duplicate even when its body no longer passes the checks (the
    // new referral's transaction is not reached; the ledger is read on the way out).
    let changed = c
        .process_message(
            &gw.fhir,
            &rid,
            &cid,
            b"{\"resourceType\": \"Bundle\"}".to_vec(),
        )
        .await
        .unwrap();
    assert_eq!(changed.status, 409, "{}", changed.body);
    assert_eq!(
        changed.outcome_codes(),
        ("duplicate".to_owned(), "REC_CONFLICT".to_owned())
    );

    // The same referral again under a new request id is a duplicate too (same Bundle.id).
    let resent = c
        .process_message(&gw.fhir, &new_id(), &cid, body)
        .await
        .unwrap();
    assert_eq!(resent.status, 409);
    assert_eq!(
        resent.outcome_codes(),
        ("duplicate".to_owned(), "REC_CONFLICT".to_owned())
    );

    assert_eventually!(
        20,
        "the referral is delivered",
        world.scheme.accepted().len() == 1
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        world.scheme.received().len(),
        1,
        "exactly one delivery reached the scheme"
    );
    let r = c
        .get(&format!(
            "{}/ServiceRequest?patient:identifier=https://fhir.nhs.uk/Id/nhs-number|9990000018",
            gw.fhir
        ))
        .await
        .unwrap();
    assert_eq!(r.body["total"], 1, "one referral in the ledger");
    assert_eq!(
        steps(c, &gw.fhir, &referral)
            .await
            .iter()
            .filter(|s| *s == "received")
            .count(),
        1
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_scheme_update_changes_the_status_once() {
    let world = World::new(None).await;
    let gw = Gateway::start(|addr| world.settings(addr)).await;
    let c = &world.client;
    let (r, _, cid) =
        crate::helpers::post_fixture(c, &gw.fhir, "gp-system/referral-new.json").await;
    let referral = referral_id(&r.body);
    assert_eventually!(20, "delivered", world.scheme.accepted().len() == 1);
    let accepted = signpost_tests::messages::scheme_response(
        &world.scheme.accepted()[0].body,
        "accepted",
        None,
        None,
    )
    .to_string()
    .into_bytes();
    let rid = new_id();
    assert_eq!(
        c.process_message(&gw.fhir, &rid, &cid, accepted.clone())
            .await
            .unwrap()
            .status,
        200
    );
    let again = c
        .process_message(&gw.fhir, &rid, &cid, accepted)
        .await
        .unwrap();
    assert_eq!(
        again.outcome_codes(),
        ("duplicate".to_owned(), "REC_CONFLICT".to_owned())
    );
    assert_eq!(
        steps(c, &gw.fhir, &referral)
            .await
            .iter()
            .filter(|s| *s == "accepted")
            .count(),
        1
    );
    gw.stop().await;
}
