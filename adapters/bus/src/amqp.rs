//! Connecting to RabbitMQ, with backoff while it is away.
//!
//! # URLs
//! `amqp://user:password@host:5672/vhost?heartbeat=30` for plain AMQP, and `amqps://...` for
//! AMQP over TLS (port 5671 by default). For `amqps://` the TLS settings are RabbitMQ's URI query
//! parameters (<https://www.rabbitmq.com/docs/uri-query-parameters>):
//!
//! | parameter | meaning |
//! |---|---|
//! | `cacertfile` | PEM file of the CA certificate(s) to trust for the broker's certificate; without it, the public (Mozilla) roots |
//! | `certfile`, `keyfile` | PEM client certificate (chain) and its unencrypted private key, for brokers that ask for one; both or neither |
//! | `server_name_indication` | the name to send (SNI) and to check the broker's certificate against, instead of the URL's host; `disable` sends none and checks the URL's host |
//! | `verify` | only `verify_peer` (what Signpost always does) is accepted |
//!
//! The broker's certificate chain and name are always checked (rustls, aws-lc-rs): there is no
//! switch to accept any certificate. These parameters are taken out of the URL before lapin reads
//! it; the others (`heartbeat`, `connection_timeout`, `channel_max`, `frame_max`,
//! `auth_mechanism`) are left for lapin. TLS parameters on an `amqp://` URL are refused rather
//! than ignored.
//!
//! Without `frame_max` in the URL, Signpost asks for frames of at most [`FRAME_MAX`] bytes instead
//! of RabbitMQ's 128 KiB: lapin keeps send and receive buffers of 32 frames for each connection,
//! 8 MiB each at 128 KiB frames, whatever the traffic; at 32 KiB they are 1 MiB, and a referral
//! (about 6 KiB) still travels in one frame.
//!
//! The URL holds the broker password: errors and logs name the broker by scheme, host, port and
//! vhost only ([`BrokerUrl`]'s `Display`), and a file that cannot be used by its path.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use lapin::tcp::{AMQPUriTcpExt, RustlsConnector};
use lapin::uri::{AMQPScheme, AMQPUri};
use lapin::{Connection, ConnectionProperties};
use tokio_util::sync::CancellationToken;

use crate::http::TlsFiles;
use crate::BusError;

/// The largest frame Signpost asks the broker for, unless the URL's `frame_max` says otherwise.
pub const FRAME_MAX: u32 = 32 * 1024;

/// A broker URL taken apart: what lapin reads, and the TLS settings Signpost applies itself.
/// Never prints its password: `Display` is `scheme://host:port/vhost`, `Debug` likewise.
#[derive(Clone, PartialEq, Eq)]
pub struct BrokerUrl {
    /// The URL as lapin reads it, without the TLS parameters (host as in `host`).
    uri: AMQPUri,
    /// The host to check the certificate against, and to connect to, as the URL writes it
    /// (brackets of an IPv6 address removed).
    host: String,
    /// `Some` for `amqps://`.
    tls: Option<TlsSettings>,
}

/// The TLS settings of an `amqps://` URL.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsSettings {
    /// `cacertfile`, `certfile`, `keyfile`.
    pub files: TlsFiles,
    /// `server_name_indication`.
    pub server_name: ServerName,
}

/// What `server_name_indication` asked for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum ServerName {
    /// Not given: send and check the URL's host.
    #[default]
    UrlHost,
    /// Send and check this name instead.
    Name(String),
    /// `disable`: send no SNI, check the URL's host.
    Disabled,
}

/// The RabbitMQ URI parameters this module reads itself.
const CACERTFILE: &str = "cacertfile";
const CERTFILE: &str = "certfile";
const KEYFILE: &str = "keyfile";
const SERVER_NAME_INDICATION: &str = "server_name_indication";
const VERIFY: &str = "verify";

fn url_error(why: impl Into<String>) -> BusError {
    BusError::Url(why.into())
}

