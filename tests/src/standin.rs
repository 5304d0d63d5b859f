//! Stand-ins for the systems at both ends of the loop.
//!
//! - [`StandinScheme`]: an SP scheme's FHIR messaging endpoint. `POST /fhir/$process-message`
//!   records each message, answers 409 `duplicate` to an `X-Request-Id` it already has (as BaRS
//!   receivers must), and can be told to fail the next N deliveries with 500 or to refuse with
//!   400. In auto mode it then works the referral like a scheme would: accepted, in-progress,
//!   completed with the outcome letter, each posted back to the gateway.
//! - [`StandinGp`]: a GP system's FHIR endpoint. `POST /fhir/DocumentReference` files a letter,
//!   once per `X-Request-Id`.

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde_json::{json, Value};
use tokio::net::TcpListener;

use crate::client::Client;
use crate::messages;

/// One request as a stand-in received it.
#[derive(Debug, Clone)]
pub struct Received {
    pub request_id: String,
    pub correlation_id: String,
    pub headers: http::HeaderMap,
    pub body: Value,
    /// Whether it was new (answered 2xx) rather than a duplicate.
    pub accepted: bool,
}

#[derive(Default)]
struct Log {
    all: Mutex<Vec<Received>>,
}

impl Log {
    fn record(&self, r: Received) {
        if let Ok(mut v) = self.all.lock() {
            v.push(r);
        }
    }
    fn snapshot(&self) -> Vec<Received> {
        self.all.lock().map(|v| v.clone()).unwrap_or_default()
    }
    fn seen(&self, request_id: &str) -> bool {
        self.all
            .lock()
            .map(|v| v.iter().any(|r| r.accepted && r.request_id == request_id))
            .unwrap_or(false)
    }
}

fn outcome(status: StatusCode, code: &str, rec: &str, text: &str) -> Response<Full<Bytes>> {
    let body = json!({"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": code,
        "details": {"coding": [{"system": "https://fhir.nhs.uk/CodeSystem/http-error-codes", "code": rec}]},
        "diagnostics": text}]});
    reply(status, &body)
}

fn reply(status: StatusCode, body: &Value) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        "content-type",
        http::HeaderValue::from_static("application/fhir+json; charset=utf-8"),
    );
    r
}

async fn read(req: Request<Incoming>) -> (http::request::Parts, Value) {
    let (parts, body) = req.into_parts();
    let bytes = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    (parts, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

fn header(parts: &http::request::Parts, name: &str) -> String {
    parts
        .headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned()
}

/// Serve `handler` on `listener` (over TLS with `tls`) until the returned task is aborted.
fn serve<F, Fut>(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    handler: F,
) -> tokio::task::JoinHandle<()>
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let handler = handler.clone();
            let tls = tls.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req| {
                    let handler = handler.clone();
                    async move { Ok::<_, Infallible>(handler(req).await) }
                });
                let builder = auto::Builder::new(TokioExecutor::new());
                match tls {
                    None => {
                        let _ = builder.serve_connection(TokioIo::new(stream), svc).await;
                    }
                    Some(acceptor) => {
                        if let Ok(stream) = acceptor.accept(stream).await {
                            let _ = builder.serve_connection(TokioIo::new(stream), svc).await;
                        }
                    }
                }
            });
        }
    })
}

/// The base URL a stand-in serves at: `https://localhost:<port>` over TLS (the name test
/// certificates carry), else `http://<address>`.
fn base_url(listener: &TcpListener, tls: bool) -> String {
    let addr = listener.local_addr().ok();
    match (tls, addr) {
        (true, Some(a)) => format!("https://localhost:{}/fhir", a.port()),
        (false, Some(a)) => format!("http://{a}/fhir"),
        _ => String::new(),
    }
}

/// How the stand-in scheme answers.
#[derive(Default)]
struct SchemeControl {
    /// Answer 500 to this many more deliveries.
    fail_next: AtomicUsize,
    /// Answer 400 to this many more deliveries.
    refuse_next: AtomicUsize,
}

pub struct StandinScheme {
    pub base_url: String,
    log: Arc<Log>,
    control: Arc<SchemeControl>,
    task: tokio::task::JoinHandle<()>,
}

impl StandinScheme {
    /// Start on `listener`. With `work_for = Some(gateway FHIR base)`, every new referral is
    /// worked through accepted → in-progress → completed with a letter, `step` apart.
    pub async fn start(listener: TcpListener, work_for: Option<String>, step: Duration) -> Self {
        Self::start_with(listener, None, work_for, step).await
    }

