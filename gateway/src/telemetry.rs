//! Logs and traces. Logs go to stderr, filtered by `SIGNPOST_LOG` (default `info`). Traces are
//! exported with OpenTelemetry over OTLP/HTTP when `OTEL_EXPORTER_OTLP_ENDPOINT` (or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set, using the exporter's standard settings:
//! `OTEL_EXPORTER_OTLP_PROTOCOL` (`http/protobuf`, the default, or `http/json`),
//! `OTEL_EXPORTER_OTLP_HEADERS`, `OTEL_SERVICE_NAME` (default `signpost`) and `OTEL_BSP_*` for
//! batching. The export goes through Signpost's own HTTP client: rustls with certificate checks
//! (the public roots, or the CA in `OTEL_EXPORTER_OTLP_CERTIFICATE`); plain `http` only to a
//! loopback collector.
//!
//! Spans: one per HTTP request (`otel.kind` server, continuing an incoming `traceparent`), and
//! one per bus delivery, continuing the trace the message carries (`signpost_bus::trace`). They
//! carry methods, route shapes, statuses, ids, queue names and outcomes, never patient data.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_http::{Bytes, HttpError, Request, Response};
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_otlp::WithHttpConfig as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use signpost_bus::http::{HttpClient, TlsFiles};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

const DEFAULT_LOG: &str = "info,lapin=warn,lapin::channels=off,amq_protocol=warn";
/// The longest an export may take.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// What [`init`] started; [`Telemetry::shutdown`] sends the spans still queued.
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Export what is queued and stop the exporter (a no-op without one).
    pub fn shutdown(self) {
        if let Some(provider) = self.provider {
            if let Err(e) = provider.shutdown() {
                eprintln!("signpost: trace export at shutdown: {e}");
            }
        }
    }
}

/// The collector's address, when traces are to be exported.
fn otlp_endpoint() -> Option<String> {
    [
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
    ]
    .into_iter()
    .find_map(|v| std::env::var(v).ok().filter(|s| !s.trim().is_empty()))
}

/// Whether `url` may be used for the export: `https`, or `http` to a loopback address.
/// (The same rule as for scheme endpoints in the directory.)
fn allowed_endpoint(url: &str) -> bool {
    match url.parse::<http::Uri>() {
        Ok(uri) if uri.scheme_str() == Some("https") => true,
        Ok(_) => signpost_bus::directory::is_loopback(url),
        Err(_) => false,
    }
}

/// Start logging, and trace export when a collector is configured. Export tasks run on
/// `runtime`, so this is called with the runtime the program uses.
pub fn init(runtime: &tokio::runtime::Handle) -> anyhow::Result<Telemetry> {
    let filter = std::env::var("SIGNPOST_LOG").unwrap_or_else(|_| DEFAULT_LOG.to_owned());
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let registry = tracing_subscriber::registry()
        .with(tracing_subscriber::EnvFilter::new(filter))
        .with(fmt);
    let Some(endpoint) = otlp_endpoint() else {
        registry.init();
        return Ok(Telemetry { provider: None });
    };
    if !allowed_endpoint(&endpoint) {
        anyhow::bail!(
            "OTLP endpoint {endpoint:?}: use https (plain http only to a loopback collector)"
        );
    }
    let tls = TlsFiles {
        ca: std::env::var_os("OTEL_EXPORTER_OTLP_CERTIFICATE").map(Into::into),
        ..TlsFiles::default()
    };
    let client = if tls.is_empty() {
        HttpClient::new(EXPORT_TIMEOUT)
    } else {
        HttpClient::with_tls(EXPORT_TIMEOUT, &tls).context("OTLP exporter TLS")?
    };
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(Exporter {
            client: Arc::new(client),
            runtime: runtime.clone(),
        })
        .with_timeout(EXPORT_TIMEOUT)
        .build()
        .context("OTLP span exporter")?;
    let service = std::env::var("OTEL_SERVICE_NAME").unwrap_or_else(|_| "signpost".to_owned());
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(
            opentelemetry_sdk::Resource::builder()
                .with_service_name(service)
                .build(),
        )
        .build();
    let tracer = provider.tracer("signpost");
    registry
        .with(tracing_opentelemetry::layer().with_tracer(tracer))
        .init();
    Ok(Telemetry {
        provider: Some(provider),
    })
}

/// The OTLP exporter's HTTP client: Signpost's own, run on the program's runtime (the
/// exporter calls it from its own thread).
#[derive(Clone)]
struct Exporter {
    client: Arc<HttpClient>,
    runtime: tokio::runtime::Handle,
}

impl std::fmt::Debug for Exporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("signpost OTLP HTTP client")
    }
}

#[async_trait::async_trait]
impl opentelemetry_http::HttpClient for Exporter {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let (parts, body) = request.into_parts();
        let url = parts.uri.to_string();
        let headers: Vec<(String, String)> = parts
            .headers
            .iter()
            .filter_map(|(n, v)| Some((n.as_str().to_owned(), v.to_str().ok()?.to_owned())))
            .collect();
        let client = self.client.clone();
        let method = parts.method;
        let answer = self
            .runtime
            .spawn(async move {
                let headers: Vec<(&str, String)> = headers
                    .iter()
                    .map(|(n, v)| (n.as_str(), v.clone()))
                    .collect();
                client
                    .send(method, &url, &headers, body.to_vec(), 1 << 20)
                    .await
            })
            .await??;
        let mut response = Response::builder().status(answer.status);
        if let Some(h) = response.headers_mut() {
            *h = answer.headers;
        }
        Ok(response.body(answer.body)?)
    }
}

/// The `traceparent` to pass on from the current span, when traces are exported.
pub fn current_traceparent() -> Option<String> {
    signpost_bus::trace::traceparent_of(&tracing::Span::current())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_collector_is_reached_over_https_or_on_loopback_only() {
        assert!(allowed_endpoint("https://collector.example.org:4318"));
        assert!(allowed_endpoint("http://127.0.0.1:4318"));
        assert!(allowed_endpoint("http://localhost:4318/"));
        assert!(!allowed_endpoint("http://collector.example.org:4318"));
        assert!(!allowed_endpoint("ftp://127.0.0.1"));
        assert!(!allowed_endpoint("not a url"));
    }
}
