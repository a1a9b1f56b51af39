//! The store's PostgreSQL connections, pooled here rather than by sqlx.
//!
//! sqlx's pool sends a round trip (a Sync, then a wait for ReadyForQuery) each time a
//! connection goes back to it, so every statement cost two round trips: a get-by-id spent 18%
//! of the server's CPU in that ping. Here a connection goes back as it is. One whose statement
//! did not finish (a dropped future; reads avoid that with `read_to_completion`) or failed
//! other than with the server's own error is closed instead; one that sat idle longer than
//! `IDLE_LIMIT` is replaced when checked out, since a firewall or the server may have dropped
//! it meanwhile.

use super::StoreError;
use super::record::FromRecord;
use super::sql::SqlBuilder;
use anyhow::{Context, anyhow};
use sqlx::postgres::{PgConnectOptions, PgConnection, PgDatabaseError, PgSeverity};
use sqlx::{AssertSqlSafe, Connection, Executor};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, mpsc, oneshot};

/// Statements run on a checkout, for `Connections::retrying`.
pub type Statements<'c, T> =
    std::pin::Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'c>>;

/// How long an idle connection is trusted to be alive.
const IDLE_LIMIT: Duration = Duration::from_secs(300);

#[derive(Debug)]
pub struct Connections {
    options: PgConnectOptions,
    /// Most recently used last: checkouts take the warmest.
    idle: Mutex<Vec<(PgConnection, Instant)>>,
    /// One per connection open or being opened, up to the configured maximum.
    permits: Arc<Semaphore>,
    max: u32,
    acquire_timeout: Duration,
}

impl Connections {
    pub fn new(options: PgConnectOptions, max: u32, acquire_timeout: Duration) -> Arc<Self> {
        let max = max.max(1);
        Arc::new(Self {
            options,
            idle: Mutex::new(Vec::new()),
            permits: Arc::new(Semaphore::new(usize::try_from(max).unwrap_or(usize::MAX))),
            max,
            acquire_timeout,
        })
    }

    /// A connection for the caller alone until the `Checkout` is dropped.
    pub async fn acquire(self: &Arc<Self>) -> Result<Checkout, StoreError> {
        let permit = tokio::time::timeout(
            self.acquire_timeout,
            Arc::clone(&self.permits).acquire_owned(),
        )
        .await
        .map_err(|_| {
            anyhow!(
                "all {} PostgreSQL connections stayed busy for {:?} (database.max_connections)",
                self.max,
                self.acquire_timeout
            )
        })?
        .map_err(|_| anyhow!("the PostgreSQL connections are closed"))?;
        let conn = match self.take_idle() {
            Some(conn) => conn,
            None => tokio::time::timeout(
                self.acquire_timeout,
                PgConnection::connect_with(&self.options),
            )
            .await
            .map_err(|_| {
                anyhow!(
                    "connecting to PostgreSQL took over {:?}",
                    self.acquire_timeout
                )
            })?
            .context("connecting to PostgreSQL")?,
        };
        Ok(Checkout {
            conn: Some(conn),
            pool: Arc::clone(self),
            permit: Some(permit),
            settled: true,
            in_transaction: false,
        })
    }

