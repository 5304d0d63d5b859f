//! Validation speed: `cargo bench -p signpost-profiles`.
//!
//! Prints the start-up time (every schema compiled), then for a typical referral message (the
//! fixture, about 10 resources) and a large one (the same plus 120 Observations) the
//! validations per second and p50/p99/max per validation on one thread, each beside a baseline
//! measured in the same run: parsing the same message with serde_json.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use signpost_profiles::Profiles;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn with_observations(mut message: Value, n: usize) -> Value {
    let patient = message["entry"][2]["fullUrl"].clone();
    let entries = message["entry"].as_array_mut().unwrap();
    for i in 0..n {
        entries.push(json!({
            "fullUrl": format!("urn:uuid:00000000-0000-4000-8000-{i:012}"),
            "resource": {
                "resourceType": "Observation",
                "status": "final",
                "code": {"coding": [{"system": "http://snomed.info/sct", "code": "1104341000000104", "display": "ONS4 item score"}]},
                "subject": {"reference": patient},
                "effectiveDateTime": "2026-11-20T09:30:00+00:00",
                "valueInteger": i % 10,
            }
        }));
    }
    message
}

fn measure(name: &str, profiles: &Profiles, message: &Value, iterations: usize) {
    let bytes = serde_json::to_vec(message).unwrap();
    let resources = message["entry"].as_array().map(Vec::len).unwrap_or(0);
    // Warm up, and check the message really is valid.
    let o = profiles
        .validate(message, Some("sp-referral-message"))
        .unwrap();
    assert!(o.is_valid(), "{name}: {:#?}", o.issues);
    let mut times = Vec::with_capacity(iterations);
    let mut parse_times = Vec::with_capacity(iterations);
    for _ in 0..iterations {
        let t = Instant::now();
        let v: Value = serde_json::from_slice(&bytes).unwrap();
        parse_times.push(t.elapsed());
        let t = Instant::now();
        let o = profiles.validate(&v, Some("sp-referral-message")).unwrap();
        times.push(t.elapsed());
        std::hint::black_box(o);
    }
    times.sort();
    parse_times.sort();
    let total: Duration = times.iter().sum();
    let parse_total: Duration = parse_times.iter().sum();
    println!(
        "{name:<28} {resources:>4} resources  {:>9.0} validations/s  p50 {:>7.1} us  p99 {:>7.1} us  max {:>7.1} us  | baseline serde_json parse p50 {:>6.1} us  ratio {:.1}x",
        iterations as f64 / total.as_secs_f64(),
        percentile(&times, 0.50).as_secs_f64() * 1e6,
        percentile(&times, 0.99).as_secs_f64() * 1e6,
        times.last().unwrap().as_secs_f64() * 1e6,
        percentile(&parse_times, 0.50).as_secs_f64() * 1e6,
        total.as_secs_f64() / parse_total.as_secs_f64(),
    );
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --all-targets` runs this too, without it, and a
    // short smoke run is enough there.
    let full = std::env::args().any(|a| a == "--bench");
    let (typical_n, large_n) = if full { (20_000, 2_000) } else { (50, 5) };
    let t = Instant::now();
    let profiles = Profiles::load().expect("profiles compile");
    println!(
        "start-up: every schema compiled in {:.1} ms",
        t.elapsed().as_secs_f64() * 1e3
    );
    let fixture: Value =
        serde_json::from_str(include_str!("../../fixtures/gp-system/referral-new.json")).unwrap();
    measure(
        "typical referral message",
        &profiles,
        &with_observations(fixture.clone(), 4),
        typical_n,
    );
    measure(
        "large referral message",
        &profiles,
        &with_observations(fixture, 120),
        large_n,
    );
}
