//! Customer audience connections in SQL.

use super::db::RowsById;
use super::record::{FromRecord, Record};
use super::sql::{Param, SqlBuilder, params};
use super::{Backend, Db, StoreError};
use crate::domain::connection::{
    ActionDecision, AudienceRef, Connection, ConnectionState, ProviderName, decide_action,
};
use crate::domain::etag::Condition;
use crate::domain::ids::ResourceId;
use crate::domain::time::Timestamp;
use crate::domain::user::UserRef;
use anyhow::Context;
use async_trait::async_trait;
use std::sync::Arc;

/// Which connections a list request wants.
#[derive(Debug, Clone, Default)]
pub struct ConnectionFilter {
    pub audience_id: Option<ResourceId>,
    pub states: Vec<ConnectionState>,
    /// Resume after this position (creation time, id) of the previous page.
    pub after: Option<(Timestamp, ResourceId)>,
    pub limit: u32,
}

/// The result of asking for a state change.
#[derive(Debug)]
pub enum ActionResult {
    Changed(Connection),
    Unchanged(Connection),
    PreconditionFailed,
    Forbidden(Connection),
    NotFound,
}

#[async_trait]
pub trait ConnectionRepository: Send + Sync {
    /// Stores a new connection; `StoreError::Duplicate` when the audience already has a
    /// connection to that provider name.
    async fn insert(&self, connection: &Connection) -> Result<(), StoreError>;
    /// Shared: on SQLite the row may come from the cache of rows read by id.
    async fn get(&self, id: &ResourceId) -> Result<Option<Arc<Connection>>, StoreError>;
    async fn list(&self, filter: &ConnectionFilter) -> Result<Vec<Connection>, StoreError>;
    /// Applies an action atomically: the precondition and the state machine are checked against
    /// the row as it is when locked.
    async fn change_state(
        &self,
        id: &ResourceId,
        target: ConnectionState,
        if_match: Option<&Condition>,
        by: &UserRef,
        reason: Option<&str>,
    ) -> Result<ActionResult, StoreError>;
    /// Removes a connection; false when there was none.
    async fn delete(&self, id: &ResourceId) -> Result<bool, StoreError>;
}

macro_rules! columns {
    () => {
        "id, audience_id, audience_name, provider_name, connected_resource_id, state, \
         state_reason, revision, created_at, created_by_id, created_by_username, \
         created_by_first_name, created_by_last_name, updated_at, updated_by_id, \
         updated_by_username, updated_by_first_name, updated_by_last_name, last_synced_at"
    };
}
pub(crate) use columns;

pub struct SqlConnections {
    db: Db,
    by_id: RowsById<Connection>,
}

impl SqlConnections {
    pub fn new(db: Db) -> Self {
        let by_id = db.rows_by_id(
            "audience_connections",
            concat!("SELECT ", columns!(), " FROM audience_connections"),
            |row: &Connection| row.id.as_str(),
        );
        Self { db, by_id }
    }
}

fn user_from_row(row: &impl Record, prefix: &str) -> Result<UserRef, StoreError> {
    Ok(UserRef {
        id: row.column(format!("{prefix}_id").as_str())?,
        username: row.column(format!("{prefix}_username").as_str())?,
        first_name: row.column(format!("{prefix}_first_name").as_str())?,
        last_name: row.column(format!("{prefix}_last_name").as_str())?,
    })
}

/// A connection state as stored; an unknown one is an error (the database holds only ours).
pub(crate) fn parse_stored_state(text: &str) -> Result<ConnectionState, StoreError> {
    Ok(
        ConnectionState::parse(text)
            .with_context(|| format!("stored state {text:?} is unknown"))?,
    )
}

impl FromRecord for Connection {
    fn from_record(row: &impl Record) -> Result<Self, StoreError> {
        let provider: String = row.column("provider_name")?;
        Ok(Connection {
            id: ResourceId::from_trusted(row.column("id")?),
            audience: AudienceRef {
                id: ResourceId::from_trusted(row.column("audience_id")?),
                name: row.column("audience_name")?,
            },
            provider: ProviderName::parse("provider_name", &provider)
                .context("stored provider name is invalid")?,
            connected_resource_id: row.column("connected_resource_id")?,
            state: parse_stored_state(&row.column::<String>("state")?)?,
            state_reason: row.column("state_reason")?,
            revision: row.column("revision")?,
            created_at: Timestamp::from_millis(row.column("created_at")?),
            created_by: user_from_row(row, "created_by")?,
            updated_at: Timestamp::from_millis(row.column("updated_at")?),
            updated_by: user_from_row(row, "updated_by")?,
            last_synced_at: row
                .column::<Option<i64>>("last_synced_at")?
                .map(Timestamp::from_millis),
        })
    }
}