    /// Start, over TLS when `tls` is given (the acceptor decides whether client certificates
    /// are required).
    pub async fn start_with(
        listener: TcpListener,
        tls: Option<tokio_rustls::TlsAcceptor>,
        work_for: Option<String>,
        step: Duration,
    ) -> Self {
        let base_url = base_url(&listener, tls.is_some());
        let log = Arc::new(Log::default());
        let control = Arc::new(SchemeControl::default());
        let (l, c) = (log.clone(), control.clone());
        let task = serve(listener, tls, move |req| {
            let (log, control, work_for) = (l.clone(), c.clone(), work_for.clone());
            async move {
                if req.method() != http::Method::POST
                    || req.uri().path() != "/fhir/$process-message"
                {
                    return outcome(
                        StatusCode::NOT_FOUND,
                        "not-found",
                        "REC_NOT_FOUND",
                        "stand-in scheme: no such endpoint",
                    );
                }
                let (parts, body) = read(req).await;
                let request_id = header(&parts, "x-request-id");
                let correlation_id = header(&parts, "x-correlation-id");
                if request_id.is_empty() || correlation_id.is_empty() {
                    return outcome(
                        StatusCode::BAD_REQUEST,
                        "required",
                        "REC_BAD_REQUEST",
                        "X-Request-Id and X-Correlation-Id are required",
                    );
                }
                let take = |n: &AtomicUsize| {
                    n.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |v| v.checked_sub(1))
                        .is_ok()
                };
                let mut received = Received {
                    request_id: request_id.clone(),
                    correlation_id: correlation_id.clone(),
                    headers: parts.headers.clone(),
                    body: body.clone(),
                    accepted: false,
                };
                if take(&control.fail_next) {
                    log.record(received);
                    return outcome(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "transient",
                        "REC_SERVER_ERROR",
                        "stand-in scheme: failing on purpose",
                    );
                }
                if take(&control.refuse_next) {
                    log.record(received);
                    return outcome(
                        StatusCode::BAD_REQUEST,
                        "invalid",
                        "REC_BAD_REQUEST",
                        "stand-in scheme: refusing on purpose",
                    );
                }
                if log.seen(&request_id) {
                    log.record(received);
                    return outcome(
                        StatusCode::CONFLICT,
                        "duplicate",
                        "REC_CONFLICT",
                        "stand-in scheme: already have this X-Request-Id",
                    );
                }
                received.accepted = true;
                log.record(received);
                let is_new = body["entry"][0]["resource"]["reason"]["coding"][0]["code"] == "new";
                if let (true, Some(gateway)) = (is_new, work_for) {
                    tokio::spawn(work_referral(gateway, body.clone(), correlation_id, step));
                }
                reply(StatusCode::OK, &body)
            }
        });
        StandinScheme {
            base_url,
            log,
            control,
            task,
        }
    }

    /// Every request received, in order.
    pub fn received(&self) -> Vec<Received> {
        self.log.snapshot()
    }

    /// Requests accepted as new (not duplicates, not failed on purpose).
    pub fn accepted(&self) -> Vec<Received> {
        self.received().into_iter().filter(|r| r.accepted).collect()
    }

    pub fn fail_next(&self, n: usize) {
        self.control.fail_next.store(n, Ordering::SeqCst);
    }

    pub fn refuse_next(&self, n: usize) {
        self.control.refuse_next.store(n, Ordering::SeqCst);
    }
}

impl Drop for StandinScheme {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Work a referral like a scheme: accept, start, complete with the letter.
async fn work_referral(gateway: String, message: Value, correlation_id: String, step: Duration) {
    let (_, nhs) = messages::referral_facts(&message);
    let client = Client::new();
    let plan = [
        messages::scheme_response(&message, "accepted", None, None),
        messages::scheme_response(&message, "in-progress", None, None),
        messages::scheme_response(
            &message,
            "completed",
            Some("Support plan finished"),
            Some(messages::outcome_letter(&nhs)),
        ),
    ];
    for msg in plan {
        tokio::time::sleep(step).await;
        let request_id = uuid::Uuid::new_v4().to_string();
        // Retry on transport failure or 5xx with the same X-Request-Id, as a BaRS sender does.
        for _ in 0..20 {
            match client
                .process_message(
                    &gateway,
                    &request_id,
                    &correlation_id,
                    msg.to_string().into_bytes(),
                )
                .await
            {
                Ok(r) if !r.status.is_server_error() => break,
                _ => tokio::time::sleep(Duration::from_millis(500)).await,
            }
        }
    }
}

pub struct StandinGp {
    pub base_url: String,
    log: Arc<Log>,
    task: tokio::task::JoinHandle<()>,
}

impl StandinGp {
    pub async fn start(listener: TcpListener) -> Self {
        Self::start_with(listener, None).await
    }

