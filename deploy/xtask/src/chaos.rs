//! `cargo xtask chaos`: make sure RabbitMQ runs, build `signpost` and `signpost-chaos` (release
//! unless `--debug`), then run the fault-injection suite with the remaining arguments.

use std::ffi::OsString;

use crate::host::Host;
use crate::paths::Paths;
use crate::proc::{Cmd, Result};
use crate::services;

pub fn chaos(args: &[OsString]) -> Result {
    let paths = Paths::discover()?;
    services::ensure_rabbitmq(&mut Host::default())?;
    let debug = args.iter().any(|a| a == "--debug");
    let rest: Vec<&OsString> = args.iter().filter(|a| *a != "--debug").collect();
    let mut build = vec!["build"];
    if !debug {
        build.push("--release");
    }
    build.extend([
        "--package",
        "signpost-gateway",
        "--bin",
        "signpost",
        "--package",
        "signpost-tests",
        "--bin",
        "signpost-chaos",
    ]);
    paths.cargo(build).run()?;
    let dir = paths.target.join(if debug { "debug" } else { "release" });
    let exe = |name: &str| dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    Cmd::new(exe("signpost-chaos"))
        .arg("--signpost")
        .arg(exe("signpost"))
        .args(rest)
        .run()
}
