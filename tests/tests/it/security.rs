//! Mutual TLS identities, least privilege and the audit trail, over real TLS sockets with
//! certificates made by rcgen for each run (nothing is checked in).
//!
//! | case | expected |
//! |---|---|
//! | no client certificate | the TLS handshake fails |
//! | a certificate from a CA Signpost does not trust | the TLS handshake fails |
//! | a trusted certificate the directory does not list | 401 `REC_UNAUTHORIZED` |
//! | practice A's GP system reads practice B's referral | 403 `REC_FORBIDDEN`, audited |
//! | a GP system sends a referral as a practice it does not act for | 403, audited |
//! | scheme X reads scheme Y's referral | 403, audited |
//! | scheme X updates scheme Y's referral | 403, audited |
//! | a scheme makes a requester-only status change | 403, audited |
//! | a GP system or a scheme calls the admin API | 403, audited |
//! | a non-operator reads the audit trail | 403 |
//!
//! and, besides: the loop over mutual TLS (and amqps to RabbitMQ) end to end, searches that show each caller only its
//! own referrals, and the server certificate reloaded without a restart.

use std::path::{Path, PathBuf};
use std::time::Duration;

use http::Method;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};
use serde_json::{json, Value};
use signpost_bus::http::{HttpClient, TlsFiles};
use signpost_gateway::config::Tls;
use signpost_tests::env::{read_fixture, TempDir};
use signpost_tests::messages;

use crate::assert_eventually;
use crate::helpers::{bind, new_id, Gateway, World};
use signpost_tests::standin::{StandinGp, StandinScheme};

const ROLES: &str = "https://signpost.example.org/fhir/CodeSystem/client-role";
const CERT_EXT: &str = "https://signpost.example.org/fhir/StructureDefinition/client-certificate";
const ACTS_FOR: &str = "https://signpost.example.org/fhir/StructureDefinition/acts-for";
const ODS: &str = "https://fhir.nhs.uk/Id/ods-organization-code";

/// A certificate authority that signs leaf certificates into a directory.
struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        Ca {
            issuer: CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap(),
        }
    }

    fn write(&self, dir: &Path, name: &str) -> PathBuf {
        let p = dir.join(format!("{name}.pem"));
        std::fs::write(&p, self.issuer.pem()).unwrap();
        p
    }

    /// Sign a leaf for `san`; writes `<name>.pem` and `<name>.key`; returns the DER.
    fn leaf(&self, dir: &Path, name: &str, san: &str) -> Vec<u8> {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec![san.to_owned()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, san);
        params.use_authority_key_identifier_extension = true;
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        std::fs::write(dir.join(format!("{name}.pem")), cert.pem()).unwrap();
        std::fs::write(dir.join(format!("{name}.key")), key.serialize_pem()).unwrap();
        cert.der().to_vec()
    }
}

fn sha256_hex(der: &[u8]) -> String {
    signpost_gateway::auth::fingerprint(der)
}

/// The clients of these tests, by the name of their directory Device.
const GP_A: &str = "gp-system-riverside"; // acts for A81001
const GP_B: &str = "gp-system-hillview"; // acts for A81002
const SCHEME: &str = "scheme-standin-client"; // the stand-in scheme's service
const SCHEME_X: &str = "scheme-elsewhere-client"; // another scheme's service
const OPERATOR: &str = "operator-console";

/// A gateway on mutual TLS, with a directory that knows the clients above.
struct Secure {
    world: World,
    gw: Gateway,
    pki: TempDir,
    base: String,
    /// In the full run: a scheme and a GP system that take deliveries over mutual TLS.
    tls_standins: Option<(StandinScheme, StandinGp)>,
}

fn device(id: &str, role: &str, der: &[u8], acts_for: Vec<Value>) -> Value {
    let mut extension = vec![json!({"url": CERT_EXT, "valueString": sha256_hex(der)})];
    extension.extend(acts_for);
    json!({"fullUrl": format!("https://signpost.example.org/fhir/Device/{id}"), "resource": {
        "resourceType": "Device", "id": id, "extension": extension,
        "type": {"coding": [{"system": ROLES, "code": role}]},
        "deviceName": [{"name": id, "type": "user-friendly-name"}],
    }})
}

impl Secure {
    async fn start() -> Secure {
        Self::start_with(false).await
    }

