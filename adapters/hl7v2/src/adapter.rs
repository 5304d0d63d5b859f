//! The adapter `hl7v2`: this crate wired into Signpost.
//!
//! - **In:** [`serve_inbound`] listens for MLLP, maps each REF^I12 to the canonical referral
//!   message and posts it to the gateway's `$process-message` over HTTP, like any GP system,
//!   with the request id derived from the REF^I12 (a resend is a duplicate, not a second
//!   referral). The ACK says what the gateway said: AA once the referral is durable (200, or
//!   409 `duplicate`), AE with an ERR segment for a refusal, AR (207) when the gateway could not
//!   take it now, so the sender resends.
//! - **Out:** [`LetterFiling`] consumes a GP system's records queue and files each outcome letter
//!   as MDM^T02 at the system's MLLP endpoint (`Endpoint.address` `mllp://host:port`), with the
//!   bus message id as MSH-10 on every attempt. AA is delivered; AE, AR, no ACK or no connection
//!   are retried, then parked with the reason.
//!
//! The protocol itself is in the other modules; queue handling is the bus crate's.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use signpost_bus::consume::{HandlerFuture, Meta};
use signpost_bus::directory::EndpointKind;
use signpost_bus::http::HttpClient;
use signpost_bus::{Directory, Envelope, Handler, Outcome, QueueConsumer};

use crate::ack::{self, AckCode, ErrorCode, ErrorDetail};
use crate::mdm::{self, MdmHeader};
use crate::message::Message;
use crate::mllp;
use crate::ref_i12::{self, MapOptions};

/// The adapter's name in `signpost adapter NAME` and in settings.
pub const NAME: &str = "hl7v2";

fn ack_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// Answer one inbound HL7 v2 message: map, post, ACK.
async fn answer(text: String, gateway_fhir: &str, http: &HttpClient) -> String {
    let now = time::OffsetDateTime::now_utc();
    let msg = match Message::parse(&text) {
        Ok(m) => m,
        Err(e) => return ack::reject_unparsable(&text, &e, &ack_id(), now),
    };
    let mapped = match ref_i12::map(&msg, &MapOptions::default()) {
        Ok(m) => m,
        Err(e) => return ack::build(&msg, e.code().ack_code(), &[(&e).into()], &ack_id(), now),
    };
    let headers = [
        (
            "content-type",
            "application/fhir+json; charset=utf-8".to_owned(),
        ),
        ("accept", "application/fhir+json".to_owned()),
        ("x-request-id", mapped.request_id.clone()),
        ("x-correlation-id", mapped.correlation_id.clone()),
    ];
    let url = signpost_bus::http::join(gateway_fhir, "$process-message");
    let body = serde_json::to_vec(&mapped.bundle).unwrap_or_default();
    let refusal = |code: ErrorCode, text: String| ErrorDetail {
        code,
        location: None,
        text,
    };
    match http.post(&url, &headers, body).await {
        Ok(a) if a.status.is_success() => ack::build(&msg, AckCode::Accept, &[], &ack_id(), now),
        Ok(a) => {
            let oo: serde_json::Value = serde_json::from_slice(&a.body).unwrap_or_default();
            let issue = &oo["issue"][0];
            let (code, rec) = (
                issue["code"].as_str().unwrap_or(""),
                issue["details"]["coding"][0]["code"].as_str().unwrap_or(""),
            );
            if code == "duplicate" {
                return ack::build(&msg, AckCode::Accept, &[], &ack_id(), now);
            }
            // The gateway's diagnostics never carry patient data; pass them on to the sender.
            let text = format!(
                "{rec} {code}: {}",
                issue["diagnostics"].as_str().unwrap_or("")
            );
            if a.status.is_server_error() {
                ack::build(
                    &msg,
                    AckCode::Reject,
                    &[refusal(ErrorCode::ApplicationInternalError, text)],
                    &ack_id(),
                    now,
                )
            } else {
                let hl7_code = match code {
                    "required" => ErrorCode::RequiredFieldMissing,
                    "code-invalid" | "not-supported" => ErrorCode::TableValueNotFound,
                    "value" | "structure" | "invalid" | "invariant" => ErrorCode::DataTypeError,
                    _ => ErrorCode::ApplicationInternalError,
                };
                ack::build(
                    &msg,
                    AckCode::Error,
                    &[refusal(hl7_code, text)],
                    &ack_id(),
                    now,
                )
            }
        }
        Err(e) => ack::build(
            &msg,
            AckCode::Reject,
            &[refusal(
                ErrorCode::ApplicationInternalError,
                format!("the gateway is not reachable now ({e}); resend later"),
            )],
            &ack_id(),
            now,
        ),
    }
}

