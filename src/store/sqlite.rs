//! SQLite through rusqlite, on the caller's thread: idle read connections, and the one writer
//! connection with group commit.
//!
//! Group commit: each write transaction is a savepoint inside a transaction shared with the
//! writes queued behind it. The last of a batch (nobody else waiting, or the batch full) commits
//! it for all; every member answers only after that commit, so a 2xx still means committed. One
//! WAL write then carries the pages that a run of inserts share (the tables' and indexes' last
//! pages), where each write committing alone rewrote them all.

use super::StoreError;
use super::record::{Column, FromRecord, Record};
use super::row_cache::{Caches, Invalidate};
use super::sql::{Param, SqlBuilder};
use anyhow::{Context, anyhow};
use std::cell::Cell;
use std::ffi::c_int;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};

pub(super) const PRAGMAS: &str =
    "PRAGMA journal_mode = WAL; PRAGMA busy_timeout = 10000; PRAGMA foreign_keys = ON;";

/// A reader's page cache: 8 MiB, four times SQLite's default. A customer's invitation list reads
/// a row from each of a few hundred pages spread over the table; with the default those pages
/// no longer fitted, and every list read them again from the file (p50 4.4 ms instead of 2.9 at
/// 180 lists/s). The writer keeps the default. (The writer set WAL mode; query_only makes a stray
/// write an error here.)
const READER_PRAGMAS: &str =
    "PRAGMA busy_timeout = 10000; PRAGMA query_only = 1; PRAGMA cache_size = -8192;";

/// SQLite steps a read may take on the calling thread before it moves to a blocking thread
/// (`Readers::with_step_budget`). A customer's first page of 100 with its count takes about
/// 16,000 steps, 52,000 when the customer has 60,000 invitations (the count's union of capped
/// walks is most of it); a page of 1000 takes 35,000-45,000. A list sorted on an unindexed
/// column or filtered on one takes millions. A step takes 13-31 ns (a merged walk, a sort, a
/// scan), so the budget holds a runtime thread for at most about 4.5 ms, and only once per list
/// that exceeds it.
const INLINE_STEPS: c_int = 150_000;

/// How often SQLite calls the progress handler that counts a read's steps against its budget.
const STEPS_PER_CHECK: c_int = 1_000;

/// Most write transactions one commit carries: bounds how long the first waits for the last.
const MAX_BATCH: usize = 32;

/// How long a member waits for its batch's commit before committing it itself: only reached when
/// the write queued behind it went away without taking its turn.
const BATCH_WAIT: Duration = Duration::from_millis(50);

/// Creates the database file of a `sqlite:` URL that asks for it (`mode=rwc`), empty and
/// readable by the owner only, before SQLite would create it with the umask's mode: it holds
/// personal data. SQLite gives the `-wal` and `-shm` files the database file's mode.
pub(super) fn create_private_database(url: &str) -> anyhow::Result<()> {
    use std::str::FromStr;
    let options = sqlx::sqlite::SqliteConnectOptions::from_str(url)?;
    let path = options.get_filename();
    let creates = url
        .split_once('?')
        .is_some_and(|(_, query)| query.split('&').any(|pair| pair == "mode=rwc"));
    if creates && !path.as_os_str().is_empty() && path != std::path::Path::new(":memory:") {
        crate::private_files::create_empty_file(path)
            .with_context(|| format!("creating {}", path.display()))?;
    }
    Ok(())
}