    /// Runs `statements` on a connection and returns it with their result. When they fail
    /// because the connection was dead (a server restart ends every idle connection), they run
    /// once more on a new one: only for statements that change nothing unless they succeed
    /// (reads, and `BEGIN`).
    pub async fn retrying<T>(
        self: &Arc<Self>,
        mut statements: impl for<'c> FnMut(&'c mut Checkout) -> Statements<'c, T>,
    ) -> Result<(T, Checkout), StoreError> {
        let mut conn = self.acquire().await?;
        match statements(&mut conn).await {
            Ok(value) => Ok((value, conn)),
            Err(err) if conn.settled => Err(err),
            Err(err) => {
                tracing::warn!(error = %err, "a PostgreSQL connection was lost; trying another");
                drop(conn);
                let mut conn = self.acquire().await?;
                let value = statements(&mut conn).await?;
                Ok((value, conn))
            }
        }
    }

    /// `retrying` as a task of its own, for reads made on a request's behalf. A request dropped
    /// midway (its client hung up, or it timed out) would otherwise cut the statement off, and
    /// a connection left mid-statement is closed: the next checkout would open a new one
    /// (each benchmark run's end, 32 lists cut off, closed 9-28 connections).
    pub async fn read_to_completion<T: Send + 'static>(
        self: &Arc<Self>,
        statements: impl for<'c> FnMut(&'c mut Checkout) -> Statements<'c, T> + Send + 'static,
    ) -> Result<T, StoreError> {
        let pool = Arc::clone(self);
        tokio::spawn(async move { pool.retrying(statements).await.map(|(value, _conn)| value) })
            .await
            .context("a PostgreSQL read task stopped")?
    }

    fn take_idle(&self) -> Option<PgConnection> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        while let Some((conn, since)) = idle.pop() {
            if since.elapsed() < IDLE_LIMIT {
                return Some(conn);
            }
            // Too old to trust: dropping it closes its socket.
            drop(conn);
        }
        None
    }

    fn give_back(&self, conn: PgConnection) {
        self.idle
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((conn, Instant::now()));
    }

    /// Refuses further checkouts and closes the idle connections.
    pub async fn close(&self) {
        self.permits.close();
        let idle = std::mem::take(&mut *self.idle.lock().unwrap_or_else(|e| e.into_inner()));
        for (conn, _) in idle {
            let _ = conn.close().await;
        }
    }
}

/// A checked-out connection. Each statement goes `conn()`, run, `settle(result)`.
pub struct Checkout {
    conn: Option<PgConnection>,
    pool: Arc<Connections>,
    permit: Option<OwnedSemaphorePermit>,
    /// The last statement ran to its end, successfully or with an error the server reported.
    settled: bool,
    /// `begin` ran and neither `commit` nor the rollback did.
    in_transaction: bool,
}

impl Checkout {
    /// The connection, for one statement whose result goes to `settle`.
    pub fn conn(&mut self) -> &mut PgConnection {
        self.settled = false;
        self.conn
            .as_mut()
            .expect("a checkout holds its connection until dropped")
    }

    /// Passes a statement's result through, noting whether the connection can be reused.
    pub fn settle<T>(&mut self, result: Result<T, sqlx::Error>) -> Result<T, StoreError> {
        self.settled = match &result {
            Ok(_) | Err(sqlx::Error::RowNotFound) => true,
            // The server's report of a failed statement, after which the session goes on,
            // unless it is FATAL (the server ends the session, as on a restart) or worse.
            Err(sqlx::Error::Database(err)) => err
                .try_downcast_ref::<PgDatabaseError>()
                .is_none_or(|err| !matches!(err.severity(), PgSeverity::Fatal | PgSeverity::Panic)),
            Err(_) => false,
        };
        Ok(result?)
    }

    async fn simple(&mut self, statement: &'static str) -> Result<(), StoreError> {
        let result = self.conn().execute(statement).await.map(drop);
        self.settle(result)
    }

    pub async fn begin(&mut self) -> Result<(), StoreError> {
        self.simple("BEGIN").await?;
        self.in_transaction = true;
        Ok(())
    }

    pub async fn commit(&mut self) -> Result<(), StoreError> {
        self.simple("COMMIT").await?;
        self.in_transaction = false;
        Ok(())
    }
}

impl Drop for Checkout {
    fn drop(&mut self) {
        let Some(mut conn) = self.conn.take() else {
            return;
        };
        if !self.settled {
            return;
        }
        if !self.in_transaction {
            self.pool.give_back(conn);
            return;
        }
        // A transaction dropped uncommitted: roll it back before anyone else gets the
        // connection, keeping the permit until then. Outside a runtime (shutdown) the
        // connection is just closed, which ends the transaction too.
        let (pool, permit) = (Arc::clone(&self.pool), self.permit.take());
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                if conn.execute("ROLLBACK").await.is_ok() {
                    pool.give_back(conn);
                }
                drop(permit);
            });
        }
    }
}

