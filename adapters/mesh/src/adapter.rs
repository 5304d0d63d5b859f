//! The `mesh` adapter's two halves.
//!
//! - [`LetterSending`] consumes `sp.records.<endpoint>` for every `mesh` Endpoint: it builds the
//!   ITK3 Send Document message for the letter and posts it to Signpost's MESH outbox, addressed
//!   to the endpoint's mailbox or to the patient's registered GP. MESH's acceptance is reported
//!   as `sent` with MESH's message id; a MESH server that is down or answers 5xx is retried and
//!   in the end parked, like every delivery (the bus crate's rules).
//! - [`InboxPoller`] polls Signpost's MESH inbox: ITK3 Responses (infrastructure and business
//!   acknowledgements) and MESH error reports (EPL-150..154) become delivery reports on
//!   `sp.events`, which the gateway writes on the letter's timeline. A MESH message is
//!   acknowledged (removed from the inbox) only after its report is confirmed by the broker, so
//!   nothing is lost; a report published twice has the same id and is recorded once.
//!
//! Nothing here logs MESH headers or message content: they carry patient demographics.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use signpost_bus::consume::{HandlerFuture, Meta};
use signpost_bus::directory::{mesh_mailbox, EndpointKind};
use signpost_bus::envelope::{now_rfc3339, DeliveryReport, ReportOutcome};
use signpost_bus::publish::Publisher;
use signpost_bus::{amqp, topology, Directory, Envelope, Handler, Kind, Outcome};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::client::{InboxMessage, MeshClient, MeshError, Outgoing};
use crate::itk3::{self, AckKind, Letter};

/// Timeline steps written for MESH letters (after `letter-sent`).
pub const STEP_ACK_INFRASTRUCTURE: &str = "letter-ack-infrastructure";
pub const STEP_FILED: &str = "letter-filed";
pub const STEP_ACK_NEGATIVE: &str = "letter-ack-negative";
pub const STEP_MESH_ERROR: &str = "letter-mesh-error";

pub struct LetterSending {
    directory: Arc<Directory>,
    client: MeshClient,
    /// `Mex-LocalID` and the ODS code in `Mex-Subject` when the scheme has no ODS code.
    default_ods: String,
}

impl LetterSending {
    pub fn new(directory: Arc<Directory>, client: MeshClient, default_ods: String) -> Self {
        LetterSending {
            directory,
            client,
            default_ods,
        }
    }

    /// One consumer per `mesh` Endpoint in the directory.
    pub fn queues(self) -> Vec<signpost_bus::QueueConsumer> {
        let directory = self.directory.clone();
        directory.queues_for(EndpointKind::Mesh, Arc::new(self))
    }

    async fn send(&self, envelope: &Envelope) -> Outcome {
        let Some(endpoint) = self.directory.endpoint(&envelope.target) else {
            return Outcome::Park(format!(
                "Endpoint/{} is not in the directory any more",
                envelope.target
            ));
        };
        let Some(mailbox) = mesh_mailbox(&endpoint.address) else {
            return Outcome::Park(format!("Endpoint/{} has no MESH mailbox", endpoint.id));
        };
        let letter = match envelope
            .payload_as::<serde_json::Value>()
            .map_err(|e| format!("the payload is not JSON: {e}"))
            .and_then(|doc| Letter::parse(&doc))
        {
            Ok(l) => l,
            Err(why) => return Outcome::Park(format!("cannot send the letter over MESH: {why}")),
        };
        let ods = letter
            .sender
            .ods
            .clone()
            .unwrap_or_else(|| self.default_ods.clone());
        let message = itk3::send_document(
            &letter,
            &envelope.message_id.to_string(),
            self.client.mailbox(),
            &now_rfc3339(),
        );
        let body = serde_json::to_vec(&message).unwrap_or_default();
        let to = itk3::mesh_to(mailbox, &letter.patient);
        let subject = itk3::mesh_subject(&letter, &ods);
        let filename = format!("{}.json", envelope.message_id);
        let out = Outgoing {
            to: &to,
            workflow: itk3::WORKFLOW,
            subject: &subject,
            local_id: &ods,
            filename: &filename,
            content_type: "application/fhir+json",
        };
        // Where it went, for the timeline: never the GPPROVIDER address (it is demographics).
        let whom = if mailbox == signpost_bus::directory::MESH_GP_PROVIDER {
            "the patient's registered GP (MESH GP provider routing)".to_owned()
        } else {
            format!("MESH mailbox {mailbox}")
        };
        match self.client.send(&out, &body).await {
            Ok(id) => Outcome::Sent {
                detail: format!(
                    "Sent to {whom} as MESH message {id} (workflow {}); awaiting acknowledgements",
                    itk3::WORKFLOW
                ),
                reference: id,
            },
            Err(e) if e.is_transient() => Outcome::Retry(format!("MESH send to {whom}: {e}")),
            Err(e) => Outcome::Park(format!("MESH refused the letter for {whom}: {e}")),
        }
    }
}

impl Handler for LetterSending {
    fn handle<'a>(&'a self, envelope: &'a Envelope, _meta: &'a Meta) -> HandlerFuture<'a> {
        Box::pin(self.send(envelope))
    }
}

