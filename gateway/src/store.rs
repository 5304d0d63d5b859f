//! The ledger: referrals, their timelines, the answers to processed requests, the outbox, the
//! inbox of processed bus messages, and letters. SQLite by default (one file, WAL, a write
//! answered only once the WAL is synced), PostgreSQL for several replicas; one portable schema,
//! reached through sqlx's `Any` driver.
//!
//! Writes go through a [`WriteTx`]: everything a request changes (its answer, the referral, the
//! timeline, the outbox rows) commits together or not at all, so an HTTP answer is only sent for
//! what is on disk and every committed referral has its outbox row. On SQLite, write transactions
//! are serialised in-process on one writer connection (SQLite has one writer, and queueing here
//! beats `SQLITE_BUSY`) and committed in groups, one fsync for all that queued meanwhile (see
//! [`writer`]); reads use a small pool of their own, so they never queue behind the writer. On
//! PostgreSQL each write transaction is a transaction of its own on the pool.
//!
//! This module stores and fetches; what the rows mean is `referral.rs`'s business.

mod stmt;
mod wal_sync;
mod writer;

use std::sync::Arc;

use serde_json::Value;
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::pool::PoolConnection;
use sqlx::{Any, AnyPool, Executor, Row};

use stmt::Stmt;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("ledger: {0}")]
    Db(#[from] sqlx::Error),
    /// From the SQLite writer.
    #[error("ledger: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("ledger: stored JSON is corrupt: {0}")]
    Json(#[from] serde_json::Error),
    #[error("ledger: a row with this key already exists")]
    Duplicate,
    /// The request's time budget ran out before its transaction committed; it was rolled back.
    #[error("ledger: the request's time budget ran out before commit")]
    PastDeadline,
    /// The write did not commit: the batch it joined was lost (a failed `COMMIT`, or SQLite
    /// rolled the transaction back by itself, as on a full disk), and nothing of it is on disk;
    /// or, on SQLite, the sync of the WAL after its `COMMIT` failed, and whether it survives a
    /// crash is unknown (a retry of the request is then refused as a repeat if it did).
    #[error("ledger: the write was not committed")]
    NotCommitted,
}

/// The time budget of the HTTP request a task serves, as the ledger sees it: a commit after the
/// deadline is refused, and whether a commit has begun (then the request is let finish).
#[derive(Clone)]
pub struct Budget {
    deadline: std::time::Instant,
    committing: Arc<std::sync::atomic::AtomicBool>,
}

impl Budget {
    pub fn new(deadline: std::time::Instant) -> Self {
        Budget {
            deadline,
            committing: Arc::default(),
        }
    }

    /// Whether a commit has begun (or been refused) under this budget.
    pub fn committing(&self) -> bool {
        self.committing.load(std::sync::atomic::Ordering::SeqCst)
    }
}

tokio::task_local! {
    static BUDGET: Budget;
}

/// Run `f` under `budget`: a [`WriteTx::commit`] inside it once the deadline has passed rolls
/// back and returns [`StoreError::PastDeadline`]. With [`Budget::committing`], the HTTP layer
/// then answers 408 only for work that can no longer take effect, and never lets a retry with
/// the same `X-Request-Id` race its own first attempt.
pub async fn within_budget<F: std::future::Future>(budget: Budget, f: F) -> F::Output {
    BUDGET.scope(budget, f).await
}

impl StoreError {
    /// Whether the store refused the write for lack of room or permission (full disk, read-only
    /// file), which is worth a 503 rather than a 500.
    pub fn is_unavailable(&self) -> bool {
        match self {
            StoreError::NotCommitted => true,
            StoreError::Db(
                sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_),
            ) => true,
            StoreError::Db(sqlx::Error::Database(e)) => {
                let m = e.message().to_ascii_lowercase();
                m.contains("full")
                    || m.contains("readonly")
                    || m.contains("read-only")
                    || m.contains("locked")
                    || m.contains("busy")
                    || m.contains("disk i/o")
            }
            StoreError::Sqlite(rusqlite::Error::SqliteFailure(e, _)) => matches!(
                e.code,
                rusqlite::ErrorCode::DiskFull
                    | rusqlite::ErrorCode::ReadOnly
                    | rusqlite::ErrorCode::DatabaseBusy
                    | rusqlite::ErrorCode::DatabaseLocked
                    | rusqlite::ErrorCode::SystemIoFailure
                    | rusqlite::ErrorCode::CannotOpen
            ),
            _ => false,
        }
    }
}

fn is_unique(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_unique_violation())
}

impl StoreError {
    fn is_unique(&self) -> bool {
        match self {
            StoreError::Db(e) => is_unique(e),
            StoreError::Sqlite(rusqlite::Error::SqliteFailure(e, _)) => matches!(
                e.extended_code,
                rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                    | rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
            ),
            _ => false,
        }
    }
}

/// A unique key's violation as [`StoreError::Duplicate`], any other error as it is.
fn duplicate(e: StoreError) -> StoreError {
    if e.is_unique() {
        StoreError::Duplicate
    } else {
        e
    }
}

const SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS referrals (
        id TEXT PRIMARY KEY,
        task_id TEXT NOT NULL UNIQUE,
        source_bundle_id TEXT NOT NULL UNIQUE,
        message_bundle_id TEXT NOT NULL UNIQUE,
        correlation_id TEXT NOT NULL,
        practice_ods TEXT NOT NULL,
        scheme_id TEXT NOT NULL,
        scheme_endpoint TEXT NOT NULL,
        nhs_number TEXT NOT NULL,
        sr_status TEXT NOT NULL,
        task_status TEXT NOT NULL,
        service_request TEXT NOT NULL,
        task TEXT NOT NULL,
        version BIGINT NOT NULL,
        created_ms BIGINT NOT NULL,
        updated_ms BIGINT NOT NULL
    )",
    "CREATE INDEX IF NOT EXISTS referrals_by_nhs_number ON referrals (nhs_number)",
    "CREATE TABLE IF NOT EXISTS timeline (
        id TEXT PRIMARY KEY,
        referral_id TEXT NOT NULL,
        seq BIGINT NOT NULL,
        at_ms BIGINT NOT NULL,
        step TEXT NOT NULL,
        detail TEXT NOT NULL
    )",
    "CREATE INDEX IF NOT EXISTS timeline_by_referral ON timeline (referral_id, seq)",
    // Each request id processed, and what it was answered with (`body`: `Bundle/<id>`, or the
    // answer's resource type); a repeated id is refused, not answered again.
    "CREATE TABLE IF NOT EXISTS requests (
        request_id TEXT PRIMARY KEY,
        status BIGINT NOT NULL,
        body TEXT NOT NULL,
        at_ms BIGINT NOT NULL
    )",
    "CREATE TABLE IF NOT EXISTS outbox (
        id TEXT PRIMARY KEY,
        seq BIGINT NOT NULL,
        exchange TEXT NOT NULL,
        routing_key TEXT NOT NULL,
        referral_id TEXT NOT NULL,
        label TEXT NOT NULL,
        envelope TEXT NOT NULL,
        created_ms BIGINT NOT NULL,
        sent_ms BIGINT,
        set_aside TEXT
    )",
    "CREATE INDEX IF NOT EXISTS outbox_by_state ON outbox (sent_ms, seq)",
    // The next sequence number is `MAX(seq) + 1`: an index lookup, not a scan of every row ever
    // sent.
    "CREATE INDEX IF NOT EXISTS outbox_by_seq ON outbox (seq)",
    "CREATE TABLE IF NOT EXISTS inbox (
        message_id TEXT PRIMARY KEY,
        at_ms BIGINT NOT NULL
    )",
    "CREATE TABLE IF NOT EXISTS parked (
        id TEXT PRIMARY KEY,
        message_id TEXT NOT NULL,
        referral_id TEXT NOT NULL,
        target TEXT NOT NULL,
        origin_queue TEXT NOT NULL,
        label TEXT NOT NULL,
        reason TEXT NOT NULL,
        attempts BIGINT NOT NULL,
        parked_ms BIGINT NOT NULL,
        envelope TEXT NOT NULL,
        replayed_ms BIGINT
    )",
    "CREATE INDEX IF NOT EXISTS parked_by_time ON parked (parked_ms)",
    "CREATE TABLE IF NOT EXISTS record_events (
        id TEXT PRIMARY KEY,
        nhs_number TEXT NOT NULL,
        practice_ods TEXT NOT NULL,
        code TEXT NOT NULL,
        action TEXT NOT NULL,
        at_ms BIGINT NOT NULL
    )",
    "CREATE TABLE IF NOT EXISTS documents (
        id TEXT PRIMARY KEY,
        referral_id TEXT NOT NULL,
        kind TEXT NOT NULL,
        content TEXT NOT NULL,
        created_ms BIGINT NOT NULL
    )",
    "CREATE INDEX IF NOT EXISTS documents_by_referral ON documents (referral_id, kind)",
    // Letters handed to MESH, waiting for their acknowledgements: `reference` is MESH's message
    // id; `settled_ms` is set by the business acknowledgement (or a refusal), `alerted_ms` once
    // a missing acknowledgement has been raised.
    "CREATE TABLE IF NOT EXISTS letter_acks (
        message_id TEXT PRIMARY KEY,
        reference TEXT NOT NULL,
        referral_id TEXT NOT NULL,
        sent_ms BIGINT NOT NULL,
        settled_ms BIGINT,
        alerted_ms BIGINT
    )",
    "CREATE INDEX IF NOT EXISTS letter_acks_by_reference ON letter_acks (reference)",
    // The audit trail: appended, never updated or deleted (no code here does either).
    "CREATE TABLE IF NOT EXISTS audit_events (
        id TEXT PRIMARY KEY,
        at_ms BIGINT NOT NULL,
        kind TEXT NOT NULL,
        subtype TEXT NOT NULL,
        action TEXT NOT NULL,
        agent TEXT NOT NULL,
        address TEXT,
        entity TEXT,
        status BIGINT NOT NULL,
        detail TEXT NOT NULL
    )",
    "CREATE INDEX IF NOT EXISTS audit_by_time ON audit_events (at_ms)",
    "CREATE INDEX IF NOT EXISTS audit_by_entity ON audit_events (entity, at_ms)",
    "CREATE INDEX IF NOT EXISTS audit_by_agent ON audit_events (agent, at_ms)",
];

