//! The Invitations operations. Handlers authenticate, check scope and visibility, and shape
//! HAL responses; the rules live in `domain::invitation`.

use super::{
    ACCEPT_PATH, Access, COLLECTION, Claimed, InvitationsContext, Scope, Verification,
    access_given, mismatch_error, not_found, refusal_error, require_scope,
};
use crate::auth::Caller;
use crate::domain::etag::Condition;
use crate::domain::filter::{MAX_ALTERNATIVES, SyntaxError, parse_filter, parse_sort};
use crate::domain::ids::ResourceId;
use crate::domain::invitation::{
    Changed, Invitation, InvitationState, InvitationType, NewInvitation, NewInvitationInput,
    Refusal, SharedSecret, inviter_name_from_token, negotiate_locale, parse_email,
    parse_resource_uri,
};
use crate::domain::time::Timestamp;
use crate::http::AppState;
use crate::http::error::ApiError;
use crate::http::extract::{IfMatch, IfNoneMatch, JsonBody, authenticate, path_id};
use crate::store::invitations::{
    CapReached, CreateCaps, Effect, FIELDS, InvitationQuery, ListError, Visibility,
};
use axum::Router;
use axum::extract::rejection::QueryRejection;
use axum::extract::{ConnectInfo, FromRequestParts, Path, Query, RawQuery, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use utoipa::{IntoParams, ToSchema};

const ID_PARAM: &str = "invitationId";
const INVITATION_PROFILE: &str =
    "https://production.api.apiture.com/schemas/invitations/invitation/v1.2.0/profile.json";
const HAL_JSON: &str = "application/hal+json";
/// The most items one page holds.
const MAX_LIMIT: i64 = 1000;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/invitations", get(get_api))
        .route("/invitations/", get(get_api))
        .route("/invitations/apiDoc", get(get_api_doc))
        .route("/invitations/labels", get(get_labels))
        .route(COLLECTION, get(list).post(create))
        .route(
            "/invitations/invitations/{invitationId}",
            get(get_one).delete(delete).patch(patch),
        )
        .route("/invitations/revoked", post(revoke))
        .route("/invitations/sent", post(send))
        .route("/invitations/completed", post(complete))
        .route("/invitations/verifications", post(verify))
        .route(
            "/invitations/accept",
            get(super::page::show).post(super::page::submit),
        )
}

/// An authenticated caller of the Invitations API (API key, bearer token, rate limit).
pub struct InvCaller(pub Caller);

impl FromRequestParts<AppState> for InvCaller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        authenticate(parts, state).await.map(Self)
    }
}

/// The absolute base URL of this request's links (`LinkBase`).
pub struct RequestBase(pub Arc<str>);

impl FromRequestParts<AppState> for RequestBase {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        Ok(Self(state.invitations.links.of(&parts.headers)))
    }
}

// ---- Wire representations -------------------------------------------------------------

/// A HAL link.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(as = link)]
pub struct Link {
    pub href: String,
}

/// A link to `path` (with its query) under `base`.
fn link(base: &str, path: &str) -> Link {
    Link {
        href: [base, path].concat(),
    }
}

/// An invitation's `_links`: only the actions allowed now. The hrefs are written straight into
/// the response; a page of 100 would otherwise format and free about 400 of them.
#[derive(Debug)]
pub struct InvitationLinks<'a> {
    /// The base of the API's own links (`RequestBase`).
    base: &'a str,
    id: &'a str,
    /// The public base URL, when the accept page is offered.
    accept_base: Option<&'a str>,
    revoke: bool,
    send: bool,
    complete: bool,
}

impl Serialize for InvitationLinks<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let (base, id) = (self.base, self.id);
        let offered = [
            (
                "apiture:acceptInvitationUserExperience",
                self.accept_base.map(|base| Href(base, ACCEPT_PATH, id)),
            ),
            (
                "apiture:complete",
                self.complete
                    .then_some(Href(base, "/invitations/completed?invitation=", id)),
            ),
            (
                "apiture:revoke",
                self.revoke
                    .then_some(Href(base, "/invitations/revoked?invitation=", id)),
            ),
            (
                "apiture:send",
                self.send
                    .then_some(Href(base, "/invitations/sent?invitation=", id)),
            ),
            ("self", Some(Href(base, "/invitations/invitations/", id))),
        ];
        // In key order, as clients saw them from a sorted map.
        let mut map = s.serialize_map(None)?;
        for (rel, href) in offered {
            if let Some(href) = href {
                map.serialize_entry(rel, &HrefLink { href })?;
            }
        }
        map.end()
    }
}

#[derive(Serialize)]
struct HrefLink<'a> {
    href: Href<'a>,
}

/// base + path + id.
pub(super) struct Href<'a>(pub &'a str, pub &'static str, pub &'a str);

impl Href<'_> {
    pub(super) fn text(&self) -> String {
        let Self(base, path, id) = self;
        [*base, *path, *id].concat()
    }
}

impl Serialize for Href<'_> {
    /// One string, not three pieces through the formatter: a page of 100 has 400 links.
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text())
    }
}

/// Representation of invitation resources. `_links` holds only the actions allowed now.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = invitation)]
pub struct InvitationBody<'a> {
    #[serde(rename = "_profile")]
    pub profile: &'static str,
    #[serde(rename = "_links")]
    #[schema(value_type = BTreeMap<String, Link>)]
    pub links: InvitationLinks<'a>,
    #[serde(rename = "_id")]
    pub id: &'a str,
    /// joint, authorizedSigner or productPromotion.
    pub r#type: &'static str,
    /// sent, accepted, completed, revoked or expired.
    pub state: &'static str,
    pub email_address: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub identification: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub account_uri: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub organization_uri: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<&'a str>,
    pub inviter_full_name: &'a str,
    /// Shown to the inviter and to staff only (as is `identification`).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(min_length = 8)]
    pub shared_secret: Option<String>,
    pub verification_count: i64,
    pub created_by: &'a str,
    pub customer_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub customer_group: Option<&'a str>,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: Timestamp,
    #[schema(value_type = String, format = DateTime)]
    pub expires_at: Timestamp,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub attributes: Option<&'a Value>,
}

