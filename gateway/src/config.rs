//! Settings: plain typed data, read from a TOML file (`--config`) and then from `SIGNPOST_*`
//! environment variables, which win. Every setting is documented here and in the README.
//!
//! | setting | env | default |
//! |---|---|---|
//! | `listen` | `SIGNPOST_LISTEN` | `127.0.0.1:8080` |
//! | `amqp_url` | `SIGNPOST_AMQP_URL` | `amqp://guest:guest@127.0.0.1:5672/%2f` |
//! | `database_url` | `SIGNPOST_DATABASE_URL` | `sqlite://signpost.db` (created if missing) |
//! | `directory` | `SIGNPOST_DIRECTORY` | `deploy/directory.example.json` |
//! | `adapters` | `SIGNPOST_ADAPTERS` (comma list) | all: `fhir-messaging,fhir-document,webhook,hl7v2` |
//! | `source_endpoint` | `SIGNPOST_SOURCE_ENDPOINT` | `https://signpost.example.org/fhir/Id/gateway\|signpost` |
//! | `delivery.timeout_ms` | `SIGNPOST_DELIVERY_TIMEOUT_MS` | `10000` |
//! | `delivery.retry_delays_ms` | `SIGNPOST_RETRY_DELAYS_MS` (comma list) | `1000,5000,30000,120000,600000,3600000` |
//! | `delivery.retry_horizon_s` | `SIGNPOST_RETRY_HORIZON_S` | `259200` (72 h) |
//! | `delivery.prefetch` | – | `16` (handler calls at once per queue; AMQP prefetch 8 times this) |
//! | `delivery.ca_file`, `delivery.client_cert`, `delivery.client_key` | `SIGNPOST_DELIVERY_CA_FILE`, `_CLIENT_CERT`, `_CLIENT_KEY` | public roots; no client certificate |
//! | `http.max_body_bytes` | – | `10485760` |
//! | `http.request_timeout_ms` | – | `5000` (BaRS: all requests within 5 s) |
//! | `http.max_json_depth` | – | `64` |
//! | `http.max_header_bytes` | – | `65536` |
//! | `http.header_timeout_ms` | – | `10000` |
//! | `http.rate_limit_per_s`, `http.rate_limit_burst` | – | `200`, `400` per client |
//! | `tls.cert`, `tls.key`, `tls.client_ca`, `tls.reload_interval_ms` | `SIGNPOST_TLS_CERT`, `_KEY`, `_CLIENT_CA` | none: required unless `plain_http` |
//! | `plain_http` | `SIGNPOST_PLAIN_HTTP` | `false` (`true` only with a loopback `listen`) |
//! | `hl7v2_listen` | `SIGNPOST_HL7V2_LISTEN` | none (no MLLP listener) |
//! | `webhook_secrets.<endpoint-id>` | `SIGNPOST_WEBHOOK_SECRET_<ENDPOINT_ID>` | none (required for each signed-webhook endpoint) |
//! | `mesh.url`, `mesh.mailbox`, `mesh.password`, `mesh.shared_key`, `mesh.ods` | `SIGNPOST_MESH_URL`, `_MAILBOX`, `_PASSWORD`, `_SHARED_KEY`, `_ODS` | none (required when the directory has a `mesh` endpoint) |
//! | `mesh.poll_interval_ms` | `SIGNPOST_MESH_POLL_INTERVAL_MS` | `60000` |
//! | `mesh.chunk_bytes` | `SIGNPOST_MESH_CHUNK_BYTES` | `20971520` (20 MiB) |
//! | `mesh.ca_file`, `mesh.client_cert`, `mesh.client_key` | `SIGNPOST_MESH_CA_FILE`, `_CLIENT_CERT`, `_CLIENT_KEY` | public roots; no client certificate |
//! | `letter_ack_timeout_s` | `SIGNPOST_LETTER_ACK_TIMEOUT_S` | `172800` (48 h) |
//!
//! The AMQP and database URLs may hold passwords: they live in [`Secret`], which prints as
//! `***`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

