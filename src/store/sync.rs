//! Synchronization bookkeeping in SQL: claiming due connections under a lease, recording the
//! outcome of a run (schedule, state, pushed membership, history) in one transaction, and
//! reading the history back.

use super::connections::{columns, parse_stored_state};
use super::record::{FromRecord, Record};
use super::sql::{Param, SqlBuilder, params};
use super::{Backend, Db, StoreError, Tx};
use crate::domain::connection::{Connection, ConnectionState};
use crate::domain::ids::ResourceId;

use crate::domain::sync::{RunVerdict, Schedule, Trigger, settle};
use crate::domain::time::Timestamp;
use anyhow::Context;
use async_trait::async_trait;
use sqlx::{AnyConnection, Row};
use std::collections::BTreeSet;

/// A connection claimed for one run.
#[derive(Debug, Clone)]
pub struct ClaimedSync {
    pub connection: Connection,
    pub trigger: Trigger,
    /// The schedule as claimed: a different value at the end means an admin rescheduled it.
    pub next_sync_at: Timestamp,
    pub consecutive_failures: u32,
}

/// A finished run, as the engine reports it.
#[derive(Debug, Clone)]
pub struct FinishedRun {
    pub id: ResourceId,
    pub claim: ClaimedSync,
    pub started_at: Timestamp,
    pub finished_at: Timestamp,
    /// A provider resource created (or linked) by this run.
    pub connected_resource_id: Option<String>,
    /// Members the provider accepted: the pushed membership changes by exactly these.
    pub added: Vec<String>,
    pub removed: Vec<String>,
    /// Changes that were due but not applied.
    pub failed: u64,
    pub error: Option<String>,
    pub verdict: RunVerdict,
}

/// A recorded run, for the history operation.
#[derive(Debug, Clone, PartialEq)]
pub struct SyncRun {
    pub id: ResourceId,
    pub trigger: Trigger,
    pub started_at: Timestamp,
    pub finished_at: Timestamp,
    pub added: i64,
    pub removed: i64,
    pub failed: i64,
    pub error: Option<String>,
}

/// A connection's synchronization status.
#[derive(Debug, Clone, PartialEq)]
pub struct SyncStatus {
    pub state: ConnectionState,
    pub state_reason: Option<String>,
    pub last_synced_at: Option<Timestamp>,
    pub consecutive_failures: i64,
    /// Only for connections the engine will sync (pending, active).
    pub next_sync_at: Option<Timestamp>,
}

#[async_trait]
pub trait SyncRepository: Send + Sync {
    /// Leases up to `limit` due connections of the given providers to `owner` until
    /// `lease_until`. Each due connection goes to one claimant; an expired lease is free again.
    async fn claim(
        &self,
        owner: &str,
        providers: &[String],
        now: Timestamp,
        lease_until: Timestamp,
        limit: usize,
    ) -> Result<Vec<ClaimedSync>, StoreError>;
    /// Extends a lease this owner still holds; false when it holds it no more.
    async fn renew(
        &self,
        owner: &str,
        connection: &ResourceId,
        lease_until: Timestamp,
    ) -> Result<bool, StoreError>;
    /// The membership last pushed to the connection's provider.
    async fn synced_members(&self, connection: &ResourceId)
    -> Result<BTreeSet<String>, StoreError>;
    /// Records a run and releases the lease, atomically; false (and nothing recorded) when the
    /// connection is gone or the lease was lost.
    async fn finish(&self, owner: &str, run: &FinishedRun) -> Result<bool, StoreError>;
    /// The connection's status and up to `limit` of its runs, newest first, after the cursor
    /// `(started_at, id)` of a previous page; None when there is no such connection.
    async fn history(
        &self,
        connection: &ResourceId,
        after: Option<(Timestamp, ResourceId)>,
        limit: u32,
    ) -> Result<Option<SyncHistory>, StoreError>;
}

/// A status and runs read from one snapshot: a run recorded between two separate reads would
/// show up in the runs while the status (failure count, next sync) still predates it.
#[derive(Debug, Clone, PartialEq)]
pub struct SyncHistory {
    pub status: SyncStatus,
    pub runs: Vec<SyncRun>,
}

pub struct SqlSync {
    db: Db,
    /// Runs kept per connection.
    keep_runs: u32,
}

impl SqlSync {
    pub fn new(db: Db, keep_runs: u32) -> Self {
        Self { db, keep_runs }
    }
}

