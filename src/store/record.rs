//! Result rows read by column name, the same way from every driver: sqlx's (PostgreSQL, and
//! `Any` for the operator reads on either database) and rusqlite's (SQLite, see
//! `sqlite::NamedRow`).

use super::StoreError;
use sqlx::any::AnyRow;
use sqlx::postgres::PgRow;
use sqlx::{Any, Decode, Postgres, Type};

/// A column type every driver decodes.
pub trait Column:
    for<'r> Decode<'r, Any>
    + Type<Any>
    + for<'r> Decode<'r, Postgres>
    + Type<Postgres>
    + rusqlite::types::FromSql
{
}

impl<T> Column for T where
    T: for<'r> Decode<'r, Any>
        + Type<Any>
        + for<'r> Decode<'r, Postgres>
        + Type<Postgres>
        + rusqlite::types::FromSql
{
}

/// One result row.
pub trait Record {
    fn column<T: Column>(&self, name: &str) -> Result<T, StoreError>;
}

impl Record for AnyRow {
    fn column<T: Column>(&self, name: &str) -> Result<T, StoreError> {
        Ok(sqlx::Row::try_get(self, name)?)
    }
}

impl Record for PgRow {
    fn column<T: Column>(&self, name: &str) -> Result<T, StoreError> {
        Ok(sqlx::Row::try_get(self, name)?)
    }
}

/// A value made from one result row.
pub trait FromRecord: Sized {
    fn from_record(row: &impl Record) -> Result<Self, StoreError>;
}

/// The `n` column of a `SELECT COUNT(*) AS n` query.
pub struct Count(pub i64);

impl FromRecord for Count {
    fn from_record(row: &impl Record) -> Result<Self, StoreError> {
        row.column("n").map(Count)
    }
}
