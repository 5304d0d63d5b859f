//! Publishing with publisher confirms.
//!
//! Every publish is `mandatory`: a message no queue is bound for comes back as an error instead
//! of vanishing. A publish only counts once the broker has confirmed it (for quorum queues, once
//! a majority has it on disk). [`Publisher::publish_all`] pipelines: it sends a batch, then
//! awaits the confirms, as a well-written client does.
//!
//! A confirm is awaited for at most [`CONFIRM_WAIT`], and for as long as the broker has blocked
//! the connection (a memory or disk alarm), then the publish fails with [`BusError::NoAnswer`]:
//! the caller reconnects and publishes again, as after any failure (the receivers are idempotent
//! on the message id). lapin rejects the confirms pending when a connection fails, but one
//! registered just as the connection failed can be left pending for good, and without the
//! bound the relay would wait on it for ever with the outbox filling behind it.

use std::future::Future;
use std::time::Duration;

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::ShortString;
use lapin::{BasicProperties, Channel, Connection, ConnectionStatus, PublisherConfirm};

use crate::envelope::Envelope;
use crate::BusError;

/// How long a publish waits for its confirm while the connection is not blocked. A quorum queue
/// confirms once a majority has the message on disk: milliseconds, or a second or two when the
/// broker's disk is slow.
pub const CONFIRM_WAIT: Duration = Duration::from_secs(15);

/// A channel in confirm mode.
#[derive(Clone)]
pub struct Publisher {
    channel: Channel,
    connection: ConnectionStatus,
}

/// One message to publish.
pub struct Outgoing<'a> {
    pub exchange: &'a str,
    pub routing_key: &'a str,
    pub body: Vec<u8>,
    pub properties: BasicProperties,
}

impl Publisher {
    pub async fn open(conn: &Connection) -> Result<Self, BusError> {
        let channel = conn.create_channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        Ok(Publisher {
            channel,
            connection: conn.status().clone(),
        })
    }

    /// Whether the channel is still usable.
    pub fn is_open(&self) -> bool {
        self.channel.status().connected()
    }

    async fn send(&self, msg: &Outgoing<'_>) -> Result<PublisherConfirm, BusError> {
        // AMQP names are at most 255 bytes: a longer one can be bound to no queue.
        let unroutable = |_| BusError::Unroutable {
            exchange: msg.exchange.to_owned(),
            routing_key: msg.routing_key.to_owned(),
        };
        let exchange = ShortString::try_new(msg.exchange).map_err(unroutable)?;
        let routing_key = ShortString::try_new(msg.routing_key).map_err(unroutable)?;
        Ok(self
            .channel
            .basic_publish(
                exchange,
                routing_key,
                BasicPublishOptions {
                    mandatory: true,
                    ..BasicPublishOptions::default()
                },
                &msg.body,
                msg.properties.clone(),
            )
            .await?)
    }

    /// Await `confirm` for at most `wait`, or longer while `blocked` says the broker holds the
    /// connection.
    async fn settle(
        confirm: PublisherConfirm,
        msg: &Outgoing<'_>,
        wait: Duration,
        blocked: &(dyn Fn() -> bool + Sync),
    ) -> Result<(), BusError> {
        let confirmation = confirmed(confirm, wait, blocked).await??;
        if confirmation.is_nack() {
            return Err(BusError::Nacked);
        }
        if confirmation.take_message().is_some() {
            return Err(BusError::Unroutable {
                exchange: msg.exchange.to_owned(),
                routing_key: msg.routing_key.to_owned(),
            });
        }
        Ok(())
    }

    /// Publish one message and wait for its confirm.
    pub async fn publish(&self, msg: Outgoing<'_>) -> Result<(), BusError> {
        let confirm = self.send(&msg).await?;
        Self::settle(confirm, &msg, CONFIRM_WAIT, &|| self.connection.blocked()).await
    }

