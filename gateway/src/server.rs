//! The HTTP server: accepts on a given listener, serves HTTP/1.1 and HTTP/2 (by prior knowledge
//! or upgrade-free h2c detection) with hyper, and on shutdown stops accepting and lets open
//! requests finish (up to a grace period).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::api::{self, Api};

/// How long open connections get to finish after shutdown starts.
const GRACE: Duration = Duration::from_secs(10);

pub async fn serve(listener: TcpListener, api: Arc<Api>, shutdown: CancellationToken) {
    let graceful = GracefulShutdown::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, _peer) = match accepted {
                    Ok(a) => a,
                    Err(error) => {
                        tracing::warn!(%error, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let api = api.clone();
                let service = service_fn(move |req| {
                    let api = api.clone();
                    async move { Ok::<_, Infallible>(api::handle(api, req).await) }
                });
                let watcher = graceful.watcher();
                tokio::spawn(async move {
                    let mut builder = auto::Builder::new(TokioExecutor::new());
                    builder
                        .http1()
                        .timer(TokioTimer::new())
                        .header_read_timeout(Duration::from_secs(10))
                        .max_buf_size(256 * 1024);
                    builder.http2().max_header_list_size(64 * 1024);
                    let conn = builder.serve_connection(TokioIo::new(stream), service);
                    if let Err(error) = watcher.watch(conn).await {
                        tracing::debug!(%error, "connection ended with an error");
                    }
                });
            }
            _ = shutdown.cancelled() => break,
        }
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(GRACE) => tracing::warn!("connections still open after the grace period"),
    }
}
