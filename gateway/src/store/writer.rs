//! Group commit on SQLite: one writer connection, one open batch transaction, and every
//! [`WriteTx`](super::WriteTx) a savepoint inside it.
//!
//! Each durable commit on SQLite (WAL) is an fsync, and with one commit per request the disk,
//! not the gateway, set the pace. Here a write transaction is a member of a batch:
//! the first member opens the batch (`BEGIN IMMEDIATE`), each member runs inside `SAVEPOINT w`
//! while it holds the writer (members run one at a time), and a member that commits releases
//! its savepoint into the batch and waits. A settle task, queued on the writer behind the
//! members already waiting for it (the lock is fair), then issues one `COMMIT` for all of them,
//! lets go of the writer, and has each answered once the WAL is synced: the sync runs on a
//! thread of its own while the next batch runs its statements (see [`super::wal_sync`]). Under
//! load the batch is everyone who queued meanwhile; alone, a member is committed at once.
//! Nothing is answered `Ok` before its batch's `COMMIT` returned and a sync of the WAL begun
//! after it returned, so "durable before acknowledged" holds per member.
//!
//! Work no one waits on (the outbox relay's marks, the audit trail, delivery reports) commits
//! unhurried: it joins the batch but does not ask for a settle, and rides on the next member
//! that does (a request's), or on a settle after [`UNHURRIED_WAIT`] if none comes. At 1,000
//! referrals a second that took a third of the fsyncs away.
//!
//! The writer connection is rusqlite's, not sqlx's: a member's statements run synchronously on
//! the task that holds the writer (inside an open batch they never wait for the disk), where
//! each statement through sqlx was two hops between threads, and the hops, not SQLite, set how
//! many members a second could pass through the one writer. `COMMIT` runs there too: without
//! the sync it writes the batch's pages to the WAL in the page cache. Only `BEGIN IMMEDIATE`
//! when another process holds the write lock, and the checkpoint the writer catches up, go to a
//! blocking thread. Reads stay on sqlx's pool.
//!
//! A member that fails or is dropped rolls back to its savepoint, and the others in the batch
//! are untouched. When the batch itself is lost (SQLite rolls a transaction back by itself on a
//! full disk or an I/O error, a `COMMIT` fails, a sync of the WAL failed, or a statement that
//! begins or ends a transaction was interrupted so that what the connection has open is
//! unknown), every member waiting on it is answered [`StoreError::NotCommitted`] and the
//! connection is closed (which rolls back whatever it had open); the next member opens a fresh
//! one. The connection is never used again in a state this module did not see through: that is
//! what left the ledger "database is locked" for good when sqlx's own transaction bookkeeping
//! went out of step with SQLite's.
//!
//! A `COMMIT` that crosses [`WAL_FALLBACK_PAGES`] checkpoints by itself, here on the async
//! worker; that is reached only if the checkpointer falls thousands of pages behind, and the
//! writer would be held for it wherever it ran.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};
use tokio::sync::{oneshot, Mutex, OwnedMutexGuard};

use super::stmt::Stmt;
use super::wal_sync::Syncs;
use super::StoreError;

/// The SQLite writer: one connection, taken by one member (or the settle task) at a time.
#[derive(Clone)]
pub(super) struct Writer {
    state: Arc<Mutex<State>>,
    syncs: Syncs,
}

pub(super) struct State {
    path: PathBuf,
    /// `None` after the connection was given up (or while a blocking statement has it); the
    /// next member opens a new one.
    conn: Option<Connection>,
    /// The batch transaction is open: `BEGIN IMMEDIATE` done, `COMMIT` not yet.
    in_batch: bool,
    /// A member's savepoint is open: while the member holds the writer, or after it was dropped
    /// without committing (then whoever takes the writer next rolls the savepoint back first).
    savepoint: bool,
    /// A statement that begins or ends the batch did not run to its end (its future was
    /// dropped): what the connection has open is unknown, so it is not used again.
    unsure: bool,
    /// Members whose savepoints were released into the open batch, waiting for its end: `true`
    /// once it committed and the WAL was synced, `false` (or the sender dropped) if not.
    waiters: Vec<oneshot::Sender<bool>>,
    /// The thread that syncs the WAL after each `COMMIT` (see [`super::wal_sync`]).
    syncs: Syncs,
    /// A settle task is spawned and has not yet taken the writer.
    settle_pending: bool,
    /// A settle task is waiting out `unhurried_wait` for members that committed unhurried.
    unhurried_pending: bool,
    /// [`UNHURRIED_WAIT`] (longer in a test).
    unhurried_wait: Duration,
    /// Set by the checkpointer when it has copied the WAL into the database: the next settle
    /// copies what was committed since, so that the WAL can start over (see [`checkpoints`]).
    catch_up: Arc<AtomicBool>,
}