/// The database itself refuses to change or remove audit records, whoever asks.
const AUDIT_APPEND_ONLY_SQLITE: &[&str] = &[
    "CREATE TRIGGER IF NOT EXISTS audit_events_no_update BEFORE UPDATE ON audit_events
     BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only'); END",
    "CREATE TRIGGER IF NOT EXISTS audit_events_no_delete BEFORE DELETE ON audit_events
     BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only'); END",
];
const AUDIT_APPEND_ONLY_POSTGRES: &[&str] = &[
    "CREATE OR REPLACE FUNCTION signpost_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS
     $$ BEGIN RAISE EXCEPTION 'the audit trail is append-only'; END $$",
    "CREATE OR REPLACE TRIGGER audit_events_no_change BEFORE UPDATE OR DELETE ON audit_events
     FOR EACH ROW EXECUTE FUNCTION signpost_audit_append_only()",
    "CREATE OR REPLACE TRIGGER audit_events_no_truncate BEFORE TRUNCATE ON audit_events
     FOR EACH STATEMENT EXECUTE FUNCTION signpost_audit_append_only()",
];

/// One audit record as the ledger keeps it.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditRow {
    pub id: String,
    pub at_ms: i64,
    pub kind: String,
    pub subtype: String,
    pub action: String,
    pub agent: String,
    pub address: Option<String>,
    pub entity: Option<String>,
    pub status: i64,
    pub detail: String,
}

/// Which audit records: a time range, an agent, a referral; at most `limit`, oldest first.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AuditFilter {
    pub from_ms: Option<i64>,
    pub to_ms: Option<i64>,
    pub agent: Option<String>,
    pub entity: Option<String>,
    pub limit: i64,
}

/// A letter sent over MESH whose acknowledgement is awaited.
#[derive(Debug, Clone, PartialEq)]
pub struct LetterAck {
    /// The letter's bus message id.
    pub message_id: String,
    /// MESH's message id.
    pub reference: String,
    pub referral_id: String,
    pub sent_ms: i64,
}

/// A referral's two FHIR resources as the ledger stores them: serialised before the write
/// transaction, so that the time the transaction holds the writer is the ledger's own.
#[derive(Debug, Clone)]
pub struct ReferralJson {
    service_request: String,
    task: String,
}

impl ReferralJson {
    pub fn of(r: &ReferralRow) -> Self {
        ReferralJson {
            service_request: crate::fhir::json_text(&r.service_request),
            task: crate::fhir::json_text(&r.task),
        }
    }
}

/// A referral as the ledger holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct ReferralRow {
    pub id: String,
    pub task_id: String,
    pub source_bundle_id: String,
    pub message_bundle_id: String,
    pub correlation_id: String,
    pub practice_ods: String,
    pub scheme_id: String,
    pub scheme_endpoint: String,
    pub nhs_number: String,
    pub sr_status: String,
    pub task_status: String,
    pub service_request: Value,
    pub task: Value,
    pub version: i64,
    pub created_ms: i64,
    pub updated_ms: i64,
}

/// One step on a referral's timeline.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    pub at_ms: i64,
    pub step: String,
    pub detail: String,
}

/// A message an adapter gave up on, kept so that an operator can replay it.
#[derive(Debug, Clone, PartialEq)]
pub struct ParkedRow {
    pub id: String,
    pub message_id: String,
    pub referral_id: String,
    /// The directory Endpoint the message was for.
    pub target: String,
    pub origin_queue: String,
    pub label: String,
    pub reason: String,
    pub attempts: i64,
    pub parked_ms: i64,
    pub envelope: String,
    pub replayed_ms: Option<i64>,
}

/// Which parked messages: all, or those of one target, parked since a time, not yet replayed.
#[derive(Debug, Clone, Default)]
pub struct ParkedFilter {
    pub id: Option<String>,
    pub target: Option<String>,
    pub since_ms: Option<i64>,
    pub include_replayed: bool,
}

/// A message waiting to be published.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxRow {
    pub id: String,
    pub exchange: String,
    pub routing_key: String,
    pub referral_id: String,
    /// What the message is, for the timeline: `referral`, `cancellation`, `letter`.
    pub label: String,
    pub envelope: String,
}

#[derive(Clone)]
pub struct Store {
    /// All reads; on PostgreSQL also the write transactions.
    pool: AnyPool,
    /// The SQLite writer, through which every write transaction goes; `None` on PostgreSQL.
    writer: Option<writer::Writer>,
}

/// A write transaction. Dropping it without a successful [`WriteTx::commit`] rolls back.
///
/// Transactions are begun and ended with plain SQL rather than with sqlx's `Transaction`: when
/// SQLite rolls a transaction back by itself (it may on a full disk or an I/O error), sqlx's
/// count of open transactions on that connection goes out of step, and a later rollback on it
/// becomes `ROLLBACK TO SAVEPOINT`, which leaves a write transaction open and every other writer
/// answered "database is locked" for good (seen in the chaos suite's ledger-full scenario).
pub struct WriteTx {
    inner: Tx,
    /// A statement failed other than on a unique key (SQLite): the batch may have been rolled
    /// back under it, so no further statement runs (it would run outside any transaction, and
    /// commit by itself) and the commit is refused.
    poisoned: bool,
}

enum Tx {
    /// PostgreSQL: a transaction of its own on a pooled connection.
    Own(OwnTx),
    /// SQLite: a savepoint in the writer's batch transaction.
    Member(writer::Member),
}

struct OwnTx {
    conn: PoolConnection<Any>,
    committed: bool,
}

impl Drop for OwnTx {
    fn drop(&mut self) {
        if !self.committed {
            // Closing the connection rolls back whatever it had open; a connection whose
            // transaction did not commit is never reused.
            self.conn.close_on_drop();
        }
    }
}

