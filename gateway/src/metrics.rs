//! Prometheus metrics, hand-rolled: a few counters and gauges, rendered in the text format at
//! `GET /metrics`. Labels carry statuses and codes only, never patient data.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

#[derive(Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

#[derive(Default)]
pub struct Metrics {
    pub referrals_accepted: Counter,
    pub scheme_responses: Counter,
    pub letters_unroutable: Counter,
    /// Letters refused by the GP side or not acknowledged in time: each needs a person.
    pub letter_alerts: Counter,
    pub outbox_published: Counter,
    pub events_recorded: Counter,
    /// HTTP answers by status code.
    http: Mutex<BTreeMap<u16, u64>>,
}

impl Metrics {
    pub fn http_answer(&self, status: u16) {
        if let Ok(mut m) = self.http.lock() {
            *m.entry(status).or_default() += 1;
        }
    }

    /// The text exposition, with the outbox backlog and broker state read at scrape time.
    pub fn render(&self, outbox_unsent: i64, broker_up: bool) -> String {
        let mut out = String::new();
        let mut counter = |name: &str, help: &str, value: u64| {
            out.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}\n"
            ));
        };
        counter(
            "signpost_referrals_accepted_total",
            "Referrals accepted and committed.",
            self.referrals_accepted.get(),
        );
        counter(
            "signpost_scheme_responses_total",
            "Scheme responses recorded.",
            self.scheme_responses.get(),
        );
        counter(
            "signpost_letters_unroutable_total",
            "Letters with no GP system route.",
            self.letters_unroutable.get(),
        );
        counter(
            "signpost_letter_alerts_total",
            "Letters refused by the GP side (negative acknowledgement, MESH error report) or not acknowledged in time.",
            self.letter_alerts.get(),
        );
        counter(
            "signpost_outbox_published_total",
            "Outbox messages confirmed by the broker.",
            self.outbox_published.get(),
        );
        counter(
            "signpost_delivery_reports_total",
            "Delivery reports recorded on timelines.",
            self.events_recorded.get(),
        );
        out.push_str("# HELP signpost_http_responses_total HTTP answers by status.\n# TYPE signpost_http_responses_total counter\n");
        if let Ok(m) = self.http.lock() {
            for (status, n) in m.iter() {
                out.push_str(&format!(
                    "signpost_http_responses_total{{status=\"{status}\"}} {n}\n"
                ));
            }
        }
        out.push_str(&format!(
            "# HELP signpost_outbox_unsent Outbox messages not yet confirmed by the broker.\n# TYPE signpost_outbox_unsent gauge\nsignpost_outbox_unsent {outbox_unsent}\n"
        ));
        out.push_str(&format!(
            "# HELP signpost_broker_up Whether the outbox relay is connected to the broker.\n# TYPE signpost_broker_up gauge\nsignpost_broker_up {}\n",
            u8::from(broker_up)
        ));
        out
    }
}
