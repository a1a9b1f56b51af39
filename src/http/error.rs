//! One error type for every operation, rendered in the calling API's wire format in one place:
//! RFC 9457 `application/problem+json` for `/bankingAdmin`, the HAL `errorResponse` with
//! `_error` for `/invitations`.

use super::link_base::LinkBase;
use crate::domain::{ValidationError, ids::ResourceId, time::Timestamp};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use std::sync::Arc;

/// An error answer; boxed so that `Result<_, ApiError>` stays small on the success path.
#[derive(Debug, Clone)]
pub struct ApiError(Box<ErrorDetails>);

#[derive(Debug, Clone)]
pub struct ErrorDetails {
    pub status: StatusCode,
    /// The problem type name, e.g. `notFound`; it forms the `type` URI.
    pub type_name: &'static str,
    pub title: &'static str,
    pub detail: String,
    pub remediation: Option<&'static str>,
    pub attributes: Option<Value>,
    pub retry_after_secs: Option<u64>,
}

impl ApiError {
    pub fn new(
        status: StatusCode,
        type_name: &'static str,
        title: &'static str,
        detail: impl Into<String>,
    ) -> Self {
        Self(Box::new(ErrorDetails {
            status,
            type_name,
            title,
            detail: detail.into(),
            remediation: None,
            attributes: None,
            retry_after_secs: None,
        }))
    }

    pub fn with_attributes(mut self, attributes: Value) -> Self {
        self.attributes = Some(attributes);
        self
    }

    pub fn with_remediation(mut self, remediation: &'static str) -> Self {
        self.remediation = Some(remediation);
        self
    }

    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "badRequest", "Bad Request", detail)
    }

    /// A request value that breaks a published constraint; the field is named in the detail
    /// and in `attributes.field`.
    pub fn invalid(err: ValidationError) -> Self {
        let field = err.field.clone();
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalidValue",
            "Invalid Value",
            err.to_string(),
        )
        .with_attributes(json!({ "field": field }))
    }

    pub fn unauthorized(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "Unauthorized",
            detail,
        )
    }

    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", "Forbidden", detail)
    }

    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "notFound", "Not Found", detail)
    }

    pub fn conflict(
        type_name: &'static str,
        title: &'static str,
        detail: impl Into<String>,
    ) -> Self {
        Self::new(StatusCode::CONFLICT, type_name, title, detail)
    }

    pub fn precondition_failed() -> Self {
        Self::new(
            StatusCode::PRECONDITION_FAILED,
            "preconditionFailed",
            "Precondition Failed",
            "The If-Match value does not match the current entity tag; fetch the resource again",
        )
    }

    pub fn unprocessable(
        type_name: &'static str,
        title: &'static str,
        detail: impl Into<String>,
    ) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, type_name, title, detail)
    }

    pub fn too_many_requests(retry_after_secs: u64) -> Self {
        let mut e = Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "tooManyRequests",
            "Too Many Requests",
            format!("Too many requests; retry after {retry_after_secs} seconds"),
        );
        e.retry_after_secs = Some(retry_after_secs);
        e
    }

    /// An unexpected failure: logged in full, answered without internals.
    pub fn internal(err: impl Into<anyhow::Error>) -> Self {
        let err = err.into();
        tracing::error!(error = format!("{err:#}"), "request failed");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internalError",
            "Internal Server Error",
            "The service could not complete the request; quote the problem id to support",
        )
    }

    /// The generic error for a status produced outside the handlers (routing, limits, timeouts).
    pub fn from_status(status: StatusCode) -> Self {
        let (type_name, detail) = match status {
            StatusCode::NOT_FOUND => ("notFound", "There is no resource at this path"),
            StatusCode::METHOD_NOT_ALLOWED => (
                "methodNotAllowed",
                "This method is not supported on this path",
            ),
            StatusCode::PAYLOAD_TOO_LARGE => ("payloadTooLarge", "The request body is too large"),
            StatusCode::UNSUPPORTED_MEDIA_TYPE => (
                "unsupportedMediaType",
                "The request body must be application/json",
            ),
            StatusCode::REQUEST_TIMEOUT => {
                ("requestTimeout", "The request took too long to arrive")
            }
            StatusCode::SERVICE_UNAVAILABLE => (
                "serviceUnavailable",
                "The service could not answer in time; retry later",
            ),
            s if s.is_server_error() => (
                "internalError",
                "The service could not complete the request",
            ),
            _ => ("badRequest", "The request is not well-formed"),
        };
        Self::new(
            status,
            type_name,
            status.canonical_reason().unwrap_or("Error"),
            detail,
        )
    }
}

