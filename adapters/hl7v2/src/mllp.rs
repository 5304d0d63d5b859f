//! MLLP, the Minimal Lower Layer Protocol that carries HL7 v2 over TCP: each message is framed
//! as `0x0B <message> 0x1C 0x0D`.
//!
//! This module owns the bytes on the socket: framing ([`frame`]), a streaming [`Decoder`]
//! (bytes in, whole frames out), the listening side ([`serve`], one reply per inbound frame, in
//! order, on the same connection) and the sending side ([`send`], one message and its framed
//! reply). It does not read the messages: what a frame means, and what to answer, is the
//! [`Handler`]'s business ([`crate::message`], [`crate::ack`]). TLS is optional: [`serve_tls`]
//! and [`send_tls`] take a rustls acceptor or connector that the caller configures
//! (certificates, client authentication); plain [`serve`] should be bound to loopback only.
//!
//! # Framing rules
//! - A carriage return or line feed between frames is ignored (some senders add one); any other
//!   byte outside a frame is [`FrameError::Garbage`], and the decoder skips to the next start
//!   block.
//! - A frame longer than the configured maximum is [`FrameError::TooLarge`]; its bytes are
//!   skipped up to its end block.
//! - A start block inside a frame abandons the frame before it ([`FrameError::Truncated`]), and
//!   so does a connection that closes mid-frame ([`Decoder::finish`]).
//! - An end block not followed by a carriage return is [`FrameError::BadTrailer`].
//!
//! # Text
//! Frames are bytes; [`decode_text`] reads them as UTF-8 when they are UTF-8 and as ISO 8859-1
//! otherwise (every byte is then one character, so nothing is lost). Replies are sent as UTF-8.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The TLS acceptor and connector [`serve_tls`] and [`send_tls`] take (tokio-rustls, with
/// rustls on the aws-lc-rs provider).
pub use tokio_rustls::{TlsAcceptor, TlsConnector};

/// Start block, vertical tab.
pub const START_BLOCK: u8 = 0x0B;
/// End block, file separator.
pub const END_BLOCK: u8 = 0x1C;
/// The carriage return after the end block.
pub const CARRIAGE_RETURN: u8 = 0x0D;

/// The default largest frame, in bytes: the gateway's default HTTP body limit, which an
/// outcome letter (a base64 PDF) fits in.
pub const DEFAULT_MAX_FRAME_LEN: usize = 10 * 1024 * 1024;

/// A message framed for the wire.
pub fn frame(message: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + 3);
    out.push(START_BLOCK);
    out.extend_from_slice(message.as_bytes());
    out.push(END_BLOCK);
    out.push(CARRIAGE_RETURN);
    out
}

/// A frame's bytes as text: UTF-8 when they are, else ISO 8859-1.
pub fn decode_text(bytes: Vec<u8>) -> String {
    match String::from_utf8(bytes) {
        Ok(s) => s,
        Err(e) => e.into_bytes().iter().map(|&b| char::from(b)).collect(),
    }
}

/// What is wrong with the byte stream. Each is reported once; the decoder has already skipped
/// the bad bytes, so a caller may go on reading (the server closes the connection instead).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("{len} bytes outside a frame (no start block)")]
    Garbage { len: usize },
    #[error("frame larger than {limit} bytes")]
    TooLarge { limit: usize },
    #[error("frame cut off after {len} bytes")]
    Truncated { len: usize },
    #[error("end block not followed by a carriage return")]
    BadTrailer,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Between frames.
    Idle,
    /// After a start block; `buf` holds the frame so far.
    InFrame,
    /// Skipping the rest of a frame that was too large.
    Discarding,
}

/// A streaming MLLP decoder: [`push`](Decoder::push) bytes as they arrive, then take frames
/// with [`next_frame`](Decoder::next_frame) until it gives `None`.
#[derive(Debug)]
pub struct Decoder {
    max_frame_len: usize,
    state: State,
    buf: Vec<u8>,
    /// Where the unconsumed bytes of `buf` start (consumed bytes are dropped lazily, so that
    /// many frames in one large read cost linear time).
    pos: usize,
    /// How much of the pending bytes (in a frame) has been searched for an end block already.
    scanned: usize,
}

impl Decoder {
    pub fn new(max_frame_len: usize) -> Decoder {
        Decoder {
            max_frame_len,
            state: State::Idle,
            buf: Vec::new(),
            pos: 0,
            scanned: 0,
        }
    }

    /// Add bytes read from the stream.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.pos > 0 && self.pos >= self.buf.len() / 2 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// Whether the decoder is between frames with nothing pending.
    pub fn is_idle(&self) -> bool {
        self.state == State::Idle && self.pending().iter().all(|b| matches!(b, b'\r' | b'\n'))
    }

    fn pending(&self) -> &[u8] {
        &self.buf[self.pos..]
    }