pub fn now_ms() -> i64 {
    signpost_bus::envelope::now_ms()
}

impl Store {
    /// Connect and create the schema if it is missing. `sqlite://` files are created.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        sqlx::any::install_default_drivers();
        let sqlite = url.starts_with("sqlite:");
        let url = if sqlite && !url.contains("mode=") && !url.contains(":memory:") {
            let sep = if url.contains('?') { '&' } else { '?' };
            format!("{url}{sep}mode=rwc")
        } else {
            url.to_owned()
        };
        let mut options = AnyPoolOptions::new()
            .max_connections(if sqlite { 4 } else { 16 })
            .acquire_timeout(std::time::Duration::from_secs(3));
        if sqlite {
            options = options.after_connect(|conn, _meta| {
                Box::pin(async move {
                    conn.execute("PRAGMA journal_mode = WAL").await?;
                    conn.execute("PRAGMA synchronous = FULL").await?;
                    conn.execute("PRAGMA busy_timeout = 5000").await?;
                    // Reads look up a few rows by key: 1 MiB of pages each (SQLite's default is
                    // 2 MiB), the operating system's cache holds the rest.
                    conn.execute("PRAGMA cache_size = -1024").await?;
                    Ok(())
                })
            });
        }
        // On SQLite the pool is for reads (and the schema): a few connections, so that reads
        // go on beside the writer (WAL lets them) instead of queueing behind it.
        let pool = options.connect(&url).await?;
        for ddl in SCHEMA {
            pool.execute(*ddl).await?;
        }
        let append_only = if sqlite {
            AUDIT_APPEND_ONLY_SQLITE
        } else {
            AUDIT_APPEND_ONLY_POSTGRES
        };
        for ddl in append_only {
            pool.execute(*ddl).await?;
        }
        let writer = if sqlite {
            Some(writer::Writer::connect(&url).await?)
        } else {
            None
        };
        Ok(Store { pool, writer })
    }

    /// Whether the store answers.
    pub async fn ping(&self) -> bool {
        sqlx::query("SELECT 1").fetch_one(&self.pool).await.is_ok()
    }

    /// Wait until every write committed before this call is durable. On SQLite a batch is
    /// visible to readers from its `COMMIT`, a moment before the WAL's sync (see [`wal_sync`])
    /// returns: whatever leaves the gateway because of a read waits for this first. On
    /// PostgreSQL a commit is durable before it is visible.
    pub async fn synced(&self) -> Result<(), StoreError> {
        match &self.writer {
            Some(writer) => writer.synced().await,
            None => Ok(()),
        }
    }

    /// Begin a write transaction. On SQLite this waits for the writer (write transactions run
    /// one at a time there).
    pub async fn begin(&self) -> Result<WriteTx, StoreError> {
        let inner = match &self.writer {
            Some(writer) => Tx::Member(writer.begin().await?),
            None => {
                let mut own = OwnTx {
                    conn: self.pool.acquire().await?,
                    committed: false,
                };
                own.conn.execute("BEGIN").await?;
                Tx::Own(own)
            }
        };
        Ok(WriteTx {
            inner,
            poisoned: false,
        })
    }

    /// The letter sent as MESH message `reference`, or with bus message id `message_id`.
    pub async fn letter_ack(
        &self,
        message_id: Option<&str>,
        reference: Option<&str>,
    ) -> Result<Option<LetterAck>, StoreError> {
        let row = sqlx::query(
            "SELECT message_id, reference, referral_id, sent_ms FROM letter_acks
             WHERE message_id = $1 OR reference = $2",
        )
        .bind(message_id.unwrap_or(""))
        .bind(reference.unwrap_or(""))
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| LetterAck {
            message_id: r.get(0),
            reference: r.get(1),
            referral_id: r.get(2),
            sent_ms: r.get(3),
        }))
    }

    /// Letters sent before `sent_before_ms` with no business acknowledgement and no alert yet.
    pub async fn overdue_letters(&self, sent_before_ms: i64) -> Result<Vec<LetterAck>, StoreError> {
        let rows = sqlx::query(
            "SELECT message_id, reference, referral_id, sent_ms FROM letter_acks
             WHERE settled_ms IS NULL AND alerted_ms IS NULL AND sent_ms < $1 ORDER BY sent_ms LIMIT 100",
        )
        .bind(sent_before_ms)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| LetterAck {
                message_id: r.get(0),
                reference: r.get(1),
                referral_id: r.get(2),
                sent_ms: r.get(3),
            })
            .collect())
    }

    /// Append audit records, all or none.
    pub async fn append_audit(&self, rows: &[AuditRow]) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        for r in rows {
            let done = Stmt::new(
                "INSERT INTO audit_events (id, at_ms, kind, subtype, action, agent, address, entity, status, detail)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
            )
            .text(&r.id)
            .int(r.at_ms)
            .text(&r.kind)
            .text(&r.subtype)
            .text(&r.action)
            .text(&r.agent)
            .opt_text(r.address.as_deref())
            .opt_text(r.entity.as_deref())
            .int(r.status)
            .text(&r.detail);
            tx.exec(done).await?;
        }
        tx.commit_unhurried().await
    }

    /// Audit records matching `f`, oldest first.
    pub async fn audit(&self, f: &AuditFilter) -> Result<Vec<AuditRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, at_ms, kind, subtype, action, agent, address, entity, status, detail FROM audit_events
             WHERE at_ms >= $1 AND at_ms < $2 AND ($3 = '' OR agent = $3) AND ($4 = '' OR entity = $4)
             ORDER BY at_ms, id LIMIT $5",
        )
        .bind(f.from_ms.unwrap_or(i64::MIN))
        .bind(f.to_ms.unwrap_or(i64::MAX))
        .bind(f.agent.clone().unwrap_or_default())
        .bind(f.entity.clone().unwrap_or_default())
        .bind(f.limit.max(1))
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|r| {
                Ok(AuditRow {
                    id: r.try_get(0)?,
                    at_ms: r.try_get(1)?,
                    kind: r.try_get(2)?,
                    subtype: r.try_get(3)?,
                    action: r.try_get(4)?,
                    agent: r.try_get(5)?,
                    address: r.try_get(6)?,
                    entity: r.try_get(7)?,
                    status: r.try_get(8)?,
                    detail: r.try_get(9)?,
                })
            })
            .collect()
    }

    /// The latest document of `kind` kept for a referral.
    pub async fn latest_document(
        &self,
        referral_id: &str,
        kind: &str,
    ) -> Result<Option<(String, Value)>, StoreError> {
        let row = sqlx::query(
            "SELECT id, content FROM documents WHERE referral_id = $1 AND kind = $2
             ORDER BY created_ms DESC LIMIT 1",
        )
        .bind(referral_id)
        .bind(kind)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            Ok((
                r.try_get(0)?,
                serde_json::from_str(&r.try_get::<String, _>(1)?)?,
            ))
        })
        .transpose()
    }

    /// The answer given to a processed request id, if any.
    pub async fn request_answer(
        &self,
        request_id: &str,
    ) -> Result<Option<(u16, String)>, StoreError> {
        let row = sqlx::query("SELECT status, body FROM requests WHERE request_id = $1")
            .bind(request_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| {
            let status: i64 = r.get(0);
            (u16::try_from(status).unwrap_or(500), r.get::<String, _>(1))
        }))
    }

    pub async fn referral(&self, id: &str) -> Result<Option<ReferralRow>, StoreError> {
        self.referral_where("id", id).await
    }

    pub async fn referral_by_task(&self, task_id: &str) -> Result<Option<ReferralRow>, StoreError> {
        self.referral_where("task_id", task_id).await
    }

    pub async fn referral_by_message_bundle(
        &self,
        bundle_id: &str,
    ) -> Result<Option<ReferralRow>, StoreError> {
        self.referral_where("message_bundle_id", bundle_id).await
    }

    pub async fn referral_by_source_bundle(
        &self,
        bundle_id: &str,
    ) -> Result<Option<ReferralRow>, StoreError> {
        self.referral_where("source_bundle_id", bundle_id).await
    }

    async fn referral_where(
        &self,
        column: &'static str,
        value: &str,
    ) -> Result<Option<ReferralRow>, StoreError> {
        let sql = format!("{REFERRAL_SELECT} WHERE {column} = $1");
        let row = sqlx::query(&sql)
            .bind(value)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| referral_from_row(&r)).transpose()
    }

    /// Referrals for a patient, newest first.
    pub async fn referrals_for_nhs_number(
        &self,
        nhs_number: &str,
    ) -> Result<Vec<ReferralRow>, StoreError> {
        let sql = format!("{REFERRAL_SELECT} WHERE nhs_number = $1 ORDER BY created_ms DESC, id");
        let rows = sqlx::query(&sql)
            .bind(nhs_number)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(referral_from_row).collect()
    }

    pub async fn timeline(&self, referral_id: &str) -> Result<Vec<Step>, StoreError> {
        let rows = sqlx::query(
            "SELECT at_ms, step, detail FROM timeline WHERE referral_id = $1 ORDER BY seq, at_ms",
        )
        .bind(referral_id)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| Step {
                at_ms: r.get(0),
                step: r.get(1),
                detail: r.get(2),
            })
            .collect())
    }

    /// Outbox rows not yet published, oldest first.
    pub async fn unsent(&self, limit: i64) -> Result<Vec<OutboxRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, exchange, routing_key, referral_id, label, envelope FROM outbox
             WHERE sent_ms IS NULL ORDER BY seq LIMIT $1",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| OutboxRow {
                id: r.get(0),
                exchange: r.get(1),
                routing_key: r.get(2),
                referral_id: r.get(3),
                label: r.get(4),
                envelope: r.get(5),
            })
            .collect())
    }

    pub async fn unsent_count(&self) -> Result<i64, StoreError> {
        let row = sqlx::query("SELECT COUNT(*) FROM outbox WHERE sent_ms IS NULL")
            .fetch_one(&self.pool)
            .await?;
        Ok(row.get(0))
    }

    /// Parked messages matching `filter`, oldest first.
    pub async fn parked(&self, filter: &ParkedFilter) -> Result<Vec<ParkedRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, message_id, referral_id, target, origin_queue, label, reason, attempts,
                    parked_ms, envelope, replayed_ms FROM parked
             WHERE ($1 = '' OR id = $1) AND ($2 = '' OR target = $2) AND parked_ms >= $3
               AND ($4 = 1 OR replayed_ms IS NULL)
             ORDER BY parked_ms, id",
        )
        .bind(filter.id.clone().unwrap_or_default())
        .bind(filter.target.clone().unwrap_or_default())
        .bind(filter.since_ms.unwrap_or(0))
        .bind(i64::from(filter.include_replayed))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(ParkedRow {
                    id: r.try_get(0)?,
                    message_id: r.try_get(1)?,
                    referral_id: r.try_get(2)?,
                    target: r.try_get(3)?,
                    origin_queue: r.try_get(4)?,
                    label: r.try_get(5)?,
                    reason: r.try_get(6)?,
                    attempts: r.try_get(7)?,
                    parked_ms: r.try_get(8)?,
                    envelope: r.try_get(9)?,
                    replayed_ms: r.try_get(10)?,
                })
            })
            .collect()
    }
}