/// Open a writer connection: WAL, durable at commit, and a wait (rather than an error) while
/// another process holds the write lock. Blocking.
fn open(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get::<_, String>(0))?;
    // A COMMIT writes its frames to the WAL and returns; the WAL is synced after the writer is
    // let go, and the batch answered after that (see [`super::wal_sync`]). SQLite still syncs
    // the WAL before each checkpoint and the database file after it.
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    // The WAL is copied back into the database by the checkpointer (see [`checkpoints`]), not
    // by whichever COMMIT crosses the threshold while the writer waits; this one steps in only
    // if the checkpointer falls far behind.
    conn.pragma_update(None, "wal_autocheckpoint", WAL_FALLBACK_PAGES)?;
    // Each member of a group runs in a savepoint, whose undo copy of every page it changes
    // (the sub-journal) is kept in memory rather than in a temporary file.
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    // A transaction's changed pages stay in memory until its COMMIT writes them once, instead of
    // being written to the WAL early when the 2 MiB page cache fills (and again at COMMIT); only
    // a transaction that changes more than 16 MiB of pages spills.
    conn.pragma_update(None, "cache_spill", 4096)?;
    // Every statement the ledger writes stays prepared.
    conn.set_prepared_statement_cache_capacity(64);
    Ok(conn)
}

/// The longest a member that commits unhurried waits for another to end its batch.
const UNHURRIED_WAIT: Duration = Duration::from_millis(10);
/// How long the writer waits for another process's write lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the checkpointer copies the WAL back into the database. Often, so that each pass's
/// sync of the database file is small: a COMMIT's fsync of the WAL that comes while the disk
/// writes those pages waits for them, and at 1,000 referrals a second and a pass every 100 ms
/// that made one commit in every pass take 3-6 ms instead of 0.3 (and the slowest answer of
/// most 100 ms windows 8-11 ms). Every 25 ms, the HTTP p99 at that rate fell from 7-12 ms to
/// 5-7 ms.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(25);
/// The WAL size (4 KiB pages) from which the writer catches up a checkpoint so that the WAL
/// starts over (see [`checkpoints`]). The catch-up holds the writer for a few milliseconds
/// (copying the frames committed since the last pass and syncing both files): done after every
/// pass, 40 times a second under load, it held the writer about 15% of the time. Under SQLite's
/// first WAL-index block (4,062 frames), so a reader's look-up stays in one hash table.
const CATCH_UP_FRAMES: i64 = 4_000;
/// The WAL size (4 KiB pages) at which a COMMIT checkpoints by itself (SQLite's default is
/// 1,000): only reached if the checkpointer falls behind.
const WAL_FALLBACK_PAGES: i64 = 16_000;
/// Copy what it can of the WAL into the database, waiting for no one; answers (blocked, frames
/// in the WAL, frames copied).
const PASSIVE_CHECKPOINT: &str = "PRAGMA wal_checkpoint(PASSIVE)";