    /// With `full`, every hop is mutual TLS: the gateway and adapters also reach RabbitMQ over
    /// amqps with a client certificate (the listener the test script configures), and the
    /// adapters deliver to a scheme and a GP system that require Signpost's client certificate.
    async fn start_with(full: bool) -> Secure {
        let world = World::new(None).await;
        let pki = TempDir::new("signpost-mtls");
        let dir = pki.path();
        let ca = Ca::new("Signpost test client and server CA");
        ca.write(dir, "ca");
        ca.leaf(dir, "server", "localhost");
        let ders: Vec<(&str, Vec<u8>)> = [
            GP_A,
            GP_B,
            SCHEME,
            SCHEME_X,
            OPERATOR,
            "unregistered",
            "signpost-adapters",
        ]
        .iter()
        .map(|n| (*n, ca.leaf(dir, n, &format!("{n}.test"))))
        .collect();
        let der = |n: &str| ders.iter().find(|(k, _)| *k == n).unwrap().1.clone();
        let stranger = Ca::new("Some other CA");
        stranger.leaf(dir, "stranger", "stranger.test");

        let path = world.dir.path().join("directory.json");
        let mut d: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        let entries = d["entry"].as_array_mut().unwrap();
        entries.push(device(
            GP_A,
            "gp-system",
            &der(GP_A),
            vec![json!({"url": ACTS_FOR, "valueIdentifier": {"system": ODS, "value": "A81001"}})],
        ));
        entries.push(device(
            GP_B,
            "gp-system",
            &der(GP_B),
            vec![json!({"url": ACTS_FOR, "valueIdentifier": {"system": ODS, "value": "A81002"}})],
        ));
        entries.push(device(SCHEME, "scheme", &der(SCHEME), vec![json!({"url": ACTS_FOR, "valueReference": {"reference": "HealthcareService/scheme-standin-linkworkers"}})]));
        entries.push(device(SCHEME_X, "scheme", &der(SCHEME_X), vec![json!({"url": ACTS_FOR, "valueReference": {"reference": "HealthcareService/scheme-elsewhere"}})]));
        entries.push(device(OPERATOR, "operator", &der(OPERATOR), vec![]));
        // The full run's endpoints: TLS, requiring a client certificate from the test CA.
        let tls_standins = if full {
            let endpoint_tls = Tls {
                cert: dir.join("server.pem"),
                key: dir.join("server.key"),
                client_ca: dir.join("ca.pem"),
                reload_interval_ms: 10_000,
            };
            let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(
                signpost_gateway::tls::load(&endpoint_tls).unwrap(),
            ));
            let scheme = StandinScheme::start_with(
                bind().await,
                Some(acceptor.clone()),
                None,
                Duration::from_millis(50),
            )
            .await;
            let gp = StandinGp::start_with(bind().await, Some(acceptor)).await;
            for e in d["entry"].as_array_mut().unwrap() {
                let r = &mut e["resource"];
                match r["id"].as_str() {
                    Some("scheme-standin") => r["address"] = json!(scheme.base_url),
                    Some("gp-standin") => r["address"] = json!(gp.base_url),
                    _ => {}
                }
            }
            Some((scheme, gp))
        } else {
            None
        };
        std::fs::write(&path, d.to_string()).unwrap();

