//! `cargo xtask`: the Signpost task runner. This file owns argument
//! parsing, the usage text, and turning a task's result into the process
//! exit code. Std only, so it builds in seconds.

mod bench;
mod chaos;
mod host;
mod paths;
mod pki;
mod proc;
mod python;
mod services;
mod tasks;

use std::env;
use std::ffi::OsString;
use std::process::ExitCode;

use crate::proc::Result;

const USAGE: &str = "\
Usage: cargo xtask <COMMAND> [ARGS...]

Commands:
  demo [ARGS...]  Make sure RabbitMQ runs on 127.0.0.1:5672 (installing and
                  starting it if needed, as root), build the gateway and the
                  demo, then run signpost-demo with ARGS.
  test [ARGS...]  Make sure RabbitMQ (127.0.0.1:5672) and PostgreSQL
                  (127.0.0.1:5432) run, and RabbitMQ also with TLS on
                  127.0.0.1:5671 requiring a client certificate (test PKI in
                  <target>/rabbitmq-tls; as root, xtask writes
                  /etc/rabbitmq/conf.d/90-signpost-tls.conf and restarts
                  RabbitMQ if that listener is not up), prepare the Python
                  test venv if tests/requirements.txt exists, build all
                  binaries, then run `cargo test --workspace --all-targets ARGS...`.
  bench [--quick] [--json FILE] [--min-ratio R]
                  Measure the loop on this machine: make sure RabbitMQ runs, build
                  the release binaries, then run signpost-bench: the baselines
                  (RabbitMQ's rate for persistent, confirmed referral-sized messages
                  into a quorum queue; a bare hyper server's request rate), then
                  `signpost run` on a fresh SQLite ledger and vhost under closed-loop
                  (1, 8, 32, 64 connections) and open-loop (1,000/s) referral load.
                  Prints a table; --json FILE writes the figures; --quick takes
                  2 s per phase instead of 10; --min-ratio R fails unless accepted
                  referrals/s reach R times the RabbitMQ baseline.
  chaos [--debug] [--referrals N] [--rate R] [--scenario NAME]... [--max-recovery S]
                  Fault injection: make sure RabbitMQ runs, build the release (or,
                  with --debug, debug) binaries, then run signpost-chaos: for each
                  scenario (gateway-kill, scheme-adapter-kill, gp-adapter-kill,
                  broker-restart, scheme-failing, ledger-full; default all) a fresh
                  loop as separate processes under a stream of N referrals (default
                  5,000 at 50/s), the fault injected at 40%, then every referral and
                  letter reconciled. Prints a table; fails on any loss, duplicate,
                  leftover, or recovery over S seconds (default 5). broker-restart
                  restarts the local RabbitMQ; ledger-full mounts a tmpfs (root).
  help            Print this message.

Environment:
  CARGO_TARGET_DIR            target directory (default: <workspace>/target)
  SIGNPOST_TEST_AMQP_URL      passed to the tests (default: amqp://guest:guest@127.0.0.1:5672/%2f)
  SIGNPOST_TEST_AMQPS_URL     passed to the tests (default: amqps://guest:guest@localhost:5671/%2f
                              with the test PKI's cacertfile, certfile and keyfile; when set,
                              the local TLS listener is left alone)
  SIGNPOST_TEST_AMQP_API      passed to the tests (default: http://guest:guest@127.0.0.1:15672)
  SIGNPOST_TEST_POSTGRES_URL  passed to the tests (default: postgres://postgres@127.0.0.1:5432/postgres)
";

fn main() -> ExitCode {
    let mut args = env::args_os().skip(1);
    let command = args.next();
    let rest: Vec<OsString> = args.collect();

    let Some(command) = command else {
        print!("{USAGE}");
        return ExitCode::SUCCESS;
    };
    let result: Result = match command.to_str() {
        Some("demo") => tasks::demo(&rest),
        Some("test") => tasks::test(&rest),
        Some("bench") => bench::bench(&rest),
        Some("chaos") => chaos::chaos(&rest),
        Some("help" | "-h" | "--help") => {
            print!("{USAGE}");
            Ok(())
        }
        _ => {
            eprintln!(
                "xtask: unknown command `{}`\n\n{USAGE}",
                command.to_string_lossy()
            );
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("xtask: error: {}", failure.message);
            ExitCode::from(failure.code)
        }
    }
}
