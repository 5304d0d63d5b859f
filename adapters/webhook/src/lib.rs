//! Scheme adapter `webhook`: delivers each bus message to a scheme as a signed webhook, for
//! schemes with modest systems that can take an HTTPS POST but not FHIR messaging.
//!
//! The body is the envelope JSON exactly as it travels on the bus (`adapters/bus/envelope.schema.json`).
//! Headers:
//! - `Signpost-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256>` where the HMAC key is the
//!   scheme's secret and the signed text is `<t>.<body>` (the timestamp, a full stop, the exact
//!   body bytes);
//! - `Idempotency-Key: <message_id>`, the same on every retry of the message;
//! - `Signpost-Event: <kind>`, and `traceparent`.
//!
//! A receiver recomputes the HMAC over `<t>.<body>`, compares it with `v1` in constant time, and
//! refuses timestamps more than five minutes from its clock (`docs/scheme-developers.md` has the
//! recipe). It answers 2xx once it has the message (also for a repeated Idempotency-Key); 408,
//! 429 and 5xx are retried, other 4xx parked.
//!
//! Queue handling is the bus crate's; what the message says is the gateway's.

use std::collections::BTreeMap;
use std::sync::Arc;

use aws_lc_rs::hmac;
use signpost_bus::consume::HandlerFuture;
use signpost_bus::directory::EndpointKind;
use signpost_bus::http::{self, HttpClient};
use signpost_bus::{Directory, Envelope, Handler, Outcome};

/// The adapter's name in `signpost adapter NAME` and in settings.
pub const NAME: &str = "webhook";

/// Sign `body` at `timestamp` (unix seconds) with `secret`: the `Signpost-Signature` value.
pub fn signature(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    let mut ctx = hmac::Context::with_key(&key);
    ctx.update(timestamp.to_string().as_bytes());
    ctx.update(b".");
    ctx.update(body);
    let tag = ctx.sign();
    let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("t={timestamp},v1={hex}")
}

/// Check a `Signpost-Signature` value against `body` (what a receiver does; used in tests and
/// by the recipe's worked example).
pub fn verify(secret: &[u8], header: &str, body: &[u8], now: i64, tolerance_s: i64) -> bool {
    let mut t = None;
    let mut v1 = None;
    for part in header.split(',') {
        match part.split_once('=') {
            Some(("t", x)) => t = x.parse::<i64>().ok(),
            Some(("v1", x)) => v1 = Some(x),
            _ => {}
        }
    }
    let (Some(t), Some(v1)) = (t, v1) else {
        return false;
    };
    if (now - t).abs() > tolerance_s || v1.len() % 2 != 0 {
        return false;
    }
    let Ok(tag) = (0..v1.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&v1[i..i + 2], 16))
        .collect::<Result<Vec<u8>, _>>()
    else {
        return false;
    };
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    let mut signed = t.to_string().into_bytes();
    signed.push(b'.');
    signed.extend_from_slice(body);
    hmac::verify(&key, &signed, &tag).is_ok()
}

pub struct WebhookDelivery {
    directory: Arc<Directory>,
    http: HttpClient,
    secrets: BTreeMap<String, Vec<u8>>,
}

impl WebhookDelivery {
    /// `secrets`: each webhook endpoint's secret, by Endpoint id. An endpoint without one is
    /// refused here, at start, rather than at its first message.
    pub fn new(
        directory: Arc<Directory>,
        http: HttpClient,
        secrets: BTreeMap<String, Vec<u8>>,
    ) -> Result<Self, String> {
        let missing: Vec<String> = directory
            .targets(EndpointKind::Webhook)
            .into_iter()
            .filter(|t| secrets.get(t).is_none_or(|s| s.is_empty()))
            .collect();
        if !missing.is_empty() {
            return Err(format!(
                "no webhook secret for endpoint(s) {}",
                missing.join(", ")
            ));
        }
        Ok(WebhookDelivery {
            directory,
            http,
            secrets,
        })
    }

    pub fn queues(self) -> Vec<signpost_bus::QueueConsumer> {
        let directory = self.directory.clone();
        directory.queues_for(EndpointKind::Webhook, Arc::new(self))
    }

    async fn deliver(&self, envelope: &Envelope) -> Outcome {
        let (Some(endpoint), Some(secret)) = (
            self.directory.endpoint(&envelope.target),
            self.secrets.get(&envelope.target),
        ) else {
            return Outcome::Park(format!(
                "Endpoint/{} is not a webhook endpoint with a secret any more",
                envelope.target
            ));
        };
        let body = envelope.to_bytes();
        let now = signpost_bus::envelope::now_ms() / 1000;
        let headers = [
            ("content-type", "application/json".to_owned()),
            ("signpost-signature", signature(secret, now, &body)),
            ("idempotency-key", envelope.message_id.to_string()),
            ("signpost-event", envelope.kind.as_str().to_owned()),
            ("traceparent", envelope.traceparent.clone()),
        ];
        let result = self.http.post(&endpoint.address, &headers, body).await;
        http::outcome(&format!("webhook endpoint {}", envelope.target), &result)
    }
}

impl Handler for WebhookDelivery {
    fn handle<'a>(
        &'a self,
        envelope: &'a Envelope,
        _meta: &'a signpost_bus::consume::Meta,
    ) -> HandlerFuture<'a> {
        Box::pin(self.deliver(envelope))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_verifies_and_a_tampered_body_or_old_timestamp_does_not() {
        let body = br#"{"message_id":"x"}"#;
        let sig = signature(b"s3cret", 1_700_000_000, body);
        assert!(sig.starts_with("t=1700000000,v1="));
        assert!(verify(b"s3cret", &sig, body, 1_700_000_100, 300));
        assert!(!verify(
            b"s3cret",
            &sig,
            br#"{"message_id":"y"}"#,
            1_700_000_100,
            300
        ));
        assert!(!verify(b"other", &sig, body, 1_700_000_100, 300));
        assert!(
            !verify(b"s3cret", &sig, body, 1_700_001_000, 300),
            "too old"
        );
        assert!(!verify(b"s3cret", "t=1,v1=zz", body, 1, 300));
    }

    #[test]
    fn the_signature_is_hmac_sha256_of_timestamp_dot_body() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        let sig = signature(b"Jefe", 0, b"what do ya want for nothing?");
        // Signed text is "0.what do ya want...", so compare with an independent HMAC of that.
        let key = hmac::Key::new(hmac::HMAC_SHA256, b"Jefe");
        let tag = hmac::sign(&key, b"0.what do ya want for nothing?");
        let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(sig, format!("t=0,v1={hex}"));
    }
}
