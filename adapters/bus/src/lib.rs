//! The bus contract shared by the gateway and every adapter.
//!
//! # Layout
//! - [`envelope`]: the message every queue carries (ids, kind, schema version, payload), and how it
//!   maps onto AMQP properties and headers. Documented for other languages by
//!   `adapters/bus/envelope.schema.json`.
//! - [`topology`]: the names of exchanges and queues, and their idempotent declaration.
//! - [`amqp`]: connecting (`amqp://`, and `amqps://` with certificate checks) with backoff.
//! - [`publish`]: publishing with publisher confirms (mandatory routing, pipelined batches).
//! - [`consume`]: consuming with acks, retry through TTL queues, parking with the reason.
//! - [`directory`]: the FHIR directory of practices, schemes and endpoints, parsed once at start.
//! - [`http`]: outbound HTTP (rustls) and how an HTTP answer maps to a delivery outcome.
//! - [`secret`]: settings that never print.
//! - [`trace`]: W3C trace context carried across the bus, continued by the span that delivers.
//!
//! This crate knows nothing of the ledger or of FHIR validation: those belong to the gateway.

pub mod amqp;
pub mod consume;
pub mod directory;
pub mod envelope;
pub mod http;
pub mod publish;
pub mod secret;
pub mod topology;
pub mod trace;
pub mod uris;

pub use consume::{ConsumeSettings, Handler, Outcome, QueueConsumer, Reports, RetryPolicy};
pub use directory::Directory;
pub use envelope::{Envelope, Kind};
pub use publish::Publisher;
pub use secret::Secret;

/// Errors talking to the broker.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("broker: {0}")]
    Amqp(#[from] lapin::Error),
    #[error("the broker refused the message (negative publisher confirm)")]
    Nacked,
    #[error("no queue is bound for exchange {exchange:?} and routing key {routing_key:?}")]
    Unroutable {
        exchange: String,
        routing_key: String,
    },
    #[error("the broker closed the consumer of {0}")]
    ConsumerClosed(String),
    #[error("not sent: an earlier message of the batch failed")]
    NotSent,
    /// A call the broker connection normally completes at once (an ack), or soon (a publish's
    /// confirm), did not complete in time.
    #[error("no answer on the broker connection to the {what} within {wait:?}")]
    NoAnswer {
        what: &'static str,
        wait: std::time::Duration,
    },
    #[error("envelope: {0}")]
    Envelope(#[from] envelope::EnvelopeError),
    /// The broker URL cannot be used. Never quotes the URL (it holds the password).
    #[error("broker URL: {0}")]
    Url(String),
    /// The TLS files of an `amqps://` URL cannot be used. Names the file, never its content.
    #[error("broker TLS: {0}")]
    Tls(#[from] http::TlsError),
}
