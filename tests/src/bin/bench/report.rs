//! The bench's results: one row per load phase, the baselines, the headline figures; printed as
//! a table and written as JSON.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use serde_json::{json, Map, Value};

use crate::hist::Histogram;
use crate::load::{Delivery, Outcome, WINDOW};

/// An open-loop window with an answer slower than this is counted (the p99 target at 1,000
/// referrals a second).
pub const SLOW: Duration = Duration::from_millis(10);
use crate::sys::CpuUse;

/// One load phase against the gateway (or the hyper baseline).
pub struct Row {
    /// `closed` or `open`.
    pub kind: &'static str,
    /// Closed loop: connections, each with one request at a time. Open loop: the pool size.
    pub connections: usize,
    /// Open loop: the rate offered.
    pub offered_per_s: Option<f64>,
    pub out: Outcome,
    pub delivery: Delivery,
    /// From the end of the load until every accepted referral had reached the scheme (or the
    /// limit).
    pub drain: Duration,
    /// During the load.
    pub cpu: CpuUse,
}

fn round(v: f64, places: i32) -> f64 {
    let f = 10f64.powi(places);
    (v * f).round() / f
}

fn ms(v: Option<f64>) -> Value {
    v.map_or(Value::Null, |v| json!(round(v, 3)))
}

fn quantiles(prefix: &str, h: &Histogram, qs: &[(&str, f64)], into: &mut Map<String, Value>) {
    for (name, q) in qs {
        into.insert(format!("{prefix}_{name}_ms"), ms(h.quantile_ms(*q)));
    }
}

const HTTP_QS: &[(&str, f64)] = &[("p50", 0.5), ("p99", 0.99), ("p999", 0.999)];
const E2E_QS: &[(&str, f64)] = &[("p50", 0.5), ("p99", 0.99)];

impl Row {
    pub fn label(&self) -> String {
        match self.offered_per_s {
            Some(rate) => format!("open {rate:.0}/s"),
            None => format!("closed {}", self.connections),
        }
    }

    /// Referrals that reached the scheme per second: those of this phase, over the time from
    /// the phase's start to the last one's arrival.
    pub fn delivered_per_s(&self) -> f64 {
        match (self.out.started, self.delivery.last) {
            (Some(start), Some(last)) if self.delivery.delivered > 0 => {
                let span = last.saturating_duration_since(start);
                self.delivery.delivered as f64 / span.as_secs_f64().max(1e-9)
            }
            _ => 0.0,
        }
    }

    pub fn json(&self) -> Value {
        let mut m = Map::new();
        m.insert("load".into(), json!(self.label()));
        m.insert("kind".into(), json!(self.kind));
        m.insert("connections".into(), json!(self.connections));
        if let Some(rate) = self.offered_per_s {
            m.insert("offered_per_s".into(), json!(rate));
            m.insert("scheduled".into(), json!(self.out.scheduled));
            m.insert("unsent".into(), json!(self.out.unsent));
            if let Some(w) = self.out.windows_summary(SLOW) {
                m.insert("window_ms".into(), json!(WINDOW.as_millis() as u64));
                m.insert("windows".into(), json!(w.count));
                m.insert("windows_over_10ms".into(), json!(w.over));
                m.insert(
                    "window_slowest_median_ms".into(),
                    json!(round(w.median_ms, 2)),
                );
                m.insert(
                    "window_slowest_worst_ms".into(),
                    json!(round(w.worst_ms, 2)),
                );
                m.insert(
                    "window_slowest_worst_at_s".into(),
                    json!(round(w.worst_at_s, 1)),
                );
                let each: Vec<f64> = self
                    .out
                    .windows
                    .iter()
                    .map(|&us| round(us as f64 / 1000.0, 2))
                    .collect();
                m.insert("window_slowest_ms".into(), json!(each));
            }
        }
        m.insert(
            "duration_s".into(),
            json!(round(self.out.elapsed.as_secs_f64(), 3)),
        );
        m.insert("requests".into(), json!(self.out.requests));
        m.insert("accepted".into(), json!(self.out.accepted));
        m.insert(
            "accepted_per_s".into(),
            json!(round(self.out.accepted_per_s(), 1)),
        );
        m.insert("errors".into(), json!(self.out.errors));
        m.insert("delivered".into(), json!(self.delivery.delivered));
        m.insert(
            "delivered_per_s".into(),
            json!(round(self.delivered_per_s(), 1)),
        );
        m.insert("drain_ms".into(), json!(self.drain.as_millis() as u64));
        quantiles("http", &self.out.latency, HTTP_QS, &mut m);
        m.insert("http_mean_ms".into(), ms(self.out.latency.mean_ms()));
        m.insert("http_max_ms".into(), ms(self.out.latency.max_ms()));
        quantiles("e2e", &self.delivery.e2e, E2E_QS, &mut m);
        m.insert("e2e_max_ms".into(), ms(self.delivery.e2e.max_ms()));
        m.insert("cpu_cores".into(), cpu_json(&self.cpu));
        if self.out.accepted > 0 {
            m.insert(
                "broker_cpu_ms_per_referral".into(),
                json!(round(
                    self.cpu.broker_seconds * 1000.0 / self.out.accepted as f64,
                    3
                )),
            );
        }
        if let (Some(secs), true) = (self.cpu.gateway_seconds, self.out.accepted > 0) {
            let per = |v: f64| json!(round(v / self.out.accepted as f64, 3));
            m.insert("gateway_cpu_ms_per_referral".into(), per(secs * 1000.0));
            m.insert(
                "gateway_kernel_share".into(),
                json!(self.cpu.gateway_kernel_share.map(|v| round(v, 3))),
            );
            m.insert(
                "gateway_thread_cpu_cores".into(),
                json!(self
                    .cpu
                    .gateway_threads
                    .iter()
                    .map(|(k, v)| (k.clone(), round(*v, 3)))
                    .collect::<BTreeMap<_, _>>()),
            );
            if let Some(n) = self.cpu.gateway_context_switches {
                m.insert(
                    "gateway_context_switches_per_referral".into(),
                    per(n as f64),
                );
            }
        }
        Value::Object(m)
    }
}