fn open(path: &std::path::Path, what: &str) -> Result<rusqlite::Connection, StoreError> {
    let conn = rusqlite::Connection::open_with_flags(
        path,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .with_context(|| format!("opening {} for {what}", path.display()))?;
    // Room for the lists' statements, whose text varies with the filter.
    conn.set_prepared_statement_cache_capacity(64);
    // Plans that do not depend on the values bound: otherwise a statement whose plan peeked at
    // one (a LIMIT, say) is compiled again every time it is bound.
    conn.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
        true,
    )?;
    Ok(conn)
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // The guarded values stay valid if a holder panicked: they are only taken and put back.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Idle read connections, opened on demand.
pub(super) struct Readers {
    path: PathBuf,
    idle: Mutex<Vec<rusqlite::Connection>>,
    max_idle: usize,
    /// Reads off the runtime's threads at once (`with_blocking`). Without a bound, a burst of
    /// lists would each open, and then close, a connection of its own.
    blocking: Arc<Semaphore>,
}

impl std::fmt::Debug for Readers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Readers")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl Readers {
    /// Up to `max_blocking` reads run on blocking threads at once (twice the cores); the
    /// runtime's own threads (one per core) read besides them, and that many connections stay
    /// open, each with its page cache.
    pub(super) fn new(path: PathBuf, max_blocking: usize) -> Self {
        Self {
            path,
            idle: Mutex::new(Vec::new()),
            max_idle: max_blocking.saturating_add(max_blocking.div_ceil(2)),
            blocking: Arc::new(Semaphore::new(max_blocking)),
        }
    }

    /// `with` for reads that usually visit a few hundred rows but may visit millions (a list
    /// sorted on an unindexed column, a filter no index serves). `read` first runs on the
    /// calling thread, where SQLite interrupts it after `INLINE_STEPS` steps of its virtual
    /// machine; one interrupted runs again from the start on a blocking thread
    /// (`with_blocking`). Most lists so skip the hand-off to a blocking thread and back, and a
    /// runtime thread is held up for no more than the budget.
    pub(super) async fn with_step_budget<T: Send + 'static>(
        self: &Arc<Self>,
        read: impl Fn(&rusqlite::Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let interrupted = Arc::new(AtomicBool::new(false));
        let inline = self.with(|conn| {
            let mut checks_left = INLINE_STEPS / STEPS_PER_CHECK;
            let flag = Arc::clone(&interrupted);
            conn.progress_handler(
                STEPS_PER_CHECK,
                Some(move || {
                    checks_left = checks_left.saturating_sub(1);
                    if checks_left == 0 {
                        flag.store(true, Ordering::Relaxed);
                    }
                    checks_left == 0
                }),
            )?;
            let result = read(conn);
            conn.progress_handler(0, None::<fn() -> bool>)?;
            Ok(result)
        })?;
        if interrupted.load(Ordering::Relaxed) {
            self.with_blocking(read).await
        } else {
            inline
        }
    }

    /// `with` on a blocking thread, for reads that may visit many rows.
    pub(super) async fn with_blocking<T: Send + 'static>(
        self: &Arc<Self>,
        read: impl FnOnce(&rusqlite::Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let permit = Arc::clone(&self.blocking)
            .acquire_owned()
            .await
            .context("the SQLite readers are closed")?;
        let readers = Arc::clone(self);
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            readers.with(read)
        })
        .await
        .context("the SQLite read task stopped")?
    }

    /// Runs `read` on an idle connection (or a new one), which goes back to the idle list.
    pub(super) fn with<T>(
        &self,
        read: impl FnOnce(&rusqlite::Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let idle = lock(&self.idle).pop();
        let conn = match idle {
            Some(conn) => conn,
            None => {
                let conn = open(&self.path, "reading")?;
                conn.execute_batch(READER_PRAGMAS)?;
                conn
            }
        };
        let result = read(&conn);
        let mut idle = lock(&self.idle);
        if idle.len() < self.max_idle {
            idle.push(conn);
        }
        result
    }

    pub(super) fn close(&self) {
        lock(&self.idle).clear();
    }
}

/// The outcome of a batch's commit, sent to its members.
type Outcome = Option<Result<(), String>>;

/// The transaction that the current writes share.
struct Batch {
    id: u64,
    /// Writes released into it so far.
    members: usize,
    done: watch::Sender<Outcome>,
}

#[derive(Default)]
struct WriterState {
    /// Here between turns; with the turn's holder during its turn.
    conn: Option<rusqlite::Connection>,
    batch: Option<Batch>,
    batches: u64,
}

/// The one writer connection, opened on first use (and again after a failure lost it). One
/// holder at a time: the semaphore queues the others without blocking threads.
pub(super) struct Writer {
    path: PathBuf,
    synchronous: &'static str,
    state: Mutex<WriterState>,
    turn: Arc<Semaphore>,
    /// Writes queued for a turn: while there are any, a batch stays open for them.
    waiting: AtomicUsize,
    /// Row caches that the batches' commits keep current.
    caches: Arc<Caches>,
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// Counts a write as waiting until it gets its turn (or gives up).
struct Waiting<'a>(&'a AtomicUsize);

