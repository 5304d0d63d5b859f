//! The envelope: what every bus message carries, whatever its kind.
//!
//! The body is the JSON form of [`Envelope`]; the same ids are copied into the AMQP properties
//! (`message_id`, `correlation_id`, `type` = kind) and headers (`traceparent`,
//! `x-schema-version`, `x-attempt`, ...) so that a consumer in any language can route and
//! de-duplicate without parsing the body. `adapters/bus/envelope.schema.json` is the contract.

use lapin::types::{AMQPValue, FieldTable, LongString, ShortString, MAX_SHORT_STRING_LENGTH};
use lapin::BasicProperties;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use uuid::Uuid;

/// The version of the envelope layout. Consumers reject majors they do not know.
pub const SCHEMA_VERSION: u32 = 1;

/// Header: the W3C trace context of the request that caused the message.
pub const H_TRACEPARENT: &str = "traceparent";
/// Header: [`SCHEMA_VERSION`] of the body.
pub const H_SCHEMA_VERSION: &str = "x-schema-version";
/// Header: how many delivery attempts were already made (0 on first publish).
pub const H_ATTEMPT: &str = "x-attempt";
/// Header: when the first delivery attempt failed (unix milliseconds), for the retry horizon.
pub const H_FIRST_FAILURE: &str = "x-first-failure-ms";
/// Header: why a message was parked.
pub const H_PARK_REASON: &str = "x-park-reason";
/// Header: the queue a parked message came from, so that a replay knows where it goes back to.
pub const H_ORIGIN_QUEUE: &str = "x-origin-queue";

/// What a message is for. The wire form is the kebab-case name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Kind {
    /// A BaRS message (new referral or cancellation) for a scheme. Payload: the message Bundle.
    #[serde(rename = "referral-message")]
    ReferralMessage,
    /// An outcome letter to file in the GP record. Payload: a DocumentReference.
    #[serde(rename = "letter-filing")]
    LetterFiling,
    /// What an adapter did with a message. Payload: [`DeliveryReport`].
    #[serde(rename = "delivery-report")]
    DeliveryReport,
    /// A queue-pull scheme's response (status, letter). Payload: the BaRS
    /// `servicerequest-response` message Bundle.
    #[serde(rename = "scheme-response")]
    SchemeResponse,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::ReferralMessage => "referral-message",
            Kind::LetterFiling => "letter-filing",
            Kind::DeliveryReport => "delivery-report",
            Kind::SchemeResponse => "scheme-response",
        }
    }
}

/// One bus message.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Envelope {
    pub schema_version: u32,
    /// Idempotency key: the same on every redelivery and retry of this message.
    pub message_id: Uuid,
    /// The referral conversation (the BaRS `X-Correlation-Id`).
    pub correlation_id: String,
    pub kind: Kind,
    /// The referral (ServiceRequest id) this message is about.
    pub referral_id: String,
    /// The directory Endpoint id the message is for.
    pub target: String,
    /// RFC 3339 time the message was created.
    pub created_at: String,
    /// W3C trace context (`00-<trace>-<span>-01`).
    pub traceparent: String,
    /// The payload as it came, JSON text checked but not built: an adapter that forwards it
    /// (a referral message to its scheme) sends these bytes, and one that reads it builds what
    /// it needs with [`Envelope::payload_as`].
    pub payload: Box<RawValue>,
}

/// Equal when every field is, the payload compared as text: an envelope read back from its own
/// bytes equals the envelope.
impl PartialEq for Envelope {
    fn eq(&self, other: &Self) -> bool {
        self.schema_version == other.schema_version
            && self.message_id == other.message_id
            && self.correlation_id == other.correlation_id
            && self.kind == other.kind
            && self.referral_id == other.referral_id
            && self.target == other.target
            && self.created_at == other.created_at
            && self.traceparent == other.traceparent
            && self.payload.get() == other.payload.get()
    }
}

