//! The HTTP API: routing, FHIR and BaRS conventions (media types, `X-Request-Id` and
//! `X-Correlation-Id` required on writes and echoed on every answer), the read endpoints, and
//! health. Every error leaves here as an OperationOutcome through [`ApiError`].
//!
//! The pipeline (`pipeline.rs`) decides what a message does; this module only turns HTTP into
//! calls on it and answers.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// How long a commit that began within the request's time budget may take to finish.
const COMMIT_GRACE: Duration = Duration::from_secs(5);

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use serde_json::{json, Value};
use signpost_bus::uris;
use signpost_bus::Directory;
use tracing::Instrument;

use crate::audit::{Action, Audit};
use crate::auth::{self, Caller};
use crate::error::ApiError;
use crate::fhir::{self, instant, searchset};
use crate::pipeline::{Gateway, RequestIds};
use crate::server::Client;
use crate::store::ReferralRow;

pub const FHIR_JSON: &str = "application/fhir+json; charset=utf-8";

pub struct Api {
    pub gateway: Arc<Gateway>,
    pub directory: Arc<Directory>,
    pub broker_up: Arc<AtomicBool>,
    pub max_body_bytes: usize,
    pub request_timeout: Duration,
    /// Absolute base for fullUrls in search results.
    pub base_url: String,
    pub audit: Audit,
    /// Requests per client, over time.
    pub rate_limiter: crate::limits::RateLimiter,
    pub max_json_depth: usize,
}

type Answer = Result<(StatusCode, Value), ApiError>;

/// Answer one request. Never fails: errors become OperationOutcomes, panics in a handler
/// become a 500, and work past the time limit a 408.
pub async fn handle<B>(api: Arc<Api>, req: Request<B>) -> Response<Full<Bytes>>
where
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let started = std::time::Instant::now();
    // The server tags every request; one without a tag is from no known client.
    let client = req.extensions().get::<Client>().cloned().unwrap_or(Client {
        caller: Caller::Unknown {
            fingerprint: "none".to_owned(),
        },
        peer: std::net::SocketAddr::from(([0, 0, 0, 0], 0)),
    });
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let shape = redact_path(&path);
    // One span per request, continuing the caller's trace; the route's shape, never its ids.
    let span = tracing::info_span!(
        "request",
        otel.name = %format!("{method} {shape}"),
        otel.kind = "server",
        http.request.method = %method,
        http.route = %shape,
        http.response.status_code = tracing::field::Empty,
    );
    if let Some(parent) = req
        .headers()
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
    {
        signpost_bus::trace::continue_trace(&span, parent);
    }
    let echo = echo_headers(req.headers());
    let timeout = api.request_timeout;
    let metrics = api.gateway.metrics.clone();
    // Per client: its certificate identity, or its address on plain HTTP. Probes are not
    // limited.
    let key = match &client.caller {
        Caller::Development => client.peer.ip().to_string(),
        other => other.agent(),
    };
    let limited = if matches!(path.as_str(), "/healthz" | "/readyz") {
        Ok(())
    } else {
        api.rate_limiter.check(&key, std::time::Instant::now())
    };
    let (mut response, entity) = match limited {
        Err(wait) => {
            let secs = crate::limits::retry_after_secs(wait);
            let mut r = error_response(&ApiError::too_many_requests(format!(
                "Too many requests from this client; retry after {secs} s"
            )));
            if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                r.headers_mut().insert(http::header::RETRY_AFTER, v);
            }
            (r, None)
        }
        Ok(()) => {
            // The budget is kept at commit: work that has not begun to commit by the deadline
            // is stopped (and could not commit any more), and work whose commit began in time
            // is let finish and answered as it is. So a 408 never hides a change that happens
            // anyway, and a retry never races its own first attempt.
            let budget = crate::store::Budget::new(started + timeout);
            let mut worker = tokio::spawn(
                crate::store::within_budget(
                    budget.clone(),
                    crate::audit::with_entity(route(api.clone(), req, client.caller.clone())),
                )
                .instrument(span.clone()),
            );
            let answered = match tokio::time::timeout(timeout, &mut worker).await {
                Ok(done) => Some(done),
                Err(_) if budget.committing() => {
                    tokio::time::timeout(COMMIT_GRACE, &mut worker).await.ok()
                }
                Err(_) => None,
            };
            match answered {
                Some(Ok(answered)) => answered,
                Some(Err(join)) => (error_response(&ApiError::internal(&join)), None),
                None => {
                    worker.abort();
                    (error_response(&ApiError::timeout()), None)
                }
            }
        }
    };
    for (name, value) in echo {
        response.headers_mut().insert(name, value);
    }
    let status = response.status().as_u16();
    metrics.http_answer(status);
    span.record("http.response.status_code", status);
    drop(span);
    tracing::info!(%method, path = %shape, status, ms = started.elapsed().as_millis() as u64, "request");
    // Liveness and readiness probes are not audited: they touch no data.
    if !matches!(path.as_str(), "/healthz" | "/readyz") {
        let rec = response
            .extensions()
            .get::<RecCode>()
            .map(|c| format!(" {}", c.0))
            .unwrap_or_default();
        api.audit
            .record(crate::audit::Record {
                at_ms: crate::store::now_ms(),
                kind: "rest",
                subtype: subtype(&method, &path).to_owned(),
                action: action(&method, &path),
                agent: client.caller.agent(),
                address: Some(client.peer.to_string()),
                entity,
                status,
                detail: format!("{method} {shape}{rec}"),
            })
            .await;
    }
    response
}