/// Representation used to create a new invitation.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(as = createInvitation)]
pub struct CreateBody {
    #[serde(rename = "_profile", default)]
    #[schema(value_type = Option<String>)]
    _profile: Option<String>,
    #[serde(rename = "_links", default)]
    #[schema(value_type = Option<Object>)]
    _links: Option<serde_json::Map<String, Value>>,
    #[serde(rename = "_embedded", default)]
    #[schema(value_type = Option<Object>)]
    _embedded: Option<serde_json::Map<String, Value>>,
    #[schema(min_length = 8, max_length = 256)]
    shared_secret: String,
    email_address: String,
    /// joint, authorizedSigner or productPromotion.
    r#type: String,
    account_uri: Option<String>,
    organization_uri: Option<String>,
    role: Option<String>,
    inviter_full_name: String,
    first_name: Option<String>,
    last_name: Option<String>,
    #[schema(pattern = r"^[0-9]{4}$")]
    identification: Option<String>,
    #[schema(value_type = Option<Object>)]
    attributes: Option<Value>,
}

/// A new shared secret: `PATCH /invitations/invitations/{invitationId}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(as = invitationPatch)]
pub struct PatchBody {
    #[serde(rename = "_profile", default)]
    #[schema(value_type = Option<String>)]
    _profile: Option<String>,
    #[serde(rename = "_links", default)]
    #[schema(value_type = Option<Object>)]
    _links: Option<serde_json::Map<String, Value>>,
    #[schema(min_length = 8, max_length = 256)]
    shared_secret: String,
}

/// The request and response for verifying an invitation.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(as = verification)]
pub struct VerificationBody {
    #[serde(rename = "_profile", default, skip_serializing_if = "Option::is_none")]
    profile: Option<String>,
    #[serde(rename = "_links", default)]
    #[schema(value_type = Option<Object>)]
    links: Option<Value>,
    #[schema(min_length = 8)]
    shared_secret: String,
    invitation_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    first_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    identification: Option<String>,
}

/// A page of invitations with paging links.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = invitations)]
pub struct InvitationsBody<'a> {
    #[serde(rename = "_profile")]
    profile: &'static str,
    #[serde(rename = "_links")]
    links: BTreeMap<&'static str, Link>,
    start: i64,
    limit: i64,
    /// Left out when more than `COUNT_LIMIT` invitations match.
    #[serde(skip_serializing_if = "Option::is_none")]
    count: Option<i64>,
    name: &'static str,
    #[serde(rename = "_embedded")]
    embedded: EmbeddedItems<'a>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EmbeddedItems<'a> {
    items: Vec<InvitationBody<'a>>,
}

impl InvitationsContext {
    /// The HAL representation as `access` may see it.
    pub fn body<'a>(
        &'a self,
        inv: &'a Invitation,
        access: Access,
        base: &'a str,
    ) -> Result<InvitationBody<'a>, ApiError> {
        let id = inv.id.as_str();
        let sent = inv.state == InvitationState::Sent;
        let links = InvitationLinks {
            base,
            id,
            accept_base: (sent && !self.is_locked(inv)).then_some(self.public_url.as_str()),
            revoke: sent && access.may_act(),
            send: sent && access.may_act() && inv.resends_left(self.settings.resend_limit) > 0,
            complete: inv.state == InvitationState::Accepted && access == Access::Staff,
        };
        let unsealing =
            |e| ApiError::internal(anyhow::Error::new(e).context(format!("invitation {id}")));
        // Government id digits, like the secret, stay with the inviter and staff.
        let (shared_secret, identification) = if access.may_act() {
            (
                Some(
                    self.secrets
                        .open(id, &inv.sealed_secret)
                        .map_err(unsealing)?,
                ),
                self.open_identification(inv).map_err(unsealing)?,
            )
        } else {
            (None, None)
        };
        Ok(InvitationBody {
            profile: INVITATION_PROFILE,
            links,
            id,
            r#type: inv.kind.as_str(),
            state: inv.state.as_str(),
            email_address: &inv.email_address,
            first_name: inv.first_name.as_deref(),
            last_name: inv.last_name.as_deref(),
            identification,
            account_uri: inv.account_uri.as_deref(),
            organization_uri: inv.organization_uri.as_deref(),
            role: inv.role.as_deref(),
            inviter_full_name: &inv.inviter_full_name,
            shared_secret,
            verification_count: inv.verification_count,
            created_by: &inv.created_by,
            customer_id: &inv.customer_id,
            customer_group: inv.customer_group.as_deref(),
            created_at: inv.created_at,
            updated_at: inv.updated_at,
            expires_at: inv.expires_at,
            attributes: inv.attributes.as_ref(),
        })
    }

    fn response(
        &self,
        status: StatusCode,
        inv: &Invitation,
        access: Access,
        base: &str,
    ) -> Result<Response, ApiError> {
        let body = self.body(inv, access, base)?;
        let mut res = hal(status, &body);
        if let Ok(etag) = HeaderValue::from_str(&inv.etag()) {
            res.headers_mut().insert(header::ETAG, etag);
        }
        Ok(res)
    }
}

fn hal(status: StatusCode, body: &impl Serialize) -> Response {
    hal_sized(status, body, 2048)
}

fn hal_sized(status: StatusCode, body: &impl Serialize, size_hint: usize) -> Response {
    crate::http::json_response(status, HAL_JSON, body, size_hint)
}

fn locale_of(headers: &HeaderMap) -> &'static str {
    negotiate_locale(
        headers
            .get(header::ACCEPT_LANGUAGE)
            .and_then(|v| v.to_str().ok()),
    )
}

fn query_params<T>(query: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    query
        .map(|Query(p)| p)
        .map_err(|e| ApiError::bad_request(e.body_text()))
}

// ---- API root, document, labels -------------------------------------------------------

