//! The audit trail: every request and every delivery, as a FHIR AuditEvent (who, what, which
//! referral, when, outcome), appended to the ledger and searchable by operators at
//! `GET /fhir/AuditEvent?date=&agent=&entity=`.
//!
//! Records go through a channel to one writer task that appends them in batches (one
//! transaction per batch), so a request waits for neither the disk nor the writer lock; the
//! channel is bounded, and a full one makes requests wait rather than drop records. The trail is
//! append-only: the ledger has no code that changes or removes a record, and the database itself
//! refuses to (triggers on SQLite and PostgreSQL). Records hold ids and codes, never patient
//! data.

use std::cell::RefCell;
use std::future::Future;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::store::{AuditFilter, AuditRow, Store};

/// What was done, in FHIR AuditEvent terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Create,
    Read,
    Update,
    Execute,
}

impl Action {
    pub fn code(self) -> &'static str {
        match self {
            Action::Create => "C",
            Action::Read => "R",
            Action::Update => "U",
            Action::Execute => "E",
        }
    }
}

/// One audit record, before it is stored.
#[derive(Debug, Clone)]
pub struct Record {
    pub at_ms: i64,
    /// `rest` (an API request) or `delivery` (a message an adapter delivered, retried or parked).
    pub kind: &'static str,
    /// The interaction or operation: `process-message`, `read`, `search`, `admin`, `delivery`...
    pub subtype: String,
    pub action: Action,
    /// The client (directory Device id), an adapter, or `development`.
    pub agent: String,
    /// The peer address of an API request.
    pub address: Option<String>,
    /// The referral concerned, when there is one.
    pub entity: Option<String>,
    /// HTTP status of a request; for a delivery, 200 delivered, 202 retrying or sent, 500 parked
    /// or refused.
    pub status: u16,
    /// A short, fixed description: the route shape, the REC code, the delivery outcome.
    pub detail: String,
}

/// Where records are sent.
#[derive(Clone)]
pub struct Audit {
    tx: mpsc::Sender<Record>,
}

impl Audit {
    /// Start the writer; it drains what is queued and stops once `stop` is cancelled.
    pub fn start(store: Store, stop: CancellationToken) -> (Audit, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(10_000);
        (Audit { tx }, tokio::spawn(write(store, rx, stop)))
    }

    pub async fn record(&self, record: Record) {
        if self.tx.send(record).await.is_err() {
            tracing::error!("audit writer gone: a record was not kept");
        }
    }
}

async fn write(store: Store, mut rx: mpsc::Receiver<Record>, stop: CancellationToken) {
    let mut batch = Vec::with_capacity(256);
    loop {
        let n = tokio::select! {
            n = rx.recv_many(&mut batch, 256) => n,
            _ = stop.cancelled() => {
                rx.close();
                while rx.recv_many(&mut batch, 256).await > 0 {
                    keep(&store, &mut batch).await;
                }
                return;
            }
        };
        if n == 0 {
            return;
        }
        keep(&store, &mut batch).await;
    }
}

