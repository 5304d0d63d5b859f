//! Start-up: building the gateway and the adapters from settings and running them until
//! shutdown. `signpost run` is [`run`] (gateway and enabled adapters in one process);
//! `signpost gateway` is [`run_gateway`]; `signpost adapter NAME` is [`run_adapters`].

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use signpost_bus::consume::{supervise, ConsumeSettings};
use signpost_bus::http::HttpClient;
use signpost_bus::{topology, Directory, Handler, QueueConsumer, Reports, RetryPolicy};
use tokio::net::TcpListener;
use tokio::sync::{oneshot, Notify};
use tokio_util::sync::CancellationToken;

use crate::api::Api;
use crate::config::Settings;
use crate::events::ReportRecorder;
use crate::metrics::Metrics;
use crate::pipeline::Gateway;
use crate::relay::Relay;
use crate::store::Store;

/// The adapters this build has.
pub const ADAPTERS: &[&str] = &[
    signpost_adapter_fhir_messaging::NAME,
    signpost_adapter_fhir_document::NAME,
    signpost_adapter_webhook::NAME,
    signpost_adapter_hl7v2::adapter::NAME,
    signpost_adapter_mesh::NAME,
];

fn topology_spec(directory: &Directory, settings: &Settings) -> topology::Spec {
    topology::Spec {
        referral_targets: directory.referral_targets(),
        record_targets: directory.record_targets(),
        retry_delays: settings.delivery.retry_delays(),
    }
}

fn consume_settings(settings: &Settings, reports: Reports) -> ConsumeSettings {
    ConsumeSettings {
        prefetch: settings.delivery.prefetch,
        retry_delays: settings.delivery.retry_delays(),
        retry_horizon: Duration::from_secs(settings.delivery.retry_horizon_s),
        reports,
    }
}

/// Adapters that run in the gateway's process: the gateway hands them its delivery-report
/// recorder once it has one, and stops its audit writer only after they have finished, since
/// they record through it.
struct Hosted {
    recorder: oneshot::Sender<Arc<dyn Handler>>,
    adapters: tokio::task::JoinHandle<anyhow::Result<()>>,
}

pub fn load_directory(settings: &Settings) -> anyhow::Result<Arc<Directory>> {
    let d = Directory::load(&settings.directory)
        .with_context(|| format!("loading the directory {}", settings.directory.display()))?;
    Ok(Arc::new(d))
}

/// The gateway and the enabled adapters, in one process.
pub async fn run(
    listener: TcpListener,
    settings: Settings,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let names = settings.adapters.clone();
    let (recorder, local) = oneshot::channel();
    let adapters = {
        let settings = settings.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move { adapters(&settings, &names, shutdown, Some(local)).await })
    };
    let hosted = Hosted { recorder, adapters };
    gateway(listener, settings, shutdown, Some(hosted)).await
}

/// The gateway alone: HTTP API, ledger, outbox relay, delivery-report recorder.
pub async fn run_gateway(
    listener: TcpListener,
    settings: Settings,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    gateway(listener, settings, shutdown, None).await
}