const REFERRAL_SELECT: &str =
    "SELECT id, task_id, source_bundle_id, message_bundle_id, correlation_id,
    practice_ods, scheme_id, scheme_endpoint, nhs_number, sr_status, task_status, service_request,
    task, version, created_ms, updated_ms FROM referrals";

fn referral_from_row(r: &AnyRow) -> Result<ReferralRow, StoreError> {
    Ok(ReferralRow {
        id: r.try_get(0)?,
        task_id: r.try_get(1)?,
        source_bundle_id: r.try_get(2)?,
        message_bundle_id: r.try_get(3)?,
        correlation_id: r.try_get(4)?,
        practice_ods: r.try_get(5)?,
        scheme_id: r.try_get(6)?,
        scheme_endpoint: r.try_get(7)?,
        nhs_number: r.try_get(8)?,
        sr_status: r.try_get(9)?,
        task_status: r.try_get(10)?,
        service_request: serde_json::from_str(&r.try_get::<String, _>(11)?)?,
        task: serde_json::from_str(&r.try_get::<String, _>(12)?)?,
        version: r.try_get(13)?,
        created_ms: r.try_get(14)?,
        updated_ms: r.try_get(15)?,
    })
}

impl WriteTx {
    /// Commit; `Ok` only once the transaction is on disk. On SQLite that is when the batch it
    /// joins commits ([`StoreError::NotCommitted`] if the batch is lost).
    pub async fn commit(self) -> Result<(), StoreError> {
        self.end(true).await
    }