impl<'a> Waiting<'a> {
    fn new(count: &'a AtomicUsize) -> Self {
        count.fetch_add(1, Ordering::SeqCst);
        Self(count)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Writer {
    pub(super) fn new(path: PathBuf, synchronous: &'static str) -> Self {
        Self {
            path,
            synchronous,
            state: Mutex::new(WriterState::default()),
            turn: Arc::new(Semaphore::new(1)),
            waiting: AtomicUsize::new(0),
            caches: Arc::default(),
        }
    }

    /// The database file.
    pub(super) fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// Keeps `cache` current: emptied by every commit that changed its table.
    pub(super) fn register(&self, cache: Arc<dyn Invalidate>) {
        self.caches.register(cache);
    }

    fn connection(&self, state: &mut WriterState) -> Result<rusqlite::Connection, StoreError> {
        match state.conn.take() {
            Some(conn) => Ok(conn),
            None => {
                let conn = open(&self.path, "writing")?;
                conn.execute_batch(PRAGMAS)?;
                conn.execute_batch(self.synchronous)?;
                let caches = Arc::clone(&self.caches);
                conn.update_hook(Some(
                    move |_: rusqlite::hooks::Action, _: &str, table: &str, _: i64| {
                        caches.changed(table);
                    },
                ))?;
                Ok(conn)
            }
        }
    }

    /// Starts a write transaction: a savepoint in the open batch, or in a new one that takes the
    /// database's write lock at once (BEGIN IMMEDIATE).
    pub(super) async fn begin(self: &Arc<Self>) -> Result<WriteTurn, StoreError> {
        let waiting = Waiting::new(&self.waiting);
        let permit = Arc::clone(&self.turn)
            .acquire_owned()
            .await
            .context("the SQLite writer is closed")?;
        drop(waiting);
        let mut state = lock(&self.state);
        let conn = self.connection(&mut state)?;
        let joined = match &state.batch {
            Some(batch) => Ok(batch.id),
            None => conn.execute_batch("BEGIN IMMEDIATE").map(|()| {
                state.batches += 1;
                let id = state.batches;
                state.batch = Some(Batch {
                    id,
                    members: 0,
                    done: watch::Sender::new(None),
                });
                id
            }),
        };
        let started = joined.and_then(|batch| {
            conn.execute_batch("SAVEPOINT write")?;
            Ok(batch)
        });
        match started {
            Ok(batch) => Ok(WriteTurn {
                writer: Arc::clone(self),
                conn: Some(conn),
                batch,
                turn: Some(permit),
            }),
            Err(err) => {
                // A batch that could not take a savepoint is finished for its members.
                self.end_turn(&mut state, conn, false);
                Err(err.into())
            }
        }
    }

    /// Puts the connection back at the end of a turn, and commits the batch unless another
    /// write is queued to join it. Returns the batch's outcome to wait for when `joined`.
    fn end_turn(
        &self,
        state: &mut WriterState,
        conn: rusqlite::Connection,
        joined: bool,
    ) -> Option<watch::Receiver<Outcome>> {
        let receiver = match &mut state.batch {
            Some(batch) if joined => {
                batch.members += 1;
                Some(batch.done.subscribe())
            }
            _ => None,
        };
        let room = state
            .batch
            .as_ref()
            .is_some_and(|batch| batch.members < MAX_BATCH);
        if conn.is_autocommit() || !room || self.waiting.load(Ordering::SeqCst) == 0 {
            close_batch(state, &conn, &self.caches);
        }
        state.conn = Some(conn);
        receiver
    }

    /// Waits for batch `id` to be committed; commits it here if nobody else has in time.
    async fn outcome(&self, id: u64, mut done: watch::Receiver<Outcome>) -> Result<(), StoreError> {
        loop {
            if let Ok(outcome) =
                tokio::time::timeout(BATCH_WAIT, done.wait_for(Option::is_some)).await
            {
                let outcome = outcome
                    .map_err(|_| anyhow!("the write batch ended without an outcome"))?
                    .clone();
                return match outcome {
                    Some(Ok(())) => Ok(()),
                    Some(Err(error)) => Err(anyhow!("committing the write batch: {error}").into()),
                    None => unreachable!("wait_for returned an unset outcome"),
                };
            }
            let _turn = self
                .turn
                .acquire()
                .await
                .context("the SQLite writer is closed")?;
            let mut state = lock(&self.state);
            if state.batch.as_ref().is_some_and(|batch| batch.id == id)
                && let Some(conn) = state.conn.take()
            {
                close_batch(&mut state, &conn, &self.caches);
                state.conn = Some(conn);
            }
        }
    }

    /// Commits an open batch and closes the connection, after the turn in progress.
    pub(super) async fn close(&self) {
        if let Ok(_turn) = self.turn.acquire().await {
            let mut state = lock(&self.state);
            if let Some(conn) = state.conn.take() {
                close_batch(&mut state, &conn, &self.caches);
            }
        }
    }
}

/// Commits the open batch (rolls it back when it has no members, or when its transaction is
/// already gone) and tells its members, once the row caches agree with the outcome.
fn close_batch(state: &mut WriterState, conn: &rusqlite::Connection, caches: &Caches) {
    let Some(batch) = state.batch.take() else {
        return;
    };
    caches.before_commit();
    let outcome = if conn.is_autocommit() {
        Err("the transaction was rolled back by an error in one of its writes".to_owned())
    } else if batch.members == 0 {
        conn.execute_batch("ROLLBACK")
            .map_err(|err| err.to_string())
    } else {
        conn.execute_batch("COMMIT").map_err(|err| err.to_string())
    };
    if outcome.is_err() && !conn.is_autocommit() {
        // Nothing of a failed commit may linger into the next batch.
        let _ = conn.execute_batch("ROLLBACK");
    }
    caches.after_commit();
    batch.done.send_replace(Some(outcome));
}

/// One write transaction on the writer connection: rolled back when dropped without `commit`.
pub struct WriteTurn {
    writer: Arc<Writer>,
    conn: Option<rusqlite::Connection>,
    batch: u64,
    turn: Option<OwnedSemaphorePermit>,
}

impl WriteTurn {
    pub(super) fn conn(&self) -> Result<&rusqlite::Connection, StoreError> {
        self.conn
            .as_ref()
            .ok_or_else(|| anyhow!("the SQLite write transaction has ended").into())
    }

    /// Releases the savepoint into the batch and returns once the batch is committed.
    pub(super) async fn commit(mut self) -> Result<(), StoreError> {
        let conn = self
            .conn
            .take()
            .ok_or_else(|| anyhow!("the SQLite write transaction has ended"))?;
        let released = conn.execute_batch("RELEASE write");
        if released.is_err() {
            roll_back_savepoint(&conn);
        }
        let done = {
            let mut state = lock(&self.writer.state);
            self.writer.end_turn(&mut state, conn, released.is_ok())
        };
        // The next write may start while this one waits for the commit.
        self.turn.take();
        released?;
        let done = done.ok_or_else(|| anyhow!("the write batch was gone before its commit"))?;
        self.writer.outcome(self.batch, done).await
    }
}

impl Drop for WriteTurn {
    fn drop(&mut self) {
        let Some(conn) = self.conn.take() else { return };
        roll_back_savepoint(&conn);
        let mut state = lock(&self.writer.state);
        self.writer.end_turn(&mut state, conn, false);
    }
}

/// Undoes the current write's savepoint, leaving the batch's other writes in place.
fn roll_back_savepoint(conn: &rusqlite::Connection) {
    if conn
        .execute_batch("ROLLBACK TO write; RELEASE write")
        .is_err()
        && !conn.is_autocommit()
    {
        // The savepoint could not be undone alone: the whole batch goes, and `close_batch`
        // reports that to its members.
        let _ = conn.execute_batch("ROLLBACK");
    }
}

/// `query` prepared (once per connection and text) and bound.
fn prepare<'c>(
    conn: &'c rusqlite::Connection,
    query: &SqlBuilder,
) -> Result<rusqlite::CachedStatement<'c>, StoreError> {
    let mut statement = conn.prepare_cached(query.sql())?;
    let params = query.params();
    // SQLite numbers `$n` placeholders in order of first appearance, which need not be n: each
    // index is mapped back to its n by the placeholder's name (looking up "$n" instead scans
    // every name, for every parameter). Distinct placeholders, as many as the parameters and
    // each naming one (written without leading zeros, so that `$1` and `$01` cannot both name
    // the first), use every parameter.
    if statement.parameter_count() != params.len() {
        return Err(anyhow!(
            "the statement has {} placeholders for {} parameters",
            statement.parameter_count(),
            params.len()
        )
        .into());
    }
    for index in 1..=params.len() {
        let param = statement
            .parameter_name(index)
            .and_then(|name| name.strip_prefix('$'))
            .filter(|digits| !digits.starts_with('0'))
            .and_then(|digits| digits.parse::<usize>().ok())
            .and_then(|n| params.get(n.checked_sub(1)?))
            .ok_or_else(|| anyhow!("placeholder {index} is not one of $1 to ${}", params.len()))?;
        match param {
            Param::Text(text) => statement.raw_bind_parameter(index, text)?,
            Param::Int(int) => statement.raw_bind_parameter(index, int)?,
            Param::NullText | Param::NullInt => {
                statement.raw_bind_parameter(index, rusqlite::types::Null)?;
            }
        }
    }
    Ok(statement)
}

