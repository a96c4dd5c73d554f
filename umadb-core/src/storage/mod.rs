//! The storage engine: an append-only event log in LMDB with chunked roaring-bitmap indexes.
//!
//! A [`Store`] is a directory holding one LMDB environment. Reads run on the caller's thread in
//! short read transactions; appends go to one writer thread that commits them in groups.

mod check;
mod chunk;
mod eval;
mod format;
mod intern;
mod journal;
mod pages;
mod read;
mod recent;
#[cfg(any(test, feature = "testing"))]
mod staging;
mod wal;
mod writer;

pub use check::CheckReport;
/// The on-disk format version this build writes (and upgrades older stores to).
pub use format::FORMAT_VERSION;
pub use journal::JournalReplay;
pub use pages::PageSummary;
pub use read::Reader;
#[cfg(any(test, feature = "testing"))]
pub use staging::{stage_crash_of_a_build_before_the_log, stamp_format_version};

use crate::error::{Error, Result};
use crate::types::{
    AppendRequest, Position, Query, ReadRequest, SequencedEvent, SequencedEventRef, TrackingInfo,
};
use format::{Kind, FORMAT_MAGIC, META_FORMAT, META_INDEXED_HEAD};
use heed::types::Bytes;
use heed::{
    CommitOrAbort, Database, Env, EnvFlags, EnvOpenOptions, FlagSetMode, RoTxn, RwTxn, WithoutTls,
};
use std::ops::Bound;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// How a store is opened.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Largest size the data file may grow to. LMDB reserves this much address space, not disk,
    /// so the default is large enough never to be reached in practice.
    pub map_size: usize,
    /// Most read transactions open at once.
    pub max_readers: u32,
    /// Most append requests the writer commits in one transaction.
    pub max_group: usize,
    /// Walk LMDB's page structure before opening an existing store, and refuse it if damaged
    /// (see `pages.rs`). LMDB keeps no page checksums and would follow a damaged pointer into a
    /// crash; the walk reads every page of the store once (about 0.4 s per GB in the page cache).
    pub verify_pages: bool,
    /// Most events the writer leaves out of the indexes. A commit that would leave more indexes
    /// all of them; until then queries match the newest events on their type and tag ids, kept
    /// in memory and listed per type and tag, so a query's cost does not grow with the lag.
    /// Commits that do not index write no index pages, and an indexing commit rewrites each
    /// type's and tag's newest chunk once for all its new positions. The price of a larger lag
    /// is a longer indexing commit when it comes (the groups behind it wait), more memory (a
    /// few MiB at the default), and more events read again at open. 0 indexes every commit's
    /// events at once.
    pub index_lag: u64,
    /// How long the writer records groups in its log before a checkpoint flushes the data file
    /// (`wal.rs`); one also comes after every MiB of records. Longer means fewer and larger
    /// flushes of the data file, a longer log to apply after a crash, and the data file growing
    /// by the pages the groups between two checkpoints replace (LMDB reuses them only after the
    /// next one).
    pub checkpoint_interval: Duration,
    /// Whether this process may append. One process appends to a store at a time: the one
    /// that holds `writer.lock` in its directory, taken at opening. With `false` the store is
    /// opened for reading and checking (`umadb check`, `umadb backup`), leaving the lock to a
    /// server, and appends are refused; opening still brings the store back from a crash when
    /// no other process has it open.
    pub appends: bool,
    /// Told how far the long steps of opening a large store have got (the page walk, a format
    /// upgrade), so that whoever opens it can say so while it waits. None by default.
    pub progress: Option<ProgressReporter>,
}

/// How far a long step of opening a store has got, for [`StoreOptions::progress`]. Each step
/// reports `done: 0` when it starts, then at intervals, and `done == total` when it ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpeningProgress {
    /// Walking LMDB's page structure ([`StoreOptions::verify_pages`]): pages reached, of the
    /// pages the store uses (free-listed ones included).
    WalkingPages { done: u64, total: u64 },
    /// Upgrading the store from on-disk format version `from`: index entries passed, of all of
    /// them.
    UpgradingIndex { from: u32, done: u64, total: u64 },
}

/// Receives [`OpeningProgress`] reports while a store opens (on the opening thread).
#[derive(Clone)]
pub struct ProgressReporter(Arc<dyn Fn(OpeningProgress) + Send + Sync>);

impl ProgressReporter {
    pub fn new(report: impl Fn(OpeningProgress) + Send + Sync + 'static) -> Self {
        ProgressReporter(Arc::new(report))
    }

    /// Hands `progress` to the receiver.
    pub fn report(&self, progress: OpeningProgress) {
        (self.0)(progress)
    }
}

impl std::fmt::Debug for ProgressReporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ProgressReporter")
    }
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            map_size: if cfg!(target_pointer_width = "64") {
                1 << 40
            } else {
                1 << 30
            },
            max_readers: 1024,
            max_group: 1024,
            verify_pages: true,
            index_lag: DEFAULT_INDEX_LAG,
            checkpoint_interval: wal::CHECKPOINT_INTERVAL,
            appends: true,
            progress: None,
        }
    }
}

/// Most entries a cursor walking a sorted list of keys through a database steps over to reach the
/// next key before it seeks instead: a step costs a comparison or two, a seek a descent from the
/// B-tree's root (`writer::add_to_index`, `intern::get_or_create_sorted`).
pub(crate) const WALK_LIMIT: usize = 16;

