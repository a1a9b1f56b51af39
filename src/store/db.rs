//! Database connection pools for the two supported backends behind one SQL dialect.
//!
//! Queries use `$1`-style placeholders, which both PostgreSQL and SQLite accept, and portable
//! types (TEXT, BIGINT for millisecond timestamps and counters).

use super::StoreError;
use super::record::FromRecord;
use super::sql::{Param, SqlBuilder};
use crate::config::SqliteSynchronous;
use anyhow::{Context, anyhow};
use sqlx::any::{AnyPoolOptions, install_default_drivers};
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{AnyPool, Executor};
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Pools for reads and writes. On SQLite all writes go through one connection, which serializes
/// them in the process instead of letting writers collide on the database lock; on PostgreSQL
/// both are the same pool.
///
/// On SQLite the store's statements (`fetch_optional`, `fetch_all`, `execute`, `begin`) skip
/// sqlx: its SQLite driver runs each connection on a thread of its own and hands every query
/// and row across threads, which cost a get-by-id more CPU in thread switches than SQLite spent
/// answering it, and a create four round trips to the writer's thread. They run on rusqlite
/// connections instead, on the calling thread. The sqlx pools remain for migrations and tests.
#[derive(Clone, Debug)]
pub struct Db {
    pub backend: Backend,
    pub read: AnyPool,
    pub write: AnyPool,
    sqlite: Option<Sqlite>,
}

/// The rusqlite side of a SQLite database: readers and the one writer.
#[derive(Clone, Debug)]
struct Sqlite {
    readers: Arc<SqliteReaders>,
    writer: Arc<SqliteWriter>,
}

fn sqlite_readers_cap() -> u32 {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    u32::try_from(cores * 2).unwrap_or(u32::MAX).max(2)
}

const SQLITE_PRAGMAS: &str =
    "PRAGMA journal_mode = WAL; PRAGMA busy_timeout = 10000; PRAGMA foreign_keys = ON;";

fn sqlite_synchronous_pragma(synchronous: SqliteSynchronous) -> &'static str {
    match synchronous {
        SqliteSynchronous::Normal => "PRAGMA synchronous = NORMAL",
        SqliteSynchronous::Full => "PRAGMA synchronous = FULL",
    }
}

impl Db {
    pub async fn connect(
        url: &str,
        max_connections: u32,
        synchronous: SqliteSynchronous,
    ) -> anyhow::Result<Self> {
        install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else {
            Backend::Postgres
        };
        let synchronous = sqlite_synchronous_pragma(synchronous);
        let options = || {
            AnyPoolOptions::new()
                .acquire_timeout(Duration::from_secs(10))
                // sqlx pings a connection before every checkout by default: a round trip per
                // query. A connection that has died fails its query instead, and is dropped.
                .test_before_acquire(false)
                .after_connect(move |conn, _meta| {
                    Box::pin(async move {
                        if backend == Backend::Sqlite {
                            conn.execute(SQLITE_PRAGMAS).await?;
                            conn.execute(synchronous).await?;
                        }
                        Ok(())
                    })
                })
        };
        let redacted = redact(url);
        let write = options()
            .max_connections(if backend == Backend::Sqlite {
                1
            } else {
                max_connections
            })
            .connect(url)
            .await
            .with_context(|| format!("connecting to the database at {redacted}"))?;
        let read = match backend {
            // Each SQLite connection is a thread with its own page cache, busy only while a
            // core runs it: more readers than twice the cores add memory, not throughput.
            Backend::Sqlite => options()
                .max_connections(max_connections.clamp(2, sqlite_readers_cap()))
                .connect(url)
                .await
                .with_context(|| format!("connecting to the database at {redacted}"))?,
            Backend::Postgres => write.clone(),
        };
        let sqlite = match backend {
            Backend::Sqlite => {
                let path = SqliteConnectOptions::from_str(url)
                    .with_context(|| format!("reading the SQLite location in {redacted}"))?
                    .get_filename()
                    .to_owned();
                Some(Sqlite {
                    readers: Arc::new(SqliteReaders::new(path.clone(), sqlite_readers_cap())),
                    writer: Arc::new(SqliteWriter::new(path, synchronous)),
                })
            }
            Backend::Postgres => None,
        };
        Ok(Self {
            backend,
            read,
            write,
            sqlite,
        })
    }

