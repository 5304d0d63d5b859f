//! Outcome letters into the patient's notes by GP Connect Send Document over MESH, against NHS
//! England's MESH sandbox (PyPI `mesh-sandbox`, started on loopback by `tests/peers/mesh/sandbox.py`)
//! as the MESH server, and an independent GP system built on PyPI `mesh-client` and
//! `fhir.resources` (`tests/peers/mesh/gp_system.py`, `check_itk3.py`).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use serde_json::{json, Value};
use signpost_gateway::config::{Mesh, Secret};
use signpost_tests::client::Client;
use signpost_tests::env::{read_fixture, workspace, TempDir};
use signpost_tests::messages;

use crate::assert_eventually;
use crate::helpers::{bind, free_port, new_id, post_fixture, referral_id, steps, Gateway, World};

const SIGNPOST_MAILBOX: &str = "X26ABC001";
const GP_MAILBOX: &str = "A81001OT001";

fn python() -> String {
    match std::env::var("SIGNPOST_TEST_PYTHON") {
        Ok(p) if !p.is_empty() => p,
        _ => panic!(
            "SIGNPOST_TEST_PYTHON is not set: it names a Python with tests/requirements.txt \
             installed (mesh-sandbox, mesh-client, fhir.resources). Run `cargo xtask test`."
        ),
    }
}

fn peer(script: &str) -> PathBuf {
    workspace().join("tests/peers/mesh").join(script)
}

/// NHS England's MESH sandbox on a loopback port, stopped on drop.
struct Sandbox {
    child: Child,
    url: String,
    /// The GP system's TLS options for `gp_system.py`, when the sandbox serves HTTPS.
    gp_tls: Vec<String>,
}

impl Sandbox {
    fn spawn(port: u16, extra: &[String]) -> Child {
        let mut cmd = Command::new(python());
        cmd.arg(peer("sandbox.py"))
            .args(["--port", &port.to_string()])
            .args(extra)
            .stdin(Stdio::null());
        if std::env::var("TEST_LOG").is_err() {
            cmd.stdout(Stdio::null()).stderr(Stdio::null());
        }
        cmd.spawn().expect("start the MESH sandbox")
    }

    async fn start_on(port: u16) -> Sandbox {
        let sandbox = Sandbox {
            child: Self::spawn(port, &[]),
            url: format!("http://127.0.0.1:{port}"),
            gp_tls: Vec::new(),
        };
        let client = Client::new();
        let health = format!("{}/health", sandbox.url);
        assert_eventually!(60, "the MESH sandbox answers /health", {
            matches!(client.get(&health).await, Ok(r) if r.status == 200)
        });
        sandbox
    }

    async fn start() -> Sandbox {
        Self::start_on(free_port()).await
    }

    /// The sandbox over HTTPS, requiring client certificates signed by the test CA.
    async fn start_mutual_tls(pki: &Pki) -> Sandbox {
        let port = free_port();
        let path = |f: &str| pki.dir.path().join(f).display().to_string();
        let args = [
            "--tls-cert",
            &path("server.pem"),
            "--tls-key",
            &path("server.key"),
            "--tls-client-ca",
            &path("ca.pem"),
        ]
        .map(str::to_owned);
        let sandbox = Sandbox {
            child: Self::spawn(port, &args),
            url: format!("https://localhost:{port}"),
            gp_tls: [
                "--cert",
                &path("gp.pem"),
                "--key",
                &path("gp.key"),
                "--ca",
                &path("ca.pem"),
            ]
            .map(str::to_owned)
            .to_vec(),
        };
        let client = pki.client(Some("signpost")).expect("a TLS client");
        let health = format!("{}/health", sandbox.url);
        assert_eventually!(60, "the MESH sandbox answers /health over mutual TLS", {
            matches!(get(&client, &health).await, Ok(status) if status == 200)
        });
        sandbox
    }

