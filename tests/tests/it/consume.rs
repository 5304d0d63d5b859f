//! The consumer's two limits against a real broker: `prefetch` handler calls at once (requests
//! in flight to the far end), while the broker may hand over `BUFFER_FACTOR` times as many, so
//! that deliveries waiting for their report's confirm and their ack hold no request slot.

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::time::Duration;

use lapin::options::{BasicPublishOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties};
use signpost_bus::consume::{
    consume_queue, ConsumeSettings, Handler, HandlerFuture, Meta, Outcome, RetryPolicy,
    BUFFER_FACTOR,
};
use signpost_bus::{Envelope, Kind};
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
async fn prefetch_bounds_the_handler_calls_and_the_broker_hands_over_four_times_as_many() {
    let vhost = Vhost::create("consume").unwrap();
    let conn = Arc::new(
        Connection::connect(&vhost.amqp_url(), ConnectionProperties::default())
            .await
            .unwrap(),
    );
    let channel = conn.create_channel().await.unwrap();
    let queue = "work";
    channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let total = 30;
    for i in 0..total {
        let e = Envelope::new(Kind::ReferralMessage, "c", format!("r-{i}"), "t", None, i);
        channel
            .basic_publish(
                "".into(),
                queue.into(),
                BasicPublishOptions::default(),
                &e.to_bytes(),
                e.properties(),
            )
            .await
            .unwrap()
            .await
            .unwrap();
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
        report: false,
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
        "the broker hands over four times prefetch while the handler is held",
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
