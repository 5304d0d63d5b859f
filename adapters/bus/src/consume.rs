//! Consuming with acks, retry through TTL queues, and parking.
//!
//! A [`Handler`] says what happened to one message ([`Outcome`]); this module does the rest, and
//! acknowledges the delivery only after that rest is durable:
//! - `Delivered`: report it on `sp.events` (confirmed), then ack. When the adapter runs in the
//!   gateway's own process ([`Reports::Local`]), the report is recorded in the ledger directly
//!   instead, and goes on `sp.events` only if the ledger does not take it.
//! - `Retry`: republish the same message (same `message_id`) to the retry queue for this attempt's
//!   delay with the attempt count raised (confirmed), report, then ack. The retry queue's TTL
//!   dead-letters it back to the work queue. No consumer ever sleeps holding a message, so one
//!   failing message never holds up the others. Once the retry horizon has passed since the first
//!   failure, the message is parked instead.
//! - `Park`: publish it to the parking queue with the reason (confirmed), report, then ack.
//!
//! If a publish fails the delivery is not acked: the broker redelivers it after the channel
//! closes, and the supervisor reconnects. Reports carry ids derived from the message id, outcome
//! and attempt, so a report sent twice is recorded once.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::Connection;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use uuid::Uuid;

use crate::envelope::{
    self, header_i64, now_ms, now_rfc3339, DeliveryReport, Envelope, Kind, ParkedCopy,
    ReportOutcome, H_ATTEMPT, H_FIRST_FAILURE, H_ORIGIN_QUEUE, H_PARK_REASON,
};
use crate::publish::{Outgoing, Publisher};
use crate::topology::{self, parked_queue, retry_queue};
use crate::{answered, BusError};

/// What became of one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The downstream system has it. The text goes on the referral's timeline.
    Delivered(String),
    /// Handed to a store-and-forward network (MESH) under the far end's id `reference`;
    /// acknowledgements follow later and are reported on their own.
    Sent { detail: String, reference: String },
    /// A passing failure (5xx, time-out, connection refused): try again later.
    Retry(String),
    /// A failure that retrying will not mend (4xx, undecodable message): park it.
    Park(String),
}

impl Outcome {
    /// The outcome's name, without its detail (for spans and metrics).
    pub fn name(&self) -> &'static str {
        match self {
            Outcome::Delivered(_) => "delivered",
            Outcome::Sent { .. } => "sent",
            Outcome::Retry(_) => "retry",
            Outcome::Park(_) => "park",
        }
    }
}

pub type HandlerFuture<'a> = Pin<Box<dyn Future<Output = Outcome> + Send + 'a>>;

/// How a message arrived: its attempt number and the routing key it was published with (for
/// messages from schemes, the broker lets each scheme's user publish only its own key).
#[derive(Debug, Clone)]
pub struct Meta {
    pub attempt: u32,
    pub routing_key: String,
}

/// Delivers one message downstream. Must be idempotent by `envelope.message_id`.
pub trait Handler: Send + Sync + 'static {
    fn handle<'a>(&'a self, envelope: &'a Envelope, meta: &'a Meta) -> HandlerFuture<'a>;
}

/// A target's own retry policy (from its directory Endpoint); unset parts fall back to the
/// consumer settings.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Park once this many attempts have failed.
    pub max_attempts: Option<u32>,
    /// Park once this long has passed since the first failure.
    pub horizon: Option<Duration>,
}

/// A queue to consume, what delivers its messages, and its retry policy.
#[derive(Clone)]
pub struct QueueConsumer {
    pub queue: String,
    pub handler: Arc<dyn Handler>,
    pub policy: RetryPolicy,
}

/// Why a failed message should be parked now rather than retried, if it should.
pub fn give_up(
    attempt: u32,
    elapsed: Duration,
    default_horizon: Duration,
    policy: RetryPolicy,
) -> Option<String> {
    if let Some(max) = policy.max_attempts {
        if attempt >= max {
            return Some(format!(
                "gave up after {attempt} attempts (the limit is {max})"
            ));
        }
    }
    let horizon = policy.horizon.unwrap_or(default_horizon);
    (elapsed >= horizon).then(|| {
        format!(
            "gave up after {attempt} attempts over {}s (the horizon is {}s)",
            elapsed.as_secs(),
            horizon.as_secs()
        )
    })
}

