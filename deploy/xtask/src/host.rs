//! Facts about, and changes to, the machine itself: whether we are root,
//! finding programs (including in the sbin directories), installing Debian
//! packages with apt-get, and probing / waiting for local TCP ports.

use std::env;
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::thread;
use std::time::{Duration, Instant};

use crate::proc::{say, Cmd, Failure, Result};

/// Per-run memory of what we already learned or did to the host.
#[derive(Default)]
pub struct Host {
    root: Option<bool>,
    apt_updated: bool,
}

impl Host {
    /// Whether we run as root (`id -u` prints 0); asked once per run.
    pub fn is_root(&mut self) -> Result<bool> {
        if let Some(root) = self.root {
            return Ok(root);
        }
        let uid = Cmd::new("id").arg("-u").output()?;
        let root = uid.trim() == "0";
        self.root = Some(root);
        Ok(root)
    }

    /// Installs Debian packages (`apt-get update` first, once per run).
    /// Fails with `manual_hint` when not root.
    pub fn apt_install(&mut self, packages: &[&str], manual_hint: &str) -> Result {
        if !self.is_root()? {
            return Err(Failure::new(format!(
                "{} is needed but not installed, and xtask installs packages only when run as root",
                packages.join(", ")
            ))
            .hint(manual_hint));
        }
        say(format!("installing {}", packages.join(" ")));
        if !self.apt_updated {
            apt_get().arg("update").run()?;
            self.apt_updated = true;
        }
        apt_get()
            .args(["install", "-y"])
            .args(packages)
            .run()
            .map_err(|f| f.hint(manual_hint))
    }
}

fn apt_get() -> Cmd {
    Cmd::new("apt-get").env("DEBIAN_FRONTEND", "noninteractive")
}

/// Finds `name` on PATH or in the sbin directories (which a non-root PATH
/// often lacks).
pub fn find_program(name: &str) -> Option<PathBuf> {
    let path = env::var_os("PATH").unwrap_or_default();
    env::split_paths(&path)
        .chain(["/usr/local/sbin", "/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// Whether something accepts TCP connections on 127.0.0.1:`port`.
pub fn port_open(port: u16) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok()
}

/// Waits, at most `limit`, for 127.0.0.1:`port` to accept connections.
pub fn wait_for_port(name: &str, port: u16, limit: Duration) -> Result {
    let start = Instant::now();
    let mut next_note = Duration::from_secs(10);
    say(format!(
        "waiting for {name} on 127.0.0.1:{port} (up to {} s)",
        limit.as_secs()
    ));
    loop {
        if port_open(port) {
            say(format!(
                "{name} is up on 127.0.0.1:{port} (after {} s)",
                start.elapsed().as_secs()
            ));
            return Ok(());
        }
        let waited = start.elapsed();
        if waited >= limit {
            return Err(Failure::new(format!(
                "{name} did not accept connections on 127.0.0.1:{port} within {} s",
                limit.as_secs()
            )));
        }
        if waited >= next_note {
            say(format!("still waiting for {name} ({} s)", waited.as_secs()));
            next_note += Duration::from_secs(10);
        }
        thread::sleep(Duration::from_millis(500));
    }
}
