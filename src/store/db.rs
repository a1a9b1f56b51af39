//! Database connection pools for the two supported backends behind one SQL dialect.
//!
//! Queries use `$1`-style placeholders, which both PostgreSQL and SQLite accept, and portable
//! types (TEXT, BIGINT for millisecond timestamps and counters).

use super::record::FromRecord;
use super::row_cache::RowCache;
use super::sql::{SqlBuilder, params};
use super::{StoreError, postgres, sqlite};
use crate::config::SqliteSynchronous;
use anyhow::Context;
use sqlx::any::{AnyPoolOptions, install_default_drivers};
use sqlx::postgres::PgConnectOptions;
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{AnyPool, Executor};
use std::str::FromStr;
use std::sync::Arc;
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
/// The store's statements (`fetch_optional`, `fetch_all`, `list`, `execute`, `begin`) skip
/// sqlx's `Any` pools. On SQLite, sqlx's driver runs each connection on a thread of its own and
/// hands every query and row across threads, which cost a get-by-id more CPU in thread switches
/// than SQLite spent answering it, and a create four round trips to the writer's thread: they
/// run on rusqlite connections instead, on the calling thread. On PostgreSQL they run on
/// native connections from `postgres::Connections`, which spare each statement the pool's
/// second round trip and the conversion of every row to `Any` values. The `Any` pools remain
/// for migrations, tests and a few operator reads (sync history, the mail queue).
#[derive(Clone, Debug)]
pub struct Db {
    pub backend: Backend,
    pub read: AnyPool,
    pub write: AnyPool,
    engine: Engine,
    /// Rows each `row_cache` holds at most (SQLite only; 0: no caches).
    row_cache_entries: usize,
}

/// Where the store's statements run.
#[derive(Clone, Debug)]
enum Engine {
    Sqlite(Sqlite),
    Postgres(Arc<postgres::Connections>),
}

/// The rusqlite side of a SQLite database: readers and the one writer.
#[derive(Clone, Debug)]
struct Sqlite {
    readers: Arc<sqlite::Readers>,
    writer: Arc<sqlite::Writer>,
    /// A serving instance's lock on the database (see `with_row_caches`).
    instance_lock: Option<Arc<std::fs::File>>,
}

/// How long a statement waits for a connection before it fails.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);
/// The `Any` pool's connections on PostgreSQL, beside the store's own.
const ANY_POOL_ON_POSTGRES: u32 = 4;

