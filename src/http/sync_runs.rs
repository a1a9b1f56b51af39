//! Extension: `GET /bankingAdmin/customerAudienceConnections/{id}/syncRuns`, the history of a
//! connection's synchronization runs with its current sync status. The connection
//! representation cannot grow (its schema forbids unevaluated properties), hence a resource
//! of its own.

use super::admin::{BASE, ID_PARAM, not_found, parse_cursor};
use super::error::ApiError;
use super::extract::{AdminCaller, path_id};
use super::{AppState, JSON, json_response};
use crate::domain::connection::ConnectionState;
use crate::domain::time::Timestamp;
use crate::store::sync::{SyncHistory, SyncRun};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

const DEFAULT_LIMIT: u32 = 100;
const MAX_LIMIT: u32 = 1000;

/// One synchronization run of a connection.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = customerAudienceConnectionSyncRun)]
pub struct SyncRunBody {
    pub id: String,
    /// Why the run started: `created` (first run of a new connection), `scheduled` (the
    /// provider's interval elapsed), `activated` (an admin activated the connection) or `retry`
    /// (after a retryable failure).
    #[schema(pattern = "^(created|scheduled|activated|retry)$")]
    pub trigger: String,
    #[schema(value_type = String, format = DateTime)]
    pub started_at: Timestamp,
    #[schema(value_type = String, format = DateTime)]
    pub finished_at: Timestamp,
    /// Members added at the provider.
    pub added: i64,
    /// Members removed at the provider.
    pub removed: i64,
    /// Membership changes that were due but not applied.
    pub failed: i64,
    /// Why the run failed; absent when it succeeded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A connection's synchronization history (newest first) and status.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = customerAudienceConnectionSyncRuns)]
pub struct SyncRunsBody {
    #[schema(max_items = 1000)]
    pub items: Vec<SyncRunBody>,
    /// When the last run succeeded (the connection's `lastSyncedAt`).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub last_successful_sync_at: Option<Timestamp>,
    /// Failed runs since the last success.
    pub consecutive_failures: i64,
    /// When the next run is due; absent for inactive and failed connections.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub next_sync_at: Option<Timestamp>,
    /// Why the connection failed, when its state is `failed`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure_reason: Option<String>,
}

impl From<&SyncRun> for SyncRunBody {
    fn from(run: &SyncRun) -> Self {
        Self {
            id: run.id.to_string(),
            trigger: run.trigger.as_str().to_owned(),
            started_at: run.started_at,
            finished_at: run.finished_at,
            added: run.added,
            removed: run.removed,
            failed: run.failed,
            error: run.error.clone(),
        }
    }
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct SyncRunsParams {
    /// At most this many runs (1..=1000, default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
    /// Continue after this position, from the `Link: rel="next"` header.
    #[param(pattern = r"^[0-9]{1,15}\.[-_:.~$a-zA-Z0-9]{6,48}$")]
    start: Option<String>,
}

/// Extension: return a connection's synchronization runs, newest first.
#[utoipa::path(
    get, path = "/bankingAdmin/customerAudienceConnections/{customerAudienceConnectionId}/syncRuns",
    operation_id = "listCustomerAudienceConnectionSyncRuns", tag = "Customer Audience Connections",
    params(
        ("customerAudienceConnectionId" = String, Path, pattern = r"^[-_:.~$a-zA-Z0-9]{6,48}$", min_length = 6, max_length = 48, description = "The connection's id"),
        SyncRunsParams,
    ),
    responses((status = 200, description = "OK.", body = SyncRunsBody,
        headers(("Link" = String, description = "`rel=\"next\"` when more runs follow"))))
)]
pub async fn list(
    _admin: AdminCaller,
    State(state): State<AppState>,
    Path(id): Path<String>,
    query: Result<Query<SyncRunsParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let id = path_id(ID_PARAM, &id)?;
    let Query(params) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let limit = params.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::bad_request("limit must be between 1 and 1000")
            .with_attributes(serde_json::json!({"field": "limit"})));
    }
    let after = params.start.as_deref().map(parse_cursor).transpose()?;
    let SyncHistory { status, mut runs } = state
        .sync
        .repo
        .history(&id, after, limit + 1)
        .await?
        .ok_or_else(|| not_found(&id))?;
    let mut headers = HeaderMap::new();
    if runs.len() > limit as usize {
        runs.truncate(limit as usize);
        if let Some(last) = runs.last() {
            let link = format!(
                "<{BASE}/{id}/syncRuns?start={}.{}&limit={limit}>; rel=\"next\"",
                last.started_at.millis(),
                last.id
            );
            if let Ok(value) = HeaderValue::from_str(&link) {
                headers.insert(header::LINK, value);
            }
        }
    }
    let body = SyncRunsBody {
        items: runs.iter().map(SyncRunBody::from).collect(),
        last_successful_sync_at: status.last_synced_at,
        consecutive_failures: status.consecutive_failures,
        next_sync_at: status.next_sync_at,
        failure_reason: (status.state == ConnectionState::Failed)
            .then_some(status.state_reason)
            .flatten(),
    };
    let size_hint = 256 + 256 * body.items.len();
    Ok((
        headers,
        json_response(StatusCode::OK, JSON, &body, size_hint),
    )
        .into_response())
}
