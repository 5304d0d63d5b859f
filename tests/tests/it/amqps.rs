//! AMQP over TLS to RabbitMQ's TLS listener (127.0.0.1:5671, set up by `cargo xtask test`, which
//! requires a client certificate signed by the test CA), with Signpost's own connecting code
//! (`signpost_bus::amqp`): the right CA and client certificate get in; no client certificate,
//! a CA that did not sign the broker's certificate, or the wrong broker name, do not; and the
//! whole loop runs over amqps.

use std::process::Command;

use signpost_bus::amqp;
use signpost_gateway::config::Secret;
use signpost_tests::broker::Vhost;
use signpost_tests::env::TempDir;

use crate::assert_eventually;
use crate::helpers::{bind, post_fixture, referral_id, steps, Gateway, World};

/// `url` with the query parameters named in `drop` taken out and `add` appended.
fn edit_query(url: &str, drop: &[&str], add: &[(&str, &str)]) -> String {
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let mut pairs: Vec<String> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .filter(|p| !drop.contains(&p.split_once('=').map_or(*p, |(k, _)| k)))
        .map(str::to_owned)
        .collect();
    pairs.extend(add.iter().map(|(k, v)| format!("{k}={v}")));
    if pairs.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", pairs.join("&"))
    }
}

/// The broker's view of the connections to `vhost`: (ssl, peer certificate subject) per
/// connection.
fn broker_side(vhost: &str) -> Vec<(String, String)> {
    let out = Command::new("rabbitmqctl")
        .args([
            "-q",
            "list_connections",
            "vhost",
            "ssl",
            "peer_cert_subject",
            "--no-table-headers",
        ])
        .output()
        .expect("rabbitmqctl list_connections");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| {
            let mut cols = line.split('\t');
            (cols.next()? == vhost).then(|| {
                (
                    cols.next().unwrap_or("").to_owned(),
                    cols.next().unwrap_or("").to_owned(),
                )
            })
        })
        .collect()
}

