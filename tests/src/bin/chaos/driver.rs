//! The GP side's stream of referrals: `n` referral messages at a steady rate, each with a
//! conversation (`X-Correlation-Id`) and `X-Request-Id` of its own, retried with the same ids
//! on a lost connection or a 5xx / 408 / 429 answer, as a BaRS sender does, until acknowledged.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use http::StatusCode;
use serde_json::Value;
use signpost_tests::client::Client;

use crate::standins::retryable;

#[derive(Default)]
pub struct Acks {
    /// Referrals the gateway acknowledged, by conversation, and when.
    pub acked: HashMap<String, Instant>,
    /// Referrals refused outright (a 4xx other than a duplicate on retry): a bug in the run.
    pub refused: u64,
    /// Referrals given up on after two minutes of retries.
    pub gave_up: u64,
    /// Every answer by status ("io" for a lost connection or no answer in 10 s).
    pub answers: BTreeMap<String, u64>,
}

#[derive(Default)]
pub struct Stream {
    acks: Mutex<Acks>,
    /// Referrals started so far.
    pub sent: AtomicUsize,
    /// Referrals whose sending has finished (acknowledged, refused or given up).
    pub settled: AtomicUsize,
}

impl Stream {
    pub fn acks(&self) -> MutexGuard<'_, Acks> {
        self.acks.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn answered(&self, key: String) {
        *self.acks().answers.entry(key).or_insert(0) += 1;
    }
}

/// Send `n` referrals made from `template` (a referral message Bundle) at `rate` per second.
/// Returns when all of them have settled.
pub async fn drive(
    stream: Arc<Stream>,
    client: Client,
    gateway_fhir: String,
    template: Value,
    n: usize,
    rate: f64,
) {
    let start = Instant::now();
    let interval = Duration::from_secs_f64(1.0 / rate.max(0.001));
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        let due = start + interval.mul_f64(i as f64);
        tokio::time::sleep_until(due.into()).await;
        let mut message = template.clone();
        message["id"] = Value::String(uuid::Uuid::new_v4().to_string());
        let correlation_id = uuid::Uuid::new_v4().to_string();
        stream.sent.fetch_add(1, Ordering::SeqCst);
        tasks.push(tokio::spawn(send_one(
            stream.clone(),
            client.clone(),
            gateway_fhir.clone(),
            message.to_string().into_bytes(),
            correlation_id,
        )));
    }
    for t in tasks {
        let _ = t.await;
    }
}

async fn send_one(
    stream: Arc<Stream>,
    client: Client,
    gateway_fhir: String,
    body: Vec<u8>,
    correlation_id: String,
) {
    let request_id = uuid::Uuid::new_v4().to_string();
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut attempt = 0u32;
    let outcome = loop {
        attempt += 1;
        let reply = tokio::time::timeout(
            Duration::from_secs(10),
            client.process_message(&gateway_fhir, &request_id, &correlation_id, body.clone()),
        )
        .await;
        match reply {
            Ok(Ok(r)) => {
                stream.answered(r.status.as_u16().to_string());
                if r.status.is_success() || (r.status == StatusCode::CONFLICT && attempt > 1) {
                    break Some(true);
                }
                if !retryable(r.status) {
                    tracing::warn!(status = %r.status, body = %r.text.chars().take(300).collect::<String>(), "chaos: a referral was refused");
                    break Some(false);
                }
            }
            Ok(Err(_)) | Err(_) => stream.answered("io".to_owned()),
        }
        if Instant::now() > deadline {
            break None;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    {
        let mut a = stream.acks();
        match outcome {
            Some(true) => {
                a.acked.insert(correlation_id, Instant::now());
            }
            Some(false) => a.refused += 1,
            None => a.gave_up += 1,
        }
    }
    stream.settled.fetch_add(1, Ordering::SeqCst);
}