    /// Starts a write transaction. On SQLite it takes the write lock at once (BEGIN IMMEDIATE)
    /// and waits its turn for the one writer connection.
    pub async fn begin(&self) -> Result<Tx, StoreError> {
        match &self.sqlite {
            Some(sqlite) => {
                let mut writer = SqliteWriteTurn::take(&sqlite.writer).await?;
                writer.conn()?.execute_batch("BEGIN IMMEDIATE")?;
                writer.in_transaction = true;
                Ok(Tx::Sqlite(writer))
            }
            None => Ok(Tx::Postgres(self.write.begin().await?)),
        }
    }

    /// Runs one writing statement on its own; returns the number of rows it changed.
    pub async fn execute(&self, query: SqlBuilder) -> Result<u64, StoreError> {
        match &self.sqlite {
            Some(sqlite) => {
                let mut writer = SqliteWriteTurn::take(&sqlite.writer).await?;
                sqlite_execute(writer.conn()?, &query)
            }
            None => Ok(query.build().execute(&self.write).await?.rows_affected()),
        }
    }

    /// The row a lookup by key finds, if any. On SQLite it is read on the calling thread: a
    /// lookup by key visits a handful of cached pages, less work than a hand-off to a thread.
    pub async fn fetch_optional<T: FromRecord>(
        &self,
        query: SqlBuilder,
    ) -> Result<Option<T>, StoreError> {
        match &self.sqlite {
            Some(sqlite) => sqlite
                .readers
                .with(|conn| Ok(sqlite_fetch(conn, &query, 1)?.pop())),
            None => query
                .build()
                .fetch_optional(&self.read)
                .await?
                .map(|row| T::from_record(&row))
                .transpose(),
        }
    }

    /// All rows of a query that reads a few rows by key; like `fetch_optional`, on the calling
    /// thread on SQLite.
    pub async fn fetch_all<T: FromRecord>(&self, query: SqlBuilder) -> Result<Vec<T>, StoreError> {
        match &self.sqlite {
            Some(sqlite) => sqlite
                .readers
                .with(|conn| sqlite_fetch(conn, &query, usize::MAX)),
            None => query
                .build()
                .fetch_all(&self.read)
                .await?
                .iter()
                .map(T::from_record)
                .collect(),
        }
    }

    /// All rows of a filtered list. On SQLite it runs on a blocking thread, since it may visit
    /// many rows and must not hold up the requests queued on this one.
    pub async fn list<T: FromRecord + Send + 'static>(
        &self,
        query: SqlBuilder,
    ) -> Result<Vec<T>, StoreError> {
        match &self.sqlite {
            Some(sqlite) => {
                let readers = Arc::clone(&sqlite.readers);
                tokio::task::spawn_blocking(move || {
                    readers.with(|conn| sqlite_fetch(conn, &query, usize::MAX))
                })
                .await
                .context("the SQLite read task stopped")?
            }
            None => self.fetch_all(query).await,
        }
    }

    pub async fn migrate(&self) -> anyhow::Result<()> {
        sqlx::migrate!("./migrations")
            .run(&self.write)
            .await
            .context("applying database migrations")
    }

    pub async fn close(&self) {
        self.write.close().await;
        self.read.close().await;
        if let Some(sqlite) = &self.sqlite {
            lock_ignoring_poison(&sqlite.readers.idle).clear();
            // After the last writer's turn: the connection it puts back is closed here.
            if let Ok(_turn) = sqlite.writer.turn.acquire().await {
                lock_ignoring_poison(&sqlite.writer.idle).take();
            }
        }
    }
}

/// Idle read-only rusqlite connections to the SQLite file, opened on demand.
struct SqliteReaders {
    path: PathBuf,
    idle: Mutex<Vec<rusqlite::Connection>>,
    max_idle: usize,
}

impl std::fmt::Debug for SqliteReaders {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteReaders")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl SqliteReaders {
    fn new(path: PathBuf, max_idle: u32) -> Self {
        Self {
            path,
            idle: Mutex::new(Vec::new()),
            max_idle: usize::try_from(max_idle).unwrap_or(usize::MAX),
        }
    }

