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
/// After this long in the grace period, the connections still open are reported.
const SLOW_GRACE: Duration = Duration::from_secs(2);

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
                        serve_connection(stream, api, client, &options, watcher).await;
                        return;
                    };
                    let handshake = tokio::time::timeout(options.header_timeout, tls.acceptor().accept(stream)).await;
                    let refused = match handshake {
                        Ok(Ok(s)) => Ok(s),
                        Ok(Err(error)) => Err(error.to_string()),
                        Err(_) => Err("too slow".to_owned()),
                    };
                    let stream = match refused {
                        Ok(s) => s,
                        Err(why) => {
                            // A refusal too: on the audit trail, with the TLS reason (no data).
                            tracing::info!(%peer, why, "TLS handshake refused");
                            api.audit
                                .record(crate::audit::Record {
                                    at_ms: crate::store::now_ms(),
                                    kind: "rest",
                                    subtype: "tls-handshake".to_owned(),
                                    action: crate::audit::Action::Execute,
                                    agent: "unidentified".to_owned(),
                                    address: Some(peer.to_string()),
                                    entity: None,
                                    status: 401,
                                    detail: format!("TLS handshake refused: {why}"),
                                })
                                .await;
                            return;
                        }
                    };
                    // The verifier made sure there is a certificate the client CA signed.
                    let caller = match stream.get_ref().1.peer_certificates().and_then(|c| c.first()) {
                        Some(cert) => options.identities.identify(cert.as_ref()),
                        None => return,
                    };
                    let client = Client { caller, peer };
                    serve_connection(stream, api, client, &options, watcher).await;
                });
            }
            _ = shutdown.cancelled() => break,
        }
    }
    drop(listener);
    let open = graceful.count();
    let done = graceful.shutdown();
    tokio::pin!(done);
    // Idle connections close at once and open requests finish; a wait longer than a moment is
    // reported while it lasts, so that a slow stop says what held it.
    tokio::select! {
        () = &mut done => return,
        () = tokio::time::sleep(SLOW_GRACE) => tracing::warn!(
            open_when_the_stop_began = open,
            "shutdown: HTTP connections still open after {} s", SLOW_GRACE.as_secs()
        ),
    }
    tokio::select! {
        () = done => tracing::warn!("shutdown: the last HTTP connection closed"),
        () = tokio::time::sleep(GRACE - SLOW_GRACE) => tracing::warn!("connections still open after the grace period"),
    }
}

/// A connection must deliver its first bytes (as many as the HTTP/2 preface: enough for any
/// request line) within the head time limit, or it is closed. hyper's own head timeout starts
/// only with the first byte of an HTTP/1 head; this covers a connection that sends nothing, or
/// trickles an HTTP/2 preface.
struct FirstBytesDeadline<I> {
    inner: I,
    read: usize,
    deadline: std::pin::Pin<Box<tokio::time::Sleep>>,
}

const FIRST_BYTES: usize = 24;

impl<I> FirstBytesDeadline<I> {
    fn new(inner: I, limit: Duration) -> Self {
        FirstBytesDeadline {
            inner,
            read: 0,
            deadline: Box::pin(tokio::time::sleep(limit)),
        }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for FirstBytesDeadline<I> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        use std::future::Future;
        use std::task::Poll;
        if self.read < FIRST_BYTES && self.deadline.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "no request within the time limit",
            )));
        }
        let before = buf.filled().len();
        let polled = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            self.read += buf.filled().len() - before;
        }
        polled
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for FirstBytesDeadline<I> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        data: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write(cx, data)
    }
    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

async fn serve_connection<I>(
    io: I,
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
    let io = TokioIo::new(FirstBytesDeadline::new(io, options.header_timeout));
    let conn = builder.serve_connection(io, service);
    if let Err(error) = watcher.watch(conn).await {
        tracing::debug!(%error, "connection ended with an error");
    }
}
