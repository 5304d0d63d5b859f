//! The backing services the demo and the tests need on this machine:
//! RabbitMQ on 127.0.0.1:5672 (and, for the tests, with TLS on
//! 127.0.0.1:5671) and PostgreSQL on 127.0.0.1:5432. Each `ensure_*` leaves
//! the service listening, installing (as root, via apt) and starting it if
//! needed.

use std::fs;
use std::path::Path;
use std::time::Duration;

use crate::host::{find_program, port_open, wait_for_port, Host};
use crate::pki::Pki;
use crate::proc::{say, Cmd, Failure, Result};

const RABBITMQ_PORT: u16 = 5672;
const RABBITMQ_START_LIMIT: Duration = Duration::from_secs(120);
const RABBITMQ_TLS_PORT: u16 = 5671;
/// Where the Debian package reads its configuration: `rabbitmq.conf`, then
/// `conf.d/*.conf` in name order (RabbitMQ 3.9 and later).
const RABBITMQ_ETC: &str = "/etc/rabbitmq";
/// The TLS listener's settings, under `RABBITMQ_ETC`.
const RABBITMQ_TLS_CONF: &str = "conf.d/90-signpost-tls.conf";
/// The broker's copy of the test CA, server certificate and key, under
/// `RABBITMQ_ETC`: owned by the rabbitmq user, and not under the target
/// directory, so `cargo clean` cannot stop the broker from starting.
const RABBITMQ_TLS_DIR: &str = "signpost-tls";

const POSTGRES_PORT: u16 = 5432;
const POSTGRES_START_LIMIT: Duration = Duration::from_secs(60);
const POSTGRES_ETC: &str = "/etc/postgresql";

/// Lines put at the top of `pg_hba.conf` of a cluster xtask installed.
const PG_HBA_TRUST: &str = "\
# Added by `cargo xtask test` (Signpost): trust local connections.
host all all 127.0.0.1/32 trust
host all all ::1/128 trust
local all all trust
";

/// Makes sure RabbitMQ accepts AMQP connections on 127.0.0.1:5672.
pub fn ensure_rabbitmq(host: &mut Host) -> Result {
    if port_open(RABBITMQ_PORT) {
        say(format!("RabbitMQ is up on 127.0.0.1:{RABBITMQ_PORT}"));
        return Ok(());
    }
    say(format!(
        "RabbitMQ is not listening on 127.0.0.1:{RABBITMQ_PORT}; starting it"
    ));
    let server = match find_program("rabbitmq-server") {
        Some(server) => server,
        None => {
            host.apt_install(
                &["rabbitmq-server"],
                "install RabbitMQ (e.g. `sudo apt-get install rabbitmq-server`) \
                 and start it with `sudo rabbitmq-server -detached`",
            )?;
            find_program("rabbitmq-server")
                .ok_or("rabbitmq-server is still not found after installing it")?
        }
    };
    // The package's install scripts may have started it already.
    if port_open(RABBITMQ_PORT) {
        say(format!("RabbitMQ is up on 127.0.0.1:{RABBITMQ_PORT}"));
        return Ok(());
    }
    if !host.is_root()? {
        return Err(Failure::new(
            "RabbitMQ is not running, and xtask starts it only when run as root",
        )
        .hint("start it yourself: `sudo rabbitmq-server -detached`"));
    }
    // `-detached` daemonises with its stdio on /dev/null, so inheriting
    // ours does not keep a pipe open after we exit.
    Cmd::new(&server)
        .arg("-detached")
        .run()
        .map_err(|f| f.hint("see the logs under /var/log/rabbitmq/"))?;
    wait_for_port("RabbitMQ", RABBITMQ_PORT, RABBITMQ_START_LIMIT)
        .map_err(|f| f.hint("see the logs under /var/log/rabbitmq/"))
}

