//! Delivery reports from the adapters (`sp.events`) onto referral timelines: delivered,
//! retrying, parked, for referrals, cancellations and letters; and for letters sent over MESH,
//! `letter-sent` and then the acknowledgements and error reports that come back. Each report is
//! recorded once (the inbox de-duplicates by message id) and only then acknowledged.
//!
//! A refusal (a negative acknowledgement, a MESH error report) and a missing acknowledgement
//! ([`watch_letter_acks`]) are alerts: logged at error level (ids only) and counted in
//! `signpost_letter_alerts_total`, besides being on the timeline.

use std::sync::Arc;

use futures_util::stream::{FuturesUnordered, StreamExt};
use signpost_bus::consume::HandlerFuture;
use signpost_bus::envelope::{DeliveryReport, ReportOutcome};
use signpost_bus::{Envelope, Handler, Kind, Outcome};
use tokio::sync::{mpsc, oneshot};

use crate::metrics::Metrics;
use crate::store::{LetterAck, ParkedRow, Store};

/// Records delivery reports. Each report is handed to one task that records every report
/// waiting at that moment in one write transaction: under load one turn at the ledger's writer
/// for a batch of reports, not one turn each (an adapter has up to its prefetch of deliveries,
/// and so of reports, in flight).
pub struct ReportRecorder {
    queue: mpsc::Sender<Pending>,
    store: Store,
}

/// A report waiting for the recorder task, and where its outcome goes.
struct Pending {
    report: DeliveryReport,
    message_id: String,
    referral_id: String,
    about: String,
    target: String,
    answer: oneshot::Sender<Outcome>,
}

/// What the recorder task needs.
#[derive(Clone)]
struct Recorder {
    store: Store,
    metrics: Arc<Metrics>,
    audit: crate::audit::Audit,
}

/// The most reports recorded in one write transaction.
const REPORT_BATCH: usize = 64;

/// The timeline step for a report on a message with this outbox label.
pub fn step_for(label: &str, outcome: ReportOutcome) -> String {
    match (label, outcome) {
        ("referral", ReportOutcome::Delivered) => "delivered".to_owned(),
        ("letter", ReportOutcome::Delivered) => "letter-filed".to_owned(),
        ("cancellation", ReportOutcome::Delivered) => "cancellation-delivered".to_owned(),
        (label, ReportOutcome::Retrying) => format!("{label}-retrying"),
        (label, ReportOutcome::Parked) => format!("{label}-parked"),
        (label, ReportOutcome::Delivered) => format!("{label}-delivered"),
        (label, ReportOutcome::Sent) => format!("{label}-sent"),
        (label, ReportOutcome::Acknowledged) => format!("{label}-acknowledged"),
        (label, ReportOutcome::Rejected) => format!("{label}-rejected"),
    }
}

/// Steps after which a letter waits for no further acknowledgement.
fn settles(step: &str, outcome: ReportOutcome) -> bool {
    outcome == ReportOutcome::Rejected || step == "letter-filed"
}

/// Why a report from a MESH inbox cannot be recorded yet.
const UNMATCHED: &str = "no letter sent over MESH matches the report (yet)";

impl ReportRecorder {
    /// Start the recorder task; it ends, once the batches it began are answered, when this is
    /// dropped.
    pub fn start(store: Store, metrics: Arc<Metrics>, audit: crate::audit::Audit) -> Self {
        let (queue, rx) = mpsc::channel(REPORT_BATCH * 4);
        let recorder = Recorder {
            store: store.clone(),
            metrics,
            audit,
        };
        tokio::spawn(recorder.run(rx));
        ReportRecorder { queue, store }
    }

    async fn record(&self, envelope: &Envelope) -> Outcome {
        if envelope.kind != Kind::DeliveryReport {
            return Outcome::Park(format!(
                "sp.events carries delivery reports, not {:?}",
                envelope.kind
            ));
        }
        let report: DeliveryReport = match envelope.payload_as() {
            Ok(r) => r,
            Err(e) => return Outcome::Park(format!("not a delivery report: {e}")),
        };
        // Reports read from a MESH inbox may know only MESH's id or the letter's id.
        let (referral_id, about) = if envelope.referral_id.is_empty() {
            let about = (!report.about.is_nil()).then(|| report.about.to_string());
            match self
                .store
                .letter_ack(about.as_deref(), report.reference.as_deref())
                .await
            {
                Ok(Some(ack)) => (ack.referral_id, ack.message_id),
                Ok(None) => return Outcome::Retry(UNMATCHED.to_owned()),
                Err(e) => return Outcome::Retry(format!("ledger: {e}")),
            }
        } else {
            (envelope.referral_id.clone(), report.about.to_string())
        };
        let (answer, outcome) = oneshot::channel();
        let pending = Pending {
            report,
            message_id: envelope.message_id.to_string(),
            referral_id,
            about,
            target: envelope.target.clone(),
            answer,
        };
        if self.queue.send(pending).await.is_err() {
            return Outcome::Retry("the report recorder has stopped".to_owned());
        }
        outcome
            .await
            .unwrap_or_else(|_| Outcome::Retry("the report recorder has stopped".to_owned()))
    }
}

