//! Scale-out: `signpost gateway` and `signpost adapter NAME...` as separate processes close
//! the loop together through the broker.

use signpost_tests::messages;

use crate::assert_eventually;
use crate::helpers::{new_id, post_fixture, referral_id, steps, Process, World};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_and_the_adapters_close_the_loop_as_separate_processes() {
    let world = World::new(None).await;
    let env = vec![
        ("SIGNPOST_AMQP_URL", world.vhost.amqp_url()),
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
    ];
    let gateway = Process::spawn(&["gateway"], &env);
    let _scheme_side = Process::spawn(&["adapter", "fhir-messaging"], &env);
    let _gp_side = Process::spawn(&["adapter", "fhir-document"], &env);
    gateway.wait_for("/readyz").await;
    let fhir = format!("{}/fhir", gateway.base);
    let c = &world.client;

    let (r, _, cid) = post_fixture(c, &fhir, "gp-system/referral-new.json").await;
    assert_eq!(r.status, 200, "{}", r.body);
    let referral = referral_id(&r.body);
    assert_eventually!(
        30,
        "the scheme adapter delivers",
        world.scheme.accepted().len() == 1
    );
    let done = messages::scheme_response(&world.scheme.accepted()[0].body, "accepted", None, None);
    assert_eq!(
        c.process_message(&fhir, &new_id(), &cid, done.to_string().into_bytes())
            .await
            .unwrap()
            .status,
        200
    );
    let done = messages::scheme_response(
        &world.scheme.accepted()[0].body,
        "completed",
        None,
        Some(messages::outcome_letter("9990000018")),
    );
    assert_eq!(
        c.process_message(&fhir, &new_id(), &cid, done.to_string().into_bytes())
            .await
            .unwrap()
            .status,
        200
    );
    assert_eventually!(
        30,
        "the GP adapter files the letter",
        world.gp.filed().len() == 1
    );
    assert_eventually!(
        10,
        "letter-filed on the timeline",
        steps(c, &fhir, &referral)
            .await
            .contains(&"letter-filed".to_owned())
    );
}