/// The `REC_*` code of an error answer, kept on the response for the audit record.
#[derive(Debug, Clone, Copy)]
struct RecCode(&'static str);

/// What kind of interaction a request is, for the audit trail.
fn subtype(method: &Method, path: &str) -> &'static str {
    if path.starts_with("/admin") {
        "admin"
    } else if path.ends_with("$process-message") {
        "process-message"
    } else if path.ends_with("$validate") {
        "validate"
    } else if path.ends_with("$timeline") {
        "timeline"
    } else if path == "/metrics" {
        "metrics"
    } else if path.ends_with("/metadata") {
        "capabilities"
    } else if *method == Method::GET {
        let segments = path.trim_matches('/').split('/').count();
        if segments >= 3 {
            "read"
        } else {
            "search"
        }
    } else {
        "other"
    }
}

fn action(method: &Method, path: &str) -> Action {
    if path.ends_with("$process-message") || path.contains("$replay") {
        Action::Execute
    } else if *method == Method::GET {
        Action::Read
    } else {
        Action::Execute
    }
}

/// Paths carry ids, not patient data, but keep logs to the route's shape anyway.
fn redact_path(path: &str) -> String {
    path.split('/')
        .map(|seg| {
            if seg.len() >= 16 && seg.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
                "{id}"
            } else {
                seg
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

fn echo_headers(headers: &HeaderMap) -> Vec<(http::HeaderName, HeaderValue)> {
    ["x-request-id", "x-correlation-id"]
        .into_iter()
        .filter_map(|n| Some((http::HeaderName::from_static(n), headers.get(n)?.clone())))
        .collect()
}

fn json_bytes(body: &Value) -> Bytes {
    Bytes::from(fhir::json_text(body))
}

fn json_response(
    status: StatusCode,
    body: &Value,
    content_type: &'static str,
) -> Response<Full<Bytes>> {
    bytes_response(status, json_bytes(body), content_type)
}

fn bytes_response(
    status: StatusCode,
    body: Bytes,
    content_type: &'static str,
) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body));
    *r.status_mut() = status;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static(content_type),
    );
    r
}

pub fn error_response(e: &ApiError) -> Response<Full<Bytes>> {
    let mut r = json_response(e.status, &e.to_operation_outcome(), FHIR_JSON);
    r.extensions_mut().insert(RecCode(e.rec));
    r
}