/// The RabbitMQ settings for the test TLS listener, with the broker's files
/// in `dir`.
fn rabbitmq_tls_conf(dir: &Path) -> String {
    let dir = dir.display();
    format!(
        "\
# Added by `cargo xtask test` (Signpost): a TLS listener for the amqps
# tests, on loopback only, that requires a client certificate signed by
# the test CA. The plain listener (rabbitmq.conf) is left as it is.
listeners.ssl.signpost = 127.0.0.1:{RABBITMQ_TLS_PORT}
ssl_options.cacertfile = {dir}/ca.pem
ssl_options.certfile = {dir}/server.pem
ssl_options.keyfile = {dir}/server.key
ssl_options.verify = verify_peer
ssl_options.fail_if_no_peer_cert = true
"
    )
}

/// Makes sure RabbitMQ (already up on 127.0.0.1:5672) also listens with TLS
/// on 127.0.0.1:5671, requiring client certificates signed by the test CA of
/// `pki`. Writes the listener's settings and the broker's copy of the
/// certificates under /etc/rabbitmq when they differ, and restarts the
/// broker only when the TLS listener is not up yet (or its settings
/// changed); renewed certificates alone are picked up without a restart.
pub fn ensure_rabbitmq_tls(host: &mut Host, pki: &Pki) -> Result {
    let etc = Path::new(RABBITMQ_ETC);
    let dir = etc.join(RABBITMQ_TLS_DIR);
    let conf_path = etc.join(RABBITMQ_TLS_CONF);
    let conf = rabbitmq_tls_conf(&dir);
    let mut files = Vec::new();
    for (name, from) in [
        ("ca.pem", pki.ca()),
        ("server.pem", pki.server_cert()),
        ("server.key", pki.server_key()),
    ] {
        let bytes = fs::read(&from)
            .map_err(|e| Failure::new(format!("cannot read {}: {e}", from.display())))?;
        files.push((dir.join(name), bytes));
    }
    let conf_current = fs::read(&conf_path).is_ok_and(|c| c == conf.as_bytes());
    // The key goes with the server certificate, and only the rabbitmq user
    // may read the broker's copy: compare the certificates.
    let files_current = files
        .iter()
        .filter(|(path, _)| path.extension().is_some_and(|e| e == "pem"))
        .all(|(path, bytes)| fs::read(path).is_ok_and(|b| b == *bytes));
    let listening = port_open(RABBITMQ_TLS_PORT);
    if conf_current && files_current && listening {
        say(format!(
            "RabbitMQ is up with TLS on 127.0.0.1:{RABBITMQ_TLS_PORT}"
        ));
        return Ok(());
    }
    if !host.is_root()? {
        return Err(Failure::new(format!(
            "RabbitMQ has no TLS listener for the tests on 127.0.0.1:{RABBITMQ_TLS_PORT} \
             (or an outdated one), and xtask configures it only when run as root"
        ))
        .hint(format!(
            "run `cargo xtask test` once as root, or put {} in {} with the files of {} \
             and restart RabbitMQ, or set SIGNPOST_TEST_AMQPS_URL to an amqps:// URL \
             (with cacertfile, certfile and keyfile) of a broker that requires client \
             certificates",
            RABBITMQ_TLS_CONF,
            etc.display(),
            pki.dir.display()
        )));
    }
    if !files_current {
        say(format!(
            "installing the test TLS certificates in {}",
            dir.display()
        ));
        install_broker_files(&dir, &files)?;
    }
    if !conf_current {
        say(format!("writing {}", conf_path.display()));
        if let Some(parent) = conf_path.parent() {
            fs::create_dir_all(parent)
                .map_err(|e| Failure::new(format!("cannot create {}: {e}", parent.display())))?;
        }
        fs::write(&conf_path, &conf)
            .map_err(|e| Failure::new(format!("cannot write {}: {e}", conf_path.display())))?;
    }
    if listening && conf_current {
        // Only the certificates changed: new TLS connections read them again
        // once Erlang's PEM cache is cleared.
        say("RabbitMQ's TLS listener is up; making it read the new certificates");
        return Cmd::new(rabbitmqctl()?)
            .args(["-q", "eval", "ssl:clear_pem_cache()."])
            .output()
            .map(drop);
    }
    restart_rabbitmq(&conf_path)
}

