//! `cargo xtask bench [--quick] [--json FILE] [--min-ratio R]`: builds the release binaries and
//! runs `signpost-bench` (tests/src/bin/bench), which measures the baselines (RabbitMQ and a bare
//! hyper server) and then `signpost run` under load, and prints the table. The measuring is done
//! by that release-built binary, not here: a debug-built load generator would measure itself.
//!
//! `--min-ratio R` makes the run fail when Signpost accepts, or delivers to the scheme, fewer
//! referrals per second than R times the RabbitMQ baseline measured in the same run (the
//! regression check the issue asks for at R = 0.2). Both count: a gateway that accepts faster
//! while its outbox falls behind has not got faster. CI (`.ci/run`) runs `--quick --min-ratio
//! 0.05`: Signpost is still below 0.2.

use std::ffi::OsString;
use std::fs;
use std::path::PathBuf;

use crate::host::Host;
use crate::paths::Paths;
use crate::proc::{say, Cmd, Failure, Result};
use crate::services;

#[derive(Debug, Default, PartialEq)]
pub struct Options {
    pub quick: bool,
    pub json: Option<PathBuf>,
    pub min_ratio: Option<f64>,
}

/// The headline figures, read back from the bench's JSON.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Figures {
    pub accepted_per_s: f64,
    pub delivered_per_s: f64,
    pub broker_baseline_per_s: f64,
}

impl Figures {
    /// The lower of the accepted and delivered rates, over the RabbitMQ baseline.
    pub fn ratio(&self) -> f64 {
        if self.broker_baseline_per_s > 0.0 {
            self.accepted_per_s.min(self.delivered_per_s) / self.broker_baseline_per_s
        } else {
            0.0
        }
    }
}

/// `cargo xtask bench ARGS...`.
pub fn bench(args: &[OsString]) -> Result {
    let options = parse(args)?;
    let paths = Paths::discover()?;
    services::ensure_rabbitmq(&mut Host::default())?;
    run(&paths, &options).map(drop)
}

fn parse(args: &[OsString]) -> Result<Options> {
    let usage = "usage: cargo xtask bench [--quick] [--json FILE] [--min-ratio R]";
    let mut options = Options::default();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.to_str() {
            Some("--quick") => options.quick = true,
            Some("--json") => {
                let file = it
                    .next()
                    .ok_or_else(|| Failure::new(format!("--json needs a file\n{usage}")))?;
                options.json = Some(PathBuf::from(file));
            }
            Some("--min-ratio") => {
                let ratio = it
                    .next()
                    .and_then(|r| r.to_str())
                    .and_then(|r| r.parse::<f64>().ok())
                    .filter(|r| r.is_finite() && *r >= 0.0)
                    .ok_or_else(|| {
                        Failure::new(format!("--min-ratio needs a number such as 0.2\n{usage}"))
                    })?;
                options.min_ratio = Some(ratio);
            }
            _ => {
                return Err(Failure {
                    message: format!("unexpected argument {arg:?}\n{usage}"),
                    code: 2,
                })
            }
        }
    }
    Ok(options)
}

fn release_bin(paths: &Paths, name: &str) -> PathBuf {
    paths
        .target
        .join("release")
        .join(format!("{name}{}", std::env::consts::EXE_SUFFIX))
}

/// Builds the release binaries (cargo skips what is up to date), runs the bench, and checks
/// the ratio if asked to.
pub fn run(paths: &Paths, options: &Options) -> Result<Figures> {
    paths
        .cargo([
            "build",
            "--release",
            "--package",
            "signpost-gateway",
            "--package",
            "signpost-tests",
            "--bins",
        ])
        .run()?;
    let work_dir = paths.target.join("bench");
    fs::create_dir_all(&work_dir)
        .map_err(|e| Failure::new(format!("cannot create {}: {e}", work_dir.display())))?;
    // The figures come back through the JSON file: the caller's, or one of our own.
    let json = match &options.json {
        Some(file) => file.clone(),
        None => work_dir.join(format!("results-{}.json", std::process::id())),
    };
    let _ = fs::remove_file(&json);
    let mut cmd = Cmd::new(release_bin(paths, "signpost-bench"))
        .arg("--signpost")
        .arg(release_bin(paths, "signpost"))
        .arg("--work-dir")
        .arg(&work_dir)
        .arg("--json")
        .arg(&json);
    if options.quick {
        cmd = cmd.arg("--quick");
    }
    cmd.run()?;
    let text = fs::read_to_string(&json)
        .map_err(|e| Failure::new(format!("cannot read the results {}: {e}", json.display())));
    if options.json.is_none() {
        let _ = fs::remove_file(&json);
    }
    let figures = figures(&text?)?;
    if let Some(min) = options.min_ratio {
        check(&figures, min)?;
        say(format!(
            "accepted/s and delivered/s are at least {:.1}% of the RabbitMQ baseline (at least {:.1}% required)",
            figures.ratio() * 100.0,
            min * 100.0
        ));
    }
    Ok(figures)
}