/// The API root: HAL links to the top-level resources and operations.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = root)]
pub struct ApiRoot {
    #[serde(rename = "_profile")]
    pub profile: &'static str,
    #[serde(rename = "_links")]
    pub links: BTreeMap<&'static str, Link>,
    #[serde(rename = "_id")]
    pub id: &'static str,
    pub name: &'static str,
    #[serde(rename = "apiVersion")]
    pub api_version: &'static str,
}

/// Top-level resources and operations in this API.
#[utoipa::path(get, path = "/invitations/", operation_id = "getApi", tag = "API",
    responses((status = 200, description = "OK.", body = ApiRoot)))]
pub async fn get_api(
    InvCaller(caller): InvCaller,
    RequestBase(base): RequestBase,
) -> Result<Response, ApiError> {
    require_scope(&caller, Scope::Read)?;
    Ok(hal(
        StatusCode::OK,
        &ApiRoot {
            profile: "https://production.api.apiture.com/schemas/common/root/v2.1.0/profile.json",
            links: BTreeMap::from([
                ("self", link(&base, "/invitations/")),
                ("apiture:invitations", link(&base, COLLECTION)),
                (
                    "apiture:verifications",
                    link(&base, "/invitations/verifications"),
                ),
                ("apiture:labels", link(&base, "/invitations/labels")),
                ("apiture:apiDoc", link(&base, "/invitations/apiDoc")),
            ]),
            id: "invitations",
            name: "Invitations",
            api_version: super::doc::API_VERSION,
        },
    ))
}

/// Return the OpenAPI document that describes this API.
#[utoipa::path(get, path = "/invitations/apiDoc", operation_id = "getApiDoc", tag = "API",
    responses((status = 200, description = "OK.", body = Object)))]
pub async fn get_api_doc(InvCaller(caller): InvCaller) -> Result<Response, ApiError> {
    require_scope(&caller, Scope::Read)?;
    let doc = super::doc::document();
    Ok((
        [(header::CONTENT_TYPE, "application/json")],
        doc.to_pretty_json().map_err(ApiError::internal)?,
    )
        .into_response())
}

/// Localized labels for the enumerations of this API.
#[utoipa::path(get, path = "/invitations/labels", operation_id = "getLabels", tag = "API",
    params(("Accept-Language" = Option<String>, Header, description = "The preferred languages, e.g. `es-MX, en;q=0.5`")),
    responses((status = 200, description = "OK.", body = LabelGroups)))]
pub async fn get_labels(
    InvCaller(caller): InvCaller,
    RequestBase(base): RequestBase,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    require_scope(&caller, Scope::Read)?;
    let locale = locale_of(&headers);
    let mut res = hal(StatusCode::OK, &labels(locale, &base));
    let headers = res.headers_mut();
    headers.insert(header::CONTENT_LANGUAGE, HeaderValue::from_static(locale));
    headers.insert(header::VARY, HeaderValue::from_static("Accept-Language"));
    Ok(res)
}

// ---- The collection -------------------------------------------------------------------

/// Query parameters of getInvitations.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// The zero-based index of the first item of the page (default 0).
    #[param(minimum = 0)]
    start: Option<i64>,
    /// The most items in the page (1..=1000, default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<i64>,
    /// Sort keys, `type` and `state`, `-` for descending: `?sortBy=type,-state`.
    sort_by: Option<String>,
    /// A filter expression, e.g. `and(eq(state,sent),contains(emailAddress,"@example.com"))`:
    /// at most 4096 bytes, 100 comparisons and 100 different values in one `in()`. A list's
    /// filter and subset parameters bind at most 400 values together.
    filter: Option<String>,
    /// Searches names, email address and inviter name (case-insensitive substring).
    q: Option<String>,
    /// Only accepted invitations the caller can see that still await completion.
    pending_invitations: Option<bool>,
    /// `|`-separated account URIs (at most 100 different).
    account_uri: Option<String>,
    /// `|`-separated organization URIs (at most 100 different).
    organization_uri: Option<String>,
    /// `|`-separated states: sent, accepted, completed, revoked, expired.
    state: Option<String>,
    /// `|`-separated types: joint, authorizedSigner, productPromotion.
    r#type: Option<String>,
    /// `|`-separated email addresses (compared ignoring case; at most 100 different).
    email_address: Option<String>,
}

fn invalid_param(field: &str, detail: String) -> ApiError {
    ApiError::bad_request(detail).with_attributes(json!({ "field": field }))
}

/// The different `|`-separated values of a subset parameter, in the order first written; at
/// most `MAX_ALTERNATIVES` of them.
fn alternatives<T: PartialEq>(
    field: &str,
    value: Option<&str>,
    parse: impl Fn(&str) -> Option<T>,
) -> Result<Vec<T>, ApiError> {
    let Some(value) = value else {
        return Ok(Vec::new());
    };
    let mut values = Vec::new();
    for v in value.split('|') {
        let parsed = parse(v)
            .ok_or_else(|| invalid_param(field, format!("{field}: {v:?} is not a valid value")))?;
        if values.contains(&parsed) {
            continue;
        }
        if values.len() == MAX_ALTERNATIVES {
            return Err(invalid_query(
                field,
                format!("{field} takes at most {MAX_ALTERNATIVES} different values"),
            ));
        }
        values.push(parsed);
    }
    Ok(values)
}

/// A list parameter that cannot be a query: a syntax error, or more values than a list takes.
fn invalid_query(field: &str, detail: String) -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "invalidQuery",
        "Invalid Query",
        detail,
    )
    .with_attributes(json!({ "field": field }))
}

impl From<ListError> for ApiError {
    fn from(err: ListError) -> Self {
        match err {
            ListError::TooManyValues { parameter, .. } => invalid_query(parameter, err.to_string()),
            ListError::Store(err) => err.into(),
        }
    }
}

/// Return a collection of invitations.
#[utoipa::path(get, path = "/invitations/invitations", operation_id = "getInvitations", tag = "Invitation",
    params(ListParams),
    responses((status = 200, description = "OK.", body = InvitationsBody)))]
