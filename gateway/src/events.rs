//! Delivery reports from the adapters (`sp.events`) onto referral timelines: delivered,
//! retrying, parked, for referrals, cancellations and letters. Each report is recorded once
//! (the inbox de-duplicates by message id) and only then acknowledged.

use std::sync::Arc;

use signpost_bus::consume::HandlerFuture;
use signpost_bus::envelope::{DeliveryReport, ReportOutcome};
use signpost_bus::{Envelope, Handler, Kind, Outcome};

use crate::metrics::Metrics;
use crate::store::{ParkedRow, Store};

pub struct ReportRecorder {
    pub store: Store,
    pub metrics: Arc<Metrics>,
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
    }
}

impl ReportRecorder {
    async fn record(&self, envelope: &Envelope) -> Outcome {
        if envelope.kind != Kind::DeliveryReport {
            return Outcome::Park(format!(
                "sp.events carries delivery reports, not {:?}",
                envelope.kind
            ));
        }
        let report: DeliveryReport = match serde_json::from_value(envelope.payload.clone()) {
            Ok(r) => r,
            Err(e) => return Outcome::Park(format!("not a delivery report: {e}")),
        };
        let result = async {
            let label = self
                .store
                .outbox_label(&report.about.to_string())
                .await?
                .unwrap_or_else(|| match report.about_kind {
                    Kind::LetterFiling => "letter".to_owned(),
                    _ => "referral".to_owned(),
                });
            let mut tx = self.store.begin().await?;
            if tx.record_inbox(&envelope.message_id.to_string()).await? {
                let step = step_for(&label, report.outcome);
                let detail = format!("{} (attempt {})", report.detail, report.attempt);
                tx.add_step(&envelope.referral_id, &step, &detail).await?;
                if let Some(copy) = &report.parked {
                    tx.insert_parked(&ParkedRow {
                        // The report's own id: a report delivered twice is kept once.
                        id: envelope.message_id.to_string(),
                        message_id: report.about.to_string(),
                        referral_id: envelope.referral_id.clone(),
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
                if report.outcome == ReportOutcome::Parked {
                    tracing::error!(referral = %envelope.referral_id, target = %envelope.target, "delivery parked");
                }
            }
            tx.commit().await?;
            Ok::<_, crate::store::StoreError>(())
        }
        .await;
        match result {
            Ok(()) => {
                self.metrics.events_recorded.inc();
                Outcome::Delivered("recorded".to_owned())
            }
            Err(e) => Outcome::Retry(format!("ledger: {e}")),
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
