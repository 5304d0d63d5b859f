//! Exchange and queue names, and their idempotent declaration.
//!
//! ```text
//! exchange sp.referrals (direct) --<target>--> quorum queue sp.referrals.<target>   (schemes)
//! exchange sp.records   (direct) --<target>--> quorum queue sp.records.<target>     (GP systems)
//! exchange sp.events    (direct) --gateway---> quorum queue sp.events               (delivery reports)
//!
//!
//! every work queue Q (sp.events included) also has
//!   Q.retry.<delay>  quorum, x-message-ttl = delay, dead-letters back to Q (one queue per delay,
//!                    so a long wait never sits in front of a short one)
//!   Q.parked         quorum, where messages go with their reason once retries are over; Q
//!                    dead-letters here too when a message exceeds the delivery limit (a consumer
//!                    that crashes on it every time)
//! ```
//!
//! Declaring is idempotent: the same names with the same arguments. `deploy/rabbitmq/` holds the
//! same topology as broker definitions for operators who pre-provision.

use std::time::Duration;

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{Channel, ExchangeKind};

use crate::BusError;

pub const REFERRALS_EXCHANGE: &str = "sp.referrals";
pub const RECORDS_EXCHANGE: &str = "sp.records";
pub const EVENTS_EXCHANGE: &str = "sp.events";
pub const EVENTS_QUEUE: &str = "sp.events";
pub const EVENTS_ROUTING_KEY: &str = "gateway";
/// Where queue-pull schemes publish their responses (a topic exchange: each scheme's broker
/// user may publish only with its own Endpoint id as routing key).
pub const REPLIES_EXCHANGE: &str = "sp.replies";
pub const REPLIES_QUEUE: &str = "sp.replies";

/// How many times a quorum queue redelivers one message (consumer crashes, channel losses)
/// before it dead-letters it to the parking queue.
pub const DELIVERY_LIMIT: i64 = 50;

/// Which side of the loop a target queue serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// Referrals to a scheme.
    Referrals,
    /// Records (letters) to a GP system.
    Records,
}

impl Side {
    pub fn exchange(self) -> &'static str {
        match self {
            Side::Referrals => REFERRALS_EXCHANGE,
            Side::Records => RECORDS_EXCHANGE,
        }
    }
}

/// The work queue of one target.
pub fn queue(side: Side, target: &str) -> String {
    format!("{}.{target}", side.exchange())
}

/// The retry queue of `queue` for one delay.
pub fn retry_queue(queue: &str, delay: Duration) -> String {
    format!("{queue}.retry.{}", delay_label(delay))
}

/// The parking queue of `queue`.
pub fn parked_queue(queue: &str) -> String {
    format!("{queue}.parked")
}

fn delay_label(delay: Duration) -> String {
    let ms = delay.as_millis();
    if ms % 3_600_000 == 0 {
        format!("{}h", ms / 3_600_000)
    } else if ms % 60_000 == 0 {
        format!("{}m", ms / 60_000)
    } else if ms % 1000 == 0 {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

/// What to declare: the targets on each side and the retry delays.
#[derive(Debug, Clone)]
pub struct Spec {
    pub referral_targets: Vec<String>,
    pub record_targets: Vec<String>,
    pub retry_delays: Vec<Duration>,
}

fn long(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s.as_bytes()))
}

fn quorum_args() -> FieldTable {
    let mut args = FieldTable::default();
    args.insert("x-queue-type".into(), long("quorum"));
    args
}

fn dead_letter_args(to_queue: &str) -> FieldTable {
    let mut args = quorum_args();
    args.insert("x-dead-letter-exchange".into(), long(""));
    args.insert("x-dead-letter-routing-key".into(), long(to_queue));
    // At-least-once dead-lettering: a message moving between queues is never dropped on the way.
    args.insert("x-dead-letter-strategy".into(), long("at-least-once"));
    args.insert("x-overflow".into(), long("reject-publish"));
    args
}

async fn declare_queue(channel: &Channel, name: &str, args: FieldTable) -> Result<(), BusError> {
    channel
        .queue_declare(
            name.into(),
            QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            },
            args,
        )
        .await?;
    Ok(())
}

async fn declare_exchange(
    channel: &Channel,
    name: &str,
    kind: ExchangeKind,
) -> Result<(), BusError> {
    channel
        .exchange_declare(
            name.into(),
            kind,
            ExchangeDeclareOptions {
                durable: true,
                ..ExchangeDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await?;
    Ok(())
}

/// Declare a work queue bound to `exchange` by `routing_key`, with its retry and parking queues.
pub async fn declare_work_queue(
    channel: &Channel,
    work: &str,
    exchange: &str,
    routing_key: &str,
    retry_delays: &[Duration],
) -> Result<(), BusError> {
    let parked = parked_queue(work);
    declare_queue(channel, &parked, quorum_args()).await?;
    let mut work_args = dead_letter_args(&parked);
    work_args.insert(
        "x-delivery-limit".into(),
        AMQPValue::LongLongInt(DELIVERY_LIMIT),
    );
    declare_queue(channel, work, work_args).await?;
    channel
        .queue_bind(
            work.into(),
            exchange.into(),
            routing_key.into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    for delay in retry_delays {
        let mut args = dead_letter_args(work);
        let ttl = i64::try_from(delay.as_millis()).unwrap_or(i64::MAX);
        args.insert("x-message-ttl".into(), AMQPValue::LongLongInt(ttl));
        declare_queue(channel, &retry_queue(work, *delay), args).await?;
    }
    Ok(())
}

/// Declare the whole topology. Safe to call on every start and every reconnect.
pub async fn declare(channel: &Channel, spec: &Spec) -> Result<(), BusError> {
    for exchange in [REFERRALS_EXCHANGE, RECORDS_EXCHANGE, EVENTS_EXCHANGE] {
        declare_exchange(channel, exchange, ExchangeKind::Direct).await?;
    }
    declare_exchange(channel, REPLIES_EXCHANGE, ExchangeKind::Topic).await?;
    declare_work_queue(
        channel,
        REPLIES_QUEUE,
        REPLIES_EXCHANGE,
        "#",
        &spec.retry_delays,
    )
    .await?;
    declare_work_queue(
        channel,
        EVENTS_QUEUE,
        EVENTS_EXCHANGE,
        EVENTS_ROUTING_KEY,
        &spec.retry_delays,
    )
    .await?;
    for (side, targets) in [
        (Side::Referrals, &spec.referral_targets),
        (Side::Records, &spec.record_targets),
    ] {
        for target in targets {
            let work = queue(side, target);
            declare_work_queue(channel, &work, side.exchange(), target, &spec.retry_delays).await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_names_follow_the_documented_pattern() {
        let q = queue(Side::Referrals, "scheme-a");
        assert_eq!(q, "sp.referrals.scheme-a");
        assert_eq!(parked_queue(&q), "sp.referrals.scheme-a.parked");
        assert_eq!(
            retry_queue(&q, Duration::from_secs(30)),
            "sp.referrals.scheme-a.retry.30s"
        );
        assert_eq!(
            retry_queue(&q, Duration::from_secs(600)),
            "sp.referrals.scheme-a.retry.10m"
        );
        assert_eq!(
            retry_queue(&q, Duration::from_secs(7200)),
            "sp.referrals.scheme-a.retry.2h"
        );
        assert_eq!(
            retry_queue(&q, Duration::from_millis(250)),
            "sp.referrals.scheme-a.retry.250ms"
        );
        assert_eq!(queue(Side::Records, "gp-1"), "sp.records.gp-1");
    }
}
