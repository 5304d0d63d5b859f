//! Starting a whole loop for one test, and waiting for things to happen.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use signpost_gateway::config::{Secret, Settings};
use signpost_tests::broker::Vhost;
use signpost_tests::client::{Client, Reply};
use signpost_tests::env::{read_fixture, signpost_bin, TempDir};
use signpost_tests::standin::{self, StandinGp, StandinScheme};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Poll `$cond` (an async expression giving bool) every 100 ms until it holds; panic with
/// `$what` after `$secs` seconds.
#[macro_export]
macro_rules! assert_eventually {
    ($secs:expr, $what:expr, $cond:expr) => {{
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs($secs);
        loop {
            if $cond {
                break;
            }
            if std::time::Instant::now() > deadline {
                panic!("not within {}s: {}", $secs, $what);
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }};
}

fn init_tracing() {
    if std::env::var("TEST_LOG").is_ok() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter("info,lapin=warn,amq_protocol=warn")
            .with_test_writer()
            .try_init();
    }
}

/// The outside world of one test: its own vhost, temp dir, stand-in scheme and GP system, and
/// a directory routing the example practices to them.
pub struct World {
    pub vhost: Vhost,
    pub dir: TempDir,
    pub scheme: StandinScheme,
    pub gp: StandinGp,
    pub client: Client,
}

impl World {
    /// With `scheme_works_for`, the stand-in scheme works every referral to completion against
    /// that gateway FHIR base.
    pub async fn new(scheme_works_for: Option<String>) -> Self {
        init_tracing();
        let vhost = Vhost::create("signpost-it").expect("a vhost of our own");
        let dir = TempDir::new("signpost-it");
        let scheme =
            StandinScheme::start(bind().await, scheme_works_for, Duration::from_millis(50)).await;
        let gp = StandinGp::start(bind().await).await;
        let directory = standin::directory(&scheme.base_url, &gp.base_url);
        std::fs::write(dir.path().join("directory.json"), directory.to_string())
            .expect("directory file");
        World {
            vhost,
            dir,
            scheme,
            gp,
            client: Client::new(),
        }
    }

    pub fn database_url(&self) -> String {
        format!("sqlite://{}/ledger.db", self.dir.path().display())
    }

    pub fn settings(&self, listen: SocketAddr) -> Settings {
        let mut s = Settings {
            listen,
            amqp_url: Secret::new(self.vhost.amqp_url()),
            database_url: Secret::new(self.database_url()),
            directory: self.dir.path().join("directory.json"),
            // Loopback development mode; the security tests set [tls] instead.
            plain_http: true,
            ..Settings::default()
        };
        // Every test client is 127.0.0.1: the per-client rate limit would be shared by all of
        // them. The limits tests set their own.
        s.http.rate_limit_per_s = 1_000_000;
        s.http.rate_limit_burst = 1_000_000;
        s.delivery.timeout_ms = 2_000;
        s.delivery.retry_delays_ms = vec![200, 400];
        s.delivery.retry_horizon_s = 600;
        s
    }
}

pub async fn bind() -> TcpListener {
    TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback")
}

/// A gateway with its adapters (`signpost run`) in this process.
pub struct Gateway {
    pub base: String,
    pub fhir: String,
    shutdown: CancellationToken,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl Gateway {
    pub async fn start(settings_for: impl FnOnce(SocketAddr) -> Settings) -> Self {
        Self::start_on(bind().await, settings_for).await
    }

    /// Start on a listener bound earlier (when others need the address first).
    pub async fn start_on(
        listener: TcpListener,
        settings_for: impl FnOnce(SocketAddr) -> Settings,
    ) -> Self {
        let gw = Self::start_on_tls(listener, settings_for).await;
        gw.wait_ready().await;
        gw
    }

    /// Start without waiting for `/readyz` over plain HTTP (a TLS listener: the caller waits
    /// with its own client).
    pub async fn start_on_tls(
        listener: TcpListener,
        settings_for: impl FnOnce(SocketAddr) -> Settings,
    ) -> Self {
        let addr = listener.local_addr().expect("local addr");
        let settings = settings_for(addr);
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(signpost_gateway::app::run(
            listener,
            settings,
            shutdown.clone(),
        ));
        Gateway {
            base: format!("http://{addr}"),
            fhir: format!("http://{addr}/fhir"),
            shutdown,
            task: Some(task),
        }
    }

    async fn wait_ready(&self) {
        let client = Client::new();
        let url = format!("{}/readyz", self.base);
        assert_eventually!(30, "the gateway is ready", {
            matches!(client.get(&url).await, Ok(r) if r.status == 200)
        });
    }

    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(t) = self.task.take() {
            let r = tokio::time::timeout(Duration::from_secs(40), t).await;
            assert!(
                matches!(r, Ok(Ok(Ok(())))),
                "the gateway stops cleanly: {r:?}"
            );
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// A `signpost` process.
pub struct Process {
    pub child: Child,
    pub base: String,
}

impl Process {
    /// Run `signpost <args>` with settings from `env`, listening on a free port.
    pub fn spawn(args: &[&str], env: &[(&str, String)]) -> Self {
        let (stdout, stderr) = if std::env::var("TEST_LOG").is_err() {
            (Stdio::null(), Stdio::null())
        } else {
            (Stdio::inherit(), Stdio::inherit())
        };
        Self::spawn_on(free_port(), args, env, stdout, stderr)
    }

    /// Run `signpost <args>` on `port` (plain HTTP, development), output where given.
    pub fn spawn_on(
        port: u16,
        args: &[&str],
        env: &[(&str, String)],
        stdout: Stdio,
        stderr: Stdio,
    ) -> Self {
        let mut cmd = Command::new(signpost_bin());
        cmd.args(args)
            .env("SIGNPOST_LISTEN", format!("127.0.0.1:{port}"))
            .env("SIGNPOST_PLAIN_HTTP", "true")
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().unwrap_or_else(|e| {
            panic!(
                "starting {}: {e} (build it with cargo build --bins)",
                signpost_bin().display()
            )
        });
        Process {
            child,
            base: format!("http://127.0.0.1:{port}"),
        }
    }

    /// SIGTERM, then wait (bounded) for a clean exit.
    pub async fn terminate(&mut self) {
        let term = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill -TERM");
        assert!(term.success(), "signalled");
        let deadline = std::time::Instant::now() + Duration::from_secs(40);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                assert!(status.success(), "signpost stops cleanly: {status}");
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "signpost stops within 40 s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn wait_for(&self, path: &str) {
        let client = Client::new();
        let url = format!("{}{path}", self.base);
        assert_eventually!(30, format!("{url} answers 200"), {
            matches!(client.get(&url).await, Ok(r) if r.status == 200)
        });
    }

    /// SIGKILL: no shutdown, no drain.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A loopback port nothing listens on (yet).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

pub fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// POST a fixture to `$process-message` with fresh ids; returns the reply and the ids.
pub async fn post_fixture(client: &Client, fhir: &str, rel: &str) -> (Reply, String, String) {
    let (rid, cid) = (new_id(), new_id());
    let reply = client
        .process_message(fhir, &rid, &cid, read_fixture(rel))
        .await
        .expect("the gateway answers");
    (reply, rid, cid)
}

/// The referral (ServiceRequest) id in a referral answer.
pub fn referral_id(answer: &Value) -> String {
    signpost_tests::messages::referral_id(answer)
        .expect("the answer carries the ServiceRequest with its id")
}

/// The step codes of a referral's timeline.
pub async fn steps(client: &Client, fhir: &str, referral: &str) -> Vec<String> {
    let r = client
        .get(&format!("{fhir}/ServiceRequest/{referral}/$timeline"))
        .await
        .expect("timeline answers");
    assert_eq!(r.status, 200, "timeline: {}", r.body);
    r.body["entry"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            e["flag"]["coding"][0]["code"]
                .as_str()
                .unwrap_or("")
                .to_owned()
        })
        .collect()
}