    /// The GP practice reads its inbox: each message's `mex-*` headers and body file.
    fn gp_receive(&self, out: &Path) -> Vec<(Value, PathBuf)> {
        let run = Command::new(python())
            .arg(peer("gp_system.py"))
            .args(["--url", &self.url, "--mailbox", GP_MAILBOX])
            .args(&self.gp_tls)
            .args(["receive", "--out"])
            .arg(out)
            .output()
            .expect("run gp_system.py receive");
        assert!(
            run.status.success(),
            "gp_system.py receive: {}",
            String::from_utf8_lossy(&run.stderr)
        );
        String::from_utf8_lossy(&run.stdout)
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                let v: Value = serde_json::from_str(l).expect("a JSON line per message");
                let id = v["message_id"].as_str().expect("message_id").to_owned();
                let headers: Value = serde_json::from_slice(
                    &std::fs::read(out.join(format!("{id}.headers.json"))).expect("headers file"),
                )
                .expect("headers JSON");
                (headers, out.join(format!("{id}.body")))
            })
            .collect()
    }

    /// The GP practice acknowledges a received message with an ITK3 Response.
    fn gp_ack(&self, received: &Path, code: &str) {
        let run = Command::new(python())
            .arg(peer("gp_system.py"))
            .args(["--url", &self.url, "--mailbox", GP_MAILBOX])
            .args(&self.gp_tls)
            .arg("ack")
            .args(["--to", SIGNPOST_MAILBOX, "--code", code, "--in-reply-to"])
            .arg(received)
            .output()
            .expect("run gp_system.py ack");
        assert!(
            run.status.success(),
            "gp_system.py ack: {}",
            String::from_utf8_lossy(&run.stderr)
        );
    }

    /// MESH puts an error report about `linked` into Signpost's inbox (the sandbox's own
    /// testing endpoint).
    async fn error_report(&self, linked: &str, code: &str) {
        let r = Client::new()
            .post_json(
                &format!("{}/messageexchange/admin/report", self.url),
                &json!({
                    "mailbox_id": SIGNPOST_MAILBOX,
                    "code": code,
                    "description": "No mailbox matched",
                    "workflow_id": "GPFED_CONSULT_REPORT",
                    "linked_message_id": linked,
                    "status": "error",
                }),
            )
            .await
            .expect("the sandbox answers");
        assert!(
            r.status.is_success(),
            "admin/report: {} {}",
            r.status,
            r.text
        );
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A throwaway CA, a server certificate for `localhost`, and client certificates for Signpost
/// and the GP system, as PEM files in a temp dir; nothing is checked in.
struct Pki {
    dir: TempDir,
}

impl Pki {
    fn new() -> Pki {
        use rcgen::{
            BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair,
            KeyUsagePurpose,
        };
        let dir = TempDir::new("signpost-mesh-pki");
        let write = |name: &str, text: String| std::fs::write(dir.path().join(name), text).unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "Signpost test MESH CA");
        ca.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
        write("ca.pem", ca.pem());
        for (name, san) in [
            ("server", "localhost"),
            ("signpost", "signpost.test"),
            ("gp", "gp.test"),
        ] {
            let key = KeyPair::generate().unwrap();
            let mut params = CertificateParams::new(vec![san.to_owned()]).unwrap();
            params.distinguished_name.push(DnType::CommonName, san);
            // OpenSSL (the Python peer's TLS) wants the issuer's key id in every certificate.
            params.use_authority_key_identifier_extension = true;
            let cert = params.signed_by(&key, &*ca).unwrap();
            write(&format!("{name}.pem"), cert.pem());
            write(&format!("{name}.key"), key.serialize_pem());
        }
        Pki { dir }
    }

    fn files(&self, identity: Option<&str>) -> signpost_bus::http::TlsFiles {
        signpost_bus::http::TlsFiles {
            ca: Some(self.dir.path().join("ca.pem")),
            client_cert: identity.map(|i| self.dir.path().join(format!("{i}.pem"))),
            client_key: identity.map(|i| self.dir.path().join(format!("{i}.key"))),
        }
    }

    fn client(
        &self,
        identity: Option<&str>,
    ) -> Result<signpost_bus::http::HttpClient, signpost_bus::http::TlsError> {
        signpost_bus::http::HttpClient::with_tls(
            std::time::Duration::from_secs(5),
            &self.files(identity),
        )
    }
}