async fn gateway(
    listener: TcpListener,
    settings: Settings,
    shutdown: CancellationToken,
    hosted: Option<Hosted>,
) -> anyhow::Result<()> {
    check_listener(&settings, listener.local_addr()?)?;
    // A broker URL that cannot work (bad TLS parameters, unreadable files) stops the start
    // rather than being retried for ever.
    signpost_bus::amqp::check_url(settings.amqp_url.expose()).context("amqp_url")?;
    let directory = load_directory(&settings)?;
    let store = Store::connect(settings.database_url.expose())
        .await
        .context("opening the ledger")?;
    let started = std::time::Instant::now();
    let profiles = tokio::task::spawn_blocking(signpost_profiles::Profiles::load)
        .await
        .context("compiling the profiles")?
        .context("compiling the profiles")?;
    tracing::info!(
        ms = started.elapsed().as_millis() as u64,
        "profiles compiled"
    );
    let metrics = Arc::new(Metrics::default());
    let outbox_ready = Arc::new(Notify::new());
    let broker_up = Arc::new(AtomicBool::new(false));
    let spec = topology_spec(&directory, &settings);

    let relay_stop = CancellationToken::new();
    let relay = tokio::spawn(
        Relay {
            store: store.clone(),
            amqp_url: settings.amqp_url.expose().to_owned(),
            spec: spec.clone(),
            wake: outbox_ready.clone(),
            broker_up: broker_up.clone(),
            metrics: metrics.clone(),
        }
        .run(relay_stop.clone()),
    );
    let gateway = Arc::new(Gateway {
        store: store.clone(),
        directory: directory.clone(),
        source_endpoint: settings.source_endpoint.clone(),
        outbox_ready,
        metrics: metrics.clone(),
        profiles: Arc::new(profiles),
        record_events: crate::record_event::Mapping::shipped()
            .context("profiles/record-events.json")?,
    });
    let audit_stop = CancellationToken::new();
    let (audit, audit_writer) = crate::audit::Audit::start(store.clone(), audit_stop.clone());
    let recorder: Arc<dyn Handler> = Arc::new(ReportRecorder::start(
        store.clone(),
        metrics.clone(),
        audit.clone(),
    ));
    let hosted = hosted.map(|hosted| {
        // Adapters that have stopped already need no recorder.
        let _ = hosted.recorder.send(recorder.clone());
        hosted.adapters
    });
    let replies: Arc<dyn Handler> = Arc::new(crate::replies::ReplyHandler {
        gateway: gateway.clone(),
        directory: directory.clone(),
    });
    let events = tokio::spawn(supervise(
        settings.amqp_url.expose().to_owned(),
        "signpost-gateway-events".to_owned(),
        spec,
        vec![
            QueueConsumer {
                queue: topology::EVENTS_QUEUE.to_owned(),
                handler: recorder,
                policy: RetryPolicy::default(),
            },
            QueueConsumer {
                queue: topology::REPLIES_QUEUE.to_owned(),
                handler: replies,
                policy: RetryPolicy::default(),
            },
        ],
        consume_settings(&settings, Reports::Off),
        shutdown.clone(),
    ));

    let ack_watch = tokio::spawn(crate::events::watch_letter_acks(
        store.clone(),
        metrics.clone(),
        Duration::from_secs(settings.letter_ack_timeout_s),
        Duration::from_millis((settings.letter_ack_timeout_s * 250).clamp(100, 60_000)),
        shutdown.clone(),
    ));

    let identities = Arc::new(
        crate::auth::Identities::from_directory(&directory)
            .map_err(|e| anyhow::anyhow!("the directory's clients: {e}"))?,
    );
    let tls = match &settings.tls {
        Some(files) => {
            let tls = crate::tls::Reloading::new(files.clone()).context("the listener's TLS")?;
            tokio::spawn(tls.clone().watch(shutdown.clone()));
            Some(tls)
        }
        None => None,
    };
    let local = listener.local_addr()?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    let api = Arc::new(Api {
        gateway,
        directory,
        broker_up,
        max_body_bytes: settings.http.max_body_bytes,
        request_timeout: Duration::from_millis(settings.http.request_timeout_ms),
        base_url: format!("{scheme}://{local}/fhir"),
        audit,
        rate_limiter: crate::limits::RateLimiter::new(
            settings.http.rate_limit_per_s,
            settings.http.rate_limit_burst,
        ),
        max_json_depth: settings.http.max_json_depth,
    });
    tracing::info!(listen = %local, tls = tls.is_some(), clients = identities.len(), "gateway listening");
    let options = crate::server::Options {
        tls,
        identities,
        header_timeout: Duration::from_millis(settings.http.header_timeout_ms),
        max_header_bytes: settings.http.max_header_bytes,
    };
    crate::server::serve(listener, api, shutdown, options).await;
    tracing::info!("HTTP stopped; draining the outbox");
    // Requests have finished: let the relay publish what they committed, then stop it.
    relay_stop.cancel();
    let _ = stopping("the outbox relay", relay).await;
    let _ = stopping("the report and reply consumers", events).await;
    let _ = stopping("the letter acknowledgement watch", ack_watch).await;
    let adapters = match hosted {
        Some(adapters) => stopping("the adapters", adapters)
            .await
            .context("adapter task"),
        None => Ok(Ok(())),
    };
    audit_stop.cancel();
    let _ = stopping("the audit writer", audit_writer).await;
    tracing::info!("gateway stopped");
    adapters?
}

/// How long one part of the shutdown may take before the wait is reported.
const SLOW_STOP: Duration = Duration::from_secs(2);

