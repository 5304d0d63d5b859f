//! The load generator: referral messages over a fixed pool of keep-alive HTTP/1.1 connections
//! (hyper's client connection API, one connection per worker, opened before the clock starts).
//!
//! - Closed loop: `concurrency` workers, each sending its next request as soon as the previous
//!   answer has been read. Latency is send to last byte of the answer.
//! - Open loop: requests are scheduled at a fixed rate (request i at start + i / rate); a free
//!   worker takes the next slot, waits for its time if it is early, and sends. Latency counts
//!   from the scheduled time, not from the actual send, so a slow server cannot hide its queue
//!   by slowing the generator down (no coordinated omission). Slots still unsent at the cut-off
//!   are counted as `unsent` and recorded with their wait so far (a lower bound).
//!
//! Every request is the fixture referral with a fresh Bundle.id, fresh `X-Request-Id` and
//! `X-Correlation-Id`. With a [`Tracker`], each request's start time is noted under its
//! correlation id so that the stand-in scheme can time the end-to-end path.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use uuid::Uuid;

use crate::hist::Histogram;

/// The fixture referral, split around its Bundle.id so that each request gets a fresh one
/// without re-serialising the JSON (the bytes sent are the file's, with only the id changed).
pub struct Template {
    before: Bytes,
    after: Bytes,
}

impl Template {
    pub fn new(file: &[u8]) -> Result<Self, String> {
        let json: serde_json::Value =
            serde_json::from_slice(file).map_err(|e| format!("the fixture is not JSON: {e}"))?;
        let id = json["id"]
            .as_str()
            .ok_or("the fixture Bundle has no id")?
            .to_owned();
        // Bundle.id comes before any entry (resourceType, then id): its first quoted occurrence.
        let quoted = format!("\"{id}\"");
        let at = find(file, quoted.as_bytes()).ok_or("cannot find the Bundle.id in the fixture")?;
        let template = Template {
            before: Bytes::copy_from_slice(&file[..at + 1]),
            after: Bytes::copy_from_slice(&file[at + 1 + id.len()..]),
        };
        // Check that the id we replace is the Bundle's own.
        let probe = Uuid::new_v4().to_string();
        let rendered: serde_json::Value = serde_json::from_slice(&template.render(&probe))
            .map_err(|e| format!("the fixture with a new Bundle.id is not JSON: {e}"))?;
        if rendered["id"] != probe.as_str() {
            return Err("replacing the Bundle.id in the fixture changed something else".into());
        }
        Ok(template)
    }

    pub fn render(&self, bundle_id: &str) -> Bytes {
        let mut body = Vec::with_capacity(self.before.len() + bundle_id.len() + self.after.len());
        body.extend_from_slice(&self.before);
        body.extend_from_slice(bundle_id.as_bytes());
        body.extend_from_slice(&self.after);
        Bytes::from(body)
    }