async fn get(client: &signpost_bus::http::HttpClient, url: &str) -> Result<u16, String> {
    client
        .send(http::Method::GET, url, &[], Vec::new(), 1 << 16)
        .await
        .map(|a| a.status.as_u16())
        .map_err(|e| e.to_string())
}

/// The test directory with the Riverside practice's GP system reached over MESH at the
/// practice's mailbox, with an optional retry policy.
fn mesh_directory(world: &World, max_attempts: Option<u32>) {
    let path = world.dir.path().join("directory.json");
    let mut d: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let mut endpoint = json!({
        "resourceType": "Endpoint",
        "id": "gp-mesh",
        "status": "active",
        "connectionType": {"system": "https://signpost.example.org/fhir/CodeSystem/endpoint-connection-type", "code": "mesh"},
        "name": "Riverside Medical Practice: GP Connect Send Document over MESH",
        "payloadType": [{"text": "Outcome letters"}],
        "address": format!("mesh:{GP_MAILBOX}"),
    });
    if let Some(n) = max_attempts {
        endpoint["extension"] = json!([{"url": "https://signpost.example.org/fhir/StructureDefinition/retry-policy",
            "extension": [{"url": "maxAttempts", "valuePositiveInt": n}]}]);
    }
    let entries = d["entry"].as_array_mut().unwrap();
    for e in entries.iter_mut() {
        if e["resource"]["id"] == "practice-riverside" {
            e["resource"]["endpoint"] = json!([{"reference": "Endpoint/gp-mesh"}]);
        }
    }
    entries.push(json!({"fullUrl": "https://signpost.example.org/fhir/Endpoint/gp-mesh", "resource": endpoint}));
    std::fs::write(&path, d.to_string()).unwrap();
}

fn mesh_settings(url: &str) -> Mesh {
    Mesh {
        url: url.to_owned(),
        mailbox: SIGNPOST_MAILBOX.to_owned(),
        password: Secret::new("signpost-password"),
        shared_key: Secret::new("TestKey"),
        ods: "X26".to_owned(),
        poll_interval_ms: 200,
        // Small chunks, so that every letter goes in several (the PDF alone is larger).
        chunk_bytes: 4096,
        ca_file: None,
        client_cert: None,
        client_key: None,
    }
}

/// A whole loop whose Riverside practice is reached over MESH at `mesh_url`: the stand-in scheme
/// works every referral to a letter. `tweak` adjusts the settings.
async fn mesh_loop(
    mesh_url: &str,
    max_attempts: Option<u32>,
    tweak: impl FnOnce(&mut signpost_gateway::config::Settings),
) -> (World, Gateway) {
    let listener = bind().await;
    let fhir = format!("http://{}/fhir", listener.local_addr().unwrap());
    let world = World::new(Some(fhir)).await;
    mesh_directory(&world, max_attempts);
    let gw = Gateway::start_on(listener, |addr| {
        let mut s = world.settings(addr);
        s.mesh = Some(mesh_settings(mesh_url));
        tweak(&mut s);
        s
    })
    .await;
    (world, gw)
}

async fn wait_for_step(c: &Client, fhir: &str, referral: &str, step: &str, secs: u64) {
    assert_eventually!(secs, format!("the timeline shows {step}"), {
        steps(c, fhir, referral).await.iter().any(|s| s == step)
    });
}

async fn timeline_detail(c: &Client, fhir: &str, referral: &str, step: &str) -> String {
    let r = c
        .get(&format!("{fhir}/ServiceRequest/{referral}/$timeline"))
        .await
        .unwrap();
    r.body["entry"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|e| e["flag"]["coding"][0]["code"] == step)
        .and_then(|e| e["item"]["display"].as_str())
        .unwrap_or("")
        .to_owned()
}