impl BrokerUrl {
    /// Take a broker URL apart. Refuses, without quoting the URL: a scheme other than `amqp` or
    /// `amqps`, TLS parameters on `amqp://`, `certfile` without `keyfile` (or the reverse), a
    /// parameter given twice or empty, and `verify` other than `verify_peer`.
    pub fn parse(url: &str) -> Result<Self, BusError> {
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| url_error("not an amqp:// or amqps:// URL"))?;
        let secure = match scheme.to_ascii_lowercase().as_str() {
            "amqp" => false,
            "amqps" => true,
            _ => return Err(url_error("not an amqp:// or amqps:// URL")),
        };
        // A fragment means nothing to AMQP; lapin drops it too.
        let rest = rest.split_once('#').map_or(rest, |(before, _)| before);
        let (before_query, query) = match rest.split_once('?') {
            Some((before, query)) => (before, query),
            None => (rest, ""),
        };

        let mut settings = TlsSettings::default();
        let mut tls_params: Vec<&str> = Vec::new();
        let mut kept: Vec<&str> = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, raw) = pair.split_once('=').unwrap_or((pair, ""));
            let slot = match key {
                CACERTFILE => Some(&mut settings.files.ca),
                CERTFILE => Some(&mut settings.files.client_cert),
                KEYFILE => Some(&mut settings.files.client_key),
                SERVER_NAME_INDICATION | VERIFY => None,
                _ => {
                    kept.push(pair);
                    continue;
                }
            };
            if tls_params.contains(&key) {
                return Err(url_error(format!("{key} is given twice")));
            }
            tls_params.push(key);
            let value = percent_decode(raw)
                .ok_or_else(|| url_error(format!("{key} is not valid percent-encoded UTF-8")))?;
            if value.is_empty() {
                return Err(url_error(format!("{key} is empty")));
            }
            match (slot, key) {
                (Some(slot), _) => *slot = Some(PathBuf::from(value)),
                (None, SERVER_NAME_INDICATION) => {
                    settings.server_name = if value == "disable" {
                        ServerName::Disabled
                    } else {
                        ServerName::Name(value)
                    };
                }
                (None, _) if value == "verify_peer" => {}
                (None, _) => {
                    return Err(url_error(format!(
                        "verify={value} is not supported: Signpost always checks the broker's \
                         certificate (verify_peer)"
                    )))
                }
            }
        }
        if let Some(first) = tls_params.first().filter(|_| !secure) {
            return Err(url_error(format!(
                "{first} is a TLS parameter, but the URL is amqp://: use amqps:// for TLS"
            )));
        }
        if settings.files.client_cert.is_some() != settings.files.client_key.is_some() {
            return Err(url_error(
                "a client certificate needs both certfile and keyfile",
            ));
        }

        let host = host_of(before_query)?;
        let mut lapin_url = format!("{scheme}://{before_query}");
        if !kept.is_empty() {
            lapin_url.push('?');
            lapin_url.push_str(&kept.join("&"));
        }
        let mut uri: AMQPUri = lapin_url.parse().map_err(|e: String| {
            // lapin's reason may quote the URL, password and all: never pass it on then.
            if e.contains(&lapin_url) {
                url_error("not a valid amqp:// or amqps:// URL")
            } else {
                url_error(format!("not a valid amqp:// or amqps:// URL: {e}"))
            }
        })?;
        // amq-protocol-uri puts `localhost` in place of an IPv6 address (it only takes hosts the
        // url crate calls domains): connect to, and check the certificate of, the URL's host.
        if !host.is_empty() {
            uri.authority.host.clone_from(&host);
        }
        if uri.query.frame_max.is_none() {
            uri.query.frame_max = Some(FRAME_MAX);
        }
        let host = uri.authority.host.clone();
        Ok(BrokerUrl {
            uri,
            host,
            tls: secure.then_some(settings),
        })
    }

    /// The TLS settings, for `amqps://`.
    pub fn tls(&self) -> Option<&TlsSettings> {
        self.tls.as_ref()
    }

    /// The URL lapin is given: the URL without its TLS parameters. Holds the password.
    pub fn lapin_uri(&self) -> &AMQPUri {
        &self.uri
    }

    /// For `amqps://`: the rustls connector (files read now) and the name to check.
    fn tls_connector(&self) -> Result<Option<(RustlsConnector, String)>, BusError> {
        let Some(settings) = &self.tls else {
            return Ok(None);
        };
        let mut config = crate::http::client_config(&settings.files)?;
        let name = match &settings.server_name {
            ServerName::UrlHost => self.host.clone(),
            ServerName::Name(name) => name.clone(),
            ServerName::Disabled => {
                config.enable_sni = false;
                self.host.clone()
            }
        };
        // Refuse a name rustls cannot check now, rather than at every connection attempt.
        rustls::pki_types::ServerName::try_from(name.as_str())
            .map_err(|_| url_error(format!("{name:?} is not a valid server name for TLS")))?;
        Ok(Some((RustlsConnector::from(config), name)))
    }
}

