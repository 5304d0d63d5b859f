//! Costly and abusive requests are refused with clear answers, and never slow anyone else down:
//! bodies over the size limit (413), JSON nested too deep (400), request heads over the size
//! limit (431 or closed), clients that send their head or body too slowly (closed or 408), and
//! clients over their rate (429 with `Retry-After`). Over real sockets, against the settings in
//! `[http]`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use signpost_tests::client::{Client, Reply};
use signpost_tests::env::read_fixture;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::helpers::{new_id, Gateway, World};

const REFERRAL: &str = "gp-system/referral-new.json";

/// The fixture referral under a fresh Bundle.id, so it can be sent again as a new referral.
fn fresh_referral() -> Vec<u8> {
    let mut bundle: Value = serde_json::from_slice(&read_fixture(REFERRAL)).expect("fixture");
    bundle["id"] = json!(new_id());
    bundle.to_string().into_bytes()
}

fn addr_of(gw: &Gateway) -> SocketAddr {
    gw.base
        .trim_start_matches("http://")
        .parse()
        .expect("the gateway's address")
}

async fn metadata(c: &Client, gw: &Gateway) -> Result<Reply, String> {
    c.get(&format!("{}/metadata", gw.fhir)).await
}

/// The fixture referral under a fresh Bundle.id, with `depth` arrays one inside the other in
/// a note on the ServiceRequest. Built as text: a deep `Value` would recurse as deep to drop.
fn referral_with_nested_arrays(depth: usize) -> Vec<u8> {
    let mut bundle: Value = serde_json::from_slice(&read_fixture(REFERRAL)).expect("fixture");
    bundle["id"] = json!(new_id());
    bundle["entry"][1]["resource"]["note"] = json!([{ "text": "x", "deep": "DEEP-HERE" }]);
    let deep = format!("{}1{}", "[".repeat(depth), "]".repeat(depth));
    bundle
        .to_string()
        .replacen("\"DEEP-HERE\"", &deep, 1)
        .into_bytes()
}