/// See [`StoreOptions::index_lag`].
pub const DEFAULT_INDEX_LAG: u64 = 8192;

type Db = Database<'static, Bytes, Bytes>;

/// The LMDB databases of a store (names in `umadb-core/DESIGN.md`).
#[derive(Clone, Copy)]
pub(crate) struct Dbs {
    pub meta: Db,
    pub events: Db,
    pub intern: Db,
    pub index: Db,
    pub tracking: Db,
    pub append_tracking: Db,
}

pub(crate) type Reply = Box<dyn FnOnce(Result<Position>) + Send>;

pub(crate) struct Job {
    pub request: AppendRequest,
    pub reply: Reply,
}

type CommitListener = Box<dyn Fn(Position) + Send + Sync>;

pub(crate) struct Shared {
    pub env: Env<WithoutTls>,
    pub dbs: Dbs,
    pub path: PathBuf,
    /// Last committed position (0 for an empty store).
    pub head: AtomicU64,
    pub closed: AtomicBool,
    /// Keys of the events past the indexed head, for the writer and queries alike.
    pub recent: recent::Recent,
    head_lock: Mutex<()>,
    head_changed: Condvar,
    listeners: Mutex<Vec<CommitListener>>,
    /// Tests only: the writer's next commit fails, as LMDB's can after its pages were written.
    #[cfg(test)]
    pub fail_next_commit: AtomicBool,
}