impl fmt::Display for BrokerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        write!(
            f,
            "{}://{host}:{}/{}",
            self.uri.scheme,
            self.uri.authority.port,
            percent_encode_vhost(&self.uri.vhost)
        )
    }
}

impl fmt::Debug for BrokerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BrokerUrl({self})")
    }
}

/// The host of `user:password@host:port/vhost` (the part after `scheme://`), percent-decoded,
/// without the brackets of an IPv6 address; empty if the URL has none.
fn host_of(authority_and_path: &str) -> Result<String, BusError> {
    let authority = authority_and_path
        .split_once('/')
        .map_or(authority_and_path, |(a, _)| a);
    let host_port = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host_port)| host_port);
    let host = if let Some(bracketed) = host_port.strip_prefix('[') {
        bracketed
            .split_once(']')
            .map(|(host, _)| host)
            .ok_or_else(|| url_error("an IPv6 host without its closing bracket"))?
    } else {
        host_port
            .split_once(':')
            .map_or(host_port, |(host, _)| host)
    };
    percent_decode(host).ok_or_else(|| url_error("the host is not valid percent-encoded UTF-8"))
}

/// `%XX` decoding (a `+` stays a `+`: these are paths, not form fields). `None` for a bad escape
/// or invalid UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The vhost as a URL path segment (`/` is `%2f`).
fn percent_encode_vhost(vhost: &str) -> String {
    let mut out = String::with_capacity(vhost.len());
    for b in vhost.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02x}"));
        }
    }
    out
}

/// Check a broker URL at start-up: it parses, and for `amqps://` its files can be read and make a
/// TLS configuration. Connects to nothing.
pub fn check_url(url: &str) -> Result<BrokerUrl, BusError> {
    let broker = BrokerUrl::parse(url)?;
    broker.tls_connector()?;
    Ok(broker)
}

/// Connect once. `name` shows in the broker's management UI. For `amqps://`, the TLS files are
/// read at every call, so a renewed certificate is used from the next connection on.
pub async fn connect(url: &str, name: &str) -> Result<Connection, BusError> {
    connect_to(&BrokerUrl::parse(url)?, name).await
}

/// Connect once to a broker URL already taken apart.
pub async fn connect_to(broker: &BrokerUrl, name: &str) -> Result<Connection, BusError> {
    let props = ConnectionProperties::default().with_connection_name(name.as_bytes().into());
    let Some((connector, server_name)) = broker.tls_connector()? else {
        return Ok(Connection::connect_uri(broker.uri.clone(), props).await?);
    };
    // lapin's own amqps support takes its trust anchors from the platform verifier (the OS store
    // plus any extra CA) and checks the URL's host. Open the TCP connection the way lapin does and
    // run the TLS handshake with our own rustls configuration instead.
    let runtime = lapin::runtime::default_runtime()?;
    let conn = Connection::connector(
        broker.uri.clone(),
        runtime,
        async move |uri, runtime| {
            let mut tcp_only = uri;
            tcp_only.scheme = AMQPScheme::AMQP;
            let tcp = tcp_only.connect_async(&runtime).await?;
            Ok(tcp.into_rustls(&connector, &server_name).await?)
        },
        props,
    )
    .await?;
    Ok(conn)
}