        let listener = bind().await;
        let port = listener.local_addr().unwrap().port();
        let tls = Tls {
            cert: dir.join("server.pem"),
            key: dir.join("server.key"),
            client_ca: dir.join("ca.pem"),
            reload_interval_ms: 200,
        };
        let gw = Gateway::start_on_tls(listener, |addr| {
            let mut s = world.settings(addr);
            s.plain_http = false;
            s.tls = Some(tls);
            if full {
                s.amqp_url = signpost_gateway::config::Secret::new(world.vhost.amqps_url());
                s.delivery.ca_file = Some(dir.join("ca.pem"));
                s.delivery.client_cert = Some(dir.join("signpost-adapters.pem"));
                s.delivery.client_key = Some(dir.join("signpost-adapters.key"));
            }
            s
        })
        .await;
        let s = Secure {
            world,
            gw,
            pki,
            base: format!("https://localhost:{port}"),
            tls_standins,
        };
        let operator = s.client_with(Some(OPERATOR), "ca");
        let ready = format!("{}/readyz", s.base);
        assert_eventually!(30, "the gateway is ready over mutual TLS", {
            matches!(operator.send(Method::GET, &ready, &[], Vec::new(), 1 << 16).await, Ok(a) if a.status == 200)
        });
        s
    }

    /// An HTTPS client presenting `who`'s certificate (or none), trusting `ca`.
    fn client_with(&self, who: Option<&str>, ca: &str) -> HttpClient {
        let dir = self.pki.path();
        HttpClient::with_tls(
            Duration::from_secs(10),
            &TlsFiles {
                ca: Some(dir.join(format!("{ca}.pem"))),
                client_cert: who.map(|w| dir.join(format!("{w}.pem"))),
                client_key: who.map(|w| dir.join(format!("{w}.key"))),
            },
        )
        .unwrap()
    }

    async fn call(
        &self,
        who: &str,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> (u16, Value) {
        let client = self.client_with(Some(who), "ca");
        let (rid, cid) = (new_id(), new_id());
        let mut headers = vec![
            ("accept", "application/fhir+json".to_owned()),
            ("x-request-id", rid),
            ("x-correlation-id", cid),
        ];
        if body.is_some() {
            headers.push(("content-type", "application/fhir+json".to_owned()));
        }
        let bytes = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
        let answer = client
            .send(
                method,
                &format!("{}{path}", self.base),
                &headers,
                bytes,
                1 << 22,
            )
            .await
            .unwrap_or_else(|e| panic!("{who} {path}: {e}"));
        let body = serde_json::from_slice(&answer.body).unwrap_or(Value::Null);
        (answer.status.as_u16(), body)
    }

    /// A referral made by `gp` from a fixture; returns its id.
    async fn referral(&self, gp: &str, fixture: &str) -> String {
        let mut m: Value = serde_json::from_slice(&read_fixture(fixture)).unwrap();
        m["id"] = json!(new_id());
        let (status, body) = self
            .call(gp, Method::POST, "/fhir/$process-message", Some(&m))
            .await;
        assert_eq!(status, 200, "{body}");
        messages::referral_id(&body).expect("the referral id")
    }

    fn scheme(&self) -> &StandinScheme {
        self.tls_standins
            .as_ref()
            .map_or(&self.world.scheme, |(s, _)| s)
    }

    fn gp(&self) -> &StandinGp {
        self.tls_standins
            .as_ref()
            .map_or(&self.world.gp, |(_, g)| g)
    }

    /// The BaRS message the stand-in scheme received for `referral`.
    async fn delivered(&self, referral: &str) -> Value {
        assert_eventually!(30, "the scheme receives the referral", {
            self.scheme()
                .accepted()
                .iter()
                .any(|m| messages::referral_id(&m.body).as_deref() == Some(referral))
        });
        self.scheme()
            .accepted()
            .into_iter()
            .find(|m| messages::referral_id(&m.body).as_deref() == Some(referral))
            .unwrap()
            .body
    }

    /// The operator's view of the audit trail for a search.
    async fn audit(&self, query: &str) -> Vec<Value> {
        let (status, body) = self
            .call(
                OPERATOR,
                Method::GET,
                &format!("/fhir/AuditEvent?{query}"),
                None,
            )
            .await;
        assert_eq!(status, 200, "{body}");
        body["entry"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| e["resource"].clone())
            .collect()
    }

    /// Wait for an audited refusal of `agent` (about `referral`, when given).
    async fn assert_refusal_audited(&self, agent: &str, referral: Option<&str>) {
        let mut query = format!("agent={agent}");
        if let Some(r) = referral {
            query.push_str(&format!("&entity=ServiceRequest/{r}"));
        }
        assert_eventually!(10, format!("a refusal of {agent} in the audit trail"), {
            self.audit(&query).await.iter().any(|e| {
                e["outcome"] == "4"
                    && e["outcomeDesc"]
                        .as_str()
                        .is_some_and(|d| d.contains("REC_FORBIDDEN") && d.contains("403"))
            })
        });
    }
}

