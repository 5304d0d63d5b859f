//! The two ends of the loop for the chaos run, with the counts it reconciles.
//!
//! - The stand-in scheme (`POST /fhir/$process-message`): a BaRS receiver. A repeat of an
//!   `X-Request-Id` it already took is answered 409 `duplicate` and counted as a redelivery (the
//!   at-least-once transport, absorbed as BaRS says); a second, different message for a
//!   conversation it already has is a duplicate referral. Each new referral is then worked like a
//!   scheme would: `accepted`, then `completed` with the outcome letter, posted to the gateway and
//!   retried (same `X-Request-Id`) until the gateway acknowledges it. While told to fail, it
//!   answers 500 to one delivery and hangs past the adapter's time limit on the next.
//! - The stand-in GP system (`POST /fhir/DocumentReference`): files each letter once per
//!   `X-Request-Id`; a second letter for the same conversation is a duplicate.

use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde_json::{json, Value};
use signpost_tests::client::Client;
use signpost_tests::messages;
use tokio::net::TcpListener;

/// What both stand-ins saw, keyed by conversation (`X-Correlation-Id`, one per referral).
#[derive(Default)]
pub struct Counts {
    /// Referral deliveries taken as new, per conversation (more than one is a duplicate).
    pub referrals: HashMap<String, u32>,
    /// When each conversation's referral first arrived.
    pub delivered_at: HashMap<String, Instant>,
    scheme_request_ids: HashSet<String>,
    /// Deliveries repeated with an `X-Request-Id` already taken (answered 409).
    pub scheme_redelivered: u64,
    /// Letters the gateway acknowledged (the `completed` message with the letter), and when.
    pub letters_acked: HashMap<String, Instant>,
    /// Letters the scheme gave up sending (never acknowledged).
    pub letters_unacked: u64,
    /// Letters filed as new, per conversation (more than one is a duplicate).
    pub letters_filed: HashMap<String, u32>,
    gp_request_ids: HashSet<String>,
    /// Letters repeated with an `X-Request-Id` already filed (answered 409).
    pub gp_redelivered: u64,
}

pub struct Shared {
    counts: Mutex<Counts>,
    /// Whether the scheme is failing on purpose (scenario 5).
    pub failing: AtomicBool,
    fault_calls: AtomicU64,
    /// Answers given while failing: 500s and hangs.
    pub failed_on_purpose: AtomicU64,
    /// Scheme work in progress (posting statuses and letters back).
    pub working: AtomicUsize,
    /// 503 answers the gateway gave the scheme's messages.
    pub unavailable: AtomicU64,
    /// How long a hanging answer takes (past the adapter's time limit).
    hang: Duration,
}

impl Shared {
    pub fn counts(&self) -> MutexGuard<'_, Counts> {
        // A panic while holding the lock would be a bug in this file; the counts stay usable.
        self.counts.lock().unwrap_or_else(|p| p.into_inner())
    }
}

pub struct Standins {
    pub shared: Arc<Shared>,
    pub scheme_url: String,
    pub gp_url: String,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Standins {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Standins {
    /// Start both on loopback. The scheme works referrals against `gateway_fhir` (the gateway's
    /// FHIR base URL); `hang` is how long it stalls an answer while failing.
    pub async fn start(gateway_fhir: String, hang: Duration) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            counts: Mutex::new(Counts::default()),
            failing: AtomicBool::new(false),
            fault_calls: AtomicU64::new(0),
            failed_on_purpose: AtomicU64::new(0),
            working: AtomicUsize::new(0),
            unavailable: AtomicU64::new(0),
            hang,
        });
        let scheme_listener = TcpListener::bind("127.0.0.1:0").await?;
        let gp_listener = TcpListener::bind("127.0.0.1:0").await?;
        let scheme_url = format!("http://{}/fhir", scheme_listener.local_addr()?);
        let gp_url = format!("http://{}/fhir", gp_listener.local_addr()?);
        let client = Client::new();
        let (s1, s2) = (shared.clone(), shared.clone());
        let scheme = serve(scheme_listener, move |req| {
            scheme(req, s1.clone(), client.clone(), gateway_fhir.clone())
        });
        let gp = serve(gp_listener, move |req| gp(req, s2.clone()));
        Ok(Standins {
            shared,
            scheme_url,
            gp_url,
            tasks: vec![scheme, gp],
        })
    }
}

