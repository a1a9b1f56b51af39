//! The HTTP adapter: routes, middleware and the shared request state.

pub mod admin;
pub mod error;
pub mod extract;
pub mod invitations;
pub mod link_base;
pub mod openapi;
pub mod rate_limit;
pub mod serve;
pub mod sync_runs;

use crate::auth::Authenticator;
use crate::config::{Config, ProviderConfig};
use crate::store::connections::ConnectionRepository;
use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderName, Method, StatusCode};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use error::{ApiError, render_errors};
use futures_util::FutureExt;
use std::collections::BTreeMap;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;
use tower::ServiceBuilder;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;
use tower_http::timeout::{RequestBodyDeadlineLayer, TimeoutLayer};
use tower_http::trace::TraceLayer;
use utoipa::OpenApi;

#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub auth: Arc<Authenticator>,
    pub limiter: Arc<rate_limit::RateLimiter>,
    pub connections: Arc<dyn ConnectionRepository>,
    pub providers: Arc<BTreeMap<String, ProviderConfig>>,
    /// Call `wake()` after committing a transaction that enqueued email.
    pub mail: crate::mail::MailWaker,
    pub invitations: Arc<invitations::InvitationsContext>,
    /// The audience sync engine's history and wake-up call.
    pub sync: crate::sync::SyncHandle,
}

/// The admin API's media type (the Invitations API answers `application/hal+json`).
pub const JSON: &str = "application/json";

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

pub fn router(state: AppState) -> Router {
    let config = state.config.clone();
    let links = state.invitations.links.clone();
    let admin = Router::new()
        .route(
            "/customerAudienceConnections",
            get(admin::list).post(admin::create),
        )
        .route(
            "/customerAudienceConnections/{customerAudienceConnectionId}",
            get(admin::get).delete(admin::delete),
        )
        .route(
            "/customerAudienceConnections/{customerAudienceConnectionId}/active",
            post(admin::activate),
        )
        .route(
            "/customerAudienceConnections/{customerAudienceConnectionId}/inactive",
            post(admin::deactivate),
        )
        .route(
            "/customerAudienceConnections/{customerAudienceConnectionId}/failed",
            post(admin::fail),
        )
        .route("/apiDoc", get(admin_api_doc))
        .route(
            "/customerAudienceConnections/{customerAudienceConnectionId}/syncRuns",
            get(sync_runs::list),
        );

    let routes = Router::new()
        .nest("/bankingAdmin", admin)
        .merge(invitations::api::routes())
        .route("/health", get(|| async { "ok" }))
        .fallback(unknown_path)
        .with_state(state);
    // One stack around the whole router, outermost first. (`Router::layer` would wrap every
    // route on its own: a boxed service per layer and route, each cloned on every request.)
    let stack = ServiceBuilder::new()
        .layer(SetSensitiveRequestHeadersLayer::new([
            axum::http::header::AUTHORIZATION,
            HeaderName::from_static("api-key"),
        ]))
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(TraceLayer::new_for_http().make_span_with(|req: &Request| {
            let request_id = req
                .headers()
                .get(&REQUEST_ID)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            tracing::info_span!(
                "request",
                method = req.method().as_str(),
                path = req.uri().path(),
                request_id
            )
        }))
        // Outside the limits and timeouts, so that their answers are rendered too.
        .layer(middleware::from_fn_with_state(links, render_errors))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            Duration::from_secs(config.http.request_timeout_secs),
        ))
        // A body that stalls fails to read at the deadline; `JsonBody` answers that with 408.
        .layer(RequestBodyDeadlineLayer::new(Duration::from_secs(
            config.http.body_read_timeout_secs,
        )))
        .layer(RequestBodyLimitLayer::new(config.http.body_limit_bytes))
        // The two layers above wrap the request body; axum's extractors take it boxed.
        .map_request(|req: axum::http::Request<_>| req.map(axum::body::Body::new))
        .layer(middleware::from_fn(run_to_completion))
        .service(routes);
    Router::new().fallback_service(stack)
}