    /// [`WriteTx::commit`] for work that no one waits on (the outbox's marks, the audit trail,
    /// delivery reports): on SQLite it does not end its batch itself but rides on the next
    /// commit that does, or ends it after a short wait (see
    /// [`writer::Member::commit_unhurried`]), so that it costs no fsync and no rewrite of the
    /// pages it shares with the requests' writes.
    pub async fn commit_unhurried(self) -> Result<(), StoreError> {
        self.end(false).await
    }

    async fn end(self, urgent: bool) -> Result<(), StoreError> {
        // Mark first, then look at the clock: the HTTP layer reads the mark at the deadline, so
        // either it sees the mark and waits, or this sees the deadline passed and rolls back.
        let past = BUDGET
            .try_with(|b| {
                b.committing
                    .store(true, std::sync::atomic::Ordering::SeqCst);
                std::time::Instant::now() >= b.deadline
            })
            .unwrap_or(false);
        match self.inner {
            // Dropped uncommitted, the connection is closed: a rollback.
            Tx::Own(_) if past => Err(StoreError::PastDeadline),
            Tx::Own(mut own) => {
                own.conn.execute("COMMIT").await?;
                own.committed = true;
                Ok(())
            }
            Tx::Member(member) if past || self.poisoned => {
                member.rollback();
                Err(if past {
                    StoreError::PastDeadline
                } else {
                    StoreError::NotCommitted
                })
            }
            Tx::Member(member) if urgent => member.commit().await,
            Tx::Member(member) => member.commit_unhurried().await,
        }
    }

    /// Run one statement of the transaction; the number of rows it changed. Refused once a
    /// statement failed in a way that may have ended the SQLite batch: any failure there but a
    /// unique key's (which SQLite undoes by the statement alone, leaving the transaction as it
    /// was) poisons the member (see [`WriteTx::poisoned`]). On SQLite the statement runs here,
    /// on the writer connection this transaction holds, without a hop to another thread.
    async fn exec(&mut self, stmt: Stmt<'_>) -> Result<u64, StoreError> {
        if self.poisoned {
            return Err(StoreError::NotCommitted);
        }
        match &mut self.inner {
            Tx::Own(own) => Ok(stmt
                .to_sqlx()
                .execute(&mut *own.conn)
                .await?
                .rows_affected()),
            Tx::Member(member) => {
                let done = member.exec(&stmt);
                if matches!(&done, Err(e) if !e.is_unique()) {
                    self.poisoned = true;
                }
                done
            }
        }
    }

    /// Run one query of the transaction: the text in the first column of its first row. A
    /// failure poisons the transaction as a failed statement does.
    async fn text(&mut self, stmt: Stmt<'_>) -> Result<Option<String>, StoreError> {
        if self.poisoned {
            return Err(StoreError::NotCommitted);
        }
        let done = match &mut self.inner {
            Tx::Own(own) => match stmt.to_sqlx().fetch_optional(&mut *own.conn).await {
                Ok(row) => row.map(|r| r.try_get(0)).transpose().map_err(Into::into),
                Err(e) => Err(e.into()),
            },
            Tx::Member(member) => member.text(&stmt),
        };
        if done.is_err() {
            self.poisoned = true;
        }
        done
    }