async fn route<B>(api: Arc<Api>, req: Request<B>, caller: Caller) -> Response<Full<Bytes>>
where
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let path = req.uri().path().trim_end_matches('/').to_owned();
    let query = req.uri().query().unwrap_or("").to_owned();
    let method = req.method().clone();
    match path.as_str() {
        "/healthz" | "/readyz" | "/metrics" if method != Method::GET => {
            return error_response(&ApiError::method_not_allowed("Use GET"))
        }
        "/healthz" => {
            return json_response(StatusCode::OK, &json!({"status": "ok"}), "application/json")
        }
        "/readyz" => return readyz(&api).await,
        "/metrics" => {
            if let Err(e) = auth::operator(&caller) {
                return error_response(&e);
            }
            let unsent = api.gateway.store.unsent_count().await.unwrap_or(-1);
            let text = api
                .gateway
                .metrics
                .render(unsent, api.broker_up.load(Ordering::Relaxed));
            let mut r = Response::new(Full::new(Bytes::from(text)));
            r.headers_mut().insert(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4"),
            );
            return r;
        }
        _ => {}
    }
    if let Some(admin_path) = path.strip_prefix("/admin") {
        if let Err(e) = auth::operator(&caller) {
            return error_response(&e);
        }
        return match admin(&api, &method, admin_path, &query).await {
            Ok(body) => json_response(StatusCode::OK, &body, "application/json"),
            Err(e) => error_response(&e),
        };
    }
    let Some(fhir_path) = path.strip_prefix("/fhir") else {
        return error_response(&ApiError::not_found(
            "No such endpoint; the FHIR API is under /fhir",
        ));
    };
    if let Err(e) = check_accept(req.headers(), &query) {
        return error_response(&e);
    }
    let segments: Vec<&str> = fhir_path.split('/').filter(|s| !s.is_empty()).collect();
    // The CapabilityStatement is for everyone who got through TLS; the rest for known clients.
    if segments.as_slice() != ["metadata"] {
        if let Err(e) = auth::known(&caller) {
            return error_response(&e);
        }
    }
    if method == Method::POST && segments.as_slice() == ["$process-message"] {
        // Answered with the message as the pipeline wrote it out.
        return respond(process_message(&api, &caller, req).await);
    }
    let answer: Answer = match (&method, segments.as_slice()) {
        (&Method::GET, ["metadata"]) => Ok((
            StatusCode::OK,
            crate::capability::capability_statement(&fhir::instant(crate::store::now_ms())),
        )),
        (&Method::POST, ["$validate"]) => validate(&api, req, None, &query).await,
        (&Method::POST, [t, "$validate"]) => {
            let t = (*t).to_owned();
            validate(&api, req, Some(&t), &query).await
        }
        (_, ["metadata"])
        | (_, ["$process-message"])
        | (_, ["$validate"])
        | (_, [_, "$validate"]) => Err(ApiError::method_not_allowed(format!(
            "{method} is not allowed here"
        ))),
        (&Method::GET, ["ServiceRequest"]) => search_service_requests(&api, &caller, &query).await,
        (&Method::GET, ["ServiceRequest", id]) => read_referral(&api, &caller, id, false).await,
        (&Method::GET, ["ServiceRequest", id, "$timeline"]) => {
            timeline(&api, &caller, id, false).await
        }
        (&Method::GET, ["Task"]) => search_tasks(&api, &caller, &query).await,
        (&Method::GET, ["Task", id]) => read_referral(&api, &caller, id, true).await,
        (&Method::GET, ["Task", id, "$timeline"]) => timeline(&api, &caller, id, true).await,
        (&Method::GET, ["AuditEvent"]) => audit_events(&api, &caller, &query).await,
        (_, ["AuditEvent", ..]) => Err(ApiError::method_not_allowed(
            "The audit trail is read-only: GET /fhir/AuditEvent",
        )),
        (&Method::GET, [t @ ("HealthcareService" | "Endpoint")]) => Ok((
            StatusCode::OK,
            searchset(&api.base_url, api.directory.resources(t).cloned().collect()),
        )),
        (&Method::GET, [t @ ("HealthcareService" | "Endpoint"), id]) => api
            .directory
            .resources(t)
            .find(|r| r.get("id").and_then(Value::as_str) == Some(id))
            .map(|r| (StatusCode::OK, r.clone()))
            .ok_or_else(|| ApiError::not_found(format!("{t}/{id} is not in the directory"))),
        (_, ["ServiceRequest" | "Task" | "HealthcareService" | "Endpoint", ..]) => {
            Err(ApiError::method_not_allowed(format!(
                "{method} is not supported on this resource; see GET /fhir/metadata"
            )))
        }
        _ => Err(ApiError::not_found(
            "No such FHIR endpoint; see GET /fhir/metadata",
        )),
    };
    respond(answer.map(|(status, body)| (status, json_bytes(&body))))
}