/// Runs each write's handler as its own task, so that a client that disconnects (or the request
/// timeout) abandons the answer but never cuts a handler off between two statements of a
/// database transaction. A transaction dropped halfway leaves its rollback queued on a
/// PostgreSQL connection until that connection is next used, holding its row locks meanwhile.
/// Reads (GET, HEAD) hold no locks and run in place: a task per request costs a hand-off
/// between threads, a large share of a read's time. Either way a handler's panic becomes a 500.
async fn run_to_completion(req: Request, next: middleware::Next) -> Response {
    let outcome = if matches!(*req.method(), Method::GET | Method::HEAD) {
        AssertUnwindSafe(next.run(req))
            .catch_unwind()
            .await
            .map_err(|_| "the handler panicked".to_owned())
    } else {
        tokio::spawn(next.run(req))
            .await
            .map_err(|err| err.to_string())
    };
    outcome.unwrap_or_else(|error| {
        tracing::error!(%error, "a request handler panicked");
        ApiError::from_status(StatusCode::INTERNAL_SERVER_ERROR).into_response()
    })
}

/// A JSON response of `content_type`. `size_hint`: about how many bytes the body takes, so
/// that the buffer is allocated once rather than doubled and copied up to the size of a page
/// (100 invitations: about 100 kB). sonic-rs writes the same text as serde_json (a property
/// test pins that) but scans strings for characters to escape 16 bytes at a time; serde_json's
/// byte-by-byte scan was a tenth of a list's CPU.
pub fn json_response(
    status: StatusCode,
    content_type: &'static str,
    body: &impl serde::Serialize,
    size_hint: usize,
) -> Response {
    let mut buffer = Vec::with_capacity(size_hint);
    if let Err(e) = sonic_rs::to_writer(&mut buffer, body) {
        return ApiError::internal(anyhow::Error::new(e).context("serializing a response"))
            .into_response();
    }
    (
        status,
        [(
            axum::http::header::CONTENT_TYPE,
            axum::http::HeaderValue::from_static(content_type),
        )],
        buffer,
    )
        .into_response()
}

/// The answer to a GET whose `If-None-Match` matches: no body, the current tag.
pub fn not_modified(etag: &str) -> Response {
    let mut res = StatusCode::NOT_MODIFIED.into_response();
    if let Ok(etag) = axum::http::HeaderValue::from_str(etag) {
        res.headers_mut().insert(axum::http::header::ETAG, etag);
    }
    res
}

async fn unknown_path() -> ApiError {
    ApiError::from_status(StatusCode::NOT_FOUND)
}

/// Needs an administrative caller, like every other `/bankingAdmin` operation.
async fn admin_api_doc(_admin: extract::AdminCaller) -> Response {
    let doc = openapi::AdminApi::openapi();
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        doc.to_pretty_json().unwrap_or_default(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::strategy::Strategy;
    use serde_json::json;
    use tower::ServiceExt;

    proptest::proptest! {
        /// Responses are written by sonic-rs; clients must see what serde_json would write,
        /// escapes included.
        #[test]
        fn response_text_is_written_as_serde_json_would(
            text in proptest::collection::vec(
                proptest::prop_oneof![
                    proptest::prelude::any::<char>(),
                    proptest::sample::select(vec![
                        '"', '\\', '\n', '\u{0}', '\u{1f}', '\u{7f}', '\u{2028}', '/'
                    ]),
                ],
                0..80,
            ).prop_map(String::from_iter)
        ) {
            let fields = json!({"text": &text, "n": text.len(), "list": [&text, null, true]});
            proptest::prop_assert_eq!(
                sonic_rs::to_string(&fields).unwrap(),
                serde_json::to_string(&fields).unwrap()
            );
            proptest::prop_assert_eq!(
                sonic_rs::to_string(&text).unwrap(),
                serde_json::to_string(&text).unwrap()
            );
        }
    }

    #[tokio::test]
    async fn a_panicking_handler_answers_500() {
        async fn buggy() -> &'static str {
            panic!("handler bug")
        }
        let app = Router::new()
            .route("/", get(buggy).post(buggy))
            .layer(middleware::from_fn(run_to_completion));
        for method in [Method::GET, Method::POST] {
            let req = Request::builder()
                .method(method.clone())
                .uri("/")
                .body(axum::body::Body::empty())
                .unwrap();
            let res = app.clone().oneshot(req).await.unwrap();
            assert_eq!(res.status(), StatusCode::INTERNAL_SERVER_ERROR, "{method}");
        }
    }
}