/// Connect, retrying with exponential backoff (100 ms doubling to 1 s) until it works or
/// `shutdown` is cancelled (then `None`). The cap is low on purpose: an attempt costs the broker
/// one refused TCP connection, while a higher cap adds up to that much delay to every recovery
/// after the broker returns (the chaos suite's broker-restart scenario measures it).
pub async fn connect_with_backoff(
    url: &str,
    name: &str,
    shutdown: &CancellationToken,
) -> Option<Connection> {
    let mut delay = Duration::from_millis(100);
    loop {
        if shutdown.is_cancelled() {
            return None;
        }
        let attempt = match BrokerUrl::parse(url) {
            Ok(broker) => connect_to(&broker, name)
                .await
                .map_err(|error| (error, broker.to_string())),
            Err(error) => Err((error, "(unusable URL)".to_owned())),
        };
        match attempt {
            Ok(conn) => return Some(conn),
            Err((error, broker)) => {
                tracing::warn!(%error, %broker, ?delay, connection = name, "broker unreachable, will retry");
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = shutdown.cancelled() => return None,
        }
        delay = (delay * 2).min(MAX_BACKOFF);
    }
}

/// The longest wait between two attempts to reach the broker.
pub const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// How long a polite close may take before we stop waiting for the broker's close-ok.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// Close a connection, waiting at most a moment for the broker (it may be gone).
pub async fn close(conn: &Connection, reason: &str) {
    let _ = tokio::time::timeout(CLOSE_WAIT, conn.close(200, reason.into())).await;
}

/// Close a channel, waiting at most a moment for the broker.
pub async fn close_channel(channel: &lapin::Channel, reason: &str) {
    let _ = tokio::time::timeout(CLOSE_WAIT, channel.close(200, reason.into())).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWORD: &str = "s3cret-pw";

    fn parse(url: &str) -> Result<BrokerUrl, String> {
        BrokerUrl::parse(url).map_err(|e| e.to_string())
    }

    fn refused(url: &str) -> String {
        let error = parse(url).expect_err(url);
        assert!(!error.contains(PASSWORD), "{error}");
        error
    }

    #[test]
    fn a_plain_url_keeps_its_parameters_and_has_no_tls() {
        let b = parse("amqp://signpost:pw@rabbit.example:5672/%2f?heartbeat=30&channel_max=64")
            .unwrap();
        assert!(b.tls().is_none());
        let uri = b.lapin_uri();
        assert_eq!(uri.scheme, AMQPScheme::AMQP);
        assert_eq!(uri.authority.host, "rabbit.example");
        assert_eq!(uri.authority.port, 5672);
        assert_eq!(uri.authority.userinfo.username, "signpost");
        assert_eq!(uri.authority.userinfo.password, "pw");
        assert_eq!(uri.vhost, "/");
        assert_eq!(uri.query.heartbeat, Some(30));
        assert_eq!(uri.query.channel_max, Some(64));
    }

    #[test]
    fn frames_are_32_kib_unless_the_url_says_otherwise() {
        let b = parse("amqp://guest:guest@127.0.0.1/%2f").unwrap();
        assert_eq!(b.lapin_uri().query.frame_max, Some(FRAME_MAX));
        let b = parse("amqp://guest:guest@127.0.0.1/%2f?frame_max=131072").unwrap();
        assert_eq!(b.lapin_uri().query.frame_max, Some(131_072));
    }

    #[test]
    fn tls_parameters_are_taken_out_and_the_others_left_for_lapin() {
        let b = parse(
            "amqps://signpost:pw@rabbit.example/%2f?heartbeat=15&cacertfile=/etc/signpost/ca.pem\
             &certfile=/etc/signpost/client.pem&keyfile=/etc/signpost/client%20key.pem\
             &verify=verify_peer&connection_timeout=2000&server_name_indication=broker.internal",
        )
        .unwrap();
        let tls = b.tls().expect("amqps has TLS settings");
        assert_eq!(
            tls.files,
            TlsFiles {
                ca: Some("/etc/signpost/ca.pem".into()),
                client_cert: Some("/etc/signpost/client.pem".into()),
                client_key: Some("/etc/signpost/client key.pem".into()),
            }
        );
        assert_eq!(
            tls.server_name,
            ServerName::Name("broker.internal".to_owned())
        );
        let uri = b.lapin_uri();
        assert_eq!(uri.scheme, AMQPScheme::AMQPS);
        assert_eq!(uri.authority.port, 5671, "the amqps default port");
        assert_eq!(uri.query.heartbeat, Some(15));
        assert_eq!(uri.query.connection_timeout, Some(2000));
    }

    #[test]
    fn amqps_without_parameters_uses_the_public_roots_and_the_url_host() {
        let b = parse("amqps://u:pw@rabbit.example:5671/signpost").unwrap();
        let tls = b.tls().unwrap();
        assert!(tls.files.is_empty());
        assert_eq!(tls.server_name, ServerName::UrlHost);
        let (_, name) = b.tls_connector().unwrap().unwrap();
        assert_eq!(name, "rabbit.example");
    }

    #[test]
    fn server_name_indication_disable_still_checks_the_url_host() {
        let b = parse("amqps://u:pw@rabbit.example/%2f?server_name_indication=disable").unwrap();
        assert_eq!(b.tls().unwrap().server_name, ServerName::Disabled);
        let (_, name) = b.tls_connector().unwrap().unwrap();
        assert_eq!(name, "rabbit.example");
    }

    #[test]
    fn ip_address_hosts_are_kept() {
        let b = parse("amqps://u:pw@10.1.2.3:5671/%2f").unwrap();
        assert_eq!(b.lapin_uri().authority.host, "10.1.2.3");
        let b = parse("amqp://u:pw@[::1]:5672/%2f").unwrap();
        assert_eq!(b.lapin_uri().authority.host, "::1");
        assert_eq!(b.to_string(), "amqp://[::1]:5672/%2f");
    }

    #[test]
    fn a_client_certificate_needs_both_certfile_and_keyfile() {
        let e = refused(&format!(
            "amqps://u:{PASSWORD}@h/%2f?cacertfile=/ca.pem&certfile=/c.pem"
        ));
        assert!(e.contains("certfile and keyfile"), "{e}");
        let e = refused(&format!("amqps://u:{PASSWORD}@h/%2f?keyfile=/k.pem"));
        assert!(e.contains("certfile and keyfile"), "{e}");
    }

    #[test]
    fn tls_parameters_on_plain_amqp_are_refused() {
        let e = refused(&format!(
            "amqp://u:{PASSWORD}@h/%2f?heartbeat=5&cacertfile=/ca.pem"
        ));
        assert!(e.contains("cacertfile") && e.contains("amqps://"), "{e}");
    }

    #[test]
    fn certificate_checks_cannot_be_turned_off() {
        let e = refused(&format!("amqps://u:{PASSWORD}@h/%2f?verify=verify_none"));
        assert!(e.contains("verify_none"), "{e}");
    }

    #[test]
    fn repeated_empty_and_badly_encoded_parameters_are_refused() {
        assert!(refused(&format!(
            "amqps://u:{PASSWORD}@h/%2f?cacertfile=/a&cacertfile=/b"
        ))
        .contains("twice"));
        assert!(refused(&format!("amqps://u:{PASSWORD}@h/%2f?cacertfile=")).contains("empty"));
        assert!(
            refused(&format!("amqps://u:{PASSWORD}@h/%2f?cacertfile=%zz")).contains("cacertfile")
        );
    }

    #[test]
    fn other_schemes_and_unparsable_urls_are_refused_without_quoting_them() {
        refused(&format!("http://u:{PASSWORD}@h/"));
        refused(&format!("u:{PASSWORD}@h"));
        refused(&format!("amqp://u:{PASSWORD}@h:notaport/%2f"));
        refused(&format!("amqp://u:{PASSWORD}@h/%2f?heartbeat=often"));
    }

    #[test]
    fn the_url_prints_without_credentials_or_parameters() {
        let b = parse(&format!(
            "amqps://signpost:{PASSWORD}@rabbit.example:5671/%2f?cacertfile=/ca.pem&heartbeat=5"
        ))
        .unwrap();
        assert_eq!(b.to_string(), "amqps://rabbit.example:5671/%2f");
        assert_eq!(
            format!("{b:?}"),
            "BrokerUrl(amqps://rabbit.example:5671/%2f)"
        );
    }

    #[test]
    fn an_unreadable_file_is_named_and_the_password_is_not() {
        let url =
            format!("amqps://u:{PASSWORD}@h/%2f?cacertfile=/nonexistent/signpost-test/ca.pem");
        let e = check_url(&url).expect_err("no such file").to_string();
        assert!(e.contains("/nonexistent/signpost-test/ca.pem"), "{e}");
        assert!(!e.contains(PASSWORD), "{e}");
    }

    #[tokio::test]
    async fn connecting_with_an_unusable_url_fails_without_trying() {
        let e = connect(&format!("amqp://u:{PASSWORD}@h/%2f?keyfile=/k.pem"), "t")
            .await
            .expect_err("refused")
            .to_string();
        assert!(!e.contains(PASSWORD), "{e}");
    }
}