/// The broker's copy of the TLS files, readable by the rabbitmq user only
/// (the certificates by everyone).
fn install_broker_files(dir: &Path, files: &[(std::path::PathBuf, Vec<u8>)]) -> Result {
    fs::create_dir_all(dir)
        .map_err(|e| Failure::new(format!("cannot create {}: {e}", dir.display())))?;
    for (path, bytes) in files {
        fs::write(path, bytes)
            .map_err(|e| Failure::new(format!("cannot write {}: {e}", path.display())))?;
    }
    Cmd::new("chown")
        .args(["-R", "rabbitmq:rabbitmq"])
        .arg(dir)
        .run()?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |path: &Path, mode: u32| {
            fs::set_permissions(path, fs::Permissions::from_mode(mode))
                .map_err(|e| Failure::new(format!("cannot chmod {}: {e}", path.display())))
        };
        mode(dir, 0o755)?;
        for (path, _) in files {
            let private = path.extension().is_some_and(|e| e == "key");
            mode(path, if private { 0o600 } else { 0o644 })?;
        }
    }
    Ok(())
}

fn rabbitmqctl() -> Result<std::path::PathBuf> {
    find_program("rabbitmqctl").ok_or_else(|| Failure::new("rabbitmqctl not found"))
}

/// Stops RabbitMQ (if it runs) and starts it again with `-detached`, to read
/// its configuration. If it does not come back with both listeners, starts
/// it once more without `tls_conf`, so the plain listener the demo and the
/// other tests use keeps working, and fails.
fn restart_rabbitmq(tls_conf: &Path) -> Result {
    let logs = "see the logs under /var/log/rabbitmq/";
    let ctl = rabbitmqctl()?;
    let server = find_program("rabbitmq-server").ok_or("rabbitmq-server not found")?;
    if port_open(RABBITMQ_PORT) {
        say("restarting RabbitMQ to open its TLS listener");
        // `shutdown` waits for the node to exit, unlike `stop`.
        Cmd::new(&ctl)
            .args(["-q", "shutdown"])
            .run()
            .map_err(|f| f.hint(logs))?;
    }
    let start = || -> Result {
        Cmd::new(&server)
            .arg("-detached")
            .run()
            .map_err(|f| f.hint(logs))?;
        wait_for_port("RabbitMQ", RABBITMQ_PORT, RABBITMQ_START_LIMIT)?;
        Cmd::new(&ctl)
            .args(["-q", "await_startup"])
            .run()
            .map_err(|f| f.hint(logs))
    };
    let started = start()
        .and_then(|()| wait_for_port("RabbitMQ (TLS)", RABBITMQ_TLS_PORT, Duration::from_secs(30)));
    let Err(failure) = started else {
        return Ok(());
    };
    say(format!(
        "RabbitMQ did not come up with TLS; removing {} and starting it without",
        tls_conf.display()
    ));
    let _ = fs::remove_file(tls_conf);
    if port_open(RABBITMQ_PORT) {
        let _ = Cmd::new(&ctl).args(["-q", "shutdown"]).run();
    }
    start()?;
    Err(failure.hint(logs))
}

