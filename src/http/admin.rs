//! `/bankingAdmin`: the Customer Audience Connections operations. Handlers validate, call the
//! repository and shape the response; the rules live in `domain::connection`.

use super::error::ApiError;
use super::extract::{AdminCaller, IfMatch, IfNoneMatch, JsonBody, path_id};
use super::{AppState, JSON, json_response};
use crate::domain::connection::{
    AudienceRef, Connection, ConnectionState, NewConnection, ProviderName,
    parse_external_resource_id, parse_state_filter,
};
use crate::domain::ids::ResourceId;
use crate::domain::time::Timestamp;
use crate::domain::user::UserRef;
use crate::store::StoreError;
use crate::store::connections::{ActionResult, ConnectionFilter};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

pub const BASE: &str = "/bankingAdmin/customerAudienceConnections";
pub(crate) const ID_PARAM: &str = "customerAudienceConnectionId";
/// The most items one list response holds (the seeds' `maxItems`).
const MAX_ITEMS: u32 = 1000;

// ---- Wire representations -------------------------------------------------------------

/// Representation of a customer audience connection resource.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = customerAudienceConnection)]
pub struct ConnectionBody {
    #[schema(
        pattern = r"^[-_:.~$a-zA-Z0-9]{6,48}$",
        min_length = 6,
        max_length = 48
    )]
    pub id: String,
    pub state: StateBody,
    pub provider: ProviderBody,
    pub audience: AudienceBody,
    /// The date-time when the audience connection was created.
    #[schema(value_type = String, format = DateTime, min_length = 20, max_length = 30)]
    pub created_at: Timestamp,
    pub created_by: UserBody,
    #[schema(value_type = String, format = DateTime, min_length = 20, max_length = 30)]
    pub updated_at: Timestamp,
    pub updated_by: UserBody,
    /// When the connection last synchronized with the provider; absent until the first sync.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = DateTime, min_length = 20, max_length = 30)]
    pub last_synced_at: Option<Timestamp>,
}

/// The state of a customer audience connection.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
#[schema(as = customerAudienceConnectionState)]
pub enum StateBody {
    Active,
    Inactive,
    Pending,
    Failed,
}

impl From<ConnectionState> for StateBody {
    fn from(s: ConnectionState) -> Self {
        match s {
            ConnectionState::Active => Self::Active,
            ConnectionState::Inactive => Self::Inactive,
            ConnectionState::Pending => Self::Pending,
            ConnectionState::Failed => Self::Failed,
        }
    }
}

/// Properties of the connection's provider. `resourceId` repeats `connectedResourceId` for
/// clients written from the seed's examples.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = customerAudienceConnectionProvider)]
pub struct ProviderBody {
    #[schema(max_length = 80)]
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(min_length = 1, max_length = 256)]
    pub connected_resource_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(min_length = 1, max_length = 256)]
    pub resource_id: Option<String>,
}

/// An audience by id and name.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(as = customerAudienceReference)]
pub struct AudienceBody {
    #[schema(
        pattern = r"^[-_:.~$a-zA-Z0-9]{6,48}$",
        min_length = 6,
        max_length = 48
    )]
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 100)]
    pub name: Option<String>,
}

/// An admin user.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = userAccountReference)]
pub struct UserBody {
    pub id: String,
    #[schema(max_length = 56)]
    pub first_name: String,
    #[schema(max_length = 56)]
    pub last_name: String,
    #[schema(min_length = 5, max_length = 20)]
    pub username: String,
}

/// The connections matching a list request.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = customerAudienceConnections)]
pub struct ConnectionsBody {
    #[schema(max_items = 1000)]
    pub items: Vec<ConnectionBody>,
}

/// The data needed to create a connection. `provider.resourceId` links an existing provider
/// resource; without it the provider creates one.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(as = newCustomerAudienceConnection)]
pub struct NewConnectionBody {
    pub audience: AudienceBody,
    pub provider: NewProviderBody,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(as = newCustomerAudienceConnectionProvider)]
pub struct NewProviderBody {
    #[schema(min_length = 1, max_length = 80)]
    pub name: String,
    #[serde(default)]
    #[schema(min_length = 1, max_length = 256)]
    pub resource_id: Option<String>,
    /// Accepted as a synonym of `resourceId`.
    #[serde(default)]
    #[schema(min_length = 1, max_length = 256)]
    pub connected_resource_id: Option<String>,
}

