//! Delivery to a scheme that fails: 5xx retries through the retry queues with the same
//! X-Request-Id until the scheme has it; 4xx parks the message with its reason; both show on
//! the timeline. Cancellation reaches the scheme and closes the Task.

use signpost_bus::topology;

use crate::assert_eventually;
use crate::helpers::{new_id, post_fixture, referral_id, steps, Gateway, World};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_scheme_gets_the_referral_after_retries_with_the_same_request_id() {
    let world = World::new(None).await;
    world.scheme.fail_next(2);
    let gw = Gateway::start(|addr| world.settings(addr)).await;
    let (r, _, _) = post_fixture(&world.client, &gw.fhir, "gp-system/referral-new.json").await;
    let referral = referral_id(&r.body);
    assert_eventually!(
        30,
        "delivered after two failures",
        world.scheme.accepted().len() == 1
    );
    let all = world.scheme.received();
    assert_eq!(all.len(), 3, "two failed attempts and one success");
    assert!(
        all.iter().all(|m| m.request_id == all[0].request_id),
        "the same X-Request-Id on every retry"
    );
    assert_eventually!(
        10,
        "delivered on the timeline",
        steps(&world.client, &gw.fhir, &referral)
            .await
            .contains(&"delivered".to_owned())
    );
    let s = steps(&world.client, &gw.fhir, &referral).await;
    assert_eq!(
        s.iter().filter(|s| *s == "referral-retrying").count(),
        2,
        "{s:?}"
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_referral_is_parked_with_its_reason_and_others_still_flow() {
    let world = World::new(None).await;
    world.scheme.refuse_next(1);
    let gw = Gateway::start(|addr| world.settings(addr)).await;
    let (r, _, _) = post_fixture(&world.client, &gw.fhir, "gp-system/referral-new.json").await;
    let parked = referral_id(&r.body);
    assert_eventually!(
        20,
        "parked on the timeline",
        steps(&world.client, &gw.fhir, &parked)
            .await
            .contains(&"referral-parked".to_owned())
    );
    let timeline = world
        .client
        .get(&format!("{}/ServiceRequest/{parked}/$timeline", gw.fhir))
        .await
        .unwrap();
    let reason = timeline.body["entry"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["flag"]["coding"][0]["code"] == "referral-parked")
        .unwrap()["item"]["display"]
        .clone();
    assert!(reason.as_str().unwrap().contains("HTTP 400"), "{reason}");
    let queue = topology::parked_queue(&topology::queue(
        topology::Side::Referrals,
        "scheme-standin",
    ));
    assert_eventually!(
        10,
        "the message waits in the parking queue",
        world.vhost.queue_depth(&queue) == Some(1)
    );

    // The next referral is not held up behind it.
    let (r2, _, _) = post_fixture(
        &world.client,
        &gw.fhir,
        "gp-system/referral-new-hillview.json",
    )
    .await;
    let next = referral_id(&r2.body);
    assert_eventually!(
        20,
        "the next referral is delivered",
        steps(&world.client, &gw.fhir, &next)
            .await
            .contains(&"delivered".to_owned())
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancellation_reaches_the_scheme_and_closes_the_referral() {
    let world = World::new(None).await;
    let gw = Gateway::start(|addr| world.settings(addr)).await;
    let c = &world.client;
    let (r, _, cid) = post_fixture(c, &gw.fhir, "gp-system/referral-new.json").await;
    let referral = referral_id(&r.body);
    assert_eventually!(20, "delivered", world.scheme.accepted().len() == 1);

    let mut cancel: serde_json::Value = serde_json::from_slice(&signpost_tests::env::read_fixture(
        "gp-system/referral-new.json",
    ))
    .unwrap();
    cancel["entry"][0]["resource"]["reason"]["coding"][0]["code"] = "update".into();
    cancel["entry"][0]["resource"]["definition"] =
        "https://fhir.nhs.uk/MessageDefinition/bars-message-servicerequest-request-cancelled"
            .into();
    let sr = &mut cancel["entry"][1]["resource"];
    sr["id"] = referral.clone().into();
    sr["status"] = "revoked".into();
    sr["reasonCode"] = serde_json::json!([{"text": "Patient moved away"}]);
    let r = c
        .process_message(&gw.fhir, &new_id(), &cid, cancel.to_string().into_bytes())
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);

    assert_eventually!(
        20,
        "the scheme receives the cancellation",
        world.scheme.accepted().len() == 2
    );
    let m = &world.scheme.accepted()[1].body;
    assert_eq!(
        m["entry"][0]["resource"]["definition"],
        "https://fhir.nhs.uk/MessageDefinition/bars-message-servicerequest-request-cancelled"
    );
    assert_eq!(m["entry"][1]["resource"]["status"], "revoked");
    let task = c
        .get(&format!("{}/Task?focus={referral}", gw.fhir))
        .await
        .unwrap();
    assert_eq!(task.body["entry"][0]["resource"]["status"], "cancelled");

    // A closed referral cannot be accepted afterwards.
    let late = signpost_tests::messages::scheme_response(
        &world.scheme.accepted()[0].body,
        "accepted",
        None,
        None,
    );
    let r = c
        .process_message(&gw.fhir, &new_id(), &cid, late.to_string().into_bytes())
        .await
        .unwrap();
    assert_eq!(
        (r.status.as_u16(), r.outcome_codes()),
        (
            422,
            (
                "business-rule".to_owned(),
                "REC_UNPROCESSABLE_ENTITY".to_owned()
            )
        )
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_letter_about_another_patient_is_refused_and_nothing_goes_to_the_gp() {
    let world = World::new(None).await;
    let gw = Gateway::start(|addr| world.settings(addr)).await;
    let c = &world.client;
    let (r, _, _) = post_fixture(c, &gw.fhir, "gp-system/referral-new.json").await;
    let referral = referral_id(&r.body);
    assert_eventually!(
        30,
        "the scheme has the referral",
        world.scheme.accepted().len() == 1
    );
    let message = world.scheme.accepted()[0].body.clone();
    // 9434765919 is a valid NHS number, but not this referral's patient (9990000018).
    let wrong = signpost_tests::messages::scheme_response(
        &message,
        "accepted",
        None,
        Some(signpost_tests::messages::outcome_letter("9434765919")),
    );
    let reply = c
        .process_message(
            &gw.fhir,
            &new_id(),
            &new_id(),
            wrong.to_string().into_bytes(),
        )
        .await
        .unwrap();
    assert_eq!(reply.status, 422, "{}", reply.body);
    assert_eq!(
        reply.outcome_codes(),
        (
            "business-rule".to_owned(),
            "REC_UNPROCESSABLE_ENTITY".to_owned()
        )
    );
    assert!(
        !reply.text.contains("9434765919"),
        "the answer does not repeat the NHS number"
    );
    let timeline = steps(c, &gw.fhir, &referral).await;
    assert!(
        !timeline.iter().any(|s| s.starts_with("letter")),
        "{timeline:?}"
    );
    assert!(
        !timeline.contains(&"accepted".to_owned()),
        "the whole response was refused"
    );
    gw.stop().await;
}