    pub fn len(&self) -> usize {
        self.before.len() + 36 + self.after.len()
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// End-to-end timing: when each referral was sent (by correlation id) and when the stand-in
/// scheme received it, per phase.
#[derive(Default)]
pub struct Tracker {
    state: Mutex<TrackerState>,
}

#[derive(Default)]
struct TrackerState {
    pending: HashMap<Uuid, (usize, Instant)>,
    phases: HashMap<usize, Delivery>,
    /// Receipts whose correlation id was not pending (redeliveries, late or unknown messages).
    unexpected: u64,
    /// One message body as the scheme received it (the payload Signpost publishes).
    sample: Option<Bytes>,
}

/// What the scheme received for one phase.
#[derive(Default, Clone)]
pub struct Delivery {
    pub e2e: Histogram,
    pub delivered: u64,
    pub last: Option<Instant>,
}

impl Tracker {
    fn lock(&self) -> std::sync::MutexGuard<'_, TrackerState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn sent(&self, phase: usize, id: Uuid, at: Instant) {
        self.lock().pending.insert(id, (phase, at));
    }

    fn forget(&self, id: &Uuid) {
        self.lock().pending.remove(id);
    }

    /// The stand-in scheme received a message with this correlation id.
    pub fn received(&self, correlation_id: &str, body: &Bytes) {
        let now = Instant::now();
        let mut s = self.lock();
        if s.sample.is_none() {
            s.sample = Some(body.clone());
        }
        match Uuid::parse_str(correlation_id)
            .ok()
            .and_then(|id| s.pending.remove(&id))
        {
            Some((phase, sent)) => {
                let d = s.phases.entry(phase).or_default();
                d.e2e.record(now.duration_since(sent));
                d.delivered += 1;
                d.last = Some(now);
            }
            None => s.unexpected += 1,
        }
    }

    /// Referrals of `phase` accepted but not received yet.
    pub fn outstanding(&self, phase: usize) -> usize {
        self.lock()
            .pending
            .values()
            .filter(|(p, _)| *p == phase)
            .count()
    }

    pub fn delivery(&self, phase: usize) -> Delivery {
        self.lock().phases.get(&phase).cloned().unwrap_or_default()
    }

    pub fn unexpected(&self) -> u64 {
        self.lock().unexpected
    }

    pub fn sample(&self) -> Option<Bytes> {
        self.lock().sample.clone()
    }

    /// Waits until every accepted referral of `phase` has reached the scheme, or `limit`.
    /// Returns how long that took.
    pub async fn drain(&self, phase: usize, limit: Duration) -> Duration {
        let start = Instant::now();
        while self.outstanding(phase) > 0 && start.elapsed() < limit {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        start.elapsed()
    }
}

/// Where the load goes and what it sends.
pub struct Load {
    pub addr: SocketAddr,
    pub path: String,
    pub template: Template,
    pub tracker: Option<Arc<Tracker>>,
}

/// One phase's results at the client.
#[derive(Default)]
pub struct Outcome {
    /// Requests answered (any status) or failed on the connection.
    pub requests: u64,
    /// Answered 200.
    pub accepted: u64,
    /// Other answers by status, and connection failures as `io`.
    pub errors: BTreeMap<String, u64>,
    /// When the phase started (the pool already open).
    pub started: Option<Instant>,
    /// From the phase's start to the last answer.
    pub elapsed: Duration,
    pub latency: Histogram,
    /// Open loop: slots never sent before the cut-off.
    pub unsent: u64,
    /// Open loop: requests scheduled.
    pub scheduled: u64,
    /// Open loop: the slowest answer (µs, from its scheduled time) among the requests
    /// scheduled in each [`WINDOW`] of the phase, in order. A stall shows as a run of slow
    /// windows; contention as slow answers spread over many.
    pub windows: Vec<u64>,
}

/// The open loop's windows of scheduled send time.
pub const WINDOW: Duration = Duration::from_millis(100);

/// The slowest answer in each open-loop window, summed up.
pub struct Windows {
    pub count: usize,
    /// Windows with an answer slower than the threshold asked for.
    pub over: usize,
    /// The median window's slowest answer.
    pub median_ms: f64,
    /// The slowest window's slowest answer, and when in the phase that window began.
    pub worst_ms: f64,
    pub worst_at_s: f64,
}

impl Outcome {
    fn add(&mut self, other: Outcome) {
        self.requests += other.requests;
        self.accepted += other.accepted;
        for (k, v) in other.errors {
            *self.errors.entry(k).or_default() += v;
        }
        self.latency.add(&other.latency);
        self.unsent += other.unsent;
        if self.windows.len() < other.windows.len() {
            self.windows.resize(other.windows.len(), 0);
        }
        for (mine, theirs) in self.windows.iter_mut().zip(other.windows) {
            *mine = (*mine).max(theirs);
        }
    }

    /// Count an open-loop answer `latency` to the window its send was scheduled in (`at`
    /// after the phase's start).
    fn window(&mut self, at: Duration, latency: Duration) {
        let i = (at.as_micros() / WINDOW.as_micros()) as usize;
        if self.windows.len() <= i {
            self.windows.resize(i + 1, 0);
        }
        let us = latency.as_micros() as u64;
        self.windows[i] = self.windows[i].max(us);
    }

    /// The open loop's windows at a glance; `None` for a closed loop.
    pub fn windows_summary(&self, threshold: Duration) -> Option<Windows> {
        let worst = (0..self.windows.len()).max_by_key(|&i| self.windows[i])?;
        let mut sorted = self.windows.clone();
        sorted.sort_unstable();
        let limit = threshold.as_micros() as u64;
        Some(Windows {
            count: self.windows.len(),
            over: self.windows.iter().filter(|&&us| us > limit).count(),
            median_ms: sorted[sorted.len() / 2] as f64 / 1000.0,
            worst_ms: self.windows[worst] as f64 / 1000.0,
            worst_at_s: (worst as u32 * WINDOW).as_secs_f64(),
        })
    }

    pub fn accepted_per_s(&self) -> f64 {
        self.accepted as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    pub fn answered_per_s(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// One keep-alive connection.
struct Conn {
    addr: SocketAddr,
    sender: Option<SendRequest<Full<Bytes>>>,
}

impl Conn {
    async fn open(addr: SocketAddr) -> Result<Self, String> {
        let mut c = Conn { addr, sender: None };
        c.connect().await?;
        Ok(c)
    }

    async fn connect(&mut self) -> Result<(), String> {
        let stream = TcpStream::connect(self.addr)
            .await
            .map_err(|e| format!("connecting to {}: {e}", self.addr))?;
        let _ = stream.set_nodelay(true);
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("HTTP handshake with {}: {e}", self.addr))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        self.sender = Some(sender);
        Ok(())
    }

    /// Sends and reads the whole answer; a failure drops the connection (reopened next time).
    async fn send(&mut self, req: Request<Full<Bytes>>) -> Result<StatusCode, String> {
        if self.sender.as_ref().is_none_or(|s| s.is_closed()) {
            self.connect().await?;
        }
        let sender = self.sender.as_mut().ok_or("no connection")?;
        let result = async {
            sender.ready().await.map_err(|e| e.to_string())?;
            let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
            let status = resp.status();
            resp.into_body()
                .collect()
                .await
                .map_err(|e| e.to_string())?;
            Ok(status)
        }
        .await;
        if result.is_err() {
            self.sender = None;
        }
        result
    }
}

impl Load {
    fn request(&self) -> (Request<Full<Bytes>>, Uuid) {
        let correlation = Uuid::new_v4();
        let body = self.template.render(&Uuid::new_v4().to_string());
        let req = Request::post(self.path.as_str())
            .header(http::header::HOST, self.addr.to_string())
            .header(http::header::CONTENT_TYPE, "application/fhir+json")
            .header("x-request-id", Uuid::new_v4().to_string())
            .header("x-correlation-id", correlation.to_string())
            .body(Full::new(body));
        // The builder only fails on invalid header values; ours are fixed or UUIDs.
        (req.unwrap_or_default(), correlation)
    }

    /// Sends one request whose latency counts from `start`, and records its outcome; the
    /// latency.
    async fn one(
        &self,
        conn: &mut Conn,
        phase: usize,
        start: Instant,
        out: &mut Outcome,
    ) -> Duration {
        let (req, correlation) = self.request();
        if let Some(t) = &self.tracker {
            t.sent(phase, correlation, start);
        }
        let result = conn.send(req).await;
        let latency = start.elapsed();
        out.latency.record(latency);
        out.requests += 1;
        match result {
            Ok(StatusCode::OK) => out.accepted += 1,
            other => {
                if let Some(t) = &self.tracker {
                    t.forget(&correlation);
                }
                let key = match other {
                    Ok(status) => status.as_u16().to_string(),
                    Err(_) => "io".to_owned(),
                };
                *out.errors.entry(key).or_default() += 1;
            }
        }
        latency
    }

    async fn pool(&self, size: usize) -> Result<Vec<Conn>, String> {
        let mut conns = Vec::with_capacity(size);
        for _ in 0..size {
            conns.push(Conn::open(self.addr).await?);
        }
        Ok(conns)
    }

    /// Closed loop: `concurrency` connections, each sending back to back for `duration`.
    pub async fn closed(
        self: &Arc<Self>,
        phase: usize,
        concurrency: usize,
        duration: Duration,
    ) -> Result<Outcome, String> {
        let conns = self.pool(concurrency).await?;
        let start = Instant::now();
        let deadline = start + duration;
        let mut workers = Vec::with_capacity(concurrency);
        for mut conn in conns {
            let load = self.clone();
            workers.push(tokio::spawn(async move {
                let mut out = Outcome::default();
                while Instant::now() < deadline {
                    load.one(&mut conn, phase, Instant::now(), &mut out).await;
                }
                out
            }));
        }
        self.gather(workers, start).await
    }

    /// Open loop: `rate` requests per second for `duration`, over `pool` connections; slots
    /// not sent by `duration + grace` are given up.
    pub async fn open(
        self: &Arc<Self>,
        phase: usize,
        rate: f64,
        duration: Duration,
        pool: usize,
        grace: Duration,
    ) -> Result<Outcome, String> {
        let conns = self.pool(pool).await?;
        let scheduled = (rate * duration.as_secs_f64()).round() as u64;
        let next = Arc::new(AtomicU64::new(0));
        let start = Instant::now();
        let cutoff = start + duration + grace;
        let mut workers = Vec::with_capacity(pool);
        for mut conn in conns {
            let (load, next) = (self.clone(), next.clone());
            workers.push(tokio::spawn(async move {
                let mut out = Outcome::default();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= scheduled {
                        break;
                    }
                    let at = start + Duration::from_secs_f64(i as f64 / rate);
                    let now = Instant::now();
                    if now >= cutoff {
                        out.unsent += 1;
                        out.latency.record(cutoff.duration_since(at));
                        out.window(at - start, cutoff.duration_since(at));
                        continue;
                    }
                    if at > now {
                        tokio::time::sleep_until(at.into()).await;
                    }
                    let latency = load.one(&mut conn, phase, at, &mut out).await;
                    out.window(at - start, latency);
                }
                out
            }));
        }
        let mut out = self.gather(workers, start).await?;
        out.scheduled = scheduled;
        Ok(out)
    }

    async fn gather(
        &self,
        workers: Vec<tokio::task::JoinHandle<Outcome>>,
        start: Instant,
    ) -> Result<Outcome, String> {
        let mut total = Outcome::default();
        for w in workers {
            total.add(w.await.map_err(|e| format!("a load worker failed: {e}"))?);
        }
        total.started = Some(start);
        total.elapsed = start.elapsed();
        Ok(total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    #[test]
    fn each_window_keeps_its_slowest_answer_and_workers_merge_by_window() {
        let mut a = Outcome::default();
        a.window(ms(5), ms(2));
        a.window(ms(95), ms(12));
        a.window(ms(250), ms(3));
        let mut b = Outcome::default();
        b.window(ms(150), ms(4));
        b.window(ms(320), ms(30));
        a.add(b);
        // Windows 0-100, 100-200, 200-300, 300-400 ms.
        assert_eq!(a.windows, vec![12_000, 4_000, 3_000, 30_000]);
        let w = a.windows_summary(ms(10)).expect("an open loop");
        assert_eq!((w.count, w.over), (4, 2));
        assert_eq!(w.worst_ms, 30.0);
        assert!((w.worst_at_s - 0.3).abs() < 1e-9);
        // Sorted 3, 4, 12, 30: the upper median.
        assert_eq!(w.median_ms, 12.0);
    }

    #[test]
    fn a_closed_loop_has_no_windows() {
        assert!(Outcome::default().windows_summary(ms(10)).is_none());
    }
}