pub async fn list(
    InvCaller(caller): InvCaller,
    State(state): State<AppState>,
    RequestBase(base): RequestBase,
    RawQuery(raw): RawQuery,
    query: Result<Query<ListParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    require_scope(&caller, Scope::Read)?;
    let params = query_params(query)?;
    let ctx = &state.invitations;
    let start = params.start.unwrap_or(0);
    if start < 0 {
        return Err(invalid_param("start", "start must not be negative".into()));
    }
    let limit = params.limit.unwrap_or(100);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(invalid_param(
            "limit",
            format!("limit must be between 1 and {MAX_LIMIT}"),
        ));
    }
    let mut states = alternatives("state", params.state.as_deref(), InvitationState::parse)?;
    let mut nothing_pending = false;
    if params.pending_invitations == Some(true) {
        // Pending: accepted, awaiting completion; combined with `state` by an implicit and.
        // Any other `state` leaves nothing to find; the page is empty once the rest of the
        // request has been checked like any other.
        if states.is_empty() || states.contains(&InvitationState::Accepted) {
            states = vec![InvitationState::Accepted];
        } else {
            states.clear();
            nothing_pending = true;
        }
    }
    let held = if caller.admin {
        Vec::new()
    } else {
        ctx.held_by(&caller.user.id).await?
    };
    let visibility = if caller.admin {
        Visibility::All
    } else {
        Visibility::Customer {
            customer_id: caller.user.id.clone(),
            resources: held.clone(),
        }
    };
    let search = params
        .q
        .as_deref()
        .map(str::trim)
        .filter(|q| !q.is_empty())
        .map(|q| {
            crate::domain::check_text("q", q, 1, 200)
                .map(|()| q.to_owned())
                .map_err(ApiError::invalid)
        })
        .transpose()?;
    let query = InvitationQuery {
        visibility,
        states,
        types: alternatives("type", params.r#type.as_deref(), InvitationType::parse)?,
        email_addresses: alternatives("emailAddress", params.email_address.as_deref(), |v| {
            parse_email("emailAddress", v).ok()
        })?,
        account_uris: alternatives("accountUri", params.account_uri.as_deref(), |v| {
            parse_resource_uri("accountUri", v).ok()
        })?,
        organization_uris: alternatives(
            "organizationUri",
            params.organization_uri.as_deref(),
            |v| parse_resource_uri("organizationUri", v).ok(),
        )?,
        search,
        filter: params
            .filter
            .as_deref()
            .map(|f| parse_filter(f, FIELDS).map_err(|e| syntax_error("filter", &e)))
            .transpose()?,
        sort: params
            .sort_by
            .as_deref()
            .map(|s| parse_sort(s, FIELDS).map_err(|e| syntax_error("sortBy", &e)))
            .transpose()?
            .unwrap_or_default(),
        start,
        limit,
    };
    if nothing_pending {
        return Ok(page_response(
            &base,
            start,
            limit,
            Some(0),
            raw.as_deref(),
            Vec::new(),
        ));
    }
    let (items, count) = ctx.repo.list(&query).await?;
    let mut bodies = Vec::with_capacity(items.len());
    for inv in &items {
        let access = access_given(&caller, inv, &held).ok_or_else(|| {
            ApiError::internal(anyhow::anyhow!(
                "listed invitation {} is not visible",
                inv.id
            ))
        })?;
        bodies.push(ctx.body(inv, access, &base)?);
    }
    Ok(page_response(
        &base,
        start,
        limit,
        count,
        raw.as_deref(),
        bodies,
    ))
}

fn syntax_error(field: &str, err: &SyntaxError) -> ApiError {
    invalid_query(field, format!("{field} {err}"))
        .with_attributes(json!({ "field": field, "position": err.position }))
}

/// The collection's path with the request's own parameters and another `start`.
fn page_path(raw: Option<&str>, start: i64, limit: i64) -> String {
    let mut url = reqwest::Url::parse("http://localhost/invitations/invitations")
        .expect("a constant URL parses");
    {
        let mut pairs = url.query_pairs_mut();
        if let Some(raw) = raw {
            let parsed = reqwest::Url::parse(&format!("http://localhost/?{raw}"));
            for (k, v) in parsed
                .iter()
                .flat_map(|u| u.query_pairs().into_owned().collect::<Vec<_>>())
            {
                if k != "start" && k != "limit" {
                    pairs.append_pair(&k, &v);
                }
            }
        }
        pairs
            .append_pair("start", &start.to_string())
            .append_pair("limit", &limit.to_string());
    }
    format!("{}?{}", url.path(), url.query().unwrap_or(""))
}

fn page_response(
    base: &str,
    start: i64,
    limit: i64,
    count: Option<i64>,
    raw: Option<&str>,
    items: Vec<InvitationBody<'_>>,
) -> Response {
    let mut links = BTreeMap::from([
        ("self", link(base, &page_path(raw, start, limit))),
        ("first", link(base, &page_path(raw, 0, limit))),
        ("collection", link(base, COLLECTION)),
    ]);
    if start > 0 {
        links.insert(
            "prev",
            link(base, &page_path(raw, (start - limit).max(0), limit)),
        );
    }
    // `start` may be anything up to i64::MAX: a page past the end is empty, not an overflow.
    // Without a count, a full page may have a next one.
    let more = match count {
        Some(count) => start.saturating_add(limit) < count,
        None => i64::try_from(items.len()).is_ok_and(|n| n == limit),
    };
    if more && let Some(next) = start.checked_add(limit) {
        links.insert("next", link(base, &page_path(raw, next, limit)));
    }
    if let Some(count) = count.filter(|&c| c > 0) {
        links.insert(
            "last",
            link(base, &page_path(raw, (count - 1) / limit * limit, limit)),
        );
    }
    let size_hint = 1024 + 1200 * items.len();
    hal_sized(
        StatusCode::OK,
        &InvitationsBody {
            profile: "https://production.api.apiture.com/schemas/invitations/invitations/v1.2.0/profile.json",
            links,
            start,
            limit,
            count,
            name: "invitations",
            embedded: EmbeddedItems { items },
        },
        size_hint,
    )
}