fn figures(json: &str) -> Result<Figures> {
    let number = |key: &str| {
        top_level_number(json, key)
            .ok_or_else(|| Failure::new(format!("the bench's JSON has no number `{key}`")))
    };
    Ok(Figures {
        accepted_per_s: number("accepted_per_s")?,
        delivered_per_s: number("delivered_per_s")?,
        broker_baseline_per_s: number("broker_baseline_per_s")?,
    })
}

fn check(figures: &Figures, min_ratio: f64) -> Result {
    if figures.broker_baseline_per_s > 0.0 && figures.ratio() >= min_ratio {
        return Ok(());
    }
    Err(Failure::new(format!(
        "Signpost accepted {:.0} referrals/s and delivered {:.0}/s, the lower {:.1}% of the \
         RabbitMQ baseline measured in the same run ({:.0} persistent confirmed messages/s into a \
         quorum queue); at least {:.1}% is required",
        figures.accepted_per_s,
        figures.delivered_per_s,
        figures.ratio() * 100.0,
        figures.broker_baseline_per_s,
        min_ratio * 100.0
    )))
}

/// The number under `key` in the outermost object of a JSON text (keys of nested objects with
/// the same name are skipped). Std only: enough JSON for the bench's own output.
fn top_level_number(json: &str, key: &str) -> Option<f64> {
    let bytes = json.as_bytes();
    let mut depth = 0usize;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'"' => {
                let start = i + 1;
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
                let text = json.get(start..i.min(bytes.len()))?;
                i += 1;
                if depth == 1 && text == key {
                    let rest = json.get(i..)?.trim_start();
                    if let Some(value) = rest.strip_prefix(':') {
                        let value = value.trim_start();
                        let end = value
                            .find(|c: char| !(c.is_ascii_digit() || "+-.eE".contains(c)))
                            .unwrap_or(value.len());
                        return value[..end].parse().ok();
                    }
                }
                continue;
            }
            b'{' | b'[' => depth += 1,
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
        i += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_level_numbers_only() {
        let json = r#"{
  "closed_loop": [{"accepted_per_s": 1.5, "x": "accepted_per_s"}],
  "headline_load": "accepted_per_s",
  "note": "a \"quoted\" accepted_per_s: 7",
  "accepted_per_s": 812.4,
  "broker_baseline_per_s": 1.2e4,
  "e2e_p99_ms": null
}"#;
        assert_eq!(top_level_number(json, "accepted_per_s"), Some(812.4));
        assert_eq!(
            top_level_number(json, "broker_baseline_per_s"),
            Some(12000.0)
        );
        assert_eq!(top_level_number(json, "e2e_p99_ms"), None);
        assert_eq!(top_level_number(json, "missing"), None);
    }

    #[test]
    fn arguments() {
        let args: Vec<OsString> = ["--quick", "--json", "out.json", "--min-ratio", "0.25"]
            .iter()
            .map(OsString::from)
            .collect();
        assert_eq!(
            parse(&args).ok(),
            Some(Options {
                quick: true,
                json: Some(PathBuf::from("out.json")),
                min_ratio: Some(0.25),
            })
        );
        assert!(parse(&[OsString::from("--min-ratio"), OsString::from("x")]).is_err());
        assert!(parse(&[OsString::from("--fast")]).is_err());
    }

    #[test]
    fn the_ratio_check_names_the_figures() {
        let slow = Figures {
            accepted_per_s: 500.0,
            delivered_per_s: 510.0,
            broker_baseline_per_s: 10_000.0,
        };
        let message = check(&slow, 0.2)
            .err()
            .map(|f| f.message)
            .unwrap_or_default();
        assert!(
            message.contains("500 referrals/s and delivered 510/s, the lower 5.0%"),
            "{message}"
        );
        assert!(check(&slow, 0.05).is_ok());
        // Accepting fast while delivery falls behind does not pass.
        let behind = Figures {
            accepted_per_s: 3_000.0,
            delivered_per_s: 400.0,
            broker_baseline_per_s: 10_000.0,
        };
        assert!(check(&behind, 0.2).is_err());
        assert!(check(&behind, 0.04).is_ok());
        let no_baseline = Figures {
            accepted_per_s: 500.0,
            delivered_per_s: 500.0,
            broker_baseline_per_s: 0.0,
        };
        assert!(check(&no_baseline, 0.0).is_err());
    }
}
