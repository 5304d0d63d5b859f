//! The other two ways a scheme is reached, each against a peer written independently in
//! Python: a signed webhook verified with the standard library's `hmac`, and a queue-pull
//! scheme consuming its own RabbitMQ queue with `pika` under its own broker user.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

use crate::assert_eventually;
use crate::helpers::{bind, post_fixture, referral_id, steps, Gateway, World};

fn python() -> String {
    std::env::var("SIGNPOST_TEST_PYTHON").expect(
        "SIGNPOST_TEST_PYTHON (a venv with tests/requirements.txt) is not set: run the tests with `cargo xtask test`",
    )
}

fn peer(script: &str) -> String {
    signpost_tests::env::workspace()
        .join("tests/peers")
        .join(script)
        .display()
        .to_string()
}

struct Killed(Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn edit_directory(world: &World, edit: impl FnOnce(&mut Vec<Value>)) {
    let path = world.dir.path().join("directory.json");
    let mut d: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    edit(d["entry"].as_array_mut().unwrap());
    std::fs::write(&path, d.to_string()).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_webhook_verifies_with_an_independent_receiver_and_a_tampered_body_does_not() {
    let world = World::new(None).await;
    let port = bind().await.local_addr().unwrap().port();
    let out = world.dir.path().join("webhooks.jsonl");
    let _receiver = Killed(
        Command::new(python())
            .args([
                peer("webhook_receiver.py"),
                "serve".into(),
                port.to_string(),
                "s3cret-for-tests".into(),
                out.display().to_string(),
            ])
            .stdin(Stdio::null())
            .spawn()
            .unwrap(),
    );
    edit_directory(&world, |entries| {
        for e in entries.iter_mut() {
            if e["resource"]["id"] == "scheme-standin" {
                e["resource"]["connectionType"] = json!({"system": "https://signpost.example.org/fhir/CodeSystem/endpoint-connection-type", "code": "signed-webhook"});
                e["resource"]["address"] = json!(format!("http://127.0.0.1:{port}/hook"));
            }
        }
    });
    let gw = Gateway::start(|addr| {
        let mut s = world.settings(addr);
        s.webhook_secrets.insert(
            "scheme-standin".into(),
            signpost_gateway::config::Secret::new("s3cret-for-tests"),
        );
        s
    })
    .await;
    let (r, _, cid) = post_fixture(&world.client, &gw.fhir, "gp-system/referral-new.json").await;
    let referral = referral_id(&r.body);
    assert_eventually!(30, "the webhook receiver verified one delivery", {
        std::fs::read_to_string(&out)
            .map(|t| t.lines().count() == 1)
            .unwrap_or(false)
    });
    assert_eventually!(
        10,
        "delivered on the timeline",
        steps(&world.client, &gw.fhir, &referral)
            .await
            .contains(&"delivered".to_owned())
    );
    let line: Value = serde_json::from_str(
        std::fs::read_to_string(&out)
            .unwrap()
            .lines()
            .next()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(line["verified"], true, "{line}");
    let envelope: Value = serde_json::from_str(line["body"].as_str().unwrap()).unwrap();
    assert_eq!(envelope["kind"], "referral-message");
    assert_eq!(envelope["correlation_id"], cid.as_str());
    assert_eq!(line["idempotency_key"], envelope["message_id"]);
    assert_eq!(
        envelope["payload"]["entry"][0]["resource"]["resourceType"],
        "MessageHeader"
    );

    // The same recipe refuses a tampered body.
    let body = line["body"].as_str().unwrap();
    let signature = line["signature"].as_str().unwrap();
    let verify = |text: &str| {
        let f = world.dir.path().join("body.json");
        std::fs::write(&f, text).unwrap();
        Command::new(python())
            .args([
                peer("webhook_receiver.py"),
                "verify".into(),
                "s3cret-for-tests".into(),
                signature.into(),
                f.display().to_string(),
            ])
            .status()
            .unwrap()
            .code()
    };
    assert_eq!(verify(body), Some(0));
    assert_eq!(
        verify(&body.replacen("referral-message", "referral-messagE", 1)),
        Some(1)
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_pull_scheme_reads_only_its_own_queue_and_its_reply_comes_back() {
    let world = World::new(None).await;
    let endpoint = format!(
        "scheme-pull-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    edit_directory(&world, |entries| {
        for e in entries.iter_mut() {
            if e["resource"]["id"] == "scheme-standin-linkworkers" {
                e["resource"]["extension"]
                    .as_array_mut()
                    .unwrap()
                    .retain(|x| x["valueIdentifier"]["value"] == "A81001");
            }
        }
        entries.push(json!({"resource": {"resourceType": "Endpoint", "id": endpoint, "status": "active",
            "connectionType": {"system": "https://signpost.example.org/fhir/CodeSystem/endpoint-connection-type", "code": "queue-pull"},
            "payloadType": [{"text": "Signpost envelope"}], "address": format!("urn:signpost:queue:sp.referrals.{endpoint}")}}));
        entries.push(json!({"resource": {"resourceType": "Organization", "id": "pull-org", "name": "Queue-pull scheme",
            "identifier": [{"system": "https://fhir.nhs.uk/Id/ods-organization-code", "value": "X00SP3"}]}}));
        entries.push(json!({"resource": {"resourceType": "HealthcareService", "id": "pull-service", "name": "Pull",
            "providedBy": {"reference": "Organization/pull-org"}, "endpoint": [{"reference": format!("Endpoint/{endpoint}")}],
            "extension": [{"url": "https://signpost.example.org/fhir/StructureDefinition/served-practice",
                "valueIdentifier": {"system": "https://fhir.nhs.uk/Id/ods-organization-code", "value": "A81002"}}]}}));
    });
    let gw = Gateway::start(|addr| world.settings(addr)).await;
    let provision = Command::new("bash")
        .args([
            signpost_tests::env::workspace()
                .join("deploy/rabbitmq/queue-pull-user.sh")
                .display()
                .to_string(),
            world.vhost.name.clone(),
            endpoint.clone(),
            "pull-password".into(),
        ])
        .output()
        .unwrap();
    assert!(
        provision.status.success(),
        "{}",
        String::from_utf8_lossy(&provision.stderr)
    );
    struct User(String);
    impl Drop for User {
        fn drop(&mut self) {
            let _ = Command::new("rabbitmqctl")
                .args(["-q", "delete_user", &self.0])
                .status();
        }
    }
    let _user = User(endpoint.clone());

    let (r, _, _) = post_fixture(
        &world.client,
        &gw.fhir,
        "gp-system/referral-new-hillview.json",
    )
    .await;
    let referral = referral_id(&r.body);
    let url = format!(
        "amqp://{endpoint}:pull-password@127.0.0.1:5672/{}",
        world.vhost.name
    );
    let scheme = tokio::task::spawn_blocking(move || {
        Command::new(python())
            .args([
                peer("queue_pull_scheme.py"),
                url,
                endpoint,
                "sp.referrals.scheme-standin".into(),
            ])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let printed = String::from_utf8_lossy(&scheme.stdout).to_string();
    assert!(
        scheme.status.success(),
        "{printed}\n{}",
        String::from_utf8_lossy(&scheme.stderr)
    );
    assert!(
        printed.contains("refused sp.referrals.scheme-standin"),
        "{printed}"
    );
    assert!(
        printed.contains(&format!("received {referral}")),
        "{printed}"
    );
    assert_eventually!(20, "the scheme's reply is recorded", {
        let t = world
            .client
            .get(&format!("{}/Task?focus={referral}", gw.fhir))
            .await
            .unwrap();
        t.body["entry"][0]["resource"]["status"] == "accepted"
    });
    assert!(steps(&world.client, &gw.fhir, &referral)
        .await
        .contains(&"accepted".to_owned()));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        world.scheme.received().is_empty(),
        "nothing went to the other scheme"
    );
    gw.stop().await;
}