/// Runs a writing statement; returns the number of rows it changed.
pub(super) fn execute(conn: &rusqlite::Connection, query: &SqlBuilder) -> Result<u64, StoreError> {
    let changed = prepare(conn, query)?.raw_execute()?;
    Ok(u64::try_from(changed).unwrap_or(u64::MAX))
}

/// Up to `max_rows` rows of `query`.
pub(super) fn fetch<T: FromRecord>(
    conn: &rusqlite::Connection,
    query: &SqlBuilder,
    max_rows: usize,
) -> Result<Vec<T>, StoreError> {
    let mut statement = prepare(conn, query)?;
    let names: Vec<String> = statement
        .column_names()
        .into_iter()
        .map(str::to_owned)
        .collect();
    let mut rows = statement.raw_query();
    let mut out = Vec::new();
    while out.len() < max_rows
        && let Some(row) = rows.next()?
    {
        out.push(T::from_record(&NamedRow {
            row,
            names: &names,
            next: Cell::new(0),
        })?);
    }
    Ok(out)
}

/// A row whose columns are looked up by name starting after the last one found: decoders read
/// the columns mostly in the statement's order, so a lookup usually compares one name.
/// (rusqlite's own lookup compares, case-blind, every name before the one asked for.)
struct NamedRow<'r, 's> {
    row: &'r rusqlite::Row<'s>,
    names: &'r [String],
    next: Cell<usize>,
}