/// Copy the WAL back into the database every `every`, on a connection of its own and a blocking
/// thread: a passive checkpoint waits for no one, and the writer goes on appending meanwhile.
/// Ends when the ledger's file can no longer be opened or the runtime stops.
///
/// Under steady writes a passive checkpoint alone never lets the WAL start over: SQLite rewinds
/// it only when a write transaction begins with every frame copied, and by the time a pass ends
/// the writer has committed more. Nor does SQLite sync the database file after a pass that did
/// not catch up, so the pages it copied stayed dirty in memory. The WAL grew to
/// [`WAL_FALLBACK_PAGES`] and then a COMMIT checkpointed it by itself, syncing some 60 MiB with
/// the write lock held: at 1,000 referrals a second, every request stopped for about 30 ms
/// twice a second. So after a pass that copied every frame it saw, the checkpointer syncs the
/// database file itself and, once the WAL holds [`CATCH_UP_FRAMES`], asks the writer
/// (`catch_up`) to copy, between two batches, the few frames committed since. That pass
/// catches up, the next batch rewinds the WAL, and a commit never waits for more than those few
/// pages.
async fn checkpoints(path: PathBuf, every: Duration, catch_up: Arc<AtomicBool>) {
    let mut open: Option<Checkpointer> = None;
    loop {
        tokio::time::sleep(every).await;
        let file = path.clone();
        let done = tokio::task::spawn_blocking(move || {
            let mut c = match open {
                Some(c) => c,
                None => Checkpointer::open(&file)?,
            };
            let caught_up = c.pass()?;
            Ok::<_, String>((c, caught_up))
        })
        .await;
        open = match done {
            Ok(Ok((c, caught_up))) => {
                if caught_up {
                    catch_up.store(true, Ordering::Release);
                }
                Some(c)
            }
            Ok(Err(e)) => {
                tracing::debug!("ledger: checkpoint: {e}");
                if !path.exists() {
                    return;
                }
                None
            }
            Err(_) => return,
        };
    }
}

/// The checkpointer's connection and its own handle on the database file.
struct Checkpointer {
    conn: Connection,
    db: std::fs::File,
    /// The WAL's frame count at the last pass that copied every frame.
    copied: i64,
}

impl Checkpointer {
    fn open(path: &Path) -> Result<Self, String> {
        Ok(Checkpointer {
            conn: Connection::open_with_flags(
                path,
                OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )
            .map_err(|e| e.to_string())?,
            db: std::fs::File::open(path).map_err(|e| e.to_string())?,
            copied: 0,
        })
    }

    /// One pass: `true` if it copied every frame in the WAL, new ones among them, and then
    /// synced the database file, and the WAL holds [`CATCH_UP_FRAMES`] or more. Blocking.
    fn pass(&mut self) -> Result<bool, String> {
        let (blocked, log, copied): (i64, i64, i64) = self
            .conn
            .query_row(PASSIVE_CHECKPOINT, [], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .map_err(|e| e.to_string())?;
        if blocked != 0 || copied != log || log == self.copied {
            return Ok(false);
        }
        self.db.sync_data().map_err(|e| e.to_string())?;
        self.copied = log;
        Ok(log >= CATCH_UP_FRAMES)
    }
}

impl Writer {
    /// Open the writer connection on `url` (an `sqlite:` URL the pool also uses).
    pub(super) async fn connect(url: &str) -> Result<Self, StoreError> {
        let path = sqlx::sqlite::SqliteConnectOptions::from_str(url)?
            .get_filename()
            .to_owned();
        let conn = {
            let path = path.clone();
            tokio::task::spawn_blocking(move || open(&path))
                .await
                .map_err(|_| StoreError::NotCommitted)??
        };
        let syncs = Syncs::start(&path).map_err(|e| StoreError::Db(sqlx::Error::Io(e)))?;
        let catch_up = Arc::new(AtomicBool::new(false));
        tokio::spawn(checkpoints(
            path.clone(),
            CHECKPOINT_EVERY,
            catch_up.clone(),
        ));
        Ok(Writer {
            state: Arc::new(Mutex::new(State {
                path,
                conn: Some(conn),
                in_batch: false,
                savepoint: false,
                unsure: false,
                waiters: Vec::new(),
                syncs: syncs.clone(),
                settle_pending: false,
                unhurried_pending: false,
                unhurried_wait: UNHURRIED_WAIT,
                catch_up,
            })),
            syncs,
        })
    }

    /// Wait until everything committed before this call is on disk (a batch is visible to
    /// readers from its `COMMIT`, a moment before its sync returns).
    pub(super) async fn synced(&self) -> Result<(), StoreError> {
        self.syncs.synced().await
    }