/// Create a new invitation and send the invitation email to the invitee.
#[utoipa::path(post, path = "/invitations/invitations", operation_id = "createInvitation", tag = "Invitation",
    request_body = CreateBody,
    params(("Accept-Language" = Option<String>, Header, description = "The language of the invitation email (en or es)")),
    responses((status = 201, description = "Created.", body = InvitationBody, headers(
        ("Location" = String, description = "The URI of the new invitation"),
        ("ETag" = String, description = "The entity tag of the new invitation")))))]
pub async fn create(
    InvCaller(caller): InvCaller,
    State(state): State<AppState>,
    RequestBase(base): RequestBase,
    headers: HeaderMap,
    JsonBody(body): JsonBody<CreateBody>,
) -> Result<Response, ApiError> {
    require_scope(&caller, Scope::Write)?;
    let ctx = &state.invitations;
    // A customer's name comes from their token when it has one: the email goes out in the
    // bank's name, and its subject starts with this. Staff write as the institution.
    let token_name = (!caller.admin)
        .then(|| inviter_name_from_token(&caller.user.first_name, &caller.user.last_name))
        .flatten();
    let new = NewInvitation::parse(NewInvitationInput {
        kind: &body.r#type,
        email_address: &body.email_address,
        first_name: body.first_name.as_deref(),
        last_name: body.last_name.as_deref(),
        identification: body.identification.as_deref(),
        account_uri: body.account_uri.as_deref(),
        organization_uri: body.organization_uri.as_deref(),
        role: body.role.as_deref(),
        inviter_full_name: &body.inviter_full_name,
        inviter_name_from_token: token_name.as_deref(),
        shared_secret: &body.shared_secret,
        attributes: body.attributes,
    })?;
    check_inviter(ctx, &caller, &new).await?;
    let now = Timestamp::now();
    let id = ResourceId::generate();
    let invitation = Invitation {
        sealed_secret: ctx.secrets.seal(id.as_str(), new.shared_secret.expose()),
        sealed_identification: new
            .identification
            .as_deref()
            .map(|digits| ctx.seal_identification(&id, digits)),
        id,
        kind: new.kind,
        state: InvitationState::Sent,
        email_address: new.email_address,
        first_name: new.first_name,
        last_name: new.last_name,
        account_uri: new.account_uri,
        organization_uri: new.organization_uri,
        role: new.role,
        inviter_full_name: new.inviter_full_name,
        attributes: new.attributes,
        verification_count: 0,
        failed_verifications: 0,
        send_count: 1,
        created_by: caller.user.username.clone(),
        customer_id: caller.user.id.clone(),
        customer_group: caller.customer_group.clone(),
        revision: 1,
        created_at: now,
        updated_at: now,
        expires_at: now.plus_days(ctx.settings.expiry_days),
    };
    // A cap of 0 is no cap.
    let cap = |limit: i64| (limit > 0).then_some(limit);
    let caps = CreateCaps {
        per_customer_per_day: cap(ctx.settings.daily_invitations_per_customer)
            .filter(|_| !caller.admin),
        open_per_resource: cap(ctx.settings.open_invitations_per_resource),
    };
    ctx.repo
        .insert(
            &invitation,
            &ctx.email(&invitation, locale_of(&headers)),
            &caps,
        )
        .await?
        .map_err(|reached| cap_error(reached, new.kind))?;
    state.mail.wake();
    let access = if caller.admin {
        Access::Staff
    } else {
        Access::Owner
    };
    let mut res = ctx.response(StatusCode::CREATED, &invitation, access, &base)?;
    if let Ok(location) = HeaderValue::from_str(&format!("{COLLECTION}/{}", invitation.id)) {
        res.headers_mut().insert(header::LOCATION, location);
    }
    Ok(res)
}

/// The inviter must hold the account or organization in a role that may invite to it (staff
/// may invite to any), product promotions are for staff, and an account without joint owners
/// refuses joint invitations.
async fn check_inviter(
    ctx: &InvitationsContext,
    caller: &Caller,
    new: &NewInvitation,
) -> Result<(), ApiError> {
    if new.kind == InvitationType::ProductPromotion && !caller.admin {
        return Err(ApiError::forbidden(
            "Product promotion invitations are sent by the financial institution's staff",
        ));
    }
    if let (Some(resource), Some(field)) = (new.resource_uri(), new.kind.resource_field())
        && !caller.admin
    {
        let inviting_roles = match new.kind {
            InvitationType::Joint => &ctx.settings.account_inviter_roles,
            _ => &ctx.settings.organization_inviter_roles,
        };
        let held = ctx.entitlements_of(&caller.user.id).await?;
        let roles: Vec<&str> = held
            .iter()
            .filter(|e| e.resource_uri == resource)
            .map(|e| e.role.as_str())
            .collect();
        let may_invite = roles
            .iter()
            .any(|role| inviting_roles.iter().any(|r| r.eq_ignore_ascii_case(role)));
        if !may_invite {
            let detail = match roles.as_slice() {
                [] => format!("You may not invite people to this {field}"),
                held => format!(
                    "Your role on this {field} ({}) may not invite people to it",
                    held.join(", ")
                ),
            };
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "notEntitled",
                "Not Entitled",
                detail,
            )
            .with_attributes(json!({ "field": field })));
        }
    }
    if new.kind == InvitationType::Joint
        && let Some(account) = &new.account_uri
        && ctx.joint_owners_disabled(account).await?
    {
        return Err(ApiError::conflict(
            "jointOwnersDisabled",
            "Joint Owners Disabled",
            "Co-owners are not supported in this account.",
        )
        .with_remediation("Contact your financial institution."));
    }
    Ok(())
}