/// Makes sure PostgreSQL accepts connections on 127.0.0.1:5432.
pub fn ensure_postgres(host: &mut Host) -> Result {
    if port_open(POSTGRES_PORT) {
        say(format!("PostgreSQL is up on 127.0.0.1:{POSTGRES_PORT}"));
        return Ok(());
    }
    say(format!(
        "PostgreSQL is not listening on 127.0.0.1:{POSTGRES_PORT}; starting it"
    ));
    let etc = Path::new(POSTGRES_ETC);
    let installed_now = !etc.is_dir();
    if installed_now {
        host.apt_install(
            &["postgresql"],
            "install PostgreSQL (e.g. `sudo apt-get install postgresql`), start it, \
             and allow `postgres` to connect over 127.0.0.1 without a password",
        )?;
    }
    let version = cluster_version(etc)?;
    let start_hint = format!(
        "start it yourself: `sudo pg_ctlcluster --skip-systemctl-redirect {version} main start`"
    );
    let pg_ctlcluster = find_program("pg_ctlcluster").ok_or_else(|| {
        Failure::new("pg_ctlcluster not found (package postgresql-common)").hint(&start_hint)
    })?;
    let ctl = |action: &str| {
        Cmd::new(&pg_ctlcluster)
            .arg("--skip-systemctl-redirect")
            .arg(&version)
            .args(["main", action])
    };

    if installed_now {
        trust_local_connections(etc, &version)?;
        // The package's install scripts may have started it already; then
        // it must re-read pg_hba.conf.
        if port_open(POSTGRES_PORT) {
            ctl("reload").run()?;
            say(format!("PostgreSQL is up on 127.0.0.1:{POSTGRES_PORT}"));
            return Ok(());
        }
    }
    ctl("start").run().map_err(|f| f.hint(&start_hint))?;
    wait_for_port("PostgreSQL", POSTGRES_PORT, POSTGRES_START_LIMIT).map_err(|f| {
        f.hint(format!(
            "see /var/log/postgresql/postgresql-{version}-main.log"
        ))
    })
}

/// The highest PostgreSQL version with configuration under `/etc/postgresql`.
fn cluster_version(etc: &Path) -> Result<String> {
    let entries = fs::read_dir(etc)
        .map_err(|e| Failure::new(format!("cannot list {}: {e}", etc.display())))?;
    let mut best: Option<(Vec<u32>, String)> = None;
    for entry in entries.flatten() {
        if !entry.path().is_dir() {
            continue;
        }
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        let Ok(key) = name
            .split('.')
            .map(str::parse::<u32>)
            .collect::<std::result::Result<Vec<u32>, _>>()
        else {
            continue;
        };
        if best.as_ref().is_none_or(|(best_key, _)| key > *best_key) {
            best = Some((key, name));
        }
    }
    best.map(|(_, name)| name).ok_or_else(|| {
        Failure::new(format!(
            "no PostgreSQL version directory under {}",
            etc.display()
        ))
    })
}

/// Puts trust rules for local and loopback connections at the top of the
/// cluster's `pg_hba.conf`. Only used on a cluster xtask itself installed.
fn trust_local_connections(etc: &Path, version: &str) -> Result {
    let hba = etc.join(version).join("main").join("pg_hba.conf");
    let old = fs::read_to_string(&hba)
        .map_err(|e| Failure::new(format!("cannot read {}: {e}", hba.display())))?;
    if old.starts_with(PG_HBA_TRUST) {
        return Ok(());
    }
    say(format!("trusting local connections in {}", hba.display()));
    fs::write(&hba, format!("{PG_HBA_TRUST}\n{old}"))
        .map_err(|e| Failure::new(format!("cannot write {}: {e}", hba.display())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::env;
    use std::process;

    #[test]
    fn cluster_version_picks_the_highest_numeric_directory() {
        let etc = env::temp_dir().join(format!("xtask-pg-etc-{}", process::id()));
        for dir in ["9.6", "15", "13", "not-a-version"] {
            fs::create_dir_all(etc.join(dir)).unwrap();
        }
        fs::write(etc.join("99"), "a file, not a cluster").unwrap();
        let found = cluster_version(&etc);
        fs::remove_dir_all(&etc).unwrap();
        assert_eq!(found.unwrap(), "15");
    }

    #[test]
    fn trust_rules_go_on_top_once() {
        let etc = env::temp_dir().join(format!("xtask-pg-hba-{}", process::id()));
        let main = etc.join("15").join("main");
        fs::create_dir_all(&main).unwrap();
        fs::write(main.join("pg_hba.conf"), "local all postgres peer\n").unwrap();
        trust_local_connections(&etc, "15").unwrap();
        trust_local_connections(&etc, "15").unwrap();
        let hba = fs::read_to_string(main.join("pg_hba.conf")).unwrap();
        fs::remove_dir_all(&etc).unwrap();
        assert_eq!(hba, format!("{PG_HBA_TRUST}\nlocal all postgres peer\n"));
    }
}