impl Recorder {
    /// Take the reports waiting, record them in one transaction and go on to the next while
    /// that one waits for its commit.
    async fn run(self, mut rx: mpsc::Receiver<Pending>) {
        let mut committing = FuturesUnordered::new();
        loop {
            let first = tokio::select! {
                // First, so that a batch just handed over lets go of the writer (the first
                // poll of its commit does) before the next batch asks for it.
                biased;
                Some(()) = committing.next(), if !committing.is_empty() => continue,
                first = rx.recv() => match first {
                    Some(p) => p,
                    None => break,
                },
            };
            // Batches handed over go on being polled meanwhile: on PostgreSQL each holds a
            // pooled connection until its COMMIT's answer is read.
            let begin = self.store.begin();
            tokio::pin!(begin);
            let begun = loop {
                tokio::select! {
                    biased;
                    Some(()) = committing.next(), if !committing.is_empty() => {}
                    begun = &mut begin => break begun,
                }
            };
            let tx = match begun {
                Ok(tx) => tx,
                Err(e) => {
                    let _ = first.answer.send(Outcome::Retry(format!("ledger: {e}")));
                    continue;
                }
            };
            // Whatever came while this waited for the writer goes in the same transaction.
            let mut batch = vec![first];
            while batch.len() < REPORT_BATCH {
                match rx.try_recv() {
                    Ok(p) => batch.push(p),
                    Err(_) => break,
                }
            }
            committing.push(self.record_batch(tx, batch));
        }
        while committing.next().await.is_some() {}
    }

    /// Record `batch` in `tx`, commit it, then answer each report. If a report's writes fail,
    /// the batch is rolled back and each report is recorded again in a transaction of its own,
    /// so that one report that cannot be recorded holds back none of the others.
    async fn record_batch(&self, mut tx: crate::store::WriteTx, batch: Vec<Pending>) {
        let mut audits = Vec::with_capacity(batch.len());
        for p in &batch {
            match self.record_one(&mut tx, p).await {
                Ok(audit) => audits.push(audit),
                Err(_) => break,
            }
        }
        if audits.len() == batch.len() {
            let committed = tx.commit_unhurried().await.map_err(|e| e.to_string());
            for (p, audit) in batch.into_iter().zip(audits) {
                self.answer(p.answer, committed.clone().map(|()| audit))
                    .await;
            }
            return;
        }
        // Dropped uncommitted: rolled back.
        drop(tx);
        // On a task of its own: the writer would be handed to a `begin` of this future's while
        // the recorder's loop, the only one polling it, waits for the writer itself.
        let recorder = self.clone();
        tokio::spawn(async move {
            for p in batch {
                let alone = async {
                    let mut tx = recorder.store.begin().await?;
                    let audit = recorder.record_one(&mut tx, &p).await?;
                    tx.commit_unhurried().await?;
                    Ok::<_, crate::store::StoreError>(audit)
                }
                .await;
                recorder
                    .answer(p.answer, alone.map_err(|e| e.to_string()))
                    .await;
            }
        });
    }

    /// Answer a report once its writes committed (keeping its audit record) or failed.
    async fn answer(
        &self,
        answer: oneshot::Sender<Outcome>,
        result: Result<Option<crate::audit::Record>, String>,
    ) {
        let outcome = match result {
            Ok(audit) => {
                if let Some(record) = audit {
                    self.audit.record(record).await;
                }
                self.metrics.events_recorded.inc();
                Outcome::Delivered("recorded".to_owned())
            }
            Err(e) => Outcome::Retry(format!("ledger: {e}")),
        };
        let _ = answer.send(outcome);
    }