pub fn cpu_json(cpu: &CpuUse) -> Value {
    json!({
        "gateway": cpu.gateway.map(|v| round(v, 2)),
        "bench": round(cpu.bench, 2),
        "broker": round(cpu.broker, 2),
        "other": round(cpu.other, 2),
    })
}

fn fmt_ms(v: Option<f64>) -> String {
    match v {
        Some(v) if v >= 100.0 => format!("{v:.0}"),
        Some(v) if v >= 10.0 => format!("{v:.1}"),
        Some(v) => format!("{v:.2}"),
        None => "-".into(),
    }
}

fn fmt_errors(out: &Outcome) -> String {
    let mut s: Vec<String> = out.errors.iter().map(|(k, v)| format!("{v}x{k}")).collect();
    if out.unsent > 0 {
        s.push(format!("{} unsent", out.unsent));
    }
    if s.is_empty() {
        "0".into()
    } else {
        s.join(",")
    }
}

/// The rows as a text table.
pub fn table(rows: &[&Row]) -> String {
    let mut t = String::new();
    let header = [
        "load",
        "accepted/s",
        "delivered/s",
        "http p50",
        "p99",
        "p99.9",
        "e2e p50",
        "p99",
        "drain",
        "gw cpu",
        "mq cpu",
        "other",
        "errors",
    ];
    let widths: [i32; 13] = [-12, 10, 11, 8, 8, 8, 8, 8, 8, 7, 7, 7, 0];
    t.push(' ');
    for (name, w) in header.iter().zip(widths) {
        let _ = match w {
            w if w < 0 => write!(t, " {name:<width$}", width = w.unsigned_abs() as usize),
            0 => write!(t, "  {name}"),
            w => write!(t, " {name:>width$}", width = w as usize),
        };
    }
    t.push('\n');
    for r in rows {
        let _ = writeln!(
            t,
            "  {:<12} {:>10.0} {:>11.0} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>7} {:>7.2} {:>7.2}  {}",
            r.label(),
            r.out.accepted_per_s(),
            r.delivered_per_s(),
            fmt_ms(r.out.latency.quantile_ms(0.5)),
            fmt_ms(r.out.latency.quantile_ms(0.99)),
            fmt_ms(r.out.latency.quantile_ms(0.999)),
            fmt_ms(r.delivery.e2e.quantile_ms(0.5)),
            fmt_ms(r.delivery.e2e.quantile_ms(0.99)),
            format!("{}ms", r.drain.as_millis()),
            r.cpu.gateway.map_or("-".into(), |v| format!("{v:.2}")),
            r.cpu.broker,
            r.cpu.other,
            fmt_errors(&r.out),
        );
    }
    t
}