impl std::ops::Deref for ApiError {
    type Target = ErrorDetails;

    fn deref(&self) -> &ErrorDetails {
        &self.0
    }
}

impl std::ops::DerefMut for ApiError {
    fn deref_mut(&mut self) -> &mut ErrorDetails {
        &mut self.0
    }
}

impl From<ValidationError> for ApiError {
    fn from(err: ValidationError) -> Self {
        Self::invalid(err)
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(err: crate::store::StoreError) -> Self {
        Self::internal(err)
    }
}

/// Handlers return the error; the API's rendering middleware turns it into a body.
impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut res = self.status.into_response();
        res.extensions_mut().insert(self);
        res
    }
}

/// The wire format of one API's errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorFormat {
    Problem,
    Hal,
}

/// What the renderer needs to know about the request (kept cheap: most requests succeed).
struct RequestFacts {
    path: String,
    request_id: Option<HeaderValue>,
    format: ErrorFormat,
    /// The base of a HAL error's links (`LinkBase`); problem details carry no links.
    link_base: Option<Arc<str>>,
}

impl RequestFacts {
    fn of(req: &Request, links: &LinkBase) -> Self {
        let path = req.uri().path();
        let format = ErrorFormat::for_path(path);
        Self {
            path: path.to_owned(),
            request_id: req.headers().get("x-request-id").cloned(),
            format,
            link_base: (format == ErrorFormat::Hal).then(|| links.of(req.headers())),
        }
    }

    /// The problem id: the request id when it fits the id pattern, else a fresh one.
    fn problem_id(&self) -> String {
        self.request_id
            .as_ref()
            .and_then(|v| v.to_str().ok())
            .filter(|id| ResourceId::is_valid(id))
            .map(str::to_owned)
            .unwrap_or_else(|| ResourceId::generate().into_string())
    }
}

/// RFC 9457 problem details with the seed's `problemResponse` fields.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = problemResponse)]
pub struct ProblemBody {
    #[schema(
        pattern = r"^[-_:.~$a-zA-Z0-9]{6,48}$",
        min_length = 6,
        max_length = 48
    )]
    pub id: String,
    /// A URI reference naming the problem type, e.g. `/errors/notFound/v1.0.0`.
    #[schema(max_length = 2048)]
    pub r#type: String,
    #[schema(max_length = 120)]
    pub title: String,
    #[schema(minimum = 100, maximum = 599)]
    pub status: u16,
    #[schema(max_length = 256)]
    pub detail: String,
    /// The request path with the problem id as fragment.
    #[schema(max_length = 2048)]
    pub instance: String,
    #[schema(value_type = String, format = DateTime, min_length = 20, max_length = 30)]
    pub occurred_at: Timestamp,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub attributes: Option<Value>,
}

/// The HAL error representation of the Invitations API (`errorResponse`).
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
#[schema(as = errorResponse)]
pub struct HalErrorBody {
    #[serde(rename = "_profile")]
    pub profile: &'static str,
    #[serde(rename = "_links")]
    #[schema(value_type = Object)]
    pub links: Value,
    #[serde(rename = "_error")]
    pub error: HalError,
}