    fn open(&self) -> Result<rusqlite::Connection, StoreError> {
        let conn = rusqlite::Connection::open_with_flags(
            &self.path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .with_context(|| format!("opening {} for reading", self.path.display()))?;
        // The writer set WAL mode; query_only makes a stray write an error here.
        conn.execute_batch("PRAGMA busy_timeout = 10000; PRAGMA query_only = 1;")?;
        // Room for the lists' statements, whose text varies with the filter.
        conn.set_prepared_statement_cache_capacity(64);
        Ok(conn)
    }

    /// Runs `read` on an idle connection (or a new one), which goes back to the idle list.
    fn with<T>(
        &self,
        read: impl FnOnce(&rusqlite::Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let idle = self.lock_idle().pop();
        let conn = match idle {
            Some(conn) => conn,
            None => self.open()?,
        };
        let result = read(&conn);
        let mut idle = self.lock_idle();
        if idle.len() < self.max_idle {
            idle.push(conn);
        }
        result
    }

    fn lock_idle(&self) -> std::sync::MutexGuard<'_, Vec<rusqlite::Connection>> {
        lock_ignoring_poison(&self.idle)
    }
}

/// The one SQLite writer connection, opened on first use (and again after a failure lost it).
/// One holder at a time: the semaphore orders the waiters without blocking threads.
struct SqliteWriter {
    path: PathBuf,
    synchronous: &'static str,
    idle: Mutex<Option<rusqlite::Connection>>,
    turn: Arc<tokio::sync::Semaphore>,
}

impl std::fmt::Debug for SqliteWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteWriter")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl SqliteWriter {
    fn new(path: PathBuf, synchronous: &'static str) -> Self {
        Self {
            path,
            synchronous,
            idle: Mutex::new(None),
            turn: Arc::new(tokio::sync::Semaphore::new(1)),
        }
    }

    fn open(&self) -> Result<rusqlite::Connection, StoreError> {
        let conn = rusqlite::Connection::open_with_flags(
            &self.path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .with_context(|| format!("opening {} for writing", self.path.display()))?;
        conn.execute_batch(SQLITE_PRAGMAS)?;
        conn.execute_batch(self.synchronous)?;
        conn.set_prepared_statement_cache_capacity(64);
        Ok(conn)
    }
}

/// The writer connection while one caller holds it; back to the writer when dropped, after
/// rolling back a transaction that was not committed.
pub struct SqliteWriteTurn {
    writer: Arc<SqliteWriter>,
    conn: Option<rusqlite::Connection>,
    in_transaction: bool,
    _turn: tokio::sync::OwnedSemaphorePermit,
}

impl SqliteWriteTurn {
    async fn take(writer: &Arc<SqliteWriter>) -> Result<Self, StoreError> {
        let turn = Arc::clone(&writer.turn)
            .acquire_owned()
            .await
            .context("the SQLite writer is closed")?;
        let idle = lock_ignoring_poison(&writer.idle).take();
        let conn = match idle {
            Some(conn) => conn,
            None => writer.open()?,
        };
        Ok(Self {
            writer: Arc::clone(writer),
            conn: Some(conn),
            in_transaction: false,
            _turn: turn,
        })
    }

    fn conn(&mut self) -> Result<&rusqlite::Connection, StoreError> {
        self.conn
            .as_ref()
            .ok_or_else(|| anyhow!("the SQLite writer connection is gone").into())
    }
}

impl Drop for SqliteWriteTurn {
    fn drop(&mut self) {
        let Some(conn) = self.conn.take() else { return };
        if self.in_transaction && conn.execute_batch("ROLLBACK").is_err() {
            // A connection that cannot roll back is not trusted again; the next turn opens one.
            return;
        }
        *lock_ignoring_poison(&self.writer.idle) = Some(conn);
    }
}

/// A write transaction (`Db::begin`): rolled back when dropped without `commit`.
pub enum Tx {
    Sqlite(SqliteWriteTurn),
    Postgres(sqlx::Transaction<'static, sqlx::Any>),
}

impl Tx {
    pub async fn execute(&mut self, query: SqlBuilder) -> Result<u64, StoreError> {
        match self {
            Tx::Sqlite(writer) => sqlite_execute(writer.conn()?, &query),
            Tx::Postgres(tx) => Ok(query.build().execute(&mut **tx).await?.rows_affected()),
        }
    }

