//! Publishing with publisher confirms.
//!
//! Every publish is `mandatory`: a message no queue is bound for comes back as an error instead
//! of vanishing. A publish only counts once the broker has confirmed it (for quorum queues, once
//! a majority has it on disk). [`Publisher::publish_all`] pipelines: it sends a batch, then
//! awaits the confirms, as a well-written client does.

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::ShortString;
use lapin::{BasicProperties, Channel, Connection, PublisherConfirm};

use crate::envelope::Envelope;
use crate::BusError;

/// A channel in confirm mode.
#[derive(Clone)]
pub struct Publisher {
    channel: Channel,
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
        Ok(Publisher { channel })
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

    async fn settle(confirm: PublisherConfirm, msg: &Outgoing<'_>) -> Result<(), BusError> {
        let confirmation = confirm.await?;
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
        Self::settle(confirm, &msg).await
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
    /// A failure to send stops the batch: the rest are reported as not sent.
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
        for (confirm, msg) in pending.into_iter().zip(msgs) {
            results.push(match confirm {
                Ok(confirm) => Self::settle(confirm, msg).await,
                Err(e) => Err(e),
            });
        }
        while results.len() < msgs.len() {
            results.push(Err(BusError::NotSent));
        }
        results
    }
}
