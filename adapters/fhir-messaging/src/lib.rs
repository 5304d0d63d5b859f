//! Scheme adapter `fhir-messaging`: delivers referral messages (new and cancelled) to a scheme's
//! FHIR `$process-message` endpoint, BaRS-style (standards.md §1.3, §8.2).
//!
//! It owns the HTTP conversation with the scheme: the BaRS headers, the URL, and what the answer
//! means. Queue handling (acks, retries, parking, reports) is the bus crate's; what goes in the
//! message is the gateway's. The `X-Request-Id` is the envelope's `message_id`, so every retry of
//! one message carries the same id and a scheme that already has it answers 409 `duplicate`,
//! which counts as delivered.

use std::borrow::Cow;
use std::sync::Arc;

use base64::Engine;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{json, Value};
use signpost_bus::consume::HandlerFuture;
use signpost_bus::directory::EndpointKind;
use signpost_bus::http::{self, HttpClient};
use signpost_bus::{Directory, Envelope, Handler, Outcome};

/// The adapter's name in `signpost adapter NAME` and in settings.
pub const NAME: &str = "fhir-messaging";

/// The BaRS Core version Signpost speaks, sent in `Accept`.
pub const BARS_VERSION: &str = "1.1.0";

pub struct SchemeDelivery {
    directory: Arc<Directory>,
    http: HttpClient,
}

impl SchemeDelivery {
    pub fn new(directory: Arc<Directory>, http: HttpClient) -> Self {
        SchemeDelivery { directory, http }
    }

    /// One `(queue, handler)` pair per scheme endpoint in the directory.
    pub fn queues(self) -> Vec<signpost_bus::QueueConsumer> {
        let directory = self.directory.clone();
        directory.queues_for(EndpointKind::FhirMessaging, Arc::new(self))
    }

    async fn deliver(&self, envelope: &Envelope) -> Outcome {
        let Some(endpoint) = self.directory.endpoint(&envelope.target) else {
            return Outcome::Park(format!(
                "Endpoint/{} is not in the directory any more",
                envelope.target
            ));
        };
        let url = http::join(&endpoint.address, "$process-message");
        let mut headers = vec![
            (
                "content-type",
                "application/fhir+json; charset=utf-8".to_owned(),
            ),
            (
                "accept",
                format!("application/fhir+json; version={BARS_VERSION}"),
            ),
            ("x-request-id", envelope.message_id.to_string()),
            ("x-correlation-id", envelope.correlation_id.clone()),
            ("traceparent", envelope.traceparent.clone()),
            ("nhsd-requesting-software", b64(&requesting_software())),
        ];
        if let Some((system, value)) = self
            .directory
            .scheme_by_endpoint(&envelope.target)
            .and_then(|s| s.service_identifier.clone())
        {
            headers.push((
                "nhsd-target-identifier",
                b64(&json!({"system": system, "value": value})),
            ));
        }
        if let Some(org) = sender_organization(envelope.payload.get()) {
            headers.push(("nhsd-end-user-organisation", b64_text(org)));
        }
        // The message goes as the gateway made it, without being built and written again.
        let body = envelope.payload.get().as_bytes().to_vec();
        let result = self.http.post(&url, &headers, body).await;
        http::outcome(&format!("scheme endpoint {}", envelope.target), &result)
    }
}

impl Handler for SchemeDelivery {
    fn handle<'a>(
        &'a self,
        envelope: &'a Envelope,
        _meta: &'a signpost_bus::consume::Meta,
    ) -> HandlerFuture<'a> {
        Box::pin(self.deliver(envelope))
    }
}

fn b64(v: &Value) -> String {
    b64_text(&v.to_string())
}

fn b64_text(text: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(text)
}

/// The `Device` sent as `NHSD-Requesting-Software`.
fn requesting_software() -> Value {
    json!({
        "resourceType": "Device",
        "deviceName": [{"name": "Signpost", "type": "manufacturer-name"}],
        "version": [{"value": env!("CARGO_PKG_VERSION")}]
    })
}