/// The answer to a create past a cap: 429 with `Retry-After` for the inviter's daily creates,
/// 409 for the open invitations on one account or organization.
fn cap_error(reached: CapReached, kind: InvitationType) -> ApiError {
    match reached {
        CapReached::CustomerDaily {
            limit,
            retry_after_ms,
        } => {
            // Whole seconds, rounded up: never before a place is free.
            let retry_after_secs = u64::try_from(retry_after_ms)
                .unwrap_or(0)
                .div_ceil(1000)
                .max(1);
            let mut e = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "invitationLimitReached",
                "Invitation Limit Reached",
                format!("You have created {limit} invitations in the last 24 hours, the most allowed"),
            )
            .with_attributes(json!({ "limit": limit, "windowHours": 24 }))
            .with_remediation("Wait until the time in Retry-After has passed, or contact your financial institution.");
            e.retry_after_secs = Some(retry_after_secs);
            e
        }
        CapReached::OpenOnResource { limit } => {
            let field = kind.resource_field().unwrap_or("accountUri");
            ApiError::conflict(
                "tooManyOpenInvitations",
                "Too Many Open Invitations",
                format!("This {field} already has {limit} open invitations, the most allowed"),
            )
            .with_attributes(json!({ "field": field, "limit": limit }))
            .with_remediation(
                "Wait for the invitees to answer, or revoke an invitation you no longer need.",
            )
        }
    }
}

// ---- One invitation -------------------------------------------------------------------

/// Fetch a representation of this invitation.
#[utoipa::path(get, path = "/invitations/invitations/{invitationId}", operation_id = "getInvitation", tag = "Invitation",
    params(
        ("invitationId" = String, Path, description = "The invitation's id"),
        ("If-None-Match" = Option<String>, Header, description = "Answer 304 when this matches the current entity tag"),
    ),
    responses(
        (status = 200, description = "OK.", body = InvitationBody, headers(("ETag" = String, description = "The entity tag"))),
        (status = 304, description = "Not Modified."),
    ))]
pub async fn get_one(
    InvCaller(caller): InvCaller,
    State(state): State<AppState>,
    RequestBase(base): RequestBase,
    Path(id): Path<String>,
    IfNoneMatch(if_none_match): IfNoneMatch,
) -> Result<Response, ApiError> {
    require_scope(&caller, Scope::Read)?;
    let id = path_id(ID_PARAM, &id)?;
    let ctx = &state.invitations;
    let (inv, access) = ctx.visible(&caller, &id).await?;
    if if_none_match.is_some_and(|c| c.matches_weakly(&inv.etag())) {
        return Ok(crate::http::not_modified(&inv.etag()));
    }
    ctx.response(StatusCode::OK, &inv, access, &base)
}

fn may_act(access: Access) -> Result<(), ApiError> {
    if access.may_act() {
        Ok(())
    } else {
        Err(ApiError::forbidden(
            "Only the inviter or the financial institution may change this invitation",
        ))
    }
}

/// Delete this invitation resource.
#[utoipa::path(delete, path = "/invitations/invitations/{invitationId}", operation_id = "deleteInvitation", tag = "Invitation",
    params(("invitationId" = String, Path, description = "The invitation's id")),
    responses((status = 204, description = "No Content.")))]
pub async fn delete(
    InvCaller(caller): InvCaller,
    State(state): State<AppState>,
    Path(id): Path<String>,
    IfMatch(if_match): IfMatch,
) -> Result<StatusCode, ApiError> {
    require_scope(&caller, Scope::Delete)?;
    let id = path_id(ID_PARAM, &id)?;
    apply(&state.invitations, &caller, &id, if_match.as_ref(), |_| {
        Ok(Effect::Delete)
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Why a change did not happen.
enum Stopped {
    Precondition,
    Refused(Refusal),
}

/// Applies an inviter's or staff member's change to a visible invitation and answers with it.
async fn change(
    ctx: &InvitationsContext,
    caller: &Caller,
    id: &ResourceId,
    if_match: Option<&Condition>,
    base: &str,
    change: impl Fn(&mut Invitation) -> Result<Effect, Refusal> + Send + Sync,
) -> Result<Response, ApiError> {
    let (changed, access) = apply(ctx, caller, id, if_match, change).await?;
    ctx.response(StatusCode::OK, &changed, access, base)
}

/// Applies an inviter's or staff member's change to a visible invitation, with `If-Match`
/// checked against the row as locked for the change.
async fn apply(
    ctx: &InvitationsContext,
    caller: &Caller,
    id: &ResourceId,
    if_match: Option<&Condition>,
    apply: impl Fn(&mut Invitation) -> Result<Effect, Refusal> + Send + Sync,
) -> Result<(Invitation, Access), ApiError> {
    let (_, access) = ctx.visible(caller, id).await?;
    may_act(access)?;
    let mut stopped = None;
    let changed = ctx
        .repo
        .modify(id, &mut |inv: &mut Invitation| {
            if if_match.is_some_and(|c| !c.matches_strongly(&inv.etag())) {
                stopped = Some(Stopped::Precondition);
                return Effect::None;
            }
            apply(inv).unwrap_or_else(|refusal| {
                stopped = Some(Stopped::Refused(refusal));
                Effect::None
            })
        })
        .await?
        .ok_or_else(|| not_found(id))?;
    match stopped {
        Some(Stopped::Precondition) => Err(ApiError::precondition_failed()),
        Some(Stopped::Refused(refusal)) => Err(refusal_error(refusal)),
        None => Ok((changed, access)),
    }
}

/// Change the shared secret while the invitation is `sent` (this also lifts a lock).
#[utoipa::path(patch, path = "/invitations/invitations/{invitationId}", operation_id = "patchInvitation", tag = "Invitation",
    request_body = PatchBody,
    params(
        ("invitationId" = String, Path, description = "The invitation's id"),
        ("If-Match" = Option<String>, Header, description = "When passed, must match the current entity tag, else 412"),
    ),
    responses((status = 200, description = "OK.", body = InvitationBody, headers(("ETag" = String, description = "The entity tag")))))]
pub async fn patch(
    InvCaller(caller): InvCaller,
    State(state): State<AppState>,
    RequestBase(base): RequestBase,
    Path(id): Path<String>,
    IfMatch(if_match): IfMatch,
    JsonBody(body): JsonBody<PatchBody>,
) -> Result<Response, ApiError> {
    require_scope(&caller, Scope::Write)?;
    let id = path_id(ID_PARAM, &id)?;
    let secret = SharedSecret::parse("sharedSecret", &body.shared_secret)?;
    let ctx = &state.invitations;
    let sealed = ctx.secrets.seal(id.as_str(), secret.expose());
    change(ctx, &caller, &id, if_match.as_ref(), &base, |inv| {
        inv.replace_secret(Timestamp::now(), sealed.clone())
            .map(|()| Effect::Save)
    })
    .await
}

/// The `?invitation=` parameter of the actions.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ActionParams {
    /// The invitation's id.
    invitation: String,
}