/// Append a batch, retrying while the ledger is away (bounded: a record is never dropped while
/// the ledger comes back within a minute).
async fn keep(store: &Store, batch: &mut Vec<Record>) {
    let rows: Vec<AuditRow> = batch.drain(..).map(row_of).collect();
    let mut delay = Duration::from_millis(50);
    for _ in 0..20 {
        match store.append_audit(&rows).await {
            Ok(()) => return,
            Err(error) => {
                tracing::warn!(%error, records = rows.len(), "audit: cannot append; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
    tracing::error!(
        records = rows.len(),
        "audit: records could not be appended to the ledger"
    );
}

fn row_of(r: Record) -> AuditRow {
    AuditRow {
        id: uuid::Uuid::now_v7().to_string(),
        at_ms: r.at_ms,
        kind: r.kind.to_owned(),
        subtype: r.subtype,
        action: r.action.code().to_owned(),
        agent: r.agent,
        address: r.address,
        entity: r.entity,
        status: i64::from(r.status),
        detail: r.detail,
    }
}

tokio::task_local! {
    static ENTITY: RefCell<Option<String>>;
}

/// Say which referral the request being handled concerns (for its audit record).
pub fn note_entity(referral_id: &str) {
    let _ = ENTITY.try_with(|e| *e.borrow_mut() = Some(referral_id.to_owned()));
}

/// Run `f`, returning what it noted with [`note_entity`].
pub async fn with_entity<F: Future>(f: F) -> (F::Output, Option<String>) {
    ENTITY
        .scope(RefCell::new(None), async {
            let out = f.await;
            let entity = ENTITY.with(|e| e.borrow().clone());
            (out, entity)
        })
        .await
}

/// The FHIR outcome code for an HTTP status: 0 success, 4 refused (the caller's fault), 8 failed.
fn outcome(status: i64) -> &'static str {
    match status {
        0..=399 => "0",
        400..=499 => "4",
        _ => "8",
    }
}

/// A stored row as a FHIR R4 AuditEvent.
pub fn to_fhir(row: &AuditRow) -> Value {
    let (type_system, type_code, type_display) = match row.kind.as_str() {
        "rest" => (
            "http://terminology.hl7.org/CodeSystem/audit-event-type",
            "rest",
            "RESTful Operation",
        ),
        _ => (
            "https://signpost.example.org/fhir/CodeSystem/audit-event-type",
            "delivery",
            "Message delivery",
        ),
    };
    let mut agent = json!({
        "who": {"identifier": {"system": "https://signpost.example.org/fhir/Id/client", "value": row.agent}},
        "requestor": row.kind == "rest",
    });
    if let Some(a) = &row.address {
        agent["network"] = json!({"address": a, "type": "2"});
    }
    let mut event = json!({
        "resourceType": "AuditEvent",
        "id": row.id,
        "type": {"system": type_system, "code": type_code, "display": type_display},
        "subtype": [{"system": "https://signpost.example.org/fhir/CodeSystem/audit-event-subtype", "code": row.subtype}],
        "action": row.action,
        "recorded": crate::fhir::instant(row.at_ms),
        "outcome": outcome(row.status),
        "outcomeDesc": format!("{} ({})", row.detail, row.status),
        "agent": [agent],
        "source": {"observer": {"display": "Signpost"}},
    });
    if let Some(e) = &row.entity {
        event["entity"] = json!([{"what": {"reference": format!("ServiceRequest/{e}")}}]);
    }
    event
}

/// Parse the search parameters: `date` (repeatable, with `ge`/`gt`/`le`/`lt`/`eq` prefixes,
/// an RFC 3339 time or a `YYYY-MM-DD` day), `agent` (`[system|]value`), `entity`
/// (`[ServiceRequest/]id`), `_count`.
pub fn filter(query: &str) -> Result<AuditFilter, String> {
    let mut f = AuditFilter {
        limit: 100,
        ..AuditFilter::default()
    };
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let v = crate::api::percent_decode(v);
        match k {
            "date" => {
                let (prefix, t) = match v.get(..2) {
                    Some(p @ ("ge" | "gt" | "le" | "lt" | "eq")) => (p, &v[2..]),
                    _ => ("eq", v.as_str()),
                };
                let (start, end) =
                    time_range(t).ok_or_else(|| format!("date {t:?} is not a date or time"))?;
                match prefix {
                    "ge" => f.from_ms = Some(start),
                    "gt" => f.from_ms = Some(end),
                    "le" => f.to_ms = Some(end),
                    "lt" => f.to_ms = Some(start),
                    _ => {
                        f.from_ms = Some(start);
                        f.to_ms = Some(end);
                    }
                }
            }
            "agent" => f.agent = Some(v.rsplit('|').next().unwrap_or("").to_owned()),
            "entity" => f.entity = Some(v.strip_prefix("ServiceRequest/").unwrap_or(&v).to_owned()),
            "_count" => {
                f.limit = v
                    .parse::<i64>()
                    .ok()
                    .filter(|n| (1..=1000).contains(n))
                    .ok_or("_count must be 1 to 1000")?
            }
            _ => return Err(format!("unknown search parameter {k:?}")),
        }
    }
    Ok(f)
}

/// `[start, end)` of a day or the millisecond of an instant, in ms since the epoch.
fn time_range(t: &str) -> Option<(i64, i64)> {
    use time::format_description::well_known::Rfc3339;
    if let Ok(at) = time::OffsetDateTime::parse(t, &Rfc3339) {
        let ms = i64::try_from(at.unix_timestamp_nanos() / 1_000_000).ok()?;
        return Some((ms, ms + 1));
    }
    let format = time::macros::format_description!("[year]-[month]-[day]");
    let day = time::Date::parse(t, &format).ok()?;
    let start = day.midnight().assume_utc().unix_timestamp() * 1000;
    Some((start, start + 86_400_000))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn search_parameters_become_a_filter() {
        let f = filter("date=ge2026-12-01&date=lt2026-12-02T10:00:00Z&agent=https://signpost.example.org/fhir/Id/client|gp-a&entity=ServiceRequest/r-1&_count=5").unwrap();
        assert_eq!(f.from_ms, Some(1_796_083_200_000));
        assert_eq!(f.to_ms, Some(1_796_205_600_000));
        assert_eq!(f.agent.as_deref(), Some("gp-a"));
        assert_eq!(f.entity.as_deref(), Some("r-1"));
        assert_eq!(f.limit, 5);
        assert!(filter("date=yesterday").is_err());
        assert!(filter("colour=red").is_err());
        let day = filter("date=2026-12-01").unwrap();
        assert_eq!(day.to_ms.unwrap() - day.from_ms.unwrap(), 86_400_000);
    }

    #[test]
    fn a_row_reads_as_an_audit_event() {
        let row = AuditRow {
            id: "a".into(),
            at_ms: 0,
            kind: "rest".into(),
            subtype: "read".into(),
            action: "R".into(),
            agent: "gp-a".into(),
            address: Some("127.0.0.1:5000".into()),
            entity: Some("r-1".into()),
            status: 403,
            detail: "GET /fhir/ServiceRequest/{id} REC_FORBIDDEN".into(),
        };
        let e = to_fhir(&row);
        assert_eq!(e["outcome"], "4");
        assert_eq!(e["agent"][0]["who"]["identifier"]["value"], "gp-a");
        assert_eq!(e["entity"][0]["what"]["reference"], "ServiceRequest/r-1");
        assert_eq!(e["action"], "R");
    }

    #[tokio::test]
    async fn the_entity_noted_inside_is_returned() {
        let (out, entity) = with_entity(async {
            note_entity("r-9");
            7
        })
        .await;
        assert_eq!((out, entity.as_deref()), (7, Some("r-9")));
        note_entity("outside: ignored");
    }
}
