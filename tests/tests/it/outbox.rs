//! The outbox relay against a real broker: it publishes what is committed, and a row that no
//! queue is bound for (or whose routing key AMQP cannot carry) is set aside with a timeline step
//! instead of holding up the rows behind it.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use signpost_bus::{topology, Envelope, Kind};
use signpost_gateway::metrics::Metrics;
use signpost_gateway::relay::Relay;
use signpost_gateway::store::{OutboxRow, Store};
use signpost_tests::broker::Vhost;
use signpost_tests::env::TempDir;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::assert_eventually;

fn row(referral: &str, target: &str) -> OutboxRow {
    let e = Envelope::new(
        Kind::ReferralMessage,
        "c",
        referral,
        target,
        None,
        serde_json::json!({}),
    );
    OutboxRow {
        id: e.message_id.to_string(),
        exchange: topology::REFERRALS_EXCHANGE.into(),
        routing_key: target.into(),
        referral_id: referral.into(),
        label: "referral".into(),
        envelope: String::from_utf8(e.to_bytes()).unwrap(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unroutable_outbox_row_is_set_aside_and_the_rows_behind_it_are_published() {
    let vhost = Vhost::create("signpost-outbox").unwrap();
    let dir = TempDir::new("signpost-outbox");
    let store = Store::connect(&format!("sqlite://{}/ledger.db", dir.path().display()))
        .await
        .unwrap();
    let mut tx = store.begin().await.unwrap();
    tx.add_outbox(&row("r-gone", "scheme-that-left"))
        .await
        .unwrap();
    // A routing key longer than AMQP's 255 bytes is refused before it is sent, without
    // stopping the batch.
    let mut too_long = row("r-long", "scheme-a");
    too_long.routing_key = "k".repeat(300);
    tx.add_outbox(&too_long).await.unwrap();
    tx.add_outbox(&row("r-ok", "scheme-a")).await.unwrap();
    tx.commit().await.unwrap();

    let stop = CancellationToken::new();
    let relay = tokio::spawn(
        Relay {
            store: store.clone(),
            amqp_url: vhost.amqp_url(),
            spec: topology::Spec {
                referral_targets: vec!["scheme-a".into()],
                record_targets: vec![],
                retry_delays: vec![Duration::from_secs(1)],
            },
            wake: Arc::new(Notify::new()),
            broker_up: Arc::new(AtomicBool::new(false)),
            metrics: Arc::new(Metrics::default()),
        }
        .run(stop.clone()),
    );
    assert_eventually!(
        20,
        "the outbox empties",
        store.unsent_count().await.unwrap() == 0
    );
    assert_eventually!(
        10,
        "the routable row is in its queue",
        vhost.queue_depth("sp.referrals.scheme-a") == Some(1)
    );
    for referral in ["r-gone", "r-long"] {
        let steps: Vec<String> = store
            .timeline(referral)
            .await
            .unwrap()
            .into_iter()
            .map(|s| s.step)
            .collect();
        assert_eq!(steps, ["referral-unroutable"], "{referral}");
    }
    assert!(store.timeline("r-ok").await.unwrap().is_empty());
    stop.cancel();
    relay.await.unwrap();
}
