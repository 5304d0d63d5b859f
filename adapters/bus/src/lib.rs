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

/// `call`'s result if it comes within `wait`, or later while `blocked()` (checked each time a
/// wait runs out); `NoAnswer` about `what` if it does not. A zero `wait` takes only a result
/// already in.
///
/// For what lapin does on the connection's behalf (an ack, a publish and its confirm): lapin
/// fails what is pending when a connection fails, but a call made just as it failed can be left
/// pending for good, and whoever awaits it with it.
pub(crate) async fn answered<T>(
    what: &'static str,
    call: impl std::future::Future<Output = T>,
    wait: std::time::Duration,
    blocked: &(dyn Fn() -> bool + Sync),
) -> Result<T, BusError> {
    tokio::pin!(call);
    loop {
        match tokio::time::timeout(wait, &mut call).await {
            Ok(done) => return Ok(done),
            Err(_) if !wait.is_zero() && blocked() => tracing::warn!(
                what,
                "the broker has blocked publishing on this connection (a resource alarm); still waiting"
            ),
            Err(_) => return Err(BusError::NoAnswer { what, wait }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::Future;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    const WAIT: Duration = Duration::from_millis(20);

    /// `answered`, or a test failure if it has not returned within 5 s.
    async fn within_5s<T>(
        call: impl Future<Output = T>,
        wait: Duration,
        blocked: &(dyn Fn() -> bool + Sync),
    ) -> Result<T, BusError> {
        let answer = answered("publish confirm", call, wait, blocked);
        tokio::time::timeout(Duration::from_secs(5), answer)
            .await
            .expect("answered returned")
    }

    #[tokio::test]
    async fn a_call_that_never_completes_fails_after_its_wait() {
        let started = std::time::Instant::now();
        let failed = within_5s(std::future::pending::<()>(), WAIT, &|| false).await;
        assert!(
            matches!(failed, Err(BusError::NoAnswer { what: "publish confirm", wait }) if wait == WAIT),
            "{failed:?}"
        );
        assert!(started.elapsed() >= WAIT);
        let done = within_5s(async { 7 }, WAIT, &|| false).await;
        assert!(matches!(done, Ok(7)), "{done:?}");
    }

    #[tokio::test]
    async fn a_call_is_awaited_for_as_long_as_the_broker_blocks_the_connection() {
        // Comes after five waits: with the connection blocked all along, it is taken.
        let late = async {
            tokio::time::sleep(WAIT * 5).await;
            "confirmed"
        };
        let done = within_5s(late, WAIT, &|| true).await;
        assert!(matches!(done, Ok("confirmed")), "{done:?}");

        // Blocked for the first three waits, then not: it fails at the end of the fourth.
        let checks = AtomicUsize::new(0);
        let blocked = || checks.fetch_add(1, Ordering::SeqCst) < 3;
        let failed = within_5s(std::future::pending::<()>(), WAIT, &blocked).await;
        assert!(
            matches!(failed, Err(BusError::NoAnswer { .. })),
            "{failed:?}"
        );
        assert_eq!(checks.load(Ordering::SeqCst), 4);
    }

    #[tokio::test]
    async fn a_zero_wait_takes_only_an_answer_already_in() {
        let done = within_5s(async { 1 }, Duration::ZERO, &|| true).await;
        assert!(matches!(done, Ok(1)), "{done:?}");
        // Not in yet: no answer at once, even with the connection blocked.
        let failed = within_5s(std::future::pending::<()>(), Duration::ZERO, &|| true).await;
        assert!(
            matches!(failed, Err(BusError::NoAnswer { .. })),
            "{failed:?}"
        );
    }
}
