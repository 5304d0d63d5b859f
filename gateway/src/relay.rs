//! The outbox relay: publishes committed outbox rows with publisher confirms and marks them
//! sent. (The timeline's "queued" step is written with the outbox row itself, so that it can
//! never appear after the "delivered" that the adapter reports.) It runs beside the HTTP server, wakes on
//! every commit (and every second regardless), and on start publishes whatever an earlier run
//! left unsent. A crash between the broker's confirm and the mark means the row is published
//! again; the message keeps its id, so consumers de-duplicate it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use signpost_bus::envelope::Head;
use signpost_bus::publish::{Outgoing, Publisher};
use signpost_bus::{amqp, topology, BusError};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::store::{OutboxRow, Store};

/// Rows read, published and marked at a time. Smaller batches let the relay fall behind: in
/// A/B pairs of `signpost-bench --quick` at 64 connections, 256 rows delivered 2,350-2,540
/// referrals/s, 64 rows 2,110-2,420 and 32 rows 1,780-1,840, while the gateway accepted more
/// (up to 3,670/s) with the outbox growing behind it.
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

    /// Publish one batch of unsent rows; returns how many were handled. A row no queue is bound
    /// for (its target left the directory) is set aside with a timeline step instead of blocking
    /// every row behind it; a broker failure stops the batch for a reconnect.
    async fn publish_batch(
        &self,
        publisher: &Publisher,
    ) -> Result<usize, Box<dyn std::error::Error + Send + Sync>> {
        let mut rows = self.store.unsent(BATCH).await?;
        if rows.is_empty() {
            return Ok(0);
        }
        // Each envelope moves into its message: the batch holds one copy of what it sends.
        let envelopes: Vec<String> = rows
            .iter_mut()
            .map(|r| std::mem::take(&mut r.envelope))
            .collect();
        // Rows are read as soon as they are committed; none leaves before it is on disk.
        self.store.synced().await?;
        let mut set_aside: Vec<(&OutboxRow, String)> = Vec::new();
        let mut publishable = Vec::with_capacity(rows.len());
        let mut msgs = Vec::with_capacity(rows.len());
        for (row, envelope) in rows.iter().zip(envelopes) {
            match outgoing(row, envelope) {
                Ok(m) => {
                    publishable.push(row);
                    msgs.push(m);
                }
                Err(e) => set_aside.push((row, format!("the stored envelope is unreadable: {e}"))),
            }
        }
        let results = publisher.publish_all(&msgs).await;
        let mut sent = 0;
        let mut failure = None;
        let mut done = Vec::new();
        for (row, result) in publishable.into_iter().zip(results) {
            match result {
                Ok(()) => done.push(row),
                Err(BusError::Unroutable { exchange, routing_key }) => set_aside.push((
                    row,
                    format!("no queue is bound on {exchange} for {routing_key}; the message is held in the ledger"),
                )),
                Err(e) => {
                    failure.get_or_insert(e);
                }
            }
        }
        let mut tx = self.store.begin().await?;
        for row in &done {
            tx.mark_sent(&row.id, None).await?;
            sent += 1;
        }
        for (row, why) in &set_aside {
            tracing::error!(referral = %row.referral_id, routing_key = %row.routing_key, "outbox row set aside");
            if tx.mark_sent(&row.id, Some(why)).await? {
                tx.add_step(&row.referral_id, &format!("{}-unroutable", row.label), why)
                    .await?;
            }
        }
        // No one waits on the marks: they ride on the next commit of a request's writes. Until
        // then this relay waits too, so it never reads a row it published as unsent.
        tx.commit_unhurried().await?;
        self.metrics.outbox_published.add(sent as u64);
        match failure {
            Some(e) => Err(Box::new(e)),
            None => Ok(sent + set_aside.len()),
        }
    }
}

/// `row`'s message, its body the row's `envelope`.
fn outgoing(
    row: &OutboxRow,
    envelope: String,
) -> Result<Outgoing<'_>, signpost_bus::envelope::EnvelopeError> {
    // Only the head: the payload goes out as stored, unread. The envelope's own message id,
    // also for a replay (whose outbox row has an id of its own).
    let properties = Head::from_bytes(envelope.as_bytes())?.properties();
    Ok(Outgoing {
        exchange: &row.exchange,
        routing_key: &row.routing_key,
        body: envelope.into_bytes(),
        properties,
    })
}