/// Wait for one part of the gateway to stop. Said at debug level; a part that takes longer than
/// [`SLOW_STOP`] is reported at warn level while it is still awaited and again when it stops, so
/// that a slow shutdown names what held it even if the process is killed first.
async fn stopping<F: std::future::Future>(part: &'static str, stopped: F) -> F::Output {
    let started = std::time::Instant::now();
    tokio::pin!(stopped);
    let out = tokio::select! {
        out = &mut stopped => out,
        () = tokio::time::sleep(SLOW_STOP) => {
            tracing::warn!(part, "shutdown: still waiting for {part} after {} s", SLOW_STOP.as_secs());
            let out = stopped.await;
            tracing::warn!(part, took_ms = started.elapsed().as_millis() as u64, "shutdown: {part} stopped");
            return out;
        }
    };
    tracing::debug!(
        part,
        took_ms = started.elapsed().as_millis() as u64,
        "shutdown: {part} stopped"
    );
    out
}

/// Adapters by name, consuming their queues until shutdown.
pub async fn run_adapters(
    settings: &Settings,
    names: &[String],
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    adapters(settings, names, shutdown, None).await
}

/// Adapters by name; with `local`, the gateway's recorder in the same process takes their
/// delivery reports (if the gateway hands it over; otherwise they go on `sp.events`).
async fn adapters(
    settings: &Settings,
    names: &[String],
    shutdown: CancellationToken,
    local: Option<oneshot::Receiver<Arc<dyn Handler>>>,
) -> anyhow::Result<()> {
    if names.is_empty() {
        return Ok(());
    }
    signpost_bus::amqp::check_url(settings.amqp_url.expose()).context("amqp_url")?;
    let directory = load_directory(settings)?;
    let timeout = Duration::from_millis(settings.delivery.timeout_ms);
    let tls = settings.delivery.tls();
    let http = if tls.is_empty() {
        HttpClient::new(timeout)
    } else {
        HttpClient::with_tls(timeout, &tls).context("delivery TLS settings")?
    };
    let mut queues = Vec::new();
    let mut inbound = Vec::new();
    for name in names {
        match name.as_str() {
            signpost_adapter_fhir_messaging::NAME => queues.extend(
                signpost_adapter_fhir_messaging::SchemeDelivery::new(
                    directory.clone(),
                    http.clone(),
                )
                .queues(),
            ),
            signpost_adapter_fhir_document::NAME => queues.extend(
                signpost_adapter_fhir_document::LetterFiling::new(directory.clone(), http.clone())
                    .queues(),
            ),
            signpost_adapter_webhook::NAME => {
                let secrets = settings
                    .webhook_secrets
                    .iter()
                    .map(|(id, s)| (id.clone(), s.expose().as_bytes().to_vec()))
                    .collect();
                let delivery = signpost_adapter_webhook::WebhookDelivery::new(
                    directory.clone(),
                    http.clone(),
                    secrets,
                )
                .map_err(|e| {
                    anyhow::anyhow!("{e}: set [webhook_secrets] or SIGNPOST_WEBHOOK_SECRET_<ID>")
                })?;
                queues.extend(delivery.queues());
            }
            signpost_adapter_hl7v2::adapter::NAME => {
                queues.extend(
                    signpost_adapter_hl7v2::adapter::LetterFiling::new(
                        directory.clone(),
                        Duration::from_millis(settings.delivery.timeout_ms),
                    )
                    .queues(),
                );
                if let (Some(_), Some(_)) = (&settings.tls, settings.hl7v2_listen) {
                    // The MLLP listener posts to the gateway's own API, which on mutual TLS wants
                    // a client certificate the adapter does not have yet.
                    anyhow::bail!("hl7v2_listen cannot be used with [tls] yet: run the HL7 v2 listener against a plain-HTTP development gateway, or leave hl7v2_listen unset");
                }
                if let Some(addr) = settings.hl7v2_listen {
                    let listener = tokio::net::TcpListener::bind(addr)
                        .await
                        .with_context(|| format!("binding the MLLP listener {addr}"))?;
                    tracing::info!(listen = %addr, "MLLP listener for HL7 v2 GP systems");
                    let gateway = format!("http://{}/fhir", settings.listen);
                    let stop = shutdown.clone();
                    inbound.push(tokio::spawn(
                        signpost_adapter_hl7v2::adapter::serve_inbound(
                            listener,
                            gateway,
                            http.clone(),
                            async move { stop.cancelled().await },
                        ),
                    ));
                }
            }
            signpost_adapter_mesh::NAME => {
                if let Some((sending, poller)) = mesh_adapter(settings, &directory, &http)? {
                    queues.extend(sending.queues());
                    inbound.push(tokio::spawn(poller.run(shutdown.clone())));
                }
            }
            other => anyhow::bail!(
                "unknown adapter {other:?}; this build has {}",
                ADAPTERS.join(", ")
            ),
        }
    }
    let reports = match local {
        Some(local) => tokio::select! {
            recorder = local => recorder.map_or(Reports::Bus, Reports::Local),
            _ = shutdown.cancelled() => Reports::Bus,
        },
        None => Reports::Bus,
    };
    tracing::info!(adapters = %names.join(","), queues = queues.len(), ?reports, "adapters starting");
    let consumers = supervise(
        settings.amqp_url.expose().to_owned(),
        format!("signpost-adapter-{}", names.join("+")),
        topology_spec(&directory, settings),
        queues,
        consume_settings(settings, reports),
        shutdown,
    );
    consumers.await;
    for listener in inbound {
        let _ = listener.await;
    }
    Ok(())
}