fn assert_forbidden(status: u16, body: &Value) {
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["resourceType"], "OperationOutcome");
    assert_eq!(body["issue"][0]["code"], "forbidden");
    assert_eq!(
        body["issue"][0]["details"]["coding"][0]["code"],
        "REC_FORBIDDEN"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_without_a_certificate_is_refused_at_the_handshake() {
    let s = Secure::start().await;
    let r = s
        .client_with(None, "ca")
        .send(
            Method::GET,
            &format!("{}/fhir/metadata", s.base),
            &[],
            Vec::new(),
            1 << 16,
        )
        .await;
    assert!(
        r.is_err(),
        "answered without a client certificate: {:?}",
        r.map(|a| a.status)
    );
    s.gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_from_an_unknown_ca_is_refused_at_the_handshake() {
    let s = Secure::start().await;
    let r = s
        .client_with(Some("stranger"), "ca")
        .send(
            Method::GET,
            &format!("{}/fhir/metadata", s.base),
            &[],
            Vec::new(),
            1 << 16,
        )
        .await;
    assert!(r.is_err(), "answered a stranger: {:?}", r.map(|a| a.status));
    s.gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trusted_certificate_the_directory_does_not_list_gets_401() {
    let s = Secure::start().await;
    let (status, body) = s
        .call("unregistered", Method::GET, "/fhir/HealthcareService", None)
        .await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(
        body["issue"][0]["details"]["coding"][0]["code"],
        "REC_UNAUTHORIZED"
    );
    s.gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn practice_a_cannot_read_practice_bs_referral() {
    let s = Secure::start().await;
    let theirs = s
        .referral(GP_B, "gp-system/referral-new-hillview.json")
        .await;
    for path in [
        format!("/fhir/ServiceRequest/{theirs}"),
        format!("/fhir/ServiceRequest/{theirs}/$timeline"),
    ] {
        let (status, body) = s.call(GP_A, Method::GET, &path, None).await;
        assert_forbidden(status, &body);
    }
    let (status, _) = s
        .call(
            GP_B,
            Method::GET,
            &format!("/fhir/ServiceRequest/{theirs}"),
            None,
        )
        .await;
    assert_eq!(status, 200, "the practice's own GP system reads it");
    s.assert_refusal_audited(GP_A, Some(&theirs)).await;
    s.gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gp_system_cannot_send_a_referral_as_a_practice_it_does_not_act_for() {
    let s = Secure::start().await;
    let mut m: Value =
        serde_json::from_slice(&read_fixture("gp-system/referral-new-hillview.json")).unwrap();
    m["id"] = json!(new_id());
    let (status, body) = s
        .call(GP_A, Method::POST, "/fhir/$process-message", Some(&m))
        .await;
    assert_forbidden(status, &body);
    assert!(
        s.world.scheme.accepted().is_empty(),
        "nothing went to the scheme"
    );
    s.assert_refusal_audited(GP_A, None).await;
    s.gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheme_x_cannot_read_scheme_ys_referral() {
    let s = Secure::start().await;
    let referral = s.referral(GP_A, "gp-system/referral-new.json").await;
    let (status, body) = s
        .call(
            SCHEME_X,
            Method::GET,
            &format!("/fhir/Task?focus=ServiceRequest/{referral}"),
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        body["entry"].as_array().map_or(0, Vec::len),
        0,
        "the search shows nothing"
    );
    let (status, body) = s
        .call(
            SCHEME_X,
            Method::GET,
            &format!("/fhir/ServiceRequest/{referral}"),
            None,
        )
        .await;
    assert_forbidden(status, &body);
    let (status, _) = s
        .call(
            SCHEME,
            Method::GET,
            &format!("/fhir/ServiceRequest/{referral}"),
            None,
        )
        .await;
    assert_eq!(status, 200, "the scheme it was routed to reads it");
    s.assert_refusal_audited(SCHEME_X, Some(&referral)).await;
    s.gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheme_x_cannot_update_scheme_ys_referral() {
    let s = Secure::start().await;
    let referral = s.referral(GP_A, "gp-system/referral-new.json").await;
    let message = s.delivered(&referral).await;
    let accepted = messages::scheme_response(&message, "accepted", None, None);
    let (status, body) = s
        .call(
            SCHEME_X,
            Method::POST,
            "/fhir/$process-message",
            Some(&accepted),
        )
        .await;
    assert_forbidden(status, &body);
    let (_, task) = s
        .call(
            GP_A,
            Method::GET,
            &format!("/fhir/Task?focus=ServiceRequest/{referral}"),
            None,
        )
        .await;
    assert_eq!(
        task["entry"][0]["resource"]["status"], "requested",
        "unchanged"
    );
    s.assert_refusal_audited(SCHEME_X, Some(&referral)).await;
    s.gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheme_cannot_make_a_requester_only_status_change() {
    let s = Secure::start().await;
    let referral = s.referral(GP_A, "gp-system/referral-new.json").await;
    let message = s.delivered(&referral).await;
    let accepted = messages::scheme_response(&message, "accepted", None, None);
    let (status, body) = s
        .call(
            SCHEME,
            Method::POST,
            "/fhir/$process-message",
            Some(&accepted),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    // Back to `requested` is the requester's move, not the scheme's (standards.md §6).
    let wrong = messages::scheme_response(&message, "requested", None, None);
    let (status, body) = s
        .call(SCHEME, Method::POST, "/fhir/$process-message", Some(&wrong))
        .await;
    assert_forbidden(status, &body);
    s.assert_refusal_audited(SCHEME, Some(&referral)).await;
    s.gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_an_operator_may_call_the_admin_api() {
    let s = Secure::start().await;
    for who in [GP_A, SCHEME] {
        let (status, body) = s.call(who, Method::GET, "/admin/parked", None).await;
        assert_forbidden(status, &body);
        s.assert_refusal_audited(who, None).await;
    }
    let (status, body) = s.call(OPERATOR, Method::GET, "/admin/parked", None).await;
    assert_eq!(status, 200, "{body}");
    s.gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_an_operator_may_read_the_audit_trail_which_records_every_request() {
    let s = Secure::start().await;
    let referral = s.referral(GP_A, "gp-system/referral-new.json").await;
    for who in [GP_A, SCHEME] {
        let (status, body) = s.call(who, Method::GET, "/fhir/AuditEvent", None).await;
        assert_forbidden(status, &body);
    }
    let today = time::OffsetDateTime::now_utc().date();
    assert_eventually!(10, "the referral's request is in the audit trail", {
        s.audit(&format!(
            "entity=ServiceRequest/{referral}&date=ge{today}&agent={GP_A}"
        ))
        .await
        .iter()
        .any(|e| {
            e["resourceType"] == "AuditEvent"
                && e["action"] == "E"
                && e["outcome"] == "0"
                && e["subtype"][0]["code"] == "process-message"
        })
    });
    assert_eventually!(30, "the delivery to the scheme is in the audit trail", {
        s.audit(&format!("entity={referral}"))
            .await
            .iter()
            .any(|e| e["type"]["code"] == "delivery")
    });
    let tomorrow = today.next_day().unwrap();
    assert!(
        s.audit(&format!("date=ge{tomorrow}")).await.is_empty(),
        "the date search bounds the results"
    );
    let (status, _) = s
        .call(OPERATOR, Method::GET, "/fhir/AuditEvent?colour=red", None)
        .await;
    assert_eq!(status, 400, "an unknown search parameter is refused");
    s.gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_loop_runs_over_mutual_tls_at_every_hop_from_referral_to_filed_letter() {
    let s = Secure::start_with(true).await;
    let referral = s.referral(GP_A, "gp-system/referral-new.json").await;
    let message = s.delivered(&referral).await;
    for (status, letter) in [
        ("accepted", None),
        ("in-progress", None),
        ("completed", Some(messages::outcome_letter("9990000018"))),
    ] {
        let m = messages::scheme_response(&message, status, None, letter);
        let (code, body) = s
            .call(SCHEME, Method::POST, "/fhir/$process-message", Some(&m))
            .await;
        assert_eq!(code, 200, "{status}: {body}");
    }
    assert_eventually!(30, "the letter is filed", s.gp().filed().len() == 1);
    let delivery = &s.scheme().accepted()[0];
    assert!(
        s.scheme().base_url.starts_with("https://") && s.gp().base_url.starts_with("https://"),
        "the scheme and the GP system were reached over TLS"
    );
    assert_eq!(delivery.correlation_id.len(), 36);
    let (status, body) = s
        .call(
            GP_A,
            Method::GET,
            &format!("/fhir/ServiceRequest/{referral}/$timeline"),
            None,
        )
        .await;
    assert_eq!(status, 200);
    let steps: Vec<&str> = body["entry"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["flag"]["coding"][0]["code"].as_str())
        .collect();
    assert!(
        steps.contains(&"letter-filed") || steps.contains(&"letter-queued"),
        "{steps:?}"
    );
    let (status, body) = s
        .call(
            GP_B,
            Method::GET,
            "/fhir/ServiceRequest?patient:identifier=https://fhir.nhs.uk/Id/nhs-number|9990000018",
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        body["entry"].as_array().map_or(0, Vec::len),
        0,
        "another practice's GP system finds none of this patient's referrals here"
    );
    s.gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_server_certificate_is_used_without_a_restart() {
    let s = Secure::start().await;
    let dir = s.pki.path();
    // A second CA; the clients trust only it. The gateway still shows the first CA's certificate.
    let next = Ca::new("Signpost next server CA");
    next.write(dir, "next-ca");
    let trusting_next = s.client_with(Some(GP_A), "next-ca");
    let url = format!("{}/fhir/metadata", s.base);
    assert!(trusting_next
        .send(Method::GET, &url, &[], Vec::new(), 1 << 20)
        .await
        .is_err());
    // Write the new certificate and key in place (key first: until both match, the old stays).
    let staging = TempDir::new("signpost-mtls-next");
    next.leaf(staging.path(), "server", "localhost");
    std::fs::copy(staging.path().join("server.key"), dir.join("server.key")).unwrap();
    std::fs::copy(staging.path().join("server.pem"), dir.join("server.pem")).unwrap();
    assert_eventually!(10, "the gateway presents the new certificate", {
        matches!(
            trusting_next.send(Method::GET, &url, &[], Vec::new(), 1 << 20).await,
            Ok(a) if a.status == 200
        )
    });
    s.gw.stop().await;
}