    /// Take the writer and open a member's savepoint in the batch (opening the batch if none
    /// is). Waits for the members ahead.
    pub(super) async fn begin(&self) -> Result<Member, StoreError> {
        let guard = self.state.clone().lock_owned().await;
        // Made before anything can fail or be interrupted, so that its drop always schedules
        // the batch's end.
        let mut member = Member {
            writer: self.state.clone(),
            state: Some(guard),
        };
        let s = member.state()?;
        s.recover();
        if !s.in_batch {
            // Take the write lock now: a deferred transaction that upgrades later can fail with
            // SQLITE_BUSY half-way. Here if the lock is free; if another process holds it, the
            // wait is on a blocking thread.
            if !s.begin_at_once() {
                s.blocking("BEGIN IMMEDIATE").await?;
            }
            s.in_batch = true;
        }
        s.control("SAVEPOINT w")?;
        s.savepoint = true;
        Ok(member)
    }
}

impl State {
    /// Run a statement that cannot wait (a savepoint's) on the writer connection, here.
    fn control(&mut self, sql: &str) -> Result<(), StoreError> {
        let conn = self.conn.as_mut().ok_or(StoreError::NotCommitted)?;
        conn.execute_batch(sql)?;
        Ok(())
    }

    /// `BEGIN IMMEDIATE` here and now if the write lock is free; `false` (nothing begun) if
    /// there is no connection or another process holds the lock.
    fn begin_at_once(&mut self) -> bool {
        let Some(conn) = self.conn.as_ref() else {
            return false;
        };
        let begun = conn.busy_timeout(Duration::ZERO).is_ok()
            && conn.execute_batch("BEGIN IMMEDIATE").is_ok();
        // Waits for the lock elsewhere (COMMIT's checkpoint, the next begin) stay patient; a
        // connection that refuses is given up and the blocking path opens a new one.
        if conn.busy_timeout(BUSY_TIMEOUT).is_err() {
            if begun {
                self.reset("the writer connection refused its busy timeout");
            } else {
                self.conn = None;
            }
            return false;
        }
        begun
    }

    /// Run a statement that begins or ends the batch (and may wait for the disk or another
    /// process) on a blocking thread, opening the connection first if there is none. If the
    /// future is dropped before it returns, the connection stays with the blocking thread
    /// (closed, so rolled back, when it ends) and [`State::unsure`] stays set.
    async fn blocking(&mut self, sql: &'static str) -> Result<(), StoreError> {
        self.blocking_with(move |c| c.execute_batch(sql)).await
    }

    /// [`State::blocking`] for any work on the connection.
    async fn blocking_with(
        &mut self,
        work: impl FnOnce(&Connection) -> rusqlite::Result<()> + Send + 'static,
    ) -> Result<(), StoreError> {
        let conn = self.conn.take();
        let path = self.path.clone();
        self.unsure = true;
        let (conn, done) = tokio::task::spawn_blocking(move || {
            let conn = match conn {
                Some(c) => c,
                None => match open(&path) {
                    Ok(c) => c,
                    Err(e) => return (None, Err(e)),
                },
            };
            let done = work(&conn);
            (Some(conn), done)
        })
        .await
        .map_err(|_| StoreError::NotCommitted)?;
        self.conn = conn;
        self.unsure = false;
        done.map_err(StoreError::from)
    }

    /// Make the connection fit for the next member or for the batch's end: roll back a
    /// savepoint its member left open, or give the connection up if its state is unknown or the
    /// rollback fails (then SQLite has rolled the whole batch back by itself).
    fn recover(&mut self) {
        if self.syncs.take_failure() {
            // The kernel may have dropped the pages that failed to reach the disk: nothing on
            // this connection is trusted any more.
            self.reset("syncing the WAL failed");
            return;
        }
        if self.unsure {
            self.reset("a statement beginning or ending a transaction was interrupted");
            return;
        }
        if self.savepoint {
            match self.control("ROLLBACK TO w; RELEASE w") {
                Ok(()) => self.savepoint = false,
                Err(e) => self.reset(&format!("rolling back a savepoint failed: {e}")),
            }
        }
    }

    /// Give up the connection and the batch: closing the connection rolls back whatever it had
    /// open, and every member waiting on the batch learns that it did not commit.
    fn reset(&mut self, why: &str) {
        if self.in_batch || !self.waiters.is_empty() {
            tracing::warn!(
                waiting = self.waiters.len(),
                "ledger: the write batch is abandoned and its connection closed: {why}"
            );
        }
        self.conn = None;
        self.in_batch = false;
        self.savepoint = false;
        self.unsure = false;
        for w in self.waiters.drain(..) {
            let _ = w.send(false);
        }
    }