/// The response to a FHIR request: its answer, or the OperationOutcome of its error.
fn respond(answer: Result<(StatusCode, Bytes), ApiError>) -> Response<Full<Bytes>> {
    match answer {
        Ok((status, body)) => bytes_response(status, body, FHIR_JSON),
        Err(e) => {
            if e.status.is_server_error() {
                tracing::warn!(status = e.status.as_u16(), rec = e.rec, "request failed");
            }
            error_response(&e)
        }
    }
}

/// The admin API: parked messages. `GET /admin/parked[?scheme=&since=]`,
/// `POST /admin/parked/{id}/$replay`, `POST /admin/parked/$replay?scheme=&since=`.
async fn admin(api: &Api, method: &Method, path: &str, query: &str) -> Result<Value, ApiError> {
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let since = match query_param(query, "since") {
        Some(t) => Some(
            crate::admin::parse_since(&t, crate::store::now_ms()).ok_or_else(|| {
                ApiError::value("since must be an RFC 3339 time or a duration such as 2h")
                    .at("since")
            })?,
        ),
        None => None,
    };
    let mut selector = crate::admin::Selector {
        id: None,
        scheme: query_param(query, "scheme"),
        since_ms: since,
    };
    let store = &api.gateway.store;
    let rows = match (method, segments.as_slice()) {
        (&Method::GET, ["parked"]) => crate::admin::list(store, &api.directory, &selector).await,
        (&Method::POST, ["parked", "$replay"]) => {
            if selector.scheme.is_none() && selector.since_ms.is_none() {
                return Err(ApiError::required(
                    "Say what to replay: scheme=, since=, or POST /admin/parked/{id}/$replay",
                ));
            }
            crate::admin::replay(store, &api.directory, &selector).await
        }
        (&Method::POST, ["parked", id, "$replay"]) => {
            selector.id = Some((*id).to_owned());
            if crate::admin::list(store, &api.directory, &selector)
                .await
                .map_err(admin_error)?
                .is_empty()
            {
                return Err(ApiError::not_found(format!("No parked message {id}")));
            }
            crate::admin::replay(store, &api.directory, &selector).await
        }
        (_, ["parked", ..]) => {
            return Err(ApiError::method_not_allowed(format!(
                "{method} is not allowed here"
            )))
        }
        _ => return Err(ApiError::not_found("No such admin endpoint")),
    }
    .map_err(admin_error)?;
    api.gateway.outbox_ready.notify_one();
    Ok(json!({"parked": rows.iter().map(crate::admin::describe).collect::<Vec<_>>()}))
}

fn admin_error(e: crate::admin::AdminError) -> ApiError {
    match e {
        crate::admin::AdminError::UnknownScheme(s) => {
            ApiError::not_found(format!("No scheme or endpoint {s} in the directory"))
        }
        crate::admin::AdminError::Store(e) => e.into(),
    }
}

