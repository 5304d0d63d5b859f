//! An independent peer: python-hl7 (PyPI `hl7` 0.4.5) reads the MDM and ACK this crate builds
//! and sends a REF^I12 to its MLLP server with its own MLLP client.
//!
//! The Python interpreter is `SIGNPOST_TEST_PYTHON`, else the workspace's `target/venv` (which
//! `cargo xtask test` fills from `tests/requirements.txt`), else `python3`. When none of them
//! can `import hl7` the test fails and says how to run it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use base64::Engine;
use serde_json::{json, Value};
use signpost_adapter_hl7v2::ack::{self, AckCode};
use signpost_adapter_hl7v2::mdm::{self, MdmHeader};
use signpost_adapter_hl7v2::message::Message;
use signpost_adapter_hl7v2::mllp::{self, ServeOptions};
use signpost_adapter_hl7v2::ref_i12::{self, MapOptions};

use crate::helpers::{fixture, AT};

fn python_with_hl7() -> Option<PathBuf> {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let candidates = [
        std::env::var_os("SIGNPOST_TEST_PYTHON").map(PathBuf::from),
        Some(manifest.join("../../target/venv/bin/python")),
        Some(PathBuf::from("python3")),
    ];
    candidates.into_iter().flatten().find(|python| {
        std::process::Command::new(python)
            .args(["-c", "import hl7, hl7.mllp"])
            .output()
            .is_ok_and(|o| o.status.success())
    })
}

fn letter(content_type: &str, data: &[u8]) -> Value {
    json!({
        "resourceType": "DocumentReference",
        "id": "d1",
        "subject": {"identifier": {"system": "https://fhir.nhs.uk/Id/nhs-number", "value": "9990000018"}},
        "content": [{"attachment": {
            "contentType": content_type,
            "data": base64::engine::general_purpose::STANDARD.encode(data),
            "title": "Outcome & plan"
        }}]
    })
}

#[tokio::test]
async fn python_hl7_reads_what_we_build_and_talks_mllp_to_our_server() {
    let python = python_with_hl7().expect(
        "no Python with the `hl7` package: run the tests with `cargo xtask test` (it installs tests/requirements.txt into target/venv and sets SIGNPOST_TEST_PYTHON)",
    );
    let dir = std::env::temp_dir().join(format!("hl7v2-peer-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let header = MdmHeader {
        sending_application: "SIGNPOST".into(),
        sending_facility: "SIGNPOST".into(),
        receiving_application: "EMIS".into(),
        receiving_facility: "A81001".into(),
        control_id: "M1".into(),
        at: AT,
    };
    let html = mdm::build(&letter("text/html", b"<p>Hi | there</p>"), None, &header).unwrap();
    let text_letter = "a|b^c\r\nline 2 & \\ ~\n";
    let text = mdm::build(&letter("text/plain", text_letter.as_bytes()), None, &header).unwrap();
    let bad = Message::parse(&fixture("ref-i12-bad-check-digit.hl7")).unwrap();
    let e = ref_i12::map(&bad, &MapOptions::default()).unwrap_err();
    let ack_text = ack::build(&bad, e.code().ack_code(), &[(&e).into()], "A1", AT);
    for (name, body) in [
        ("mdm-html.hl7", html),
        ("mdm-text.hl7", text),
        ("ack-error.hl7", ack_text),
        ("ref.hl7", fixture("ref-i12-emis.hl7")),
    ] {
        std::fs::write(dir.join(name), body).unwrap();
    }

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let handler = Arc::new(|text: String, _peer: SocketAddr| async move {
        let m = Message::parse(&text).unwrap();
        match ref_i12::map(&m, &MapOptions::default()) {
            Ok(_) => ack::build(&m, AckCode::Accept, &[], "A2", AT),
            Err(e) => ack::build(&m, e.code().ack_code(), &[(&e).into()], "A2", AT),
        }
    });
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(mllp::serve(
        listener,
        handler,
        ServeOptions::default(),
        async {
            let _ = stopped.await;
        },
    ));

    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/peers/python_hl7.py");
    let out = tokio::process::Command::new(&python)
        .arg(&script)
        .arg(&dir)
        .arg(port.to_string())
        .output()
        .await
        .unwrap();
    drop(stop);
    server.await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        got,
        json!({
            "mdm_type": "MDM^T02^MDM_T02",
            "mdm_document": "d1",
            "mdm_pid3": "9990000018^^^NHS^NH",
            "mdm_ed": ["text", "html", "Base64", "PHA+SGkgfCB0aGVyZTwvcD4="],
            "tx_lines": ["a|b^c\r", "line 2 & \\ ~", ""],
            "ack_msa": ["AE", "EMIS-000125"],
            "ack_err": ["PID^1^3", "102^Data type error^HL70357"],
            "reply_msa": ["AA", "EMIS-000123"]
        })
    );
}
