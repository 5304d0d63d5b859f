//! The consumer against a real broker: its two limits, `prefetch` handler calls at once
//! (requests in flight to the far end) while the broker may hand over `BUFFER_FACTOR` times as
//! many, so that deliveries waiting for their report's confirm and their ack hold no request
//! slot; and where its delivery reports go when the recorder is in the same process.

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lapin::options::{BasicGetOptions, BasicPublishOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties};
use signpost_bus::consume::{
    consume_queue, report_id, ConsumeSettings, Handler, HandlerFuture, Meta, Outcome, Reports,
    RetryPolicy, BUFFER_FACTOR,
};
use signpost_bus::envelope::{DeliveryReport, ReportOutcome};
use signpost_bus::{topology, Envelope, Kind};
use signpost_tests::broker::Vhost;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::assert_eventually;

/// A handler that waits at a gate, counting the calls at once.
struct Gated {
    gate: Semaphore,
    now: AtomicUsize,
    most: AtomicUsize,
    done: AtomicUsize,
}

impl Handler for Gated {
    fn handle<'a>(&'a self, _envelope: &'a Envelope, _meta: &'a Meta) -> HandlerFuture<'a> {
        Box::pin(async move {
            let now = self.now.fetch_add(1, SeqCst) + 1;
            self.most.fetch_max(now, SeqCst);
            if let Ok(p) = self.gate.acquire().await {
                p.forget();
            }
            self.now.fetch_sub(1, SeqCst);
            self.done.fetch_add(1, SeqCst);
            Outcome::Delivered("handled".to_owned())
        })
    }
}

/// A plain (classic, not durable) queue, reached through the default exchange.
async fn declare_queue(channel: &lapin::Channel, queue: &str) {
    channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
}

/// Publish `envelope` to `queue` through the default exchange and wait for the broker.
async fn publish(channel: &lapin::Channel, queue: &str, envelope: &Envelope) {
    channel
        .basic_publish(
            "".into(),
            queue.into(),
            BasicPublishOptions::default(),
            &envelope.to_bytes(),
            envelope.properties(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
}

fn unacknowledged(vhost: &str, queue: &str) -> Option<u64> {
    let out = std::process::Command::new("rabbitmqctl")
        .args([
            "-q",
            "list_queues",
            "-p",
            vhost,
            "name",
            "messages_unacknowledged",
        ])
        .args(["--no-table-headers"])
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout).lines().find_map(|l| {
        let mut parts = l.split_whitespace();
        (parts.next()? == queue).then(|| parts.next()?.parse().ok())?
    })
}

#[tokio::test]
async fn prefetch_bounds_the_handler_calls_and_the_broker_hands_over_buffer_factor_times_as_many() {
    let vhost = Vhost::create("consume").unwrap();
    let conn = Arc::new(
        Connection::connect(&vhost.amqp_url(), ConnectionProperties::default())
            .await
            .unwrap(),
    );
    let channel = conn.create_channel().await.unwrap();
    let queue = "work";
    declare_queue(&channel, queue).await;
    let total = 30;
    for i in 0..total {
        let e = Envelope::new(Kind::ReferralMessage, "c", format!("r-{i}"), "t", None, i);
        publish(&channel, queue, &e).await;
    }

    let handler = Arc::new(Gated {
        gate: Semaphore::new(0),
        now: AtomicUsize::new(0),
        most: AtomicUsize::new(0),
        done: AtomicUsize::new(0),
    });
    let prefetch = 2u16;
    let settings = ConsumeSettings {
        prefetch,
        reports: Reports::Off,
        ..ConsumeSettings::default()
    };
    let shutdown = CancellationToken::new();
    let consumer = tokio::spawn({
        let (conn, handler, shutdown) = (conn.clone(), handler.clone(), shutdown.clone());
        async move {
            consume_queue(
                &conn,
                queue,
                handler,
                RetryPolicy::default(),
                Arc::new(settings),
                shutdown,
            )
            .await
        }
    });

    let buffered = u64::from(prefetch * BUFFER_FACTOR);
    assert_eventually!(
        10,
        "the broker hands over BUFFER_FACTOR times prefetch while the handler is held",
        unacknowledged(&vhost.name, queue) == Some(buffered)
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(handler.now.load(SeqCst), usize::from(prefetch));
    assert_eq!(unacknowledged(&vhost.name, queue), Some(buffered));

    handler.gate.add_permits(total);
    assert_eventually!(
        10,
        "every message handled and acknowledged",
        handler.done.load(SeqCst) == total && vhost.queue_depth(queue) == Some(0)
    );
    assert_eq!(handler.most.load(SeqCst), usize::from(prefetch));
    shutdown.cancel();
    consumer.await.unwrap().unwrap();
    conn.close(200, "bye".into()).await.unwrap();
}

/// Delivers every message at once.
struct Deliver;

impl Handler for Deliver {
    fn handle<'a>(&'a self, _envelope: &'a Envelope, _meta: &'a Meta) -> HandlerFuture<'a> {
        Box::pin(async { Outcome::Delivered("handled".to_owned()) })
    }
}