/// What an inbox message means for a letter.
#[derive(Debug, Clone, PartialEq)]
pub struct InboxReport {
    /// The referral, when the message names it (an ITK3 SenderReference); empty otherwise.
    pub referral_id: String,
    /// The letter's bus message id, when the message names it (`response.identifier`).
    pub about: Option<Uuid>,
    /// MESH's id of the letter, when the message names it (an error report's linked id).
    pub reference: Option<String>,
    pub outcome: ReportOutcome,
    pub step: &'static str,
    pub detail: String,
}

/// What a MESH error report's EPL code means (GP Connect Send Document errors).
fn epl_meaning(code: &str) -> &'static str {
    match code {
        "EPL-150" => "more than one mailbox matched the patient's details",
        "EPL-151" => "no mailbox matched the patient's details",
        "EPL-152" => "the NHS number is not valid",
        "EPL-153" => "the NHS number was not found",
        "EPL-154" => "the patient's demographics did not match",
        _ => "MESH could not deliver the message",
    }
}

/// Read one inbox message. `Ok(None)`: not for this adapter (another workflow), left alone.
pub fn classify(message: &InboxMessage) -> Result<Option<InboxReport>, String> {
    let message_type = message.header("mex-messagetype").unwrap_or("DATA");
    if message_type.eq_ignore_ascii_case("REPORT") {
        let linked = message
            .header("mex-linkedmsgid")
            .ok_or("an error report without Mex-LinkedMsgID")?;
        // The EPL code may be in the status code or at the start of the description; only the
        // code is kept, never the description text.
        let code = [
            message.header("mex-statuscode"),
            message.header("mex-statusdescription"),
        ]
        .into_iter()
        .flatten()
        .find_map(|v| {
            let start = v.find("EPL-")?;
            v.get(start..start + 7)
        })
        .map(str::to_owned)
        .unwrap_or_else(|| {
            let status: String = message
                .header("mex-statuscode")
                .unwrap_or("?")
                .chars()
                .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
                .take(12)
                .collect();
            format!("status {status}")
        });
        let event: String = message
            .header("mex-statusevent")
            .unwrap_or("")
            .chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .take(24)
            .collect();
        return Ok(Some(InboxReport {
            referral_id: String::new(),
            about: None,
            reference: Some(linked.to_owned()),
            outcome: ReportOutcome::Rejected,
            step: STEP_MESH_ERROR,
            detail: format!(
                "MESH error report {code} ({}){}: the letter was not delivered",
                epl_meaning(&code),
                if event.is_empty() {
                    String::new()
                } else {
                    format!(", event {event}")
                }
            ),
        }));
    }
    if message.header("mex-workflowid") != Some(itk3::ACK_WORKFLOW) {
        return Ok(None);
    }
    let response = itk3::parse_response(&message.body)?;
    let kind = match response.kind {
        AckKind::Infrastructure => "infrastructure",
        AckKind::Business => "business",
    };
    let (outcome, step) = match (response.kind, response.is_positive()) {
        (_, false) => (ReportOutcome::Rejected, STEP_ACK_NEGATIVE),
        (AckKind::Infrastructure, true) => (ReportOutcome::Acknowledged, STEP_ACK_INFRASTRUCTURE),
        (AckKind::Business, true) => (ReportOutcome::Acknowledged, STEP_FILED),
    };
    Ok(Some(InboxReport {
        referral_id: response.sender_reference.clone().unwrap_or_default(),
        about: Uuid::parse_str(&response.answers).ok(),
        reference: None,
        outcome,
        step,
        detail: format!(
            "ITK3 {kind} acknowledgement {} {} ({})",
            response.code, response.display, response.response_code
        ),
    }))
}

/// The `sp.events` envelope for an inbox report. Its id is derived from the MESH message id, so
/// a report published twice (a crash before the MESH acknowledgement) is recorded once.
pub fn report_envelope(mailbox: &str, mesh_id: &str, report: &InboxReport) -> Envelope {
    let payload = DeliveryReport {
        about: report.about.unwrap_or(Uuid::nil()),
        about_kind: Kind::LetterFiling,
        outcome: report.outcome,
        attempt: 1,
        detail: report.detail.clone(),
        at: now_rfc3339(),
        parked: None,
        reference: report.reference.clone(),
        step: Some(report.step.to_owned()),
    };
    let mut envelope = Envelope::new(
        Kind::DeliveryReport,
        report.referral_id.clone(),
        report.referral_id.clone(),
        String::new(),
        None,
        &payload,
    );
    envelope.message_id = Uuid::new_v5(
        &Uuid::NAMESPACE_URL,
        format!("mesh:{mailbox}:{mesh_id}").as_bytes(),
    );
    envelope
}

/// Polls Signpost's MESH inbox and reports what it finds.
pub struct InboxPoller {
    pub client: MeshClient,
    pub amqp_url: String,
    pub interval: Duration,
}

