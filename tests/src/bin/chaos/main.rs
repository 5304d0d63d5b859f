//! `signpost-chaos` (run by `cargo xtask chaos`): faults injected into the running loop, and
//! every referral and letter counted end to end.
//!
//! For each scenario it starts a fresh loop as separate processes (the gateway, the scheme
//! adapter, the GP adapter, from one `signpost` binary) on a SQLite ledger and a RabbitMQ vhost
//! of its own, with a stand-in scheme and a stand-in GP system in this process. It drives a
//! steady stream of referrals over HTTP; the scheme works each one (accepted, then completed with
//! the outcome letter) and the letters flow back to the GP system. When 40% of the referrals are
//! sent it injects the scenario's fault, then reconciles once everything is quiet:
//!
//! - every referral the gateway acknowledged reached the scheme exactly once (a redelivery with
//!   the same `X-Request-Id`, answered 409 `duplicate` by the scheme as BaRS says, is counted
//!   apart: that is the at-least-once transport, not a second referral);
//! - every letter the gateway acknowledged from the scheme was filed at the GP system once;
//! - nothing is left in flight (no message in any queue, nothing unsent in the outbox);
//! - recovery: from the end of the fault (restart issued, broker back, scheme or disk healthy
//!   again) until every referral and letter acknowledged before it had arrived, and a referral
//!   acknowledged after it had reached the scheme too.
//!
//! It prints one table and exits non-zero on any loss, duplicate, leftover, refusal, or a
//! recovery slower than `--max-recovery`.

mod driver;
mod standins;
mod system;

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use signpost_tests::broker::Vhost;
use signpost_tests::client::Client;

use crate::driver::Stream;
use crate::standins::Standins;
use crate::system::{LedgerDisk, Proc};

const USAGE: &str = "\
usage: signpost-chaos [--referrals N] [--rate R] [--scenario NAME]... [--max-recovery S]
                      [--signpost BIN] [--work-dir DIR]

  --referrals N     referrals per scenario (default 5000)
  --rate R          referrals sent per second (default 50)
  --scenario NAME   one of the scenarios below, by name or number; repeatable (default: all)
  --max-recovery S  fail when recovery takes longer than S seconds (default 5)
  --signpost BIN    the signpost binary (default: <target>/release/signpost)
  --work-dir DIR    settings, ledgers and process logs (default: <target>/chaos)

Scenarios:
  1 gateway-kill         SIGKILL of the gateway, then restart
  2 scheme-adapter-kill  SIGKILL of the scheme adapter, then restart
  3 gp-adapter-kill      SIGKILL of the GP adapter while letters flow back, then restart
  4 broker-restart       rabbitmqctl stop_app, 2 s, start_app; everything left running
  5 scheme-failing       the scheme answers 500 and times out for 5 s
  6 ledger-full          the ledger's disk (a tmpfs; needs root) full until the gateway
                         refuses writes (503), then 5 s more