    fn consume(&mut self, n: usize) {
        self.pos += n;
        if self.pos >= self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        }
    }

    /// The next whole frame (without its start and end blocks), `None` when more bytes are
    /// needed, or the next problem in the stream.
    pub fn next_frame(&mut self) -> Result<Option<Vec<u8>>, FrameError> {
        loop {
            match self.state {
                State::Idle => {
                    let skip = self
                        .pending()
                        .iter()
                        .take_while(|b| matches!(b, b'\r' | b'\n'))
                        .count();
                    self.consume(skip);
                    match self.pending().first() {
                        None => return Ok(None),
                        Some(&START_BLOCK) => {
                            self.consume(1);
                            self.state = State::InFrame;
                            self.scanned = 0;
                        }
                        Some(_) => {
                            let pending = self.pending();
                            let len = pending
                                .iter()
                                .position(|&b| b == START_BLOCK)
                                .unwrap_or(pending.len());
                            self.consume(len);
                            return Err(FrameError::Garbage { len });
                        }
                    }
                }
                State::InFrame => {
                    let pending = self.pending();
                    let found = pending[self.scanned..]
                        .iter()
                        .position(|&b| b == END_BLOCK || b == START_BLOCK)
                        .map(|i| i + self.scanned);
                    match found {
                        Some(i) if pending[i] == START_BLOCK => {
                            self.consume(i);
                            self.state = State::Idle;
                            return Err(FrameError::Truncated { len: i });
                        }
                        Some(i) => {
                            if i > self.max_frame_len {
                                self.consume(i);
                                self.state = State::Discarding;
                                return Err(FrameError::TooLarge {
                                    limit: self.max_frame_len,
                                });
                            }
                            let Some(&after) = pending.get(i + 1) else {
                                self.scanned = i;
                                return Ok(None);
                            };
                            let frame = pending[..i].to_vec();
                            self.state = State::Idle;
                            if after != CARRIAGE_RETURN {
                                self.consume(i + 1);
                                return Err(FrameError::BadTrailer);
                            }
                            self.consume(i + 2);
                            return Ok(Some(frame));
                        }
                        None => {
                            let len = pending.len();
                            self.scanned = len;
                            if len > self.max_frame_len {
                                self.consume(len);
                                self.state = State::Discarding;
                                return Err(FrameError::TooLarge {
                                    limit: self.max_frame_len,
                                });
                            }
                            return Ok(None);
                        }
                    }
                }
                State::Discarding => {
                    let pending = self.pending();
                    match pending.iter().position(|&b| b == END_BLOCK) {
                        Some(i) if i + 1 < pending.len() => {
                            let end = if pending[i + 1] == CARRIAGE_RETURN {
                                i + 2
                            } else {
                                i + 1
                            };
                            self.consume(end);
                            self.state = State::Idle;
                        }
                        Some(i) => {
                            self.consume(i);
                            return Ok(None);
                        }
                        None => {
                            let len = pending.len();
                            self.consume(len);
                            return Ok(None);
                        }
                    }
                }
            }
        }
    }

    /// The stream has ended: an error if it ended inside a frame or with bytes outside one.
    /// Call after [`next_frame`](Decoder::next_frame) has given `None`.
    pub fn finish(&mut self) -> Result<(), FrameError> {
        let state = std::mem::replace(&mut self.state, State::Idle);
        let buf = self.buf.split_off(self.pos);
        self.buf.clear();
        self.pos = 0;
        match state {
            State::InFrame => Err(FrameError::Truncated { len: buf.len() }),
            State::Discarding => Err(FrameError::TooLarge {
                limit: self.max_frame_len,
            }),
            State::Idle if buf.iter().any(|b| !matches!(b, b'\r' | b'\n')) => {
                Err(FrameError::Garbage { len: buf.len() })
            }
            State::Idle => Ok(()),
        }
    }
}

/// What answers inbound messages: given a frame's text and the peer's address, the reply to
/// frame and send back (normally an ACK built with [`crate::ack`]). Closures
/// `Fn(String, SocketAddr) -> impl Future<Output = String>` are handlers too.
///
/// Each call runs in its own task: a handler that panics loses that connection (the sender
/// will resend what it has no ACK for), never the server.
#[async_trait::async_trait]
pub trait Handler: Send + Sync + 'static {
    async fn handle(&self, message: String, peer: SocketAddr) -> String;
}

#[async_trait::async_trait]
impl<F, Fut> Handler for F
where
    F: Fn(String, SocketAddr) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = String> + Send + 'static,
{
    async fn handle(&self, message: String, peer: SocketAddr) -> String {
        self(message, peer).await
    }
}