/// The wait before a retry: the tier's delay shortened by up to 20% (`unit` in 0..1), so that
/// messages that failed together do not all come back together. The retry queue's TTL is the
/// tier's full delay, so a message never waits longer than its tier.
pub fn jittered(delay: Duration, unit: f64) -> Duration {
    let unit = unit.clamp(0.0, 1.0);
    delay.mul_f64(1.0 - 0.2 * unit)
}

/// Consumer settings.
#[derive(Debug, Clone)]
pub struct ConsumeSettings {
    /// Deliveries the handler works on at once per queue (requests in flight to the far end).
    /// The broker sends up to [`BUFFER_FACTOR`] times as many, so that a delivery waiting for
    /// its report (a confirm, or a ledger commit under [`Reports::Local`]) and its ack does not
    /// hold up the next request.
    pub prefetch: u16,
    /// Retry delays, by attempt; the last one repeats.
    pub retry_delays: Vec<Duration>,
    /// Park once this long has passed since the first failure.
    pub retry_horizon: Duration,
    /// Where the delivery report for each outcome goes.
    pub reports: Reports,
}

/// Where a consumer's delivery reports go. Either way a report is durable before the delivery
/// it is about is acked.
#[derive(Clone, Default)]
pub enum Reports {
    /// Nowhere: the gateway's own consumers, whose outcomes are already in its ledger.
    Off,
    /// Published on `sp.events` (confirmed), for the gateway's recorder to consume.
    #[default]
    Bus,
    /// Handed to the recorder itself, when it runs in the same process (`signpost run`): one
    /// ledger transaction instead of a confirmed publish, a delivery and an ack on the broker.
    /// A report the recorder does not take (its ledger is unreachable) is published on
    /// `sp.events` instead, where the recorder's consumer retries it.
    Local(Arc<dyn Handler>),
}

impl std::fmt::Debug for Reports {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Reports::Off => "Off",
            Reports::Bus => "Bus",
            Reports::Local(_) => "Local",
        })
    }
}

impl Default for ConsumeSettings {
    fn default() -> Self {
        ConsumeSettings {
            prefetch: 16,
            retry_delays: default_retry_delays(),
            retry_horizon: Duration::from_secs(72 * 3600),
            reports: Reports::Bus,
        }
    }
}

/// The AMQP prefetch count is this many times [`ConsumeSettings::prefetch`]. A local report
/// waits for the ledger's group commit, which under load takes longer than a broker confirm:
/// at 4 the adapter of `signpost run` fell behind the gateway at 64 connections (delivered 92%
/// of accepted, end-to-end p99 about 500 ms); at 8 it keeps up (98-99%, about 200-250 ms).
pub const BUFFER_FACTOR: u16 = 8;

/// The longest an acknowledgement may take to be handed to the connection; normally it takes
/// microseconds. lapin can leave an ack sent just as the connection broke unanswered for good, and
/// a delivery task waiting on it would hold its consumer: no reconnect, and no shutdown.
const ACK_WAIT: Duration = Duration::from_secs(5);

/// Acknowledge `delivery`, or fail (so that the consumer reconnects, and the broker redelivers
/// the message, whose handling is idempotent) if the connection does not take the ack in time.
async fn ack(delivery: &Delivery) -> Result<(), BusError> {
    let ack = delivery.acker.ack(BasicAckOptions::default());
    match answered("ack", ack, ACK_WAIT, &|| false).await {
        Ok(acked) => Ok(acked.map(drop)?),
        Err(e) => {
            tracing::warn!(
                "the broker connection did not take the ack within {} ms; reconnecting",
                ACK_WAIT.as_millis()
            );
            Err(e)
        }
    }
}