Environment: SIGNPOST_TEST_AMQP_URL (default amqp://guest:guest@127.0.0.1:5672/%2f),
SIGNPOST_CHAOS_LOG (the processes' log filter, default warn).";

const FIXTURE: &str = "gp-system/referral-new.json";
/// How long the scheme failing and the disk full last.
const FAULT: Duration = Duration::from_secs(5);
/// How long to wait for everything to arrive once the stream has ended.
const QUIET_LIMIT: Duration = Duration::from_secs(120);

#[derive(Clone, Copy, PartialEq, Debug)]
enum Scenario {
    GatewayKill,
    SchemeAdapterKill,
    GpAdapterKill,
    BrokerRestart,
    SchemeFailing,
    LedgerFull,
}

const ALL: [Scenario; 6] = [
    Scenario::GatewayKill,
    Scenario::SchemeAdapterKill,
    Scenario::GpAdapterKill,
    Scenario::BrokerRestart,
    Scenario::SchemeFailing,
    Scenario::LedgerFull,
];

impl Scenario {
    fn name(self) -> &'static str {
        match self {
            Scenario::GatewayKill => "gateway-kill",
            Scenario::SchemeAdapterKill => "scheme-adapter-kill",
            Scenario::GpAdapterKill => "gp-adapter-kill",
            Scenario::BrokerRestart => "broker-restart",
            Scenario::SchemeFailing => "scheme-failing",
            Scenario::LedgerFull => "ledger-full",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        ALL.iter()
            .enumerate()
            .find_map(|(i, sc)| (s == sc.name() || s == (i + 1).to_string()).then_some(*sc))
    }
}

struct Args {
    referrals: usize,
    rate: f64,
    scenarios: Vec<Scenario>,
    max_recovery: f64,
    signpost: PathBuf,
    work_dir: PathBuf,
}

impl Args {
    fn parse() -> Result<Self, String> {
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| signpost_tests::env::workspace().join("target"));
        let mut args = Args {
            referrals: 5000,
            rate: 50.0,
            scenarios: Vec::new(),
            max_recovery: 5.0,
            signpost: target.join("release").join("signpost"),
            work_dir: target.join("chaos"),
        };
        let mut it = std::env::args().skip(1);
        while let Some(a) = it.next() {
            let mut value = |name: &str| {
                it.next()
                    .ok_or_else(|| format!("{name} needs a value\n{USAGE}"))
            };
            let number = |name: &str, v: String| {
                v.parse::<f64>()
                    .ok()
                    .filter(|x| x.is_finite() && *x > 0.0)
                    .ok_or_else(|| format!("{name} needs a positive number, not {v:?}"))
            };
            match a.as_str() {
                "--referrals" => {
                    args.referrals = number("--referrals", value("--referrals")?)? as usize
                }
                "--rate" => args.rate = number("--rate", value("--rate")?)?,
                "--max-recovery" => {
                    args.max_recovery = number("--max-recovery", value("--max-recovery")?)?
                }
                "--scenario" => {
                    let v = value("--scenario")?;
                    let sc = Scenario::parse(&v)
                        .ok_or_else(|| format!("unknown scenario {v:?}\n{USAGE}"))?;
                    if !args.scenarios.contains(&sc) {
                        args.scenarios.push(sc);
                    }
                }
                "--signpost" => args.signpost = PathBuf::from(value("--signpost")?),
                "--work-dir" => args.work_dir = PathBuf::from(value("--work-dir")?),
                "-h" | "--help" => {
                    println!("{USAGE}");
                    std::process::exit(0);
                }
                _ => return Err(format!("unexpected argument {a:?}\n{USAGE}")),
            }
        }
        if args.scenarios.is_empty() {
            args.scenarios = ALL.to_vec();
        }
        Ok(args)
    }
}

/// One scenario's reconciliation.
#[derive(Default)]
struct Row {
    scenario: &'static str,
    sent: usize,
    acknowledged: usize,
    delivered: usize,
    duplicates: usize,
    lost: usize,
    letters_acked: usize,
    letters_filed: usize,
    in_flight: u64,
    recovery_s: Option<f64>,
    notes: Vec<String>,
    /// Problems that fail the run besides loss, duplicates and leftovers.
    failures: Vec<String>,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("warn"))
        .with_writer(std::io::stderr)
        .init();
    let args = match Args::parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("signpost-chaos: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("signpost-chaos: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(run(args))
}

async fn run(args: Args) -> ExitCode {
    if !args.signpost.is_file() {
        eprintln!(
            "signpost-chaos: no signpost binary at {} (build it, or pass --signpost)",
            args.signpost.display()
        );
        return ExitCode::FAILURE;
    }
    let fixture = signpost_tests::env::workspace()
        .join("fixtures")
        .join(FIXTURE);
    let template: Value = match std::fs::read(&fixture)
        .map_err(|e| e.to_string())
        .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
    {
        Ok(v) => v,
        Err(e) => {
            eprintln!("signpost-chaos: {}: {e}", fixture.display());
            return ExitCode::FAILURE;
        }
    };
    println!(
        "signpost-chaos: {} referrals per scenario at {}/s; scenarios: {}",
        args.referrals,
        args.rate,
        args.scenarios
            .iter()
            .map(|s| s.name())
            .collect::<Vec<_>>()
            .join(", ")
    );
    let mut rows = Vec::new();
    for sc in &args.scenarios {
        println!("\n== {} ==", sc.name());
        let row = match scenario(*sc, &args, &template).await {
            Ok(row) => row,
            Err(e) => Row {
                scenario: sc.name(),
                failures: vec![format!("could not run: {e}")],
                ..Row::default()
            },
        };
        for n in &row.notes {
            println!("   {n}");
        }
        for f in &row.failures {
            println!("   FAILED: {f}");
        }
        rows.push(row);
    }
    print_table(&rows, args.max_recovery);
    let bad = rows.iter().any(|r| {
        r.lost > 0
            || r.duplicates > 0
            || r.in_flight > 0
            || !r.failures.is_empty()
            || r.recovery_s.is_none_or(|s| s > args.max_recovery)
    });
    if bad {
        println!("\nsignpost-chaos: FAILED (see the rows above)");
        ExitCode::FAILURE
    } else {
        println!("\nsignpost-chaos: nothing lost, nothing doubled");
        ExitCode::SUCCESS
    }
}

fn print_table(rows: &[Row], max_recovery: f64) {
    println!(
        "\n| scenario | sent | acknowledged | delivered | duplicates | lost | letters acknowledged | letters filed | in flight | recovery s |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in rows {
        let recovery = match r.recovery_s {
            Some(s) if s > max_recovery => format!("{s:.2} (over {max_recovery})"),
            Some(s) => format!("{s:.2}"),
            None => "not recovered".to_owned(),
        };
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            r.scenario,
            r.sent,
            r.acknowledged,
            r.delivered,
            r.duplicates,
            r.lost,
            r.letters_acked,
            r.letters_filed,
            r.in_flight,
            recovery
        );
    }
}

