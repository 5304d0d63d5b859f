//! The outbox relay: publishes committed outbox rows with publisher confirms and marks them
//! sent. (The timeline's "queued" step is written with the outbox row itself, so that it can
//! never appear after the "delivered" that the adapter reports.) It runs beside the HTTP server, wakes on
//! every commit (and every second regardless), and on start publishes whatever an earlier run
//! left unsent. A crash between the broker's confirm and the mark means the row is published
//! again; the message keeps its id, so consumers de-duplicate it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use lapin::types::ShortString;
use signpost_bus::publish::{Outgoing, Publisher};
use signpost_bus::{amqp, topology, Envelope};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::store::{OutboxRow, Store};

const BATCH: i64 = 256;

pub struct Relay {
    pub store: Store,
    pub amqp_url: String,
    pub spec: topology::Spec,
    pub wake: Arc<Notify>,
    pub broker_up: Arc<AtomicBool>,
    pub metrics: Arc<Metrics>,
}

impl Relay {
    /// Run until `shutdown`; on shutdown, drain what is already committed if the broker is up.
    pub async fn run(self, shutdown: CancellationToken) {
        loop {
            let Some(conn) =
                amqp::connect_with_backoff(&self.amqp_url, "signpost-relay", &shutdown).await
            else {
                return;
            };
            let ready = async {
                let channel = conn.create_channel().await?;
                topology::declare(&channel, &self.spec).await?;
                Publisher::open(&conn).await
            }
            .await;
            let publisher = match ready {
                Ok(p) => p,
                Err(error) => {
                    tracing::error!(%error, "relay: cannot prepare the broker");
                    amqp::close(&conn, "retry").await;
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                        _ = shutdown.cancelled() => return,
                    }
                }
            };
            self.broker_up.store(true, Ordering::Relaxed);
            tracing::info!("relay: connected");
            let stopped = self.pump(&publisher, &shutdown).await;
            self.broker_up.store(false, Ordering::Relaxed);
            amqp::close(&conn, "bye").await;
            if stopped {
                return;
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                _ = shutdown.cancelled() => return,
            }
        }
    }

    /// Publish until the broker fails (`false`) or shutdown (`true`, after a last drain).
    async fn pump(&self, publisher: &Publisher, shutdown: &CancellationToken) -> bool {
        loop {
            match self.publish_batch(publisher).await {
                Ok(n) if n as i64 == BATCH => continue,
                Ok(_) => {}
                Err(error) => {
                    tracing::warn!(%error, "relay: publishing failed; reconnecting");
                    return false;
                }
            }
            if shutdown.is_cancelled() {
                return true;
            }
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = shutdown.cancelled() => {}
            }
        }
    }

    /// Publish one batch of unsent rows; returns how many were sent.
    async fn publish_batch(
        &self,
        publisher: &Publisher,
    ) -> Result<usize, Box<dyn std::error::Error + Send + Sync>> {
        let rows = self.store.unsent(BATCH).await?;
        if rows.is_empty() {
            return Ok(0);
        }
        let msgs: Vec<Outgoing<'_>> = rows.iter().map(outgoing).collect::<Result<_, _>>()?;
        let results = publisher.publish_all(&msgs).await;
        let mut tx = self.store.begin().await?;
        let mut sent = 0;
        let mut failure = None;
        for (row, result) in rows.iter().zip(results) {
            match result {
                Ok(()) => {
                    tx.mark_sent(&row.id).await?;
                    sent += 1;
                }
                Err(e) => {
                    failure.get_or_insert(e);
                }
            }
        }
        tx.commit().await?;
        self.metrics.outbox_published.add(sent as u64);
        match failure {
            Some(e) => Err(Box::new(e)),
            None => Ok(sent),
        }
    }
}

fn outgoing(row: &OutboxRow) -> Result<Outgoing<'_>, signpost_bus::envelope::EnvelopeError> {
    let envelope = Envelope::from_bytes(row.envelope.as_bytes())?;
    let properties = envelope
        .properties()
        .with_message_id(ShortString::from(row.id.clone()));
    Ok(Outgoing {
        exchange: &row.exchange,
        routing_key: &row.routing_key,
        body: row.envelope.clone().into_bytes(),
        properties,
    })
}