    pub async fn fetch_optional<T: FromRecord>(
        &mut self,
        query: SqlBuilder,
    ) -> Result<Option<T>, StoreError> {
        Ok(self.fetch_up_to(query, 1).await?.pop())
    }

    pub async fn fetch_all<T: FromRecord>(
        &mut self,
        query: SqlBuilder,
    ) -> Result<Vec<T>, StoreError> {
        self.fetch_up_to(query, usize::MAX).await
    }

    async fn fetch_up_to<T: FromRecord>(
        &mut self,
        query: SqlBuilder,
        max_rows: usize,
    ) -> Result<Vec<T>, StoreError> {
        match self {
            Tx::Sqlite(writer) => sqlite_fetch(writer.conn()?, &query, max_rows),
            Tx::Postgres(tx) => query
                .build()
                .fetch_all(&mut **tx)
                .await?
                .iter()
                .take(max_rows)
                .map(T::from_record)
                .collect(),
        }
    }

    pub async fn commit(self) -> Result<(), StoreError> {
        match self {
            Tx::Sqlite(mut writer) => {
                writer.conn()?.execute_batch("COMMIT")?;
                writer.in_transaction = false;
                Ok(())
            }
            Tx::Postgres(tx) => Ok(tx.commit().await?),
        }
    }
}

fn lock_ignoring_poison<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The guarded values stay valid if a holder panicked: they are only taken and put back.
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// `query` prepared (once per connection and text) and bound on a rusqlite connection.
fn sqlite_prepare<'c>(
    conn: &'c rusqlite::Connection,
    query: &SqlBuilder,
) -> Result<rusqlite::CachedStatement<'c>, StoreError> {
    let mut statement = conn.prepare_cached(query.sql())?;
    for (i, param) in query.params().iter().enumerate() {
        let name = format!("${}", i + 1);
        let index = statement
            .parameter_index(&name)?
            .ok_or_else(|| anyhow!("the statement has no placeholder {name}"))?;
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

fn sqlite_execute(conn: &rusqlite::Connection, query: &SqlBuilder) -> Result<u64, StoreError> {
    let changed = sqlite_prepare(conn, query)?.raw_execute()?;
    Ok(u64::try_from(changed).unwrap_or(u64::MAX))
}

/// Up to `max_rows` rows of `query` (prepared once per connection and text) on a rusqlite
/// connection.
fn sqlite_fetch<T: FromRecord>(
    conn: &rusqlite::Connection,
    query: &SqlBuilder,
    max_rows: usize,
) -> Result<Vec<T>, StoreError> {
    let mut statement = sqlite_prepare(conn, query)?;
    let mut rows = statement.raw_query();
    let mut out = Vec::new();
    while out.len() < max_rows
        && let Some(row) = rows.next()?
    {
        out.push(T::from_record(row)?);
    }
    Ok(out)
}

/// The URL without its password, for messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{}{user}:***{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_owned(),
    }
}

/// Whether an error is a unique-constraint violation (a concurrent duplicate).
pub fn is_unique_violation(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(db) if db.is_unique_violation())
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlx::Row;

    #[tokio::test]
    async fn sqlite_commits_flush_as_configured() {
        let dir = std::env::temp_dir().join(format!("tandem-db-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        for (setting, pragma_value) in [
            (SqliteSynchronous::Normal, 1_i64),
            (SqliteSynchronous::Full, 2),
        ] {
            let url = format!("sqlite://{}?mode=rwc", dir.join("t.db").display());
            let db = Db::connect(&url, 2, setting).await.unwrap();
            for pool in [&db.read, &db.write] {
                let row = sqlx::query("PRAGMA synchronous")
                    .fetch_one(pool)
                    .await
                    .unwrap();
                assert_eq!(row.try_get::<i64, _>(0).unwrap(), pragma_value);
            }
        }
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn passwords_never_reach_messages() {
        assert_eq!(
            redact("postgres://u:secret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(redact("sqlite://x.db"), "sqlite://x.db");
    }
}