    /// Make sure a settle task will take the writer after the members now waiting for it
    /// ([`Pending::Now`]), or will end the batch within `unhurried_wait` even if no member ends
    /// it sooner ([`Pending::Unhurried`]: one such wait covers every unhurried member that joins
    /// meanwhile, in this batch or the next; whichever batch is open when it ends is ended).
    fn schedule(&mut self, writer: &Arc<Mutex<State>>, pending: Pending) {
        let (scheduled, wait) = match pending {
            Pending::Now => (self.settle_pending, None),
            Pending::Unhurried => (self.unhurried_pending, Some(self.unhurried_wait)),
        };
        if scheduled {
            return;
        }
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                match pending {
                    Pending::Now => self.settle_pending = true,
                    Pending::Unhurried => self.unhurried_pending = true,
                }
                let writer = writer.clone();
                runtime.spawn(async move {
                    if let Some(wait) = wait {
                        tokio::time::sleep(wait).await;
                    }
                    settle(writer, pending).await;
                });
            }
            // No runtime to end the batch on (a drop outside one): end it here, unanswered work
            // is not committed.
            Err(_) => self.reset("no runtime to end the batch on"),
        }
    }
}

/// Which scheduling a settle task answers to.
#[derive(Clone, Copy)]
enum Pending {
    /// At once, behind the members now waiting for the writer.
    Now,
    /// After `unhurried_wait`.
    Unhurried,
}

/// End the open batch: `COMMIT` if members are waiting on it (then answer them), otherwise
/// roll back the empty transaction so that no write lock is held idle.
async fn settle(writer: Arc<Mutex<State>>, pending: Pending) {
    let mut s = writer.lock().await;
    match pending {
        Pending::Now => s.settle_pending = false,
        Pending::Unhurried => s.unhurried_pending = false,
    }
    s.recover();
    if !s.in_batch {
        // Nothing open (a reset answered everyone already).
        return;
    }
    let waiters = std::mem::take(&mut s.waiters);
    let end = if waiters.is_empty() {
        "ROLLBACK"
    } else {
        "COMMIT"
    };
    // Here, not on a blocking thread: without the sync (see [`super::wal_sync`]) a COMMIT
    // writes the batch's frames to the WAL (into the page cache) and returns.
    match s.control(end) {
        Ok(()) => {
            s.in_batch = false;
            if waiters.len() > 1 {
                tracing::trace!(members = waiters.len(), "ledger: group commit");
            }
            if !waiters.is_empty() {
                s.syncs.after_sync(waiters);
            }
            // Between two batches, so nothing is committed meanwhile: this copies the frames
            // committed since the checkpointer's pass (whose pages it already synced) and
            // catches up, and the next batch rewinds the WAL.
            if s.catch_up.swap(false, Ordering::AcqRel) {
                let copied = s
                    .blocking_with(|c| c.query_row(PASSIVE_CHECKPOINT, [], |_| Ok(())))
                    .await;
                if let Err(e) = copied {
                    tracing::debug!("ledger: catching up the checkpoint: {e}");
                }
            }
        }
        Err(e) => {
            // Whether SQLite kept the transaction open or rolled it back, the connection is
            // closed (rolling back) and everyone in the batch told it did not commit.
            s.waiters = waiters;
            s.reset(&format!("{end} failed: {e}"));
        }
    }
}

/// One write transaction's hold on the writer: its savepoint is open while this lives. Dropped
/// without [`Member::commit`], its savepoint is rolled back by the next holder of the writer.
pub(super) struct Member {
    writer: Arc<Mutex<State>>,
    /// `None` once the member let go of the writer.
    state: Option<OwnedMutexGuard<State>>,
}

impl Member {
    fn state(&mut self) -> Result<&mut State, StoreError> {
        self.state.as_deref_mut().ok_or(StoreError::NotCommitted)
    }

    /// Run one of the member's statements, here and now (the writer is this member's, and
    /// inside the open batch a statement does not wait for the disk); the rows it changed.
    pub(super) fn exec(&mut self, stmt: &Stmt<'_>) -> Result<u64, StoreError> {
        Ok(stmt.run_sqlite(self.conn()?)? as u64)
    }

    /// Run one of the member's queries, here and now: the text its first row starts with.
    pub(super) fn text(&mut self, stmt: &Stmt<'_>) -> Result<Option<String>, StoreError> {
        Ok(stmt.text_sqlite(self.conn()?)?)
    }

