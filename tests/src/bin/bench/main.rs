//! `signpost-bench` (run by `cargo xtask bench`): how fast the whole referral path is on this
//! machine, next to what its parts allow.
//!
//! 1. Baselines: a bare hyper 1 server's request rate under the same load generator, and
//!    RabbitMQ's rate for persistent, publisher-confirmed messages of a published referral's size
//!    into a quorum queue (lapin, `WINDOW` in flight); plus the disk's rate of small appends with
//!    `fdatasync` (what a durable SQLite commit costs).
//! 2. The loop: `signpost run` (gateway + `fhir-messaging` adapter) from the given binary, on a
//!    fresh SQLite ledger and a RabbitMQ vhost of its own, plain HTTP on loopback, routing to a
//!    stand-in scheme in this process that answers 200 at once and notes when each referral
//!    arrived.
//! 3. Load: referral messages over keep-alive connections, closed loop at several concurrencies,
//!    then an open loop at a fixed rate (latency from the scheduled send time).
//! 4. Report: a table on stdout, JSON with `--json FILE`.
//!
//! Everything it starts (the gateway, the vhost, the work directory) is removed at the end, also
//! on failure or Ctrl-C.

mod broker;
mod gateway;
mod hist;
mod load;
mod report;
mod servers;
mod sys;

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::BasicProperties;
use serde_json::{json, Value};

use crate::gateway::Gateway;
use crate::load::{Load, Template, Tracker};
use crate::report::{cpu_json, Row};
use crate::sys::CpuSnapshot;

const USAGE: &str = "\
usage: signpost-bench [--quick] [--json FILE] [--signpost BIN] [--work-dir DIR] [--keep]

  --quick          seconds per phase instead of ten (about half a minute in all)
  --json FILE      also write the results as JSON to FILE
  --signpost BIN   the signpost binary to measure (default: <target>/release/signpost)
  --work-dir DIR   where the run's ledger, settings and logs go (default: <target>/bench)
  --keep           keep the run's directory (ledger, settings, gateway log)