async fn readyz(api: &Api) -> Response<Full<Bytes>> {
    let store = api.gateway.store.ping().await;
    let broker = api.broker_up.load(Ordering::Relaxed);
    let status = if store && broker {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    json_response(
        status,
        &json!({"store": store, "broker": broker}),
        "application/json",
    )
}

/// The media type a client wants back must be JSON (FHIR or plain); `_format` overrides
/// `Accept`. A BaRS `version` parameter must be a 1.x version.
fn check_accept(headers: &HeaderMap, query: &str) -> Result<(), ApiError> {
    let wanted = query_param(query, "_format").or_else(|| {
        headers
            .get(http::header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    });
    let Some(wanted) = wanted else { return Ok(()) };
    let ok = wanted.split(',').any(|range| {
        let mut parts = range.split(';').map(str::trim);
        let media = parts.next().unwrap_or("").to_ascii_lowercase();
        let version_ok = parts
            .filter_map(|p| p.strip_prefix("version="))
            .all(|v| v.trim_matches('"').split('.').next() == Some("1"));
        version_ok
            && matches!(
                media.as_str(),
                "*/*"
                    | "application/*"
                    | "application/fhir+json"
                    | "application/json"
                    | "json"
                    | ""
            )
    });
    if ok {
        Ok(())
    } else {
        Err(ApiError::not_acceptable(
            "Signpost answers in application/fhir+json (BaRS version 1.x)",
        ))
    }
}

/// Bodies must be FHIR JSON (`application/fhir+json`, or `application/json` as some clients
/// send), UTF-8.
fn check_content_type(headers: &HeaderMap) -> Result<(), ApiError> {
    let ct = headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mut parts = ct.split(';').map(str::trim);
    let media = parts.next().unwrap_or("").to_ascii_lowercase();
    let charset_ok = parts
        .filter_map(|p| {
            p.to_ascii_lowercase()
                .strip_prefix("charset=")
                .map(str::to_owned)
        })
        .all(|c| c.trim_matches('"') == "utf-8");
    if matches!(media.as_str(), "application/fhir+json" | "application/json") && charset_ok {
        Ok(())
    } else {
        Err(ApiError::unsupported_media_type(
            "Content-Type must be application/fhir+json; charset=utf-8",
        ))
    }
}

fn required_uuid_header(headers: &HeaderMap, name: &'static str) -> Result<String, ApiError> {
    let v = headers
        .get(name)
        .ok_or_else(|| ApiError::required(format!("The {name} header is required")).at(name))?;
    let v = v
        .to_str()
        .map_err(|_| ApiError::value(format!("The {name} header must be a UUID")).at(name))?;
    uuid::Uuid::parse_str(v.trim())
        .map_err(|_| ApiError::value(format!("The {name} header must be a UUID")).at(name))?;
    Ok(v.trim().to_owned())
}

async fn process_message<B>(
    api: &Api,
    caller: &Caller,
    req: Request<B>,
) -> Result<crate::pipeline::Reply, ApiError>
where
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let headers = req.headers();
    let ids = RequestIds {
        request_id: required_uuid_header(headers, "x-request-id")?,
        correlation_id: required_uuid_header(headers, "x-correlation-id")?,
        // This request's own span when traces are exported (so the delivery joins its trace),
        // else the caller's trace context as it came.
        traceparent: crate::telemetry::current_traceparent().or_else(|| {
            headers
                .get("traceparent")
                .and_then(|v| v.to_str().ok())
                .filter(|t| is_traceparent(t))
                .map(str::to_owned)
        }),
    };
    check_content_type(headers)?;
    let body = read_body(api, req).await?;
    api.gateway.process_message(caller, &ids, &body).await
}

async fn read_body<B>(api: &Api, req: Request<B>) -> Result<Bytes, ApiError>
where
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let body = Limited::new(req.into_body(), api.max_body_bytes)
        .collect()
        .await
        .map_err(|e| {
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                ApiError::too_large(format!(
                    "The body is larger than {} bytes",
                    api.max_body_bytes
                ))
            } else {
                ApiError::structure("The body could not be read")
            }
        })?
        .to_bytes();
    // Checked before parsing: deep nesting costs the parser and the validator dear.
    if crate::limits::json_depth_exceeds(&body, api.max_json_depth) {
        return Err(ApiError::structure(format!(
            "The JSON is nested deeper than {} levels",
            api.max_json_depth
        )));
    }
    Ok(body)
}

/// `$validate`: the resource in the body (or in a Parameters `resource`), against base R4 and
/// the `profile` (query or Parameters; an id or canonical URL) or the profiles its
/// `meta.profile` names. Answers 200 with the OperationOutcome whatever the verdict.
async fn validate<B>(api: &Api, req: Request<B>, resource_type: Option<&str>, query: &str) -> Answer
where
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    check_content_type(req.headers())?;
    let body = read_body(api, req).await?;
    let value: Value = serde_json::from_slice(&body)
        .map_err(|_| ApiError::structure("The body is not valid JSON"))?;
    let mut profile = query_param(query, "profile");
    let is_parameters = value.get("resourceType").and_then(Value::as_str) == Some("Parameters");
    let resource = if is_parameters && resource_type != Some("Parameters") {
        let params = value
            .get("parameter")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let named = |n: &str| {
            params
                .iter()
                .find(|p| p.get("name").and_then(Value::as_str) == Some(n))
                .cloned()
        };
        if profile.is_none() {
            profile = named("profile").and_then(|p| {
                ["valueUri", "valueCanonical", "valueString"]
                    .iter()
                    .find_map(|k| p.get(*k).and_then(Value::as_str).map(str::to_owned))
            });
        }
        named("resource")
            .and_then(|p| p.get("resource").cloned())
            .ok_or_else(|| {
                ApiError::required("A Parameters body needs a 'resource' parameter")
                    .at("Parameters.parameter")
            })?
    } else {
        value
    };
    if let Some(t) = resource_type {
        if resource.get("resourceType").and_then(Value::as_str) != Some(t) {
            return Err(ApiError::invalid(format!("The resource is not a {t}")).at("resourceType"));
        }
    }
    let outcome = api
        .gateway
        .profiles
        .validate(&resource, profile.as_deref())
        .map_err(|e| {
            let known: Vec<&str> = signpost_profiles::PROFILES.iter().map(|p| p.id).collect();
            ApiError::bad_request(
                "not-supported",
                format!("Unknown profile {:?}; known: {}", e.0, known.join(", ")),
            )
            .at("profile")
        })?;
    Ok((StatusCode::OK, outcome.sorted().to_operation_outcome()))
}