fn saved(changed: Changed) -> Effect {
    match changed {
        Changed::Yes => Effect::Save,
        Changed::No => Effect::None,
    }
}

/// Revoke an invitation that is `sent` (no effect when already revoked).
#[utoipa::path(post, path = "/invitations/revoked", operation_id = "revokeInvitation", tag = "Invitation Actions",
    params(ActionParams, ("If-Match" = Option<String>, Header, description = "Must match the current entity tag, else 412")),
    responses((status = 200, description = "OK.", body = InvitationBody)))]
pub async fn revoke(
    InvCaller(caller): InvCaller,
    State(state): State<AppState>,
    RequestBase(base): RequestBase,
    IfMatch(if_match): IfMatch,
    query: Result<Query<ActionParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    require_scope(&caller, Scope::Write)?;
    let id = path_id("invitation", &query_params(query)?.invitation)?;
    change(
        &state.invitations,
        &caller,
        &id,
        if_match.as_ref(),
        &base,
        |inv| inv.revoke(Timestamp::now()).map(saved),
    )
    .await
}

/// Re-send a `sent` invitation's email, up to the configured limit.
#[utoipa::path(post, path = "/invitations/sent", operation_id = "sendInvitation", tag = "Invitation Actions",
    params(ActionParams,
        ("If-Match" = Option<String>, Header, description = "Must match the current entity tag, else 412"),
        ("Accept-Language" = Option<String>, Header, description = "The language of the email (en or es)")),
    responses((status = 200, description = "OK.", body = InvitationBody)))]
pub async fn send(
    InvCaller(caller): InvCaller,
    State(state): State<AppState>,
    RequestBase(base): RequestBase,
    IfMatch(if_match): IfMatch,
    headers: HeaderMap,
    query: Result<Query<ActionParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    require_scope(&caller, Scope::Write)?;
    let id = path_id("invitation", &query_params(query)?.invitation)?;
    let ctx = &state.invitations;
    let locale = locale_of(&headers);
    let resent = change(ctx, &caller, &id, if_match.as_ref(), &base, |inv| {
        inv.resend(Timestamp::now(), ctx.settings.resend_limit)
            .map(|()| Effect::SaveAndSend(ctx.email(inv, locale)))
    })
    .await;
    if resent.is_ok() {
        state.mail.wake();
    }
    resent
}

/// Complete an accepted invitation (staff only; no effect when already completed).
#[utoipa::path(post, path = "/invitations/completed", operation_id = "completeInvitation", tag = "Invitation Actions",
    params(ActionParams, ("If-Match" = Option<String>, Header, description = "Must match the current entity tag, else 412")),
    responses((status = 200, description = "OK.", body = InvitationBody)))]
pub async fn complete(
    InvCaller(caller): InvCaller,
    State(state): State<AppState>,
    RequestBase(base): RequestBase,
    IfMatch(if_match): IfMatch,
    query: Result<Query<ActionParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    require_scope(&caller, Scope::Write)?;
    if !caller.admin {
        return Err(ApiError::forbidden(
            "Only the financial institution's staff complete invitations",
        ));
    }
    let id = path_id("invitation", &query_params(query)?.invitation)?;
    change(
        &state.invitations,
        &caller,
        &id,
        if_match.as_ref(),
        &base,
        |inv| inv.complete(Timestamp::now()).map(saved),
    )
    .await
}

/// Verify (accept) a `sent` invitation with its shared secret. No credentials needed.
#[utoipa::path(post, path = "/invitations/verifications", operation_id = "verifyInvitation", tag = "Verification",
    request_body = VerificationBody,
    security(()),
    responses((status = 200, description = "OK - the invitation was matched and accepted.", body = VerificationBody)))]
pub async fn verify(
    State(state): State<AppState>,
    RequestBase(base): RequestBase,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<VerificationBody>,
) -> Result<Response, ApiError> {
    let ctx = &state.invitations;
    let ip = ctx.client_ip(peer, &headers);
    let claimed = Claimed {
        first_name: body.first_name.as_deref(),
        last_name: body.last_name.as_deref(),
        identification: body.identification.as_deref(),
    };
    match ctx
        .verify(ip, &body.invitation_id, &body.shared_secret, &claimed)
        .await?
    {
        Verification::Accepted(inv) => {
            let mut res = hal(
                StatusCode::OK,
                &VerificationBody {
                    profile: Some("https://production.api.apiture.com/schemas/invitations/verification/v2.1.0/profile.json".to_owned()),
                    links: Some(json!({
                        "self": { "href": format!("{base}/invitations/verifications") },
                        "apiture:invitation": { "href": format!("{base}{COLLECTION}/{}", inv.id) },
                    })),
                    ..body
                },
            );
            res.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            Ok(res)
        }
        Verification::Mismatch => Err(mismatch_error()),
        Verification::Refused(refusal) => Err(refusal_error(refusal)),
        Verification::TooManyAttempts(secs) => Err(ApiError::too_many_requests(secs)
            .with_remediation("Wait until the time in Retry-After has passed, then try again.")),
    }
}

