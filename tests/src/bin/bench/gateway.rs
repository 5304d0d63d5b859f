//! The system under test: `signpost run` (the gateway and the `fhir-messaging` adapter in one
//! process) with a settings file of the bench's own, its log in the work directory; stopped
//! (SIGTERM, then SIGKILL) on drop.

use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

pub struct Gateway {
    child: Child,
    pub addr: SocketAddr,
    pub log: PathBuf,
}

/// The settings file: only what differs from the defaults (see deploy/signpost.example.toml).
pub fn settings(addr: SocketAddr, amqp_url: &str, database_url: &str, directory: &Path) -> String {
    format!(
        "# Written by signpost-bench.\n\
         listen = \"{addr}\"\n\
         plain_http = true\n\
         amqp_url = \"{}\"\n\
         database_url = \"{}\"\n\
         directory = \"{}\"\n\
         adapters = [\"fhir-messaging\"]\n\
         \n\
         [http]\n\
         # The bench is one client sending as fast as the gateway answers.\n\
         rate_limit_per_s = 1000000\n\
         rate_limit_burst = 1000000\n",
        toml_str(amqp_url),
        toml_str(database_url),
        toml_str(&directory.display().to_string())
    )
}

/// `s` escaped for a TOML basic string.
fn toml_str(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

impl Gateway {
    /// Starts `signpost --config CONFIG run` with no `SIGNPOST_*` variables from our
    /// environment (they would override the file) except the log filter.
    pub fn spawn(
        bin: &Path,
        config: &Path,
        addr: SocketAddr,
        log: PathBuf,
    ) -> Result<Self, String> {
        let log_file =
            File::create(&log).map_err(|e| format!("cannot create {}: {e}", log.display()))?;
        let mut cmd = Command::new(bin);
        cmd.arg("--config").arg(config).arg("run");
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("SIGNPOST_") {
                cmd.env_remove(key);
            }
        }
        let child = cmd
            .env(
                "SIGNPOST_LOG",
                std::env::var("SIGNPOST_BENCH_LOG")
                    .unwrap_or_else(|_| "warn,lapin=error,lapin::channels=off".to_owned()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
        Ok(Gateway { child, addr, log })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Polls `GET /readyz` (a new connection each time, every 2 ms) until it answers 200;
    /// fails if the process exits or `limit` passes.
    pub async fn wait_ready(&mut self, limit: Duration) -> Result<(), String> {
        let start = Instant::now();
        loop {
            if readyz(self.addr).await {
                return Ok(());
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("signpost exited before it was ready ({status})"));
            }
            if start.elapsed() > limit {
                return Err(format!(
                    "signpost did not answer 200 on /readyz within {} s",
                    limit.as_secs()
                ));
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// Whether the process is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The last `n` lines of its log.
    pub fn log_tail(&self, n: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// SIGTERM, up to 10 s to finish, then SIGKILL.
    pub fn stop(&mut self) {
        if !self.running() {
            return;
        }
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if !self.running() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn readyz(addr: SocketAddr) -> bool {
    let Ok(stream) = TcpStream::connect(addr).await else {
        return false;
    };
    let Ok((mut sender, conn)) =
        hyper::client::conn::http1::handshake::<_, Empty<bytes::Bytes>>(TokioIo::new(stream)).await
    else {
        return false;
    };
    let driver = tokio::spawn(conn);
    let req = http::Request::get("/readyz")
        .header(http::header::HOST, addr.to_string())
        .body(Empty::new());
    let ok = match req {
        Ok(req) => match sender.send_request(req).await {
            Ok(resp) => {
                let ok = resp.status() == http::StatusCode::OK;
                let _ = resp.into_body().collect().await;
                ok
            }
            Err(_) => false,
        },
        Err(_) => false,
    };
    driver.abort();
    ok
}