/// Limits of the listening side.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Largest inbound frame; a larger one closes the connection.
    pub max_frame_len: usize,
    /// How long a connection may sit between frames before it is closed. MLLP senders keep
    /// connections open, so this is generous.
    pub idle_timeout: Duration,
    /// How long a frame may take to arrive once its start block has (a slow or stuck peer).
    pub frame_timeout: Duration,
    /// How long writing one reply may take.
    pub write_timeout: Duration,
    /// Connections served at once; more wait to be accepted.
    pub max_connections: usize,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            max_frame_len: DEFAULT_MAX_FRAME_LEN,
            idle_timeout: Duration::from_secs(600),
            frame_timeout: Duration::from_secs(30),
            write_timeout: Duration::from_secs(30),
            max_connections: 256,
        }
    }
}

/// Serve MLLP on `listener` until `shutdown` completes: every inbound frame goes to `handler`
/// and its reply goes back, framed, on the same connection, in order.
///
/// A connection is closed when its peer sends bytes outside a frame, a frame that is too
/// large, or a broken frame, and when a timeout in `options` runs out; other connections carry
/// on. On shutdown the listener stops accepting, idle connections close, and a connection
/// whose frame has arrived finishes it (handler and reply) first; `serve` returns when every
/// connection has closed.
pub async fn serve(
    listener: TcpListener,
    handler: Arc<dyn Handler>,
    options: ServeOptions,
    shutdown: impl Future<Output = ()>,
) {
    serve_with(listener, None, handler, options, shutdown).await
}

/// [`serve`] over TLS: each connection first completes a handshake with `acceptor` (within
/// `options.frame_timeout`). Whether clients must show a certificate (mutual TLS) is the
/// acceptor's `ServerConfig`'s business.
pub async fn serve_tls(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    handler: Arc<dyn Handler>,
    options: ServeOptions,
    shutdown: impl Future<Output = ()>,
) {
    serve_with(listener, Some(acceptor), handler, options, shutdown).await
}