/// The rows of `query`, decoded.
pub async fn fetch_all<T: FromRecord>(
    conn: &mut Checkout,
    query: SqlBuilder,
) -> Result<Vec<T>, StoreError> {
    let rows = query.build().fetch_all(conn.conn()).await;
    conn.settle(rows)?.iter().map(T::from_record).collect()
}

/// The first row of `query`, if any, decoded.
pub async fn fetch_optional<T: FromRecord>(
    conn: &mut Checkout,
    query: SqlBuilder,
) -> Result<Option<T>, StoreError> {
    let row = query.build().fetch_optional(conn.conn()).await;
    conn.settle(row)?
        .map(|row| T::from_record(&row))
        .transpose()
}

/// Runs `query`; returns the number of rows it changed.
pub async fn execute(conn: &mut Checkout, query: SqlBuilder) -> Result<u64, StoreError> {
    let done = query.build().execute(conn.conn()).await;
    Ok(conn.settle(done)?.rows_affected())
}

/// Reads of single rows by key, gathered: the lookups that arrive while a statement is out go
/// together in the next one, `WHERE <key> = ANY($1)`. A get-by-id is bound by its round trip
/// to the server (the server's work for one indexed row is a fraction of the cost of receiving
/// and answering a statement), so under concurrent load one statement for many lookups
/// serves more of them on the same CPU. Each lookup is still read by a statement that starts
/// after it arrived, so it sees every write committed before it: nothing is cached.
///
/// One statement is out at a time while answers come back promptly, so that the next one
/// gathers every lookup that arrived meanwhile; a statement out for longer than
/// `KEYED_PATIENCE` (a slow or dead connection) lets another start beside it, up to
/// `KEYED_READERS`. While one is stuck, the next ones go out a `KEYED_PATIENCE` apart.
pub struct KeyedReads<T> {
    queue: mpsc::UnboundedSender<Lookup<T>>,
}

struct Lookup<T> {
    key: String,
    reply: oneshot::Sender<Result<Option<Arc<T>>, StoreError>>,
}

/// Statements a `KeyedReads` has out at most, when earlier ones are slow to answer.
const KEYED_READERS: usize = 4;
/// How long the next statement waits for the one out before it starts beside it. Loopback
/// round trips take 0.1-0.5 ms under load; a statement out this long is stuck or slow, and the
/// lookups behind it should not wait for it. Measured on one seeded database (get-by-id, 32
/// clients): four statements out freely, 31,000-34,000 req/s; one at a time, 42,000-45,000.
const KEYED_PATIENCE: Duration = Duration::from_millis(5);
/// Keys one statement reads at most.
const KEYED_BATCH: usize = 64;

impl<T: FromRecord + Send + Sync + 'static> KeyedReads<T> {
    /// Lookups with `select_by_keys`, which reads the rows whose key is in the text array `$1`;
    /// `key_of` tells a row's key. Starts the readers on the current Tokio runtime.
    pub fn new(pool: Arc<Connections>, select_by_keys: String, key_of: fn(&T) -> &str) -> Self {
        let (queue, lookups) = mpsc::unbounded_channel();
        let lookups = Arc::new(tokio::sync::Mutex::new(lookups));
        let select_by_keys: Arc<str> = select_by_keys.into();
        let out = Arc::new(Outstanding::default());
        for _ in 0..KEYED_READERS {
            tokio::spawn(read_batches(
                Arc::clone(&pool),
                Arc::clone(&lookups),
                Arc::clone(&out),
                Arc::clone(&select_by_keys),
                key_of,
            ));
        }
        Self { queue }
    }

    /// The row with `key`, if there is one.
    pub async fn get(&self, key: &str) -> Result<Option<Arc<T>>, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send(Lookup {
                key: key.to_owned(),
                reply,
            })
            .map_err(|_| anyhow!("the PostgreSQL readers by key have stopped"))?;
        answer
            .await
            .map_err(|_| anyhow!("a PostgreSQL reader by key stopped before answering"))?
    }
}

