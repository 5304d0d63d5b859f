//! The backing services the demo and the tests need on this machine:
//! RabbitMQ on 127.0.0.1:5672 and PostgreSQL on 127.0.0.1:5432. Each
//! `ensure_*` leaves the service listening, installing (as root, via apt)
//! and starting it if needed.

use std::fs;
use std::path::Path;
use std::time::Duration;

use crate::host::{find_program, port_open, wait_for_port, Host};
use crate::proc::{say, Cmd, Failure, Result};

const RABBITMQ_PORT: u16 = 5672;
const RABBITMQ_START_LIMIT: Duration = Duration::from_secs(120);

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