/// Payload of a [`Kind::DeliveryReport`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeliveryReport {
    /// The `message_id` of the message the report is about.
    pub about: Uuid,
    pub about_kind: Kind,
    pub outcome: ReportOutcome,
    /// Attempts made so far, this one included.
    pub attempt: u32,
    /// What happened, for the timeline. Never patient data.
    pub detail: String,
    /// RFC 3339 time of the outcome.
    pub at: String,
    /// On `parked`: the message itself and the queue it came from, so that the gateway keeps a
    /// replayable record of it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parked: Option<ParkedCopy>,
    /// The far end's id for what was sent (a MESH message id), when it gives one. Later
    /// reports that know only that id (a MESH error report) are matched to the letter by it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    /// The timeline step to write, when the outcome alone does not name it (an
    /// acknowledgement: `letter-ack-infrastructure`, `letter-filed`, `letter-ack-negative`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
}

/// A parked message, as reported to the gateway.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ParkedCopy {
    /// The work queue the message was taken from (where a replay sends it back to).
    pub origin_queue: String,
    /// The envelope, exactly as it was delivered.
    pub envelope: Envelope,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReportOutcome {
    /// The downstream system has the message.
    Delivered,
    /// An attempt failed; the message waits in a retry queue.
    Retrying,
    /// Given up: the message is in the parking queue with the reason.
    Parked,
    /// Handed to a store-and-forward network (MESH) that acknowledges later.
    Sent,
    /// The far end acknowledged what was sent.
    Acknowledged,
    /// The far end refused what was sent (a negative acknowledgement or an error report): a
    /// person must look.
    Rejected,
}

#[derive(Debug, thiserror::Error)]
pub enum EnvelopeError {
    #[error("the body is not an envelope: {0}")]
    Json(#[from] serde_json::Error),
    #[error("envelope schema version {0} is not supported (this build reads {SCHEMA_VERSION})")]
    Version(u32),
    /// A field that goes into an AMQP short string (a property or a routing key) is longer than
    /// the 255 bytes AMQP allows.
    #[error("the envelope's {field} is {len} bytes; AMQP allows 255")]
    TooLong { field: &'static str, len: usize },
}

/// `payload` as JSON text. The payloads the bus carries (`Value`s, reports) always serialise; a
/// type that did not would go as `null`, which every consumer refuses.
fn raw(payload: &impl Serialize) -> Box<RawValue> {
    serde_json::value::to_raw_value(payload).unwrap_or_default()
}

/// Refuse what could not be published again: the correlation id becomes the AMQP
/// `correlation_id` property and the target a routing key, both at most 255 bytes.
fn check_lengths(correlation_id: &str, target: &str) -> Result<(), EnvelopeError> {
    for (field, value) in [("correlation_id", correlation_id), ("target", target)] {
        if value.len() > MAX_SHORT_STRING_LENGTH {
            return Err(EnvelopeError::TooLong {
                field,
                len: value.len(),
            });
        }
    }
    Ok(())
}

impl Envelope {
    /// A new envelope with a fresh message id and trace context.
    pub fn new(
        kind: Kind,
        correlation_id: impl Into<String>,
        referral_id: impl Into<String>,
        target: impl Into<String>,
        traceparent: Option<String>,
        payload: impl Serialize,
    ) -> Self {
        Self::with_payload(
            kind,
            correlation_id,
            referral_id,
            target,
            traceparent,
            raw(&payload),
        )
    }

    /// [`Envelope::new`] with a payload already written as JSON text.
    pub fn with_payload(
        kind: Kind,
        correlation_id: impl Into<String>,
        referral_id: impl Into<String>,
        target: impl Into<String>,
        traceparent: Option<String>,
        payload: Box<RawValue>,
    ) -> Self {
        Envelope {
            schema_version: SCHEMA_VERSION,
            message_id: Uuid::now_v7(),
            correlation_id: correlation_id.into(),
            kind,
            referral_id: referral_id.into(),
            target: target.into(),
            created_at: now_rfc3339(),
            traceparent: traceparent.unwrap_or_else(new_traceparent),
            payload,
        }
    }

    /// The payload read as `T` (a [`DeliveryReport`], or a `Value` to look into).
    pub fn payload_as<T: serde::de::DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_str(self.payload.get())
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        // Serialising a struct of strings and a Value cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Parse a body, refusing schema versions this build does not know.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, EnvelopeError> {
        let envelope: Envelope = serde_json::from_slice(bytes)?;
        if envelope.schema_version != SCHEMA_VERSION {
            return Err(EnvelopeError::Version(envelope.schema_version));
        }
        check_lengths(&envelope.correlation_id, &envelope.target)?;
        Ok(envelope)
    }

    /// AMQP properties for a first publish: persistent, JSON, ids and headers copied from the body.
    pub fn properties(&self) -> BasicProperties {
        first_publish_properties(
            self.schema_version,
            self.message_id,
            &self.correlation_id,
            self.kind,
            &self.traceparent,
        )
    }
}

/// An envelope read without building its payload, which is only checked and skipped: all that
/// publishing a stored envelope needs (its bytes go out as they are), without turning a large
/// FHIR Bundle into a `Value` on the way.
#[derive(Debug, Clone, Deserialize)]
pub struct Head {
    pub schema_version: u32,
    pub message_id: Uuid,
    pub correlation_id: String,
    pub kind: Kind,
    pub referral_id: String,
    pub target: String,
    pub created_at: String,
    pub traceparent: String,
    #[allow(dead_code)] // required and well-formed, never built
    payload: serde::de::IgnoredAny,
}

impl Head {
    /// Parse a body's head, refusing schema versions this build does not know.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, EnvelopeError> {
        let head: Head = serde_json::from_slice(bytes)?;
        if head.schema_version != SCHEMA_VERSION {
            return Err(EnvelopeError::Version(head.schema_version));
        }
        check_lengths(&head.correlation_id, &head.target)?;
        Ok(head)
    }