pub use signpost_bus::Secret;

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    pub listen: SocketAddr,
    pub amqp_url: Secret,
    pub database_url: Secret,
    pub directory: PathBuf,
    /// Adapters `signpost run` starts beside the gateway.
    pub adapters: Vec<String>,
    /// This gateway's own `system|value`, sent as `MessageHeader.source.endpoint`.
    pub source_endpoint: String,
    pub delivery: Delivery,
    pub http: Http,
    /// Each signed-webhook endpoint's secret, by Endpoint id (`[webhook_secrets]` table;
    /// `SIGNPOST_WEBHOOK_SECRET_<ID>` with the id upper-cased and `-` as `_`).
    pub webhook_secrets: std::collections::BTreeMap<String, Secret>,
    /// Where the `hl7v2` adapter listens for MLLP from HL7 v2 GP systems; none by default.
    pub hl7v2_listen: Option<SocketAddr>,
    /// Signpost's MESH mailbox, for GP Connect Send Document (`[mesh]`); none by default.
    pub mesh: Option<Mesh>,
    /// Letters sent over MESH: how long to wait for the business acknowledgement before the
    /// timeline shows `letter-ack-missing` and an alert is raised.
    pub letter_ack_timeout_s: u64,
    /// Mutual TLS on the listener (`[tls]`). Required unless `plain_http` is set.
    pub tls: Option<Tls>,
    /// Plain HTTP without client identities, for development on a loopback address only:
    /// every caller may do everything. Refused with a non-loopback `listen`.
    pub plain_http: bool,
}

/// Signpost's own MESH mailbox. Passwords and keys are [`Secret`]s.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mesh {
    /// The MESH server's root URL (`https://msg.int.spine2.ncrs.nhs.uk`); plain `http` only on
    /// loopback (a local MESH sandbox).
    pub url: String,
    pub mailbox: String,
    pub password: Secret,
    /// The environment's shared HMAC key for the `NHSMESH` authorisation header.
    pub shared_key: Secret,
    /// `Mex-LocalID` and the ODS code in `Mex-Subject` when the scheme has none.
    pub ods: String,
    /// How often the inbox is polled for acknowledgements and error reports.
    #[serde(default = "Mesh::default_poll_interval_ms")]
    pub poll_interval_ms: u64,
    /// Messages over this size are sent in chunks of this size (MESH takes up to 100 MB per
    /// chunk; 20 MB is the usual client choice).
    #[serde(default = "Mesh::default_chunk_bytes")]
    pub chunk_bytes: usize,
    /// PEM file of the CA that signs the MESH server's certificate (the NHS's private CA);
    /// the public roots when unset.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// PEM files of Signpost's MESH client certificate (chain) and its private key: MESH
    /// identifies mailboxes' systems by them.
    #[serde(default)]
    pub client_cert: Option<PathBuf>,
    #[serde(default)]
    pub client_key: Option<PathBuf>,
}