fn serve<F, Fut>(listener: TcpListener, handle: F) -> tokio::task::JoinHandle<()>
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            };
            let handle = handle.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req| {
                    let handle = handle.clone();
                    async move { Ok::<_, Infallible>(handle(req).await) }
                });
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    })
}

fn answer(status: StatusCode, code: &str, rec: &str, text: &str) -> Response<Full<Bytes>> {
    let body = json!({"resourceType": "OperationOutcome", "issue": [{
        "severity": if status.is_success() { "information" } else { "error" },
        "code": code,
        "details": {"coding": [{"system": "https://fhir.nhs.uk/CodeSystem/http-error-codes", "code": rec}]},
        "diagnostics": text}]});
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/fhir+json; charset=utf-8"),
    );
    r
}

/// A POST to `path`: its `X-Request-Id`, `X-Correlation-Id` and body, or the answer refusing it.
async fn receive(
    req: Request<Incoming>,
    path: &str,
) -> Result<(String, String, Bytes), Response<Full<Bytes>>> {
    if req.method() != http::Method::POST || req.uri().path() != path {
        return Err(answer(
            StatusCode::NOT_FOUND,
            "not-found",
            "REC_NOT_FOUND",
            "no such endpoint",
        ));
    }
    let ids = (
        header(&req, "x-request-id"),
        header(&req, "x-correlation-id"),
    );
    match req.into_body().collect().await {
        Ok(b) => Ok((ids.0, ids.1, b.to_bytes())),
        Err(_) => Err(answer(
            StatusCode::BAD_REQUEST,
            "incomplete",
            "REC_BAD_REQUEST",
            "body not read",
        )),
    }
}

fn header(req: &Request<Incoming>, name: &str) -> String {
    req.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned()
}

async fn scheme(
    req: Request<Incoming>,
    shared: Arc<Shared>,
    client: Client,
    gateway_fhir: String,
) -> Response<Full<Bytes>> {
    let (request_id, correlation_id, body) = match receive(req, "/fhir/$process-message").await {
        Ok(r) => r,
        Err(refused) => return refused,
    };
    if shared.failing.load(Ordering::SeqCst) {
        shared.failed_on_purpose.fetch_add(1, Ordering::SeqCst);
        if shared.fault_calls.fetch_add(1, Ordering::SeqCst) % 2 == 1 {
            tokio::time::sleep(shared.hang).await;
        }
        return answer(
            StatusCode::INTERNAL_SERVER_ERROR,
            "transient",
            "REC_SERVER_ERROR",
            "failing on purpose",
        );
    }
    let Ok(message) = serde_json::from_slice::<Value>(&body) else {
        return answer(
            StatusCode::BAD_REQUEST,
            "invalid",
            "REC_BAD_REQUEST",
            "not JSON",
        );
    };
    if request_id.is_empty() || correlation_id.is_empty() {
        return answer(
            StatusCode::BAD_REQUEST,
            "required",
            "REC_BAD_REQUEST",
            "X-Request-Id and X-Correlation-Id are required",
        );
    }
    let first = {
        let mut c = shared.counts();
        if !c.scheme_request_ids.insert(request_id) {
            c.scheme_redelivered += 1;
            return answer(
                StatusCode::CONFLICT,
                "duplicate",
                "REC_CONFLICT",
                "already have this X-Request-Id",
            );
        }
        let n = c.referrals.entry(correlation_id.clone()).or_insert(0);
        *n += 1;
        let first = *n == 1;
        if first {
            c.delivered_at
                .insert(correlation_id.clone(), Instant::now());
        }
        first
    };
    if first {
        shared.working.fetch_add(1, Ordering::SeqCst);
        tokio::spawn(work(shared, client, gateway_fhir, message, correlation_id));
    }
    answer(StatusCode::OK, "informational", "OK", "referral received")
}