#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = error)]
pub struct HalError {
    #[serde(rename = "_id")]
    pub id: String,
    pub message: String,
    #[schema(minimum = 100, maximum = 599)]
    pub status_code: u16,
    pub r#type: String,
    #[schema(value_type = String, format = DateTime)]
    pub occurred_at: Timestamp,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub attributes: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remediation: Option<String>,
    #[serde(rename = "_links")]
    #[schema(value_type = Object)]
    pub links: Value,
}

fn render(err: &ApiError, facts: &RequestFacts) -> Response {
    let problem_id = facts.problem_id();
    let occurred_at = Timestamp::now();
    let link_base = facts.link_base.as_deref().unwrap_or_default();
    let (content_type, body) = match facts.format {
        ErrorFormat::Problem => (
            "application/problem+json",
            serde_json::to_string(&ProblemBody {
                r#type: format!("/errors/{}/v1.0.0", err.type_name),
                title: err.title.to_owned(),
                status: err.status.as_u16(),
                detail: truncate(&err.detail, 256),
                instance: format!("{}#{problem_id}", facts.path),
                occurred_at,
                attributes: err.attributes.clone(),
                id: problem_id,
            }),
        ),
        ErrorFormat::Hal => (
            "application/hal+json",
            serde_json::to_string(&HalErrorBody {
                profile: "https://production.api.apiture.com/schemas/common/errorResponse/v2.1.0/profile.json",
                links: json!({ "self": { "href": format!("{link_base}{}", facts.path) } }),
                error: HalError {
                    id: problem_id,
                    message: err.detail.clone(),
                    status_code: err.status.as_u16(),
                    r#type: err.type_name.to_owned(),
                    occurred_at,
                    attributes: err.attributes.clone(),
                    remediation: err.remediation.map(str::to_owned),
                    links: json!({ "describedby": { "href": format!("{link_base}/errors/{}", err.type_name) } }),
                },
            }),
        ),
    };
    let body = body.unwrap_or_else(|_| String::from("{}"));
    let mut res = (err.status, body).into_response();
    let headers = res.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Some(secs) = err.retry_after_secs {
        headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    if err.status == StatusCode::UNAUTHORIZED {
        headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    res
}

fn truncate(text: &str, max_chars: usize) -> String {
    text.chars().take(max_chars).collect()
}

impl ErrorFormat {
    /// The Invitations API speaks HAL; everything else answers problem+json.
    pub fn for_path(path: &str) -> Self {
        if path == "/invitations" || path.starts_with("/invitations/") {
            Self::Hal
        } else {
            Self::Problem
        }
    }
}

/// Middleware: renders every error response in the calling API's format, whether a handler,
/// an extractor or a layer (body limit, timeout, routing) produced it.
pub async fn render_errors(State(links): State<LinkBase>, req: Request, next: Next) -> Response {
    let facts = RequestFacts::of(&req, &links);
    let mut res = next.run(req).await;
    if let Some(err) = res.extensions_mut().remove::<ApiError>() {
        return with_allow(render(&err, &facts), &res);
    }
    let status = res.status();
    let is_bare_error = (status.is_client_error() || status.is_server_error())
        && res.headers().get(header::CONTENT_TYPE).is_none_or(|ct| {
            !ct.as_bytes().starts_with(b"application/problem+json")
                && !ct.as_bytes().starts_with(b"application/hal+json")
                // The invitee's accept page answers its errors as HTML pages.
                && !ct.as_bytes().starts_with(b"text/html")
        });
    if is_bare_error {
        return with_allow(render(&ApiError::from_status(status), &facts), &res);
    }
    res
}

/// Keeps the `Allow` header of a 405 when its body is replaced.
fn with_allow(mut rendered: Response, original: &Response) -> Response {
    if let Some(allow) = original.headers().get(header::ALLOW) {
        rendered.headers_mut().insert(header::ALLOW, allow.clone());
    }
    rendered
}