fn pdftotext(pdf: &Path) -> String {
    let out = Command::new("pdftotext")
        .args(["-layout"])
        .arg(pdf)
        .arg("-")
        .output()
        .expect("pdftotext (Debian poppler-utils; cargo xtask test installs it)");
    assert!(out.status.success(), "pdftotext failed");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_letter_reaches_the_gp_mailbox_over_mesh_and_both_acknowledgements_land_on_the_timeline()
{
    let sandbox = Sandbox::start().await;
    let (world, gw) = mesh_loop(&sandbox.url, None, |_| {}).await;
    let c = &world.client;

    let (reply, _, _) = post_fixture(c, &gw.fhir, "gp-system/referral-new.json").await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let referral = referral_id(&reply.body);
    wait_for_step(c, &gw.fhir, &referral, "letter-sent", 30).await;
    assert!(world.gp.filed().is_empty(), "nothing went the FHIR way");

    // The GP practice's mailbox has the letter, with the Send Document routing metadata.
    let inbox = TempDir::new("signpost-mesh-gp");
    let received = sandbox.gp_receive(inbox.path());
    assert_eq!(received.len(), 1, "exactly one message: {received:?}");
    let (headers, body) = &received[0];
    assert_eq!(headers["mex-workflowid"], "GPFED_CONSULT_REPORT");
    assert_eq!(headers["mex-from"], SIGNPOST_MAILBOX);
    assert_eq!(headers["mex-to"], GP_MAILBOX);
    assert_eq!(headers["mex-localid"], "X00SP1", "the scheme's ODS code");
    assert_eq!(
        headers["mex-subject"],
        "Social prescribing outcome report for Joan Example, NHS Number 9990000018, ODS Code X00SP1"
    );
    let sent_detail = timeline_detail(c, &gw.fhir, &referral, "letter-sent").await;
    let mesh_id = body.file_stem().unwrap().to_str().unwrap().to_owned();
    assert!(sent_detail.contains(&mesh_id), "{sent_detail}");

    // The ITK3 message loads in fhir.resources' STU3 models; the PDF inside reads right.
    let pdf = inbox.path().join("letter.pdf");
    let check = Command::new(python())
        .arg(peer("check_itk3.py"))
        .arg(body)
        .arg("--pdf-out")
        .arg(&pdf)
        .output()
        .expect("run check_itk3.py");
    assert!(
        check.status.success(),
        "fhir.resources STU3 refused the ITK3 message: {}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    let summary: Value = serde_json::from_slice(
        String::from_utf8_lossy(&check.stdout)
            .lines()
            .last()
            .unwrap_or("{}")
            .as_bytes(),
    )
    .expect("check_itk3.py prints a JSON summary");
    assert_eq!(summary["event"], "ITK007C", "{summary}");
    let text = pdftotext(&pdf);
    for wanted in [
        "Joan Example",
        "999 000 0018",
        "Stand-in social prescribing link worker service",
        "walking group",
    ] {
        assert!(text.contains(wanted), "the PDF shows {wanted:?}:\n{text}");
    }

    // The practice acknowledges: infrastructure, then business. Both land on the timeline.
    sandbox.gp_ack(body, "20013");
    wait_for_step(c, &gw.fhir, &referral, "letter-ack-infrastructure", 20).await;
    sandbox.gp_ack(body, "30001");
    wait_for_step(c, &gw.fhir, &referral, "letter-filed", 20).await;
    let filed = timeline_detail(c, &gw.fhir, &referral, "letter-filed").await;
    assert!(filed.contains("30001"), "{filed}");

    // A second letter for the same referral replaces the first.
    let message = world.scheme.accepted()[0].body.clone();
    let update = messages::scheme_response(
        &message,
        "completed",
        None,
        Some(messages::outcome_letter("9990000018")),
    );
    let r = c
        .process_message(
            &gw.fhir,
            &new_id(),
            &new_id(),
            update.to_string().into_bytes(),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eventually!(30, "the replacement reaches the GP mailbox", {
        steps(c, &gw.fhir, &referral)
            .await
            .iter()
            .filter(|s| *s == "letter-sent")
            .count()
            == 2
    });
    let second = sandbox.gp_receive(inbox.path());
    assert_eq!(second.len(), 1);
    let itk: Value = serde_json::from_slice(&std::fs::read(&second[0].1).unwrap()).unwrap();
    let composition = &itk["entry"][2]["resource"]["entry"][0]["resource"];
    assert_eq!(composition["resourceType"], "Composition");
    assert_eq!(composition["relatesTo"][0]["code"], "replaces");
    let first: Value = serde_json::from_slice(&std::fs::read(body).unwrap()).unwrap();
    assert_eq!(
        composition["relatesTo"][0]["targetIdentifier"]["value"],
        first["entry"][2]["resource"]["entry"][0]["resource"]["identifier"]["value"],
        "it names the letter it replaces"
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_reports_negative_and_missing_acknowledgements_show_on_the_timeline_and_raise_alerts()
{
    let sandbox = Sandbox::start().await;
    let (world, gw) = mesh_loop(&sandbox.url, None, |s| {
        s.letter_ack_timeout_s = 3;
    })
    .await;
    let c = &world.client;
    let inbox = TempDir::new("signpost-mesh-gp");

    let mut referrals = Vec::new();
    for _ in 0..3 {
        let mut message: Value =
            serde_json::from_slice(&read_fixture("gp-system/referral-new.json")).unwrap();
        message["id"] = json!(new_id());
        let reply = c
            .process_message(
                &gw.fhir,
                &new_id(),
                &new_id(),
                message.to_string().into_bytes(),
            )
            .await
            .unwrap();
        assert_eq!(reply.status, 200, "{}", reply.body);
        let referral = referral_id(&reply.body);
        wait_for_step(c, &gw.fhir, &referral, "letter-sent", 30).await;
        referrals.push(referral);
    }
    let received = sandbox.gp_receive(inbox.path());
    assert_eq!(received.len(), 3);
    let by_referral = |referral: &str| -> PathBuf {
        received
            .iter()
            .find(|(_, body)| {
                let m: Value = serde_json::from_slice(&std::fs::read(body).unwrap()).unwrap();
                m["entry"][0]["resource"]["extension"][0]["extension"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|e| e["url"] == "SenderReference" && e["valueString"] == referral)
            })
            .map(|(_, b)| b.clone())
            .expect("each letter names its referral")
    };

    // 1. MESH reports that the letter could not be delivered (EPL-151).
    let first = by_referral(&referrals[0]);
    let mesh_id = first.file_stem().unwrap().to_str().unwrap().to_owned();
    sandbox.error_report(&mesh_id, "EPL-151").await;
    wait_for_step(c, &gw.fhir, &referrals[0], "letter-mesh-error", 20).await;
    let detail = timeline_detail(c, &gw.fhir, &referrals[0], "letter-mesh-error").await;
    assert!(detail.contains("EPL-151"), "{detail}");

    // 2. The practice does not know the patient (business acknowledgement 30002).
    sandbox.gp_ack(&by_referral(&referrals[1]), "30002");
    wait_for_step(c, &gw.fhir, &referrals[1], "letter-ack-negative", 20).await;

    // 3. Nobody answers for the third: after the time-out it is raised as missing, once.
    wait_for_step(c, &gw.fhir, &referrals[2], "letter-ack-missing", 20).await;
    for settled in &referrals[..2] {
        assert!(
            !steps(c, &gw.fhir, settled)
                .await
                .contains(&"letter-ack-missing".to_owned()),
            "an answered letter is not missing"
        );
    }
    let metrics = c.get(&format!("{}/metrics", gw.base)).await.unwrap();
    let text = metrics.text;
    let alerts = text
        .lines()
        .find_map(|l| l.strip_prefix("signpost_letter_alerts_total "))
        .and_then(|v| v.trim().parse::<u64>().ok());
    assert_eq!(
        alerts,
        Some(3),
        "three alerts: error report, negative, missing\n{text}"
    );
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    let missing = steps(c, &gw.fhir, &referrals[2])
        .await
        .iter()
        .filter(|s| *s == "letter-ack-missing")
        .count();
    assert_eq!(missing, 1, "raised once");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_letter_for_an_unreachable_mesh_retries_parks_and_is_delivered_exactly_once_when_it_returns(
) {
    // MESH is down: its port is free and nothing listens yet.
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let (world, gw) = mesh_loop(&url, Some(3), |_| {}).await;
    let c = &world.client;

    let (reply, _, _) = post_fixture(c, &gw.fhir, "gp-system/referral-new.json").await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let referral = referral_id(&reply.body);
    wait_for_step(c, &gw.fhir, &referral, "letter-parked", 30).await;
    let tried = steps(c, &gw.fhir, &referral)
        .await
        .iter()
        .filter(|s| *s == "letter-retrying")
        .count();
    assert_eq!(tried, 2, "two retries, then parked on the third failure");

    // MESH comes back; the operator replays what was parked for the endpoint.
    let sandbox = Sandbox::start_on(port).await;
    let replay = c
        .post_json(
            &format!("{}/admin/parked/$replay?scheme=gp-mesh", gw.base),
            &json!({}),
        )
        .await
        .unwrap();
    assert_eq!(replay.status, 200, "{}", replay.body);
    wait_for_step(c, &gw.fhir, &referral, "letter-sent", 30).await;
    // Replaying again changes nothing: a replay is done once.
    let again = c
        .post_json(
            &format!("{}/admin/parked/$replay?scheme=gp-mesh", gw.base),
            &json!({}),
        )
        .await
        .unwrap();
    assert_eq!(again.status, 200, "{}", again.body);
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let inbox = TempDir::new("signpost-mesh-gp");
    let received = sandbox.gp_receive(inbox.path());
    assert_eq!(received.len(), 1, "delivered exactly once");
    let sent = steps(c, &gw.fhir, &referral)
        .await
        .iter()
        .filter(|s| *s == "letter-sent")
        .count();
    assert_eq!(sent, 1);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn letters_and_acknowledgements_cross_mutual_tls_and_mesh_refuses_a_caller_without_a_certificate(
) {
    let pki = Pki::new();
    let sandbox = Sandbox::start_mutual_tls(&pki).await;
    let health = format!("{}/health", sandbox.url);
    assert!(
        get(&pki.client(None).unwrap(), &health).await.is_err(),
        "no client certificate: refused"
    );
    let public_roots = signpost_bus::http::HttpClient::new(std::time::Duration::from_secs(5));
    assert!(
        get(&public_roots, &health).await.is_err(),
        "a server certificate from an unknown CA is refused"
    );

    let (world, gw) = mesh_loop(&sandbox.url, None, |s| {
        let files = pki.files(Some("signpost"));
        let mesh = s.mesh.as_mut().unwrap();
        mesh.ca_file = files.ca;
        mesh.client_cert = files.client_cert;
        mesh.client_key = files.client_key;
    })
    .await;
    let c = &world.client;
    let (reply, _, _) = post_fixture(c, &gw.fhir, "gp-system/referral-new.json").await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let referral = referral_id(&reply.body);
    wait_for_step(c, &gw.fhir, &referral, "letter-sent", 30).await;
    let inbox = TempDir::new("signpost-mesh-gp");
    let received = sandbox.gp_receive(inbox.path());
    assert_eq!(received.len(), 1);
    sandbox.gp_ack(&received[0].1, "30001");
    wait_for_step(c, &gw.fhir, &referral, "letter-filed", 20).await;
    gw.stop().await;
}
