//! The system under test, as separate processes from one `signpost` binary: the gateway
//! (`signpost gateway`), the scheme adapter (`signpost adapter fhir-messaging`) and the GP
//! adapter (`signpost adapter fhir-document`), sharing a settings file, a RabbitMQ vhost of the
//! run's own and a SQLite ledger. Also the faults that are not a process: the broker's restart
//! and a ledger location that refuses writes.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Proc {
    pub name: &'static str,
    bin: PathBuf,
    args: Vec<String>,
    config: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

impl Proc {
    pub fn new(name: &'static str, bin: &Path, config: &Path, dir: &Path, args: &[&str]) -> Self {
        Proc {
            name,
            bin: bin.to_owned(),
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            config: config.to_owned(),
            log: dir.join(format!("{name}.log")),
            child: None,
        }
    }

    /// Start it, its stderr appended to `<name>.log` (kept across restarts). No `SIGNPOST_*`
    /// variable of ours reaches it (they would override the settings file) but the log filter.
    pub fn start(&mut self) -> Result<(), String> {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(|e| format!("{}: {e}", self.log.display()))?;
        let mut cmd = Command::new(&self.bin);
        cmd.arg("--config").arg(&self.config).args(&self.args);
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("SIGNPOST_") {
                cmd.env_remove(key);
            }
        }
        let child = cmd
            .env(
                "SIGNPOST_LOG",
                std::env::var("SIGNPOST_CHAOS_LOG")
                    .unwrap_or_else(|_| "warn,lapin=error,lapin::channels=off".to_owned()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", self.bin.display()))?;
        self.child = Some(child);
        Ok(())
    }

    /// SIGKILL, and reap it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and up to `limit` to finish; then SIGKILL. Whether it stopped by itself, cleanly.
    pub fn stop(&mut self, limit: Duration) -> bool {
        let Some(mut c) = self.child.take() else {
            return true;
        };
        if let Ok(Some(status)) = c.try_wait() {
            return status.success();
        }
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(c.id().to_string())
            .status();
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = c.try_wait() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = c.kill();
        let _ = c.wait();
        false
    }

    /// Whether it is still running; an exit is noted in the log.
    pub fn running(&mut self) -> bool {
        match self.child.as_mut().map(|c| c.try_wait()) {
            Some(Ok(None)) => true,
            Some(Ok(Some(status))) => {
                if let Ok(mut f) = OpenOptions::new().append(true).open(&self.log) {
                    let _ = writeln!(f, "chaos: {} exited: {status}", self.name);
                }
                false
            }
            _ => false,
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(5));
    }
}

/// The settings every process of a run shares: short delivery time limit and retry delays, so
/// that recovery is bounded by seconds rather than the production back-off.
pub fn settings(addr: SocketAddr, amqp_url: &str, database_url: &str, directory: &Path) -> String {
    let s = |v: &str| v.replace('\\', "\\\\").replace('"', "\\\"");
    format!(
        "# Written by signpost-chaos.\n\
         listen = \"{addr}\"\n\
         plain_http = true\n\
         amqp_url = \"{}\"\n\
         database_url = \"{}\"\n\
         directory = \"{}\"\n\
         adapters = []\n\
         \n\
         [delivery]\n\
         timeout_ms = 2000\n\
         retry_delays_ms = [200, 500, 1000]\n\
         \n\
         [http]\n\
         rate_limit_per_s = 1000000\n\
         rate_limit_burst = 1000000\n",
        s(amqp_url),
        s(database_url),
        s(&directory.display().to_string())
    )
}

/// `rabbitmqctl ARGS`, its failure as text.
pub fn rabbitmqctl(args: &[&str]) -> Result<String, String> {
    let out = Command::new("rabbitmqctl")
        .args(args)
        .output()
        .map_err(|e| format!("rabbitmqctl: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "rabbitmqctl {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Messages in the vhost's queues (ready and unacknowledged), by queue, non-empty ones only.
pub fn queued(vhost: &str) -> Result<Vec<(String, u64)>, String> {
    let out = rabbitmqctl(&[
        "-q",
        "list_queues",
        "-p",
        vhost,
        "name",
        "messages",
        "--no-table-headers",
    ])?;
    Ok(out
        .lines()
        .filter_map(|l| {
            let mut parts = l.split_whitespace();
            let name = parts.next()?.to_owned();
            let n: u64 = parts.next()?.parse().ok()?;
            (n > 0).then_some((name, n))
        })
        .collect())
}

/// Stop the broker's application (every connection dropped), wait `down`, start it again.
/// Returns when it accepts connections again.
pub async fn restart_broker(down: Duration) -> Result<(), String> {
    tokio::task::spawn_blocking(move || {
        rabbitmqctl(&["-q", "stop_app"])?;
        std::thread::sleep(down);
        rabbitmqctl(&["-q", "start_app"])?;
        rabbitmqctl(&["-q", "await_startup"]).map(drop)
    })
    .await
    .map_err(|e| e.to_string())?
}

/// A small filesystem of the run's own for the ledger (a tmpfs; needs root), so that the disk
/// can be made full and then freed again.
pub struct LedgerDisk {
    pub dir: PathBuf,
    filler: PathBuf,
}

impl LedgerDisk {
    pub fn mount(dir: &Path, size_mb: u64) -> Result<Self, String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size_mb}m")])
            .arg("signpost-chaos")
            .arg(dir)
            .output()
            .map_err(|e| format!("mount: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "cannot mount a tmpfs for the ledger at {} (the ledger-full scenario needs root): {}",
                dir.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(LedgerDisk {
            dir: dir.to_owned(),
            filler: dir.join("filler"),
        })
    }

    /// Take every free byte. Returns how many bytes the filler took.
    pub fn fill(&self) -> Result<u64, String> {
        let mut f = File::create(&self.filler).map_err(|e| format!("filler: {e}"))?;
        let chunk = vec![0u8; 1 << 20];
        let mut written = 0u64;
        loop {
            match f.write(&chunk) {
                Ok(0) => break,
                Ok(n) => written += n as u64,
                Err(_) => break,
            }
        }
        // Whatever is left below a page.
        let _ = f.write_all(&chunk[..4096]);
        Ok(written)
    }

    pub fn free(&self) {
        let _ = std::fs::remove_file(&self.filler);
    }
}

impl Drop for LedgerDisk {
    fn drop(&mut self) {
        self.free();
        let _ = Command::new("umount").arg(&self.dir).status();
    }
}