    fn conn(&mut self) -> Result<&Connection, StoreError> {
        self.state()?.conn.as_ref().ok_or(StoreError::NotCommitted)
    }

    /// Release the savepoint into the batch, let go of the writer, and wait for the batch's
    /// `COMMIT`. `Ok` only once it returned.
    pub(super) async fn commit(self) -> Result<(), StoreError> {
        self.end(true).await
    }

    /// [`Member::commit`], except that this member does not ask for the batch to end: it
    /// waits for a member that does, or for [`UNHURRIED_WAIT`]. For writes no one is waiting
    /// on: under load they cost no commit of their own, and the last page of each index they
    /// share with the requests' writes is written to the WAL once per batch, not once more.
    pub(super) async fn commit_unhurried(self) -> Result<(), StoreError> {
        self.end(false).await
    }

    async fn end(mut self, urgent: bool) -> Result<(), StoreError> {
        let s = self.state.as_deref_mut().ok_or(StoreError::NotCommitted)?;
        if let Err(e) = s.control("RELEASE w") {
            // The savepoint went with the batch: SQLite rolled the transaction back itself.
            s.reset(&format!("releasing a savepoint failed: {e}"));
            return Err(StoreError::NotCommitted);
        }
        s.savepoint = false;
        let (tx, rx) = oneshot::channel();
        s.waiters.push(tx);
        let pending = if urgent {
            Pending::Now
        } else {
            Pending::Unhurried
        };
        s.schedule(&self.writer, pending);
        // Let go of the writer: the next member runs while this one waits for the batch.
        self.state = None;
        match rx.await {
            Ok(true) => Ok(()),
            _ => Err(StoreError::NotCommitted),
        }
    }