/// 1 s, 5 s, 30 s, 2 min, 10 min, then hourly.
pub fn default_retry_delays() -> Vec<Duration> {
    [1, 5, 30, 120, 600, 3600]
        .into_iter()
        .map(Duration::from_secs)
        .collect()
}

/// The delay before retry number `attempt` (1-based).
pub fn retry_delay(delays: &[Duration], attempt: u32) -> Duration {
    let i = (attempt.max(1) as usize - 1).min(delays.len().saturating_sub(1));
    delays.get(i).copied().unwrap_or(Duration::from_secs(1))
}

/// Consume `queue` until `shutdown` is cancelled (then `Ok`) or the channel fails (`Err`).
/// On shutdown, consumption stops and in-flight deliveries finish before returning.
pub async fn consume_queue(
    conn: &Connection,
    queue: &str,
    handler: Arc<dyn Handler>,
    policy: RetryPolicy,
    settings: Arc<ConsumeSettings>,
    shutdown: CancellationToken,
) -> Result<(), BusError> {
    let channel = conn.create_channel().await?;
    let prefetch = settings.prefetch.max(1);
    let in_handler = Arc::new(Semaphore::new(usize::from(prefetch)));
    channel
        .basic_qos(
            prefetch.saturating_mul(BUFFER_FACTOR),
            BasicQosOptions::default(),
        )
        .await?;
    let publisher = Publisher::open(conn).await?;
    let tag = format!("signpost-{}", Uuid::new_v4().simple());
    let mut consumer = channel
        .basic_consume(
            queue.into(),
            tag.as_str().into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    tracing::info!(queue, "consuming");
    let mut tasks: JoinSet<Result<(), BusError>> = JoinSet::new();
    let result = loop {
        tokio::select! {
            _ = shutdown.cancelled() => break Ok(()),
            Some(done) = tasks.join_next(), if !tasks.is_empty() => {
                match done {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => break Err(e),
                    Err(join) => {
                        tracing::error!(%join, queue, "a delivery task failed");
                    }
                }
            }
            next = consumer.next() => match next {
                Some(Ok(delivery)) => {
                    let ctx = Ctx {
                        queue: queue.to_owned(),
                        policy,
                        handler: handler.clone(),
                        settings: settings.clone(),
                        publisher: publisher.clone(),
                        in_handler: in_handler.clone(),
                    };
                    tasks.spawn(async move { ctx.process(delivery).await });
                }
                Some(Err(e)) => break Err(e.into()),
                None => break Err(BusError::ConsumerClosed(queue.to_owned())),
            }
        }
    };
    // Let in-flight deliveries finish (they ack or leave the message for redelivery).
    while let Some(done) = tasks.join_next().await {
        if let Ok(Err(e)) = done {
            tracing::warn!(error = %e, queue, "delivery left unacknowledged");
        }
    }
    crate::amqp::close_channel(&channel, "bye").await;
    tracing::debug!(queue, "stopped consuming");
    result
}

struct Ctx {
    queue: String,
    policy: RetryPolicy,
    handler: Arc<dyn Handler>,
    settings: Arc<ConsumeSettings>,
    publisher: Publisher,
    /// Permits for [`ConsumeSettings::prefetch`] handler calls at once.
    in_handler: Arc<Semaphore>,
}

impl Ctx {
    async fn process(self, delivery: Delivery) -> Result<(), BusError> {
        let previous = header_i64(&delivery.properties, H_ATTEMPT).unwrap_or(0);
        let attempt = u32::try_from(previous.max(0))
            .unwrap_or(u32::MAX)
            .saturating_add(1);
        let envelope = match Envelope::from_bytes(&delivery.data) {
            Ok(envelope) => envelope,
            Err(e) => {
                tracing::warn!(queue = %self.queue, error = %e, "undecodable message, parking it");
                self.park(
                    &delivery,
                    None,
                    attempt,
                    &format!("undecodable message: {e}"),
                )
                .await?;
                ack(&delivery).await?;
                return Ok(());
            }
        };
        let meta = Meta {
            attempt,
            routing_key: delivery.routing_key.as_str().to_owned(),
        };
        // The delivery continues the trace of whatever published the message.
        let span = tracing::info_span!(
            "deliver",
            otel.name = %format!("deliver {}", envelope.kind.as_str()),
            otel.kind = "consumer",
            messaging.system = "rabbitmq",
            messaging.destination.name = %self.queue,
            messaging.message.id = %envelope.message_id,
            signpost.attempt = attempt,
            signpost.outcome = tracing::field::Empty,
        );
        crate::trace::continue_trace(&span, &envelope.traceparent);
        // Held for the handler's work only: reporting and acking go on without it. The
        // semaphore is never closed.
        let permit = self.in_handler.acquire().await.ok();
        let outcome = self
            .handler
            .handle(&envelope, &meta)
            .instrument(span.clone())
            .await;
        drop(permit);
        span.record("signpost.outcome", outcome.name());
        drop(span);
        match outcome {
            Outcome::Delivered(detail) => {
                tracing::info!(queue = %self.queue, message_id = %envelope.message_id, attempt, "delivered");
                self.report(&envelope, ReportOutcome::Delivered, attempt, detail)
                    .await?;
            }
            Outcome::Sent { detail, reference } => {
                tracing::info!(queue = %self.queue, message_id = %envelope.message_id, attempt, "sent");
                let report = self.report_of(&envelope, ReportOutcome::Sent, attempt, detail);
                self.publish_report(
                    &envelope,
                    DeliveryReport {
                        reference: Some(reference),
                        ..report
                    },
                )
                .await?;
            }
            Outcome::Retry(reason) => {
                let first_failure =
                    header_i64(&delivery.properties, H_FIRST_FAILURE).unwrap_or_else(now_ms);
                let elapsed = Duration::from_millis((now_ms() - first_failure).max(0) as u64);
                if let Some(why) =
                    give_up(attempt, elapsed, self.settings.retry_horizon, self.policy)
                {
                    let reason = format!("{reason}; {why}");
                    self.park(&delivery, Some(&envelope), attempt, &reason)
                        .await?;
                } else {
                    let tier = retry_delay(&self.settings.retry_delays, attempt);
                    let retry = retry_queue(&self.queue, tier);
                    let delay = jittered(tier, rand::random::<f64>());
                    let properties = envelope::with_headers(
                        &delivery.properties,
                        [
                            (H_ATTEMPT, AMQPValue::LongLongInt(i64::from(attempt))),
                            (H_FIRST_FAILURE, AMQPValue::LongLongInt(first_failure)),
                        ],
                    )
                    .with_expiration(delay.as_millis().to_string().into());
                    self.publisher
                        .publish(Outgoing {
                            exchange: "",
                            routing_key: &retry,
                            body: delivery.data.clone(),
                            properties,
                        })
                        .await?;
                    tracing::info!(queue = %self.queue, message_id = %envelope.message_id, attempt, ?delay, "will retry");
                    let detail = format!("{reason}; retry in {}s", delay.as_secs_f32());
                    self.report(&envelope, ReportOutcome::Retrying, attempt, detail)
                        .await?;
                }
            }
            Outcome::Park(reason) => {
                self.park(&delivery, Some(&envelope), attempt, &reason)
                    .await?;
            }
        }
        ack(&delivery).await
    }

    async fn park(
        &self,
        delivery: &Delivery,
        envelope: Option<&Envelope>,
        attempt: u32,
        reason: &str,
    ) -> Result<(), BusError> {
        let parked = parked_queue(&self.queue);
        let properties = envelope::with_headers(
            &delivery.properties,
            [
                (H_ATTEMPT, AMQPValue::LongLongInt(i64::from(attempt))),
                (
                    H_PARK_REASON,
                    AMQPValue::LongString(LongString::from(reason.as_bytes())),
                ),
                (
                    H_ORIGIN_QUEUE,
                    AMQPValue::LongString(LongString::from(self.queue.as_bytes())),
                ),
            ],
        );
        self.publisher
            .publish(Outgoing {
                exchange: "",
                routing_key: &parked,
                body: delivery.data.clone(),
                properties,
            })
            .await?;
        tracing::warn!(queue = %self.queue, attempt, reason, "parked");
        if let Some(envelope) = envelope {
            let copy = ParkedCopy {
                origin_queue: self.queue.clone(),
                envelope: envelope.clone(),
            };
            let report =
                self.report_of(envelope, ReportOutcome::Parked, attempt, reason.to_owned());
            self.publish_report(
                envelope,
                DeliveryReport {
                    parked: Some(copy),
                    ..report
                },
            )
            .await?;
        }
        Ok(())
    }

    async fn report(
        &self,
        about: &Envelope,
        outcome: ReportOutcome,
        attempt: u32,
        detail: String,
    ) -> Result<(), BusError> {
        let report = self.report_of(about, outcome, attempt, detail);
        self.publish_report(about, report).await
    }

    fn report_of(
        &self,
        about: &Envelope,
        outcome: ReportOutcome,
        attempt: u32,
        detail: String,
    ) -> DeliveryReport {
        DeliveryReport {
            about: about.message_id,
            about_kind: about.kind,
            outcome,
            attempt,
            detail,
            at: now_rfc3339(),
            parked: None,
            reference: None,
            step: None,
        }
    }

    async fn publish_report(
        &self,
        about: &Envelope,
        report: DeliveryReport,
    ) -> Result<(), BusError> {
        let local = match &self.settings.reports {
            Reports::Off => return Ok(()),
            Reports::Bus => None,
            Reports::Local(recorder) => Some(recorder),
        };
        let envelope = report_envelope(about, &report);
        if let Some(recorder) = local {
            let meta = Meta {
                attempt: 1,
                routing_key: topology::EVENTS_ROUTING_KEY.to_owned(),
            };
            match recorder.handle(&envelope, &meta).await {
                Outcome::Delivered(_) => return Ok(()),
                other => {
                    tracing::warn!(queue = %self.queue, outcome = other.name(), "the ledger did not take a report; publishing it on sp.events");
                }
            }
        }
        publish_envelope_report(&self.publisher, &envelope).await
    }
}

/// Publish `report` about `about` on `sp.events` (confirmed), with the report's stable id.
pub async fn publish_report(
    publisher: &Publisher,
    about: &Envelope,
    report: &DeliveryReport,
) -> Result<(), BusError> {
    publish_envelope_report(publisher, &report_envelope(about, report)).await
}

async fn publish_envelope_report(
    publisher: &Publisher,
    envelope: &Envelope,
) -> Result<(), BusError> {
    publisher
        .publish_envelope(
            topology::EVENTS_EXCHANGE,
            topology::EVENTS_ROUTING_KEY,
            envelope,
        )
        .await
}

/// The `delivery-report` envelope of `report` about `about`, with the report's stable id.
pub fn report_envelope(about: &Envelope, report: &DeliveryReport) -> Envelope {
    let mut envelope = Envelope::new(
        Kind::DeliveryReport,
        about.correlation_id.clone(),
        about.referral_id.clone(),
        about.target.clone(),
        Some(about.traceparent.clone()),
        report,
    );
    envelope.message_id = report_id(about.message_id, report.outcome, report.attempt);
    envelope
}

/// The id of the report of `outcome` at `attempt` for message `about`: the same every time, so
/// the gateway records a report that was sent twice only once.
pub fn report_id(about: Uuid, outcome: ReportOutcome, attempt: u32) -> Uuid {
    let name = format!("{about}/{outcome:?}/{attempt}");
    Uuid::new_v5(&Uuid::NAMESPACE_URL, name.as_bytes())
}

/// Keep consuming `queues` across broker outages: connect (with backoff), declare the topology,
/// consume every queue, and when any consumer fails, drop the connection and start again. Returns
/// when `shutdown` is cancelled, after in-flight deliveries have finished.
pub async fn supervise(
    url: String,
    name: String,
    spec: topology::Spec,
    queues: Vec<QueueConsumer>,
    settings: ConsumeSettings,
    shutdown: CancellationToken,
) {
    let settings = Arc::new(settings);
    if queues.is_empty() {
        shutdown.cancelled().await;
        return;
    }
    let mut backoff = Duration::from_millis(200);
    loop {
        let Some(conn) = crate::amqp::connect_with_backoff(&url, &name, &shutdown).await else {
            return;
        };
        let conn = Arc::new(conn);
        let declared = async {
            let channel = conn.create_channel().await?;
            topology::declare(&channel, &spec).await?;
            crate::amqp::close_channel(&channel, "declared").await;
            Ok::<_, BusError>(())
        }
        .await;
        if let Err(error) = declared {
            tracing::error!(%error, connection = %name, "declaring the topology failed");
        } else {
            let round = shutdown.child_token();
            let mut consumers = JoinSet::new();
            for consumer in &queues {
                let conn = conn.clone();
                let queue = consumer.queue.clone();
                let handler = consumer.handler.clone();
                let policy = consumer.policy;
                let settings = settings.clone();
                let round = round.clone();
                consumers.spawn(async move {
                    let r = consume_queue(&conn, &queue, handler, policy, settings, round).await;
                    (queue, r)
                });
            }
            if let Some(Ok((queue, Err(error)))) = consumers.join_next().await {
                tracing::warn!(%error, queue, "consumer stopped; reconnecting");
            }
            round.cancel();
            while consumers.join_next().await.is_some() {}
            backoff = Duration::from_millis(200);
        }
        crate::amqp::close(&conn, "reconnecting").await;
        if shutdown.is_cancelled() {
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = shutdown.cancelled() => return,
        }
        backoff = (backoff * 2).min(crate::amqp::MAX_BACKOFF);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_target_policy_parks_by_attempts_or_by_its_own_horizon() {
        let day = Duration::from_secs(86_400);
        let none = RetryPolicy::default();
        assert_eq!(give_up(100, Duration::from_secs(60), day, none), None);
        assert!(give_up(3, Duration::ZERO, day, none).is_none());
        assert!(give_up(2, day, day, none)
            .unwrap()
            .contains("horizon is 86400s"));
        let five = RetryPolicy {
            max_attempts: Some(5),
            horizon: None,
        };
        assert!(give_up(4, Duration::ZERO, day, five).is_none());
        assert!(give_up(5, Duration::ZERO, day, five)
            .unwrap()
            .contains("after 5 attempts"));
        let short = RetryPolicy {
            max_attempts: None,
            horizon: Some(Duration::from_secs(10)),
        };
        assert!(give_up(1, Duration::from_secs(11), day, short).is_some());
    }

    #[test]
    fn jitter_shortens_a_delay_by_at_most_a_fifth() {
        let d = Duration::from_secs(10);
        assert_eq!(jittered(d, 0.0), d);
        assert_eq!(jittered(d, 1.0), Duration::from_secs(8));
        assert_eq!(jittered(d, 0.5), Duration::from_secs(9));
        assert_eq!(
            jittered(d, 7.0),
            Duration::from_secs(8),
            "out-of-range units are clamped"
        );
    }

    #[test]
    fn retry_delays_grow_then_repeat_the_last() {
        let d = default_retry_delays();
        assert_eq!(retry_delay(&d, 1), Duration::from_secs(1));
        assert_eq!(retry_delay(&d, 2), Duration::from_secs(5));
        assert_eq!(retry_delay(&d, 6), Duration::from_secs(3600));
        assert_eq!(retry_delay(&d, 60), Duration::from_secs(3600));
    }

    #[test]
    fn a_report_id_is_stable_for_the_same_outcome_and_differs_otherwise() {
        let m = Uuid::new_v4();
        assert_eq!(
            report_id(m, ReportOutcome::Delivered, 1),
            report_id(m, ReportOutcome::Delivered, 1)
        );
        assert_ne!(
            report_id(m, ReportOutcome::Delivered, 1),
            report_id(m, ReportOutcome::Retrying, 1)
        );
        assert_ne!(
            report_id(m, ReportOutcome::Retrying, 1),
            report_id(m, ReportOutcome::Retrying, 2)
        );
    }
}
