//! The whole loop: a GP referral reaches the scheme once, the scheme's updates and letter come
//! back, the letter is filed once at the GP system, and the timeline shows every step in order.

use base64::Engine;
use serde_json::Value;
use signpost_tests::messages;

use crate::assert_eventually;
use crate::helpers::{new_id, post_fixture, referral_id, steps, Gateway, World};

fn decode_header(v: &str) -> Value {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(v)
        .expect("base64 header");
    serde_json::from_slice(&bytes).expect("JSON in header")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_referral_goes_round_the_whole_loop_and_the_timeline_shows_every_step_in_order() {
    let world = World::new(None).await;
    let gw = Gateway::start(|addr| world.settings(addr)).await;
    let c = &world.client;

    // 1. The GP system sends a referral.
    let (reply, request_id, correlation_id) =
        post_fixture(c, &gw.fhir, "gp-system/referral-new.json").await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(
        reply.header("x-request-id"),
        Some(request_id.as_str()),
        "X-Request-Id is echoed"
    );
    assert_eq!(
        reply.header("x-correlation-id"),
        Some(correlation_id.as_str()),
        "X-Correlation-Id is echoed"
    );
    let referral = referral_id(&reply.body);

    // 2. The stand-in scheme receives exactly one BaRS message with the right headers.
    assert_eventually!(
        20,
        "the scheme receives the referral",
        world.scheme.accepted().len() == 1
    );
    let got = &world.scheme.accepted()[0];
    assert_eq!(got.correlation_id, correlation_id);
    assert!(uuid::Uuid::parse_str(&got.request_id).is_ok());
    assert_ne!(
        got.request_id, request_id,
        "the hop to the scheme is a new request"
    );
    assert!(got.headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/fhir+json"));
    assert!(got.headers["accept"]
        .to_str()
        .unwrap()
        .contains("version=1"));
    let target = decode_header(got.headers["nhsd-target-identifier"].to_str().unwrap());
    assert_eq!(target["system"], "https://fhir.nhs.uk/Id/dos-service-id");
    assert_eq!(target["value"], "2000099001");
    let org = decode_header(got.headers["nhsd-end-user-organisation"].to_str().unwrap());
    assert_eq!(org["identifier"][0]["value"], "A81001");
    assert_eq!(
        decode_header(got.headers["nhsd-requesting-software"].to_str().unwrap())["resourceType"],
        "Device"
    );

    // ... and the right resources.
    let msg = &got.body;
    assert_eq!(msg["type"], "message");
    let header = &msg["entry"][0]["resource"];
    assert_eq!(header["resourceType"], "MessageHeader");
    assert_eq!(header["eventCoding"]["code"], "servicerequest-request");
    assert_eq!(
        header["eventCoding"]["system"],
        "https://fhir.nhs.uk/CodeSystem/message-events-bars"
    );
    assert_eq!(header["reason"]["coding"][0]["code"], "new");
    let resources: Vec<&Value> = msg["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["resource"])
        .collect();
    let of = |t: &str| resources.iter().filter(|r| r["resourceType"] == t).count();
    assert_eq!(
        (
            of("ServiceRequest"),
            of("Patient"),
            of("Task"),
            of("HealthcareService")
        ),
        (1, 1, 1, 1)
    );
    assert!(of("Organization") >= 2, "the practice and the scheme");
    let sr = resources
        .iter()
        .find(|r| r["resourceType"] == "ServiceRequest")
        .unwrap();
    assert_eq!(sr["id"], referral.as_str());
    assert_eq!(sr["code"]["coding"][0]["code"], "871731000000106");
    let patient = resources
        .iter()
        .find(|r| r["resourceType"] == "Patient")
        .unwrap();
    assert_eq!(patient["identifier"][0]["value"], "9990000018");
    let task = resources
        .iter()
        .find(|r| r["resourceType"] == "Task")
        .unwrap();
    assert_eq!(task["status"], "requested");
    assert_eventually!(
        10,
        "the delivery is on the timeline",
        steps(c, &gw.fhir, &referral)
            .await
            .contains(&"delivered".to_owned())
    );

    // 3. The scheme accepts, works and completes the referral with the letter.
    let letter = messages::outcome_letter("9990000018");
    for (status, letter) in [
        ("accepted", None),
        ("in-progress", None),
        ("completed", Some(letter)),
    ] {
        let m = messages::scheme_response(msg, status, None, letter);
        let r = c
            .process_message(
                &gw.fhir,
                &new_id(),
                &correlation_id,
                m.to_string().into_bytes(),
            )
            .await
            .unwrap();
        assert_eq!(r.status, 200, "{status}: {}", r.body);
    }

    // 4. The stand-in GP system receives exactly one letter, for the right patient.
    assert_eventually!(
        20,
        "the GP system files the letter",
        world.gp.filed().len() == 1
    );
    assert_eventually!(
        10,
        "the filing is on the timeline",
        steps(c, &gw.fhir, &referral)
            .await
            .contains(&"letter-filed".to_owned())
    );
    let filed = world.gp.filed();
    assert_eq!(filed.len(), 1);
    assert_eq!(world.gp.received().len(), 1, "no second attempt");
    let doc = &filed[0].body;
    assert_eq!(doc["resourceType"], "DocumentReference");
    assert_eq!(doc["subject"]["identifier"]["value"], "9990000018");
    assert_eq!(
        doc["context"]["related"][0]["identifier"]["value"],
        referral.as_str()
    );
    let html = base64::engine::general_purpose::STANDARD
        .decode(doc["content"][0]["attachment"]["data"].as_str().unwrap())
        .unwrap();
    let html = String::from_utf8(html).unwrap();
    assert!(
        html.contains("Support offered") && html.contains("walking group"),
        "{html}"
    );
    assert_eq!(
        world.scheme.accepted().len(),
        1,
        "still exactly one referral at the scheme"
    );

    // 5. The Task and the timeline.
    let t = c
        .get(&format!("{}/Task?focus=ServiceRequest/{referral}", gw.fhir))
        .await
        .unwrap();
    assert_eq!(t.body["entry"][0]["resource"]["status"], "completed");
    assert_eq!(
        steps(c, &gw.fhir, &referral).await,
        [
            "received",
            "validated",
            "routed",
            "queued",
            "delivered",
            "accepted",
            "in-progress",
            "completed",
            "letter-received",
            "letter-queued",
            "letter-filed"
        ]
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_valid_fixture_is_accepted_and_worked_to_a_filed_letter_by_the_auto_scheme() {
    // The scheme needs the gateway's address before the gateway starts: bind first.
    let listener = crate::helpers::bind().await;
    let addr = listener.local_addr().unwrap();
    let world = World::new(Some(format!("http://{addr}/fhir"))).await;
    let gw = Gateway::start_on(listener, |addr| world.settings(addr)).await;
    let fixtures = [
        "gp-system/referral-new.json",
        "gp-system/referral-new-hillview.json",
        "gp-system/referral-new-lowercase-id-uris.json",
    ];
    let mut referrals = Vec::new();
    for f in fixtures {
        let (r, _, _) = post_fixture(&world.client, &gw.fhir, f).await;
        assert_eq!(r.status, 200, "{f}: {}", r.body);
        referrals.push(referral_id(&r.body));
    }
    assert_eventually!(30, "three letters filed", world.gp.filed().len() == 3);
    for r in &referrals {
        assert_eventually!(
            10,
            "letter-filed on each timeline",
            steps(&world.client, &gw.fhir, r)
                .await
                .contains(&"letter-filed".to_owned())
        );
    }
    assert_eq!(world.scheme.accepted().len(), 3);
    let mut patients: Vec<String> = world
        .gp
        .filed()
        .iter()
        .map(|l| {
            l.body["subject"]["identifier"]["value"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    patients.sort();
    assert_eq!(patients, ["9990000018", "9990000026", "9990000034"]);
    gw.stop().await;
}