impl Record for NamedRow<'_, '_> {
    fn column<T: Column>(&self, name: &str) -> Result<T, StoreError> {
        let count = self.names.len();
        let start = self.next.get();
        let index = (0..count)
            .map(|offset| (start + offset) % count)
            .find(|&i| self.names[i] == name)
            .ok_or_else(|| anyhow!("the result has no column {name}"))?;
        self.next.set(index + 1);
        self.row.get(index).map_err(|err| {
            StoreError::Other(anyhow!(err).context(format!("reading column {name}")))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::record::Count;

    fn writer() -> (Arc<Writer>, PathBuf) {
        let dir = std::env::temp_dir().join(format!("tandem-sqlite-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("t.db");
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch("PRAGMA journal_mode = WAL; CREATE TABLE t (id TEXT PRIMARY KEY);")
            .unwrap();
        (
            Arc::new(Writer::new(path.clone(), "PRAGMA synchronous = NORMAL")),
            path,
        )
    }

    #[test]
    fn readers_keep_a_larger_page_cache_and_refuse_writes() {
        let (_writer, path) = writer();
        let readers = Readers::new(path, 2);
        let (cache_size, query_only) = readers
            .with(|conn| {
                let pragma = |name: &str| {
                    conn.query_row(&format!("PRAGMA {name}"), [], |row| row.get::<_, i64>(0))
                };
                Ok((pragma("cache_size")?, pragma("query_only")?))
            })
            .unwrap();
        assert_eq!(cache_size, -8192, "8 MiB, not SQLite's default 2 MiB");
        assert_eq!(query_only, 1);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_read_over_its_step_budget_runs_again_on_a_blocking_thread() {
        let (_writer, path) = writer();
        let readers = Arc::new(Readers::new(path, 2));
        // Counts to n in about 5n steps of SQLite's virtual machine.
        let count_to = |n: i64| {
            SqlBuilder::fixed(
                "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < $1) \
                 SELECT COUNT(*) AS n FROM c",
                vec![Param::Int(n)],
            )
        };
        let caller = std::thread::current().id();
        let runs = Arc::new(Mutex::new(Vec::new()));
        let read = |n: i64| {
            let runs = Arc::clone(&runs);
            move |conn: &rusqlite::Connection| {
                lock(&runs).push(std::thread::current().id());
                fetch::<Count>(conn, &count_to(n), 1)
            }
        };

        let small = readers.with_step_budget(read(1_000)).await.unwrap();
        assert_eq!(small[0].0, 1_000);
        assert_eq!(
            *lock(&runs),
            [caller],
            "within the budget: once, on the caller's thread"
        );

        lock(&runs).clear();
        let large = readers.with_step_budget(read(1_000_000)).await.unwrap();
        assert_eq!(
            large[0].0, 1_000_000,
            "the whole answer, not the interrupted one"
        );
        let runs_seen = lock(&runs).clone();
        assert_eq!(
            runs_seen.len(),
            2,
            "interrupted, then run again: {runs_seen:?}"
        );
        assert_eq!(runs_seen[0], caller);
        assert_ne!(
            runs_seen[1], caller,
            "the second run is on a blocking thread"
        );

        // The budget ends with its read: the same connections answer long reads afterwards.
        for _ in 0..3 {
            let unbudgeted = readers
                .with(|conn| fetch::<Count>(conn, &count_to(1_000_000), 1))
                .unwrap();
            assert_eq!(unbudgeted[0].0, 1_000_000);
        }
    }

    #[test]
    fn sqlite_is_built_without_process_wide_locks() {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        let mut statement = conn.prepare("PRAGMA compile_options").unwrap();
        let options: Vec<String> = statement
            .query_map([], |row| row.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert!(
            !options.iter().any(|o| o == "ENABLE_MEMORY_MANAGEMENT"),
            "one page-cache group for all connections: {options:?}"
        );
        assert!(
            options.iter().any(|o| o == "DEFAULT_MEMSTATUS=0"),
            "memory statistics on: {options:?}"
        );
    }

    fn insert(id: &str) -> SqlBuilder {
        SqlBuilder::fixed("INSERT INTO t (id) VALUES ($1)", vec![Param::from(id)])
    }

    fn stored(path: &std::path::Path) -> i64 {
        let readers = Readers::new(path.to_owned(), 1);
        let count: Vec<Count> = readers
            .with(|conn| {
                fetch(
                    conn,
                    &SqlBuilder::fixed("SELECT COUNT(*) AS n FROM t", vec![]),
                    1,
                )
            })
            .unwrap();
        count[0].0
    }

    async fn write(writer: &Arc<Writer>, id: &str) -> Result<(), StoreError> {
        let turn = writer.begin().await?;
        execute(turn.conn()?, &insert(id))?;
        turn.commit().await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_writes_share_commits_and_all_land() {
        let (writer, path) = writer();
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..400 {
            let writer = Arc::clone(&writer);
            tasks.spawn(async move { write(&writer, &format!("row-{i}")).await });
        }
        while let Some(done) = tasks.join_next().await {
            done.unwrap().unwrap();
        }
        assert_eq!(stored(&path), 400, "every acknowledged write is committed");
        let batches = lock(&writer.state).batches;
        assert!(
            batches < 400,
            "{batches} commits for 400 writes: none shared"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_or_abandoned_write_leaves_its_batch_mates_committed() {
        let (writer, path) = writer();
        write(&writer, "taken").await.unwrap();
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..60 {
            let writer = Arc::clone(&writer);
            tasks.spawn(async move {
                let turn = writer.begin().await?;
                match i % 3 {
                    // A duplicate key: this write fails, the batch goes on.
                    0 => execute(turn.conn()?, &insert("taken")).map(drop),
                    // Dropped without commit: rolled back alone.
                    1 => {
                        execute(turn.conn()?, &insert(&format!("dropped-{i}")))?;
                        drop(turn);
                        Ok(())
                    }
                    _ => {
                        execute(turn.conn()?, &insert(&format!("kept-{i}")))?;
                        turn.commit().await
                    }
                }
            });
        }
        let mut duplicates = 0;
        while let Some(done) = tasks.join_next().await {
            match done.unwrap() {
                Ok(()) => {}
                Err(StoreError::Duplicate) => duplicates += 1,
                Err(other) => panic!("unexpected error: {other:#}"),
            }
        }
        assert_eq!(duplicates, 20);
        assert_eq!(
            stored(&path),
            1 + 20,
            "the first row and the 20 committed ones"
        );
    }

    #[tokio::test]
    async fn a_batch_left_open_for_a_write_that_went_away_is_committed_by_its_member() {
        let (writer, path) = writer();
        let turn = writer.begin().await.unwrap();
        execute(turn.conn().unwrap(), &insert("alone")).unwrap();
        // A write queued for a turn that it will never take: the batch stays open for it.
        let gone = Waiting::new(&writer.waiting);
        let commit = tokio::spawn(turn.commit());
        tokio::time::sleep(BATCH_WAIT / 5).await;
        assert_eq!(
            stored(&path),
            0,
            "not committed while a write is expected to join"
        );
        drop(gone);
        let started = std::time::Instant::now();
        commit.await.unwrap().unwrap();
        assert!(started.elapsed() < BATCH_WAIT * 4);
        assert_eq!(stored(&path), 1);
    }

    struct OutOfOrder(i64, String, i64);

    impl FromRecord for OutOfOrder {
        fn from_record(row: &impl Record) -> Result<Self, StoreError> {
            Ok(OutOfOrder(
                row.column("c")?,
                row.column("b")?,
                row.column("a")?,
            ))
        }
    }

    struct Missing;

    impl FromRecord for Missing {
        fn from_record(row: &impl Record) -> Result<Self, StoreError> {
            row.column::<i64>("d").map(|_| Missing)
        }
    }

    #[test]
    fn columns_are_found_by_name_in_any_order() {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        let query = SqlBuilder::fixed("SELECT 1 AS a, 'x' AS b, 3 AS c", vec![]);
        let rows: Vec<OutOfOrder> = fetch(&conn, &query, 1).unwrap();
        let OutOfOrder(c, b, a) = &rows[0];
        assert_eq!((*a, b.as_str(), *c), (1, "x", 3));
        let err = fetch::<Missing>(&conn, &query, 1).err().unwrap();
        assert!(format!("{err:#}").contains("no column d"), "{err:#}");
    }

    #[test]
    fn each_placeholder_gets_the_parameter_it_names() {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        // `$2` comes first, and twice: SQLite numbers the placeholders 2, 1, 3 in that order.
        let query = SqlBuilder::fixed(
            "SELECT $2 AS a, $1 AS b, $3 + $2 AS c",
            vec![Param::from("one"), Param::Int(2), Param::Int(40)],
        );
        let rows: Vec<OutOfOrder> = fetch(&conn, &query, 1).unwrap();
        let OutOfOrder(c, b, a) = &rows[0];
        assert_eq!((*a, b.as_str(), *c), (2, "one", 42));
        for (sql, params) in [
            ("SELECT $1 AS n", vec![Param::Int(1), Param::Int(2)]),
            ("SELECT $1 + $3 AS n", vec![Param::Int(1), Param::Int(2)]),
            ("SELECT $1 + $01 AS n", vec![Param::Int(1), Param::Int(2)]),
            ("SELECT ?1 AS n", vec![Param::Int(1)]),
        ] {
            let err = fetch::<Count>(&conn, &SqlBuilder::fixed(sql, params), 1)
                .err()
                .unwrap();
            assert!(format!("{err:#}").contains("placeholder"), "{sql}: {err:#}");
        }
    }

    #[test]
    fn binding_a_limit_does_not_compile_the_statement_again() {
        let (_, path) = writer();
        let conn = open(&path, "reading").unwrap();
        for limit in [1, 2, 3] {
            let query = SqlBuilder::fixed(
                "SELECT COUNT(*) AS n FROM (SELECT id FROM t LIMIT $1)",
                vec![Param::Int(limit)],
            );
            let _: Vec<Count> = fetch(&conn, &query, 1).unwrap();
        }
        let statement = conn
            .prepare_cached("SELECT COUNT(*) AS n FROM (SELECT id FROM t LIMIT $1)")
            .unwrap();
        assert_eq!(
            statement.get_status(rusqlite::StatementStatus::RePrepare),
            0
        );
    }
}