fn free_addr() -> Result<SocketAddr, String> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| format!("no free port: {e}"))
}

/// The loop's processes for one scenario.
struct Loop {
    gateway: Proc,
    scheme_adapter: Proc,
    gp_adapter: Proc,
}

impl Loop {
    fn all(&mut self) -> [&mut Proc; 3] {
        [
            &mut self.gateway,
            &mut self.scheme_adapter,
            &mut self.gp_adapter,
        ]
    }
}

async fn scenario(sc: Scenario, args: &Args, template: &Value) -> Result<Row, String> {
    let dir = args.work_dir.join(sc.name());
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let vhost = Vhost::create("signpost-chaos")?;
    let addr = free_addr()?;
    let gateway_fhir = format!("http://{addr}/fhir");
    let standins = Standins::start(gateway_fhir.clone(), Duration::from_secs(3))
        .await
        .map_err(|e| format!("stand-ins: {e}"))?;
    let directory = dir.join("directory.json");
    std::fs::write(
        &directory,
        signpost_tests::standin::directory(&standins.scheme_url, &standins.gp_url).to_string(),
    )
    .map_err(|e| format!("{}: {e}", directory.display()))?;
    let ledger_dir = dir.join("ledger");
    let disk = if sc == Scenario::LedgerFull {
        Some(LedgerDisk::mount(&ledger_dir, 2048)?)
    } else {
        std::fs::create_dir_all(&ledger_dir)
            .map_err(|e| format!("{}: {e}", ledger_dir.display()))?;
        None
    };
    let database_url = format!("sqlite://{}", ledger_dir.join("signpost.db").display());
    let config = dir.join("signpost.toml");
    std::fs::write(
        &config,
        system::settings(addr, &vhost.amqp_url(), &database_url, &directory),
    )
    .map_err(|e| format!("{}: {e}", config.display()))?;

    let bin = &args.signpost;
    let mut procs = Loop {
        gateway: Proc::new("gateway", bin, &config, &dir, &["gateway"]),
        scheme_adapter: Proc::new(
            "scheme-adapter",
            bin,
            &config,
            &dir,
            &["adapter", "fhir-messaging"],
        ),
        gp_adapter: Proc::new(
            "gp-adapter",
            bin,
            &config,
            &dir,
            &["adapter", "fhir-document"],
        ),
    };
    let client = Client::new();
    procs.gateway.start()?;
    wait_ready(&client, addr, Duration::from_secs(30)).await?;
    procs.scheme_adapter.start()?;
    procs.gp_adapter.start()?;

    let stream = Arc::new(Stream::default());
    let driving = tokio::spawn(driver::drive(
        stream.clone(),
        client.clone(),
        gateway_fhir.clone(),
        template.clone(),
        args.referrals,
        args.rate,
    ));
    let inject_at = (args.referrals * 2 / 5).max(1);
    while stream.sent.load(Ordering::SeqCst) < inject_at && !driving.is_finished() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let mut row = Row {
        scenario: sc.name(),
        ..Row::default()
    };
    let fault_ended = match sc {
        Scenario::GatewayKill => restart(&mut procs.gateway)?,
        Scenario::SchemeAdapterKill => restart(&mut procs.scheme_adapter)?,
        Scenario::GpAdapterKill => {
            let letters = standins.shared.counts().letters_filed.len();
            row.notes.push(format!(
                "{letters} letters filed before the GP adapter was killed"
            ));
            restart(&mut procs.gp_adapter)?
        }
        Scenario::BrokerRestart => {
            system::restart_broker(Duration::from_secs(2)).await?;
            Instant::now()
        }
        Scenario::SchemeFailing => {
            standins.shared.failing.store(true, Ordering::SeqCst);
            tokio::time::sleep(FAULT).await;
            standins.shared.failing.store(false, Ordering::SeqCst);
            row.notes.push(format!(
                "the scheme failed {} deliveries on purpose (500, or no answer within the adapter's 2 s limit)",
                standins.shared.failed_on_purpose.load(Ordering::SeqCst)
            ));
            Instant::now()
        }
        Scenario::LedgerFull => {
            // SQLite keeps writing into the room its write-ahead log already has, so first
            // empty the log (a checkpoint that truncates it, as any process may ask), then fill
            // the disk: the next write needs room the disk no longer has. Keep it full until
            // the gateway has refused (503) for a while, bounded.
            let disk = disk.as_ref().ok_or("no ledger disk")?;
            let truncated = truncate_wal(&database_url).await;
            row.notes.push(format!(
                "write-ahead log emptied before the fault: {truncated}"
            ));
            let refusals = || {
                stream.acks().answers.get("503").copied().unwrap_or(0)
                    + standins.shared.unavailable.load(Ordering::SeqCst)
            };
            let before = refusals();
            let took = disk.fill()?;
            let filled = Instant::now();
            while refusals() == before && filled.elapsed() < Duration::from_secs(60) {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            let bit_after = filled.elapsed();
            tokio::time::sleep(FAULT).await;
            disk.free();
            let refused = refusals() - before;
            row.notes.push(format!(
                "the ledger's disk was full for {:.1} s (a {} MiB filler); the first 503 came after {:.1} s, and the gateway answered 503 {refused} times in all (to referrals and to the scheme's messages)",
                filled.elapsed().as_secs_f64(),
                took >> 20,
                bit_after.as_secs_f64()
            ));
            if refused == 0 {
                row.failures
                    .push("the gateway never answered 503 while its disk was full".to_owned());
            }
            Instant::now()
        }
    };
    row.recovery_s = recovery(&stream, &standins, fault_ended).await;

    let _ = driving.await;
    let quiet = quiet(&stream, &standins, &vhost, &client, addr, &mut procs).await;
    reconcile(&mut row, &stream, &standins, quiet);
    for p in procs.all() {
        if !p.running() {
            row.failures
                .push(format!("the {} was not running at the end", p.name));
        } else if !p.stop(Duration::from_secs(10)) {
            row.failures.push(format!(
                "the {} did not stop cleanly on SIGTERM within 10 s",
                p.name
            ));
        }
    }
    drop(disk);
    Ok(row)
}

/// `PRAGMA wal_checkpoint(TRUNCATE)` on the ledger from a connection of our own; what it said.
async fn truncate_wal(database_url: &str) -> String {
    use sqlx::{Connection, Row};
    let run = async {
        let mut conn = sqlx::SqliteConnection::connect(database_url).await?;
        sqlx::query("PRAGMA busy_timeout = 5000")
            .execute(&mut conn)
            .await?;
        let mut last = String::new();
        for _ in 0..5 {
            let row = sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
                .fetch_one(&mut conn)
                .await?;
            let busy: i64 = row.try_get(0)?;
            last = if busy == 0 {
                "yes".to_owned()
            } else {
                "no (the ledger was busy)".to_owned()
            };
            if busy == 0 {
                break;
            }
        }
        conn.close().await?;
        Ok::<_, sqlx::Error>(last)
    };
    run.await.unwrap_or_else(|e| format!("no ({e})"))
}

/// SIGKILL and start again at once, as a supervisor would. The fault ends at the restart.
fn restart(p: &mut Proc) -> Result<Instant, String> {
    p.kill();
    let at = Instant::now();
    p.start()?;
    Ok(at)
}

async fn wait_ready(client: &Client, addr: SocketAddr, limit: Duration) -> Result<(), String> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if let Ok(r) = client.get(&format!("http://{addr}/readyz")).await {
            if r.status.is_success() {
                return Ok(());
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Err(format!(
        "the gateway was not ready within {} s",
        limit.as_secs()
    ))
}

/// Seconds from `fault_ended` until every referral and letter the gateway acknowledged before
/// then had arrived; `None` if that took longer than [`QUIET_LIMIT`].
async fn recovery(stream: &Stream, standins: &Standins, fault_ended: Instant) -> Option<f64> {
    let referrals: Vec<String> = stream
        .acks()
        .acked
        .iter()
        .filter(|(_, at)| **at <= fault_ended)
        .map(|(c, _)| c.clone())
        .collect();
    let letters: Vec<String> = standins
        .shared
        .counts()
        .letters_acked
        .iter()
        .filter(|(_, at)| **at <= fault_ended)
        .map(|(c, _)| c.clone())
        .collect();
    let stream_over = stream.sent.load(Ordering::SeqCst) == stream.settled.load(Ordering::SeqCst)
        && stream.settled.load(Ordering::SeqCst) == stream.acks().acked.len();
    while fault_ended.elapsed() < QUIET_LIMIT {
        // The loop works again: a referral acknowledged after the fault has reached the scheme
        // (unless the stream had already ended).
        let working_again = stream_over || {
            let acks = stream.acks();
            let c = standins.shared.counts();
            acks.acked
                .iter()
                .any(|(r, at)| *at > fault_ended && c.referrals.contains_key(r))
        };
        let done = working_again && {
            let c = standins.shared.counts();
            referrals.iter().all(|r| c.referrals.contains_key(r))
                && letters.iter().all(|l| c.letters_filed.contains_key(l))
        };
        if done {
            return Some(fault_ended.elapsed().as_secs_f64());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

/// What was still in flight when the wait for quiet ended.
struct Quiet {
    queued: Vec<(String, u64)>,
    outbox_unsent: Option<u64>,
    working: usize,
}

/// Wait until everything acknowledged has arrived, the scheme has nothing left to send back, no
/// queue holds a message and the outbox is empty; at most [`QUIET_LIMIT`].
async fn quiet(
    stream: &Stream,
    standins: &Standins,
    vhost: &Vhost,
    client: &Client,
    addr: SocketAddr,
    procs: &mut Loop,
) -> Quiet {
    let start = Instant::now();
    loop {
        let arrived = {
            let acks = stream.acks();
            let c = standins.shared.counts();
            acks.acked.keys().all(|r| c.referrals.contains_key(r))
                && c.letters_acked
                    .keys()
                    .all(|l| c.letters_filed.contains_key(l))
        };
        let working = standins.shared.working.load(Ordering::SeqCst);
        let outbox_unsent = outbox_unsent(client, addr).await;
        let queued = system::queued(&vhost.name).unwrap_or_else(|e| vec![(e, 1)]);
        let settled = arrived && working == 0 && outbox_unsent == Some(0) && queued.is_empty();
        if settled || start.elapsed() > QUIET_LIMIT || procs.all().iter_mut().any(|p| !p.running())
        {
            return Quiet {
                queued,
                outbox_unsent,
                working,
            };
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn outbox_unsent(client: &Client, addr: SocketAddr) -> Option<u64> {
    let r = client.get(&format!("http://{addr}/metrics")).await.ok()?;
    r.text.lines().find_map(|l| {
        l.strip_prefix("signpost_outbox_unsent ")
            .and_then(|v| v.trim().parse().ok())
    })
}

fn reconcile(row: &mut Row, stream: &Stream, standins: &Standins, quiet: Quiet) {
    let acks = stream.acks();
    let c = standins.shared.counts();
    row.sent = stream.sent.load(Ordering::SeqCst);
    row.acknowledged = acks.acked.len();
    row.delivered = acks
        .acked
        .keys()
        .filter(|k| c.referrals.contains_key(*k))
        .count();
    let lost_referrals = row.acknowledged - row.delivered;
    let unasked = c
        .referrals
        .keys()
        .filter(|k| !acks.acked.contains_key(*k))
        .count();
    row.letters_acked = c.letters_acked.len();
    row.letters_filed = c.letters_filed.len();
    let lost_letters = c
        .letters_acked
        .keys()
        .filter(|k| !c.letters_filed.contains_key(*k))
        .count();
    let dup_referrals = c.referrals.values().filter(|n| **n > 1).count();
    let dup_letters = c.letters_filed.values().filter(|n| **n > 1).count();
    row.duplicates = dup_referrals + dup_letters;
    row.lost = lost_referrals + lost_letters;
    row.in_flight = quiet.queued.iter().map(|(_, n)| n).sum::<u64>()
        + quiet.outbox_unsent.unwrap_or(1)
        + quiet.working as u64;

    let answers = acks
        .answers
        .iter()
        .map(|(k, v)| format!("{k}: {v}"))
        .collect::<Vec<_>>()
        .join(", ");
    row.notes
        .push(format!("gateway answers to referrals: {answers}"));
    row.notes.push(format!(
        "redeliveries absorbed by X-Request-Id: {} at the scheme, {} at the GP system",
        c.scheme_redelivered, c.gp_redelivered
    ));
    if lost_referrals + lost_letters + dup_referrals + dup_letters > 0 {
        row.notes.push(format!(
            "lost: {lost_referrals} referrals, {lost_letters} letters; duplicated: {dup_referrals} referrals, {dup_letters} letters"
        ));
    }
    if unasked > 0 {
        row.notes.push(format!(
            "{unasked} referrals reached the scheme whose acknowledgement the sender never got"
        ));
    }
    if !quiet.queued.is_empty() || quiet.outbox_unsent != Some(0) || quiet.working > 0 {
        row.notes.push(format!(
            "in flight at the end: queues {:?}, outbox unsent {:?}, scheme messages unsent {}",
            quiet.queued, quiet.outbox_unsent, quiet.working
        ));
    }
    if acks.refused > 0 {
        row.failures.push(format!(
            "{} referrals were refused by the gateway",
            acks.refused
        ));
    }
    if acks.gave_up > 0 {
        row.failures.push(format!(
            "{} referrals were never acknowledged in two minutes of retries",
            acks.gave_up
        ));
    }
    if c.letters_unacked > 0 {
        row.failures.push(format!(
            "{} letters were never acknowledged by the gateway",
            c.letters_unacked
        ));
    }
    if acks.answers.contains_key("500") {
        row.failures
            .push("the gateway answered 500 (an unexpected failure)".to_owned());
    }
}
