//! The writer's WAL is synced to disk here, on a thread of its own, after the writer has let go.
//!
//! With `synchronous = FULL`, SQLite syncs the WAL inside each `COMMIT`, and the writer is held
//! for the sync: at 64 connections that was a tenth to a fifth of the writer's time, during
//! which no member could run its statements. The writer connection now runs with
//! `synchronous = NORMAL`, under which a `COMMIT` in WAL mode writes its frames and returns
//! (SQLite still syncs the WAL before every checkpoint, and the database file after it), and a
//! batch's members are answered only once this thread's `fdatasync` of the WAL, begun after
//! their `COMMIT` returned, has returned. So "durable before acknowledged" still holds, while
//! the next batch runs its statements during the sync, and one sync covers every batch that
//! committed while the last one ran.
//!
//! A committed batch is visible to readers before its sync returns. What leaves the gateway
//! because of a read (the outbox relay's publishes) first waits for [`Syncs::synced`], a sync
//! begun after the read (always: rows may also come from another process, such as
//! `signpost parked replay`, whose own sync may not have returned yet).
//!
//! The file is followed by identity, not kept by path: if SQLite ever makes a new WAL file (after
//! every connection closed), the next sync opens it, and syncs the directory once so that the
//! new file's name is on disk too. A WAL file that is absent holds nothing: SQLite deletes it
//! only after checkpointing it into the database file and syncing that.

use std::fs::File;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};

use tokio::sync::oneshot;

use super::StoreError;

/// Members waiting for a sync: each is sent `true` once a sync begun after it was queued
/// returned, `false` if that sync failed.
type Waiters = Vec<oneshot::Sender<bool>>;

/// A handle on the sync thread. The thread ends when the last handle is dropped.
#[derive(Clone)]
pub(super) struct Syncs {
    jobs: mpsc::Sender<Waiters>,
    /// Held by the thread while it syncs: a test holds it to hold the syncs back.
    #[cfg(test)]
    file: Arc<Mutex<WalFile>>,
    /// Set when a sync failed; the writer gives its connection up when it next sees it.
    failed: Arc<AtomicBool>,
}

impl Syncs {
    /// Start the sync thread for the WAL of the SQLite database at `db`.
    pub(super) fn start(db: &Path) -> io::Result<Self> {
        let (jobs, queued) = mpsc::channel::<Waiters>();
        let file = Arc::new(Mutex::new(WalFile::of(db)));
        let failed = Arc::new(AtomicBool::new(false));
        let syncs = Syncs {
            jobs,
            #[cfg(test)]
            file: file.clone(),
            failed: failed.clone(),
        };
        std::thread::Builder::new()
            .name("ledger-sync".into())
            .spawn(move || run(&queued, &file, &failed))?;
        Ok(syncs)
    }

    /// Answer `waiters` once the WAL is on disk with everything written to it before this call.
    pub(super) fn after_sync(&self, waiters: Waiters) {
        if let Err(mpsc::SendError(waiters)) = self.jobs.send(waiters) {
            // The thread is gone, which only a panic in it could do: the writes cannot be known
            // to be durable.
            for w in waiters {
                let _ = w.send(false);
            }
        }
    }

    /// Wait until everything committed before this call is on disk.
    pub(super) async fn synced(&self) -> Result<(), StoreError> {
        let (tx, rx) = oneshot::channel();
        self.after_sync(vec![tx]);
        match rx.await {
            Ok(true) => Ok(()),
            _ => Err(StoreError::NotCommitted),
        }
    }

    /// Hold the syncs back until the returned sender is used or dropped (from a thread of its
    /// own, so that an async test can go on meanwhile).
    #[cfg(test)]
    pub(super) fn hold(&self) -> std::sync::mpsc::Sender<()> {
        let (held_tx, held) = std::sync::mpsc::channel();
        let (release, release_rx) = std::sync::mpsc::channel::<()>();
        let file = self.file.clone();
        std::thread::spawn(move || {
            let _g = file.lock();
            let _ = held_tx.send(());
            let _ = release_rx.recv();
        });
        let _ = held.recv();
        release
    }

    /// Whether a sync failed since the last call.
    pub(super) fn take_failure(&self) -> bool {
        self.failed.swap(false, Ordering::AcqRel)
    }
}

/// The thread: one sync for everything queued meanwhile, then answer it all.
fn run(queued: &mpsc::Receiver<Waiters>, file: &Mutex<WalFile>, failed: &AtomicBool) {
    while let Ok(mut waiters) = queued.recv() {
        for more in queued.try_iter() {
            waiters.extend(more);
        }
        let done = match file.lock() {
            Ok(mut f) => f.sync(),
            Err(_) => Err(io::Error::other("the WAL file's lock was poisoned")),
        };
        if let Err(e) = &done {
            failed.store(true, Ordering::Release);
            tracing::error!(
                waiting = waiters.len(),
                "ledger: syncing the WAL failed, so the writes waiting on it are answered as not committed: {e}"
            );
        }
        for w in waiters {
            let _ = w.send(done.is_ok());
        }
    }
}