impl NewConnectionBody {
    fn validate(self) -> Result<NewConnection, ApiError> {
        let audience = AudienceRef::parse(&self.audience.id, self.audience.name.as_deref())
            .map_err(|e| e.within("audience"))?;
        let provider = ProviderName::parse("provider.name", &self.provider.name)?;
        let link = match (
            self.provider.resource_id,
            self.provider.connected_resource_id,
        ) {
            (Some(a), Some(b)) if a != b => {
                return Err(ApiError::bad_request(
                    "provider.resourceId and provider.connectedResourceId differ; send one",
                ));
            }
            (Some(id), _) | (None, Some(id)) => {
                Some(parse_external_resource_id("provider.resourceId", &id)?)
            }
            (None, None) => None,
        };
        Ok(NewConnection {
            audience,
            provider,
            link_resource_id: link,
        })
    }
}

fn user_body(u: &UserRef) -> UserBody {
    UserBody {
        id: u.id.clone(),
        first_name: u.shown_first_name(),
        last_name: u.shown_last_name(),
        username: u.shown_username(),
    }
}

impl From<&Connection> for ConnectionBody {
    fn from(c: &Connection) -> Self {
        Self {
            id: c.id.to_string(),
            state: c.state.into(),
            provider: ProviderBody {
                name: c.provider.as_str().to_owned(),
                connected_resource_id: c.connected_resource_id.clone(),
                resource_id: c.connected_resource_id.clone(),
            },
            audience: AudienceBody {
                id: c.audience.id.to_string(),
                name: c.audience.name.clone(),
            },
            created_at: c.created_at,
            created_by: user_body(&c.created_by),
            updated_at: c.updated_at,
            updated_by: user_body(&c.updated_by),
            last_synced_at: c.last_synced_at,
        }
    }
}

/// A single connection with its entity tag.
fn connection_response(status: StatusCode, c: &Connection) -> Response {
    let mut res = json_response(status, JSON, &ConnectionBody::from(c), 1024);
    if let Ok(etag) = HeaderValue::from_str(&c.etag()) {
        res.headers_mut().insert(header::ETAG, etag);
    }
    res
}

fn location_of(id: &ResourceId) -> String {
    format!("{BASE}/{id}")
}

// ---- Operations ------------------------------------------------------------------------

/// Query parameters of the list operation.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// Return connections whose `audience.id` equals the given value.
    #[param(
        pattern = r"^[-_:.~$a-zA-Z0-9]{6,48}$",
        min_length = 6,
        max_length = 48
    )]
    audience: Option<String>,
    /// Only connections whose state is in this pipe-delimited set, e.g. `active|failed`.
    #[param(
        pattern = r"^(active|inactive|pending|failed)(\|(active|inactive|pending|failed)){0,3}$"
    )]
    state: Option<String>,
    /// Extension: at most this many items (1..=1000, default 1000).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
    /// Extension: continue after this position, from the `Link: rel="next"` header.
    #[param(pattern = r"^[0-9]{1,15}\.[-_:.~$a-zA-Z0-9]{6,48}$")]
    start: Option<String>,
}

/// Return a collection of customer audience connections.
#[utoipa::path(
    get, path = "/bankingAdmin/customerAudienceConnections",
    operation_id = "listCustomerAudienceConnections", tag = "Customer Audience Connections",
    params(ListParams),
    responses((status = 200, description = "OK.", body = ConnectionsBody,
        headers(("Link" = String, description = "`rel=\"next\"` when more items follow"))))
)]
pub async fn list(
    _admin: AdminCaller,
    State(state): State<AppState>,
    query: Result<Query<ListParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(params) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let limit = params.limit.unwrap_or(MAX_ITEMS);
    if !(1..=MAX_ITEMS).contains(&limit) {
        return Err(ApiError::bad_request("limit must be between 1 and 1000")
            .with_attributes(serde_json::json!({"field": "limit"})));
    }
    let filter = ConnectionFilter {
        audience_id: params
            .audience
            .as_deref()
            .map(|a| ResourceId::parse("audience", a))
            .transpose()?,
        states: params
            .state
            .as_deref()
            .map(parse_state_filter)
            .transpose()?
            .unwrap_or_default(),
        after: params.start.as_deref().map(parse_cursor).transpose()?,
        limit: limit + 1,
    };
    let mut items = state.connections.list(&filter).await?;
    let mut headers = HeaderMap::new();
    if items.len() > limit as usize {
        items.truncate(limit as usize);
        if let Some(last) = items.last() {
            let next = next_page_link(&params, limit, last);
            if let Ok(value) = HeaderValue::from_str(&next) {
                headers.insert(header::LINK, value);
            }
        }
    }
    let body = ConnectionsBody {
        items: items.iter().map(ConnectionBody::from).collect(),
    };
    // An item is about 520 bytes.
    let size_hint = 64 + 640 * body.items.len();
    Ok((
        headers,
        json_response(StatusCode::OK, JSON, &body, size_hint),
    )
        .into_response())
}

