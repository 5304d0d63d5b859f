//! GP adapter `fhir-document`: files an outcome letter (a DocumentReference with the letter
//! attached) at a GP system's FHIR endpoint, `POST {base}/DocumentReference`.
//!
//! It owns the HTTP conversation with the GP system. Queue handling is the bus crate's; the
//! letter's content is the gateway's. `X-Request-Id` is the envelope's `message_id`, the same on
//! every retry, so a GP system that de-duplicates files the letter once.

use std::sync::Arc;

use signpost_bus::consume::HandlerFuture;
use signpost_bus::directory::EndpointKind;
use signpost_bus::http::{self, HttpClient};
use signpost_bus::{Directory, Envelope, Handler, Outcome};

/// The adapter's name in `signpost adapter NAME` and in settings.
pub const NAME: &str = "fhir-document";

pub struct LetterFiling {
    directory: Arc<Directory>,
    http: HttpClient,
}

impl LetterFiling {
    pub fn new(directory: Arc<Directory>, http: HttpClient) -> Self {
        LetterFiling { directory, http }
    }

    /// One `(queue, handler)` pair per GP system endpoint in the directory.
    pub fn queues(self) -> Vec<signpost_bus::QueueConsumer> {
        let directory = self.directory.clone();
        directory.queues_for(EndpointKind::FhirRest, Arc::new(self))
    }

    async fn file(&self, envelope: &Envelope) -> Outcome {
        let Some(endpoint) = self.directory.endpoint(&envelope.target) else {
            return Outcome::Park(format!(
                "Endpoint/{} is not in the directory any more",
                envelope.target
            ));
        };
        // Only the type is read; the letter goes as it came.
        #[derive(serde::Deserialize)]
        struct Typed {
            #[serde(rename = "resourceType")]
            resource_type: Option<String>,
        }
        let typed = serde_json::from_str::<Typed>(envelope.payload.get());
        if typed.ok().and_then(|t| t.resource_type).as_deref() != Some("DocumentReference") {
            return Outcome::Park("the letter is not a DocumentReference".to_owned());
        }
        let url = http::join(&endpoint.address, "DocumentReference");
        let headers = [
            (
                "content-type",
                "application/fhir+json; charset=utf-8".to_owned(),
            ),
            ("accept", "application/fhir+json".to_owned()),
            ("x-request-id", envelope.message_id.to_string()),
            ("x-correlation-id", envelope.correlation_id.clone()),
            ("traceparent", envelope.traceparent.clone()),
        ];
        let body = envelope.payload.get().as_bytes().to_vec();
        let result = self.http.post(&url, &headers, body).await;
        http::outcome(&format!("GP system endpoint {}", envelope.target), &result)
    }
}

impl Handler for LetterFiling {
    fn handle<'a>(
        &'a self,
        envelope: &'a Envelope,
        _meta: &'a signpost_bus::consume::Meta,
    ) -> HandlerFuture<'a> {
        Box::pin(self.file(envelope))
    }
}
