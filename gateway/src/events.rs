//! Delivery reports from the adapters (`sp.events`) onto referral timelines: delivered,
//! retrying, parked, for referrals, cancellations and letters; and for letters sent over MESH,
//! `letter-sent` and then the acknowledgements and error reports that come back. Each report is
//! recorded once (the inbox de-duplicates by message id) and only then acknowledged.
//!
//! A refusal (a negative acknowledgement, a MESH error report) and a missing acknowledgement
//! ([`watch_letter_acks`]) are alerts: logged at error level (ids only) and counted in
//! `signpost_letter_alerts_total`, besides being on the timeline.

use std::sync::Arc;

use signpost_bus::consume::HandlerFuture;
use signpost_bus::envelope::{DeliveryReport, ReportOutcome};
use signpost_bus::{Envelope, Handler, Kind, Outcome};

use crate::metrics::Metrics;
use crate::store::{LetterAck, ParkedRow, Store};

pub struct ReportRecorder {
    pub store: Store,
    pub metrics: Arc<Metrics>,
    pub audit: crate::audit::Audit,
}

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

/// Why a report cannot be recorded yet.
#[derive(Debug, thiserror::Error)]
enum RecordError {
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error("no letter sent over MESH matches the report (yet)")]
    Unmatched,
}

impl ReportRecorder {
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
        let result = async {
            // Reports read from a MESH inbox may know only MESH's id or the letter's id.
            let (referral_id, about) = if envelope.referral_id.is_empty() {
                let about = (!report.about.is_nil()).then(|| report.about.to_string());
                let ack = self
                    .store
                    .letter_ack(about.as_deref(), report.reference.as_deref())
                    .await?
                    .ok_or(RecordError::Unmatched)?;
                (ack.referral_id, ack.message_id)
            } else {
                (envelope.referral_id.clone(), report.about.to_string())
            };
            let mut tx = self.store.begin().await?;
            let label = tx
                .outbox_label(&about)
                .await?
                .unwrap_or_else(|| match report.about_kind {
                    Kind::LetterFiling => "letter".to_owned(),
                    _ => "referral".to_owned(),
                });
            let step = report
                .step
                .clone()
                .unwrap_or_else(|| step_for(&label, report.outcome));
            let fresh = tx.record_inbox(&envelope.message_id.to_string()).await?;
            if fresh {
                let detail = match report.outcome {
                    ReportOutcome::Acknowledged | ReportOutcome::Rejected => report.detail.clone(),
                    _ => format!("{} (attempt {})", report.detail, report.attempt),
                };
                tx.add_step(&referral_id, &step, &detail).await?;
                if let Some(copy) = &report.parked {
                    tx.insert_parked(&ParkedRow {
                        // The report's own id: a report delivered twice is kept once.
                        id: envelope.message_id.to_string(),
                        message_id: report.about.to_string(),
                        referral_id: referral_id.clone(),
                        target: envelope.target.clone(),
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
                    (outcome, _) if settles(&step, outcome) => tx.letter_settled(&about).await?,
                    _ => {}
                }
                match report.outcome {
                    ReportOutcome::Parked => {
                        tracing::error!(referral = %referral_id, target = %envelope.target, "delivery parked");
                    }
                    ReportOutcome::Rejected => {
                        self.metrics.letter_alerts.inc();
                        tracing::error!(referral = %referral_id, %step, "ALERT: the GP side refused a letter");
                    }
                    _ => {}
                }
            }
            tx.commit_unhurried().await?;
            if !fresh {
                return Ok(());
            }
            self.audit
                .record(crate::audit::Record {
                    at_ms: crate::store::now_ms(),
                    kind: "delivery",
                    subtype: format!("{label}-delivery"),
                    action: crate::audit::Action::Execute,
                    agent: format!("adapter:{}", envelope.target),
                    address: None,
                    entity: Some(referral_id.clone()),
                    status: match report.outcome {
                        ReportOutcome::Delivered | ReportOutcome::Acknowledged => 200,
                        ReportOutcome::Retrying | ReportOutcome::Sent => 202,
                        ReportOutcome::Parked | ReportOutcome::Rejected => 500,
                    },
                    detail: step.clone(),
                })
                .await;
            Ok::<_, RecordError>(())
        }
        .await;
        match result {
            Ok(()) => {
                self.metrics.events_recorded.inc();
                Outcome::Delivered("recorded".to_owned())
            }
            Err(e @ RecordError::Unmatched) => Outcome::Retry(e.to_string()),
            Err(e) => Outcome::Retry(format!("ledger: {e}")),
        }
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