#[async_trait]
impl ConnectionRepository for SqlConnections {
    async fn insert(&self, c: &Connection) -> Result<(), StoreError> {
        self.db
            .execute(SqlBuilder::fixed(
                concat!(
                    "INSERT INTO audience_connections (",
                    columns!(),
                    ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19)"
                ),
                params![
                    c.id.as_str(),
                    c.audience.id.as_str(),
                    c.audience.name.as_deref(),
                    c.provider.as_str(),
                    c.connected_resource_id.as_deref(),
                    c.state.as_str(),
                    c.state_reason.as_deref(),
                    c.revision,
                    c.created_at.millis(),
                    &c.created_by.id,
                    &c.created_by.username,
                    &c.created_by.first_name,
                    &c.created_by.last_name,
                    c.updated_at.millis(),
                    &c.updated_by.id,
                    &c.updated_by.username,
                    &c.updated_by.first_name,
                    &c.updated_by.last_name,
                    c.last_synced_at.map(Timestamp::millis),
                ],
            ))
            .await?;
        Ok(())
    }

    async fn get(&self, id: &ResourceId) -> Result<Option<Arc<Connection>>, StoreError> {
        self.by_id.get(id.as_str()).await
    }

    async fn list(&self, filter: &ConnectionFilter) -> Result<Vec<Connection>, StoreError> {
        let mut q = SqlBuilder::new(concat!(
            "SELECT ",
            columns!(),
            " FROM audience_connections WHERE 1 = 1"
        ));
        if let Some(audience) = &filter.audience_id {
            q.push(" AND audience_id = ")
                .bind(Param::Text(audience.as_str().to_owned()));
        }
        if !filter.states.is_empty() {
            q.push(" AND state IN ").bind_list(
                filter
                    .states
                    .iter()
                    .map(|s| Param::Text(s.as_str().to_owned())),
            );
        }
        if let Some((created_at, id)) = &filter.after {
            q.push(" AND (created_at > ")
                .bind(Param::Int(created_at.millis()))
                .push(" OR (created_at = ")
                .bind(Param::Int(created_at.millis()))
                .push(" AND id > ")
                .bind(Param::Text(id.as_str().to_owned()))
                .push("))");
        }
        q.push(" ORDER BY created_at, id LIMIT ")
            .bind(Param::Int(i64::from(filter.limit)));
        self.db.list(q).await
    }

    async fn change_state(
        &self,
        id: &ResourceId,
        target: ConnectionState,
        if_match: Option<&Condition>,
        by: &UserRef,
        reason: Option<&str>,
    ) -> Result<ActionResult, StoreError> {
        let mut tx = self.db.begin().await?;
        let select = match self.db.backend {
            Backend::Postgres => concat!(
                "SELECT ",
                columns!(),
                " FROM audience_connections WHERE id = $1 FOR UPDATE"
            ),
            // SQLite: the transaction holds the database's write lock (BEGIN IMMEDIATE).
            Backend::Sqlite => concat!(
                "SELECT ",
                columns!(),
                " FROM audience_connections WHERE id = $1"
            ),
        };
        let Some(mut current) = tx
            .fetch_optional::<Connection>(SqlBuilder::fixed(select, params![id.as_str()]))
            .await?
        else {
            return Ok(ActionResult::NotFound);
        };
        match decide_action(&current, target, if_match) {
            ActionDecision::PreconditionFailed => return Ok(ActionResult::PreconditionFailed),
            ActionDecision::Forbidden => return Ok(ActionResult::Forbidden(current)),
            ActionDecision::AlreadyThere => return Ok(ActionResult::Unchanged(current)),
            ActionDecision::Apply => {}
        }
        let now = Timestamp::now().max(current.updated_at);
        current.state = target;
        current.state_reason = reason.map(str::to_owned);
        current.revision += 1;
        current.updated_at = now;
        current.updated_by = by.clone();
        tx.execute(SqlBuilder::fixed(
            "UPDATE audience_connections SET state = $2, state_reason = $3, revision = $4, \
             updated_at = $5, updated_by_id = $6, updated_by_username = $7, \
             updated_by_first_name = $8, updated_by_last_name = $9 WHERE id = $1",
            params![
                current.id.as_str(),
                current.state.as_str(),
                current.state_reason.as_deref(),
                current.revision,
                now.millis(),
                &by.id,
                &by.username,
                &by.first_name,
                &by.last_name,
            ],
        ))
        .await?;
        if target == ConnectionState::Active {
            // Activation syncs at once, with a clean failure count (see docs/decisions.md).
            super::sync::schedule_activation(&mut tx, current.id.as_str(), now).await?;
        }
        tx.commit().await?;
        Ok(ActionResult::Changed(current))
    }

    async fn delete(&self, id: &ResourceId) -> Result<bool, StoreError> {
        let mut tx = self.db.begin().await?;
        let deleted = tx
            .execute(SqlBuilder::fixed(
                "DELETE FROM audience_connections WHERE id = $1",
                params![id.as_str()],
            ))
            .await?;
        // Its sync history and pushed membership go with it; a run in flight finds the
        // connection gone and records nothing (store::sync::finish).
        super::sync::delete_history(&mut tx, id.as_str()).await?;
        tx.commit().await?;
        Ok(deleted > 0)
    }
}