    /// The same properties as [`Envelope::properties`] for the whole envelope.
    pub fn properties(&self) -> BasicProperties {
        first_publish_properties(
            self.schema_version,
            self.message_id,
            &self.correlation_id,
            self.kind,
            &self.traceparent,
        )
    }
}

fn first_publish_properties(
    schema_version: u32,
    message_id: Uuid,
    correlation_id: &str,
    kind: Kind,
    traceparent: &str,
) -> BasicProperties {
    let mut headers = FieldTable::default();
    headers.insert(
        H_TRACEPARENT.into(),
        AMQPValue::LongString(LongString::from(traceparent.as_bytes())),
    );
    headers.insert(
        H_SCHEMA_VERSION.into(),
        AMQPValue::LongLongInt(i64::from(schema_version)),
    );
    headers.insert(H_ATTEMPT.into(), AMQPValue::LongLongInt(0));
    let properties = BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type(ShortString::from("application/json"))
        .with_message_id(ShortString::from(message_id.to_string()))
        .with_type(ShortString::from(kind.as_str()))
        .with_app_id(ShortString::from("signpost"))
        .with_headers(headers);
    // `from_bytes` refuses a longer one; an envelope made in code goes without the property
    // rather than panicking (the body still carries it).
    match ShortString::try_new(correlation_id) {
        Ok(c) => properties.with_correlation_id(c),
        Err(_) => properties,
    }
}

/// Read an integer header, whatever integer width the publisher used.
pub fn header_i64(properties: &BasicProperties, name: &str) -> Option<i64> {
    let headers = properties.headers().as_ref()?;
    match headers.inner().get(name)? {
        AMQPValue::LongLongInt(v) => Some(*v),
        AMQPValue::LongInt(v) => Some(i64::from(*v)),
        AMQPValue::LongUInt(v) => Some(i64::from(*v)),
        AMQPValue::ShortInt(v) => Some(i64::from(*v)),
        AMQPValue::ShortUInt(v) => Some(i64::from(*v)),
        AMQPValue::ShortShortInt(v) => Some(i64::from(*v)),
        AMQPValue::ShortShortUInt(v) => Some(i64::from(*v)),
        AMQPValue::Timestamp(v) => i64::try_from(*v).ok(),
        _ => None,
    }
}