/// A recorder in the same process: keeps the reports it is handed, and refuses (as a ledger it
/// cannot reach would) those about referral `refused`.
#[derive(Default)]
struct Recorder {
    seen: Mutex<Vec<Envelope>>,
}

impl Handler for Recorder {
    fn handle<'a>(&'a self, envelope: &'a Envelope, _meta: &'a Meta) -> HandlerFuture<'a> {
        Box::pin(async move {
            self.seen.lock().unwrap().push(envelope.clone());
            if envelope.referral_id == "refused" {
                Outcome::Retry("ledger: unreachable".to_owned())
            } else {
                Outcome::Delivered("recorded".to_owned())
            }
        })
    }
}

#[tokio::test]
async fn local_reports_go_to_the_recorder_and_on_sp_events_only_when_it_refuses_them() {
    let vhost = Vhost::create("local-reports").unwrap();
    let conn = Arc::new(
        Connection::connect(&vhost.amqp_url(), ConnectionProperties::default())
            .await
            .unwrap(),
    );
    let channel = conn.create_channel().await.unwrap();
    let spec = topology::Spec {
        referral_targets: vec![],
        record_targets: vec![],
        retry_delays: vec![Duration::from_secs(1)],
    };
    topology::declare(&channel, &spec).await.unwrap();
    let queue = "work";
    declare_queue(&channel, queue).await;
    let kept = Envelope::new(Kind::ReferralMessage, "c", "kept", "t", None, 1);
    let refused = Envelope::new(Kind::ReferralMessage, "c", "refused", "t", None, 2);
    for e in [&kept, &refused] {
        publish(&channel, queue, e).await;
    }

    let recorder = Arc::new(Recorder::default());
    let settings = ConsumeSettings {
        reports: Reports::Local(recorder.clone()),
        ..ConsumeSettings::default()
    };
    let shutdown = CancellationToken::new();
    let consumer = tokio::spawn({
        let (conn, shutdown) = (conn.clone(), shutdown.clone());
        async move {
            consume_queue(
                &conn,
                queue,
                Arc::new(Deliver),
                RetryPolicy::default(),
                Arc::new(settings),
                shutdown,
            )
            .await
        }
    });
    assert_eventually!(
        10,
        "both messages delivered and acknowledged, and the refused report on sp.events",
        vhost.queue_depth(queue) == Some(0)
            && vhost.queue_depth(topology::EVENTS_QUEUE) == Some(1)
            && unacknowledged(&vhost.name, queue) == Some(0)
    );
    shutdown.cancel();
    consumer.await.unwrap().unwrap();

    // The recorder was handed both reports, each under its stable id.
    let seen = recorder.seen.lock().unwrap().clone();
    let mut about: Vec<_> = seen.iter().map(|e| e.referral_id.as_str()).collect();
    about.sort_unstable();
    assert_eq!(about, ["kept", "refused"]);
    for report in &seen {
        assert_eq!(report.kind, Kind::DeliveryReport);
        let body: DeliveryReport = report.payload_as().unwrap();
        assert_eq!(body.outcome, ReportOutcome::Delivered);
        let original = if report.referral_id == "kept" {
            &kept
        } else {
            &refused
        };
        assert_eq!(body.about, original.message_id);
        assert_eq!(
            report.message_id,
            report_id(original.message_id, ReportOutcome::Delivered, 1)
        );
    }

    // Only the refused one went on sp.events, as the same report.
    let on_bus = channel
        .basic_get(topology::EVENTS_QUEUE.into(), BasicGetOptions::default())
        .await
        .unwrap()
        .expect("a report on sp.events");
    let on_bus = Envelope::from_bytes(&on_bus.delivery.data).unwrap();
    assert_eq!(on_bus.referral_id, "refused");
    assert_eq!(
        on_bus.message_id,
        report_id(refused.message_id, ReportOutcome::Delivered, 1)
    );
    conn.close(200, "bye".into()).await.unwrap();
}