/// Listen for HL7 v2 over MLLP on `listener`, posting referrals to `gateway_fhir`, until
/// `shutdown` resolves.
pub async fn serve_inbound(
    listener: tokio::net::TcpListener,
    gateway_fhir: String,
    http: HttpClient,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let gateway_fhir = Arc::new(gateway_fhir);
    let handler = move |text: String, _peer: SocketAddr| {
        let (gateway_fhir, http) = (gateway_fhir.clone(), http.clone());
        async move { answer(text, &gateway_fhir, &http).await }
    };
    mllp::serve(
        listener,
        Arc::new(handler),
        mllp::ServeOptions::default(),
        shutdown,
    )
    .await;
}

/// Files letters at GP systems that take MDM^T02 over MLLP.
pub struct LetterFiling {
    directory: Arc<Directory>,
    timeout: Duration,
}

impl LetterFiling {
    pub fn new(directory: Arc<Directory>, timeout: Duration) -> Self {
        LetterFiling { directory, timeout }
    }

    pub fn queues(self) -> Vec<QueueConsumer> {
        let directory = self.directory.clone();
        directory.queues_for(EndpointKind::Hl7v2Mllp, Arc::new(self))
    }

    async fn file(&self, envelope: &Envelope) -> Outcome {
        let Some(endpoint) = self.directory.endpoint(&envelope.target) else {
            return Outcome::Park(format!(
                "Endpoint/{} is not in the directory any more",
                envelope.target
            ));
        };
        let address = endpoint
            .address
            .trim_start_matches("mllp://")
            .trim_end_matches('/');
        let header = MdmHeader {
            sending_application: "SIGNPOST".into(),
            sending_facility: "SIGNPOST".into(),
            receiving_application: "GP".into(),
            receiving_facility: envelope.target.clone(),
            // The same on every attempt, so the GP system can recognise a resend.
            control_id: envelope.message_id.simple().to_string(),
            at: time::OffsetDateTime::now_utc(),
        };
        let letter = match envelope.payload_as::<serde_json::Value>() {
            Ok(l) => l,
            Err(e) => return Outcome::Park(format!("the letter is not JSON: {e}")),
        };
        let message = match mdm::build(&letter, None, &header) {
            Ok(m) => m,
            Err(e) => {
                return Outcome::Park(format!("the letter cannot be written as MDM^T02: {e}"))
            }
        };
        let what = format!("GP system endpoint {}", envelope.target);
        match mllp::send(address, &message, self.timeout).await {
            Ok(reply) => match ack::parse(&reply) {
                Ok(a) if a.code == AckCode::Accept => Outcome::Delivered(format!("{what}: ACK AA")),
                Ok(a) => Outcome::Retry(format!(
                    "{what}: ACK {} {}",
                    a.code.as_str(),
                    a.errors.join("; ")
                )),
                Err(e) => Outcome::Retry(format!("{what}: unreadable ACK ({e})")),
            },
            Err(e) => Outcome::Retry(format!("{what}: {e}")),
        }
    }
}

impl Handler for LetterFiling {
    fn handle<'a>(&'a self, envelope: &'a Envelope, _meta: &'a Meta) -> HandlerFuture<'a> {
        Box::pin(self.file(envelope))
    }
}
