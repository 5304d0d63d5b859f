//! The commands themselves: `demo` and `test`, each preparing the services
//! it needs, building, and then running the demo or the test suite.

use std::env;
use std::ffi::{OsStr, OsString};
use std::path::Path;

use crate::host::{find_program, Host};
use crate::paths::Paths;
use crate::pki::{self, Pki};
use crate::proc::{Cmd, Result};
use crate::python;
use crate::services;

const DEFAULT_AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
const DEFAULT_AMQP_API: &str = "http://guest:guest@127.0.0.1:15672";
const DEFAULT_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// `cargo xtask demo [ARGS...]`: RabbitMQ up, gateway and demo built, then
/// `signpost-demo ARGS...` run in the caller's directory.
pub fn demo(args: &[OsString]) -> Result {
    let paths = Paths::discover()?;
    let mut host = Host::default();
    services::ensure_rabbitmq(&mut host)?;
    paths
        .cargo([
            "build",
            "--package",
            "signpost-gateway",
            "--package",
            "signpost-tests",
            "--bins",
        ])
        .run()?;
    Cmd::new(paths.debug_bin("signpost-demo"))
        .args(args)
        .env("SIGNPOST_BIN", paths.debug_bin("signpost"))
        .run()
}

/// `cargo xtask test [ARGS...]`: RabbitMQ (with its TLS listener), PostgreSQL
/// and the Python venv ready, all binaries built, then
/// `cargo test --workspace --all-targets ARGS...`.
pub fn test(args: &[OsString]) -> Result {
    let paths = Paths::discover()?;
    let mut host = Host::default();
    services::ensure_rabbitmq(&mut host)?;
    let amqps_url = match env::var_os("SIGNPOST_TEST_AMQPS_URL").filter(|v| !v.is_empty()) {
        Some(url) => url,
        None => {
            let pki = pki::ensure(&mut host, &paths.target.join("rabbitmq-tls"))?;
            services::ensure_rabbitmq_tls(&mut host, &pki)?;
            OsString::from(amqps_test_url(&pki))
        }
    };
    services::ensure_postgres(&mut host)?;
    ensure_peer_tools(&mut host)?;
    let python = python::ensure_venv(&paths)?;
    let examples = Cmd::new("bash")
        .arg(paths.workspace.join("tests/peers/fetch_r4_examples.sh"))
        .arg(&paths.target)
        .output()?;

    paths.cargo(["build", "--workspace", "--bins"]).run()?;

    let mut test = paths
        .cargo(["test", "--workspace", "--all-targets"])
        .args(args)
        .env("SIGNPOST_BIN", paths.debug_bin("signpost"))
        .env(
            "SIGNPOST_TEST_AMQP_URL",
            env_or("SIGNPOST_TEST_AMQP_URL", DEFAULT_AMQP_URL),
        )
        .env("SIGNPOST_TEST_AMQPS_URL", amqps_url)
        .env(
            "SIGNPOST_TEST_AMQP_API",
            env_or("SIGNPOST_TEST_AMQP_API", DEFAULT_AMQP_API),
        )
        .env(
            "SIGNPOST_TEST_POSTGRES_URL",
            env_or("SIGNPOST_TEST_POSTGRES_URL", DEFAULT_POSTGRES_URL),
        );
    if let Some(python) = python {
        test = test.env("SIGNPOST_TEST_PYTHON", python);
    }
    test.env("SIGNPOST_TEST_R4_EXAMPLES", examples.trim()).run()
}

/// The independent peers the tests use come from registries: Python (a venv for PyPI packages),
/// npm (HL7's R4 examples) and Debian (poppler-utils, qpdf). Install them with apt-get when they
/// are missing.
fn ensure_peer_tools(host: &mut Host) -> Result {
    let venv_works = find_program("python3").is_some()
        && Cmd::new("python3")
            .args(["-c", "import ensurepip, venv"])
            .output()
            .is_ok();
    if !venv_works {
        host.apt_install(
            &["python3", "python3-venv", "python3-pip"],
            "install Python 3 with venv support: apt-get install python3 python3-venv",
        )?;
    }
    if find_program("npm").is_none() {
        host.apt_install(&["npm"], "install npm: apt-get install npm")?;
    }
    // The letter tests read the PDFs Signpost renders with poppler's pdftotext (an
    // independent PDF reader) and check their structure with qpdf.
    if find_program("pdftotext").is_none() || find_program("qpdf").is_none() {
        host.apt_install(
            &["poppler-utils", "qpdf"],
            "install poppler-utils and qpdf: apt-get install poppler-utils qpdf",
        )?;
    }
    Ok(())
}

/// The tests' amqps:// URL for the local TLS listener: the guest user (which
/// RabbitMQ lets in from loopback only), the default vhost (the tests put
/// their own), and the test PKI's CA and client certificate.
fn amqps_test_url(pki: &Pki) -> String {
    format!(
        "amqps://guest:guest@localhost:5671/%2f?cacertfile={}&certfile={}&keyfile={}",
        query_value(&pki.ca()),
        query_value(&pki.client_cert()),
        query_value(&pki.client_key()),
    )
}

/// A path as a URL query value: bytes other than unreserved ones and `/`
/// percent-encoded.
fn query_value(path: &Path) -> String {
    let mut out = String::new();
    for b in path.to_string_lossy().bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The caller's value of `key` if set and non-empty, else `default`.
fn env_or(key: &str, default: &str) -> OsString {
    env::var_os(key)
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| OsStr::new(default).to_owned())
}