/// The paging cursor: `<createdAt millis>.<id>` of the last item seen.
pub(crate) fn parse_cursor(value: &str) -> Result<(Timestamp, ResourceId), ApiError> {
    let bad = || {
        ApiError::bad_request("start is not a position from a previous page")
            .with_attributes(serde_json::json!({"field": "start"}))
    };
    let (millis, id) = value.split_once('.').ok_or_else(bad)?;
    let millis: i64 = millis.parse().map_err(|_| bad())?;
    let id = ResourceId::parse("start", id).map_err(|_| bad())?;
    Ok((Timestamp::from_millis(millis), id))
}

fn next_page_link(params: &ListParams, limit: u32, last: &Connection) -> String {
    let mut query = vec![format!("start={}.{}", last.created_at.millis(), last.id)];
    query.push(format!("limit={limit}"));
    if let Some(a) = &params.audience {
        query.push(format!("audience={a}"));
    }
    if let Some(s) = &params.state {
        query.push(format!("state={}", s.replace('|', "%7C")));
    }
    format!("<{BASE}?{}>; rel=\"next\"", query.join("&"))
}

/// Create a new customer audience connection.
#[utoipa::path(
    post, path = "/bankingAdmin/customerAudienceConnections",
    operation_id = "createCustomerAudienceConnection", tag = "Customer Audience Connections",
    request_body = NewConnectionBody,
    responses((status = 201, description = "Created.", body = ConnectionBody, headers(
        ("ETag" = String, description = "The entity tag of the new connection"),
        ("Location" = String, description = "The URI of the new connection"))))
)]
pub async fn create(
    AdminCaller(caller): AdminCaller,
    State(state): State<AppState>,
    JsonBody(body): JsonBody<NewConnectionBody>,
) -> Result<Response, ApiError> {
    let new = body.validate()?;
    require_configured(&state, &new.provider)?;
    let now = Timestamp::now();
    let connection = Connection {
        id: ResourceId::generate(),
        audience: new.audience,
        provider: new.provider,
        connected_resource_id: new.link_resource_id,
        state: ConnectionState::Pending,
        state_reason: None,
        revision: 1,
        created_at: now,
        created_by: caller.user.clone(),
        updated_at: now,
        updated_by: caller.user,
        last_synced_at: None,
    };
    match state.connections.insert(&connection).await {
        Ok(()) => {}
        Err(StoreError::Duplicate) => {
            return Err(ApiError::conflict(
                "connectionExists",
                "Connection Exists",
                format!(
                    "Audience {} already has a connection to provider {:?}",
                    connection.audience.id,
                    connection.provider.as_str()
                ),
            ));
        }
        Err(other) => return Err(other.into()),
    }
    state.sync.wake();
    let mut res = connection_response(StatusCode::CREATED, &connection);
    if let Ok(location) = HeaderValue::from_str(&location_of(&connection.id)) {
        res.headers_mut().insert(header::LOCATION, location);
    }
    Ok(res)
}

/// Fetch a representation of this customer audience connection.
#[utoipa::path(
    get, path = "/bankingAdmin/customerAudienceConnections/{customerAudienceConnectionId}",
    operation_id = "getCustomerAudienceConnection", tag = "Customer Audience Connections",
    params(
        ("customerAudienceConnectionId" = String, Path, pattern = r"^[-_:.~$a-zA-Z0-9]{6,48}$", min_length = 6, max_length = 48, description = "The connection's id"),
        ("If-None-Match" = Option<String>, Header, min_length = 1, max_length = 512, description = "Answer 304 when this matches the current entity tag"),
    ),
    responses(
        (status = 200, description = "OK.", body = ConnectionBody, headers(("ETag" = String, description = "The entity tag"))),
        (status = 304, description = "Not Modified: the If-None-Match value matches."),
    )
)]
pub async fn get(
    _admin: AdminCaller,
    State(state): State<AppState>,
    Path(id): Path<String>,
    IfNoneMatch(if_none_match): IfNoneMatch,
) -> Result<Response, ApiError> {
    let id = path_id(ID_PARAM, &id)?;
    let connection = state
        .connections
        .get(&id)
        .await?
        .ok_or_else(|| not_found(&id))?;
    if if_none_match.is_some_and(|c| c.matches_weakly(&connection.etag())) {
        return Ok(super::not_modified(&connection.etag()));
    }
    Ok(connection_response(StatusCode::OK, &connection))
}