    /// The label of an outbox message (`referral`, `cancellation`, `letter`), read inside the
    /// transaction: on SQLite that is on the writer, without a hop to a reading connection's
    /// thread.
    pub async fn outbox_label(&mut self, message_id: &str) -> Result<Option<String>, StoreError> {
        self.text(Stmt::new("SELECT label FROM outbox WHERE id = $1").text(message_id))
            .await
    }

    /// Record the answer to a request id. [`StoreError::Duplicate`] if the id was seen: the
    /// caller then rolls back everything else the request did.
    pub async fn record_request(
        &mut self,
        request_id: &str,
        status: u16,
        body: &str,
    ) -> Result<(), StoreError> {
        self.exec(
            Stmt::new(
                "INSERT INTO requests (request_id, status, body, at_ms) VALUES ($1, $2, $3, $4)",
            )
            .text(request_id)
            .int(i64::from(status))
            .text(body)
            .int(now_ms()),
        )
        .await
        .map_err(duplicate)?;
        Ok(())
    }

    /// Mark a bus message as processed. `false` if it already was.
    pub async fn record_inbox(&mut self, message_id: &str) -> Result<bool, StoreError> {
        match self
            .exec(
                Stmt::new("INSERT INTO inbox (message_id, at_ms) VALUES ($1, $2)")
                    .text(message_id)
                    .int(now_ms()),
            )
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if e.is_unique() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// [`StoreError::Duplicate`] when the source bundle id (or another unique key) is taken.
    pub async fn insert_referral(
        &mut self,
        r: &ReferralRow,
        json: &ReferralJson,
    ) -> Result<(), StoreError> {
        let query = Stmt::new(
            "INSERT INTO referrals (id, task_id, source_bundle_id, message_bundle_id, correlation_id,
                practice_ods, scheme_id, scheme_endpoint, nhs_number, sr_status, task_status,
                service_request, task, version, created_ms, updated_ms)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)",
        )
        .text(&r.id)
        .text(&r.task_id)
        .text(&r.source_bundle_id)
        .text(&r.message_bundle_id)
        .text(&r.correlation_id)
        .text(&r.practice_ods)
        .text(&r.scheme_id)
        .text(&r.scheme_endpoint)
        .text(&r.nhs_number)
        .text(&r.sr_status)
        .text(&r.task_status)
        .text(&json.service_request)
        .text(&json.task)
        .int(r.version)
        .int(r.created_ms)
        .int(r.updated_ms);
        self.exec(query).await.map_err(duplicate)?;
        Ok(())
    }

    /// Write a referral's new state if it is still at `expected_version`. `false` if someone
    /// else changed it first.
    pub async fn update_referral(
        &mut self,
        r: &ReferralRow,
        json: &ReferralJson,
        expected_version: i64,
    ) -> Result<bool, StoreError> {
        let query = Stmt::new(
            "UPDATE referrals SET sr_status = $1, task_status = $2, service_request = $3, task = $4,
                version = $5, updated_ms = $6 WHERE id = $7 AND version = $8",
        )
        .text(&r.sr_status)
        .text(&r.task_status)
        .text(&json.service_request)
        .text(&json.task)
        .int(r.version)
        .int(r.updated_ms)
        .text(&r.id)
        .int(expected_version);
        let done = self.exec(query).await?;
        Ok(done == 1)
    }

    pub async fn add_step(
        &mut self,
        referral_id: &str,
        step: &str,
        detail: &str,
    ) -> Result<(), StoreError> {
        self.add_steps(referral_id, &[(step, detail)]).await
    }

    /// Steps in order, in one statement whatever their number (each statement is a round trip
    /// to the database on the request's path): the sequence numbers follow the referral's last,
    /// read inside the insert (which reads the table before it writes, on SQLite and PostgreSQL).
    pub async fn add_steps(
        &mut self,
        referral_id: &str,
        steps: &[(&str, &str)],
    ) -> Result<(), StoreError> {
        if steps.is_empty() {
            return Ok(());
        }
        if let Tx::Own(_) = &self.inner {
            // PostgreSQL: transactions that overlap would each read the same last number under
            // their own snapshots. The referral's row lock puts them in turn, and the insert, a
            // statement begun once the lock is granted, reads what the one before committed.
            // (SQLite's writer runs one transaction at a time.)
            self.exec(
                Stmt::new("SELECT 1 FROM referrals WHERE id = $1 FOR UPDATE").text(referral_id),
            )
            .await?;
        }
        let rows: Vec<String> = (0..steps.len())
            .map(|i| {
                let b = 3 + i * 3;
                format!("(${}, {}, ${}, ${})", b, i + 1, b + 1, b + 2)
            })
            .collect();
        let sql = format!(
            "INSERT INTO timeline (id, referral_id, seq, at_ms, step, detail)
             SELECT v.column1, $1,
                    (SELECT COALESCE(MAX(seq), 0) FROM timeline WHERE referral_id = $1) + v.column2,
                    $2, v.column3, v.column4
             FROM (VALUES {}) AS v",
            rows.join(", ")
        );
        let mut query = Stmt::new(&sql).text(referral_id).int(now_ms());
        for (step, detail) in steps {
            query = query
                .text(uuid::Uuid::now_v7().to_string())
                .text(*step)
                .text(*detail);
        }
        self.exec(query).await?;
        Ok(())
    }

    pub async fn add_outbox(&mut self, row: &OutboxRow) -> Result<(), StoreError> {
        // One statement: the sequence number is taken inside the insert.
        let query = Stmt::new(
            "INSERT INTO outbox (id, seq, exchange, routing_key, referral_id, label, envelope, created_ms)
             VALUES ($1, (SELECT COALESCE(MAX(seq), 0) + 1 FROM outbox), $2, $3, $4, $5, $6, $7)",
        )
        .text(&row.id)
        .text(&row.exchange)
        .text(&row.routing_key)
        .text(&row.referral_id)
        .text(&row.label)
        .text(&row.envelope)
        .int(now_ms());
        self.exec(query).await?;
        Ok(())
    }

    /// Mark an outbox row done: published, or (with a reason) set aside as unpublishable.
    /// `false` if it was already marked.
    ///
    /// A published row keeps what was sent where and when, but not its envelope: the message is
    /// made from the referral, which the ledger keeps, and the broker has it now. Emptying it
    /// also spares the update from writing the envelope (about 6 KiB for a referral) to the
    /// ledger a second time. A row set aside keeps its envelope, for whoever looks into why.
    pub async fn mark_sent(
        &mut self,
        id: &str,
        set_aside: Option<&str>,
    ) -> Result<bool, StoreError> {
        let query = Stmt::new(
            "UPDATE outbox SET sent_ms = $1, set_aside = $2,
                envelope = CASE WHEN $2 IS NULL THEN '' ELSE envelope END
             WHERE id = $3 AND sent_ms IS NULL",
        )
        .int(now_ms())
        .opt_text(set_aside)
        .text(id);
        let done = self.exec(query).await?;
        Ok(done == 1)
    }

    /// Keep a parked message. `false` if this report was recorded before.
    pub async fn insert_parked(&mut self, row: &ParkedRow) -> Result<bool, StoreError> {
        let query = Stmt::new(
            "INSERT INTO parked (id, message_id, referral_id, target, origin_queue, label, reason,
                attempts, parked_ms, envelope) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .text(&row.id)
        .text(&row.message_id)
        .text(&row.referral_id)
        .text(&row.target)
        .text(&row.origin_queue)
        .text(&row.label)
        .text(&row.reason)
        .int(row.attempts)
        .int(row.parked_ms)
        .text(&row.envelope);
        match self.exec(query).await {
            Ok(_) => Ok(true),
            Err(e) if e.is_unique() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Keep a record event on the patient's history. [`StoreError::Duplicate`] for an event id
    /// seen before.
    pub async fn insert_record_event(
        &mut self,
        id: &str,
        nhs_number: &str,
        practice_ods: &str,
        code: &str,
        action: &str,
    ) -> Result<(), StoreError> {
        let query = Stmt::new("INSERT INTO record_events (id, nhs_number, practice_ods, code, action, at_ms) VALUES ($1, $2, $3, $4, $5, $6)")
            .text(id)
            .text(nhs_number)
            .text(practice_ods)
            .text(code)
            .text(action)
            .int(now_ms());
        self.exec(query).await.map_err(duplicate)?;
        Ok(())
    }

    /// Mark a parked message replayed. `false` if it already was (a replay is done once).
    pub async fn mark_replayed(&mut self, id: &str) -> Result<bool, StoreError> {
        let done = self
            .exec(
                Stmt::new(
                    "UPDATE parked SET replayed_ms = $1 WHERE id = $2 AND replayed_ms IS NULL",
                )
                .int(now_ms())
                .text(id),
            )
            .await?;
        Ok(done == 1)
    }

    /// A letter handed to MESH as message `reference`. Sent again (a replay), it waits afresh.
    pub async fn letter_sent(&mut self, ack: &LetterAck) -> Result<(), StoreError> {
        let query = Stmt::new(
            "INSERT INTO letter_acks (message_id, reference, referral_id, sent_ms) VALUES ($1, $2, $3, $4)
             ON CONFLICT (message_id) DO UPDATE SET reference = $2, sent_ms = $4, settled_ms = NULL, alerted_ms = NULL",
        )
        .text(&ack.message_id)
        .text(&ack.reference)
        .text(&ack.referral_id)
        .int(ack.sent_ms);
        self.exec(query).await?;
        Ok(())
    }

    /// The letter's wait is over (its business acknowledgement, or a refusal).
    pub async fn letter_settled(&mut self, message_id: &str) -> Result<(), StoreError> {
        let query = Stmt::new(
            "UPDATE letter_acks SET settled_ms = $1 WHERE message_id = $2 AND settled_ms IS NULL",
        )
        .int(now_ms())
        .text(message_id);
        self.exec(query).await?;
        Ok(())
    }

    /// Mark a missing acknowledgement as raised. `false` if it was settled or raised already
    /// (by another replica).
    pub async fn letter_alerted(&mut self, message_id: &str) -> Result<bool, StoreError> {
        let query = Stmt::new(
            "UPDATE letter_acks SET alerted_ms = $1 WHERE message_id = $2 AND alerted_ms IS NULL AND settled_ms IS NULL",
        )
        .int(now_ms())
        .text(message_id);
        let done = self.exec(query).await?;
        Ok(done == 1)
    }

    pub async fn add_document(
        &mut self,
        id: &str,
        referral_id: &str,
        kind: &str,
        content: &str,
    ) -> Result<(), StoreError> {
        let query = Stmt::new("INSERT INTO documents (id, referral_id, kind, content, created_ms) VALUES ($1, $2, $3, $4, $5)")
            .text(id)
            .text(referral_id)
            .text(kind)
            .text(content)
            .int(now_ms());
        self.exec(query).await?;
        Ok(())
    }
}