Environment: SIGNPOST_TEST_AMQP_URL (default amqp://guest:guest@127.0.0.1:5672/%2f),
SIGNPOST_TEST_AMQP_API (default http://guest:guest@127.0.0.1:15672), SIGNPOST_BENCH_LOG
(the gateway's log filter, default warn), SIGNPOST_BENCH_DATABASE_URL (a ledger to use
instead of a fresh SQLite file, e.g. postgres://postgres@127.0.0.1:5432/bench).";

const FIXTURE: &str = "gp-system/referral-new.json";
const PATH: &str = "/fhir/$process-message";

struct Args {
    quick: bool,
    json: Option<PathBuf>,
    signpost: PathBuf,
    work_dir: PathBuf,
    keep: bool,
}

impl Args {
    fn parse() -> Result<Self, String> {
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| signpost_tests::env::workspace().join("target"));
        let mut args = Args {
            quick: false,
            json: None,
            signpost: target.join("release").join("signpost"),
            work_dir: target.join("bench"),
            keep: false,
        };
        let mut it = std::env::args_os().skip(1);
        while let Some(a) = it.next() {
            let mut value = |name: &str| {
                it.next()
                    .map(PathBuf::from)
                    .ok_or_else(|| format!("{name} needs a value\n{USAGE}"))
            };
            match a.to_str() {
                Some("--quick") => args.quick = true,
                Some("--keep") => args.keep = true,
                Some("--json") => args.json = Some(value("--json")?),
                Some("--signpost") => args.signpost = value("--signpost")?,
                Some("--work-dir") => args.work_dir = value("--work-dir")?,
                Some("-h" | "--help") => {
                    println!("{USAGE}");
                    std::process::exit(0);
                }
                _ => return Err(format!("unexpected argument {a:?}\n{USAGE}")),
            }
        }
        Ok(args)
    }
}

/// How long each part runs.
struct Plan {
    mode: &'static str,
    phase: Duration,
    warmup: Duration,
    baseline: Duration,
    drain_limit: Duration,
    concurrency: &'static [usize],
    open_rate: f64,
    open_pool: usize,
    hyper_connections: usize,
    fsync: Duration,
}

impl Plan {
    fn new(quick: bool) -> Self {
        let (mode, phase, warmup, baseline, drain_limit, fsync) = if quick {
            ("quick", 2.0, 0.5, 2.0, 15.0, 0.5)
        } else {
            ("full", 10.0, 2.0, 10.0, 60.0, 2.0)
        };
        Plan {
            mode,
            phase: Duration::from_secs_f64(phase),
            warmup: Duration::from_secs_f64(warmup),
            baseline: Duration::from_secs_f64(baseline),
            drain_limit: Duration::from_secs_f64(drain_limit),
            concurrency: &[1, 8, 32, 64],
            open_rate: 1000.0,
            open_pool: 64,
            hyper_connections: 32,
            fsync: Duration::from_secs_f64(fsync),
        }
    }
}

fn say(message: impl std::fmt::Display) {
    eprintln!("bench: {message}");
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = match Args::parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    // On Ctrl-C or SIGTERM the bench is dropped, which stops the gateway and removes the vhost
    // and the work directory.
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("bench: error: cannot handle SIGTERM: {e}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = tokio::select! {
        r = bench(&args) => r,
        _ = tokio::signal::ctrl_c() => Err("interrupted; cleaned up".to_owned()),
        _ = term.recv() => Err("terminated; cleaned up".to_owned()),
    };
    match outcome {
        Ok(report) => {
            if let Some(path) = &args.json {
                let text = serde_json::to_string_pretty(&report).unwrap_or_default();
                if let Err(e) = std::fs::write(path, text + "\n") {
                    eprintln!("bench: error: cannot write {}: {e}", path.display());
                    return ExitCode::FAILURE;
                }
                say(format!("wrote {}", path.display()));
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("bench: error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// A directory of the run's own, removed on drop unless kept.
struct WorkDir {
    path: PathBuf,
    keep: bool,
}

impl WorkDir {
    fn create(parent: &Path, keep: bool) -> Result<Self, String> {
        let path = parent.join(format!(
            "run-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        ));
        std::fs::create_dir_all(&path)
            .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
        let path = path
            .canonicalize()
            .map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(WorkDir { path, keep })
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if self.keep {
            say(format!("kept {}", self.path.display()));
        } else {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

fn free_port() -> Result<SocketAddr, String> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("no free port: {e}"))?;
    l.local_addr().map_err(|e| format!("no free port: {e}"))
}

/// deploy/directory.example.json with the stand-in scheme's Endpoint pointed at `scheme_url`.
fn directory(scheme_url: &str) -> Result<Value, String> {
    let path = signpost_tests::env::workspace().join("deploy/directory.example.json");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut d: Value =
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut found = false;
    for e in d["entry"].as_array_mut().into_iter().flatten() {
        if e["resource"]["id"] == "scheme-standin" {
            e["resource"]["address"] = json!(scheme_url);
            found = true;
        }
    }
    if !found {
        return Err(format!("{} has no Endpoint scheme-standin", path.display()));
    }
    Ok(d)
}

/// A body and properties shaped like the envelope Signpost's relay publishes for a referral
/// (adapters/bus/src/envelope.rs), around `payload`: the message the scheme received.
fn envelope_like(payload: Value) -> (Vec<u8>, BasicProperties) {
    let id = || uuid::Uuid::new_v4().to_string();
    let correlation = id();
    let traceparent = format!(
        "00-{}-{}-01",
        uuid::Uuid::new_v4().simple(),
        &uuid::Uuid::new_v4().simple().to_string()[..16]
    );
    let body = json!({
        "schema_version": 1,
        "message_id": id(),
        "correlation_id": correlation,
        "kind": "referral-message",
        "referral_id": id(),
        "target": "scheme-standin",
        "created_at": "2026-01-01T00:00:00.000000000Z",
        "traceparent": traceparent,
        "payload": payload,
    });
    let mut headers = FieldTable::default();
    headers.insert(
        "traceparent".into(),
        AMQPValue::LongString(LongString::from(traceparent.as_bytes())),
    );
    headers.insert("x-schema-version".into(), AMQPValue::LongLongInt(1));
    let props = BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type(ShortString::from("application/json"))
        .with_correlation_id(ShortString::from(correlation))
        .with_type(ShortString::from("referral-message"))
        .with_app_id(ShortString::from("signpost"))
        .with_headers(headers);
    (serde_json::to_vec(&body).unwrap_or_default(), props)
}

fn ratio(a: f64, b: f64) -> Value {
    if b > 0.0 {
        json!((a / b * 10_000.0).round() / 10_000.0)
    } else {
        Value::Null
    }
}

fn r1(v: f64) -> Value {
    json!((v * 10.0).round() / 10.0)
}

async fn bench(args: &Args) -> Result<Value, String> {
    let plan = Plan::new(args.quick);
    if !args.signpost.is_file() {
        return Err(format!(
            "{} does not exist; build it with `cargo build --release -p signpost-gateway` \
             (or run `cargo xtask bench`, which does)",
            args.signpost.display()
        ));
    }
    let fixture_path = signpost_tests::env::fixture(FIXTURE);
    let fixture =
        std::fs::read(&fixture_path).map_err(|e| format!("{}: {e}", fixture_path.display()))?;
    let request_bytes = Template::new(&fixture)?.len();
    std::fs::create_dir_all(&args.work_dir)
        .map_err(|e| format!("cannot create {}: {e}", args.work_dir.display()))?;
    let work = WorkDir::create(&args.work_dir, args.keep)?;
    let ticks = sys::clock_ticks();
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let load_start = sys::load_average();
    say(format!(
        "{} run: {} s per phase; {cpus} CPUs, load average {}",
        plan.mode,
        plan.phase.as_secs_f64(),
        load_start.map_or("?".into(), |l| format!(
            "{:.2} {:.2} {:.2}",
            l[0], l[1], l[2]
        ))
    ));

    // The disk.
    say("disk: 4 KiB appends with fdatasync");
    let fsync_per_s = sys::fsync_rate(&work.path, plan.fsync)?;

    // The hyper baseline.
    say(format!(
        "hyper baseline: {} connections, {} s",
        plan.hyper_connections,
        plan.phase.as_secs_f64()
    ));
    let hyper_row = {
        let server = servers::hyper_baseline().await?;
        let load = Arc::new(Load {
            addr: server.addr,
            path: PATH.to_owned(),
            template: Template::new(&fixture)?,
            tracker: None,
        });
        load.closed(0, plan.hyper_connections, plan.warmup).await?;
        let cpu0 = CpuSnapshot::take(None);
        let out = load.closed(0, plan.hyper_connections, plan.phase).await?;
        let cpu = cpu0.until(&CpuSnapshot::take(None), ticks);
        Row {
            kind: "closed",
            connections: plan.hyper_connections,
            offered_per_s: None,
            out,
            delivery: Default::default(),
            drain: Duration::ZERO,
            cpu,
        }
    };

    // The loop.
    let vhost = broker::Vhost::create()?;
    say(format!("RabbitMQ vhost {}", vhost.name()));
    let tracker = Arc::new(Tracker::default());
    let scheme = servers::standin_scheme(tracker.clone()).await?;
    let directory_path = work.path.join("directory.json");
    let directory = directory(&format!("http://{}/fhir", scheme.addr))?;
    std::fs::write(&directory_path, directory.to_string())
        .map_err(|e| format!("{}: {e}", directory_path.display()))?;
    let addr = free_port()?;
    // A fresh SQLite file, unless SIGNPOST_BENCH_DATABASE_URL names another ledger.
    let other_ledger = std::env::var("SIGNPOST_BENCH_DATABASE_URL")
        .ok()
        .filter(|v| !v.is_empty());
    let database_url = match &other_ledger {
        Some(url) => url.clone(),
        None => format!("sqlite://{}", work.path.join("ledger.db").display()),
    };
    let config = work.path.join("signpost.toml");
    std::fs::write(
        &config,
        gateway::settings(addr, &vhost.amqp_url(), &database_url, &directory_path),
    )
    .map_err(|e| format!("{}: {e}", config.display()))?;

    say(format!(
        "starting {} run on {addr}",
        args.signpost.display()
    ));
    let spawned = Instant::now();
    let mut gw = Gateway::spawn(
        &args.signpost,
        &config,
        addr,
        work.path.join("signpost.log"),
    )?;
    if let Err(e) = gw.wait_ready(Duration::from_secs(60)).await {
        return Err(format!("{e}; its log ends:\n{}", gw.log_tail(20)));
    }
    let ready = spawned.elapsed();
    say(format!("ready in {} ms", ready.as_millis()));

    let result = drive(&plan, &fixture, &tracker, &mut gw, ticks).await;
    let peak_rss_kb = sys::peak_rss_kb(gw.pid());
    let (rows, open_row, accepted_in_all) = match result {
        Ok(r) => r,
        Err(e) => return Err(format!("{e}\nthe gateway's log ends:\n{}", gw.log_tail(20))),
    };
    gw.stop();
    drop(scheme);
    let ledger_bytes: u64 = ["ledger.db", "ledger.db-wal"]
        .iter()
        .filter_map(|f| std::fs::metadata(work.path.join(f)).ok())
        .map(|m| m.len())
        .sum();

    // The broker baseline, with the gateway gone: the envelope around the message the scheme got.
    let sample = tracker.sample();
    let payload = sample
        .as_deref()
        .and_then(|b| serde_json::from_slice::<Value>(b).ok())
        .or_else(|| serde_json::from_slice(&fixture).ok())
        .unwrap_or(Value::Null);
    let (message, properties) = envelope_like(payload);
    say(format!(
        "broker baseline: {} byte messages, {} in flight, {} s",
        message.len(),
        broker::WINDOW,
        plan.baseline.as_secs_f64()
    ));
    let cpu0 = CpuSnapshot::take(None);
    let broker = broker::baseline(
        &vhost.amqp_url(),
        &message,
        &properties,
        plan.warmup,
        plan.baseline,
    )
    .await?;
    let broker_cpu = cpu0.until(&CpuSnapshot::take(None), ticks);
    drop(vhost);

    // The report.
    let headline = rows
        .iter()
        .max_by(|a, b| a.out.accepted_per_s().total_cmp(&b.out.accepted_per_s()))
        .ok_or("no load phase ran")?;
    let accepted = headline.out.accepted_per_s();
    let delivered = headline.delivered_per_s();
    let hyper = hyper_row.out.answered_per_s();
    let open_key = |name: &str| format!("{name}_at_{:.0}_per_s", plan.open_rate);
    // What RabbitMQ's part of a referral costs (under `signpost run`, one confirmed publish into
    // a quorum queue, its delivery and its acknowledgement: the adapter's delivery report goes
    // to the ledger in the same process) against one baseline message (a confirmed publish), and
    // the rate that alone would allow if the broker had every CPU to itself. The baseline's CPU
    // covers its warm-up too, so it is shared over the warm-up's messages as well.
    let broker_ms_per_message = broker_cpu.broker_seconds * 1000.0
        / (broker.messages + broker.warmup_messages).max(1) as f64;
    let broker_ms_per_referral = headline.json()["broker_cpu_ms_per_referral"].as_f64();
    let broker_bound = broker_ms_per_referral
        .filter(|ms| *ms > 0.0)
        .map(|ms| cpus as f64 * 1000.0 / ms);
    let mut report = json!({
        "mode": plan.mode,
        "phase_s": plan.phase.as_secs_f64(),
        "accepted_per_s": r1(accepted),
        "delivered_per_s": r1(delivered),
        "headline_load": headline.label(),
        "broker_baseline_per_s": r1(broker.per_s),
        "hyper_baseline_per_s": r1(hyper),
        "accepted_to_broker_ratio": ratio(accepted, broker.per_s),
        "delivered_to_broker_ratio": ratio(delivered, broker.per_s),
        "accepted_to_hyper_ratio": ratio(accepted, hyper),
        "http_p50_ms": headline.json()["http_p50_ms"],
        "http_p99_ms": headline.json()["http_p99_ms"],
        "http_p999_ms": headline.json()["http_p999_ms"],
        "e2e_p50_ms": headline.json()["e2e_p50_ms"],
        "e2e_p99_ms": headline.json()["e2e_p99_ms"],
        "peak_rss_mb": peak_rss_kb.map(|kb| (kb as f64 / 1024.0 * 10.0).round() / 10.0),
        "ready_ms": ready.as_millis() as u64,
        "ledger": if other_ledger.is_some() { "SIGNPOST_BENCH_DATABASE_URL" } else { "sqlite" },
        "ledger_mb": (other_ledger.is_none()).then(|| (ledger_bytes as f64 / 1_048_576.0 * 10.0).round() / 10.0),
        "ledger_kb_per_referral": (accepted_in_all > 0 && other_ledger.is_none())
            .then(|| (ledger_bytes as f64 / 1024.0 / accepted_in_all as f64 * 10.0).round() / 10.0),
        "fsync_per_s": r1(fsync_per_s),
        "broker_cpu_ms_per_referral": broker_ms_per_referral,
        "broker_messages_per_referral": broker_ms_per_referral
            .filter(|_| broker_ms_per_message > 0.0)
            .map(|ms| r1(ms / broker_ms_per_message)),
        "broker_bound_per_s": broker_bound.map(r1),
        "broker_bound_to_broker_ratio": broker_bound.map(|b| ratio(b, broker.per_s)),
        "request_bytes": request_bytes,
        "closed_loop": rows.iter().map(Row::json).collect::<Vec<_>>(),
        "open_loop": open_row.json(),
        "broker_baseline": {
            "per_s": r1(broker.per_s),
            "messages": broker.messages,
            "duration_s": broker.elapsed.as_secs_f64(),
            "message_bytes": message.len(),
            "message_from": if sample.is_some() { "the referral message the scheme received, in an envelope like the relay's" } else { "the fixture, in an envelope like the relay's" },
            "in_flight": broker::WINDOW,
            "queue": "quorum, durable; persistent messages, mandatory, publisher confirms",
            "cpu_cores": cpu_json(&broker_cpu),
            "broker_cpu_ms_per_message": (broker_ms_per_message * 1000.0).round() / 1000.0,
        },
        "hyper_baseline": hyper_row.json(),
        "unexpected_receipts": tracker.unexpected(),
        "machine": {
            "cpus": cpus,
            "load_average_start": load_start,
            "load_average_end": sys::load_average(),
            "signpost": args.signpost.display().to_string(),
        },
    });
    let open = open_row.json();
    if let Value::Object(m) = &mut report {
        for key in [
            "accepted_per_s",
            "delivered_per_s",
            "http_p50_ms",
            "http_p99_ms",
            "http_p999_ms",
            "e2e_p50_ms",
            "e2e_p99_ms",
        ] {
            m.insert(open_key(key), open[key].clone());
        }
    }
    print_report(&plan, &report, &hyper_row, &rows, &open_row);
    Ok(report)
}

/// The closed-loop rows, the open-loop row, and referrals accepted in all (warm-up included).
type Rows = (Vec<Row>, Row, u64);

/// Warm-up, the closed-loop phases and the open loop against the running gateway.
async fn drive(
    plan: &Plan,
    fixture: &[u8],
    tracker: &Arc<Tracker>,
    gw: &mut Gateway,
    ticks: f64,
) -> Result<Rows, String> {
    let load = Arc::new(Load {
        addr: gw.addr,
        path: PATH.to_owned(),
        template: Template::new(fixture)?,
        tracker: Some(tracker.clone()),
    });
    say(format!(
        "warm-up: 8 connections, {} s",
        plan.warmup.as_secs_f64()
    ));
    let warm = load.closed(0, 8, plan.warmup).await?;
    if warm.accepted == 0 {
        return Err(format!(
            "the gateway accepted none of {} warm-up referrals (answers: {:?})",
            warm.requests, warm.errors
        ));
    }
    if tracker.drain(0, plan.drain_limit).await >= plan.drain_limit {
        return Err(format!(
            "{} warm-up referrals did not reach the stand-in scheme within {} s",
            tracker.outstanding(0),
            plan.drain_limit.as_secs()
        ));
    }

    let mut rows = Vec::new();
    let mut phase = 0;
    for &c in plan.concurrency {
        phase += 1;
        say(format!(
            "closed loop: {c} connections, {} s",
            plan.phase.as_secs_f64()
        ));
        let cpu0 = CpuSnapshot::take(Some(gw.pid()));
        let out = load.closed(phase, c, plan.phase).await?;
        let cpu = cpu0.until(&CpuSnapshot::take(Some(gw.pid())), ticks);
        let drain = tracker.drain(phase, plan.drain_limit).await;
        rows.push(Row {
            kind: "closed",
            connections: c,
            offered_per_s: None,
            out,
            delivery: tracker.delivery(phase),
            drain,
            cpu,
        });
        if !gw.running() {
            return Err("the gateway exited during the load".into());
        }
    }

    phase += 1;
    say(format!(
        "open loop: {:.0} referrals/s offered over {} connections, {} s",
        plan.open_rate,
        plan.open_pool,
        plan.phase.as_secs_f64()
    ));
    let grace = (plan.phase / 2).max(Duration::from_secs(1));
    let cpu0 = CpuSnapshot::take(Some(gw.pid()));
    let out = load
        .open(phase, plan.open_rate, plan.phase, plan.open_pool, grace)
        .await?;
    let cpu = cpu0.until(&CpuSnapshot::take(Some(gw.pid())), ticks);
    let drain = tracker.drain(phase, plan.drain_limit).await;
    let open_row = Row {
        kind: "open",
        connections: plan.open_pool,
        offered_per_s: Some(plan.open_rate),
        out,
        delivery: tracker.delivery(phase),
        drain,
        cpu,
    };
    let accepted =
        warm.accepted + rows.iter().map(|r| r.out.accepted).sum::<u64>() + open_row.out.accepted;
    Ok((rows, open_row, accepted))
}

fn print_report(plan: &Plan, report: &Value, hyper: &Row, rows: &[Row], open: &Row) {
    let f = |k: &str| report[k].as_f64().unwrap_or(f64::NAN);
    let b = &report["broker_baseline"];
    println!();
    println!(
        "Signpost bench ({}: {} s per phase), {} CPUs, load average at start {}",
        plan.mode,
        plan.phase.as_secs_f64(),
        report["machine"]["cpus"],
        report["machine"]["load_average_start"]
    );
    println!();
    println!("Baselines");
    println!(
        "  RabbitMQ   {:>9.0} msg/s  quorum queue, persistent, confirmed, {} B, {} in flight",
        f("broker_baseline_per_s"),
        b["message_bytes"],
        b["in_flight"]
    );
    println!(
        "  hyper      {:>9.0} req/s  bare hyper 1 server, fixed JSON, {} connections, p50 {} ms, p99 {} ms",
        f("hyper_baseline_per_s"),
        hyper.connections,
        fmt(hyper.out.latency.quantile_ms(0.5)),
        fmt(hyper.out.latency.quantile_ms(0.99)),
    );
    println!(
        "  disk       {:>9.0} /s     4 KiB append + fdatasync",
        f("fsync_per_s")
    );
    println!();
    let ledger = if report["ledger"] == "sqlite" {
        format!(
            "SQLite ledger {} MB ({} KB per referral)",
            report["ledger_mb"], report["ledger_kb_per_referral"]
        )
    } else {
        "ledger from SIGNPOST_BENCH_DATABASE_URL".to_owned()
    };
    println!(
        "Signpost (signpost run: gateway + fhir-messaging): ready in {} ms, peak RSS {} MB, {ledger}",
        report["ready_ms"], report["peak_rss_mb"]
    );
    let all: Vec<&Row> = rows.iter().chain(std::iter::once(open)).collect();
    print!("{}", report::table(&all));
    println!("  (latencies in ms; cpu in cores busy during the load: gateway process, RabbitMQ, everything else)");
    println!();
    println!(
        "Headline ({}): accepted {:.0}/s = {:.1}% of the RabbitMQ baseline, {:.1}% of the hyper baseline; delivered {:.0}/s",
        report["headline_load"].as_str().unwrap_or(""),
        f("accepted_per_s"),
        f("accepted_to_broker_ratio") * 100.0,
        f("accepted_to_hyper_ratio") * 100.0,
        f("delivered_per_s"),
    );
    if let Some(h) = report["closed_loop"]
        .as_array()
        .and_then(|rows| rows.iter().find(|r| r["load"] == report["headline_load"]))
    {
        let threads: Vec<String> = h["gateway_thread_cpu_cores"]
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(_, v)| v.as_f64().unwrap_or(0.0) >= 0.01)
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        println!(
            "  gateway: {} ms CPU per referral, {:.0}% of it in the kernel, {} context switches per referral; cores by thread: {}",
            h["gateway_cpu_ms_per_referral"],
            h["gateway_kernel_share"].as_f64().unwrap_or(f64::NAN) * 100.0,
            h["gateway_context_switches_per_referral"],
            threads.join(", ")
        );
    }
    if let (Some(per_ref), Some(n), Some(bound)) = (
        report["broker_cpu_ms_per_referral"].as_f64(),
        report["broker_messages_per_referral"].as_f64(),
        report["broker_bound_per_s"].as_f64(),
    ) {
        println!(
            "  RabbitMQ: {per_ref} ms CPU per referral, the work of {n} baseline messages ({} ms each); with every CPU to itself and no gateway, that alone caps the loop at {bound:.0}/s = {:.1}% of the baseline",
            b["broker_cpu_ms_per_message"],
            f("broker_bound_to_broker_ratio") * 100.0
        );
    }
    let ms = |k: &str| fmt(report[k].as_f64());
    println!(
        "  http p50 {} ms, p99 {} ms, p99.9 {} ms; end-to-end p50 {} ms, p99 {} ms",
        ms("http_p50_ms"),
        ms("http_p99_ms"),
        ms("http_p999_ms"),
        ms("e2e_p50_ms"),
        ms("e2e_p99_ms")
    );
    let open_p99 = format!("http_p99_ms_at_{:.0}_per_s", plan.open_rate);
    println!(
        "  at {:.0} referrals/s offered: accepted {:.0}/s, http p99 {} ms (from the scheduled send time)",
        plan.open_rate,
        f(&format!("accepted_per_s_at_{:.0}_per_s", plan.open_rate)),
        ms(&open_p99)
    );
    if let Some(w) = open.out.windows_summary(report::SLOW) {
        println!(
            "  slowest answer per {} ms of sends: median {:.2} ms, worst {:.2} ms ({:.1} s in); {} of {} windows had one over {} ms",
            load::WINDOW.as_millis(),
            w.median_ms,
            w.worst_ms,
            w.worst_at_s,
            w.over,
            w.count,
            report::SLOW.as_millis()
        );
    }
}

fn fmt(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{v:.2}"))
}
