//! Responses from queue-pull schemes (`sp.replies`): each is an envelope of kind
//! `scheme-response` whose payload is the BaRS `servicerequest-response` message a scheme would
//! otherwise POST to `$process-message`. It goes through the same pipeline, with the envelope's
//! `message_id` as the request id (so a redelivered reply changes nothing twice).
//!
//! Who sent it: the broker lets each scheme's user publish to `sp.replies` only with its own
//! Endpoint id as routing key (topic permissions, `deploy/rabbitmq/queue-pull-user.sh`), and the
//! referral must have been routed to that endpoint.

use std::sync::Arc;

use signpost_bus::consume::{HandlerFuture, Meta};
use signpost_bus::directory::EndpointKind;
use signpost_bus::{Directory, Envelope, Handler, Kind, Outcome};

use crate::auth::{Caller, Identity, Role};
use crate::pipeline::{Gateway, RequestIds};

pub struct ReplyHandler {
    pub gateway: Arc<Gateway>,
    pub directory: Arc<Directory>,
}

impl ReplyHandler {
    async fn process(&self, envelope: &Envelope, meta: &Meta) -> Outcome {
        if envelope.kind != Kind::SchemeResponse {
            return Outcome::Park(format!(
                "sp.replies takes scheme-response envelopes, not {}",
                envelope.kind.as_str()
            ));
        }
        let endpoint = meta.routing_key.as_str();
        if self.directory.endpoint(endpoint).map(|e| e.kind) != Some(EndpointKind::QueuePull) {
            return Outcome::Park(format!(
                "routing key {endpoint:?} is not a queue-pull endpoint"
            ));
        }
        let payload = match envelope.payload_as::<serde_json::Value>() {
            Ok(p) => p,
            Err(e) => return Outcome::Park(format!("the payload is not JSON: {e}")),
        };
        let about = payload
            .pointer("/entry/0/resource/response/identifier")
            .and_then(|v| v.as_str())
            .unwrap_or("");
        match self.gateway.store.referral_by_message_bundle(about).await {
            Ok(Some(r)) if r.scheme_endpoint == endpoint => {}
            Ok(_) => {
                return Outcome::Park(format!(
                    "the response is not about a referral routed to {endpoint}"
                ))
            }
            Err(e) => return Outcome::Retry(format!("ledger: {e}")),
        }
        let ids = RequestIds {
            request_id: envelope.message_id.to_string(),
            correlation_id: envelope.correlation_id.clone(),
            traceparent: Some(envelope.traceparent.clone()),
        };
        let body = envelope.payload.get().as_bytes();
        // The broker vouched for the sender: the scheme(s) behind this queue-pull endpoint.
        let caller = Caller::Known(std::sync::Arc::new(Identity {
            id: format!("queue-pull:{endpoint}"),
            role: Role::Scheme {
                services: self
                    .directory
                    .schemes()
                    .iter()
                    .filter(|s| s.endpoint == endpoint)
                    .map(|s| s.id.clone())
                    .collect(),
            },
        }));
        match self.gateway.process_message(&caller, &ids, body).await {
            Ok(_) => Outcome::Delivered(format!("response from {endpoint} recorded")),
            Err(e) if e.issue == "duplicate" => Outcome::Delivered("already recorded".to_owned()),
            Err(e) if e.status.is_server_error() => {
                Outcome::Retry(format!("{} {}", e.rec, e.diagnostics))
            }
            Err(e) => Outcome::Park(format!(
                "{} {} ({})",
                e.status.as_u16(),
                e.rec,
                e.diagnostics
            )),
        }
    }
}

impl Handler for ReplyHandler {
    fn handle<'a>(&'a self, envelope: &'a Envelope, meta: &'a Meta) -> HandlerFuture<'a> {
        Box::pin(self.process(envelope, meta))
    }
}