fn sqlite_readers_cap() -> u32 {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    u32::try_from(cores * 2).unwrap_or(u32::MAX).max(2)
}

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
                .acquire_timeout(ACQUIRE_TIMEOUT)
                // sqlx pings a connection before every checkout by default: a round trip per
                // query. A connection that has died fails its query instead, and is dropped.
                .test_before_acquire(false)
                .after_connect(move |conn, _meta| {
                    Box::pin(async move {
                        if backend == Backend::Sqlite {
                            conn.execute(sqlite::PRAGMAS).await?;
                            conn.execute(synchronous).await?;
                        }
                        Ok(())
                    })
                })
        };
        let redacted = redact(url);
        if backend == Backend::Sqlite {
            sqlite::create_private_database(url)
                .with_context(|| format!("creating the SQLite database at {redacted}"))?;
        }
        let write = options()
            .max_connections(match backend {
                Backend::Sqlite => 1,
                // Migrations and operator reads: the store has connections of its own.
                Backend::Postgres => max_connections.min(ANY_POOL_ON_POSTGRES),
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
        let engine = match backend {
            Backend::Sqlite => {
                let path = SqliteConnectOptions::from_str(url)
                    .with_context(|| format!("reading the SQLite location in {redacted}"))?
                    .get_filename()
                    .to_owned();
                let readers = usize::try_from(sqlite_readers_cap()).unwrap_or(usize::MAX);
                Engine::Sqlite(Sqlite {
                    readers: Arc::new(sqlite::Readers::new(path.clone(), readers)),
                    writer: Arc::new(sqlite::Writer::new(path, synchronous)),
                    instance_lock: None,
                })
            }
            Backend::Postgres => Engine::Postgres(postgres::Connections::new(
                PgConnectOptions::from_str(url)
                    .with_context(|| format!("reading the PostgreSQL URL {redacted}"))?,
                max_connections,
                ACQUIRE_TIMEOUT,
            )),
        };
        Ok(Self {
            backend,
            read,
            write,
            engine,
            row_cache_entries: 0,
        })
    }

    /// Lets `row_cache` keep up to `entries` rows per table, for a serving instance. On SQLite
    /// the caches are right only while no other instance writes the database, so an instance
    /// holds a lock on `<database>.lock` for as long as its `Db` lives: exclusive with caches,
    /// shared without. Instances that share a SQLite database must all run with `entries` 0.
    pub fn with_row_caches(mut self, entries: usize) -> anyhow::Result<Self> {
        if let Engine::Sqlite(sqlite) = &mut self.engine {
            let database = sqlite.writer.path().to_owned();
            let mut path = database.clone().into_os_string();
            path.push(".lock");
            let path = std::path::PathBuf::from(path);
            let file = crate::private_files::options()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)
                .with_context(|| format!("opening {}", path.display()))?;
            let locked = if entries > 0 {
                file.try_lock()
            } else {
                file.try_lock_shared()
            };
            if let Err(err) = locked {
                anyhow::bail!(
                    "another tandem instance is serving the SQLite database {} and one of the \
                     two would cache rows the other changes ({} is locked: {err}). Instances \
                     that share a SQLite database must all set database.row_cache_entries = 0; \
                     or run several instances on PostgreSQL.",
                    database.display(),
                    path.display()
                );
            }
            sqlite.instance_lock = Some(Arc::new(file));
        }
        self.row_cache_entries = entries;
        Ok(self)
    }

    /// Reads of `table`'s rows by `id`, where `select` is `SELECT <columns> FROM <table>`:
    /// on SQLite through a cache kept current by the writer (unless `with_row_caches` allowed
    /// no rows), on PostgreSQL gathered with the lookups running beside them (see
    /// `postgres::KeyedReads`); PostgreSQL has no cache, since other instances change its rows.
    pub fn rows_by_id<T: FromRecord + Send + Sync + 'static>(
        &self,
        table: &'static str,
        select: &'static str,
        id_of: fn(&T) -> &str,
    ) -> RowsById<T> {
        let how = match &self.engine {
            Engine::Sqlite(_) if self.row_cache_entries == 0 => ById::Direct,
            Engine::Sqlite(sqlite) => {
                let cache = Arc::new(RowCache::new(table, self.row_cache_entries));
                sqlite.writer.register(cache.clone());
                ById::Cached(cache)
            }
            Engine::Postgres(postgres) => ById::Gathered(postgres::KeyedReads::new(
                Arc::clone(postgres),
                format!("{select} WHERE id = ANY($1)"),
                id_of,
            )),
        };
        RowsById {
            db: self.clone(),
            select_one: format!("{select} WHERE id = $1"),
            how,
        }
    }

    /// Starts a write transaction. On SQLite it waits its turn for the one writer connection
    /// and is committed together with the writes queued behind it (see `sqlite`).
    pub async fn begin(&self) -> Result<Tx, StoreError> {
        match &self.engine {
            Engine::Sqlite(sqlite) => Ok(Tx::Sqlite(sqlite.writer.begin().await?)),
            Engine::Postgres(postgres) => {
                let ((), conn) = postgres.retrying(|conn| Box::pin(conn.begin())).await?;
                Ok(Tx::Postgres(conn))
            }
        }
    }

    /// Runs one writing statement on its own; returns the number of rows it changed.
    pub async fn execute(&self, query: SqlBuilder) -> Result<u64, StoreError> {
        match &self.engine {
            Engine::Sqlite(_) => {
                let mut tx = self.begin().await?;
                let changed = tx.execute(query).await?;
                tx.commit().await?;
                Ok(changed)
            }
            Engine::Postgres(postgres) => {
                postgres::execute(&mut postgres.acquire().await?, query).await
            }
        }
    }

    /// Runs one writing statement with `RETURNING` on its own; returns its rows.
    pub async fn execute_returning<T: FromRecord>(
        &self,
        query: SqlBuilder,
    ) -> Result<Vec<T>, StoreError> {
        match &self.engine {
            Engine::Sqlite(_) => {
                let mut tx = self.begin().await?;
                let rows = tx.fetch_all(query).await?;
                tx.commit().await?;
                Ok(rows)
            }
            Engine::Postgres(postgres) => {
                postgres::fetch_all(&mut postgres.acquire().await?, query).await
            }
        }
    }

    /// The row a lookup by key finds, if any. On SQLite it is read on the calling thread: a
    /// lookup by key visits a handful of cached pages, less work than a hand-off to a thread.
    pub async fn fetch_optional<T: FromRecord + Send + 'static>(
        &self,
        query: SqlBuilder,
    ) -> Result<Option<T>, StoreError> {
        match &self.engine {
            Engine::Sqlite(sqlite) => sqlite
                .readers
                .with(|conn| Ok(sqlite::fetch(conn, &query, 1)?.pop())),
            Engine::Postgres(postgres) => {
                postgres
                    .read_to_completion(move |conn| {
                        Box::pin(postgres::fetch_optional(conn, query.clone()))
                    })
                    .await
            }
        }
    }

    /// All rows of a query that reads a few rows by key; like `fetch_optional`, on the calling
    /// thread on SQLite.
    pub async fn fetch_all<T: FromRecord + Send + 'static>(
        &self,
        query: SqlBuilder,
    ) -> Result<Vec<T>, StoreError> {
        match &self.engine {
            Engine::Sqlite(sqlite) => sqlite
                .readers
                .with(|conn| sqlite::fetch(conn, &query, usize::MAX)),
            Engine::Postgres(postgres) => {
                postgres
                    .read_to_completion(move |conn| {
                        Box::pin(postgres::fetch_all(conn, query.clone()))
                    })
                    .await
            }
        }
    }

    /// All rows of a filtered list. On SQLite it runs on the calling thread within a budget of
    /// steps, and on a blocking thread when it needs more: it may visit many rows and must not
    /// hold up the requests queued on this one.
    pub async fn list<T: FromRecord + Send + 'static>(
        &self,
        query: SqlBuilder,
    ) -> Result<Vec<T>, StoreError> {
        match &self.engine {
            Engine::Sqlite(sqlite) => {
                sqlite
                    .readers
                    .with_step_budget(move |conn| sqlite::fetch(conn, &query, usize::MAX))
                    .await
            }
            Engine::Postgres(_) => self.fetch_all(query).await,
        }
    }

    /// The rows of a page and those of its count. On SQLite both run one after the other within
    /// one budget of steps, on the calling thread unless they need more (`list`); a hand-off to
    /// a blocking thread and back costs about as much as a capped count. On PostgreSQL they run
    /// side by side on two connections, each a round trip.
    ///
    /// `needs_count` tells from the page's length whether the count is wanted (a page that is
    /// not full tells it): on SQLite the count runs only then, and otherwise its rows are empty.
    pub async fn list_and_count<T, C>(
        &self,
        page: SqlBuilder,
        count: SqlBuilder,
        needs_count: impl Fn(usize) -> bool + Send + 'static,
    ) -> (Result<Vec<T>, StoreError>, Result<Vec<C>, StoreError>)
    where
        T: FromRecord + Send + 'static,
        C: FromRecord + Send + 'static,
    {
        match &self.engine {
            Engine::Sqlite(sqlite) => {
                let both = sqlite
                    .readers
                    .with_step_budget(move |conn| {
                        let items = sqlite::fetch(conn, &page, usize::MAX);
                        let counted = match &items {
                            Ok(items) if needs_count(items.len()) => {
                                sqlite::fetch(conn, &count, usize::MAX)
                            }
                            _ => Ok(Vec::new()),
                        };
                        Ok((items, counted))
                    })
                    .await;
                match both {
                    Ok(both) => both,
                    Err(err) => (Err(err.copy_for_another()), Err(err)),
                }
            }
            Engine::Postgres(_) => tokio::join!(self.fetch_all(page), self.fetch_all(count)),
        }
    }

    pub async fn migrate(&self) -> anyhow::Result<()> {
        super::migrations::migrator()?
            .run(&self.write)
            .await
            .context("applying database migrations")
    }

    pub async fn close(&self) {
        self.write.close().await;
        self.read.close().await;
        match &self.engine {
            Engine::Sqlite(sqlite) => {
                sqlite.readers.close();
                sqlite.writer.close().await;
            }
            Engine::Postgres(postgres) => postgres.close().await,
        }
    }
}