async fn serve_with(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    handler: Arc<dyn Handler>,
    options: ServeOptions,
    shutdown: impl Future<Output = ()>,
) {
    let cancel = CancellationToken::new();
    let tracker = TaskTracker::new();
    let slots = Arc::new(Semaphore::new(options.max_connections.max(1)));
    let options = Arc::new(options);
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            _ = &mut shutdown => break,
            p = slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let accepted = tokio::select! {
            _ = &mut shutdown => break,
            a = listener.accept() => a,
        };
        match accepted {
            Ok((stream, peer)) => {
                let handler = handler.clone();
                let options = options.clone();
                let cancel = cancel.clone();
                let tls = tls.clone();
                tracker.spawn(async move {
                    let _permit = permit;
                    tracing::debug!(%peer, "mllp connection opened");
                    match tls {
                        None => {
                            let mut stream = stream;
                            connection(&mut stream, peer, handler, &options, cancel).await;
                        }
                        Some(acceptor) => {
                            match tokio::time::timeout(
                                options.frame_timeout,
                                acceptor.accept(stream),
                            )
                            .await
                            {
                                Ok(Ok(mut stream)) => {
                                    connection(&mut stream, peer, handler, &options, cancel).await;
                                    // close_notify, so the peer sees a clean end.
                                    let _ = tokio::time::timeout(
                                        Duration::from_secs(1),
                                        stream.shutdown(),
                                    )
                                    .await;
                                }
                                Ok(Err(e)) => {
                                    tracing::warn!(%peer, error = %e, "mllp tls handshake failed")
                                }
                                Err(_) => tracing::info!(%peer, "mllp tls handshake timed out"),
                            }
                        }
                    }
                    tracing::debug!(%peer, "mllp connection closed");
                });
            }
            Err(e) => {
                // Out of file descriptors and the like: wait a little rather than spin.
                tracing::warn!(error = %e, "mllp accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    drop(listener);
    cancel.cancel();
    tracker.close();
    tracker.wait().await;
}

async fn connection<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    peer: SocketAddr,
    handler: Arc<dyn Handler>,
    options: &ServeOptions,
    cancel: CancellationToken,
) {
    let mut decoder = Decoder::new(options.max_frame_len);
    let mut buf = vec![0u8; 16 * 1024];
    let mut frame_deadline: Option<Instant> = None;
    loop {
        match decoder.next_frame() {
            Ok(Some(bytes)) => {
                if cancel.is_cancelled() {
                    return;
                }
                let text = decode_text(bytes);
                let h = handler.clone();
                let reply = match tokio::spawn(async move { h.handle(text, peer).await }).await {
                    Ok(reply) => reply,
                    Err(e) => {
                        tracing::error!(%peer, error = %e, "mllp handler failed; closing the connection");
                        return;
                    }
                };
                let write = async {
                    stream.write_all(&frame(&reply)).await?;
                    stream.flush().await
                };
                let written = tokio::time::timeout(options.write_timeout, write).await;
                if !matches!(written, Ok(Ok(()))) {
                    tracing::warn!(%peer, "mllp reply could not be written; closing the connection");
                    return;
                }
                frame_deadline = None;
                continue;
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(%peer, error = %e, "mllp framing error; closing the connection");
                return;
            }
        }
        let idle = decoder.is_idle();
        let deadline = if idle {
            frame_deadline = None;
            Instant::now() + options.idle_timeout
        } else {
            *frame_deadline.get_or_insert_with(|| Instant::now() + options.frame_timeout)
        };
        let read = tokio::select! {
            _ = cancel.cancelled(), if idle => return,
            r = tokio::time::timeout_at(deadline, stream.read(&mut buf)) => r,
        };
        match read {
            Err(_) => {
                tracing::info!(%peer, idle, "mllp connection timed out");
                return;
            }
            Ok(Ok(0)) => {
                if let Err(e) = decoder.finish() {
                    tracing::warn!(%peer, error = %e, "mllp connection closed mid-frame");
                }
                return;
            }
            Ok(Ok(n)) => decoder.push(&buf[..n]),
            Ok(Err(e)) => {
                tracing::debug!(%peer, error = %e, "mllp read failed");
                return;
            }
        }
    }
}

/// Why [`send`] got no reply.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("could not connect to {addr}: {source}")]
    Connect { addr: String, source: io::Error },
    #[error("no reply within {0:?}")]
    Timeout(Duration),
    #[error("TLS handshake failed: {0}")]
    Tls(io::Error),
    #[error("connection failed: {0}")]
    Io(#[from] io::Error),
    #[error("the peer closed the connection without replying")]
    Closed,
    #[error("the reply is not a good MLLP frame: {0}")]
    Frame(#[from] FrameError),
}

/// Send one message to `addr` (`host:port`) and return its framed reply's text: connect,
/// write, read one frame, close. `timeout` bounds the whole exchange.
pub async fn send(addr: &str, message: &str, timeout: Duration) -> Result<String, SendError> {
    let exchange = async {
        let mut stream = connect(addr).await?;
        exchange(&mut stream, message).await
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| SendError::Timeout(timeout))?
}

/// [`send`] over TLS: the handshake with `connector` checks the server's certificate against
/// `server_name` (a DNS name or an IP address), and counts against `timeout` too.
pub async fn send_tls(
    addr: &str,
    server_name: &str,
    connector: &TlsConnector,
    message: &str,
    timeout: Duration,
) -> Result<String, SendError> {
    let name = ServerName::try_from(server_name.to_owned()).map_err(|_| {
        SendError::Tls(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{server_name:?} is not a DNS name or an IP address"),
        ))
    })?;
    let exchange = async {
        let stream = connect(addr).await?;
        let mut stream = connector
            .connect(name, stream)
            .await
            .map_err(SendError::Tls)?;
        let reply = exchange(&mut stream, message).await;
        let _ = stream.shutdown().await;
        reply
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| SendError::Timeout(timeout))?
}

async fn connect(addr: &str) -> Result<TcpStream, SendError> {
    TcpStream::connect(addr)
        .await
        .map_err(|source| SendError::Connect {
            addr: addr.to_owned(),
            source,
        })
}

async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    message: &str,
) -> Result<String, SendError> {
    stream.write_all(&frame(message)).await?;
    stream.flush().await?;
    read_reply(stream, DEFAULT_MAX_FRAME_LEN).await
}

async fn read_reply<R: AsyncRead + Unpin>(
    stream: &mut R,
    max_frame_len: usize,
) -> Result<String, SendError> {
    let mut decoder = Decoder::new(max_frame_len);
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        if let Some(frame) = decoder.next_frame()? {
            return Ok(decode_text(frame));
        }
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            decoder.finish()?;
            return Err(SendError::Closed);
        }
        decoder.push(&buf[..n]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_split_byte_by_byte_comes_out_whole() {
        let bytes = frame("MSH|^~\\&|A\rPID|1");
        let mut d = Decoder::new(1024);
        let mut out = Vec::new();
        for b in bytes {
            d.push(&[b]);
            while let Some(f) = d.next_frame().unwrap() {
                out.push(f);
            }
        }
        assert_eq!(out, vec![b"MSH|^~\\&|A\rPID|1".to_vec()]);
        assert!(d.is_idle());
        assert_eq!(d.finish(), Ok(()));
    }

    #[test]
    fn an_end_block_without_its_carriage_return_is_a_bad_trailer() {
        let mut d = Decoder::new(1024);
        d.push(b"\x0bMSH\x1cX\x0bMSH2\x1c\r");
        assert_eq!(d.next_frame(), Err(FrameError::BadTrailer));
        assert_eq!(d.next_frame(), Err(FrameError::Garbage { len: 1 }));
        assert_eq!(d.next_frame(), Ok(Some(b"MSH2".to_vec())));
    }
}
