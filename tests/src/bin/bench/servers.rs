//! The two HTTP servers of the bench, both plain hyper 1 (HTTP/1.1, keep-alive) on loopback:
//!
//! - the **hyper baseline**: reads the request body and answers 200 with a fixed small JSON, so
//!   the load generator measures what HTTP alone costs on this machine;
//! - the **stand-in scheme**: answers 200 at once to `POST /fhir/$process-message` and tells
//!   the [`Tracker`] when each referral arrived (by its `X-Correlation-Id`, which Signpost passes
//!   on unchanged from the GP system's request).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::load::Tracker;

const FIXED_JSON: &str = r#"{"resourceType":"OperationOutcome","issue":[{"severity":"information","code":"informational"}]}"#;

/// A server task, stopped on drop.
pub struct Server {
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn fixed(status: StatusCode) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from_static(FIXED_JSON.as_bytes())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/fhir+json"),
    );
    r
}

async fn start<F, Fut>(handler: F) -> Result<Server, String>
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| format!("cannot listen on 127.0.0.1: {e}"))?;
    let addr = listener
        .local_addr()
        .map_err(|e| format!("listener address: {e}"))?;
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            let handler = handler.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req| {
                    let handler = handler.clone();
                    async move { Ok::<_, Infallible>(handler(req).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Ok(Server { addr, task })
}

async fn body(req: Request<Incoming>) -> (http::request::Parts, Bytes) {
    let (parts, body) = req.into_parts();
    let bytes = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    (parts, bytes)
}

/// The bare hyper server: any request, body read, fixed JSON answer.
pub async fn hyper_baseline() -> Result<Server, String> {
    start(|req| async move {
        let _ = body(req).await;
        fixed(StatusCode::OK)
    })
    .await
}

/// The stand-in scheme, recording receipts in `tracker`.
pub async fn standin_scheme(tracker: Arc<Tracker>) -> Result<Server, String> {
    start(move |req| {
        let tracker = tracker.clone();
        async move {
            if req.method() != http::Method::POST
                || !req.uri().path().ends_with("/$process-message")
            {
                return fixed(StatusCode::NOT_FOUND);
            }
            let (parts, bytes) = body(req).await;
            let correlation = parts
                .headers
                .get("x-correlation-id")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            tracker.received(correlation, &bytes);
            fixed(StatusCode::OK)
        }
    })
    .await
}
