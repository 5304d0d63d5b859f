//! `signpost-demo` (run by `cargo xtask demo`): the whole loop on this machine.
//!
//! Starts the stand-in scheme (127.0.0.1:8091) and stand-in GP system (127.0.0.1:8092) that
//! `deploy/directory.example.json` points at, a fresh RabbitMQ vhost `signpost-demo`, and
//! `signpost run` on the embedded SQLite default (a fresh file under `target/demo/`). It sends
//! the fixture referrals as a GP system would, lets the stand-in scheme accept, work and close
//! each with an outcome letter, prints every referral's timeline, and exits 0 only when every
//! referral ended with its letter filed at the stand-in GP system.

use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use signpost_tests::broker::Vhost;
use signpost_tests::client::Client;
use signpost_tests::env::{read_fixture, signpost_bin, workspace};
use signpost_tests::standin::{StandinGp, StandinScheme};
use tokio::net::TcpListener;

const FIXTURES: &[&str] = &[
    "gp-system/referral-new.json",
    "gp-system/referral-new-hillview.json",
    "gp-system/referral-new-lowercase-id-uris.json",
];

#[tokio::main]
async fn main() -> ExitCode {
    match demo().await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("demo: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn bind(addr: &str) -> Result<TcpListener, String> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen on {addr} ({e}); is another demo running?"))
}

async fn demo() -> Result<bool, String> {
    let listen = std::env::var("SIGNPOST_LISTEN").unwrap_or_else(|_| "127.0.0.1:8080".to_owned());
    let gateway = format!("http://{listen}/fhir");
    let scheme = StandinScheme::start(
        bind("127.0.0.1:8091").await?,
        Some(gateway.clone()),
        Duration::from_millis(300),
    )
    .await;
    let gp = StandinGp::start(bind("127.0.0.1:8092").await?).await;
    println!(
        "stand-in scheme on {}, stand-in GP system on {}",
        scheme.base_url, gp.base_url
    );

    let vhost = Vhost::create_named("signpost-demo")?;
    let dir = workspace().join("target/demo");
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let db = dir.join("signpost-demo.db");
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
    }
    let bin = signpost_bin();
    println!("starting {} run", bin.display());
    let mut child = Command::new(&bin)
        .arg("run")
        .env("SIGNPOST_LISTEN", &listen)
        // The demo runs on loopback without certificates: development mode.
        .env("SIGNPOST_PLAIN_HTTP", "true")
        .env("SIGNPOST_AMQP_URL", vhost.amqp_url())
        .env(
            "SIGNPOST_DATABASE_URL",
            format!("sqlite://{}", db.display()),
        )
        .env(
            "SIGNPOST_DIRECTORY",
            workspace().join("deploy/directory.example.json"),
        )
        .env(
            "SIGNPOST_LOG",
            std::env::var("SIGNPOST_LOG").unwrap_or_else(|_| "warn,lapin::channels=off".to_owned()),
        )
        .stdin(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;

    let outcome = drive(&gateway, &listen, &gp).await;
    // Stop the gateway gently (SIGTERM), then make sure it is gone.
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    drop(scheme);
    outcome
}

async fn drive(gateway: &str, listen: &str, gp: &StandinGp) -> Result<bool, String> {
    let client = Client::new();
    let ready = format!("http://{listen}/readyz");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if matches!(client.get(&ready).await, Ok(r) if r.status == 200) {
            break;
        }
        if Instant::now() > deadline {
            return Err("the gateway did not become ready within 30 s".to_owned());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!("gateway ready at http://{listen}\n");

    let mut referrals = Vec::new();
    for f in FIXTURES {
        let (rid, cid) = (
            uuid::Uuid::new_v4().to_string(),
            uuid::Uuid::new_v4().to_string(),
        );
        let r = client
            .process_message(gateway, &rid, &cid, read_fixture(f))
            .await?;
        if r.status != 200 {
            return Err(format!("{f}: HTTP {} {}", r.status, r.body));
        }
        let id = signpost_tests::messages::referral_id(&r.body).unwrap_or_default();
        println!("GP system sent {f}: accepted as ServiceRequest/{id}");
        referrals.push((f, id));
    }

    let deadline = Instant::now() + Duration::from_secs(60);
    let mut all_filed = false;
    while Instant::now() < deadline {
        let mut filed = 0;
        for (_, id) in &referrals {
            let t = client
                .get(&format!("{gateway}/ServiceRequest/{id}/$timeline"))
                .await?;
            let done = t.body["entry"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|e| e["flag"]["coding"][0]["code"] == "letter-filed");
            filed += usize::from(done);
        }
        if filed == referrals.len() {
            all_filed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    for (f, id) in &referrals {
        let t = client
            .get(&format!("{gateway}/ServiceRequest/{id}/$timeline"))
            .await?;
        println!("\nTimeline of ServiceRequest/{id} ({f})");
        for e in t.body["entry"].as_array().into_iter().flatten() {
            println!(
                "  {:<29} {:<17} {}",
                e["date"].as_str().unwrap_or(""),
                e["flag"]["coding"][0]["code"].as_str().unwrap_or(""),
                e["item"]["display"].as_str().unwrap_or("")
            );
        }
    }
    let letters = gp.filed().len();
    println!(
        "\nletters filed at the stand-in GP system: {letters} of {}",
        referrals.len()
    );
    if all_filed && letters == referrals.len() {
        println!("demo: every referral ended with its letter filed in the GP record");
        Ok(true)
    } else {
        println!("demo: FAILED: not every referral ended with its letter filed");
        Ok(false)
    }
}
