//! RabbitMQ for the bench: a vhost of its own (made with the management API, or with
//! `rabbitmqctl` when the management plugin is not enabled; deleted on drop), and the broker
//! baseline: how many persistent, publisher-confirmed messages of a given body a well-written
//! lapin client gets into a quorum queue per second.

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use base64::Engine;
use lapin::options::{
    BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, PublisherConfirm};
use signpost_tests::broker::Vhost as CtlVhost;

const DEFAULT_AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
const DEFAULT_API: &str = "http://guest:guest@127.0.0.1:15672";

/// Publishes in flight at most; confirms are awaited `WINDOW / 2` at a time.
pub const WINDOW: usize = 512;
const QUEUE: &str = "bench.baseline";

fn env_or(key: &str, default: &str) -> String {
    std::env::var(key)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| default.to_owned())
}

/// The bench's own vhost, deleted on drop.
pub enum Vhost {
    Api {
        api: Api,
        name: String,
        amqp_url: String,
    },
    Ctl(CtlVhost),
}

impl Vhost {
    /// A fresh vhost `signpost-bench-<random>` with full rights for the URL's user.
    pub fn create() -> Result<Self, String> {
        let name = format!(
            "signpost-bench-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        );
        let base = env_or("SIGNPOST_TEST_AMQP_URL", DEFAULT_AMQP_URL);
        let amqp_url = with_vhost(&base, &name)?;
        let api = Api::parse(&env_or("SIGNPOST_TEST_AMQP_API", DEFAULT_API))?;
        match api.call("PUT", &format!("/api/vhosts/{name}"), "{}") {
            Ok(()) => {
                let user = api.user.clone();
                api.call(
                    "PUT",
                    &format!("/api/permissions/{name}/{user}"),
                    r#"{"configure":".*","write":".*","read":".*"}"#,
                )?;
                Ok(Vhost::Api {
                    api,
                    name,
                    amqp_url,
                })
            }
            Err(e) if e.starts_with("connect") => {
                eprintln!(
                    "bench: the RabbitMQ management API is not reachable ({e}); using rabbitmqctl"
                );
                Ok(Vhost::Ctl(CtlVhost::create_named(&name).map_err(|e| {
                    format!("cannot make a RabbitMQ vhost with rabbitmqctl either: {e}")
                })?))
            }
            Err(e) => Err(e),
        }
    }

    pub fn name(&self) -> &str {
        match self {
            Vhost::Api { name, .. } => name,
            Vhost::Ctl(v) => &v.name,
        }
    }

    pub fn amqp_url(&self) -> String {
        match self {
            Vhost::Api { amqp_url, .. } => amqp_url.clone(),
            Vhost::Ctl(v) => v.amqp_url(),
        }
    }
}

impl Drop for Vhost {
    fn drop(&mut self) {
        // The rabbitmqctl variant deletes itself.
        if let Vhost::Api { api, name, .. } = self {
            if let Err(e) = api.call("DELETE", &format!("/api/vhosts/{name}"), "") {
                eprintln!("bench: could not delete the vhost {name}: {e}");
            }
        }
    }
}

/// `url` (amqp://USER:PASS@HOST:PORT/VHOST, query dropped) with `vhost` as its vhost.
fn with_vhost(url: &str, vhost: &str) -> Result<String, String> {
    let without_query = url.split('?').next().unwrap_or(url);
    let (scheme, rest) = without_query
        .split_once("://")
        .ok_or_else(|| format!("not an AMQP URL: {url:?}"))?;
    let authority = rest.split('/').next().unwrap_or(rest);
    Ok(format!("{scheme}://{authority}/{vhost}"))
}

/// The RabbitMQ management API over plain HTTP/1.1 (std only, so that it also works in `Drop`).
pub struct Api {
    host: String,
    user: String,
    auth: String,
}

impl Api {
    fn parse(url: &str) -> Result<Self, String> {
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| {
                format!("the management API URL must be http://USER:PASS@HOST:PORT, not {url:?}")
            })?
            .trim_end_matches('/');
        let (creds, host) = rest.rsplit_once('@').unwrap_or(("guest:guest", rest));
        let user = creds.split(':').next().unwrap_or("guest").to_owned();
        Ok(Api {
            host: host.to_owned(),
            user,
            auth: base64::engine::general_purpose::STANDARD.encode(creds),
        })
    }