/// Inside `change_state`'s transaction: an activated connection is due now, as an `activated`
/// run, with its failure count reset.
pub(crate) async fn schedule_activation(
    tx: &mut Tx,
    id: &str,
    now: Timestamp,
) -> Result<(), StoreError> {
    tx.execute(SqlBuilder::fixed(
        "UPDATE audience_connections SET next_sync_at = $2, next_sync_trigger = $3, \
         consecutive_failures = 0 WHERE id = $1",
        params![id, now.millis(), Trigger::Activated.as_str()],
    ))
    .await?;
    Ok(())
}

/// Inside `delete`'s transaction: a deleted connection leaves no runs or membership behind.
pub(crate) async fn delete_history(tx: &mut Tx, id: &str) -> Result<(), StoreError> {
    for table in ["audience_sync_runs", "audience_synced_members"] {
        tx.execute(SqlBuilder::fixed(
            &format!("DELETE FROM {table} WHERE connection_id = $1"),
            params![id],
        ))
        .await?;
    }
    Ok(())
}

fn parse_trigger(text: &str) -> Result<Trigger, StoreError> {
    Ok(Trigger::parse(text).with_context(|| format!("stored sync trigger {text:?} is unknown"))?)
}

impl FromRecord for ClaimedSync {
    fn from_record(row: &impl Record) -> Result<Self, StoreError> {
        Ok(ClaimedSync {
            connection: Connection::from_record(row)?,
            trigger: parse_trigger(&row.column::<String>("next_sync_trigger")?)?,
            next_sync_at: Timestamp::from_millis(row.column("next_sync_at")?),
            consecutive_failures: u32::try_from(row.column::<i64>("consecutive_failures")?)
                .unwrap_or(u32::MAX),
        })
    }
}

/// What `finish` reads of a connection under its lock.
struct SyncedConnection {
    lease_owner: Option<String>,
    state: ConnectionState,
    schedule: Schedule,
    revision: i64,
    updated_at: i64,
}

impl FromRecord for SyncedConnection {
    fn from_record(row: &impl Record) -> Result<Self, StoreError> {
        Ok(SyncedConnection {
            lease_owner: row.column("lease_owner")?,
            state: parse_stored_state(&row.column::<String>("state")?)?,
            schedule: Schedule {
                next_sync_at: Timestamp::from_millis(row.column("next_sync_at")?),
                trigger: parse_trigger(&row.column::<String>("next_sync_trigger")?)?,
                consecutive_failures: row.column("consecutive_failures")?,
            },
            revision: row.column("revision")?,
            updated_at: row.column("updated_at")?,
        })
    }
}

/// Rows per multi-row INSERT of members: well under both backends' parameter limits.
const MEMBER_CHUNK: usize = 500;

#[async_trait]
impl SyncRepository for SqlSync {
    async fn claim(
        &self,
        owner: &str,
        providers: &[String],
        now: Timestamp,
        lease_until: Timestamp,
        limit: usize,
    ) -> Result<Vec<ClaimedSync>, StoreError> {
        if providers.is_empty() || limit == 0 {
            return Ok(Vec::new());
        }
        let mut q = SqlBuilder::new("UPDATE audience_connections SET lease_owner = ");
        q.bind(Param::Text(owner.to_owned()))
            .push(", lease_expires_at = ")
            .bind(Param::Int(lease_until.millis()))
            .push(
                " WHERE id IN (SELECT id FROM audience_connections \
                 WHERE state IN ('pending', 'active') AND next_sync_at <= ",
            )
            .bind(Param::Int(now.millis()))
            .push(" AND (lease_expires_at IS NULL OR lease_expires_at <= ")
            .bind(Param::Int(now.millis()))
            .push(") AND provider_name IN ")
            .bind_list(providers.iter().map(|p| Param::Text(p.clone())))
            .push(" ORDER BY next_sync_at LIMIT ")
            .bind(Param::Int(i64::try_from(limit).unwrap_or(i64::MAX)));
        // SQLite: claims take the database's write lock, one at a time.
        if self.db.backend == Backend::Postgres {
            q.push(" FOR UPDATE SKIP LOCKED");
        }
        q.push(concat!(
            ") RETURNING ",
            columns!(),
            ", next_sync_at, next_sync_trigger, consecutive_failures"
        ));
        self.db.execute_returning(q).await
    }