/// A referral by ServiceRequest or Task id, if the caller may read it.
async fn find_referral(
    api: &Api,
    caller: &Caller,
    id: &str,
    by_task: bool,
) -> Result<ReferralRow, ApiError> {
    let found = if by_task {
        api.gateway.store.referral_by_task(id).await?
    } else {
        api.gateway.store.referral(id).await?
    };
    let what = if by_task { "Task" } else { "ServiceRequest" };
    let r = found.ok_or_else(|| ApiError::not_found(format!("{what}/{id} is not known here")))?;
    crate::audit::note_entity(&r.id);
    auth::read(caller, &r)?;
    Ok(r)
}

async fn read_referral(api: &Api, caller: &Caller, id: &str, task: bool) -> Answer {
    let r = find_referral(api, caller, id, task).await?;
    Ok((
        StatusCode::OK,
        if task { r.task } else { r.service_request },
    ))
}

/// The timeline as a FHIR List: one entry per step, with its time, its step code, and what
/// happened.
async fn timeline(api: &Api, caller: &Caller, id: &str, by_task: bool) -> Answer {
    let r = find_referral(api, caller, id, by_task).await?;
    let steps = api.gateway.store.timeline(&r.id).await?;
    let entry: Vec<Value> = steps
        .iter()
        .map(|s| {
            json!({
                "date": instant(s.at_ms),
                "flag": {"coding": [{"system": fhir::TIMELINE_STEPS, "code": s.step}], "text": s.step},
                "item": {"display": s.detail},
            })
        })
        .collect();
    Ok((
        StatusCode::OK,
        json!({
            "resourceType": "List",
            "id": format!("{}-timeline", r.id),
            "status": "current",
            "mode": "working",
            "title": "Referral timeline",
            "date": instant(r.updated_ms),
            "source": {"display": "Signpost"},
            "identifier": [{"system": uris::REFERRAL_ID_SYSTEM, "value": r.id}],
            "entry": entry,
        }),
    ))
}

async fn search_service_requests(api: &Api, caller: &Caller, query: &str) -> Answer {
    let token = query_param(query, "patient:identifier").ok_or_else(|| {
        ApiError::not_supported("ServiceRequest search needs patient:identifier=https://fhir.nhs.uk/Id/nhs-number|<NHS number>")
    })?;
    let (system, value) = match token.split_once('|') {
        Some((s, v)) => (Some(s), v),
        None => (None, token.as_str()),
    };
    if system.is_some_and(|s| !uris::is_system(s, uris::NHS_NUMBER)) {
        return Err(ApiError::not_supported(
            "Only the NHS number system (https://fhir.nhs.uk/Id/nhs-number) is searchable",
        ));
    }
    if !fhir::nhs_number_is_valid(value) {
        return Err(ApiError::value(
            "patient:identifier must carry a valid NHS number",
        ));
    }
    let rows = api.gateway.store.referrals_for_nhs_number(value).await?;
    // Each caller finds only the referrals it may read.
    let rows = rows.into_iter().filter(|r| auth::may_read(caller, r));
    Ok((
        StatusCode::OK,
        searchset(&api.base_url, rows.map(|r| r.service_request).collect()),
    ))
}

