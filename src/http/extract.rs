//! Request extractors that validate before a handler runs, answering with `ApiError`.

use super::AppState;
use super::error::ApiError;
use crate::auth::{AuthError, Caller};
use crate::domain::etag::Condition;
use crate::domain::ids::ResourceId;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use bytes::Bytes;
use serde::de::DeserializeOwned;
use tower_http::timeout::TimeoutError;

/// Authenticates the API key and bearer token, then applies the client's rate limit.
pub async fn authenticate(parts: &Parts, state: &AppState) -> Result<Caller, ApiError> {
    let api_key = header_text(parts, "API-Key")?;
    let authorization = header_text(parts, header::AUTHORIZATION.as_str())?;
    let caller = state
        .auth
        .authenticate(api_key, authorization)
        .await
        .map_err(|err| match err {
            AuthError::InvalidToken(reason) => {
                tracing::debug!(reason, "token refused");
                ApiError::unauthorized("The bearer token is missing, expired or not valid")
            }
            other => ApiError::unauthorized(other.to_string()),
        })?;
    state
        .limiter
        .check(&format!("{}/{}", caller.client, caller.subject))
        .map_err(ApiError::too_many_requests)?;
    Ok(caller)
}

/// An optional header's text. A value with bytes outside visible ASCII is malformed (400):
/// no API key, token or entity tag contains any, so it is not a credential that is merely wrong.
fn header_text<'a>(parts: &'a Parts, name: &str) -> Result<Option<&'a str>, ApiError> {
    parts
        .headers
        .get(name)
        .map(|v| {
            v.to_str()
                .map_err(|_| ApiError::bad_request(format!("The {name} header is not valid text")))
        })
        .transpose()
}

/// A staff caller of the admin API, with the institution's feature switch on.
pub struct AdminCaller(pub Caller);

impl FromRequestParts<AppState> for AdminCaller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let caller = authenticate(parts, state).await?;
        if !caller.admin {
            return Err(ApiError::forbidden(
                "This operation needs an administrative access token",
            ));
        }
        if !state
            .config
            .institution
            .enabled_features
            .customer_audience_connections
        {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "featureDisabled",
                "Feature Disabled",
                "Customer audience connections are not enabled for this institution (enabledFeatures.customerAudienceConnections)",
            ));
        }
        Ok(Self(caller))
    }
}

/// A resource id in the last-but-action path segment, validated against the id pattern.
pub fn path_id(name: &str, value: &str) -> Result<ResourceId, ApiError> {
    ResourceId::parse(name, value).map_err(ApiError::invalid)
}

fn condition(parts: &Parts, name: &'static str) -> Result<Option<Condition>, ApiError> {
    header_text(parts, name)?
        .map(|text| Condition::parse(name, text).map_err(ApiError::invalid))
        .transpose()
}

/// The optional `If-Match` header.
pub struct IfMatch(pub Option<Condition>);

impl<S: Send + Sync> FromRequestParts<S> for IfMatch {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        condition(parts, "If-Match").map(Self)
    }
}

/// The optional `If-None-Match` header.
pub struct IfNoneMatch(pub Option<Condition>);

impl<S: Send + Sync> FromRequestParts<S> for IfNoneMatch {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        condition(parts, "If-None-Match").map(Self)
    }
}

/// A JSON request body: `application/json` (else 415), within the body limit (else 413), and
/// matching the target type exactly (else 400 naming the field).
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let is_json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|ct| ct.split(';').next())
            .map(|mime| {
                let mime = mime.trim().to_ascii_lowercase();
                mime == "application/json" || mime.ends_with("+json")
            })
            .unwrap_or(false);
        if !is_json {
            return Err(ApiError::from_status(StatusCode::UNSUPPORTED_MEDIA_TYPE));
        }
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|rejection| body_read_error(&rejection))?;
        parse_json(&bytes).map(Self)
    }
}

/// The answer when a request body could not be read: 413 past the body limit, 408 when it did
/// not arrive before the body deadline, else 400 (the client broke the framing or went away).
pub fn body_read_error(rejection: &BytesRejection) -> ApiError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        return ApiError::from_status(StatusCode::PAYLOAD_TOO_LARGE);
    }
    let mut source = std::error::Error::source(rejection);
    while let Some(err) = source {
        if err.is::<TimeoutError>() {
            return ApiError::from_status(StatusCode::REQUEST_TIMEOUT);
        }
        source = err.source();
    }
    ApiError::bad_request("The request body could not be read")
}

/// Parses JSON into `T`, naming the offending field on failure.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner();
        let detail = if path == "." || path.is_empty() {
            format!("The request body is not valid: {inner}")
        } else {
            format!("The request body is not valid at {path}: {inner}")
        };
        ApiError::bad_request(detail).with_attributes(serde_json::json!({ "field": path }))
    })?;
    de.end()
        .map_err(|err| ApiError::bad_request(format!("The request body is not valid: {err}")))?;
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Inner {
        id: String,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Outer {
        audience: Inner,
    }

    #[test]
    fn errors_name_the_field() {
        let err = parse_json::<Outer>(br#"{"audience": {"id": 5}}"#).unwrap_err();
        assert!(err.detail.contains("audience.id"), "{}", err.detail);
        let err = parse_json::<Outer>(br#"{"audience": {"id": "x", "extra": 1}}"#).unwrap_err();
        assert!(err.detail.contains("extra"), "{}", err.detail);
        let err = parse_json::<Outer>(b"{").unwrap_err();
        assert_eq!(err.status, StatusCode::BAD_REQUEST);
        assert!(parse_json::<Outer>(br#"{"audience": {"id": "x"}} trailing"#).is_err());
        assert!(parse_json::<Outer>(br#"{"audience": {"id": "x"}}"#).is_ok());
    }
}
