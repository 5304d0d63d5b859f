//! Reading back: the CapabilityStatement, referrals and Tasks by id and by search, the
//! directory, health and readiness.

use crate::helpers::{post_fixture, referral_id, Gateway, World};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn referrals_tasks_and_the_directory_read_back_through_the_fhir_api() {
    let world = World::new(None).await;
    let gw = Gateway::start(|addr| world.settings(addr)).await;
    let c = &world.client;

    let meta = c.get(&format!("{}/metadata", gw.fhir)).await.unwrap();
    assert_eq!(meta.body["resourceType"], "CapabilityStatement");
    assert_eq!(meta.version, http::Version::HTTP_11);
    let h2 = signpost_tests::client::Client::http2()
        .get(&format!("{}/metadata", gw.fhir))
        .await
        .unwrap();
    assert_eq!(
        (h2.status.as_u16(), h2.version),
        (200, http::Version::HTTP_2),
        "HTTP/2 is served too"
    );
    assert_eq!(h2.body["resourceType"], "CapabilityStatement");
    let defs: Vec<&str> = meta.body["messaging"][0]["supportedMessage"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["definition"].as_str().unwrap())
        .collect();
    assert!(defs.contains(
        &"https://fhir.nhs.uk/MessageDefinition/bars-message-servicerequest-request-referral"
    ));
    assert!(defs.contains(
        &"https://fhir.nhs.uk/MessageDefinition/bars-message-servicerequest-response-referral"
    ));

    let (r, _, _) = post_fixture(c, &gw.fhir, "gp-system/referral-new.json").await;
    let id = referral_id(&r.body);
    let sr = c
        .get(&format!("{}/ServiceRequest/{id}", gw.fhir))
        .await
        .unwrap();
    assert_eq!(sr.status, 200);
    assert_eq!(sr.body["id"], id.as_str());
    assert_eq!(sr.body["subject"]["identifier"]["value"], "9990000018");

    let found = c.get(&format!("{}/ServiceRequest?patient:identifier=https%3A%2F%2Ffhir.nhs.uk%2FId%2Fnhs-number%7C9990000018", gw.fhir)).await.unwrap();
    assert_eq!(
        (found.body["type"].as_str(), found.body["total"].as_u64()),
        (Some("searchset"), Some(1))
    );
    let none = c
        .get(&format!(
            "{}/ServiceRequest?patient:identifier=https://fhir.nhs.uk/Id/nhs-number|9990000026",
            gw.fhir
        ))
        .await
        .unwrap();
    assert_eq!(none.body["total"], 0);

    let tasks = c
        .get(&format!("{}/Task?focus=ServiceRequest/{id}", gw.fhir))
        .await
        .unwrap();
    let task = &tasks.body["entry"][0]["resource"];
    assert_eq!(task["focus"]["reference"], format!("ServiceRequest/{id}"));
    let by_id = c
        .get(&format!(
            "{}/Task/{}",
            gw.fhir,
            task["id"].as_str().unwrap()
        ))
        .await
        .unwrap();
    assert_eq!(by_id.body["status"], "requested");
    let tl = c
        .get(&format!(
            "{}/Task/{}/$timeline",
            gw.fhir,
            task["id"].as_str().unwrap()
        ))
        .await
        .unwrap();
    assert_eq!(tl.body["resourceType"], "List");
    assert_eq!(tl.body["entry"][0]["flag"]["coding"][0]["code"], "received");

    let missing = c
        .get(&format!(
            "{}/Task/00000000-0000-4000-8000-000000000000",
            gw.fhir
        ))
        .await
        .unwrap();
    assert_eq!(
        (missing.status.as_u16(), missing.outcome_codes().1.as_str()),
        (404, "REC_NOT_FOUND")
    );
    let services = c
        .get(&format!("{}/HealthcareService", gw.fhir))
        .await
        .unwrap();
    assert_eq!(services.body["total"], 1);
    let ep = c
        .get(&format!("{}/Endpoint/scheme-standin", gw.fhir))
        .await
        .unwrap();
    assert_eq!(ep.body["connectionType"]["code"], "hl7-fhir-msg");

    assert_eq!(
        c.get(&format!("{}/healthz", gw.base)).await.unwrap().status,
        200
    );
    let ready = c.get(&format!("{}/readyz", gw.base)).await.unwrap();
    assert_eq!(
        (
            ready.status.as_u16(),
            ready.body["broker"].as_bool(),
            ready.body["store"].as_bool()
        ),
        (200, Some(true), Some(true))
    );
    let metrics = c
        .send("GET", &format!("{}/metrics", gw.base), &[], Vec::new())
        .await
        .unwrap();
    assert_eq!(metrics.status, 200);
    gw.stop().await;
}