impl Shared {
    /// Publishes a new head to waiters and listeners, after the commit is durable.
    pub fn publish_head(&self, head: Position) {
        {
            let _guard = lock(&self.head_lock);
            self.head.store(head, Ordering::Release);
        }
        self.head_changed.notify_all();
        for listener in lock(&self.listeners).iter() {
            listener(head);
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// An open event store. Cheap to share behind an `Arc`; every method takes `&self`.
///
/// ```
/// use umadb_core::{AppendRequest, Event, Query, QueryItem, ReadRequest, Store};
/// let dir = tempfile::tempdir().unwrap();
/// let store = Store::open(dir.path().join("db")).unwrap();
/// let position = store
///     .append(AppendRequest {
///         events: vec![Event::new("Registered", ["student:1"], b"{}".to_vec())],
///         ..Default::default()
///     })
///     .unwrap();
/// assert_eq!(position, 1);
/// let query = Query::from_items([QueryItem::new(Vec::<String>::new(), ["student:1"])]);
/// let (events, head) = store
///     .read_all(ReadRequest { query, ..Default::default() })
///     .unwrap();
/// assert_eq!(events.len(), 1);
/// assert_eq!(head, Some(1));
/// ```
pub struct Store {
    shared: Arc<Shared>,
    pages: Option<PageSummary>,
    replayed: Option<JournalReplay>,
    upgraded_from: Option<u32>,
    /// The directory, locked shared while the store is open (see `open_with`).
    _dir_lock: std::fs::File,
    /// The lock of the one process appending, if this is it (see `open_with`).
    _writer_lock: std::fs::File,
    appends: bool,
    index_lag: u64,
    sender: Mutex<Option<mpsc::Sender<Job>>>,
    writer: Mutex<Option<JoinHandle<Result<()>>>>,
}

impl Store {
    /// Opens the store in directory `path`, creating it if missing.
    pub fn open(path: impl AsRef<Path>) -> Result<Store> {
        Self::open_with(path, StoreOptions::default())
    }

    pub fn open_with(path: impl AsRef<Path>, options: StoreOptions) -> Result<Store> {
        let path = path.as_ref().to_path_buf();
        if path.is_file() {
            return Err(Error::InvalidArgument(format!(
                "{} is a file; an UmaDB store is a directory",
                path.display()
            )));
        }
        create_directory(&path).map_err(|e| {
            Error::Io(format!(
                "cannot create store directory {}: {e}",
                path.display()
            ))
        })?;
        // Every process with the store open holds a shared lock on its directory. Only one that
        // has it alone may bring the store back from a crash (see `recover` below): while
        // another process has it open, the page cache they share holds every commit, and the
        // pages of commits after the last checkpoint may be in use by that process's readers.
        let dir_lock = std::fs::File::open(&path).map_err(|e| {
            Error::Io(format!(
                "cannot open store directory {}: {e}",
                path.display()
            ))
        })?;
        let lock_error =
            |e: std::io::Error| Error::Io(format!("cannot lock {}: {e}", path.display()));
        let alone = match dir_lock.try_lock() {
            Ok(()) => true,
            Err(std::fs::TryLockError::WouldBlock) => {
                // Shared, waiting if another process is bringing the store back from a crash
                // until it is done.
                dir_lock.lock_shared().map_err(lock_error)?;
                false
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(lock_error(e)),
        };
        // One process at a time appends (it keeps the log): the one holding this lock.
        let writer_lock = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path.join(WRITER_LOCK))
            .map_err(lock_error)?;
        let appends = options.appends
            && match writer_lock.try_lock() {
                Ok(()) => true,
                Err(std::fs::TryLockError::WouldBlock) if !alone => false,
                Err(std::fs::TryLockError::WouldBlock) => {
                    return Err(Error::Io(format!(
                        "cannot lock {}: held by a process that does not have the store open",
                        path.join(WRITER_LOCK).display()
                    )))
                }
                Err(std::fs::TryLockError::Error(e)) => return Err(lock_error(e)),
            };
        let data_file = path.join("data.mdb");
        let read_log = |e: std::io::Error| {
            Error::Io(format!("cannot read the log of {}: {e}", path.display()))
        };
        // After a clean close the data file is taken as it is.
        let recovery = if alone {
            wal::recover(&path)
                .map_err(read_log)?
                .filter(|recovery| !recovery.closed)
        } else {
            None
        };
        if let Some(recovery) = &recovery {
            if !data_file.exists() {
                return Err(Error::Corruption(format!(
                    "{}: the data file data.mdb is missing, but the log files beside it hold a \
                     checkpoint; restore the data file, or remove log-0 and log-1 to start an \
                     empty store",
                    path.display()
                )));
            }
            // LMDB's meta pages of commits after the checkpoint may have reached the disk
            // before their pages: LMDB opens at the checkpoint, and the log's records follow.
            pages::restore_metas(&data_file, &recovery.meta, recovery.txn_id)?;
        }
        if alone && !data_file.exists() {
            create_data_file(&path, &options)?;
        }
        let pages = if options.verify_pages && pages::LAYOUT_KNOWN && data_file.exists() {
            Some(pages::verify(&data_file, options.progress.as_ref())?)
        } else {
            None
        };
        let mut env_options = EnvOpenOptions::new().read_txn_without_tls();
        env_options
            .map_size(options.map_size)
            .max_dbs(8)
            .max_readers(options.max_readers);
        // SAFETY: NO_READ_AHEAD only changes madvise. LMDB's lock file guards against a second
        // process opening the store incompatibly. The opening's own commits (a new store's
        // databases, a format upgrade, the log's records applied) are made with LMDB's own
        // durability: pages flushed before the meta page that names them is written. With
        // NO_SYNC, a meta page could reach the disk before its pages, and a store without a log
        // checkpoint yet (new, or of a build before the log) has none to go back to.
        unsafe { env_options.flags(EnvFlags::NO_READ_AHEAD) };
        // SAFETY: heed requires that the same path is not opened twice in one process with
        // different options; heed detects a second open and returns EnvAlreadyOpened.
        let env = unsafe { env_options.open(&path) }.map_err(|e| open_error(&path, e))?;
        let (dbs, upgraded_from) = open_databases(&env, &path, options.progress.as_ref())?;
        let legacy = if alone && recovery.is_none() {
            journal::read_records(&path).map_err(read_log)?
        } else {
            Vec::new()
        };
        let replayed = match &recovery {
            Some(recovery) => {
                let head = {
                    let txn = env.read_txn().map_err(|e| open_error(&path, e))?;
                    last_position(&txn, &dbs)?
                };
                if head != recovery.head {
                    return Err(Error::Corruption(format!(
                        "{}: at its log's checkpoint (transaction {}) the store ends at position \
                         {head}, where the checkpoint says {}; the data file and the log files \
                         do not belong together",
                        path.display(),
                        recovery.txn_id,
                        recovery.head
                    )));
                }
                writer::replay_log(&env, &dbs, &recovery.records)
            }
            None if !legacy.is_empty() => {
                writer::replay(&env, &dbs, legacy, upgraded_from.is_some())
            }
            None => Ok(None),
        }
        .map_err(|e| match e {
            // The record itself is at fault: it will never apply.
            Error::Corruption(_) | Error::Integrity(_) | Error::InvalidArgument(_) => {
                Error::Corruption(format!(
                    "{}: a record of the store's log, of commits before a crash, cannot be \
                     applied ({}); moving the files log-0 and log-1 (or journal-0 and \
                     journal-1) out of the store opens it without those commits",
                    path.display(),
                    e.message()
                ))
            }
            // The disk or the system (a full disk, say): the records are kept for next time.
            _ => Error::Io(format!(
                "{}: the records of the store's log, of commits before a crash, could not be \
                 applied yet ({}); the store was not opened, and the records are kept: fix the \
                 cause and open it again",
                path.display(),
                e.message()
            )),
        })?;
        // The opening's own commits were flushed by LMDB. From here on, LMDB's file is left to
        // the page cache between checkpoints: each group is durable by its log record, and
        // opening brings the file back to the last checkpoint, whose pages the writer keeps
        // from reuse (`wal.rs`); commits outside the writer's recorded groups are flushed with
        // `force_sync`.
        // SAFETY: no transaction of this environment is open, and no other thread has it yet.
        unsafe { env.set_flags(EnvFlags::NO_SYNC, FlagSetMode::Enable) }
            .map_err(|e| open_error(&path, e))?;
        // The store's files are named in its directory durably before anything is appended: a
        // file's own flush does not promise its name. (At every opening: a store created by a
        // process that died before this line is not new now.)
        dir_lock
            .sync_all()
            .map_err(|e| Error::Io(format!("cannot flush directory {}: {e}", path.display())))?;
        // Shared from here on.
        if alone {
            dir_lock.lock_shared().map_err(lock_error)?;
        }
        let head = {
            let txn = env.read_txn().map_err(|e| open_error(&path, e))?;
            let head = last_position(&txn, &dbs)?;
            // The log is gapless from 1, so it holds exactly `head` records. LMDB counts a
            // database's entries apart from its pages: a count that disagrees means damaged page
            // structure hides records, and appending from a wrong head would reuse positions.
            let records = dbs.events.len(&txn).map_err(|e| open_error(&path, e))?;
            if records != head {
                return Err(Error::Corruption(format!(
                    "{} is damaged: it counts {records} event records but its last position is \
                     {head}; it is not served, to keep positions from being reused (run \
                     'umadb check' on it, and restore from a backup)",
                    path.display()
                )));
            }
            head
        };
        // A damaged record past the indexed head cannot be indexed: the store still opens and
        // serves what it can, and the writer refuses appends with the error (see writer::run).
        let tail = {
            let txn = env.read_txn().map_err(|e| open_error(&path, e))?;
            writer::Tail::load(&txn, &dbs, head)
        };
        // The first checkpoint comes before the first commit left to the page cache. A process
        // that does not append and brought the store back from a crash marks its checkpoint
        // closed: it commits nothing more, and the next opening takes the data file as it is.
        let recovered = recovery.is_some() || replayed.is_some();
        let log = if appends || recovered {
            let last_epoch = wal::newest_epoch(&path).map_err(read_log)?.unwrap_or(0);
            let mut log = writer::Log::start(&path, last_epoch, options.checkpoint_interval, &env)?;
            if appends {
                log.checkpoint(&env, head)?;
            } else {
                log.close(&env, head)?;
            }
            remove_journal_files(&path)?;
            appends.then_some(log)
        } else {
            None
        };
        let shared = Arc::new(Shared {
            env,
            dbs,
            path,
            head: AtomicU64::new(head),
            closed: AtomicBool::new(false),
            recent: recent::Recent::default(),
            head_lock: Mutex::new(()),
            head_changed: Condvar::new(),
            listeners: Mutex::new(Vec::new()),
            #[cfg(test)]
            fail_next_commit: AtomicBool::new(false),
        });
        let (sender, receiver) = mpsc::channel();
        let writer_shared = shared.clone();
        let max_group = options.max_group.max(1);
        let index_lag = options.index_lag;
        let writer = std::thread::Builder::new()
            .name("umadb-writer".into())
            .spawn(move || writer::run(writer_shared, receiver, max_group, index_lag, tail, log))
            .map_err(|e| Error::Io(format!("cannot start the writer thread: {e}")))?;
        Ok(Store {
            shared,
            pages,
            replayed,
            upgraded_from,
            _dir_lock: dir_lock,
            _writer_lock: writer_lock,
            appends,
            index_lag,
            sender: Mutex::new(Some(sender)),
            writer: Mutex::new(Some(writer)),
        })
    }

    /// Whether this process appends to the store (see [`StoreOptions::appends`]): false when
    /// opened not to, or while another process holds its `writer.lock`.
    pub fn appends(&self) -> bool {
        self.appends
    }

    /// The directory the store lives in.
    pub fn path(&self) -> &Path {
        &self.shared.path
    }

    /// Most events the indexes may trail the log by, as opened (see
    /// [`StoreOptions::index_lag`]).
    pub fn index_lag(&self) -> u64 {
        self.index_lag
    }

    /// What the page walk at open found, when the store existed and was walked.
    pub fn page_summary(&self) -> Option<PageSummary> {
        self.pages
    }

    /// The commit that opening applied again from the journal, if any: the store's last commit
    /// before a crash of the machine, answered but with its meta page not on disk yet.
    pub fn journal_replay(&self) -> Option<JournalReplay> {
        self.replayed
    }

    /// The on-disk format version the store had before this opening upgraded it to the
    /// current one, if it did (see `umadb-core/DESIGN.md`, "Format versions").
    pub fn upgraded_from(&self) -> Option<u32> {
        self.upgraded_from
    }

    /// Walks the page structure of the store in directory `path` without opening it, as
    /// [`Store::open`] does first; `Err(Corruption)` names what is damaged.
    pub fn verify_pages(path: impl AsRef<Path>) -> Result<PageSummary> {
        pages::verify(&path.as_ref().join("data.mdb"), None)
    }

    /// The last recorded position, or `None` for an empty store.
    pub fn head(&self) -> Option<Position> {
        nonzero(self.shared.head.load(Ordering::Acquire))
    }

    /// Appends atomically and durably; returns the position of the last event written (0 for an
    /// empty append, or the recorded position for an idempotent retry).
    pub fn append(&self, request: AppendRequest) -> Result<Position> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.submit_append(
            request,
            Box::new(move |result| {
                let _ = tx.send(result);
            }),
        )?;
        rx.recv()
            .map_err(|_| Error::Internal("the writer stopped before answering".into()))?
    }

    /// Queues an append for the writer thread; `reply` is called once the group holding it has
    /// been committed (or has failed). Use this from async code with a oneshot channel.
    pub fn submit_append(
        &self,
        request: AppendRequest,
        reply: Box<dyn FnOnce(Result<Position>) + Send>,
    ) -> Result<()> {
        let sender = lock(&self.sender);
        let Some(sender) = sender.as_ref() else {
            return Err(Error::Io("the store is closed".into()));
        };
        sender
            .send(Job { request, reply })
            .map_err(|_| Error::Io("the store is closed".into()))
    }

    /// Starts a read. Events are fetched lazily in batches, each in a fresh read transaction.
    pub fn read(&self, request: ReadRequest) -> Result<Reader> {
        Reader::new(self.shared.clone(), request)
    }

    /// Reads everything a request matches into memory; returns the events and the head.
    pub fn read_all(
        &self,
        request: ReadRequest,
    ) -> Result<(Vec<SequencedEvent>, Option<Position>)> {
        let mut reader = self.read(request)?;
        let mut events = Vec::new();
        while let Some(batch) = reader.next_batch(1000)? {
            events.extend(batch);
        }
        Ok((events, reader.head()))
    }

    /// Up to `max` events matching `query` with positions in `from..=to`, ascending, in one read
    /// transaction. Subscriptions page through the log with this.
    pub fn read_range(
        &self,
        query: &Query,
        from: Position,
        to: Position,
        max: usize,
    ) -> Result<Vec<SequencedEvent>> {
        let mut events = Vec::new();
        self.read_range_with(query, from, to, max, |event| {
            events.push(event.to_sequenced())
        })?;
        Ok(events)
    }

    /// [`Store::read_range`] visiting each event where it is stored instead of copying it out;
    /// returns how many were visited and the position of the last.
    pub fn read_range_with(
        &self,
        query: &Query,
        from: Position,
        to: Position,
        max: usize,
        visit: impl FnMut(&SequencedEventRef<'_>),
    ) -> Result<(usize, Option<Position>)> {
        let visited = read::read_range_with(&self.shared, query, from, to, false, max, visit)?;
        Ok((visited.count, visited.last))
    }

    /// The position recorded for `source`, if any.
    pub fn tracking_position(&self, source: &str) -> Result<Option<Position>> {
        let txn = self.shared.env.read_txn().map_err(storage_error)?;
        tracking_position(&txn, &self.shared.dbs, source)
    }

    /// Blocks until the head exceeds `after`, the store closes, or `timeout` passes; returns the
    /// head then.
    pub fn wait_for_head(&self, after: Position, timeout: Duration) -> Option<Position> {
        let guard = lock(&self.shared.head_lock);
        let (_guard, _) = self
            .shared
            .head_changed
            .wait_timeout_while(guard, timeout, |_| {
                self.shared.head.load(Ordering::Acquire) <= after
                    && !self.shared.closed.load(Ordering::Acquire)
            })
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        self.head()
    }

    /// Calls `listener` with the new head after every durable commit that moved it (from the
    /// writer thread: keep it short and non-blocking).
    pub fn on_commit(&self, listener: impl Fn(Position) + Send + Sync + 'static) {
        lock(&self.shared.listeners).push(Box::new(listener));
    }

    /// Verifies the whole store in one read snapshot (safe while appends continue): checksums,
    /// gapless positions, and index agreement, on two threads when the log is long. `progress`
    /// is called with the number of events examined, in steps of 100,000.
    pub fn check(&self, progress: impl FnMut(u64)) -> Result<CheckReport> {
        let env = &self.shared.env;
        let txn = env.read_txn().map_err(storage_error)?;
        // A second transaction on the same snapshot lets the check run on two threads; one
        // opened after a commit sees another snapshot, and the check then runs on one.
        let helper = env.read_txn().ok().filter(|helper| helper.id() == txn.id());
        check::check(&txn, helper, &self.shared.dbs, progress)
    }

    /// Writes a consistent copy of the store (compacted) into directory `to`, which must not
    /// hold a store already. Safe while appends continue: the copy is one read snapshot.
    pub fn backup(&self, to: impl AsRef<Path>) -> Result<()> {
        let to = to.as_ref();
        if to.join("data.mdb").exists() {
            return Err(Error::InvalidArgument(format!(
                "{} already holds a store; back up into a new directory",
                to.display()
            )));
        }
        create_directory(to)
            .map_err(|e| Error::Io(format!("cannot create {}: {e}", to.display())))?;
        let copy = to.join("data.mdb");
        let failed = |e: String| Error::Io(format!("backup to {} failed: {e}", to.display()));
        self.shared
            .env
            .copy_to_path(&copy, heed::CompactionOption::Enabled)
            .map_err(|e| failed(e.to_string()))?;
        // LMDB writes the copy past the page cache (O_DIRECT) and never flushes it: neither the
        // disk's cache nor the file's size and extents are on disk until it is flushed here,
        // with its name.
        std::fs::File::open(&copy)
            .and_then(|file| file.sync_all())
            .and_then(|()| sync_directory(to))
            .map_err(|e| failed(e.to_string()))
    }

    /// Stops the writer after it has answered every queued append. Later appends fail.
    ///
    /// An error says the store was not closed cleanly: its closing checkpoint could not be
    /// written (or the log had failed before), or the data file could not be flushed. Every
    /// acknowledged append is still in the log, and the next opening applies it. Closing a
    /// closed store does nothing and succeeds.
    pub fn close(&self) -> Result<()> {
        lock(&self.sender).take();
        let mut outcome = Ok(());
        if let Some(writer) = lock(&self.writer).take() {
            outcome = writer.join().unwrap_or_else(|_| {
                Err(Error::Internal(
                    "the writer thread stopped abnormally while closing".into(),
                ))
            });
            // The writer's last checkpoint flushed every commit; a failed one is retried here.
            if let Err(e) = self.shared.env.force_sync() {
                outcome = outcome.and(Err(Error::Io(format!("cannot flush the data file: {e}"))));
            }
        }
        self.shared.closed.store(true, Ordering::Release);
        self.shared.head_changed.notify_all();
        outcome
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        // Whoever needs to know how closing went calls `close` first.
        let _ = self.close();
    }
}

/// (event records decoded, index chunk loads) on the calling thread since the last
/// [`reset_debug_counters`]: lets tests check that a query touches only what it must.
#[doc(hidden)]
pub fn debug_counters() -> (u64, u64) {
    (
        read::RECORDS_DECODED.with(std::cell::Cell::get),
        eval::CHUNKS_LOADED.with(std::cell::Cell::get),
    )
}

/// Index lookups (B-tree descents into the index) of query walks on the calling thread since
/// the last [`reset_debug_counters`].
#[doc(hidden)]
pub fn debug_index_lookups() -> u64 {
    eval::INDEX_LOOKUPS.with(std::cell::Cell::get)
}

#[doc(hidden)]
pub fn reset_debug_counters() {
    read::RECORDS_DECODED.with(|n| n.set(0));
    eval::CHUNKS_LOADED.with(|n| n.set(0));
    eval::INDEX_LOOKUPS.with(|n| n.set(0));
}

pub(crate) fn nonzero(p: Position) -> Option<Position> {
    (p != 0).then_some(p)
}

/// The LMDB databases of a store, in the order of [`Dbs`]' fields.
const DB_NAMES: [&str; 6] = [
    "meta",
    "events",
    "intern",
    "index",
    "tracking",
    "append_tracking",
];

/// Opens the databases and checks the format stamp, creating both in a new store, in one write
/// transaction: an environment that is not an UmaDB store is refused before anything is written.
/// Also the format version a store of an earlier version had, when it was upgraded (that
/// transaction then committed, and was flushed in full).
fn open_databases(
    env: &Env<WithoutTls>,
    path: &Path,
    progress: Option<&ProgressReporter>,
) -> Result<(Dbs, Option<u32>)> {
    let txn = env.write_txn().map_err(|e| open_error(path, e))?;
    let mut upgraded_from = None;
    let opened = env
        .create_databases_and_commit(txn, |opener, txn| -> heed::Result<_> {
            // The unnamed database lists every named one; anything else there is foreign data.
            let main = opener.create_database::<Bytes, Bytes>(txn, None)?;
            for entry in main.iter(txn)? {
                let (name, _) = entry?;
                if !DB_NAMES.iter().any(|known| known.as_bytes() == name) {
                    return Ok(CommitOrAbort::Abort(Error::Corruption(format!(
                        "{} is an LMDB environment holding {:?}, which is not part of an UmaDB store; refusing to open it",
                        path.display(),
                        String::from_utf8_lossy(name)
                    ))));
                }
            }
            let [meta, events, intern, index, tracking, append_tracking] =
                DB_NAMES.map(|name| opener.create_database::<Bytes, Bytes>(txn, Some(name)));
            let (meta, events, intern, index, tracking, append_tracking) =
                (meta?, events?, intern?, index?, tracking?, append_tracking?);
            match check_format(txn, [meta, events, index], path, progress) {
                Ok(from) => upgraded_from = from,
                Err(e) => return Ok(CommitOrAbort::Abort(e)),
            }
            Ok(CommitOrAbort::Commit([
                meta,
                events,
                intern,
                index,
                tracking,
                append_tracking,
            ]))
        })
        .map_err(|e| open_error(path, e))?;
    match opened {
        CommitOrAbort::Commit([meta, events, intern, index, tracking, append_tracking]) => {
            if upgraded_from.is_some() {
                // The store opens with NO_META_SYNC; the upgrade is made durable at once.
                env.force_sync().map_err(|e| open_error(path, e))?;
            }
            let dbs = Dbs {
                meta,
                events,
                intern,
                index,
                tracking,
                append_tracking,
            };
            Ok((dbs, upgraded_from))
        }
        CommitOrAbort::Abort(e) => Err(e),
    }
}

/// Checks the format stamp, writing it into a new store, and upgrades a store of an earlier
/// version (returning that version).
fn check_format(
    txn: &mut RwTxn,
    [meta, events, index]: [Database<'_, Bytes, Bytes>; 3],
    path: &Path,
    progress: Option<&ProgressReporter>,
) -> Result<Option<u32>> {
    match meta.get(txn, META_FORMAT).map_err(storage_error)? {
        Some(stamp) => {
            if stamp.len() != 12 || &stamp[..8] != FORMAT_MAGIC {
                return Err(Error::Corruption(format!(
                    "{} does not carry an UmaDB format stamp; it is not an UmaDB store or it is damaged",
                    path.display()
                )));
            }
            let version = format::decode_u32(&stamp[8..], "format version")?;
            if version == 1 {
                // Version 1 indexed every event: the upgrade records that the indexes cover the
                // whole log. It commits with the rest of the opening transaction, or not at all.
                let head = match events.last(txn).map_err(storage_error)? {
                    Some((key, _)) => format::decode_position_key(key)?,
                    None => 0,
                };
                meta.put(txn, META_INDEXED_HEAD, &head.to_be_bytes())
                    .map_err(storage_error)?;
            } else if version != 2 && version != FORMAT_VERSION {
                return Err(Error::Corruption(format!(
                    "{} has on-disk format version {version}; this build reads version {FORMAT_VERSION}",
                    path.display()
                )));
            }
            if version == FORMAT_VERSION {
                return Ok(None);
            }
            // Versions 1 and 2 keep every chunk in the roaring form, which version 3 reads as
            // it is, and a key's newest chunk after its others, which version 3 keeps under its
            // open-chunk key.
            let report = |done, total| {
                if let Some(progress) = progress {
                    progress.report(OpeningProgress::UpgradingIndex {
                        from: version,
                        done,
                        total,
                    });
                }
            };
            open_newest_chunks(txn, index, report)?;
            write_stamp(txn, meta)?;
            Ok(Some(version))
        }
        None => {
            if !events.is_empty(txn).map_err(storage_error)? {
                return Err(Error::Corruption(format!(
                    "{} holds events but no format stamp; it is damaged",
                    path.display()
                )));
            }
            meta.put(txn, META_INDEXED_HEAD, &0u64.to_be_bytes())
                .map_err(storage_error)?;
            write_stamp(txn, meta)?;
            Ok(None)
        }
    }
}

/// Moves each index key's newest chunk under its open-chunk key (format version 3), a batch of
/// keys at a time so that memory stays bounded however large the index. Reports the index
/// entries passed, of all of them, at the start and after each batch.
fn open_newest_chunks(
    txn: &mut RwTxn,
    index: Database<'_, Bytes, Bytes>,
    report: impl Fn(u64, u64),
) -> Result<()> {
    const KEYS_PER_BATCH: usize = 10_000;
    let total = index.len(txn).map_err(storage_error)?;
    let mut passed = 0;
    report(0, total);
    let mut after: Option<Vec<u8>> = None;
    loop {
        // Per key of the batch: its newest chunk's key and bytes, and its first position.
        let mut batch: Vec<([u8; format::INDEX_KEY_LEN], Vec<u8>, Position)> = Vec::new();
        let mut last_seen: Option<Vec<u8>> = None;
        let range = match &after {
            Some(key) => (Bound::Excluded(key.as_slice()), Bound::Unbounded),
            None => (Bound::Unbounded, Bound::Unbounded),
        };
        for entry in index.range(txn, &range).map_err(storage_error)? {
            let (key, value) = entry.map_err(storage_error)?;
            let key: [u8; format::INDEX_KEY_LEN] = key.try_into().map_err(|_| {
                format::corrupt(format!(
                    "the store is damaged: the index holds a key of {} bytes, where index keys \
                     are {}",
                    key.len(),
                    format::INDEX_KEY_LEN
                ))
            })?;
            if key[0] & format::OPEN_CHUNK != 0 {
                // The open chunks sort after every other key: these are the ones moved so far.
                break;
            }
            if let Some((newest, bytes, _)) = batch.last_mut().filter(|b| b.0[..5] == key[..5]) {
                *newest = key;
                *bytes = value.to_vec();
            } else if batch.len() == KEYS_PER_BATCH {
                break;
            } else {
                let first = format::decode_u64(&key[5..], "an index key's base")?;
                batch.push((key, value.to_vec(), first));
            }
            last_seen = Some(key.to_vec());
            passed += 1;
        }
        let Some(last_seen) = last_seen else {
            if passed < total {
                // Entries under open-chunk keys already (none in a store of an earlier version).
                report(total, total);
            }
            return Ok(());
        };
        let mut value = Vec::new();
        for (key, bytes, first) in batch {
            let base = format::decode_u64(&key[5..], "an index key's base")?;
            let kind = Kind::from_byte(key[0]).ok_or_else(|| {
                format::corrupt(format!(
                    "the store is damaged: the index holds a key of unknown kind {}",
                    key[0]
                ))
            })?;
            let id = u32::from_be_bytes([key[1], key[2], key[3], key[4]]);
            let open_key = format::open_chunk_key(kind, id);
            format::encode_open_chunk(base, first, &bytes, &mut value);
            index.delete(txn, &key).map_err(storage_error)?;
            index.put(txn, &open_key, &value).map_err(storage_error)?;
        }
        report(passed, total);
        after = Some(last_seen);
    }
}

fn write_stamp(txn: &mut RwTxn, meta: Database<'_, Bytes, Bytes>) -> Result<()> {
    let mut stamp = FORMAT_MAGIC.to_vec();
    stamp.extend_from_slice(&FORMAT_VERSION.to_be_bytes());
    meta.put(txn, META_FORMAT, &stamp).map_err(storage_error)
}

/// The last position the indexes cover (see [`StoreOptions::index_lag`]).
pub(crate) fn indexed_head(txn: &RoTxn, dbs: &Dbs) -> Result<Position> {
    match dbs
        .meta
        .get(txn, META_INDEXED_HEAD)
        .map_err(storage_error)?
    {
        Some(bytes) => format::decode_u64(bytes, "the indexed head"),
        None => Err(Error::Corruption(
            "the store is damaged: its meta database has no indexed head".into(),
        )),
    }
}

/// Flushes `dir`'s entries (`""`, the parent of a relative name, is the working directory).
fn sync_directory(dir: &Path) -> std::io::Result<()> {
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    std::fs::File::open(dir)?.sync_all()
}

/// Creates `dir` and any missing parents, each new name flushed into its parent.
fn create_directory(dir: &Path) -> std::io::Result<()> {
    let missing: Vec<&Path> = dir
        .ancestors()
        .take_while(|a| !a.as_os_str().is_empty() && !a.exists())
        .collect();
    std::fs::create_dir_all(dir)?;
    for created in missing {
        sync_directory(created.parent().unwrap_or(Path::new("")))?;
    }
    Ok(())
}

/// Where a new store's data file is made before it is renamed into the store's directory.
const CREATING_DIR: &str = "creating";

/// Makes a new store's data file so that a crash at any moment leaves either no data file or a
/// whole one: LMDB makes it in a directory of its own (`creating`, whatever a crash left there
/// removed first) and commits the databases and the format stamp with its own durability
/// (pages flushed, then the meta page); the file is then renamed into the store's directory,
/// which is flushed. Made in place, a crash before LMDB's first commit was on disk could leave
/// torn meta pages, which no opening can tell from damage.
fn create_data_file(path: &Path, options: &StoreOptions) -> Result<()> {
    let creating = path.join(CREATING_DIR);
    let io = |what: &str, e: std::io::Error| {
        Error::Io(format!("cannot {what} {}: {e}", creating.display()))
    };
    match std::fs::remove_dir_all(&creating) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io("remove", e)),
    }
    std::fs::create_dir(&creating).map_err(|e| io("create", e))?;
    {
        let mut env_options = EnvOpenOptions::new().read_txn_without_tls();
        env_options.map_size(options.map_size).max_dbs(8);
        // SAFETY: a directory of this process's own, opened once.
        let env = unsafe { env_options.open(&creating) }.map_err(|e| open_error(&creating, e))?;
        open_databases(&env, &creating, None)?;
        env.prepare_for_closing().wait();
    }
    std::fs::rename(creating.join("data.mdb"), path.join("data.mdb"))
        .map_err(|e| io("move the new data file out of", e))?;
    sync_directory(path)
        .map_err(|e| Error::Io(format!("cannot flush directory {}: {e}", path.display())))?;
    std::fs::remove_dir_all(&creating).map_err(|e| io("remove", e))
}

/// The log's file that says one process is appending to the store (`flock`ed while it is open).
const WRITER_LOCK: &str = "writer.lock";

/// The last position of the log, 0 when it is empty.
fn last_position(txn: &RoTxn, dbs: &Dbs) -> Result<Position> {
    match dbs.events.last(txn).map_err(storage_error)? {
        Some((key, _)) => format::decode_position_key(key),
        None => Ok(0),
    }
}

/// Removes the journal files a build before the log left, once a checkpoint made them stale.
fn remove_journal_files(dir: &Path) -> Result<()> {
    let mut removed = false;
    for slot in 0..2 {
        match std::fs::remove_file(journal::file_path(dir, slot)) {
            Ok(()) => removed = true,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::Io(format!("cannot remove an old journal file: {e}"))),
        }
    }
    if removed {
        sync_directory(dir)
            .map_err(|e| Error::Io(format!("cannot flush {}: {e}", dir.display())))?;
    }
    Ok(())
}

fn open_error(path: &Path, e: heed::Error) -> Error {
    match e {
        heed::Error::Mdb(heed::MdbError::Invalid)
        | heed::Error::Mdb(heed::MdbError::Corrupted)
        | heed::Error::Mdb(heed::MdbError::PageNotFound)
        | heed::Error::Mdb(heed::MdbError::Incompatible) => Error::Corruption(format!(
            "{} is not an UmaDB store or it is damaged ({e})",
            path.display()
        )),
        heed::Error::Mdb(heed::MdbError::VersionMismatch) => Error::Corruption(format!(
            "{} was written by an incompatible LMDB version ({e})",
            path.display()
        )),
        heed::Error::EnvAlreadyOpened => Error::InvalidArgument(format!(
            "{} is already open in this process",
            path.display()
        )),
        other => Error::Io(format!("cannot open store at {}: {other}", path.display())),
    }
}

/// Maps an LMDB failure during operation.
pub(crate) fn storage_error(e: heed::Error) -> Error {
    match e {
        heed::Error::Mdb(heed::MdbError::Corrupted)
        | heed::Error::Mdb(heed::MdbError::PageNotFound)
        | heed::Error::Mdb(heed::MdbError::Invalid) => {
            Error::Corruption(format!("the store is damaged: {e}"))
        }
        heed::Error::Mdb(heed::MdbError::MapFull) => Error::Io(format!(
            "the store reached its configured map size; reopen it with a larger map size ({e})"
        )),
        other => Error::Io(format!("storage failure: {other}")),
    }
}

pub(crate) fn tracking_position(txn: &RoTxn, dbs: &Dbs, source: &str) -> Result<Option<Position>> {
    let Some(id) = intern::lookup(txn, dbs, Kind::Source, source)? else {
        return Ok(None);
    };
    match dbs
        .tracking
        .get(txn, &id.to_be_bytes())
        .map_err(storage_error)?
    {
        Some(bytes) => Ok(Some(format::decode_u64(bytes, "tracking position")?)),
        None => Ok(None),
    }
}

/// The tracking info of the append that wrote `position`, with that append's first and last
/// positions.
pub(crate) fn append_tracking(
    txn: &RoTxn,
    dbs: &Dbs,
    position: Position,
) -> Result<(Position, Position, TrackingInfo)> {
    let found = dbs
        .append_tracking
        .get_greater_than_or_equal_to(txn, &format::position_key(position))
        .map_err(storage_error)?;
    if let Some((key, value)) = found {
        let last = format::decode_position_key(key)?;
        let (first, info) = format::decode_append_tracking(value)?;
        if first <= position {
            return Ok((first, last, info));
        }
    }
    Err(Error::Corruption(format!(
        "event at position {position} is marked as tracked but its tracking record is missing"
    )))
}