/// The status code of an HTTP/1 response's first line.
fn status_of(response: &[u8]) -> Option<u16> {
    let text = std::str::from_utf8(response.get(..12)?).ok()?;
    text.strip_prefix("HTTP/1.1 ")
        .or_else(|| text.strip_prefix("HTTP/1.0 "))?
        .get(..3)?
        .parse()
        .ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_over_the_size_limit_gets_413_too_costly_and_the_next_referral_is_accepted() {
    let world = World::new(None).await;
    let gw = Gateway::start(|addr| {
        let mut s = world.settings(addr);
        s.http.max_body_bytes = 64 * 1024;
        s
    })
    .await;
    let c = &world.client;
    // A valid referral padded with whitespace (still valid JSON) to four times the limit.
    let mut big = fresh_referral();
    big.resize(256 * 1024, b' ');
    let rid = new_id();
    let r = c
        .process_message(&gw.fhir, &rid, &new_id(), big)
        .await
        .expect("the gateway answers");
    assert_eq!(r.status, 413, "{}", r.body);
    assert_eq!(r.body["resourceType"], "OperationOutcome", "{}", r.text);
    assert_eq!(
        r.outcome_codes(),
        (
            "too-costly".to_owned(),
            "REC_UNPROCESSABLE_ENTITY".to_owned()
        )
    );
    assert_eq!(r.header("x-request-id"), Some(rid.as_str()));

    let ok = c
        .process_message(&gw.fhir, &new_id(), &new_id(), fresh_referral())
        .await
        .expect("the gateway answers");
    assert_eq!(ok.status, 200, "a referral within the limit: {}", ok.body);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_nested_deeper_than_the_limit_gets_400_structure_naming_the_limit() {
    let world = World::new(None).await;
    let gw = Gateway::start(|addr| {
        let mut s = world.settings(addr);
        s.http.max_json_depth = 16;
        s
    })
    .await;
    let c = &world.client;
    // Within the limit: the fixture referral (about 10 levels) is accepted, and so is one whose
    // note is a thousand `[` (brackets inside a string are text, not nesting).
    let ok = c
        .process_message(&gw.fhir, &new_id(), &new_id(), fresh_referral())
        .await
        .expect("the gateway answers");
    assert_eq!(ok.status, 200, "{}", ok.body);
    let mut bundle: Value = serde_json::from_slice(&read_fixture(REFERRAL)).expect("fixture");
    bundle["id"] = json!(new_id());
    bundle["entry"][1]["resource"]["note"] = json!([{ "text": "[".repeat(1000) }]);
    let r = c
        .process_message(
            &gw.fhir,
            &new_id(),
            &new_id(),
            bundle.to_string().into_bytes(),
        )
        .await
        .expect("the gateway answers");
    assert_eq!(
        r.status, 200,
        "brackets in a string are not nesting: {}",
        r.text
    );

    // Past it: 100 levels parse in serde_json (its own limit is 128) and 5000 do not; both get
    // Signpost's answer, naming the limit, not a validation or generic parse error.
    for depth in [100, 5_000] {
        let r = c
            .process_message(
                &gw.fhir,
                &new_id(),
                &new_id(),
                referral_with_nested_arrays(depth),
            )
            .await
            .expect("the gateway answers");
        assert_eq!(r.status, 400, "depth {depth}: {}", r.text);
        assert_eq!(r.body["resourceType"], "OperationOutcome", "{}", r.text);
        assert_eq!(
            r.outcome_codes(),
            ("structure".to_owned(), "REC_BAD_REQUEST".to_owned()),
            "depth {depth}: {}",
            r.text
        );
        let diagnostics = r.body["issue"][0]["diagnostics"].as_str().unwrap_or("");
        assert!(
            diagnostics.contains("16"),
            "depth {depth}: the diagnostics name the limit (16): {diagnostics:?}"
        );
    }
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_head_over_the_size_limit_is_refused_and_others_are_still_served() {
    let world = World::new(None).await;
    let gw = Gateway::start(|addr| {
        let mut s = world.settings(addr);
        s.http.max_header_bytes = 16 * 1024;
        s
    })
    .await;
    let url = format!("{}/metadata", gw.fhir);
    let small = "a".repeat(2 * 1024);
    let large = "a".repeat(40 * 1024);
    for (version, client) in [("HTTP/1.1", Client::new()), ("HTTP/2", Client::http2())] {
        let r = client
            .send("GET", &url, &[("x-padding", &small)], Vec::new())
            .await
            .unwrap_or_else(|e| panic!("{version}: a 2 KiB header is fine: {e}"));
        assert_eq!(r.status, 200, "{version}: a 2 KiB header is fine");

        let r = client
            .send("GET", &url, &[("x-padding", &large)], Vec::new())
            .await;
        // hyper answers 431 (HTTP/1.1) or resets the stream or connection: either is a refusal.
        if let Ok(r) = &r {
            assert_eq!(
                r.status, 431,
                "{version}: a 40 KiB header is over the 16 KiB limit: {}",
                r.text
            );
        }

        let r = metadata(&Client::new(), &gw)
            .await
            .expect("the gateway still answers");
        assert_eq!(r.status, 200, "{version}: others are still served");
    }
    gw.stop().await;
}

/// How a slow connection ended, measured from when it opened.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Ended {
    /// The gateway closed (or reset) the connection without an answer.
    Closed(Duration),
    /// The gateway answered with this status.
    Answered(u16, Duration),
    /// Still open when the test stopped waiting.
    StillOpen,
}

/// Open a connection, send `head` at once, then `trickle` one byte every `every`; then keep the
/// connection open, silent. Report how the gateway ends it, waiting at most `give_up`.
async fn slow_client(
    addr: SocketAddr,
    head: Vec<u8>,
    trickle: Vec<u8>,
    every: Duration,
    give_up: Duration,
) -> Ended {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let opened = Instant::now();
    let (mut rd, mut wr) = stream.into_split();
    let writer = tokio::spawn(async move {
        if wr.write_all(&head).await.is_err() {
            return;
        }
        for b in trickle {
            if wr.write_all(&[b]).await.is_err() {
                return;
            }
            tokio::time::sleep(every).await;
        }
        // Hold the connection open without sending more.
        std::future::pending::<()>().await;
    });
    let until = tokio::time::Instant::now() + give_up;
    let ended = loop {
        let mut buf = [0u8; 64];
        match tokio::time::timeout_at(until, rd.read(&mut buf)).await {
            Err(_) => break Ended::StillOpen,
            Ok(Ok(0)) | Ok(Err(_)) => break Ended::Closed(opened.elapsed()),
            Ok(Ok(n)) => {
                if let Some(status) = status_of(&buf[..n]) {
                    break Ended::Answered(status, opened.elapsed());
                }
                // Not an HTTP/1 answer (an HTTP/2 SETTINGS frame, say): the connection is
                // still open.
            }
        }
    };
    writer.abort();
    ended
}

/// A gateway with a 1 s header timeout and a 1.5 s request timeout, warmed up (profiles
/// compiled, connections open) so the timed requests measure only waiting on others.
async fn gateway_with_short_timeouts(world: &World) -> Gateway {
    let gw = Gateway::start(|addr| {
        let mut s = world.settings(addr);
        s.http.header_timeout_ms = 1_000;
        s.http.request_timeout_ms = 1_500;
        s
    })
    .await;
    let warm = world
        .client
        .process_message(&gw.fhir, &new_id(), &new_id(), fresh_referral())
        .await
        .expect("the gateway answers");
    assert_eq!(warm.status, 200, "{}", warm.body);
    gw
}

const TRICKLE: Duration = Duration::from_millis(200);
const GIVE_UP: Duration = Duration::from_secs(15);
/// The header timeout (1 s) and 1.5 s for scheduling.
const HEAD_BOUND: Duration = Duration::from_millis(2_500);
/// The request timeout (1.5 s) and 1.5 s for scheduling.
const BODY_BOUND: Duration = Duration::from_millis(3_000);

/// For `how_long`, a normal client's GET /fhir/metadata and POST of a referral, again and
/// again: each must be answered (200) within 1 s. Returns what went wrong.
async fn a_normal_client_meanwhile(world: &World, gw: &Gateway, how_long: Duration) -> Vec<String> {
    let c = &world.client;
    let started = Instant::now();
    let mut failures = Vec::new();
    while started.elapsed() < how_long {
        let t = Instant::now();
        match metadata(c, gw).await {
            Ok(r) if r.status == 200 => {}
            other => failures.push(format!("GET /fhir/metadata: {other:?}")),
        }
        if t.elapsed() > Duration::from_secs(1) {
            failures.push(format!("GET /fhir/metadata took {:?}", t.elapsed()));
        }
        let t = Instant::now();
        match c
            .process_message(&gw.fhir, &new_id(), &new_id(), fresh_referral())
            .await
        {
            Ok(r) if r.status == 200 => {}
            other => failures.push(format!("POST referral: {other:?}")),
        }
        if t.elapsed() > Duration::from_secs(1) {
            failures.push(format!("POST referral took {:?}", t.elapsed()));
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    failures
}

/// Whether a slow connection ended as it should (closed, or answered 408) within `bound`.
fn check_ended(what: &str, ended: Ended, bound: Duration, failures: &mut Vec<String>) {
    println!("{what}: {ended:?}");
    match ended {
        Ended::Closed(t) | Ended::Answered(408, t) if t <= bound => {}
        other => failures.push(format!(
            "{what}: should be closed (or answered 408) within {bound:?} of opening, was \
             {other:?}"
        )),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slowloris_head_and_a_trickled_body_are_cut_off_while_a_normal_client_is_served() {
    let world = World::new(None).await;
    let gw = gateway_with_short_timeouts(&world).await;
    let addr = addr_of(&gw);
    // A head that would take far longer than the header timeout to finish, one byte at a time.
    let mut slow_head =
        format!("GET /fhir/metadata HTTP/1.1\r\nHost: {addr}\r\nX-Slow: ").into_bytes();
    slow_head.extend([b'a'; 200]);
    // A complete head announcing a referral, then its body at 5 bytes a second (the whole
    // body would take minutes).
    let body = fresh_referral();
    let body_head = format!(
        "POST /fhir/$process-message HTTP/1.1\r\nHost: {addr}\r\n\
         Content-Type: application/fhir+json\r\nX-Request-Id: {}\r\nX-Correlation-Id: {}\r\n\
         Content-Length: {}\r\n\r\n",
        new_id(),
        new_id(),
        body.len()
    )
    .into_bytes();
    let slowloris = tokio::spawn(slow_client(addr, Vec::new(), slow_head, TRICKLE, GIVE_UP));
    let slow_body = tokio::spawn(slow_client(addr, body_head, body, TRICKLE, GIVE_UP));

    let mut failures = a_normal_client_meanwhile(&world, &gw, Duration::from_millis(2_500)).await;
    let head = slowloris.await.expect("slowloris task");
    check_ended(
        "an HTTP/1.1 head sent a byte every 200 ms",
        head,
        HEAD_BOUND,
        &mut failures,
    );
    let body = slow_body.await.expect("slow body task");
    check_ended(
        "a body sent a byte every 200 ms",
        body,
        BODY_BOUND,
        &mut failures,
    );
    assert!(failures.is_empty(), "{failures:#?}");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_connection_and_a_trickled_http2_preface_are_closed_after_the_header_timeout() {
    let world = World::new(None).await;
    let gw = gateway_with_short_timeouts(&world).await;
    let addr = addr_of(&gw);
    // Connected, and never a byte: no request head arrives within the header timeout either.
    let silent = tokio::spawn(slow_client(addr, Vec::new(), Vec::new(), TRICKLE, GIVE_UP));
    // The HTTP/2 connection preface (24 bytes), a byte every 200 ms: 4.8 s before the first
    // frame could even begin.
    let preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    let slow_h2 = tokio::spawn(slow_client(addr, Vec::new(), preface, TRICKLE, GIVE_UP));

    let mut failures = a_normal_client_meanwhile(&world, &gw, Duration::from_millis(2_500)).await;
    let ended = silent.await.expect("silent task");
    check_ended(
        "a connection that sends nothing",
        ended,
        HEAD_BOUND,
        &mut failures,
    );
    let ended = slow_h2.await.expect("slow preface task");
    check_ended(
        "the HTTP/2 preface sent a byte every 200 ms",
        ended,
        HEAD_BOUND,
        &mut failures,
    );
    assert!(failures.is_empty(), "{failures:#?}");
    gw.stop().await;
}

/// A GET over a fresh connection from the loopback address `local`, as another client would.
async fn get_from(local: Ipv4Addr, addr: SocketAddr, path: &str) -> std::io::Result<u16> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(IpAddr::V4(local), 0))?;
    let mut stream = socket.connect(addr).await?;
    stream
        .write_all(
            format!(
                "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: application/fhir+json\r\n\
                 Connection: close\r\n\r\n"
            )
            .as_bytes(),
        )
        .await?;
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut response))
        .await
        .map_err(|_| std::io::Error::other("no answer within 5 s"))??;
    status_of(&response).ok_or_else(|| std::io::Error::other("not an HTTP/1.1 response"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_over_its_rate_gets_429_with_retry_after_and_is_served_again_after_waiting() {
    let world = World::new(None).await;
    let gw = Gateway::start(|addr| {
        let mut s = world.settings(addr);
        s.http.rate_limit_per_s = 5;
        s.http.rate_limit_burst = 5;
        s
    })
    .await;
    let c = &world.client;
    // Let the readiness polls' tokens come back: 5 a second fills the bucket of 5 in 1 s.
    tokio::time::sleep(Duration::from_millis(1_200)).await;

    let started = Instant::now();
    let mut served = 0;
    let mut throttled = Vec::new();
    for _ in 0..20 {
        let r = metadata(c, &gw).await.expect("the gateway answers");
        match r.status.as_u16() {
            200 => served += 1,
            429 => throttled.push(r),
            other => panic!("only 200 or 429, got {other}: {}", r.text),
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    assert!(
        served >= 5,
        "the whole burst (5) is served at once: {served}"
    );
    assert!(
        !throttled.is_empty(),
        "20 at once from one client: some are throttled"
    );
    let most = 5 + (elapsed * 5.0).ceil() as usize + 1;
    assert!(
        served <= most,
        "{served} served in {elapsed:.2}s: no more than the burst and the rate allow ({most})"
    );
    let r = &throttled[0];
    assert_eq!(r.body["resourceType"], "OperationOutcome", "{}", r.text);
    assert_eq!(
        r.outcome_codes(),
        ("throttled".to_owned(), "REC_TOO_MANY_REQUESTS".to_owned())
    );
    let retry_after: u64 = r
        .header("retry-after")
        .expect("429 carries Retry-After")
        .trim()
        .parse()
        .expect("Retry-After in whole seconds");
    assert!(
        (1..=5).contains(&retry_after),
        "a token comes back every 200 ms: Retry-After {retry_after}"
    );

    // Another client (another address, on plain HTTP) is not held back by this one.
    let other = get_from(Ipv4Addr::new(127, 0, 0, 2), addr_of(&gw), "/fhir/metadata")
        .await
        .expect("the other client is answered");
    assert_eq!(other, 200, "another client has its own allowance");

    // Honouring Retry-After is enough to be served again.
    tokio::time::sleep(Duration::from_secs(retry_after)).await;
    let again = metadata(c, &gw).await.expect("the gateway answers");
    assert_eq!(
        again.status, 200,
        "served again after Retry-After: {}",
        again.text
    );
    gw.stop().await;
}