    /// One request; Ok for a 2xx answer. Errors starting with "connect" mean no API there.
    fn call(&self, method: &str, path: &str, body: &str) -> Result<(), String> {
        let addr = self
            .host
            .to_socket_addrs()
            .map_err(|e| format!("connect {}: {e}", self.host))?
            .next()
            .ok_or_else(|| format!("connect {}: no address", self.host))?;
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
            .map_err(|e| format!("connect {}: {e}", self.host))?;
        let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Basic {}\r\n\
             content-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            self.host,
            self.auth,
            body.len()
        );
        s.write_all(req.as_bytes())
            .map_err(|e| format!("management API {method} {path}: {e}"))?;
        let mut answer = String::new();
        let _ = s.read_to_string(&mut answer);
        let status = answer
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse::<u16>().ok())
            .unwrap_or(0);
        if (200..300).contains(&status) {
            Ok(())
        } else {
            Err(format!(
                "management API {method} {path}: HTTP {status} {}",
                answer.lines().last().unwrap_or("")
            ))
        }
    }
}

/// The broker baseline's figures.
pub struct Baseline {
    pub per_s: f64,
    pub messages: u64,
    pub elapsed: Duration,
    /// Messages published in the warm-up before the measured run.
    pub warmup_messages: u64,
}

/// Publishes `body` (persistent, mandatory, with `properties`) into a fresh quorum queue as fast
/// as the broker confirms, `WINDOW` in flight, for `warmup` and then `duration` (measured).
pub async fn baseline(
    amqp_url: &str,
    body: &[u8],
    properties: &BasicProperties,
    warmup: Duration,
    duration: Duration,
) -> Result<Baseline, String> {
    let conn = Connection::connect(
        amqp_url,
        ConnectionProperties::default().with_connection_name("signpost-bench".into()),
    )
    .await
    .map_err(|e| format!("connecting to RabbitMQ: {e}"))?;
    let result = async {
        let channel = conn.create_channel().await.map_err(amqp)?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(amqp)?;
        let mut args = FieldTable::default();
        args.insert(
            "x-queue-type".into(),
            AMQPValue::LongString(LongString::from("quorum")),
        );
        channel
            .queue_declare(
                QUEUE.into(),
                QueueDeclareOptions {
                    durable: true,
                    ..QueueDeclareOptions::default()
                },
                args,
            )
            .await
            .map_err(amqp)?;
        let (warmup_messages, _) = publish_for(&channel, body, properties, warmup).await?;
        let measured = publish_for(&channel, body, properties, duration).await?;
        channel
            .queue_delete(QUEUE.into(), QueueDeleteOptions::default())
            .await
            .map_err(amqp)?;
        Ok::<_, String>((measured, warmup_messages))
    }
    .await;
    let _ = conn.close(200, "bye".into()).await;
    let ((messages, elapsed), warmup_messages) =
        result.map_err(|e| format!("broker baseline: {e}"))?;
    Ok(Baseline {
        per_s: messages as f64 / elapsed.as_secs_f64().max(1e-9),
        messages,
        elapsed,
        warmup_messages,
    })
}

fn amqp(e: lapin::Error) -> String {
    e.to_string()
}

async fn settle(confirm: PublisherConfirm) -> Result<(), String> {
    let confirmation = confirm.await.map_err(amqp)?;
    if confirmation.is_nack() {
        return Err("the broker nacked a message".into());
    }
    if confirmation.take_message().is_some() {
        return Err("the broker returned a message as unroutable".into());
    }
    Ok(())
}

/// Publishes for `duration`; returns confirmed messages and the time until the last confirm.
async fn publish_for(
    channel: &Channel,
    body: &[u8],
    properties: &BasicProperties,
    duration: Duration,
) -> Result<(u64, Duration), String> {
    let start = Instant::now();
    let mut in_flight = VecDeque::with_capacity(WINDOW);
    let mut confirmed = 0u64;
    while start.elapsed() < duration {
        let props = properties
            .clone()
            .with_message_id(ShortString::from(uuid::Uuid::new_v4().to_string()));
        let confirm = channel
            .basic_publish(
                "".into(),
                QUEUE.into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..BasicPublishOptions::default()
                },
                body,
                props,
            )
            .await
            .map_err(amqp)?;
        in_flight.push_back(confirm);
        if in_flight.len() >= WINDOW {
            for confirm in in_flight.drain(..WINDOW / 2) {
                settle(confirm).await?;
                confirmed += 1;
            }
        }
    }
    for confirm in in_flight {
        settle(confirm).await?;
        confirmed += 1;
    }
    Ok((confirmed, start.elapsed()))
}