impl InboxPoller {
    /// Poll until `shutdown`, reconnecting to the broker when it goes away.
    pub async fn run(self, shutdown: CancellationToken) {
        // Messages that could not be read: left in the inbox for a person, logged once.
        let mut unreadable: HashSet<String> = HashSet::new();
        let name = format!("signpost-mesh-inbox-{}", self.client.mailbox());
        // MESH asks clients to validate their mailbox when they start; a failure is logged and
        // the poller carries on (the server may come back).
        match self.client.handshake().await {
            Ok(()) => {
                tracing::info!(mailbox = %self.client.mailbox(), "MESH mailbox handshake done")
            }
            Err(error) => {
                tracing::warn!(%error, mailbox = %self.client.mailbox(), "MESH mailbox handshake failed")
            }
        }
        'connection: loop {
            let Some(conn) = amqp::connect_with_backoff(&self.amqp_url, &name, &shutdown).await
            else {
                return;
            };
            let publisher = match Publisher::open(&conn).await {
                Ok(p) => p,
                Err(error) => {
                    tracing::warn!(%error, "MESH inbox: cannot open a publisher; reconnecting");
                    amqp::close(&conn, "retry").await;
                    continue 'connection;
                }
            };
            loop {
                match self.poll_once(&publisher, &mut unreadable).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(reports = n, "MESH inbox: reports recorded"),
                    Err(PollError::Bus(error)) => {
                        tracing::warn!(%error, "MESH inbox: broker lost; reconnecting");
                        amqp::close(&conn, "retry").await;
                        continue 'connection;
                    }
                    Err(PollError::Mesh(error)) => {
                        tracing::warn!(%error, "MESH inbox: poll failed; will try again");
                    }
                }
                tokio::select! {
                    _ = tokio::time::sleep(self.interval) => {}
                    _ = shutdown.cancelled() => {
                        amqp::close(&conn, "bye").await;
                        return;
                    }
                }
            }
        }
    }

    /// One pass over the inbox; returns how many reports were published.
    pub async fn poll_once(
        &self,
        publisher: &Publisher,
        unreadable: &mut HashSet<String>,
    ) -> Result<usize, PollError> {
        let mut reported = 0;
        for id in self.client.inbox().await? {
            if unreadable.contains(&id) {
                continue;
            }
            let message = self.client.download(&id).await?;
            match classify(&message) {
                Ok(Some(report)) => {
                    let envelope = report_envelope(self.client.mailbox(), &id, &report);
                    publisher
                        .publish_envelope(
                            topology::EVENTS_EXCHANGE,
                            topology::EVENTS_ROUTING_KEY,
                            &envelope,
                        )
                        .await?;
                    self.client.acknowledge(&id).await?;
                    reported += 1;
                }
                Ok(None) => {
                    tracing::warn!(mesh_message = %id, "MESH inbox: a message of another workflow, left in the inbox");
                    unreadable.insert(id);
                }
                Err(why) => {
                    tracing::error!(mesh_message = %id, %why, "MESH inbox: an acknowledgement that cannot be read, left in the inbox for a person");
                    unreadable.insert(id);
                }
            }
        }
        Ok(reported)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PollError {
    #[error(transparent)]
    Mesh(#[from] MeshError),
    #[error(transparent)]
    Bus(#[from] signpost_bus::BusError),
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn message(headers: &[(&str, &str)], body: &[u8]) -> InboxMessage {
        InboxMessage {
            id: "m".into(),
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>(),
            body: body.to_vec(),
        }
    }

    #[test]
    fn an_error_report_names_the_epl_code_and_the_linked_message_but_not_the_description() {
        let m = message(
            &[
                ("mex-messagetype", "REPORT"),
                ("mex-linkedmsgid", "2026_LINKED"),
                ("mex-statuscode", "EPL-151"),
                (
                    "mex-statusdescription",
                    "No mailbox for Jane Example 9434765919",
                ),
                ("mex-statusevent", "TRANSFER"),
            ],
            b"",
        );
        let r = classify(&m).unwrap().unwrap();
        assert_eq!(r.reference.as_deref(), Some("2026_LINKED"));
        assert_eq!(r.step, STEP_MESH_ERROR);
        assert_eq!(r.outcome, ReportOutcome::Rejected);
        assert!(r.detail.contains("EPL-151"), "{}", r.detail);
        assert!(!r.detail.contains("9434765919") && !r.detail.contains("Jane"));
    }

    #[test]
    fn messages_of_other_workflows_are_left_alone() {
        let m = message(&[("mex-workflowid", "OTHER_WORKFLOW")], b"{}");
        assert_eq!(classify(&m).unwrap(), None);
    }

    #[test]
    fn report_ids_are_stable_per_mesh_message() {
        let r = InboxReport {
            referral_id: "r".into(),
            about: None,
            reference: None,
            outcome: ReportOutcome::Acknowledged,
            step: STEP_FILED,
            detail: "x".into(),
        };
        assert_eq!(
            report_envelope("MB", "1", &r).message_id,
            report_envelope("MB", "1", &r).message_id
        );
        assert_ne!(
            report_envelope("MB", "1", &r).message_id,
            report_envelope("MB", "2", &r).message_id
        );
    }
}