/// Delete this customer audience connection resource.
#[utoipa::path(
    delete, path = "/bankingAdmin/customerAudienceConnections/{customerAudienceConnectionId}",
    operation_id = "deleteCustomerAudienceConnection", tag = "Customer Audience Connections",
    params(("customerAudienceConnectionId" = String, Path, pattern = r"^[-_:.~$a-zA-Z0-9]{6,48}$", min_length = 6, max_length = 48, description = "The connection's id")),
    responses((status = 204, description = "No Content."))
)]
pub async fn delete(
    _admin: AdminCaller,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let id = path_id(ID_PARAM, &id)?;
    if state.connections.delete(&id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(not_found(&id))
    }
}

/// A connection can only be created or activated for a provider the institution configures.
fn require_configured(state: &AppState, provider: &ProviderName) -> Result<(), ApiError> {
    if state.providers.contains_key(provider.as_str()) {
        return Ok(());
    }
    let known: Vec<&str> = state.providers.keys().map(String::as_str).collect();
    Err(ApiError::unprocessable(
        "unknownProvider",
        "Unknown Provider",
        format!(
            "No provider named {:?} is configured; known providers: {}",
            provider.as_str(),
            known.join(", ")
        ),
    )
    .with_attributes(serde_json::json!({"field": "provider.name"})))
}

pub(crate) fn not_found(id: &ResourceId) -> ApiError {
    ApiError::not_found(format!("There is no customer audience connection {id}"))
}

async fn change_state(
    caller: crate::auth::Caller,
    state: AppState,
    id: String,
    if_match: IfMatch,
    target: ConnectionState,
) -> Result<Response, ApiError> {
    let id = path_id(ID_PARAM, &id)?;
    if target == ConnectionState::Active {
        let current = state
            .connections
            .get(&id)
            .await?
            .ok_or_else(|| not_found(&id))?;
        require_configured(&state, &current.provider)?;
    }
    let reason = (target == ConnectionState::Failed)
        .then(|| format!("Marked failed by {}", caller.user.username));
    let result = state
        .connections
        .change_state(
            &id,
            target,
            if_match.0.as_ref(),
            &caller.user,
            reason.as_deref(),
        )
        .await?;
    if let ActionResult::Changed(c) = &result
        && c.state == ConnectionState::Active
    {
        state.sync.wake();
    }
    match result {
        ActionResult::Changed(c) | ActionResult::Unchanged(c) => {
            Ok(connection_response(StatusCode::OK, &c))
        }
        ActionResult::PreconditionFailed => Err(ApiError::precondition_failed()),
        ActionResult::NotFound => Err(not_found(&id)),
        ActionResult::Forbidden(c) => Err(ApiError::conflict(
            "invalidStateTransition",
            "Invalid State Transition",
            format!("A connection in state {} cannot become {target}", c.state),
        )
        .with_attributes(
            serde_json::json!({"state": c.state.as_str(), "requestedState": target.as_str()}),
        )),
    }
}

macro_rules! action {
    ($name:ident, $op:literal, $suffix:literal, $target:expr, $doc:literal) => {
        #[doc = $doc]
        #[utoipa::path(
            post, path = concat!("/bankingAdmin/customerAudienceConnections/{customerAudienceConnectionId}/", $suffix),
            operation_id = $op, tag = "Customer Audience Connection Actions",
            params(
                ("customerAudienceConnectionId" = String, Path, pattern = r"^[-_:.~$a-zA-Z0-9]{6,48}$", min_length = 6, max_length = 48, description = "The connection's id"),
                ("If-Match" = Option<String>, Header, min_length = 1, max_length = 512, description = "When passed, must match the current entity tag, else 412"),
            ),
            responses((status = 200, description = "OK. The connection's state is now the requested one.", body = ConnectionBody,
                headers(("ETag" = String, description = "The entity tag"))))
        )]
        pub async fn $name(
            AdminCaller(caller): AdminCaller,
            State(state): State<AppState>,
            Path(id): Path<String>,
            if_match: IfMatch,
        ) -> Result<Response, ApiError> {
            change_state(caller, state, id, if_match, $target).await
        }
    };
}

action!(
    activate,
    "activateCustomerAudienceConnection",
    "active",
    ConnectionState::Active,
    "Activate a customer audience connection."
);
action!(
    deactivate,
    "deactivateCustomerAudienceConnection",
    "inactive",
    ConnectionState::Inactive,
    "Deactivate a customer audience connection."
);
action!(
    fail,
    "failCustomerAudienceConnection",
    "failed",
    ConnectionState::Failed,
    "Fail a customer audience connection."
);