    async fn renew(
        &self,
        owner: &str,
        connection: &ResourceId,
        lease_until: Timestamp,
    ) -> Result<bool, StoreError> {
        let renewed = self
            .db
            .execute(SqlBuilder::fixed(
                "UPDATE audience_connections SET lease_expires_at = $3 \
                 WHERE id = $1 AND lease_owner = $2",
                params![connection.as_str(), owner, lease_until.millis()],
            ))
            .await?;
        Ok(renewed > 0)
    }

    async fn synced_members(
        &self,
        connection: &ResourceId,
    ) -> Result<BTreeSet<String>, StoreError> {
        let rows =
            sqlx::query("SELECT customer_id FROM audience_synced_members WHERE connection_id = $1")
                .bind(connection.as_str())
                .fetch_all(&self.db.read)
                .await?;
        rows.iter()
            .map(|r| r.try_get("customer_id").map_err(StoreError::from))
            .collect()
    }

    async fn finish(&self, owner: &str, run: &FinishedRun) -> Result<bool, StoreError> {
        let id = run.claim.connection.id.as_str();
        let mut tx = self.db.begin().await?;
        let select = match self.db.backend {
            Backend::Postgres => {
                "SELECT state, revision, updated_at, lease_owner, next_sync_at, next_sync_trigger, \
                 consecutive_failures FROM audience_connections WHERE id = $1 FOR UPDATE"
            }
            Backend::Sqlite => {
                "SELECT state, revision, updated_at, lease_owner, next_sync_at, next_sync_trigger, \
                 consecutive_failures FROM audience_connections WHERE id = $1"
            }
        };
        let Some(locked) = tx
            .fetch_optional::<SyncedConnection>(SqlBuilder::fixed(select, params![id]))
            .await?
        else {
            return Ok(false); // deleted meanwhile: record nothing
        };
        if locked.lease_owner.as_deref() != Some(owner) {
            return Ok(false);
        }
        let (state, current) = (locked.state, locked.schedule);
        let settled = settle(state, &current, run.claim.next_sync_at, &run.verdict);
        // Whatever the representation shows changed: new revision (entity tag) and updatedAt.
        let changed =
            settled.synced || settled.state != state || run.connected_resource_id.is_some();
        let revision = locked.revision + i64::from(changed);
        let updated_at = locked.updated_at;
        let mut q = SqlBuilder::new(
            "UPDATE audience_connections SET lease_owner = NULL, lease_expires_at = NULL, \
             next_sync_at = ",
        );
        q.bind(Param::Int(settled.schedule.next_sync_at.millis()))
            .push(", next_sync_trigger = ")
            .bind(Param::Text(settled.schedule.trigger.as_str().to_owned()))
            .push(", consecutive_failures = ")
            .bind(Param::Int(settled.schedule.consecutive_failures))
            .push(", state = ")
            .bind(Param::Text(settled.state.as_str().to_owned()))
            .push(", revision = ")
            .bind(Param::Int(revision));
        if changed {
            q.push(", updated_at = ")
                .bind(Param::Int(run.finished_at.millis().max(updated_at)));
        }
        if let Some(resource) = &run.connected_resource_id {
            q.push(", connected_resource_id = ")
                .bind(Param::Text(resource.clone()));
        }
        if settled.synced {
            q.push(", last_synced_at = ")
                .bind(Param::Int(run.finished_at.millis()));
        }
        match settled.state_reason {
            Some(Some(text)) => {
                q.push(", state_reason = ").bind(Param::Text(text));
            }
            Some(None) => {
                q.push(", state_reason = NULL");
            }
            None => {}
        }
        q.push(" WHERE id = ").bind(Param::Text(id.to_owned()));
        tx.execute(q).await?;

        for chunk in run.removed.chunks(MEMBER_CHUNK) {
            let mut q =
                SqlBuilder::new("DELETE FROM audience_synced_members WHERE connection_id = ");
            q.bind(Param::Text(id.to_owned()))
                .push(" AND customer_id IN ")
                .bind_list(chunk.iter().map(|m| Param::Text(m.clone())));
            tx.execute(q).await?;
        }
        for chunk in run.added.chunks(MEMBER_CHUNK) {
            let mut q = SqlBuilder::new(
                "INSERT INTO audience_synced_members (connection_id, customer_id) VALUES ",
            );
            for (i, member) in chunk.iter().enumerate() {
                q.push(if i == 0 { "(" } else { ", (" })
                    .bind(Param::Text(id.to_owned()))
                    .push(", ")
                    .bind(Param::Text(member.clone()))
                    .push(")");
            }
            q.push(" ON CONFLICT DO NOTHING");
            tx.execute(q).await?;
        }
        tx.execute(SqlBuilder::fixed(
            "INSERT INTO audience_sync_runs (id, connection_id, run_trigger, started_at, \
             finished_at, added, removed, failed, error, instance) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
            params![
                run.id.as_str(),
                id,
                run.claim.trigger.as_str(),
                run.started_at.millis(),
                run.finished_at.millis(),
                i64::try_from(run.added.len()).unwrap_or(i64::MAX),
                i64::try_from(run.removed.len()).unwrap_or(i64::MAX),
                i64::try_from(run.failed).unwrap_or(i64::MAX),
                run.error.as_deref(),
                owner,
            ],
        ))
        .await?;
        tx.execute(SqlBuilder::fixed(
            "DELETE FROM audience_sync_runs WHERE connection_id = $1 AND id NOT IN \
             (SELECT id FROM audience_sync_runs WHERE connection_id = $1 \
              ORDER BY started_at DESC, id DESC LIMIT $2)",
            params![id, i64::from(self.keep_runs)],
        ))
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn history(
        &self,
        connection: &ResourceId,
        after: Option<(Timestamp, ResourceId)>,
        limit: u32,
    ) -> Result<Option<SyncHistory>, StoreError> {
        let mut tx = self.db.read.begin().await?;
        if self.db.backend == Backend::Postgres {
            // Under READ COMMITTED each statement would see its own snapshot. (On SQLite a
            // read transaction keeps its first snapshot already.)
            sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                .execute(&mut *tx)
                .await?;
        }
        let Some(status) = status(&mut tx, connection).await? else {
            return Ok(None);
        };
        let runs = runs(&mut tx, connection, after, limit).await?;
        tx.commit().await?;
        Ok(Some(SyncHistory { status, runs }))
    }
}

async fn status(
    conn: &mut AnyConnection,
    connection: &ResourceId,
) -> Result<Option<SyncStatus>, StoreError> {
    let Some(row) = sqlx::query(
        "SELECT state, state_reason, last_synced_at, consecutive_failures, next_sync_at \
         FROM audience_connections WHERE id = $1",
    )
    .bind(connection.as_str())
    .fetch_optional(&mut *conn)
    .await?
    else {
        return Ok(None);
    };
    let state = parse_stored_state(&row.try_get::<String, _>("state")?)?;
    let syncable = matches!(state, ConnectionState::Pending | ConnectionState::Active);
    Ok(Some(SyncStatus {
        state,
        state_reason: row.try_get("state_reason")?,
        last_synced_at: row
            .try_get::<Option<i64>, _>("last_synced_at")?
            .map(Timestamp::from_millis),
        consecutive_failures: row.try_get("consecutive_failures")?,
        next_sync_at: syncable
            .then(|| row.try_get::<i64, _>("next_sync_at"))
            .transpose()?
            .map(Timestamp::from_millis),
    }))
}

async fn runs(
    conn: &mut AnyConnection,
    connection: &ResourceId,
    after: Option<(Timestamp, ResourceId)>,
    limit: u32,
) -> Result<Vec<SyncRun>, StoreError> {
    let mut q = SqlBuilder::new(
        "SELECT id, run_trigger, started_at, finished_at, added, removed, failed, error \
         FROM audience_sync_runs WHERE connection_id = ",
    );
    q.bind(Param::Text(connection.as_str().to_owned()));
    if let Some((started_at, id)) = after {
        q.push(" AND (started_at < ")
            .bind(Param::Int(started_at.millis()))
            .push(" OR (started_at = ")
            .bind(Param::Int(started_at.millis()))
            .push(" AND id < ")
            .bind(Param::Text(id.as_str().to_owned()))
            .push("))");
    }
    q.push(" ORDER BY started_at DESC, id DESC LIMIT ")
        .bind(Param::Int(i64::from(limit)));
    let rows = q.build().fetch_all(&mut *conn).await?;
    rows.iter()
        .map(|row| {
            Ok(SyncRun {
                id: ResourceId::from_trusted(row.try_get("id")?),
                trigger: parse_trigger(&row.try_get::<String, _>("run_trigger")?)?,
                started_at: Timestamp::from_millis(row.try_get("started_at")?),
                finished_at: Timestamp::from_millis(row.try_get("finished_at")?),
                added: row.try_get("added")?,
                removed: row.try_get("removed")?,
                failed: row.try_get("failed")?,
                error: row.try_get("error")?,
            })
        })
        .collect()
}
