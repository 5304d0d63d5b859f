//! MLLP over TLS (rustls on aws-lc-rs) with a CA and server certificate made by rcgen for each
//! run; nothing is checked in.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::PrivateKeyDer;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use signpost_adapter_hl7v2::ack::{self, AckCode};
use signpost_adapter_hl7v2::mllp::{self, SendError, ServeOptions, TlsAcceptor, TlsConnector};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};

use crate::helpers::{fixture, init_tracing, AT};

const WAIT: Duration = Duration::from_secs(5);

struct Pki {
    acceptor: TlsAcceptor,
    connector: TlsConnector,
}

/// A throwaway CA, a certificate for `localhost` signed by it, and configs that use them. The
/// provider is named explicitly, so the test does not depend on which rustls features other
/// workspace crates switch on.
fn pki() -> Pki {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "Signpost test CA");
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
    let server_key = KeyPair::generate().unwrap();
    let server_cert = CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .signed_by(&server_key, &*ca)
        .unwrap();
    let server = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![server_cert.der().clone()],
            PrivateKeyDer::Pkcs8(server_key.serialize_der().into()),
        )
        .unwrap();
    let mut roots = RootCertStore::empty();
    roots.add(ca.der().clone()).unwrap();
    let client = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    Pki {
        acceptor: TlsAcceptor::from(Arc::new(server)),
        connector: TlsConnector::from(Arc::new(client)),
    }
}

async fn spawn_tls_server(
    acceptor: TlsAcceptor,
    options: ServeOptions,
) -> (
    SocketAddr,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
) {
    init_tracing();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let handler = Arc::new(|text: String, _peer: SocketAddr| async move {
        let msg = signpost_adapter_hl7v2::message::Message::parse(&text).unwrap();
        ack::build(&msg, AckCode::Accept, &[], "ACK-TLS", AT)
    });
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(mllp::serve_tls(
        listener,
        acceptor,
        handler,
        options,
        async {
            let _ = stopped.await;
        },
    ));
    (addr, stop, task)
}

#[tokio::test]
async fn a_referral_sent_over_tls_gets_its_ack() {
    let pki = pki();
    let (addr, stop, task) = spawn_tls_server(pki.acceptor, ServeOptions::default()).await;
    let addr = addr.to_string();
    for _ in 0..2 {
        let reply = mllp::send_tls(
            &addr,
            "localhost",
            &pki.connector,
            &fixture("ref-i12-emis.hl7"),
            WAIT,
        )
        .await
        .unwrap();
        let ack = ack::parse(&reply).unwrap();
        assert_eq!(
            (ack.code, ack.acknowledged_control_id.as_str()),
            (AckCode::Accept, "EMIS-000123")
        );
    }
    drop(stop);
    tokio::time::timeout(WAIT, task).await.unwrap().unwrap();
}

#[tokio::test]
async fn the_wrong_name_or_no_tls_gets_no_ack() {
    let pki = pki();
    let (addr, _stop, _task) = spawn_tls_server(pki.acceptor, ServeOptions::default()).await;
    let addr = addr.to_string();
    let wrong = mllp::send_tls(&addr, "gp.example.org", &pki.connector, "MSH|^~\\&|x", WAIT).await;
    assert!(matches!(wrong, Err(SendError::Tls(_))), "{wrong:?}");
    let bad_name = mllp::send_tls(&addr, "not a name!", &pki.connector, "MSH|^~\\&|x", WAIT).await;
    assert!(matches!(bad_name, Err(SendError::Tls(_))), "{bad_name:?}");
    let plain = mllp::send(&addr, &fixture("ref-i12-emis.hl7"), WAIT).await;
    assert!(
        matches!(
            plain,
            Err(SendError::Closed | SendError::Frame(_) | SendError::Io(_))
        ),
        "{plain:?}"
    );
}

#[tokio::test]
async fn a_peer_that_never_starts_the_handshake_is_timed_out() {
    let pki = pki();
    let options = ServeOptions {
        frame_timeout: Duration::from_millis(300),
        ..ServeOptions::default()
    };
    let (addr, _stop, _task) = spawn_tls_server(pki.acceptor, options).await;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let mut out = Vec::new();
    let read = tokio::time::timeout(WAIT, stream.read_to_end(&mut out)).await;
    assert!(read.is_ok(), "the server closes the connection");
    assert!(out.is_empty());
}
