//! Delivery you can trust: a scheme that keeps failing gets each referral exactly once; a
//! refused message is parked with its reason and an operator replays it once (admin API and
//! `signpost parked`); a scheme that is down never slows delivery to a healthy one.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use signpost_tests::env::signpost_bin;

use crate::assert_eventually;
use crate::helpers::{bind, post_fixture, referral_id, steps, Gateway, World};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheme_that_fails_five_times_then_recovers_gets_each_referral_exactly_once() {
    let world = World::new(None).await;
    world.scheme.fail_next(5);
    let gw = Gateway::start(|addr| world.settings(addr)).await;
    let mut referrals = Vec::new();
    for f in [
        "gp-system/referral-new.json",
        "gp-system/referral-new-hillview.json",
        "gp-system/referral-new-lowercase-id-uris.json",
    ] {
        let (r, _, _) = post_fixture(&world.client, &gw.fhir, f).await;
        assert_eq!(r.status, 200, "{}", r.body);
        referrals.push(referral_id(&r.body));
    }
    assert_eventually!(
        40,
        "all three delivered",
        world.scheme.accepted().len() == 3
    );
    for r in &referrals {
        assert_eventually!(
            10,
            "delivered on each timeline",
            steps(&world.client, &gw.fhir, r)
                .await
                .contains(&"delivered".to_owned())
        );
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let accepted = world.scheme.accepted();
    assert_eq!(accepted.len(), 3, "each referral exactly once");
    let mut ids: Vec<&str> = accepted.iter().map(|m| m.request_id.as_str()).collect();
    ids.dedup();
    assert_eq!(ids.len(), 3);
    assert_eq!(
        world.scheme.received().len(),
        3 + 5,
        "five failures, then one success each"
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parked_referral_is_listed_with_its_reason_and_replayed_exactly_once() {
    let world = World::new(None).await;
    world.scheme.refuse_next(1);
    let gw = Gateway::start(|addr| world.settings(addr)).await;
    let c = &world.client;
    let (r, _, _) = post_fixture(c, &gw.fhir, "gp-system/referral-new.json").await;
    let referral = referral_id(&r.body);
    let admin = format!("{}/admin/parked", gw.base);
    assert_eventually!(20, "the parked message is in the ledger", {
        matches!(c.get(&admin).await, Ok(r) if r.body["parked"].as_array().is_some_and(|a| a.len() == 1))
    });
    let listed = c
        .get(&format!("{admin}?scheme=scheme-standin-linkworkers"))
        .await
        .unwrap();
    let parked = &listed.body["parked"][0];
    assert_eq!(parked["referral"], referral.as_str());
    assert_eq!(parked["kind"], "referral");
    assert!(
        parked["reason"].as_str().unwrap().contains("HTTP 400"),
        "{parked}"
    );
    assert!(parked["replayedAt"].is_null());
    assert!(
        !listed.body.to_string().contains("9990000018"),
        "the admin view carries no patient data"
    );

    // The command line sees the same ledger.
    let cli = std::process::Command::new(signpost_bin())
        .args(["parked", "list", "--scheme", "scheme-standin"])
        .env("SIGNPOST_DATABASE_URL", world.database_url())
        .env(
            "SIGNPOST_DIRECTORY",
            world.dir.path().join("directory.json"),
        )
        .output()
        .unwrap();
    assert!(
        cli.status.success(),
        "{}",
        String::from_utf8_lossy(&cli.stderr)
    );
    assert!(String::from_utf8_lossy(&cli.stdout).contains(parked["id"].as_str().unwrap()));

    // Replay: delivered once, recorded on the timeline.
    let id = parked["id"].as_str().unwrap();
    let replay = c
        .send("POST", &format!("{admin}/{id}/$replay"), &[], Vec::new())
        .await
        .unwrap();
    assert_eq!(replay.status, 200, "{}", replay.body);
    assert_eq!(replay.body["parked"].as_array().unwrap().len(), 1);
    assert_eventually!(
        20,
        "the replay reaches the scheme",
        world.scheme.accepted().len() == 1
    );
    let first = world.scheme.received()[0].request_id.clone();
    assert_eq!(
        world.scheme.accepted()[0].request_id,
        first,
        "the replay keeps the message id"
    );
    // A second replay of the same message does nothing.
    let again = c
        .send("POST", &format!("{admin}/{id}/$replay"), &[], Vec::new())
        .await
        .unwrap();
    assert_eq!(again.body["parked"].as_array().unwrap().len(), 0);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        world.scheme.received().len(),
        2,
        "refused once, delivered once"
    );
    let s = steps(c, &gw.fhir, &referral).await;
    let at = |step: &str| {
        s.iter()
            .position(|x| x == step)
            .unwrap_or_else(|| panic!("{step} in {s:?}"))
    };
    assert!(
        at("referral-parked") < at("referral-replayed")
            && at("referral-replayed") < at("delivered"),
        "{s:?}"
    );
    let unknown = c
        .send("POST", &format!("{admin}/nope/$replay"), &[], Vec::new())
        .await
        .unwrap();
    assert_eq!(unknown.status, 404);
    gw.stop().await;
}

/// Send `n` copies of a fixture referral, each with its own Bundle.id (tagged with `tag`).
async fn send_copies(world: &World, gw: &Gateway, fixture: &str, tag: char, n: usize) {
    let message: Value =
        serde_json::from_slice(&signpost_tests::env::read_fixture(fixture)).unwrap();
    for i in 0..n {
        let mut m = message.clone();
        m["id"] = json!(format!("6b1f3c1e-8f0a-4c55-9d2e-00000000{tag}{i:03}"));
        let (rid, cid) = (crate::helpers::new_id(), crate::helpers::new_id());
        let r = world
            .client
            .process_message(&gw.fhir, &rid, &cid, m.to_string().into_bytes())
            .await
            .unwrap();
        assert_eq!(r.status, 200, "{}", r.body);
    }
}

/// A stand-in scheme that accepts connections and never answers.
async fn silent_server() -> (String, tokio::task::JoinHandle<()>) {
    let listener = bind().await;
    let url = format!("http://{}/fhir", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s);
        }
    });
    (url, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheme_that_is_down_does_not_slow_delivery_to_a_healthy_one() {
    let world = World::new(None).await;
    let (silent, _task) = silent_server().await;
    // Hillview (A81002) goes to a scheme that never answers; Riverside (A81001) to the stand-in.
    let path = world.dir.path().join("directory.json");
    let mut d: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let entries = d["entry"].as_array_mut().unwrap();
    for e in entries.iter_mut() {
        if e["resource"]["id"] == "scheme-standin-linkworkers" {
            e["resource"]["extension"]
                .as_array_mut()
                .unwrap()
                .retain(|x| x["valueIdentifier"]["value"] == "A81001");
        }
    }
    entries.push(json!({"resource": {"resourceType": "Endpoint", "id": "scheme-down", "status": "active",
        "connectionType": {"system": "http://terminology.hl7.org/CodeSystem/endpoint-connection-type", "code": "hl7-fhir-msg"},
        "payloadType": [{"text": "BaRS"}], "address": silent}}));
    entries.push(json!({"resource": {"resourceType": "Organization", "id": "scheme-down-org", "name": "Scheme that is down",
        "identifier": [{"system": "https://fhir.nhs.uk/Id/ods-organization-code", "value": "X00SP2"}]}}));
    entries.push(json!({"resource": {"resourceType": "HealthcareService", "id": "scheme-down-service", "name": "Down",
        "providedBy": {"reference": "Organization/scheme-down-org"}, "endpoint": [{"reference": "Endpoint/scheme-down"}],
        "extension": [{"url": "https://signpost.example.org/fhir/StructureDefinition/served-practice",
            "valueIdentifier": {"system": "https://fhir.nhs.uk/Id/ods-organization-code", "value": "A81002"}}]}}));
    std::fs::write(&path, d.to_string()).unwrap();
    let gw = Gateway::start(|addr| world.settings(addr)).await;

    // First a backlog for the silent scheme (each attempt waits out the 2 s delivery time-out)...
    send_copies(&world, &gw, "gp-system/referral-new-hillview.json", 'd', 8).await;
    // ...then referrals for the healthy one.
    let started = Instant::now();
    send_copies(&world, &gw, "gp-system/referral-new.json", 'e', 5).await;
    assert_eventually!(
        20,
        "the healthy scheme gets its five",
        world.scheme.accepted().len() == 5
    );
    let took = started.elapsed();
    println!("five referrals reached the healthy scheme in {took:?} while the other scheme hung");
    // Eight hung deliveries in front would cost at least 8 x 2 s if they blocked the queue.
    assert!(took < Duration::from_secs(5), "took {took:?}");
    gw.stop().await;
}
