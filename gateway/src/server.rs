//! The HTTP server: accepts on a given listener, over mutual TLS (or plain HTTP in development
//! on loopback), serves HTTP/1.1 and HTTP/2 with hyper, tags each request with the client it
//! came from ([`Client`]), and on shutdown stops accepting and lets open requests finish (up to
//! a grace period). Slow or oversized request heads are cut off here: the TLS handshake and the
//! head each have a time limit, and the head a size limit.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::api::{self, Api};
use crate::auth::{Caller, Identities};
use crate::tls::Reloading;

/// How long open connections get to finish after shutdown starts.
const GRACE: Duration = Duration::from_secs(10);

/// Who sent a request: the caller its certificate identifies, and the peer address.
#[derive(Debug, Clone)]
pub struct Client {
    pub caller: Caller,
    pub peer: SocketAddr,
}

/// How connections are accepted.
pub struct Options {
    /// Mutual TLS; `None` is plain HTTP (development on loopback: [`Caller::Development`]).
    pub tls: Option<Arc<Reloading>>,
    pub identities: Arc<Identities>,
    /// The time a client gets for the TLS handshake and, separately, for the request head.
    pub header_timeout: Duration,
    pub max_header_bytes: usize,
}

pub async fn serve(
    listener: TcpListener,
    api: Arc<Api>,
    shutdown: CancellationToken,
    options: Options,
) {
    let options = Arc::new(options);
    let graceful = GracefulShutdown::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(a) => a,
                    Err(error) => {
                        tracing::warn!(%error, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let api = api.clone();
                let watcher = graceful.watcher();
                let options = options.clone();
                tokio::spawn(async move {
                    let Some(tls) = &options.tls else {
                        let client = Client { caller: Caller::Development, peer };
                        serve_connection(TokioIo::new(stream), api, client, &options, watcher).await;
                        return;
                    };
                    let handshake = tokio::time::timeout(options.header_timeout, tls.acceptor().accept(stream)).await;
                    let stream = match handshake {
                        Ok(Ok(s)) => s,
                        Ok(Err(error)) => {
                            tracing::info!(%peer, %error, "TLS handshake refused");
                            return;
                        }
                        Err(_) => {
                            tracing::info!(%peer, "TLS handshake too slow");
                            return;
                        }
                    };
                    // The verifier made sure there is a certificate the client CA signed.
                    let caller = match stream.get_ref().1.peer_certificates().and_then(|c| c.first()) {
                        Some(cert) => options.identities.identify(cert.as_ref()),
                        None => return,
                    };
                    let client = Client { caller, peer };
                    serve_connection(TokioIo::new(stream), api, client, &options, watcher).await;
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

async fn serve_connection<I>(
    io: TokioIo<I>,
    api: Arc<Api>,
    client: Client,
    options: &Options,
    watcher: Watcher,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |mut req| {
        let api = api.clone();
        req.extensions_mut().insert(client.clone());
        async move { Ok::<_, Infallible>(api::handle(api, req).await) }
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(options.header_timeout)
        .max_buf_size(options.max_header_bytes.max(8192));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(options.max_header_bytes).unwrap_or(u32::MAX));
    let conn = builder.serve_connection(io, service);
    if let Err(error) = watcher.watch(conn).await {
        tracing::debug!(%error, "connection ended with an error");
    }
}