    /// Roll back the member's savepoint now (rather than when the writer is next taken).
    pub(super) fn rollback(mut self) {
        if let Ok(s) = self.state() {
            s.recover();
        }
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        if let Some(mut s) = self.state.take() {
            // The savepoint, if still open, stays flagged for the next holder to roll back; the
            // batch must still end even if no other member comes.
            s.schedule(&self.writer, Pending::Now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer on a fresh ledger file with one table, `t (x TEXT)`.
    async fn writer() -> (Writer, std::path::PathBuf) {
        let dir =
            std::env::temp_dir().join(format!("signpost-writer-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let url = format!("sqlite://{}/ledger.db?mode=rwc", dir.display());
        let writer = Writer::connect(&url).await.unwrap();
        let mut m = writer.begin().await.unwrap();
        m.exec(&Stmt::new("CREATE TABLE t (x TEXT PRIMARY KEY)"))
            .unwrap();
        m.commit().await.unwrap();
        (writer, dir)
    }

    async fn insert(m: &mut Member, x: &str) -> Result<(), StoreError> {
        m.exec(&Stmt::new("INSERT INTO t (x) VALUES ($1)").text(x))
            .map(drop)
    }

    /// Another connection to the same file.
    fn other(dir: &Path) -> Connection {
        Connection::open(dir.join("ledger.db")).unwrap()
    }

    /// The batch ended: another process may write.
    fn no_write_lock_held(dir: &Path) {
        other(dir)
            .execute_batch("PRAGMA busy_timeout = 0; BEGIN IMMEDIATE; ROLLBACK")
            .expect("no write lock is held idle");
    }

    /// What another connection finds on disk, in order.
    async fn on_disk(dir: &Path) -> Vec<String> {
        let other = other(dir);
        let mut st = other.prepare("SELECT x FROM t ORDER BY x").unwrap();
        let rows = st.query_map([], |r| r.get(0)).unwrap();
        rows.map(Result::unwrap).collect()
    }

    #[tokio::test]
    async fn concurrent_members_commit_together_and_a_failed_or_dropped_one_takes_none_with_it() {
        let (writer, dir) = writer().await;
        let mut tasks = Vec::new();
        for i in 0..30 {
            let writer = writer.clone();
            tasks.push(tokio::spawn(async move {
                let mut m = writer.begin().await.unwrap();
                insert(&mut m, &format!("{i:02}")).await.unwrap();
                match i % 3 {
                    // A unique key's violation: the statement fails, the member gives up.
                    0 => {
                        assert!(insert(&mut m, &format!("{i:02}")).await.is_err());
                        drop(m);
                        false
                    }
                    1 => {
                        drop(m);
                        false
                    }
                    _ => {
                        tokio::task::yield_now().await;
                        m.commit().await.unwrap();
                        true
                    }
                }
            }));
        }
        let mut committed = Vec::new();
        for (i, t) in tasks.into_iter().enumerate() {
            if t.await.unwrap() {
                committed.push(format!("{i:02}"));
            }
        }
        assert_eq!(on_disk(&dir).await, committed);
        no_write_lock_held(&dir);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn an_unhurried_member_waits_for_the_next_member_that_commits_and_rides_on_its_commit() {
        let (writer, dir) = writer().await;
        writer.state.lock().await.unhurried_wait = Duration::from_secs(600);
        let mut u = writer.begin().await.unwrap();
        insert(&mut u, "u").await.unwrap();
        let u = tokio::spawn(u.commit_unhurried());
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            !u.is_finished(),
            "the unhurried member did not end its batch"
        );
        assert!(on_disk(&dir).await.is_empty(), "nothing is committed yet");

        let mut f = writer.begin().await.unwrap();
        insert(&mut f, "f").await.unwrap();
        f.commit().await.unwrap();
        tokio::time::timeout(Duration::from_secs(5), u)
            .await
            .expect("answered with the commit it rode on")
            .unwrap()
            .unwrap();
        assert_eq!(on_disk(&dir).await, ["f", "u"]);
        no_write_lock_held(&dir);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn a_member_is_answered_only_once_the_wal_is_synced_after_its_commit() {
        let (writer, dir) = writer().await;
        let release = writer.syncs.hold();
        let mut m = writer.begin().await.unwrap();
        insert(&mut m, "m").await.unwrap();
        let m = tokio::spawn(m.commit());
        // Committed (readers see it, and the writer is free for the next batch)...
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while on_disk(&dir).await.is_empty() {
            assert!(std::time::Instant::now() < deadline, "never committed");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let mut next = writer.begin().await.unwrap();
        insert(&mut next, "n").await.unwrap();
        next.rollback();
        // ...but not answered while the WAL is not synced.
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!m.is_finished(), "answered before the WAL was synced");
        drop(release);
        tokio::time::timeout(Duration::from_secs(5), m)
            .await
            .expect("answered once synced")
            .unwrap()
            .unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn an_unhurried_member_alone_is_committed_after_a_short_wait() {
        let (writer, dir) = writer().await;
        let mut u = writer.begin().await.unwrap();
        insert(&mut u, "u").await.unwrap();
        tokio::time::timeout(Duration::from_secs(5), u.commit_unhurried())
            .await
            .expect("committed within the wait")
            .unwrap();
        assert_eq!(on_disk(&dir).await, ["u"]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn a_batch_that_sqlite_rolled_back_by_itself_is_answered_not_committed_and_the_writer_recovers(
    ) {
        let (writer, dir) = writer().await;
        let mut a = writer.begin().await.unwrap();
        insert(&mut a, "a").await.unwrap();
        // b takes the writer next, before the batch's settle task.
        let b = tokio::spawn({
            let writer = writer.clone();
            async move {
                let mut b = writer.begin().await.unwrap();
                // As SQLite does by itself on a full disk or an I/O error.
                b.exec(&Stmt::new("ROLLBACK")).unwrap();
                drop(b);
            }
        });
        tokio::task::yield_now().await;
        let a = tokio::spawn(a.commit());
        b.await.unwrap();
        assert!(matches!(a.await.unwrap(), Err(StoreError::NotCommitted)));
        assert!(on_disk(&dir).await.is_empty(), "nothing of the lost batch");

        let mut c = writer.begin().await.unwrap();
        insert(&mut c, "c").await.unwrap();
        c.commit().await.unwrap();
        assert_eq!(on_disk(&dir).await, ["c"]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn a_failed_commit_fails_every_member_of_the_batch_and_the_writer_recovers() {
        let (writer, dir) = writer().await;
        // A deferred foreign key is checked at COMMIT, which then fails.
        let mut m = writer.begin().await.unwrap();
        m.exec(&Stmt::new(
            "CREATE TABLE child (p TEXT REFERENCES t (x) DEFERRABLE INITIALLY DEFERRED)",
        ))
        .unwrap();
        m.commit().await.unwrap();

        let mut a = writer.begin().await.unwrap();
        a.exec(&Stmt::new("PRAGMA foreign_keys = ON")).unwrap();
        insert(&mut a, "a").await.unwrap();
        let b = tokio::spawn({
            let writer = writer.clone();
            async move {
                let mut b = writer.begin().await.unwrap();
                b.exec(&Stmt::new("INSERT INTO child (p) VALUES ('nowhere')"))
                    .unwrap();
                b.commit().await
            }
        });
        tokio::task::yield_now().await;
        let a = tokio::spawn(a.commit());
        assert!(matches!(b.await.unwrap(), Err(StoreError::NotCommitted)));
        assert!(matches!(a.await.unwrap(), Err(StoreError::NotCommitted)));
        assert!(on_disk(&dir).await.is_empty());

        let mut c = writer.begin().await.unwrap();
        insert(&mut c, "c").await.unwrap();
        c.commit().await.unwrap();
        assert_eq!(on_disk(&dir).await, ["c"]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn committed_pages_reach_the_database_file_without_a_commit_checkpointing_them() {
        let (writer, dir) = writer().await;
        let db = dir.join("ledger.db");
        let before = std::fs::metadata(&db).unwrap().len();
        let mut m = writer.begin().await.unwrap();
        insert(&mut m, &"x".repeat(2 << 20)).await.unwrap();
        m.commit().await.unwrap();
        // A 2 MiB row is far below the WAL size at which a COMMIT checkpoints by itself: only
        // the checkpointer moves it from the WAL into the database file.
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while std::fs::metadata(&db).unwrap().len() < before + (2 << 20) {
            assert!(
                std::time::Instant::now() < deadline,
                "the WAL was not checkpointed"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(on_disk(&dir).await.len(), 1);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// The WAL header's checkpoint sequence number, which SQLite adds one to each time the WAL
    /// starts over.
    fn wal_restarts(dir: &Path) -> u32 {
        let header = std::fs::read(dir.join("ledger.db-wal")).unwrap();
        u32::from_be_bytes(header[12..16].try_into().unwrap())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn under_steady_writes_the_wal_starts_over_without_a_commit_checkpointing_it() {
        let (writer, dir) = writer().await;
        let before = wal_restarts(&dir);
        // Long enough for the WAL to reach the fallback size several times over if it never
        // started over (it did in 1.5 s before the catch-up).
        let steady = Duration::from_millis(1500);
        let until = std::time::Instant::now() + steady;
        let mut tasks = Vec::new();
        for t in 0..8 {
            let writer = writer.clone();
            tasks.push(tokio::spawn(async move {
                let mut i = 0;
                while std::time::Instant::now() < until {
                    let mut m = writer.begin().await.unwrap();
                    insert(&mut m, &format!("{t}-{i:06}-{}", "x".repeat(200)))
                        .await
                        .unwrap();
                    m.commit().await.unwrap();
                    i += 1;
                }
                i
            }));
        }
        let mut rows = 0;
        for t in tasks {
            rows += t.await.unwrap();
        }
        // The WAL never came near the size at which a COMMIT checkpoints by itself...
        let wal = std::fs::metadata(dir.join("ledger.db-wal")).unwrap().len();
        assert!(wal < WAL_FALLBACK_PAGES as u64 * 4096, "{wal} bytes");
        // ...yet it started over again and again while the writers never paused.
        let restarts = wal_restarts(&dir) - before;
        assert!(
            restarts >= 5,
            "the WAL started over {restarts} times in {rows} commits over {steady:?}"
        );
        assert_eq!(on_disk(&dir).await.len(), rows);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn an_interrupted_begin_leaves_no_transaction_behind() {
        let (writer, dir) = writer().await;
        // Another process holds the write lock; a member waiting for it is given up.
        let other = other(&dir);
        other.execute_batch("BEGIN IMMEDIATE").unwrap();
        let waited =
            tokio::time::timeout(std::time::Duration::from_millis(200), writer.begin()).await;
        assert!(waited.is_err(), "the member waits for the lock");
        other.execute_batch("ROLLBACK").unwrap();
        drop(other);

        let mut c = writer.begin().await.unwrap();
        insert(&mut c, "c").await.unwrap();
        c.commit().await.unwrap();
        assert_eq!(on_disk(&dir).await, ["c"]);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
