use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use signpost_adapter_hl7v2::ack::{self, AckCode};
use signpost_adapter_hl7v2::message::Message;
use signpost_adapter_hl7v2::mllp::{self, FrameError, Handler, SendError, ServeOptions};
use signpost_adapter_hl7v2::ref_i12::{self, MapOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::helpers::{fixture, init_tracing, AT};

const WAIT: Duration = Duration::from_secs(5);

/// A running server; dropping `stop` (or sending on it) shuts it down.
struct Server {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl Server {
    async fn shutdown(mut self) {
        drop(self.stop.take());
        tokio::time::timeout(WAIT, self.task)
            .await
            .expect("serve returns")
            .unwrap();
    }
}

async fn spawn_server(handler: Arc<dyn Handler>, options: ServeOptions) -> Server {
    init_tracing();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(mllp::serve(listener, handler, options, async move {
        let _ = stopped.await;
    }));
    Server {
        addr,
        stop: Some(stop),
        task,
    }
}

/// The handler the gateway wiring will have, without the gateway: parse, map, ACK.
fn referral_handler() -> Arc<dyn Handler> {
    Arc::new(|text: String, _peer: SocketAddr| async move {
        let msg = match Message::parse(&text) {
            Ok(m) => m,
            Err(e) => return ack::reject_unparsable(&text, &e, "ACK-X", AT),
        };
        match ref_i12::map(&msg, &MapOptions::default()) {
            Ok(m) => ack::build(
                &msg,
                AckCode::Accept,
                &[],
                &format!("ACK-{}", m.message_control_id),
                AT,
            ),
            Err(e) => ack::build(&msg, e.code().ack_code(), &[(&e).into()], "ACK-E", AT),
        }
    })
}

/// Echoes each message back, prefixed; panics on `PANIC`, waits on `SLOW`.
fn echo_handler() -> Arc<dyn Handler> {
    Arc::new(|text: String, _peer: SocketAddr| async move {
        if text.contains("PANIC") {
            panic!("handler panicked on purpose");
        }
        if text.contains("SLOW") {
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        format!("echo:{text}")
    })
}

async fn read_to_end(stream: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut out))
        .await
        .expect("the server closes the connection")
        .unwrap_or_default();
    out
}

#[tokio::test]
async fn a_referral_sent_over_mllp_gets_its_ack() {
    let server = spawn_server(referral_handler(), ServeOptions::default()).await;
    let reply = mllp::send(&server.addr.to_string(), &fixture("ref-i12-emis.hl7"), WAIT)
        .await
        .unwrap();
    let ack = ack::parse(&reply).unwrap();
    assert_eq!(ack.code, AckCode::Accept);
    assert_eq!(ack.acknowledged_control_id, "EMIS-000123");
    assert_eq!(
        Message::parse(&reply).unwrap().control_id(),
        "ACK-EMIS-000123"
    );

    let reply = mllp::send(
        &server.addr.to_string(),
        &fixture("ref-i12-bad-check-digit.hl7"),
        WAIT,
    )
    .await
    .unwrap();
    let ack = ack::parse(&reply).unwrap();
    assert_eq!(ack.code, AckCode::Error);
    assert_eq!(
        ack.errors,
        ["102 PID-3: the NHS number's check digit is wrong at PID-3"]
    );
    server.shutdown().await;
}

#[tokio::test]
async fn several_messages_on_one_connection_are_answered_in_order() {
    let server = spawn_server(echo_handler(), ServeOptions::default()).await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    let mut wire = Vec::new();
    for i in 0..5 {
        // The second is slow: its reply must still come second.
        let body = if i == 1 {
            "MSH|SLOW".to_owned()
        } else {
            format!("MSH|{i}")
        };
        wire.extend(mllp::frame(&body));
    }
    stream.write_all(&wire).await.unwrap();
    stream.shutdown().await.unwrap();
    let bytes = read_to_end(&mut stream).await;
    let mut expected = Vec::new();
    for i in 0..5 {
        let body = if i == 1 {
            "echo:MSH|SLOW".to_owned()
        } else {
            format!("echo:MSH|{i}")
        };
        expected.extend(mllp::frame(&body));
    }
    assert_eq!(bytes, expected);
    server.shutdown().await;
}

#[tokio::test]
async fn a_misbehaving_connection_is_closed_and_others_carry_on() {
    let options = ServeOptions {
        max_frame_len: 1024,
        ..ServeOptions::default()
    };
    let server = spawn_server(echo_handler(), options).await;
    let addr = server.addr.to_string();

    // A good client holds its connection open throughout.
    let mut good = TcpStream::connect(server.addr).await.unwrap();

    // Garbage: the connection is closed without a reply.
    let mut garbage = TcpStream::connect(server.addr).await.unwrap();
    garbage
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(read_to_end(&mut garbage).await, b"");

    // Too large: closed too.
    let mut large = TcpStream::connect(server.addr).await.unwrap();
    let _ = large.write_all(&mllp::frame(&"X".repeat(5000))).await;
    assert_eq!(read_to_end(&mut large).await, b"");

    // A handler that panics loses its connection only.
    let panicked = mllp::send(&addr, "MSH|PANIC", WAIT).await;
    assert!(matches!(panicked, Err(SendError::Closed)), "{panicked:?}");

    good.write_all(&mllp::frame("MSH|still here"))
        .await
        .unwrap();
    let mut buf = vec![0u8; 64];
    let n = tokio::time::timeout(WAIT, good.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&buf[..n], mllp::frame("echo:MSH|still here").as_slice());
    assert_eq!(
        mllp::send(&addr, "MSH|new", WAIT).await.unwrap(),
        "echo:MSH|new"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn idle_and_slow_peers_are_timed_out() {
    let options = ServeOptions {
        idle_timeout: Duration::from_millis(300),
        frame_timeout: Duration::from_millis(300),
        ..ServeOptions::default()
    };
    let server = spawn_server(echo_handler(), options).await;

    let started = std::time::Instant::now();
    let mut idle = TcpStream::connect(server.addr).await.unwrap();
    assert_eq!(read_to_end(&mut idle).await, b"");
    assert!(started.elapsed() >= Duration::from_millis(250));

    // A peer that trickles a frame a byte at a time never finishes it in time.
    let mut slow = TcpStream::connect(server.addr).await.unwrap();
    let started = std::time::Instant::now();
    let trickle = async {
        slow.write_all(b"\x0bMSH|").await?;
        for b in b"0123456789" {
            tokio::time::sleep(Duration::from_millis(100)).await;
            slow.write_all(&[*b]).await?;
        }
        Ok::<_, std::io::Error>(())
    };
    let _ = trickle.await;
    assert_eq!(read_to_end(&mut slow).await, b"");
    assert!(started.elapsed() < Duration::from_secs(3));
    server.shutdown().await;
}

#[tokio::test]
async fn shutdown_lets_a_message_in_hand_finish() {
    let server = spawn_server(echo_handler(), ServeOptions::default()).await;
    let addr = server.addr.to_string();
    let in_flight = tokio::spawn(async move { mllp::send(&addr, "MSH|SLOW", WAIT).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    server.shutdown().await;
    assert_eq!(in_flight.await.unwrap().unwrap(), "echo:MSH|SLOW");
}

#[tokio::test]
async fn send_reports_each_way_an_exchange_can_fail() {
    init_tracing();
    // Nobody listening.
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = closed.local_addr().unwrap().to_string();
    drop(closed);
    assert!(matches!(
        mllp::send(&addr, "MSH|x", WAIT).await,
        Err(SendError::Connect { .. })
    ));

    // Peers that misbehave in one way each.
    async fn peer(reply: &'static [u8], close: bool) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 256];
            let _ = s.read(&mut buf).await;
            s.write_all(reply).await.unwrap();
            if close {
                drop(s);
            } else {
                tokio::time::sleep(Duration::from_secs(10)).await;
            }
        });
        addr
    }
    let silent = peer(b"", false).await;
    let started = std::time::Instant::now();
    assert!(matches!(
        mllp::send(&silent, "MSH|x", Duration::from_millis(300)).await,
        Err(SendError::Timeout(_))
    ));
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(matches!(
        mllp::send(&peer(b"", true).await, "MSH|x", WAIT).await,
        Err(SendError::Closed)
    ));
    assert!(matches!(
        mllp::send(&peer(b"\x0bMSH|^~\\&|cut", true).await, "MSH|x", WAIT).await,
        Err(SendError::Frame(FrameError::Truncated { .. }))
    ));
    assert!(matches!(
        mllp::send(
            &peer(b"HTTP/1.1 400 Bad Request\r\n\r\n", true).await,
            "MSH|x",
            WAIT
        )
        .await,
        Err(SendError::Frame(FrameError::Garbage { .. }))
    ));
    assert_eq!(
        mllp::send(&peer(b"\r\n\x0bMSH|ok\x1c\r", true).await, "MSH|x", WAIT)
            .await
            .unwrap(),
        "MSH|ok"
    );
}
