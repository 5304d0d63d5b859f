//! The BaRS processing budget is kept at commit: a referral that cannot be made durable in time
//! is answered 408 `REC_TIMEOUT` and takes no effect, so the sender's retry with the same
//! `X-Request-Id` is processed afresh (200) and the scheme gets it once. Before, the work went on
//! after the 408, committed later, and the retry was refused as a duplicate of it (found by the
//! chaos suite under load).

use std::time::Duration;

use serde_json::{json, Value};
use signpost_tests::env::read_fixture;
use sqlx::Connection;

use crate::assert_eventually;
use crate::helpers::{new_id, Gateway, World};

fn fresh_referral() -> Vec<u8> {
    let mut bundle: Value =
        serde_json::from_slice(&read_fixture("gp-system/referral-new.json")).expect("fixture");
    bundle["id"] = json!(new_id());
    bundle.to_string().into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_referral_that_cannot_commit_within_the_budget_gets_408_and_its_retry_is_accepted_once() {
    let world = World::new(None).await;
    let gw = Gateway::start(|addr| {
        let mut s = world.settings(addr);
        s.http.request_timeout_ms = 1_000;
        s
    })
    .await;
    let c = &world.client;
    let warm = c
        .process_message(&gw.fhir, &new_id(), &new_id(), fresh_referral())
        .await
        .expect("the gateway answers");
    assert_eq!(warm.status, 200, "{}", warm.body);

    // Another process holds the ledger's write lock (as a backup or a slow disk might), longer
    // than the budget.
    let mut other = sqlx::SqliteConnection::connect(&world.database_url())
        .await
        .expect("open the ledger");
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut other)
        .await
        .expect("take the write lock");
    let (request_id, correlation_id, body) = (new_id(), new_id(), fresh_referral());
    let first = c
        .process_message(&gw.fhir, &request_id, &correlation_id, body.clone())
        .await
        .expect("the gateway answers");
    assert_eq!(first.status, 408, "{}", first.body);
    assert_eq!(
        first.outcome_codes(),
        ("timeout".into(), "REC_TIMEOUT".into())
    );

    // The lock goes; give anything left of the first attempt time to (wrongly) finish.
    sqlx::query("ROLLBACK")
        .execute(&mut other)
        .await
        .expect("release the lock");
    drop(other);
    tokio::time::sleep(Duration::from_secs(2)).await;

    let retry = c
        .process_message(&gw.fhir, &request_id, &correlation_id, body)
        .await
        .expect("the gateway answers");
    assert_eq!(
        retry.status, 200,
        "the retry of a request answered 408 must be processed, not refused as a duplicate: {}",
        retry.body
    );
    let delivered = || {
        world
            .scheme
            .accepted()
            .iter()
            .filter(|r| r.correlation_id == correlation_id)
            .count()
    };
    assert_eventually!(20, "the referral reaches the scheme", delivered() == 1);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(delivered(), 1, "and only once");
}