    /// Start, over TLS when `tls` is given.
    pub async fn start_with(listener: TcpListener, tls: Option<tokio_rustls::TlsAcceptor>) -> Self {
        let base_url = base_url(&listener, tls.is_some());
        let log = Arc::new(Log::default());
        let l = log.clone();
        let task = serve(listener, tls, move |req| {
            let log = l.clone();
            async move {
                if req.method() != http::Method::POST
                    || req.uri().path() != "/fhir/DocumentReference"
                {
                    return outcome(
                        StatusCode::NOT_FOUND,
                        "not-found",
                        "REC_NOT_FOUND",
                        "stand-in GP system: no such endpoint",
                    );
                }
                let (parts, body) = read(req).await;
                let request_id = header(&parts, "x-request-id");
                let correlation_id = header(&parts, "x-correlation-id");
                if body["resourceType"] != "DocumentReference" || request_id.is_empty() {
                    return outcome(
                        StatusCode::BAD_REQUEST,
                        "invalid",
                        "REC_BAD_REQUEST",
                        "stand-in GP system: expected a DocumentReference with X-Request-Id",
                    );
                }
                let mut received = Received {
                    request_id: request_id.clone(),
                    correlation_id,
                    headers: parts.headers.clone(),
                    body: body.clone(),
                    accepted: false,
                };
                if log.seen(&request_id) {
                    log.record(received);
                    return outcome(
                        StatusCode::CONFLICT,
                        "duplicate",
                        "REC_CONFLICT",
                        "stand-in GP system: letter already filed",
                    );
                }
                received.accepted = true;
                log.record(received);
                reply(StatusCode::CREATED, &body)
            }
        });
        StandinGp {
            base_url,
            log,
            task,
        }
    }

    pub fn received(&self) -> Vec<Received> {
        self.log.snapshot()
    }

    /// Letters filed (each X-Request-Id once).
    pub fn filed(&self) -> Vec<Received> {
        self.received().into_iter().filter(|r| r.accepted).collect()
    }
}

impl Drop for StandinGp {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A directory Bundle routing practices `A81001` and `A81002` to a scheme at `scheme_url` and
/// their letters to a GP system at `gp_url` (the shape of `deploy/directory.example.json`).
pub fn directory(scheme_url: &str, gp_url: &str) -> Value {
    let path = crate::env::workspace().join("deploy/directory.example.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut d: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("directory: {e}"));
    for e in d["entry"].as_array_mut().into_iter().flatten() {
        let r = &mut e["resource"];
        match r["id"].as_str() {
            Some("scheme-standin") => r["address"] = json!(scheme_url),
            Some("gp-standin") => r["address"] = json!(gp_url),
            _ => {}
        }
    }
    d
}

/// A stand-in OpenTelemetry collector: `POST /v1/traces` (OTLP/HTTP, JSON encoding) keeps each
/// export's body and answers 200, so a test can look at every span Signpost exported.
pub struct OtlpCollector {
    pub base: String,
    exports: Arc<Mutex<Vec<Value>>>,
    task: tokio::task::JoinHandle<()>,
}

impl OtlpCollector {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("address"));
        let exports: Arc<Mutex<Vec<Value>>> = Arc::default();
        let kept = exports.clone();
        let task = serve(listener, None, move |req: Request<Incoming>| {
            let kept = kept.clone();
            async move {
                let (parts, body) = read(req).await;
                if parts.method != http::Method::POST || parts.uri.path() != "/v1/traces" {
                    return reply(StatusCode::NOT_FOUND, &json!({}));
                }
                if let Ok(mut v) = kept.lock() {
                    v.push(body);
                }
                let mut r = reply(StatusCode::OK, &json!({}));
                r.headers_mut().insert(
                    "content-type",
                    http::HeaderValue::from_static("application/json"),
                );
                r
            }
        });
        OtlpCollector {
            base,
            exports,
            task,
        }
    }

    /// Every span received so far, as OTLP JSON `Span` objects.
    pub fn spans(&self) -> Vec<Value> {
        let exports = self.exports.lock().map(|v| v.clone()).unwrap_or_default();
        exports
            .iter()
            .flat_map(|e| e["resourceSpans"].as_array().cloned().unwrap_or_default())
            .flat_map(|r| r["scopeSpans"].as_array().cloned().unwrap_or_default())
            .flat_map(|s| s["spans"].as_array().cloned().unwrap_or_default())
            .collect()
    }

    /// Every export body received so far, as text.
    pub fn text(&self) -> String {
        let exports = self.exports.lock().map(|v| v.clone()).unwrap_or_default();
        exports
            .iter()
            .map(|e| e.to_string())
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for OtlpCollector {
    fn drop(&mut self) {
        self.task.abort();
    }
}
