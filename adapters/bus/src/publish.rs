//! Publishing with publisher confirms.
//!
//! Every publish is `mandatory`: a message no queue is bound for comes back as an error instead
//! of vanishing. A publish only counts once the broker has confirmed it (for quorum queues, once
//! a majority has it on disk). [`Publisher::publish_all`] pipelines: it sends a batch, then
//! awaits the confirms, as a well-written client does.
//!
//! Sending a message (until the connection has written it) and then its confirm are each
//! awaited for at most [`PUBLISH_WAIT`], or for as long as the broker has blocked the connection
//! (a memory or disk alarm); then the publish fails with [`BusError::NoAnswer`], and the caller
//! reconnects and publishes again, as after any failure (the receivers are idempotent on the
//! message id). lapin fails what is pending when a connection fails, but a publish registered
//! just as it failed can be left pending for good (as an ack can: see
//! [`consume`](crate::consume)), and without the bound the relay would wait on it for ever with
//! the outbox filling behind it.

use std::time::Duration;

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::ShortString;
use lapin::{BasicProperties, Channel, Connection, ConnectionStatus, PublisherConfirm};

use crate::envelope::Envelope;
use crate::{answered, BusError};

/// How long a publish waits, while the connection is not blocked, for the connection to write it
/// and then for its confirm. A quorum queue confirms once a majority has the message on disk:
/// milliseconds, or a second or two when the broker's disk is slow.
pub const PUBLISH_WAIT: Duration = Duration::from_secs(15);

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
        let sent = self.channel.basic_publish(
            exchange,
            routing_key,
            BasicPublishOptions {
                mandatory: true,
                ..BasicPublishOptions::default()
            },
            &msg.body,
            msg.properties.clone(),
        );
        Ok(answered("publish", sent, PUBLISH_WAIT, &|| self.connection.blocked()).await??)
    }

    /// Await `confirm` for at most `wait`, or longer while `blocked` says the broker holds the
    /// connection.
    async fn settle(
        confirm: PublisherConfirm,
        msg: &Outgoing<'_>,
        wait: Duration,
        blocked: &(dyn Fn() -> bool + Sync),
    ) -> Result<(), BusError> {
        let confirmation = answered("publish confirm", confirm, wait, blocked).await??;
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
        Self::settle(confirm, &msg, PUBLISH_WAIT, &|| self.connection.blocked()).await
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
    /// A failure to send stops the batch: the rest are reported as not sent. Once a send or a
    /// confirm has not come within its wait, the confirms are taken only if they are already in.
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
        // After a send the connection did not take in time, only confirms already in are taken.
        let mut gave_up = pending
            .iter()
            .any(|p| matches!(p, Err(BusError::NoAnswer { .. })));
        for (confirm, msg) in pending.into_iter().zip(msgs) {
            let result = match confirm {
                Ok(confirm) if gave_up => {
                    Self::settle(confirm, msg, Duration::ZERO, &|| false).await
                }
                Ok(confirm) => Self::settle(confirm, msg, PUBLISH_WAIT, &blocked).await,
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
