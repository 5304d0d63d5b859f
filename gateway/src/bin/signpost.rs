//! `signpost`: parse the command line and settings, start logging, bind, and hand over to the
//! library. Commands:
//!
//! ```text
//! signpost [--config FILE] run                 gateway and enabled adapters in one process
//! signpost [--config FILE] gateway             the gateway alone
//! signpost [--config FILE] adapter NAME...     adapters alone (fhir-messaging, fhir-document)
//! signpost validate [--profile ID] FILE...     check files offline; one OperationOutcome each
//! ```

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use signpost_gateway::{app, config::Settings, telemetry, validate};
use tokio_util::sync::CancellationToken;

/// mimalloc rather than glibc's allocator: under load the gateway allocates and frees a great
/// deal across its threads, and with mimalloc it spends 10-29% less CPU per referral. Built
/// without transparent huge pages (`no_thp`), which would hold some 20 MB more for little gain.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const USAGE: &str = "usage: signpost [--config FILE] (run | gateway | adapter NAME... | validate [--profile ID] FILE... | parked list [--scheme S] [--since T] | parked replay (ID | --scheme S | --since T))";

fn main() -> ExitCode {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut config = None;
    if let Some(i) = args.iter().position(|a| a == "--config") {
        if i + 1 >= args.len() {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
        config = Some(PathBuf::from(args.remove(i + 1)));
        args.remove(i);
    }
    let Some(command) = args.first().cloned() else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    let rest = args[1..].to_vec();
    if command == "validate" {
        return run_validate(&rest);
    }
    if !matches!(command.as_str(), "run" | "gateway" | "adapter" | "parked") {
        eprintln!("unknown command {command:?}\n{USAGE}");
        return ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("signpost: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let telemetry = match telemetry::init(runtime.handle()) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("signpost: telemetry: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(serve(command, rest, config));
    // The runtime still runs the exporter's sends while the last spans go out.
    telemetry.shutdown();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("signpost: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(command: String, rest: Vec<String>, config: Option<PathBuf>) -> anyhow::Result<()> {
    let settings = Settings::load(config.as_deref()).context("settings")?;
    let shutdown = CancellationToken::new();
    tokio::spawn(stop_on_signal(shutdown.clone()));
    match command.as_str() {
        "parked" => parked(&settings, &rest).await,
        "adapter" => {
            if rest.is_empty() {
                anyhow::bail!("name an adapter: {}", app::ADAPTERS.join(", "));
            }
            app::run_adapters(&settings, &rest, shutdown).await
        }
        _ => {
            let listener = tokio::net::TcpListener::bind(settings.listen)
                .await
                .with_context(|| format!("binding {}", settings.listen))?;
            if command == "run" {
                app::run(listener, settings, shutdown).await
            } else {
                app::run_gateway(listener, settings, shutdown).await
            }
        }
    }
}

/// Cancel on SIGTERM or Ctrl-C: stop accepting, finish what is in flight, drain publishes.
async fn stop_on_signal(shutdown: CancellationToken) {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            shutdown.cancel();
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    tracing::info!("shutting down");
    shutdown.cancel();
}

/// `signpost parked list|replay`: the admin actions, straight on the ledger.
async fn parked(settings: &Settings, args: &[String]) -> anyhow::Result<()> {
    use signpost_gateway::admin::{self, Selector};
    let (action, rest) = args
        .split_first()
        .ok_or_else(|| anyhow::anyhow!("{USAGE}"))?;
    let mut selector = Selector::default();
    let mut it = rest.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--scheme" => {
                selector.scheme = Some(
                    it.next()
                        .ok_or_else(|| anyhow::anyhow!("--scheme needs a value"))?
                        .clone(),
                )
            }
            "--since" => {
                let t = it
                    .next()
                    .ok_or_else(|| anyhow::anyhow!("--since needs a value"))?;
                let now = signpost_gateway::store::now_ms();
                selector.since_ms = Some(admin::parse_since(t, now).ok_or_else(|| {
                    anyhow::anyhow!("--since {t:?}: give an RFC 3339 time or a duration such as 2h")
                })?);
            }
            id if !id.starts_with('-') && selector.id.is_none() => {
                selector.id = Some(id.to_owned())
            }
            other => anyhow::bail!("unexpected argument {other:?}\n{USAGE}"),
        }
    }
    let directory = app::load_directory(settings)?;
    let store = signpost_gateway::store::Store::connect(settings.database_url.expose())
        .await
        .context("opening the ledger")?;
    let rows = match action.as_str() {
        "list" => admin::list(&store, &directory, &selector).await?,
        "replay" => {
            if selector.id.is_none() && selector.scheme.is_none() && selector.since_ms.is_none() {
                anyhow::bail!("say what to replay: an id, --scheme or --since");
            }
            let rows = admin::replay(&store, &directory, &selector).await?;
            println!(
                "replayed {} message(s); the gateway's outbox relay publishes them",
                rows.len()
            );
            rows
        }
        other => anyhow::bail!("unknown parked action {other:?}\n{USAGE}"),
    };
    for row in &rows {
        println!("{}", admin::describe(row));
    }
    Ok(())
}

fn run_validate(args: &[String]) -> ExitCode {
    let mut profile = None;
    let mut files = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "--profile" {
            profile = it.next().cloned();
            if profile.is_none() {
                eprintln!("{USAGE}");
                return ExitCode::from(2);
            }
        } else {
            files.push(a.clone());
        }
    }
    if files.is_empty() {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    }
    let code = validate::run(profile.as_deref(), &files, &mut std::io::stdout().lock());
    ExitCode::from(code)
}