async fn refused(url: &str) -> String {
    match amqp::connect(url, "signpost-it-amqps-refused").await {
        Ok(conn) => {
            amqp::close(&conn, "should not have connected").await;
            panic!("the connection was expected to fail");
        }
        Err(e) => {
            eprintln!("refused as expected: {e}");
            e.to_string()
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_test_ca_and_a_client_certificate_get_a_tls_connection_the_broker_sees_as_such() {
    let vhost = Vhost::create("signpost-it-amqps").expect("a vhost of our own");
    let conn = amqp::connect(&vhost.amqps_url(), "signpost-it-amqps")
        .await
        .expect("amqps with the test CA and client certificate");
    let channel = conn.create_channel().await.expect("a channel");
    channel
        .queue_declare(
            "amqps-check".into(),
            lapin::options::QueueDeclareOptions::default(),
            lapin::types::FieldTable::default(),
        )
        .await
        .expect("a queue declared over TLS");

    let seen = broker_side(&vhost.name);
    assert_eq!(seen.len(), 1, "one connection to our vhost: {seen:?}");
    assert_eq!(seen[0].0, "true", "the broker sees TLS: {seen:?}");
    assert!(
        seen[0].1.contains("signpost-test-client"),
        "the broker saw our client certificate: {seen:?}"
    );
    amqp::close_channel(&channel, "done").await;
    amqp::close(&conn, "done").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_broker_is_checked_against_an_ip_address_or_the_name_given_for_it() {
    let vhost = Vhost::create("signpost-it-amqps").expect("a vhost of our own");
    let url = vhost.amqps_url();
    // The test server certificate is for localhost and 127.0.0.1.
    let by_ip = url.replacen("@localhost:", "@127.0.0.1:", 1);
    assert_ne!(by_ip, url, "the test URL names localhost");
    let conn = amqp::connect(&by_ip, "signpost-it-amqps-ip")
        .await
        .expect("the certificate names 127.0.0.1");
    amqp::close(&conn, "done").await;
    let named = edit_query(&by_ip, &[], &[("server_name_indication", "localhost")]);
    let conn = amqp::connect(&named, "signpost-it-amqps-sni")
        .await
        .expect("the certificate names localhost");
    amqp::close(&conn, "done").await;

    let wrong = edit_query(
        &url,
        &[],
        &[("server_name_indication", "broker.elsewhere.example")],
    );
    let error = refused(&wrong).await;
    assert!(
        error.contains("certificate not valid for name"),
        "the client refuses a certificate for another name: {error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_client_certificate_the_broker_refuses() {
    let vhost = Vhost::create("signpost-it-amqps").expect("a vhost of our own");
    let url = edit_query(&vhost.amqps_url(), &["certfile", "keyfile"], &[]);
    assert!(url.contains("cacertfile=") && !url.contains("keyfile="));
    let error = refused(&url).await;
    // The broker ends the connection: with TLS 1.3 the client may read its certificate_required
    // alert, or, when it was already writing, only see the connection reset.
    assert!(
        error.starts_with("broker: ") && !error.contains("invalid peer certificate"),
        "the client accepted the broker, and the broker refused the connection: {error}"
    );
    assert!(
        !error.contains("guest:guest"),
        "no credentials in errors: {error}"
    );
    assert!(
        broker_side(&vhost.name).is_empty(),
        "no connection to our vhost"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_ca_that_did_not_sign_the_broker_certificate_the_client_refuses() {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    let vhost = Vhost::create("signpost-it-amqps").expect("a vhost of our own");
    let dir = TempDir::new("signpost-amqps-other-ca");
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(DnType::CommonName, "Some other CA");
    let other_ca = params.self_signed(&KeyPair::generate().unwrap()).unwrap();
    let other_ca_file = dir.path().join("other-ca.pem");
    std::fs::write(&other_ca_file, other_ca.pem()).unwrap();

    let url = edit_query(
        &vhost.amqps_url(),
        &["cacertfile"],
        &[("cacertfile", other_ca_file.to_str().unwrap())],
    );
    let error = refused(&url).await;
    assert!(
        error.contains("certificate") && error.contains("UnknownIssuer"),
        "the client refuses the broker's certificate: {error}"
    );
    assert!(
        !error.contains("guest:guest"),
        "no credentials in errors: {error}"
    );

    // Without cacertfile the public roots are used, which do not have the test CA either.
    let url = edit_query(&vhost.amqps_url(), &["cacertfile"], &[]);
    let error = refused(&url).await;
    assert!(error.contains("UnknownIssuer"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_client_key_is_named_and_nothing_connects() {
    let vhost = Vhost::create("signpost-it-amqps").expect("a vhost of our own");
    let url = edit_query(
        &vhost.amqps_url(),
        &["keyfile"],
        &[("keyfile", "/nonexistent/signpost/client.key")],
    );
    let error = refused(&url).await;
    assert!(
        error.contains("/nonexistent/signpost/client.key"),
        "{error}"
    );
    assert!(!error.contains("guest:guest"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_referral_goes_round_the_whole_loop_over_amqps() {
    // The scheme works the referral to completion against the gateway: bind first.
    let listener = bind().await;
    let fhir = format!("http://{}/fhir", listener.local_addr().unwrap());
    let world = World::new(Some(fhir)).await;
    let gw = Gateway::start_on(listener, |addr| {
        let mut s = world.settings(addr);
        s.amqp_url = Secret::new(world.vhost.amqps_url());
        s
    })
    .await;
    let c = &world.client;

    let (reply, _, _) = post_fixture(c, &gw.fhir, "gp-system/referral-new.json").await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let referral = referral_id(&reply.body);
    assert_eventually!(
        30,
        "the scheme receives the referral",
        world.scheme.accepted().len() == 1
    );
    assert_eventually!(
        30,
        "the GP system files the letter",
        world.gp.filed().len() == 1
    );
    assert_eventually!(
        10,
        "the filing is on the timeline",
        steps(c, &gw.fhir, &referral)
            .await
            .contains(&"letter-filed".to_owned())
    );
    let filed = world.gp.filed();
    assert_eq!(
        filed[0].body["subject"]["identifier"]["value"],
        "9990000018"
    );

    // Every broker connection of this gateway is TLS with the client certificate.
    let seen = broker_side(&world.vhost.name);
    assert!(!seen.is_empty(), "the gateway is connected");
    assert!(
        seen.iter()
            .all(|(ssl, subject)| ssl == "true" && subject.contains("signpost-test-client")),
        "{seen:?}"
    );
    gw.stop().await;
}
