//! Bad input gets an OperationOutcome with the right HTTP status, FHIR issue code and NHS
//! `REC_*` code, carries no patient data, and causes nothing downstream.

use serde_json::Value;
use signpost_tests::env::{fixture, read_fixture};

use crate::helpers::{new_id, Gateway, World};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_invalid_fixture_gets_its_documented_status_issue_and_rec_code() {
    let world = World::new(None).await;
    let gw = Gateway::start(|addr| world.settings(addr)).await;
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(fixture("manifest.json")).unwrap()).unwrap();
    let mut checked = 0;
    for f in manifest["fixtures"].as_array().unwrap() {
        let status = f["status"].as_u64().unwrap();
        if status == 200 {
            continue;
        }
        let file = f["file"].as_str().unwrap();
        let rid = new_id();
        let r = world
            .client
            .process_message(&gw.fhir, &rid, &new_id(), read_fixture(file))
            .await
            .unwrap();
        assert_eq!(u64::from(r.status.as_u16()), status, "{file}: {}", r.body);
        assert_eq!(r.body["resourceType"], "OperationOutcome", "{file}");
        let (issue, rec) = r.outcome_codes();
        assert_eq!(issue, f["issue"].as_str().unwrap(), "{file}");
        assert_eq!(rec, f["rec"].as_str().unwrap(), "{file}");
        assert_eq!(
            r.body["issue"][0]["details"]["coding"][0]["system"],
            "https://fhir.nhs.uk/CodeSystem/http-error-codes"
        );
        assert_eq!(
            r.header("x-request-id"),
            Some(rid.as_str()),
            "{file}: X-Request-Id echoed on errors too"
        );
        let text = r.body.to_string();
        for pii in [
            "9990000019",
            "9990000042",
            "9990000018",
            "Example",
            "Nowhere",
            "Digit",
        ] {
            assert!(
                !text.contains(pii),
                "{file}: the OperationOutcome must not carry patient data ({pii}): {text}"
            );
        }
        checked += 1;
    }
    assert!(
        checked >= 10,
        "the manifest lists the invalid fixtures ({checked})"
    );
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    assert!(
        world.scheme.received().is_empty(),
        "nothing invalid reached the scheme"
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_and_media_types_are_enforced_with_rec_codes() {
    let world = World::new(None).await;
    let gw = Gateway::start(|addr| world.settings(addr)).await;
    let c = &world.client;
    let url = format!("{}/$process-message", gw.fhir);
    let body = read_fixture("gp-system/referral-new.json");
    let (rid, cid) = (new_id(), new_id());
    type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, u16, &'a str, &'a str);
    let cases: Vec<Case> = vec![
        (
            "wrong Content-Type",
            vec![
                ("content-type", "text/plain"),
                ("x-request-id", &rid),
                ("x-correlation-id", &cid),
            ],
            415,
            "not-supported",
            "REC_BAD_REQUEST",
        ),
        (
            "XML Content-Type",
            vec![
                ("content-type", "application/fhir+xml"),
                ("x-request-id", &rid),
                ("x-correlation-id", &cid),
            ],
            415,
            "not-supported",
            "REC_BAD_REQUEST",
        ),
        (
            "no Content-Type",
            vec![("x-request-id", &rid), ("x-correlation-id", &cid)],
            415,
            "not-supported",
            "REC_BAD_REQUEST",
        ),
        (
            "missing X-Request-Id",
            vec![
                ("content-type", "application/fhir+json"),
                ("x-correlation-id", &cid),
            ],
            400,
            "required",
            "REC_BAD_REQUEST",
        ),
        (
            "missing X-Correlation-Id",
            vec![
                ("content-type", "application/fhir+json"),
                ("x-request-id", &rid),
            ],
            400,
            "required",
            "REC_BAD_REQUEST",
        ),
        (
            "X-Request-Id not a UUID",
            vec![
                ("content-type", "application/fhir+json"),
                ("x-request-id", "abc"),
                ("x-correlation-id", &cid),
            ],
            400,
            "value",
            "REC_BAD_REQUEST",
        ),
        (
            "unacceptable Accept",
            vec![
                ("content-type", "application/fhir+json"),
                ("accept", "application/fhir+xml"),
                ("x-request-id", &rid),
                ("x-correlation-id", &cid),
            ],
            406,
            "not-supported",
            "REC_NOT_ACCEPTABLE",
        ),
    ];
    for (what, headers, status, issue, rec) in cases {
        let r = c.send("POST", &url, &headers, body.clone()).await.unwrap();
        assert_eq!(r.status.as_u16(), status, "{what}: {}", r.body);
        assert_eq!(
            r.outcome_codes(),
            (issue.to_owned(), rec.to_owned()),
            "{what}"
        );
    }
    // The refused requests used `rid` without processing it: it is still free.
    let ok = c.process_message(&gw.fhir, &rid, &cid, body).await.unwrap();
    assert_eq!(ok.status, 200, "{}", ok.body);

    let r = c.send("GET", &url, &[], Vec::new()).await.unwrap();
    assert_eq!(
        (r.status.as_u16(), r.outcome_codes().1.as_str()),
        (405, "REC_METHOD_NOT_ALLOWED")
    );
    let r = c.get(&format!("{}/Nothing/here", gw.fhir)).await.unwrap();
    assert_eq!(
        (r.status.as_u16(), r.outcome_codes().1.as_str()),
        (404, "REC_NOT_FOUND")
    );
    let r = c.get(&format!("{}/nowhere", gw.base)).await.unwrap();
    assert_eq!(
        (r.status.as_u16(), r.outcome_codes().1.as_str()),
        (404, "REC_NOT_FOUND")
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_over_the_limit_is_refused_without_reading_it_all() {
    let world = World::new(None).await;
    let gw = Gateway::start(|addr| {
        let mut s = world.settings(addr);
        s.http.max_body_bytes = 4096;
        s
    })
    .await;
    let big = vec![b' '; 100_000];
    let r = world
        .client
        .process_message(&gw.fhir, &new_id(), &new_id(), big)
        .await
        .unwrap();
    assert_eq!(r.status.as_u16(), 413, "{}", r.body);
    assert_eq!(r.body["resourceType"], "OperationOutcome");
    gw.stop().await;
}