    /// One report's writes; its audit record if it was new (a report delivered twice is
    /// recorded once).
    async fn record_one(
        &self,
        tx: &mut crate::store::WriteTx,
        p: &Pending,
    ) -> Result<Option<crate::audit::Record>, crate::store::StoreError> {
        let report = &p.report;
        let (referral_id, about) = (&p.referral_id, &p.about);
        let label = tx
            .outbox_label(about)
            .await?
            .unwrap_or_else(|| match report.about_kind {
                Kind::LetterFiling => "letter".to_owned(),
                _ => "referral".to_owned(),
            });
        let step = report
            .step
            .clone()
            .unwrap_or_else(|| step_for(&label, report.outcome));
        if !tx.record_inbox(&p.message_id).await? {
            return Ok(None);
        }
        let detail = match report.outcome {
            ReportOutcome::Acknowledged | ReportOutcome::Rejected => report.detail.clone(),
            _ => format!("{} (attempt {})", report.detail, report.attempt),
        };
        tx.add_step(referral_id, &step, &detail).await?;
        if let Some(copy) = &report.parked {
            tx.insert_parked(&ParkedRow {
                // The report's own id: a report delivered twice is kept once.
                id: p.message_id.clone(),
                message_id: report.about.to_string(),
                referral_id: referral_id.clone(),
                target: p.target.clone(),
                origin_queue: copy.origin_queue.clone(),
                label: label.clone(),
                reason: report.detail.clone(),
                attempts: i64::from(report.attempt),
                parked_ms: crate::store::now_ms(),
                envelope: String::from_utf8(copy.envelope.to_bytes()).unwrap_or_default(),
                replayed_ms: None,
            })
            .await?;
        }
        match (report.outcome, &report.reference) {
            (ReportOutcome::Sent, Some(reference)) => {
                tx.letter_sent(&LetterAck {
                    message_id: about.clone(),
                    reference: reference.clone(),
                    referral_id: referral_id.clone(),
                    sent_ms: crate::store::now_ms(),
                })
                .await?
            }
            (outcome, _) if settles(&step, outcome) => tx.letter_settled(about).await?,
            _ => {}
        }
        match report.outcome {
            ReportOutcome::Parked => {
                tracing::error!(referral = %referral_id, target = %p.target, "delivery parked");
            }
            ReportOutcome::Rejected => {
                self.metrics.letter_alerts.inc();
                tracing::error!(referral = %referral_id, %step, "ALERT: the GP side refused a letter");
            }
            _ => {}
        }
        Ok(Some(crate::audit::Record {
            at_ms: crate::store::now_ms(),
            kind: "delivery",
            subtype: format!("{label}-delivery"),
            action: crate::audit::Action::Execute,
            agent: format!("adapter:{}", p.target),
            address: None,
            entity: Some(referral_id.clone()),
            status: match report.outcome {
                ReportOutcome::Delivered | ReportOutcome::Acknowledged => 200,
                ReportOutcome::Retrying | ReportOutcome::Sent => 202,
                ReportOutcome::Parked | ReportOutcome::Rejected => 500,
            },
            detail: step,
        }))
    }
}

/// Raise every letter sent over MESH whose business acknowledgement has not come within
/// `timeout`: a `letter-ack-missing` step and an alert, once per letter (also across
/// replicas). Checks every `every` until `shutdown`.
pub async fn watch_letter_acks(
    store: Store,
    metrics: Arc<Metrics>,
    timeout: std::time::Duration,
    every: std::time::Duration,
    shutdown: tokio_util::sync::CancellationToken,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.cancelled() => return,
        }
        let cutoff =
            crate::store::now_ms() - i64::try_from(timeout.as_millis()).unwrap_or(i64::MAX);
        let overdue = match store.overdue_letters(cutoff).await {
            Ok(rows) => rows,
            Err(error) => {
                tracing::warn!(%error, "letter acknowledgements: cannot read the ledger");
                continue;
            }
        };
        for letter in overdue {
            let raised = async {
                let mut tx = store.begin().await?;
                let first = tx.letter_alerted(&letter.message_id).await?;
                if first {
                    let detail = format!(
                        "No business acknowledgement within {}s of sending MESH message {}: check that the letter reached the practice",
                        timeout.as_secs(),
                        letter.reference
                    );
                    tx.add_step(&letter.referral_id, "letter-ack-missing", &detail)
                        .await?;
                }
                tx.commit().await?;
                Ok::<_, crate::store::StoreError>(first)
            }
            .await;
            match raised {
                Ok(true) => {
                    metrics.letter_alerts.inc();
                    tracing::error!(referral = %letter.referral_id, mesh_message = %letter.reference, "ALERT: no acknowledgement for a letter");
                }
                Ok(false) => {}
                Err(error) => {
                    tracing::warn!(%error, "letter acknowledgements: cannot record an alert")
                }
            }
        }
    }
}

impl Handler for ReportRecorder {
    fn handle<'a>(
        &'a self,
        envelope: &'a Envelope,
        _meta: &'a signpost_bus::consume::Meta,
    ) -> HandlerFuture<'a> {
        Box::pin(self.record(envelope))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_name_what_was_delivered() {
        assert_eq!(step_for("referral", ReportOutcome::Delivered), "delivered");
        assert_eq!(step_for("letter", ReportOutcome::Delivered), "letter-filed");
        assert_eq!(step_for("letter", ReportOutcome::Parked), "letter-parked");
        assert_eq!(
            step_for("referral", ReportOutcome::Retrying),
            "referral-retrying"
        );
    }
}