/// The `mesh` adapter from settings: `None` when neither the settings nor the directory have
/// MESH in them (the adapter is then idle).
fn mesh_adapter(
    settings: &Settings,
    directory: &Arc<Directory>,
    http: &HttpClient,
) -> anyhow::Result<
    Option<(
        signpost_adapter_mesh::adapter::LetterSending,
        signpost_adapter_mesh::adapter::InboxPoller,
    )>,
> {
    use signpost_adapter_mesh::{adapter, client};
    let targets = directory.targets(signpost_bus::directory::EndpointKind::Mesh);
    let Some(mesh) = &settings.mesh else {
        if targets.is_empty() {
            return Ok(None);
        }
        anyhow::bail!(
            "the directory has MESH endpoints ({}) but no MESH mailbox is set: set [mesh] or SIGNPOST_MESH_*",
            targets.join(", ")
        );
    };
    if !(mesh.url.starts_with("https://") || signpost_bus::directory::is_loopback(&mesh.url)) {
        anyhow::bail!("mesh.url must be https (plain http only on loopback)");
    }
    let tls = signpost_bus::http::TlsFiles {
        ca: mesh.ca_file.clone(),
        client_cert: mesh.client_cert.clone(),
        client_key: mesh.client_key.clone(),
    };
    let http = if tls.is_empty() {
        http.clone()
    } else {
        HttpClient::with_tls(Duration::from_millis(settings.delivery.timeout_ms), &tls)
            .context("MESH TLS settings")?
    };
    let client = client::MeshClient::new(
        &mesh.url,
        client::Credentials {
            mailbox: mesh.mailbox.clone(),
            password: mesh.password.clone(),
            shared_key: mesh.shared_key.clone(),
        },
        http,
        mesh.chunk_bytes,
    );
    tracing::info!(mailbox = %mesh.mailbox, endpoints = targets.len(), "MESH mailbox for GP Connect Send Document");
    Ok(Some((
        adapter::LetterSending::new(directory.clone(), client.clone(), mesh.ods.clone()),
        adapter::InboxPoller {
            client,
            amqp_url: settings.amqp_url.expose().to_owned(),
            interval: Duration::from_millis(mesh.poll_interval_ms.max(10)),
        },
    )))
}

/// The listener is mutual TLS, or plain HTTP on loopback when development mode is asked for.
fn check_listener(settings: &Settings, local: std::net::SocketAddr) -> anyhow::Result<()> {
    match (&settings.tls, settings.plain_http) {
        (Some(_), true) => anyhow::bail!("set either [tls] or plain_http, not both"),
        (Some(_), false) => Ok(()),
        (None, true) if local.ip().is_loopback() => {
            tracing::warn!(listen = %local, "plain HTTP without client identities: development mode, every caller may do everything");
            Ok(())
        }
        (None, true) => anyhow::bail!(
            "plain_http is for development on a loopback address only; {local} is not loopback: configure [tls]"
        ),
        (None, false) => anyhow::bail!(
            "the listener needs [tls] (certificate, key and client CA; SIGNPOST_TLS_*), or plain_http = true (SIGNPOST_PLAIN_HTTP) for development on loopback"
        ),
    }
}