/// The Organization that `MessageHeader.sender` points at, for `NHSD-End-User-Organisation`,
/// as it is written in the message (compact, as the gateway wrote it). Nothing is built: the
/// entries are found by `fullUrl` first, and only if none matches is each resource's type and
/// id read to match a relative reference.
fn sender_organization(bundle: &str) -> Option<&str> {
    #[derive(Deserialize)]
    struct Bundle<'a> {
        #[serde(borrow)]
        entry: Vec<Entry<'a>>,
    }
    #[derive(Deserialize)]
    struct Entry<'a> {
        #[serde(rename = "fullUrl", borrow)]
        full_url: Option<Cow<'a, str>>,
        #[serde(borrow)]
        resource: Option<&'a RawValue>,
    }
    #[derive(Deserialize)]
    struct Header<'a> {
        #[serde(borrow)]
        sender: Option<Reference<'a>>,
    }
    #[derive(Deserialize)]
    struct Reference<'a> {
        #[serde(borrow)]
        reference: Option<Cow<'a, str>>,
    }
    #[derive(Deserialize)]
    struct Typed<'a> {
        #[serde(rename = "resourceType", borrow)]
        resource_type: Option<Cow<'a, str>>,
        #[serde(borrow)]
        id: Option<Cow<'a, str>>,
    }
    let entries = serde_json::from_str::<Bundle<'_>>(bundle).ok()?.entry;
    let header: Header<'_> = serde_json::from_str(entries.first()?.resource?.get()).ok()?;
    let sender = header.sender?.reference?;
    let by_url = entries
        .iter()
        .find(|e| e.full_url.as_deref() == Some(&*sender))
        .and_then(|e| e.resource);
    let found = by_url.or_else(|| {
        let (kind, id) = sender.split_once('/')?;
        entries.iter().find_map(|e| {
            let r = e.resource?;
            let typed: Typed<'_> = serde_json::from_str(r.get()).ok()?;
            (typed.resource_type.as_deref() == Some(kind)
                && typed.id.as_deref().unwrap_or("") == id)
                .then_some(r)
        })
    })?;
    Some(found.get())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_end_user_organisation_is_the_message_sender() {
        let bundle = json!({"entry": [
            {"fullUrl": "urn:uuid:h", "resource": {"resourceType": "MessageHeader", "sender": {"reference": "urn:uuid:o"}}},
            {"fullUrl": "urn:uuid:x", "resource": {"resourceType": "Organization", "id": "x"}},
            {"fullUrl": "urn:uuid:o", "resource": {"resourceType": "Organization", "id": "o"}}
        ]});
        let text = bundle.to_string();
        let org = sender_organization(&text).unwrap();
        assert_eq!(org, r#"{"id":"o","resourceType":"Organization"}"#);
        // A relative reference finds the resource by its type and id.
        let relative = json!({"entry": [
            {"resource": {"resourceType": "MessageHeader", "sender": {"reference": "Organization/o"}}},
            {"fullUrl": "urn:uuid:p", "resource": {"resourceType": "Patient", "id": "o"}},
            {"fullUrl": "urn:uuid:x", "resource": {"resourceType": "Organization", "id": "x"}},
            {"fullUrl": "urn:uuid:o", "resource": {"resourceType": "Organization", "id": "o", "name": "P"}}
        ]})
        .to_string();
        assert_eq!(
            sender_organization(&relative).unwrap(),
            r#"{"id":"o","name":"P","resourceType":"Organization"}"#
        );
        let unknown = relative.replace("Organization/o", "Organization/none");
        assert_eq!(sender_organization(&unknown), None);
        assert_eq!(sender_organization("{\"entry\": []}"), None);
        assert_eq!(sender_organization("[]"), None);
    }
}