/// Work a referral: accepted, then completed with the letter, each posted until acknowledged.
async fn work(
    shared: Arc<Shared>,
    client: Client,
    gateway_fhir: String,
    message: Value,
    correlation_id: String,
) {
    let (_, nhs) = messages::referral_facts(&message);
    let accepted = messages::scheme_response(&message, "accepted", None, None);
    let completed = messages::scheme_response(
        &message,
        "completed",
        Some("Support plan finished"),
        Some(messages::outcome_letter(&nhs)),
    );
    let post =
        |message| post_until_acked(&shared, &client, &gateway_fhir, &correlation_id, message);
    let mut acked = post(&accepted).await;
    if acked {
        acked = post(&completed).await;
    }
    {
        let mut c = shared.counts();
        if acked {
            c.letters_acked.insert(correlation_id, Instant::now());
        } else {
            c.letters_unacked += 1;
        }
    }
    shared.working.fetch_sub(1, Ordering::SeqCst);
}

/// POST a message to the gateway until it is acknowledged: 2xx, or 409 `duplicate` on a retry
/// (the gateway has it already; the first answer was lost). `false` after two minutes of trying.
async fn post_until_acked(
    shared: &Shared,
    client: &Client,
    gateway_fhir: &str,
    correlation_id: &str,
    message: &Value,
) -> bool {
    let request_id = uuid::Uuid::new_v4().to_string();
    let body = message.to_string().into_bytes();
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut attempt = 0u32;
    while Instant::now() < deadline {
        attempt += 1;
        match tokio::time::timeout(
            Duration::from_secs(10),
            client.process_message(gateway_fhir, &request_id, correlation_id, body.clone()),
        )
        .await
        {
            Ok(Ok(r)) if r.status.is_success() => return true,
            Ok(Ok(r)) if r.status == StatusCode::CONFLICT && attempt > 1 => return true,
            Ok(Ok(r)) if retryable(r.status) => {
                if r.status == StatusCode::SERVICE_UNAVAILABLE {
                    shared.unavailable.fetch_add(1, Ordering::SeqCst);
                }
            }
            Ok(Ok(r)) => {
                tracing::warn!(status = %r.status, "chaos scheme: the gateway refused a message");
                return false;
            }
            Ok(Err(_)) | Err(_) => {}
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    false
}

/// Answers a BaRS sender retries with the same `X-Request-Id`.
pub fn retryable(status: StatusCode) -> bool {
    status.is_server_error()
        || status == StatusCode::REQUEST_TIMEOUT
        || status == StatusCode::TOO_MANY_REQUESTS
}

async fn gp(req: Request<Incoming>, shared: Arc<Shared>) -> Response<Full<Bytes>> {
    let (request_id, correlation_id, body) = match receive(req, "/fhir/DocumentReference").await {
        Ok(r) => r,
        Err(refused) => return refused,
    };
    let is_document = serde_json::from_slice::<Value>(&body)
        .map(|v| v["resourceType"] == "DocumentReference")
        .unwrap_or(false);
    if !is_document || request_id.is_empty() || correlation_id.is_empty() {
        return answer(
            StatusCode::BAD_REQUEST,
            "invalid",
            "REC_BAD_REQUEST",
            "expected a DocumentReference with X-Request-Id and X-Correlation-Id",
        );
    }
    let mut c = shared.counts();
    if !c.gp_request_ids.insert(request_id) {
        c.gp_redelivered += 1;
        return answer(
            StatusCode::CONFLICT,
            "duplicate",
            "REC_CONFLICT",
            "letter already filed",
        );
    }
    *c.letters_filed.entry(correlation_id).or_insert(0) += 1;
    answer(StatusCode::CREATED, "informational", "OK", "filed")
}