/// The statements a `KeyedReads` has out.
#[derive(Default)]
struct Outstanding {
    count: AtomicUsize,
    answered: Notify,
}

impl Outstanding {
    /// Counts a statement as out until the guard drops.
    fn start(&self) -> OutGuard<'_> {
        self.count.fetch_add(1, Ordering::SeqCst);
        OutGuard(self)
    }

    /// Returns once no statement is out.
    async fn none(&self) {
        loop {
            let answered = self.answered.notified();
            if self.count.load(Ordering::SeqCst) == 0 {
                return;
            }
            answered.await;
        }
    }
}

struct OutGuard<'a>(&'a Outstanding);

impl Drop for OutGuard<'_> {
    fn drop(&mut self) {
        self.0.count.fetch_sub(1, Ordering::SeqCst);
        self.0.answered.notify_waiters();
    }
}

/// One reader of a `KeyedReads`: takes the lookups waiting (at least one), reads them in one
/// statement and answers each. Ends when the `KeyedReads` is dropped.
async fn read_batches<T: FromRecord + Send + Sync + 'static>(
    pool: Arc<Connections>,
    lookups: Arc<tokio::sync::Mutex<mpsc::UnboundedReceiver<Lookup<T>>>>,
    out: Arc<Outstanding>,
    select_by_keys: Arc<str>,
    key_of: fn(&T) -> &str,
) {
    let mut batch = Vec::with_capacity(KEYED_BATCH);
    loop {
        let statement = {
            // The reader holding the queue waits for a first lookup, then for the statement
            // out (if any) to answer, and takes everything that arrived by then.
            let mut lookups = lookups.lock().await;
            if lookups.recv_many(&mut batch, 1).await == 0 {
                return;
            }
            let _ = tokio::time::timeout(KEYED_PATIENCE, out.none()).await;
            while batch.len() < KEYED_BATCH
                && let Ok(lookup) = lookups.try_recv()
            {
                batch.push(lookup);
            }
            // Counted before the queue is released, so the next reader waits for it.
            out.start()
        };
        // Lookups whose request went away (the client hung up) need no answer.
        batch.retain(|lookup| !lookup.reply.is_closed());
        if batch.is_empty() {
            continue;
        }
        let keys: Arc<[String]> = batch.iter().map(|lookup| lookup.key.clone()).collect();
        let read = pool
            .retrying(|conn| {
                let (sql, keys) = (Arc::clone(&select_by_keys), Arc::clone(&keys));
                Box::pin(async move {
                    let rows = sqlx::query(AssertSqlSafe(&*sql))
                        .bind(&*keys)
                        .fetch_all(conn.conn())
                        .await;
                    conn.settle(rows)?
                        .iter()
                        .map(T::from_record)
                        .collect::<Result<Vec<T>, _>>()
                })
            })
            .await
            // The connection goes back before the answers go out.
            .map(|(rows, _conn)| rows);
        drop(statement);
        match read {
            Ok(rows) => {
                let rows: Vec<Arc<T>> = rows.into_iter().map(Arc::new).collect();
                let by_key: HashMap<&str, &Arc<T>> =
                    rows.iter().map(|row| (key_of(row), row)).collect();
                for lookup in batch.drain(..) {
                    let row = by_key.get(lookup.key.as_str()).map(|row| Arc::clone(row));
                    let _ = lookup.reply.send(Ok(row));
                }
            }
            Err(err) => {
                for lookup in batch.drain(..) {
                    let _ = lookup.reply.send(Err(err.copy_for_another()));
                }
            }
        }
    }
}