/// The WAL file, kept open, known by its device and inode.
struct WalFile {
    path: PathBuf,
    dir: PathBuf,
    open: Option<(File, (u64, u64))>,
}

impl WalFile {
    fn of(db: &Path) -> Self {
        let mut path = db.as_os_str().to_owned();
        path.push("-wal");
        let dir = match db.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
            _ => PathBuf::from("."),
        };
        WalFile {
            path: path.into(),
            dir,
            open: None,
        }
    }

    /// `fdatasync` the WAL file at its path now, opening it (and syncing its directory) if it
    /// is not the one open.
    fn sync(&mut self) -> io::Result<()> {
        let now = match std::fs::metadata(&self.path) {
            Ok(m) => (m.dev(), m.ino()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                self.open = None;
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        if self.open.as_ref().map(|(_, id)| *id) != Some(now) {
            self.open = None;
            let f = File::open(&self.path)?;
            let m = f.metadata()?;
            File::open(&self.dir)?.sync_all()?;
            self.open = Some((f, (m.dev(), m.ino())));
        }
        match &self.open {
            Some((f, _)) => f.sync_data().inspect_err(|_| {
                // Opened again (and its directory synced) next time.
                self.open = None;
            }),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn scratch() -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "signpost-walsync-{}",
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn id(path: &Path) -> (u64, u64) {
        let m = std::fs::metadata(path).unwrap();
        (m.dev(), m.ino())
    }

    #[test]
    fn the_file_synced_is_the_one_at_the_path_now_and_an_absent_one_holds_nothing() {
        let dir = scratch();
        let wal = dir.join("ledger.db-wal");
        let mut f = WalFile::of(&dir.join("ledger.db"));
        f.sync().expect("no WAL: nothing to sync");
        assert!(f.open.is_none());

        std::fs::write(&wal, b"one").unwrap();
        f.sync().unwrap();
        let first = f.open.as_ref().unwrap().1;
        assert_eq!(first, id(&wal));

        // A new file under the same name (as SQLite makes after every connection closed), made
        // while the old one is still open here so that its inode cannot be reused.
        let moved = dir.join("old-wal");
        std::fs::rename(&wal, &moved).unwrap();
        std::fs::write(&wal, b"two").unwrap();
        f.sync().unwrap();
        let second = f.open.as_ref().unwrap().1;
        assert_ne!(second, first);
        assert_eq!(second, id(&wal));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn a_waiter_is_answered_only_after_a_sync_begun_after_it_was_queued() {
        let dir = scratch();
        std::fs::write(dir.join("ledger.db-wal"), b"frames").unwrap();
        let syncs = Syncs::start(&dir.join("ledger.db")).unwrap();
        let release = syncs.hold();

        let (tx, member) = oneshot::channel();
        syncs.after_sync(vec![tx]);
        let barrier = tokio::spawn({
            let syncs = syncs.clone();
            async move { syncs.synced().await }
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!barrier.is_finished(), "the barrier passed before any sync");
        let mut member = member;
        assert!(member.try_recv().is_err(), "answered before any sync");

        drop(release);
        let answered = tokio::time::timeout(Duration::from_secs(5), member).await;
        assert!(
            matches!(answered, Ok(Ok(true))),
            "answered once the sync ran"
        );
        tokio::time::timeout(Duration::from_secs(5), barrier)
            .await
            .expect("the barrier passed once the sync ran")
            .unwrap()
            .expect("the sync succeeded");
        assert!(!syncs.take_failure());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn a_failed_sync_answers_not_committed_and_is_reported_once() {
        let dir = scratch();
        // A "WAL" that cannot be synced: /dev/null refuses fdatasync (EINVAL).
        std::os::unix::fs::symlink("/dev/null", dir.join("ledger.db-wal")).unwrap();
        let syncs = Syncs::start(&dir.join("ledger.db")).unwrap();
        assert!(matches!(
            syncs.synced().await,
            Err(StoreError::NotCommitted)
        ));
        assert!(syncs.take_failure());
        assert!(!syncs.take_failure(), "reported once");

        // A WAL that can be synced again: the next sync succeeds.
        std::fs::remove_file(dir.join("ledger.db-wal")).unwrap();
        std::fs::write(dir.join("ledger.db-wal"), b"frames").unwrap();
        syncs.synced().await.expect("synced");
        assert!(!syncs.take_failure());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