/// The `invitationState` and `invitationType` label groups: the label in `locale`, the other
/// language as a variant.
/// Label groups for the enumerations of this API (the seed's `labelGroups`).
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = labelGroups)]
pub struct LabelGroups {
    #[serde(rename = "_profile")]
    pub profile: &'static str,
    #[serde(rename = "_links")]
    pub links: BTreeMap<&'static str, Link>,
    /// Group name (`invitationState`, `invitationType`) to its items by value.
    pub groups: BTreeMap<&'static str, BTreeMap<&'static str, LabelItem>>,
}

/// The label of one enumeration value, in the negotiated language, with the other language
/// under `variants`.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = labelItem)]
pub struct LabelItem {
    pub label: &'static str,
    pub description: &'static str,
    pub variants: BTreeMap<&'static str, SimpleLabel>,
}

/// A label and description in one language.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = simpleLabel)]
pub struct SimpleLabel {
    pub label: &'static str,
    pub description: &'static str,
}

pub fn labels(locale: &str, base: &str) -> LabelGroups {
    type Item = (&'static str, [(&'static str, &'static str); 2]);
    const STATES: [Item; 5] = [
        (
            "sent",
            [
                ("Sent", "The invitation has been sent to the invitee."),
                ("Enviada", "La invitación se envió a la persona invitada."),
            ],
        ),
        (
            "accepted",
            [
                (
                    "Accepted",
                    "The invitation has been accepted by the invitee.",
                ),
                ("Aceptada", "La persona invitada aceptó la invitación."),
            ],
        ),
        (
            "completed",
            [
                (
                    "Completed",
                    "The invitee has been added to their invited role.",
                ),
                (
                    "Completada",
                    "La persona invitada ya tiene el rol al que se la invitó.",
                ),
            ],
        ),
        (
            "revoked",
            [
                ("Revoked", "The invitation has been revoked by the inviter."),
                ("Revocada", "Quien invitó revocó la invitación."),
            ],
        ),
        (
            "expired",
            [
                ("Expired", "The invitation lifetime has expired."),
                ("Vencida", "El plazo de la invitación venció."),
            ],
        ),
    ];
    const TYPES: [Item; 3] = [
        (
            "joint",
            [
                ("Joint Owner", "A Joint Owner invitation."),
                ("Cotitular", "Una invitación para ser cotitular."),
            ],
        ),
        (
            "authorizedSigner",
            [
                ("Authorized Signer", "An Authorized Signer invitation."),
                (
                    "Firmante autorizado",
                    "Una invitación para ser firmante autorizado.",
                ),
            ],
        ),
        (
            "productPromotion",
            [
                (
                    "Product Promotion",
                    "The financial institution invites a customer to open an account as part of a product promotion.",
                ),
                (
                    "Promoción de producto",
                    "La institución financiera invita a abrir una cuenta como parte de una promoción.",
                ),
            ],
        ),
    ];
    let (main, other, other_tag) = if locale == "es" {
        (1, 0, "en")
    } else {
        (0, 1, "es")
    };
    let group = |items: &[Item]| -> BTreeMap<&'static str, LabelItem> {
        items
            .iter()
            .map(|(key, texts)| {
                let item = LabelItem {
                    label: texts[main].0,
                    description: texts[main].1,
                    variants: BTreeMap::from([(
                        other_tag,
                        SimpleLabel {
                            label: texts[other].0,
                            description: texts[other].1,
                        },
                    )]),
                };
                (*key, item)
            })
            .collect()
    };
    LabelGroups {
        profile: "https://production.api.apiture.com/schemas/common/labelGroups/v1.1.0/profile.json",
        links: BTreeMap::from([("self", link(base, "/invitations/labels"))]),
        groups: BTreeMap::from([
            ("invitationState", group(&STATES)),
            ("invitationType", group(&TYPES)),
        ]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invitation_links_are_written_in_key_order_with_full_hrefs() {
        let id = "0b0fa3d2";
        let all = InvitationLinks {
            base: "https://api.bank.example",
            id,
            accept_base: Some("https://bank.example"),
            revoke: true,
            send: true,
            complete: true,
        };
        let written = sonic_rs::to_string(&all).unwrap();
        let parsed: BTreeMap<String, Value> = serde_json::from_str(&written).unwrap();
        let expected = json!({
            "apiture:acceptInvitationUserExperience":
                {"href": "https://bank.example/invitations/accept?invitationId=0b0fa3d2"},
            "apiture:complete":
                {"href": "https://api.bank.example/invitations/completed?invitation=0b0fa3d2"},
            "apiture:revoke":
                {"href": "https://api.bank.example/invitations/revoked?invitation=0b0fa3d2"},
            "apiture:send":
                {"href": "https://api.bank.example/invitations/sent?invitation=0b0fa3d2"},
            "self": {"href": "https://api.bank.example/invitations/invitations/0b0fa3d2"},
        });
        // serde_json's map sorts its keys: equal text means the same links in the same order.
        assert_eq!(written, expected.to_string());
        assert_eq!(serde_json::to_value(&parsed).unwrap(), expected);
        let only_self = InvitationLinks {
            base: "https://api.bank.example",
            id,
            accept_base: None,
            revoke: false,
            send: false,
            complete: false,
        };
        assert_eq!(
            sonic_rs::to_string(&only_self).unwrap(),
            r#"{"self":{"href":"https://api.bank.example/invitations/invitations/0b0fa3d2"}}"#
        );
    }

    #[test]
    fn page_links_keep_the_request_parameters() {
        let href = page_path(Some("state=sent%7Caccepted&start=5&limit=2&q=a+b"), 7, 2);
        assert_eq!(
            href,
            "/invitations/invitations?state=sent%7Caccepted&q=a+b&start=7&limit=2"
        );
        assert_eq!(
            page_path(None, 0, 10),
            "/invitations/invitations?start=0&limit=10"
        );
    }
}
