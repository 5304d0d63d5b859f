//! The delivery-report recorder on a real ledger: reports that wait for the writer together
//! are recorded in one transaction, each once and answered, and one the ledger refuses holds
//! back none of the others.

use std::sync::Arc;

use signpost_bus::consume::Meta;
use signpost_bus::envelope::{DeliveryReport, ReportOutcome};
use signpost_bus::{Envelope, Handler, Kind, Outcome};
use signpost_gateway::audit::Audit;
use signpost_gateway::events::ReportRecorder;
use signpost_gateway::metrics::Metrics;
use signpost_gateway::store::{ReferralJson, Store};

/// A recorder on a fresh SQLite ledger in its own directory.
struct Fixture {
    store: Store,
    recorder: ReportRecorder,
    stop: tokio_util::sync::CancellationToken,
    audit_writer: tokio::task::JoinHandle<()>,
    dir: std::path::PathBuf,
}

impl Fixture {
    async fn new() -> Self {
        let dir = std::env::temp_dir().join(format!(
            "signpost-reports-{}",
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let url = format!("sqlite://{}/ledger.db", dir.display());
        Self::on(&url, dir).await
    }

    async fn on(url: &str, dir: std::path::PathBuf) -> Self {
        let store = Store::connect(url).await.unwrap();
        // The referral the reports are about.
        let r1 = crate::ledger::referral("r1", "b-r1");
        let mut tx = store.begin().await.unwrap();
        tx.insert_referral(&r1, &ReferralJson::of(&r1))
            .await
            .unwrap();
        tx.commit().await.unwrap();
        let stop = tokio_util::sync::CancellationToken::new();
        let (audit, audit_writer) = Audit::start(store.clone(), stop.clone());
        let recorder = ReportRecorder::start(store.clone(), Arc::new(Metrics::default()), audit);
        Fixture {
            store,
            recorder,
            stop,
            audit_writer,
            dir,
        }
    }

    /// Hand every report to the recorder while the ledger's writer is taken, so that they
    /// wait for it together; their outcomes in the same order.
    async fn record_together(&self, reports: &[&Envelope]) -> Vec<Outcome> {
        let meta = Meta {
            attempt: 1,
            routing_key: "ep1".to_owned(),
        };
        let held = self.store.begin().await.unwrap();
        let release = tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            held.commit().await.unwrap();
        });
        let outcomes =
            futures_util::future::join_all(reports.iter().map(|e| self.recorder.handle(e, &meta)))
                .await;
        release.await.unwrap();
        outcomes
    }

    /// The details of referral `r1`'s timeline steps.
    async fn details(&self) -> Vec<String> {
        let steps = self.store.timeline("r1").await.unwrap();
        assert!(steps.iter().all(|s| s.step.starts_with("referral-")));
        steps.into_iter().map(|s| s.detail).collect()
    }

    async fn end(self) {
        self.stop.cancel();
        self.audit_writer.await.unwrap();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A report on referral `r1`: its message is being retried, at `attempt`.
fn report(attempt: u32) -> Envelope {
    Envelope::new(
        Kind::DeliveryReport,
        "c1",
        "r1",
        "ep1",
        None,
        DeliveryReport {
            about: uuid::Uuid::now_v7(),
            about_kind: Kind::ReferralMessage,
            outcome: ReportOutcome::Retrying,
            attempt,
            detail: "scheme unavailable".to_owned(),
            at: "2026-12-05T10:00:00Z".to_owned(),
            parked: None,
            reference: None,
            step: None,
        },
    )
}

fn attempts(range: std::ops::RangeInclusive<u32>) -> Vec<String> {
    range
        .map(|n| format!("scheme unavailable (attempt {n})"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_that_wait_together_are_each_recorded_once_in_order_and_answered() {
    let f = Fixture::new().await;
    let reports: Vec<Envelope> = (1..=20).map(report).collect();
    // The fifth comes again at the end, as a redelivery would.
    let mut all: Vec<&Envelope> = reports.iter().collect();
    all.push(&reports[4]);
    let outcomes = f.record_together(&all).await;
    let recorded = Outcome::Delivered("recorded".to_owned());
    assert!(outcomes.iter().all(|o| *o == recorded), "{outcomes:?}");
    assert_eq!(f.details().await, attempts(1..=20));
    f.end().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_that_wait_together_are_each_recorded_once_on_postgresql_too() {
    let db = crate::Postgres::create().await;
    let dir = std::env::temp_dir().join(&db.name);
    let f = Fixture::on(&db.url, dir).await;
    // More reports than the pool has connections, each batch's COMMIT in flight while the
    // next batch begins.
    let reports: Vec<Envelope> = (1..=60).map(report).collect();
    let outcomes = f.record_together(&reports.iter().collect::<Vec<_>>()).await;
    let recorded = Outcome::Delivered("recorded".to_owned());
    assert!(outcomes.iter().all(|o| *o == recorded), "{outcomes:?}");
    // Each once, in order: a batch that begins while the one before commits waits for the
    // referral's row and numbers its steps after that one's.
    assert_eq!(f.details().await, attempts(1..=60));
    f.end().await;
    db.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_report_that_cannot_be_recorded_holds_back_none_of_those_waiting_with_it() {
    let f = Fixture::new().await;
    let reports: Vec<Envelope> = (1..=5).map(report).collect();
    // The third report's step is refused by the ledger however often it is tried.
    rusqlite::Connection::open(f.dir.join("ledger.db"))
        .unwrap()
        .execute_batch(
            "CREATE TRIGGER refuse_third BEFORE INSERT ON timeline
             WHEN NEW.detail LIKE '%(attempt 3)' BEGIN SELECT RAISE(ABORT, 'refused'); END",
        )
        .unwrap();

    let outcomes = f.record_together(&reports.iter().collect::<Vec<_>>()).await;
    let recorded = Outcome::Delivered("recorded".to_owned());
    for (i, o) in outcomes.iter().enumerate() {
        if i == 2 {
            assert!(matches!(o, Outcome::Retry(_)), "{o:?}");
        } else {
            assert_eq!(*o, recorded, "report {}", i + 1);
        }
    }
    let mut expected = attempts(1..=2);
    expected.extend(attempts(4..=5));
    assert_eq!(f.details().await, expected);
    f.end().await;
}
