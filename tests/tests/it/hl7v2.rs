//! HL7 v2 GP systems over MLLP: a REF^I12 sent by an independent library (python-hl7) becomes
//! one referral and gets AA (AE with an ERR segment when it is wrong); an outcome letter goes to
//! the GP system as MDM^T02 and is filed once although the system NACKs twice first.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};
use signpost_adapter_hl7v2::{ack, message::Message, mllp};
use signpost_tests::messages;

use crate::assert_eventually;
use crate::helpers::{bind, new_id, steps, Gateway, World};

fn python() -> String {
    std::env::var("SIGNPOST_TEST_PYTHON")
        .expect("SIGNPOST_TEST_PYTHON is not set: run the tests with `cargo xtask test`")
}

fn hl7_fixture(name: &str) -> String {
    signpost_tests::env::workspace()
        .join("adapters/hl7v2/tests/data")
        .join(name)
        .display()
        .to_string()
}

async fn send_with_python_hl7(port: u16, file: String) -> Value {
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(python())
            .args([
                signpost_tests::env::workspace()
                    .join("tests/peers/hl7_send.py")
                    .display()
                    .to_string(),
                port.to_string(),
                file,
            ])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ref_i12_from_python_hl7_becomes_one_referral_and_the_letter_returns_as_mdm() {
    let world = World::new(None).await;
    // A stand-in HL7 v2 GP system: NACKs the first two MDM^T02s, then ACKs.
    let gp_listener = bind().await;
    let gp_addr = gp_listener.local_addr().unwrap();
    let got: Arc<Mutex<Vec<String>>> = Arc::default();
    let nacks = Arc::new(AtomicUsize::new(2));
    let (g, n) = (got.clone(), nacks.clone());
    let gp = move |text: String, _peer: SocketAddr| {
        let (got, nacks) = (g.clone(), n.clone());
        async move {
            got.lock().unwrap().push(text.clone());
            let msg = Message::parse(&text).unwrap();
            let code = if nacks
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |v| v.checked_sub(1))
                .is_ok()
            {
                ack::AckCode::Error
            } else {
                ack::AckCode::Accept
            };
            ack::build(&msg, code, &[], "GPACK", time::OffsetDateTime::now_utc())
        }
    };
    let stop = tokio_util::sync::CancellationToken::new();
    let s = stop.clone();
    tokio::spawn(mllp::serve(
        gp_listener,
        Arc::new(gp),
        mllp::ServeOptions::default(),
        async move { s.cancelled().await },
    ));
    let path = world.dir.path().join("directory.json");
    let mut d: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    for e in d["entry"].as_array_mut().unwrap() {
        if e["resource"]["id"] == "gp-standin" {
            e["resource"]["connectionType"] = json!({"system": "https://signpost.example.org/fhir/CodeSystem/endpoint-connection-type", "code": "hl7v2-mllp"});
            e["resource"]["address"] = json!(format!("mllp://{gp_addr}"));
        }
    }
    std::fs::write(&path, d.to_string()).unwrap();

    let mllp_port = bind().await.local_addr().unwrap().port();
    let gw = Gateway::start(|addr| {
        let mut s = world.settings(addr);
        s.hl7v2_listen = Some(SocketAddr::from(([127, 0, 0, 1], mllp_port)));
        s
    })
    .await;

    // In: AA, one referral at the scheme; the same REF^I12 again changes nothing.
    let reply = send_with_python_hl7(mllp_port, hl7_fixture("ref-i12-emis.hl7")).await;
    assert_eq!(reply["msa1"], "AA", "{reply}");
    assert_eq!(reply["msa2"], "EMIS-000123");
    assert_eventually!(
        20,
        "the scheme receives the referral",
        world.scheme.accepted().len() == 1
    );
    let again = send_with_python_hl7(mllp_port, hl7_fixture("ref-i12-emis.hl7")).await;
    assert_eq!(again["msa1"], "AA", "a resend is acknowledged: {again}");
    let referral_message = world.scheme.accepted()[0].body.clone();
    let patient = referral_message["entry"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["resource"]["resourceType"] == "Patient")
        .unwrap();
    assert_eq!(patient["resource"]["identifier"][0]["value"], "9990000018");

    // A wrong NHS check digit: AE with an ERR segment, nothing downstream.
    let bad = send_with_python_hl7(mllp_port, hl7_fixture("ref-i12-bad-check-digit.hl7")).await;
    assert_eq!(bad["msa1"], "AE", "{bad}");
    assert!(!bad["err"].as_array().unwrap().is_empty(), "{bad}");
    assert!(bad["err"][0].as_str().unwrap().contains("PID"), "{bad}");
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    assert_eq!(world.scheme.accepted().len(), 1);

    // Out: the letter as MDM^T02, NACKed twice, filed once.
    let referral = signpost_tests::messages::referral_id(&referral_message).unwrap();
    let done = messages::scheme_response(
        &referral_message,
        "completed",
        Some("Plan finished"),
        Some(messages::outcome_letter("9990000018")),
    );
    let r = world
        .client
        .process_message(
            &gw.fhir,
            &new_id(),
            &new_id(),
            done.to_string().into_bytes(),
        )
        .await
        .unwrap();
    assert_eq!(
        r.status, 422,
        "completing needs accepting first: {}",
        r.body
    );
    for status in ["accepted", "in-progress"] {
        let m = messages::scheme_response(&referral_message, status, None, None);
        assert_eq!(
            world
                .client
                .process_message(&gw.fhir, &new_id(), &new_id(), m.to_string().into_bytes())
                .await
                .unwrap()
                .status,
            200
        );
    }
    let r = world
        .client
        .process_message(
            &gw.fhir,
            &new_id(),
            &new_id(),
            done.to_string().into_bytes(),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eventually!(
        30,
        "the letter is filed",
        steps(&world.client, &gw.fhir, &referral)
            .await
            .contains(&"letter-filed".to_owned())
    );
    let sent = got.lock().unwrap().clone();
    assert_eq!(sent.len(), 3, "two NACKed attempts and one accepted");
    let first = Message::parse(&sent[0]).unwrap();
    assert!(
        sent.iter()
            .all(|m| Message::parse(m).unwrap().control_id() == first.control_id()),
        "the same MSH-10 on every attempt"
    );
    let t = first.message_type();
    assert_eq!(format!("{}^{}", t.code, t.trigger), "MDM^T02");
    let letter = signpost_adapter_hl7v2::mdm::read_letter(&first).unwrap();
    assert!(
        String::from_utf8_lossy(&letter.data).contains("walking group"),
        "the letter survives intact"
    );
    let s = steps(&world.client, &gw.fhir, &referral).await;
    assert_eq!(
        s.iter().filter(|x| *x == "letter-retrying").count(),
        2,
        "{s:?}"
    );
    stop.cancel();
    gw.stop().await;
}