/// A table's rows by id (`Db::rows_by_id`).
pub struct RowsById<T> {
    db: Db,
    /// `SELECT <columns> FROM <table> WHERE id = $1`
    select_one: String,
    how: ById<T>,
}

enum ById<T> {
    Direct,
    Cached(Arc<RowCache<T>>),
    Gathered(postgres::KeyedReads<T>),
}

impl<T: FromRecord + Send + Sync + 'static> RowsById<T> {
    /// The row with `id`, if there is one.
    pub async fn get(&self, id: &str) -> Result<Option<Arc<T>>, StoreError> {
        let read_one = || {
            self.db
                .fetch_optional(SqlBuilder::fixed(&self.select_one, params![id]))
        };
        match &self.how {
            ById::Direct => Ok(read_one().await?.map(Arc::new)),
            ById::Gathered(reads) => reads.get(id).await,
            ById::Cached(cache) => match cache.get(id) {
                Ok(row) => Ok(Some(row)),
                Err(start) => {
                    let row = read_one().await?.map(Arc::new);
                    if let Some(row) = &row {
                        cache.keep(id, Arc::clone(row), start);
                    }
                    Ok(row)
                }
            },
        }
    }
}

/// A write transaction (`Db::begin`): rolled back when dropped without `commit`.
pub enum Tx {
    Sqlite(sqlite::WriteTurn),
    Postgres(postgres::Checkout),
}

