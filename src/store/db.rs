//! Database connection pools for the two supported backends behind one SQL dialect.
//!
//! Queries use `$1`-style placeholders, which both PostgreSQL and SQLite accept, and portable
//! types (TEXT, BIGINT for millisecond timestamps and counters).

use crate::config::SqliteSynchronous;
use anyhow::Context;
use sqlx::any::{AnyPoolOptions, install_default_drivers};
use sqlx::{AnyPool, Executor};
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Pools for reads and writes. On SQLite all writes go through one connection, which serializes
/// them in the process instead of letting writers collide on the database lock; on PostgreSQL
/// both are the same pool.
#[derive(Clone, Debug)]
pub struct Db {
    pub backend: Backend,
    pub read: AnyPool,
    pub write: AnyPool,
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
        Ok(Self {
            backend,
            read,
            write,
        })
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