async fn search_tasks(api: &Api, caller: &Caller, query: &str) -> Answer {
    let focus = query_param(query, "focus")
        .ok_or_else(|| ApiError::not_supported("Task search needs focus=ServiceRequest/<id>"))?;
    let id = focus.rsplit('/').next().unwrap_or("");
    let found = api
        .gateway
        .store
        .referral(id)
        .await?
        .filter(|r| auth::may_read(caller, r));
    Ok((
        StatusCode::OK,
        searchset(&api.base_url, found.into_iter().map(|r| r.task).collect()),
    ))
}

/// The audit trail, for operators: `GET /fhir/AuditEvent?date=&agent=&entity=&_count=`.
async fn audit_events(api: &Api, caller: &Caller, query: &str) -> Answer {
    auth::operator(caller)?;
    let filter = crate::audit::filter(query).map_err(|e| ApiError::invalid(e).at("query"))?;
    let rows = api.gateway.store.audit(&filter).await?;
    Ok((
        StatusCode::OK,
        searchset(
            &api.base_url,
            rows.iter().map(crate::audit::to_fhir).collect(),
        ),
    ))
}

/// Whether `t` is a W3C `traceparent` (version 00): a malformed one is replaced, not passed on.
fn is_traceparent(t: &str) -> bool {
    let parts: Vec<&str> = t.split('-').collect();
    let hex = |s: &str, n: usize| {
        s.len() == n
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    parts.len() == 4
        && parts[0] == "00"
        && hex(parts[1], 32)
        && hex(parts[2], 16)
        && hex(parts[3], 2)
        && parts[1] != "0".repeat(32)
        && parts[2] != "0".repeat(16)
}

/// The first value of a query parameter, percent-decoded.
pub fn query_param(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (percent_decode(k) == name).then(|| percent_decode(v))
    })
}

pub fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                match u8::from_str_radix(
                    std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("zz"),
                    16,
                ) {
                    Ok(b) => {
                        out.push(b);
                        i += 3;
                        continue;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_well_formed_trace_contexts_are_passed_on() {
        assert!(is_traceparent(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        ));
        assert!(!is_traceparent(
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01"
        ));
        assert!(!is_traceparent(
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01"
        ));
        assert!(!is_traceparent("garbage"));
    }

    #[test]
    fn query_parameters_are_percent_decoded() {
        let q = "patient%3Aidentifier=https%3A%2F%2Ffhir.nhs.uk%2FId%2Fnhs-number%7C9434765919&x=1";
        assert_eq!(
            query_param(q, "patient:identifier").unwrap(),
            "https://fhir.nhs.uk/Id/nhs-number|9434765919"
        );
        assert_eq!(query_param("a=%zz%4", "a").unwrap(), "%zz%4");
        assert_eq!(query_param("a=b", "c"), None);
    }

    #[test]
    fn json_media_types_are_accepted_and_others_refused() {
        let mut h = HeaderMap::new();
        h.insert(
            "content-type",
            HeaderValue::from_static("application/fhir+json; charset=utf-8"),
        );
        assert!(check_content_type(&h).is_ok());
        h.insert("content-type", HeaderValue::from_static("application/json"));
        assert!(check_content_type(&h).is_ok());
        h.insert("content-type", HeaderValue::from_static("text/plain"));
        assert_eq!(
            check_content_type(&h).unwrap_err().status,
            StatusCode::UNSUPPORTED_MEDIA_TYPE
        );
        h.insert(
            "content-type",
            HeaderValue::from_static("application/fhir+json; charset=latin1"),
        );
        assert!(check_content_type(&h).is_err());
    }

    #[test]
    fn accept_takes_json_and_bars_version_one_only() {
        let mut h = HeaderMap::new();
        assert!(check_accept(&h, "").is_ok());
        h.insert(
            "accept",
            HeaderValue::from_static("application/fhir+json; version=1.1.0"),
        );
        assert!(check_accept(&h, "").is_ok());
        h.insert(
            "accept",
            HeaderValue::from_static("application/fhir+json; version=2.0.0"),
        );
        assert_eq!(check_accept(&h, "").unwrap_err().rec, "REC_NOT_ACCEPTABLE");
        h.insert("accept", HeaderValue::from_static("application/fhir+xml"));
        assert!(check_accept(&h, "").is_err());
        assert!(
            check_accept(&h, "_format=json").is_ok(),
            "_format overrides Accept"
        );
    }
}