impl Tx {
    pub async fn execute(&mut self, query: SqlBuilder) -> Result<u64, StoreError> {
        match self {
            Tx::Sqlite(turn) => sqlite::execute(turn.conn()?, &query),
            Tx::Postgres(conn) => postgres::execute(conn, query).await,
        }
    }

    pub async fn fetch_optional<T: FromRecord>(
        &mut self,
        query: SqlBuilder,
    ) -> Result<Option<T>, StoreError> {
        match self {
            Tx::Sqlite(turn) => Ok(sqlite::fetch(turn.conn()?, &query, 1)?.pop()),
            Tx::Postgres(conn) => postgres::fetch_optional(conn, query).await,
        }
    }

    pub async fn fetch_all<T: FromRecord>(
        &mut self,
        query: SqlBuilder,
    ) -> Result<Vec<T>, StoreError> {
        match self {
            Tx::Sqlite(turn) => sqlite::fetch(turn.conn()?, &query, usize::MAX),
            Tx::Postgres(conn) => postgres::fetch_all(conn, query).await,
        }
    }

    pub async fn commit(self) -> Result<(), StoreError> {
        match self {
            Tx::Sqlite(turn) => turn.commit().await,
            Tx::Postgres(mut conn) => conn.commit().await,
        }
    }
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
    use crate::store::record::Count;
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

    #[tokio::test]
    async fn sqlite_counts_a_list_only_when_its_page_asks() {
        let dir = std::env::temp_dir().join(format!("tandem-db-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.join("t.db").display());
        let db = Db::connect(&url, 2, SqliteSynchronous::Normal)
            .await
            .unwrap();
        let page = || SqlBuilder::new("SELECT 1 AS n UNION ALL SELECT 2 AS n");
        // A count that fails whenever it runs.
        let count = || SqlBuilder::new("SELECT COUNT(*) AS n FROM no_such_table");
        let (items, counted) = db
            .list_and_count::<Count, Count>(page(), count(), |items| {
                assert_eq!(items, 2, "the page's length");
                false
            })
            .await;
        assert_eq!(items.unwrap().len(), 2);
        assert!(counted.unwrap().is_empty(), "the count did not run");
        let (items, counted) = db
            .list_and_count::<Count, Count>(page(), count(), |_| true)
            .await;
        assert_eq!(items.unwrap().len(), 2);
        assert!(counted.is_err(), "the count ran");
        db.close().await;
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