impl Mesh {
    fn default_poll_interval_ms() -> u64 {
        60_000
    }
    fn default_chunk_bytes() -> usize {
        20 * 1024 * 1024
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Delivery {
    pub timeout_ms: u64,
    pub retry_delays_ms: Vec<u64>,
    pub retry_horizon_s: u64,
    pub prefetch: u16,
    /// PEM file of the CA that signs scheme and GP system endpoints' certificates, when it is
    /// a private one; the public roots when unset.
    pub ca_file: Option<PathBuf>,
    /// PEM files of the client certificate (chain) and key the adapters present to scheme and
    /// GP system endpoints that ask for one (mutual TLS).
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
}

impl Delivery {
    /// The adapters' outbound TLS files.
    pub fn tls(&self) -> signpost_bus::http::TlsFiles {
        signpost_bus::http::TlsFiles {
            ca: self.ca_file.clone(),
            client_cert: self.client_cert.clone(),
            client_key: self.client_key.clone(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Http {
    pub max_body_bytes: usize,
    pub request_timeout_ms: u64,
    /// Deepest JSON nesting accepted in a body (arrays and objects); deeper gets 400.
    pub max_json_depth: usize,
    /// Largest request head (request line and headers) accepted, in bytes.
    pub max_header_bytes: usize,
    /// Time a client gets to send the whole request head.
    pub header_timeout_ms: u64,
    /// Requests per second each client (each certificate identity; each address on plain
    /// HTTP) may make on average, and the burst it may make at once; past them, 429.
    pub rate_limit_per_s: u32,
    pub rate_limit_burst: u32,
}

/// The listener's TLS: the server certificate and key, and the CA whose client certificates
/// are accepted (mutual TLS). The files are read again when they change.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Tls {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: PathBuf,
    /// How often the files are checked for a change.
    #[serde(default = "Tls::default_reload_interval_ms")]
    pub reload_interval_ms: u64,
}

impl Tls {
    fn default_reload_interval_ms() -> u64 {
        10_000
    }
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            amqp_url: Secret::new("amqp://guest:guest@127.0.0.1:5672/%2f"),
            database_url: Secret::new("sqlite://signpost.db"),
            directory: PathBuf::from("deploy/directory.example.json"),
            adapters: vec![
                signpost_adapter_fhir_messaging::NAME.to_owned(),
                signpost_adapter_fhir_document::NAME.to_owned(),
                signpost_adapter_webhook::NAME.to_owned(),
                "hl7v2".to_owned(),
                signpost_adapter_mesh::NAME.to_owned(),
            ],
            source_endpoint: "https://signpost.example.org/fhir/Id/gateway|signpost".to_owned(),
            delivery: Delivery::default(),
            http: Http::default(),
            webhook_secrets: Default::default(),
            hl7v2_listen: None,
            mesh: None,
            letter_ack_timeout_s: 2 * 86_400,
            tls: None,
            plain_http: false,
        }
    }
}

impl Default for Delivery {
    fn default() -> Self {
        Delivery {
            timeout_ms: 10_000,
            retry_delays_ms: vec![1_000, 5_000, 30_000, 120_000, 600_000, 3_600_000],
            retry_horizon_s: 72 * 3600,
            prefetch: 16,
            ca_file: None,
            client_cert: None,
            client_key: None,
        }
    }
}

impl Default for Http {
    fn default() -> Self {
        Http {
            max_body_bytes: 10 * 1024 * 1024,
            request_timeout_ms: 5_000,
            max_json_depth: 64,
            max_header_bytes: 64 * 1024,
            header_timeout_ms: 10_000,
            rate_limit_per_s: 200,
            rate_limit_burst: 400,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Toml {
        path: String,
        source: toml::de::Error,
    },
    #[error("{name}: {message}")]
    Env { name: &'static str, message: String },
}

impl Settings {
    /// Read `file` (if given), then apply the environment.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let mut settings = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.display().to_string(),
                    source,
                })?;
                toml::from_str(&text).map_err(|source| ConfigError::Toml {
                    path: path.display().to_string(),
                    source,
                })?
            }
            None => Settings::default(),
        };
        settings.apply_env(|name| std::env::var(name).ok())?;
        settings.apply_env_secrets(std::env::vars());
        Ok(settings)
    }

    /// Webhook secrets from `SIGNPOST_WEBHOOK_SECRET_<ID>` variables.
    pub fn apply_env_secrets(&mut self, vars: impl IntoIterator<Item = (String, String)>) {
        for (name, value) in vars {
            if let Some(id) = name.strip_prefix("SIGNPOST_WEBHOOK_SECRET_") {
                let id = id.to_ascii_lowercase().replace('_', "-");
                self.webhook_secrets.insert(id, Secret::new(value));
            }
        }
    }

    /// Apply `SIGNPOST_*` overrides read through `var`.
    pub fn apply_env(&mut self, var: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        if let Some(v) = var("SIGNPOST_LISTEN") {
            self.listen = parse_env("SIGNPOST_LISTEN", &v)?;
        }
        if let Some(v) = var("SIGNPOST_HL7V2_LISTEN") {
            self.hl7v2_listen = Some(parse_env("SIGNPOST_HL7V2_LISTEN", &v)?);
        }
        if let Some(v) = var("SIGNPOST_AMQP_URL") {
            self.amqp_url = Secret::new(v);
        }
        if let Some(v) = var("SIGNPOST_DATABASE_URL") {
            self.database_url = Secret::new(v);
        }
        if let Some(v) = var("SIGNPOST_DIRECTORY") {
            self.directory = PathBuf::from(v);
        }
        if let Some(v) = var("SIGNPOST_ADAPTERS") {
            self.adapters = v
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect();
        }
        if let Some(v) = var("SIGNPOST_SOURCE_ENDPOINT") {
            self.source_endpoint = v;
        }
        if let Some(v) = var("SIGNPOST_DELIVERY_TIMEOUT_MS") {
            self.delivery.timeout_ms = parse_env("SIGNPOST_DELIVERY_TIMEOUT_MS", &v)?;
        }
        if let Some(v) = var("SIGNPOST_RETRY_DELAYS_MS") {
            self.delivery.retry_delays_ms = v
                .split(',')
                .map(|d| parse_env("SIGNPOST_RETRY_DELAYS_MS", d))
                .collect::<Result<_, _>>()?;
        }
        for (name, slot) in [
            ("SIGNPOST_DELIVERY_CA_FILE", &mut self.delivery.ca_file),
            (
                "SIGNPOST_DELIVERY_CLIENT_CERT",
                &mut self.delivery.client_cert,
            ),
            (
                "SIGNPOST_DELIVERY_CLIENT_KEY",
                &mut self.delivery.client_key,
            ),
        ] {
            if let Some(v) = var(name) {
                *slot = Some(PathBuf::from(v));
            }
        }
        if let Some(v) = var("SIGNPOST_RETRY_HORIZON_S") {
            self.delivery.retry_horizon_s = parse_env("SIGNPOST_RETRY_HORIZON_S", &v)?;
        }
        if let Some(v) = var("SIGNPOST_PLAIN_HTTP") {
            self.plain_http = parse_env("SIGNPOST_PLAIN_HTTP", &v)?;
        }
        match (
            var("SIGNPOST_TLS_CERT"),
            var("SIGNPOST_TLS_KEY"),
            var("SIGNPOST_TLS_CLIENT_CA"),
        ) {
            (Some(cert), Some(key), Some(client_ca)) => {
                self.tls = Some(Tls {
                    cert: cert.into(),
                    key: key.into(),
                    client_ca: client_ca.into(),
                    reload_interval_ms: Tls::default_reload_interval_ms(),
                })
            }
            (None, None, None) => {}
            _ => {
                return Err(ConfigError::Env {
                    name: "SIGNPOST_TLS_*",
                    message:
                        "set all of SIGNPOST_TLS_CERT, SIGNPOST_TLS_KEY and SIGNPOST_TLS_CLIENT_CA"
                            .into(),
                })
            }
        }
        if let Some(v) = var("SIGNPOST_LETTER_ACK_TIMEOUT_S") {
            self.letter_ack_timeout_s = parse_env("SIGNPOST_LETTER_ACK_TIMEOUT_S", &v)?;
        }
        self.apply_mesh_env(&var)?;
        Ok(())
    }

    /// `SIGNPOST_MESH_URL`, `_MAILBOX`, `_PASSWORD`, `_SHARED_KEY`, `_ODS` (together they make a
    /// `[mesh]` table when the file has none), `_POLL_INTERVAL_MS`, `_CHUNK_BYTES`, `_CA_FILE`,
    /// `_CLIENT_CERT`, `_CLIENT_KEY`.
    fn apply_mesh_env(&mut self, var: &impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        let names = [
            "SIGNPOST_MESH_URL",
            "SIGNPOST_MESH_MAILBOX",
            "SIGNPOST_MESH_PASSWORD",
            "SIGNPOST_MESH_SHARED_KEY",
            "SIGNPOST_MESH_ODS",
        ];
        let values: Vec<Option<String>> = names.iter().map(|n| var(n)).collect();
        if self.mesh.is_none() && values.iter().any(Option::is_some) {
            let missing: Vec<&str> = names
                .iter()
                .zip(&values)
                .filter(|(_, v)| v.is_none())
                .map(|(n, _)| *n)
                .collect();
            if !missing.is_empty() {
                return Err(ConfigError::Env {
                    name: "SIGNPOST_MESH_*",
                    message: format!(
                        "a MESH mailbox needs all of them; missing {}",
                        missing.join(", ")
                    ),
                });
            }
            self.mesh = Some(Mesh {
                url: String::new(),
                mailbox: String::new(),
                password: Secret::default(),
                shared_key: Secret::default(),
                ods: String::new(),
                poll_interval_ms: Mesh::default_poll_interval_ms(),
                chunk_bytes: Mesh::default_chunk_bytes(),
                ca_file: None,
                client_cert: None,
                client_key: None,
            });
        }
        let Some(mesh) = self.mesh.as_mut() else {
            return Ok(());
        };
        let [url, mailbox, password, shared_key, ods] =
            <[Option<String>; 5]>::try_from(values).unwrap_or_default();
        if let Some(v) = url {
            mesh.url = v;
        }
        if let Some(v) = mailbox {
            mesh.mailbox = v;
        }
        if let Some(v) = password {
            mesh.password = Secret::new(v);
        }
        if let Some(v) = shared_key {
            mesh.shared_key = Secret::new(v);
        }
        if let Some(v) = ods {
            mesh.ods = v;
        }
        if let Some(v) = var("SIGNPOST_MESH_POLL_INTERVAL_MS") {
            mesh.poll_interval_ms = parse_env("SIGNPOST_MESH_POLL_INTERVAL_MS", &v)?;
        }
        if let Some(v) = var("SIGNPOST_MESH_CHUNK_BYTES") {
            mesh.chunk_bytes = parse_env("SIGNPOST_MESH_CHUNK_BYTES", &v)?;
        }
        if let Some(v) = var("SIGNPOST_MESH_CA_FILE") {
            mesh.ca_file = Some(PathBuf::from(v));
        }
        if let Some(v) = var("SIGNPOST_MESH_CLIENT_CERT") {
            mesh.client_cert = Some(PathBuf::from(v));
        }
        if let Some(v) = var("SIGNPOST_MESH_CLIENT_KEY") {
            mesh.client_key = Some(PathBuf::from(v));
        }
        Ok(())
    }
}

fn parse_env<T: std::str::FromStr>(name: &'static str, v: &str) -> Result<T, ConfigError>
where
    T::Err: std::fmt::Display,
{
    v.trim().parse().map_err(|e: T::Err| ConfigError::Env {
        name,
        message: e.to_string(),
    })
}

impl Delivery {
    pub fn retry_delays(&self) -> Vec<Duration> {
        let delays: Vec<Duration> = self
            .retry_delays_ms
            .iter()
            .map(|ms| Duration::from_millis((*ms).max(1)))
            .collect();
        if delays.is_empty() {
            signpost_bus::consume::default_retry_delays()
        } else {
            delays
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_environment_overrides_the_file() {
        let mut s: Settings = toml::from_str(
            "listen = \"0.0.0.0:9000\"\ndatabase_url = \"sqlite://a.db\"\n[delivery]\ntimeout_ms = 5\n",
        )
        .unwrap();
        assert_eq!(s.listen.port(), 9000);
        assert_eq!(s.delivery.timeout_ms, 5);
        s.apply_env(|n| match n {
            "SIGNPOST_LISTEN" => Some("127.0.0.1:7000".into()),
            "SIGNPOST_RETRY_DELAYS_MS" => Some("10, 20".into()),
            _ => None,
        })
        .unwrap();
        assert_eq!(s.listen.port(), 7000);
        assert_eq!(s.database_url.expose(), "sqlite://a.db");
        assert_eq!(
            s.delivery.retry_delays(),
            vec![Duration::from_millis(10), Duration::from_millis(20)]
        );
    }

    #[test]
    fn secrets_do_not_print() {
        let s = Settings::default();
        assert!(!format!("{s:?}").contains("guest:guest"));
    }

    #[test]
    fn a_bad_environment_value_is_named() {
        let mut s = Settings::default();
        let err = s
            .apply_env(|n| (n == "SIGNPOST_LISTEN").then(|| "nope".to_owned()))
            .unwrap_err();
        assert!(err.to_string().starts_with("SIGNPOST_LISTEN"));
    }

    #[test]
    fn the_example_settings_file_parses_and_holds_the_defaults() {
        let s: Settings =
            toml::from_str(include_str!("../../deploy/signpost.example.toml")).unwrap();
        let d = Settings::default();
        assert_eq!(
            (
                s.listen,
                s.adapters.clone(),
                s.delivery.retry_delays_ms.clone()
            ),
            (d.listen, d.adapters, d.delivery.retry_delays_ms)
        );
    }

    #[test]
    fn webhook_secrets_come_from_the_environment_by_endpoint_id() {
        let mut s = Settings::default();
        s.apply_env_secrets([
            (
                "SIGNPOST_WEBHOOK_SECRET_SCHEME_A".to_owned(),
                "x".to_owned(),
            ),
            ("OTHER".to_owned(), "y".to_owned()),
        ]);
        assert_eq!(
            s.webhook_secrets.get("scheme-a").map(Secret::expose),
            Some("x")
        );
        assert_eq!(s.webhook_secrets.len(), 1);
    }

    #[test]
    fn a_mesh_mailbox_comes_from_the_file_or_from_all_five_variables() {
        let s: Settings = toml::from_str(
            "[mesh]\nurl = \"https://mesh.example\"\nmailbox = \"X26ABC001\"\npassword = \"s3cr3t-pw\"\nshared_key = \"k3y-value\"\nods = \"X26\"\n",
        )
        .unwrap();
        let mesh = s.mesh.as_ref().unwrap();
        assert_eq!(
            (mesh.poll_interval_ms, mesh.chunk_bytes),
            (60_000, 20 << 20)
        );
        let shown = format!("{s:?}");
        assert!(
            !shown.contains("s3cr3t-pw") && !shown.contains("k3y-value"),
            "{shown}"
        );

        let vars = [
            ("SIGNPOST_MESH_URL", "http://127.0.0.1:1"),
            ("SIGNPOST_MESH_MAILBOX", "X26ABC001"),
            ("SIGNPOST_MESH_PASSWORD", "pw"),
            ("SIGNPOST_MESH_SHARED_KEY", "key"),
            ("SIGNPOST_MESH_ODS", "X26"),
            ("SIGNPOST_MESH_POLL_INTERVAL_MS", "250"),
        ];
        let mut s = Settings::default();
        s.apply_env(|n| {
            vars.iter()
                .find(|(k, _)| *k == n)
                .map(|(_, v)| v.to_string())
        })
        .unwrap();
        let mesh = s.mesh.unwrap();
        assert_eq!(mesh.mailbox, "X26ABC001");
        assert_eq!(mesh.password.expose(), "pw");
        assert_eq!(mesh.poll_interval_ms, 250);

        let mut s = Settings::default();
        let err = s
            .apply_env(|n| (n == "SIGNPOST_MESH_URL").then(|| "https://x".to_owned()))
            .unwrap_err()
            .to_string();
        assert!(err.contains("SIGNPOST_MESH_PASSWORD"), "{err}");
        assert!(s.mesh.is_none());
    }

    #[test]
    fn unknown_settings_are_refused() {
        assert!(toml::from_str::<Settings>("lissen = \"x\"").is_err());
    }
}