    /// Publish an envelope with its standard properties.
    pub async fn publish_envelope(
        &self,
        exchange: &str,
        routing_key: &str,
        envelope: &Envelope,
    ) -> Result<(), BusError> {
        self.publish(Outgoing {
            exchange,
            routing_key,
            body: envelope.to_bytes(),
            properties: envelope.properties(),
        })
        .await
    }

    /// Send every message, then await every confirm. The result for each message is in order.
    /// A failure to send stops the batch: the rest are reported as not sent. Once a confirm has
    /// not come within its wait, the rest are taken only if they are already in.
    pub async fn publish_all(&self, msgs: &[Outgoing<'_>]) -> Vec<Result<(), BusError>> {
        let mut pending = Vec::with_capacity(msgs.len());
        for msg in msgs {
            match self.send(msg).await {
                Ok(confirm) => pending.push(Ok(confirm)),
                // Refused before it was sent (a name too long for AMQP): the rest still go.
                Err(e @ BusError::Unroutable { .. }) => pending.push(Err(e)),
                Err(e) => {
                    pending.push(Err(e));
                    break;
                }
            }
        }
        let mut results = Vec::with_capacity(msgs.len());
        let blocked = || self.connection.blocked();
        let mut gave_up = false;
        for (confirm, msg) in pending.into_iter().zip(msgs) {
            let result = match confirm {
                Ok(confirm) if gave_up => {
                    Self::settle(confirm, msg, Duration::ZERO, &|| false).await
                }
                Ok(confirm) => Self::settle(confirm, msg, CONFIRM_WAIT, &blocked).await,
                Err(e) => Err(e),
            };
            gave_up |= matches!(result, Err(BusError::NoAnswer { .. }));
            results.push(result);
        }
        while results.len() < msgs.len() {
            results.push(Err(BusError::NotSent));
        }
        results
    }
}

/// `confirm`'s result if it comes within `wait`, or later while `blocked()` (checked each time a
/// wait runs out); `NoAnswer` if it does not. A zero `wait` takes only a result already in.
async fn confirmed<T>(
    confirm: impl Future<Output = T>,
    wait: Duration,
    blocked: &(dyn Fn() -> bool + Sync),
) -> Result<T, BusError> {
    tokio::pin!(confirm);
    loop {
        match tokio::time::timeout(wait, &mut confirm).await {
            Ok(done) => return Ok(done),
            Err(_) if !wait.is_zero() && blocked() => tracing::warn!(
                "the broker has blocked publishing on this connection (a resource alarm); still waiting for a confirm"
            ),
            Err(_) => {
                return Err(BusError::NoAnswer {
                    what: "publish",
                    wait,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    const WAIT: Duration = Duration::from_millis(20);

    /// `confirmed`, or a test failure if it has not returned within 5 s.
    async fn within_5s<T>(
        confirm: impl Future<Output = T>,
        wait: Duration,
        blocked: &(dyn Fn() -> bool + Sync),
    ) -> Result<T, BusError> {
        tokio::time::timeout(Duration::from_secs(5), confirmed(confirm, wait, blocked))
            .await
            .expect("confirmed returned")
    }

    #[tokio::test]
    async fn a_confirm_that_never_comes_fails_after_its_wait() {
        let started = std::time::Instant::now();
        let failed = within_5s(std::future::pending::<()>(), WAIT, &|| false).await;
        assert!(
            matches!(failed, Err(BusError::NoAnswer { what: "publish", wait }) if wait == WAIT),
            "{failed:?}"
        );
        assert!(started.elapsed() >= WAIT);
        let done = within_5s(async { 7 }, WAIT, &|| false).await;
        assert!(matches!(done, Ok(7)), "{done:?}");
    }

    #[tokio::test]
    async fn a_confirm_is_awaited_for_as_long_as_the_broker_blocks_the_connection() {
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
    async fn a_zero_wait_takes_only_a_confirm_already_in() {
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
