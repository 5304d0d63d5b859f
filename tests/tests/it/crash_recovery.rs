//! A gateway killed (SIGKILL) after it answered a referral but before the referral was
//! delivered: on restart, the outbox publishes it and the scheme gets it exactly once.

use std::time::Duration;

use crate::assert_eventually;
use crate::helpers::{post_fixture, referral_id, steps, Process, World};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_killed_between_accepting_and_delivering_delivers_exactly_once_after_restart() {
    let world = World::new(None).await;
    let env = |amqp: String| {
        vec![
            ("SIGNPOST_AMQP_URL", amqp),
            ("SIGNPOST_DATABASE_URL", world.database_url()),
            (
                "SIGNPOST_DIRECTORY",
                world
                    .dir
                    .path()
                    .join("directory.json")
                    .display()
                    .to_string(),
            ),
            ("SIGNPOST_RETRY_DELAYS_MS", "200,400".to_owned()),
        ]
    };
    // First life: no broker reachable, so the accepted referral can only wait in the outbox.
    let mut first = Process::spawn(
        &["gateway"],
        &env("amqp://guest:guest@127.0.0.1:1/%2f".to_owned()),
    );
    first.wait_for("/healthz").await;
    let (r, _, _) = post_fixture(
        &world.client,
        &format!("{}/fhir", first.base),
        "gp-system/referral-new.json",
    )
    .await;
    assert_eq!(r.status, 200, "accepted and durable: {}", r.body);
    let referral = referral_id(&r.body);
    first.kill();
    assert!(
        world.scheme.received().is_empty(),
        "nothing was delivered before the kill"
    );

    // Second life: broker reachable, adapters on.
    let second = Process::spawn(&["run"], &env(world.vhost.amqp_url()));
    second.wait_for("/readyz").await;
    assert_eventually!(
        30,
        "the referral reaches the scheme",
        world.scheme.accepted().len() == 1
    );
    let fhir = format!("{}/fhir", second.base);
    assert_eventually!(
        10,
        "delivered on the timeline",
        steps(&world.client, &fhir, &referral)
            .await
            .contains(&"delivered".to_owned())
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(world.scheme.received().len(), 1, "delivered exactly once");
    assert_eq!(
        world.scheme.accepted()[0].body["entry"][1]["resource"]["id"]
            .as_str()
            .map(str::to_owned),
        Some(referral.clone())
    );
}
