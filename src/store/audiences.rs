//! The local audience source's tables: audiences and their members, replaced wholesale by
//! `tandem audiences import`.

use super::sql::{Param, SqlBuilder, params};
use super::{Db, StoreError};
use crate::domain::connection::AudienceRef;
use crate::domain::ids::ResourceId;
use crate::domain::time::Timestamp;
use sqlx::Row;
use std::collections::BTreeSet;

const CHUNK: usize = 500;

/// Replaces the audience's name and members in one transaction; readers see the old list or
/// the new one, never a mix.
pub async fn import(
    db: &Db,
    audience: &AudienceRef,
    members: &BTreeSet<String>,
) -> Result<(), StoreError> {
    let mut tx = db.begin().await?;
    let id = audience.id.as_str();
    tx.execute(SqlBuilder::fixed(
        "DELETE FROM audience_members WHERE audience_id = $1",
        params![id],
    ))
    .await?;
    tx.execute(SqlBuilder::fixed(
        "INSERT INTO audiences (id, name, imported_at) VALUES ($1, $2, $3) \
         ON CONFLICT (id) DO UPDATE SET name = excluded.name, imported_at = excluded.imported_at",
        params![id, audience.name.as_deref(), Timestamp::now().millis()],
    ))
    .await?;
    let members: Vec<&String> = members.iter().collect();
    for chunk in members.chunks(CHUNK) {
        let mut q =
            SqlBuilder::new("INSERT INTO audience_members (audience_id, customer_id) VALUES ");
        for (i, member) in chunk.iter().enumerate() {
            q.push(if i == 0 { "(" } else { ", (" })
                .bind(Param::Text(id.to_owned()))
                .push(", ")
                .bind(Param::Text((*member).clone()))
                .push(")");
        }
        tx.execute(q).await?;
    }
    tx.commit().await?;
    Ok(())
}

/// The members of an imported audience; None when it was never imported.
pub async fn members(
    db: &Db,
    audience: &ResourceId,
) -> Result<Option<BTreeSet<String>>, StoreError> {
    let known = sqlx::query("SELECT id FROM audiences WHERE id = $1")
        .bind(audience.as_str())
        .fetch_optional(&db.read)
        .await?;
    if known.is_none() {
        return Ok(None);
    }
    let rows = sqlx::query("SELECT customer_id FROM audience_members WHERE audience_id = $1")
        .bind(audience.as_str())
        .fetch_all(&db.read)
        .await?;
    rows.iter()
        .map(|r| r.try_get("customer_id").map_err(StoreError::from))
        .collect::<Result<_, _>>()
        .map(Some)
}