/// Read a string header.
pub fn header_str(properties: &BasicProperties, name: &str) -> Option<String> {
    let headers = properties.headers().as_ref()?;
    match headers.inner().get(name)? {
        AMQPValue::LongString(v) => Some(String::from_utf8_lossy(v.as_bytes()).into_owned()),
        AMQPValue::ShortString(v) => Some(v.as_str().to_owned()),
        _ => None,
    }
}

/// Copy `properties` with some headers replaced.
pub fn with_headers(
    properties: &BasicProperties,
    set: impl IntoIterator<Item = (&'static str, AMQPValue)>,
) -> BasicProperties {
    let mut headers = properties.headers().clone().unwrap_or_default();
    for (name, value) in set {
        headers.insert(name.into(), value);
    }
    properties.clone().with_headers(headers)
}

/// A fresh W3C `traceparent` with random trace and span ids, sampled.
pub fn new_traceparent() -> String {
    let trace = Uuid::new_v4().simple().to_string();
    let span = &Uuid::new_v4().simple().to_string()[..16];
    format!("00-{trace}-{span}-01")
}

/// The current time as RFC 3339 with milliseconds, UTC.
pub fn now_rfc3339() -> String {
    format_rfc3339(time::OffsetDateTime::now_utc())
}

pub fn format_rfc3339(t: time::OffsetDateTime) -> String {
    let t = t
        .replace_nanosecond(t.millisecond() as u32 * 1_000_000)
        .unwrap_or(t);
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// Unix milliseconds now.
pub fn now_ms() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_envelope_survives_the_round_trip_through_bytes() {
        let e = Envelope::new(
            Kind::ReferralMessage,
            "c-1",
            "r-1",
            "scheme-a",
            None,
            serde_json::json!({"resourceType": "Bundle"}),
        );
        assert_eq!(Envelope::from_bytes(&e.to_bytes()).unwrap(), e);
    }

    #[test]
    fn the_head_alone_gives_the_same_properties_and_refuses_what_the_envelope_refuses() {
        let mut e = Envelope::new(
            Kind::ReferralMessage,
            "c-1",
            "r-1",
            "scheme-a",
            None,
            serde_json::json!({"resourceType": "Bundle", "entry": [{"a": [1, 2, {"b": null}]}]}),
        );
        let head = Head::from_bytes(&e.to_bytes()).unwrap();
        assert_eq!(head.properties(), e.properties());
        assert_eq!(
            (head.message_id, head.referral_id.as_str()),
            (e.message_id, "r-1")
        );
        let mut no_payload: serde_json::Value = serde_json::from_slice(&e.to_bytes()).unwrap();
        no_payload.as_object_mut().unwrap().remove("payload");
        assert!(Head::from_bytes(no_payload.to_string().as_bytes()).is_err());
        assert!(Head::from_bytes(b"{\"schema_version\": 1, \"payload\": {").is_err());
        e.schema_version = 99;
        assert!(matches!(
            Head::from_bytes(&e.to_bytes()),
            Err(EnvelopeError::Version(99))
        ));
    }

    #[test]
    fn ids_too_long_for_amqp_are_refused_on_reading_and_never_panic() {
        let long = "c".repeat(256);
        for (correlation, target) in [(long.as_str(), "t"), ("c", long.as_str())] {
            let e = Envelope::new(
                Kind::DeliveryReport,
                correlation,
                "r",
                target,
                None,
                serde_json::json!({}),
            );
            let bytes = e.to_bytes();
            assert!(matches!(
                Envelope::from_bytes(&bytes),
                Err(EnvelopeError::TooLong { len: 256, .. })
            ));
            assert!(matches!(
                Head::from_bytes(&bytes),
                Err(EnvelopeError::TooLong { len: 256, .. })
            ));
            // Made in code, it still has properties, without the correlation id if too long.
            let p = e.properties();
            assert_eq!(p.correlation_id().is_some(), correlation.len() <= 255);
        }
        let longest = "c".repeat(255);
        let e = Envelope::new(
            Kind::DeliveryReport,
            longest.as_str(),
            "r",
            "t",
            None,
            serde_json::json!({}),
        );
        assert_eq!(Envelope::from_bytes(&e.to_bytes()).unwrap(), e);
    }

    #[test]
    fn an_unknown_schema_version_is_refused() {
        let mut e = Envelope::new(
            Kind::LetterFiling,
            "c",
            "r",
            "t",
            None,
            serde_json::json!({}),
        );
        e.schema_version = 99;
        let err = Envelope::from_bytes(&e.to_bytes()).unwrap_err();
        assert!(matches!(err, EnvelopeError::Version(99)));
    }

    #[test]
    fn properties_carry_the_ids_kind_and_trace_context() {
        let e = Envelope::new(
            Kind::LetterFiling,
            "corr",
            "r",
            "t",
            None,
            serde_json::json!({}),
        );
        let p = e.properties();
        assert_eq!(
            p.message_id().as_ref().unwrap().as_str(),
            e.message_id.to_string()
        );
        assert_eq!(p.correlation_id().as_ref().unwrap().as_str(), "corr");
        assert_eq!(p.kind().as_ref().unwrap().as_str(), "letter-filing");
        assert_eq!(p.delivery_mode(), &Some(2));
        assert_eq!(header_str(&p, H_TRACEPARENT).unwrap(), e.traceparent);
        assert_eq!(header_i64(&p, H_SCHEMA_VERSION), Some(1));
        assert_eq!(header_i64(&p, H_ATTEMPT), Some(0));
    }

    fn schema() -> jsonschema::Validator {
        let schema: serde_json::Value =
            serde_json::from_str(include_str!("../envelope.schema.json")).unwrap();
        jsonschema::validator_for(&schema).unwrap()
    }

    #[test]
    fn the_documented_schema_accepts_what_the_bus_sends() {
        let v = schema();
        let referral = Envelope::new(
            Kind::ReferralMessage,
            uuid::Uuid::new_v4().to_string(),
            "r-1",
            "scheme-a",
            None,
            serde_json::json!({"resourceType": "Bundle", "type": "message"}),
        );
        let referral = serde_json::to_value(&referral).unwrap();
        assert!(
            v.is_valid(&referral),
            "{:?}",
            v.iter_errors(&referral)
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
        );
        let report = DeliveryReport {
            about: Uuid::new_v4(),
            about_kind: Kind::LetterFiling,
            outcome: ReportOutcome::Parked,
            reference: None,
            step: None,
            attempt: 3,
            detail: "refused with HTTP 400".into(),
            at: now_rfc3339(),
            parked: None,
        };
        let report = Envelope::new(
            Kind::DeliveryReport,
            "c",
            "r",
            "gp-1",
            None,
            serde_json::to_value(&report).unwrap(),
        );
        let report = serde_json::to_value(&report).unwrap();
        assert!(
            v.is_valid(&report),
            "{:?}",
            v.iter_errors(&report)
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
        );
    }

    #[test]
    fn the_documented_schema_refuses_what_the_bus_would_refuse() {
        let v = schema();
        let good = serde_json::to_value(Envelope::new(
            Kind::LetterFiling,
            "c",
            "r",
            "t",
            None,
            serde_json::json!({}),
        ))
        .unwrap();
        let mut wrong_kind = good.clone();
        wrong_kind["kind"] = "referral".into();
        assert!(!v.is_valid(&wrong_kind));
        assert!(Envelope::from_bytes(wrong_kind.to_string().as_bytes()).is_err());
        let mut wrong_version = good.clone();
        wrong_version["schema_version"] = 2.into();
        assert!(!v.is_valid(&wrong_version));
        let mut report_without_payload = good;
        report_without_payload["kind"] = "delivery-report".into();
        assert!(!v.is_valid(&report_without_payload));
    }

    #[test]
    fn a_traceparent_has_the_w3c_shape() {
        let t = new_traceparent();
        let parts: Vec<_> = t.split('-').collect();
        assert_eq!(parts.len(), 4);
        assert_eq!(
            (parts[0], parts[1].len(), parts[2].len(), parts[3]),
            ("00", 32, 16, "01")
        );
    }
}
